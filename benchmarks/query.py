"""Query engine: compiled-filter evaluations per second on event documents, against plain dict lookups."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from benchmarks.common import Bench, Report, Row, document, medians, ratio
from rxcs.query import compile_filter

FILTERS: list[tuple[str, dict[str, Any]]] = [
    ("{operationType: 'insert'}", {"operationType": "insert"}),
    ("{operationType: {$in: [insert, update]}}", {"operationType": {"$in": ["insert", "update"]}}),
    ("{fullDocument.status: 'paid'}", {"fullDocument.status": "paid"}),
    ("{fullDocument.total: {$gte: 100, $lt: 400}}", {"fullDocument.total": {"$gte": 100, "$lt": 400}}),
    ("{ns.coll: 'orders', fullDocument.tags: 'b'}", {"ns.coll": "orders", "fullDocument.tags": "b"}),
    ("{$or: [{fullDocument.age: {$lt: 25}}, {fullDocument.city: {$regex: '^O'}}]}",
     {"$or": [{"fullDocument.age": {"$lt": 25}}, {"fullDocument.city": {"$regex": "^O"}}]}),
]


def run(bench: Bench, report: Report) -> None:
    events = [
        {"_id": {"_data": "00"}, "operationType": ("insert", "update", "delete")[i % 3],
         "ns": {"db": "shop", "coll": ("users", "orders")[i % 2]}, "documentKey": {"_id": i},
         "fullDocument": document(i)}
        for i in range(2_000 if bench.quick else 10_000)
    ]

    def rate(predicate: Callable[[Any], Any]) -> Callable[[], float]:
        def measure() -> float:
            began = time.perf_counter()
            for _ in range(5):
                for event in events:
                    predicate(event)
            return 5 * len(events) / (time.perf_counter() - began)

        return measure

    def plain(event: Any) -> bool:
        return bool(event["fullDocument"]["status"] == "paid")

    reference, *rates = medians(bench.repeat, rate(plain), *(rate(compile_filter(spec)) for _, spec in FILTERS))
    section = report.section("Query engine: compiled filters on event documents (ratio to plain Python)")
    section.rows.append(Row("plain Python dict lookups: fullDocument.status == 'paid' (reference)", reference,
                            "evaluations/s", "1.00"))
    for (name, _), value in zip(FILTERS, rates, strict=True):
        section.rows.append(Row(name, value, "evaluations/s", ratio(value, reference)))
