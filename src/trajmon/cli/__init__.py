"""The ``trajmon`` command line.

:func:`main` is the command; ``app``, the typer application, is imported on first use: the
command's first steps (:mod:`.entry`) must run before the commands' heavy imports do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .entry import main

if TYPE_CHECKING:
    from .commands import app

__all__ = ["app", "main"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from .commands import app

        globals()["app"] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
