"""Building instances of frozen, slotted dataclasses fast, for the hot paths that make one per change.

A frozen dataclass refuses attribute stores with its own ``__setattr__``, so
its fields are set through each slot's descriptor, one call each. A plain
class with the same ``__slots__`` and no ``__setattr__`` of its own takes
plain attribute stores, which CPython runs at the cost of a slot write; an
instance built through it becomes an instance of the frozen class when its
``__class__`` is set, which Python allows between classes of the same layout.
The result is the frozen class's instance in every respect (its type, its
``__setattr__``, equality and hashing): only the way there is shorter.
"""

from __future__ import annotations

from typing import Any

__all__ = ["open_twin"]


def open_twin(frozen: type) -> type:
    """A class with the slots of ``frozen`` (a frozen, slotted dataclass deriving from ``object`` alone) and
    nothing else: build with it, then set the instance's ``__class__`` to ``frozen``.

    Examples:
        >>> from dataclasses import FrozenInstanceError, dataclass
        >>> @dataclass(frozen=True, slots=True)
        ... class Point:
        ...     x: int
        ...     y: int
        >>> twin = open_twin(Point)
        >>> point = object.__new__(twin)
        >>> point.x, point.y = 1, 2
        >>> point.__class__ = Point
        >>> point == Point(1, 2), type(point) is Point
        (True, True)
        >>> try:
        ...     point.x = 3
        ... except FrozenInstanceError:
        ...     print("frozen")
        frozen
    """
    if frozen.__bases__ != (object,):
        raise TypeError(f"{frozen.__name__} must derive from object alone")
    slots: Any = frozen.__dict__.get("__slots__")
    if not isinstance(slots, tuple) or not slots:
        raise TypeError(f"{frozen.__name__} has no __slots__ of its own")
    return type(f"_Open{frozen.__name__}", (), {"__slots__": slots, "__module__": frozen.__module__})
