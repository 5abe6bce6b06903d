"""What every capture shares: ``run()`` blocks until ``stop()``; ``start()`` runs it in a thread of its own."""

from __future__ import annotations

import abc
import threading
from types import TracebackType
from typing import Self

from rxcs.errors import CaptureError

__all__ = ["Running"]


class Running(abc.ABC):
    """A capture's life: ``run()`` until stopped, or in a background thread with ``start()``/``stop()``.

    ``stop()`` raises, in the caller, what the background run failed with.
    """

    name: str

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @abc.abstractmethod
    def run(self) -> None:
        """Capture until ``stop()`` is called."""

    def _wake(self) -> None:  # noqa: B027 - a capture that blocks on something else wakes it here
        """Make a blocked ``run()`` notice that it is asked to stop."""

    def start(self) -> Self:
        """Run the capture in a background thread; ``stop()`` ends it and raises what it failed with."""
        if self._thread is not None:
            raise RuntimeError("this capture was started already")

        def target() -> None:
            try:
                self.run()
            except BaseException as exc:  # noqa: BLE001 - handed to stop(), which raises it in the caller
                self._error = exc

        self._thread = threading.Thread(target=target, name=f"rxcs-capture-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 30.0) -> None:
        """Ask the capture to stop and wait for it; raise the error it failed with, if it did."""
        self._stopping.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise CaptureError(f"capture {self.name} did not stop within {timeout} s")
        error, self._error = self._error, None
        if error is not None:
            raise error

    @property
    def failed(self) -> BaseException | None:
        """The error a capture started with ``start()`` failed with, while it is not yet stopped."""
        return self._error

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
