"""Files replaced in one step: written under a temporary name beside the target, renamed over
it only once complete.

A crash, a full disk or a Ctrl-C then leaves the old file or the new one — never half of one
under the name asked for — and a reader never mistakes an interrupted write for a whole one.
Used for the staged configuration, channels files, plots and export files. And names for
files made from operator text (:func:`safe_filename`), and where SQLite keeps a database's
write-ahead log (:func:`wal_file`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["replace_text_file", "replacing", "safe_filename", "wal_file"]

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
    raises the ``OSError``."""
    with replacing(path, path.with_name(f".{path.name}.tmp-{os.getpid()}")) as tmp:
        tmp.write_text(text, encoding="utf-8")


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
