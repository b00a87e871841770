"""Crash-safe file writing (a file appears under its name only once it is complete), and the
reading of list files."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

# A directory's fsync is refused where it makes no sense (some network and FUSE file systems);
# the files' own syncs still happened.
_NO_DIRECTORY_SYNC = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES})


def sync(path: str | os.PathLike[str]) -> None:
    """Flush a file's data (or a directory's entries) to the disk: after a power loss it is
    there as written. Directories are synced where the system can (not on Windows)."""
    if os.path.isdir(path):
        if os.name == "nt":
            return  # no directory handles to sync; NTFS journals its renames
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as error:
            if error.errno not in _NO_DIRECTORY_SYNC:
                raise
        return
    fd = os.open(path, os.O_RDWR)  # Windows flushes only handles open for writing
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_name(path: Path, suffix: str = "tmp") -> Path:
    """The name ``path`` is written under until it is complete: ``.NAME.PID.tmp`` next to it
    (hidden, and this process's own; :func:`temporary_target` recognises it)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{suffix}")


def temporary_target(name: str) -> str | None:
    """The name that ``name``, a :func:`temporary_name` of some process (maybe one that was
    killed), was to become; None when ``name`` is not one."""
    match = re.fullmatch(r"\.(.+)\.\d+\.tmp", name)
    return match[1] if match else None


def write_atomically(path: str | os.PathLike[str], write: Callable[[Path], object],
                     durable: bool = False) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it into place.

    A crash at any moment leaves either the previous file or the complete new one, never a
    half-written file under ``path``. ``durable`` also survives a power loss: the file is
    synced before the rename and its directory after it. Returns ``path``.

    Example:
        >>> write_atomically("out.json", lambda tmp: tmp.write_text("{}"))
        PosixPath('out.json')
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same directory, so os.replace is an atomic rename; the leading dot keeps the file out of
    # globs such as *.mp4, and the pid keeps concurrent writers apart.
    tmp = temporary_name(path)
    try:
        write(tmp)
        if durable:
            sync(tmp)
        os.replace(tmp, path)
        if durable:
            sync(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomically(path: str | os.PathLike[str], text: str, durable: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` with :func:`write_atomically`."""
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), durable)


def write_directory_atomically(path: str | os.PathLike[str],
                               fill: Callable[[Path], object]) -> Path:
    """Call ``fill(tmp)`` on a new temporary directory next to ``path``, then put it in place
    of ``path`` (an existing directory there is replaced). A failure in ``fill`` removes the
    temporary directory and leaves ``path`` as it was. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        fill(tmp)
        old = temporary_name(path, "old")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_list(path: str | os.PathLike[str]) -> list[str]:
    """The entries of a list file (``@FILE`` arguments): one per line, stripped, without empty
    lines and ``#`` comment lines. Names that are not UTF-8 survive as surrogate escapes, as
    ``os.listdir`` gives them.

    Raises:
        OSError: the file cannot be read.
    """
    lines = Path(path).read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes (the bundle's checksums, the archive's outputs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
