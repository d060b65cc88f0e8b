"""Files replaced in one step: written under a temporary name beside the target, renamed over
it only once complete.

A crash, a full disk or a Ctrl-C then leaves the old file or the new one — never half of one
under the name asked for — and a reader never mistakes an interrupted write for a whole one.
Used for the staged configuration, channels files, plots and export files. And names for
files made from operator text (:func:`safe_filename`), where SQLite keeps a database's
write-ahead log (:func:`wal_file`), and what a recorder needs when its database file is deleted or
moved under it (:class:`FileWatch`, :func:`save_database_copy`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sqlite3
import stat
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "FileWatch",
    "file_identity",
    "replace_text_file",
    "replacing",
    "safe_filename",
    "save_database_copy",
    "wal_file",
]

_UNSAFE = re.compile(r'[\x00-\x1f\x7f-\x9f<>:"/\\|?*]')
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com\d|lpt\d)(\..*)?$", re.IGNORECASE)


@contextmanager
def replacing(path: Path, tmp: Path) -> Iterator[Path]:
    """Yield ``tmp`` to write the new ``path`` into; when the block ends it is renamed over
    ``path``. If the block or the rename fails, ``tmp`` is removed where that is still possible
    (on a read-only file system the removal fails too, and the first error is the one to
    report) and the error propagates."""
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def replace_text_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` in one step, through a hidden temporary file beside it;
    raises the ``OSError``. A file replaced keeps its permissions (a ``chmod 600`` staged
    configuration stays private), and the new text is private until it has them."""
    try:
        mode: int | None = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = None
    with replacing(path, path.with_name(f".{path.name}.tmp-{os.getpid()}")) as tmp:
        tmp.touch(0o666 if mode is None else stat.S_IRUSR | stat.S_IWUSR)
        tmp.write_text(text, encoding="utf-8")
        if mode is not None:
            tmp.chmod(mode)


def safe_filename(name: str, max_bytes: int = 120) -> str:
    """A file name derived from ``name`` that is one path component on every OS.

    Separators, quotes, control and Windows-reserved characters become ``_``; leading and
    trailing dots/spaces go (no ``..``, no hidden files). If anything changed, a short hash of
    the original is appended so two different run names never share an export directory.
    """
    text = unicodedata.normalize("NFC", name)
    text = _UNSAFE.sub("_", text).strip(" .")
    if _WINDOWS_RESERVED.match(text):
        text = "_" + text
    while len(text.encode("utf-8")) > max_bytes:
        text = text[:-1]
    if text != name or not text:
        digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
        text = f"{text.rstrip(' .') or 'run'}-{digest}"
    return text


def wal_file(db: Path) -> Path:
    """The write-ahead log SQLite keeps beside ``db`` in WAL mode."""
    return db.with_name(db.name + "-wal")


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file named ``path`` now; None when no file has that name any more.
    Any other ``OSError`` (the directory made unreadable, say) is raised: nothing is known."""
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return st.st_dev, st.st_ino


class FileWatch:
    """Whether ``path`` still names the file it named when this was made.

    SQLite does not notice an open database file deleted or renamed: WAL commits go on
    succeeding, and what they wrote is gone once the connection closes (for a renamed file,
    the log they went to is no longer the renamed file's)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._identity = file_identity(path)

    def replaced(self) -> bool:
        """True once the name leads to another file or to none; False while it cannot be
        looked at (the open file is still written)."""
        if self._identity is None:
            return False
        try:
            return file_identity(self.path) != self._identity
        except OSError:
            return False


def save_database_copy(db: sqlite3.Connection, path: Path) -> Path:
    """Copy ``db`` (SQLite's online backup) to a new file beside ``path``; returns its name.

    For a database file deleted or moved while open: the connection still holds every committed
    page, and they are gone once it closes. The copy gets a name no file uses — not ``path``
    itself, whose old ``-wal`` file may still lie beside it and would be taken for the copy's.
    """
    n = 1
    while True:
        dest = path.with_name(f"{path.stem}.rescued-{n}{path.suffix}")
        if not any(p.exists() for p in (dest, wal_file(dest))):
            break
        n += 1
    try:
        with contextlib.closing(sqlite3.connect(dest)) as out:
            db.backup(out)
    except BaseException:
        with contextlib.suppress(OSError):  # a partial copy is no copy
            dest.unlink(missing_ok=True)
        raise
    return dest
