"""Files replaced in one step: written under a temporary name beside the target, renamed over
it only once complete.

A crash, a full disk or a Ctrl-C then leaves the old file or the new one — never half of one
under the name asked for — and a reader never mistakes an interrupted write for a whole one.
Used for the staged configuration, channels files, plots and export files.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["replace_text_file", "replacing"]


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
