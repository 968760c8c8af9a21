"""A log new to the store whose bytes are those of one read before: a copy of a run folder, or a
tarball of one, ingested beside it. Read again, every event of the run would be stored twice
(and a run's figures would count them twice: a utilisation of 190 %).

Only a candidate whose first bytes and size match (cheap, from `ingested_files`) is compared
byte for byte, by a digest of both files.
"""

from __future__ import annotations

import hashlib
import os
from typing import BinaryIO, Callable, Iterable

#: how much is read at a time to digest a file
_BLOCK = 1 << 20


def same_content_as(opener: Callable[[], BinaryIO], size: int | None, source: str,
                    known: Iterable[tuple[str, str | None, bytes | None]]) -> str | None:
    """The path of a file read before whose whole content equals what `opener` gives, or None.

    `known`: (path, source, first bytes kept) of the files read before; only a plain file that
    still exists, of the same source, whose first bytes and size (when `size` is known: a plain
    file; None for a compressed one or an archive member) match, is compared.

    >>> same_content_as(lambda: open("/etc/hostname", "rb"), None, "log", [])  # nothing read before
    """
    candidates = [(path, head) for path, known_source, head in known if known_source == source and head]
    if not candidates:
        return None
    with opener() as handle:
        first = handle.read(max(len(head) for _, head in candidates))
    candidates = [path for path, head in candidates
                  if first.startswith(head) and os.path.isfile(path) and (size is None or os.path.getsize(path) == size)]
    if not candidates:
        return None
    digest = _digest(opener)
    return next((path for path in candidates if _digest(lambda path=path: open(path, "rb")) == digest), None)


def _digest(opener: Callable[[], BinaryIO]) -> bytes:
    hashed = hashlib.blake2b(digest_size=20)
    with opener() as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            hashed.update(block)
    return hashed.digest()
