"""The limits rxcs holds documents, filters and entries to: MongoDB's where MongoDB has one.

One place for each number, so the producer's checks, the query engine's and
the pipeline's agree. This module imports nothing from the package.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MAX_DOCUMENT_BYTES", "MAX_ENTRY_BYTES", "MAX_NESTING"]

MAX_NESTING: Final = 100
"""How deep a document, a filter, an expression or a stage may nest, as in MongoDB: each document or array
is one level (a document holding nothing nested is level 1)."""

MAX_DOCUMENT_BYTES: Final = 16 * 1024 * 1024
"""MongoDB's largest document (16 MiB): the default cap of a change event, and of what a pipeline or an
expression may build."""

MAX_ENTRY_BYTES: Final = 64 * 1024 * 1024
"""The largest encoded oplog entry any backend records; a reader refuses a larger frame before reading it."""
