"""Atomic output: write to a temporary file beside the target, rename on success.

A failed or interrupted job never leaves a partial file at the target path.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from talkinghead.errors import OutputError


def check_writable(path: str | Path) -> Path:
    """Fail early, before any work, when `path` cannot be written."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"{path}: is a directory, give a file name")
    if not parent.is_dir():
        raise OutputError(f"{path}: output directory {parent} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=".talkinghead-probe-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError:
        raise OutputError(f"{path}: output directory {parent} is not writable") from None
    return path


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temp path in the target's directory; move it to `path` only if the block succeeds."""
    path = check_writable(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".part{path.suffix}", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
