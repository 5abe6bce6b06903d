"""Document images: the document each change left, kept beside the oplog for the streams that ask for it.

An oplog may keep, per change of a document, the document as the change left
it (its post-image) and, through the key's previous change, the document as
it was before (its pre-image), and per document the current one: MongoDB's
``changeStreamPreAndPostImages`` and ``updateLookup``, maintained from the
changes themselves (``overlay``: the rules), kept durably beside the oplog
(``store``: in memory, ``sqlite`` beside a FileOplog, ``redis`` beside a
RedisOplog) and trimmed with it. ``DocumentImages`` (``view``) is what
backends hold and change streams ask. See docs/images.md.
"""

from rxcs.oplog.images.overlay import IMAGES_OPTION, images_setting
from rxcs.oplog.images.store import ImageStore, MemoryImageStore, Settings, StoreState
from rxcs.oplog.images.updates import UpdateConflict, apply_update
from rxcs.oplog.images.view import DocumentImages

__all__ = [
    "IMAGES_OPTION",
    "DocumentImages",
    "ImageStore",
    "MemoryImageStore",
    "Settings",
    "StoreState",
    "UpdateConflict",
    "apply_update",
    "images_setting",
]
