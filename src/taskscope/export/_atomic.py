"""Write a file whole or not at all: the single-file exports (Perfetto, OTLP) write through this,
so a full disk or an interrupted export never leaves a truncated, invalid file at the target."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import BinaryIO, Iterator


@contextlib.contextmanager
def write_atomically(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to write `path`'s new content into; it replaces `path` only when the block
    ends without an error. On any error (the disk filled, an exception, Ctrl-C) it is removed and
    `path` is left as it was (absent, or its previous content); the error propagates.

    Use it for an output a reader must never see half-written. The temporary file sits beside
    the target (a hidden `.NAME.<random>.tmp`), so the final rename stays on one filesystem.

    >>> with write_atomically("run.trace.json") as out:  # doctest: +SKIP
    ...     out.write(b"{}")
    """
    target = Path(os.path.realpath(path))  # through a symlink, as open() would write
    temporary = target.with_name(f".{target.name}.{os.urandom(4).hex()}.tmp")
    try:
        # "x": never clobber a file of the same name; created with the umask's mode, as open() would
        with open(temporary, "xb") as out:
            yield out
            out.flush()
            # some filesystems (NFS, ...) report a full disk only here; the rename must wait for it
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
