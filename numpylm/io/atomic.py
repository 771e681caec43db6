"""Atomic file writes: how a checkpoint survives a crash in the middle of being saved.

The engine under everything never overwrites a file in place. Bytes go to a temporary file
in the destination's own directory, are flushed to disk, and the temporary file is then
renamed over the destination. A rename within one directory is atomic on POSIX and Windows,
so a reader (or a resumed run) sees either the complete old file or the complete new one,
never a half-written mixture.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

__all__ = ["atomic_write"]


def _read_umask() -> int:
    # os.umask can only be read by setting it; put the old value straight back. Done once at
    # import, because the brief moment with umask 0 is not safe while other threads run.
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a binary file that replaces `path` only if the `with` block finishes.

    ```python
    with atomic_write("model.safetensors") as f:
        f.write(b"...")
    ```

    If the block raises, the temporary file is removed and `path` is untouched. The new file
    gets the permissions an ordinary `open(path, "wb")` would have given it (0o666 minus the
    umask), not the owner-only mode of a fresh temporary file.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {path!r}: directory {directory!r} does not exist")
    fd, tmp_path = tempfile.mkstemp(
        prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory
    )
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            # fsync before the rename: otherwise a power cut could leave the *new* name
            # pointing at data that never reached the disk.
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_path)
        raise
