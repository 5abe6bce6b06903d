"""An asyncio consumer: ``async for`` over a change stream without blocking the loop.

Run: python examples/asyncio_consumer.py
"""

from __future__ import annotations

import asyncio

import rxcs


async def consume(oplog: rxcs.Oplog, wanted: int, ready: asyncio.Event) -> list[str]:
    seen: list[str] = []
    async with rxcs.watch(oplog, "shop", "orders").aiterate() as stream:
        ready.set()  # the stream starts at the present: from here on, nothing is missed
        async for event in stream:
            seen.append(f"{event.operation_type} {event.document_key['_id']}")
            if len(seen) == wanted:
                break
    return seen


async def produce(oplog: rxcs.Oplog) -> None:
    for i in range(5):
        await asyncio.sleep(0.01)
        oplog.insert("shop", "orders", {"_id": i, "total": 10 * i})


async def run() -> list[str]:
    with rxcs.open_oplog(":memory:") as oplog:
        ready = asyncio.Event()
        consumer = asyncio.create_task(consume(oplog, wanted=5, ready=ready))
        await ready.wait()
        await produce(oplog)
        return await asyncio.wait_for(consumer, 10)


def main() -> list[str]:
    seen = asyncio.run(run())
    print("\n".join(seen))
    return seen


if __name__ == "__main__":
    main()
