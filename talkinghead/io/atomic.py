"""Atomic output: write to a temporary file beside the target, rename on success.

A failed or interrupted job never leaves a partial file at the target path, never writes over
one of its own inputs, and sweeps up the hidden partial files that a killed run (SIGKILL, power
loss) left beside the target more than a day ago.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from talkinghead.errors import OutputError

log = logging.getLogger("talkinghead")

STALE_SECONDS = 24 * 3600
# what atomic_output and check_writable leave behind when a run is killed: `.STEM.XXXXXXXX.part.EXT`
# (mkstemp's 8 random characters) and `.talkinghead-probe-XXXXXXXX`
_PART = re.compile(r"^\..*\.[A-Za-z0-9_]{8}\.part(\.[A-Za-z0-9]+)?$|^\.talkinghead-probe-[A-Za-z0-9_]{8}$")


def same_file(a: str | Path, b: str | Path) -> bool:
    """True when paths `a` and `b` name one file: the same spelling after `./`, `..` and
    symlinks are resolved, or (both existing) the same inode, as hard links are."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def check_not_input(output: str | Path, inputs: Mapping[str, str | Path | None]) -> None:
    """Refuse an output path that is one of the job's inputs (`{role: path}`, None skipped), so
    writing the result can never destroy the only copy of a portrait, speech or video."""
    for role, path in inputs.items():
        if path is not None and str(path) and same_file(output, path):
            which = "" if os.fspath(path) == os.fspath(output) else f" {path} (the same file)"
            raise OutputError(f"{output}: is the input {role}{which}; choose another output name")


def remove_stale_parts(directory: str | Path, max_age: float = STALE_SECONDS) -> list[Path]:
    """Delete the partial files of killed runs (names as atomic_output makes them) in
    `directory` that are older than `max_age` seconds; returns what was removed."""
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for e in entries:
        if not _PART.match(e.name):
            continue
        try:
            if e.is_file(follow_symlinks=False) and now - e.stat(follow_symlinks=False).st_mtime > max_age:
                os.unlink(e.path)
                removed.append(Path(e.path))
        except OSError:
            continue  # gone already, or not ours to remove
    if removed:
        log.warning("removed %d partial file(s) older than a day left in %s by an interrupted run",
                    len(removed), directory)
    return removed


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


def check_output(path: str | Path, inputs: Mapping[str, str | Path | None] | None = None) -> Path:
    """Everything to check about an output path before any work: it is none of `inputs`, its
    directory is writable; and stale partial files beside it are swept away."""
    path = Path(path)
    check_not_input(path, inputs or {})
    check_writable(path)
    remove_stale_parts(path.parent if str(path.parent) else ".")
    return path


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temp path in the target's directory; move it to `path` only if the block succeeds.

    On any exception, KeyboardInterrupt and SystemExit included, the temp file is removed.
    """
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
