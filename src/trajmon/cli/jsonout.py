"""JSON on stdout: whole documents that any stdout carries, written as they are made.

A read command's document can hold a whole night's actions; :class:`Streamed` lets
:func:`print_json` write such a list item by item, in the same text ``json.dumps`` would give.
"""

from __future__ import annotations

import codecs
import itertools
import json
import math
import re
import sys
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

__all__ = ["Streamed", "print_json"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf", "-inf": strict JSON has no such numbers
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())  # nested lists; a 0-d array (np.array(5.0)): its number
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float):
        return value
    return str(value)  # a complex, a Path, an object an untyped channel held: its text


def _stdout_takes_utf8() -> bool:
    try:
        return codecs.lookup(getattr(sys.stdout, "encoding", None) or "ascii").name == "utf-8"
    except LookupError:
        return False


class Streamed:
    """A list in a document for :func:`print_json` that is written as it is iterated, never
    held whole: a night's 361 000 actions, built as one list and one string, took 1.4 GB."""

    __slots__ = ("items",)

    def __init__(self, items: Iterable[Any]) -> None:
        self.items = items


def _skeleton(value: Any, tag: str, slots: list[Iterator[Any]]) -> Any:
    """``value`` made JSON-able, each non-empty :class:`Streamed` replaced by a one-item list
    holding a placeholder string (its items in ``slots``), an empty one by ``[]``. The first
    item of each is read here, before anything is written: a query's error is then still a
    one-line error, not the end of a half-written document."""
    if isinstance(value, Streamed):
        items = iter(value.items)
        for first in items:
            slots.append(itertools.chain((first,), items))
            return [f"\x00{tag}:{len(slots) - 1}"]
        return []
    if isinstance(value, dict):
        return {str(k): _skeleton(v, tag, slots) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_skeleton(v, tag, slots) for v in value]
    return _jsonable(value)


def _json_chunks(data: Any, indent: int | None, ascii_only: bool) -> Iterator[str]:
    """``json.dumps(data, indent=indent)`` in pieces, each :class:`Streamed` one item at a time:
    the same text, character for character."""
    tag, slots = uuid.uuid4().hex, list[Iterator[Any]]()
    text = json.dumps(_skeleton(data, tag, slots), indent=indent, ensure_ascii=ascii_only)
    at = 0
    for i, items in enumerate(slots):
        placeholder = json.dumps(f"\x00{tag}:{i}")
        found = text.index(placeholder, at)
        margin = "" if indent is None else text[text.rindex("\n", 0, found) + 1 : found]
        yield text[at:found]
        after = ", " if indent is None else ",\n" + margin
        for n, item in enumerate(items):
            piece = json.dumps(_jsonable(item), indent=indent, ensure_ascii=ascii_only)
            yield (after if n else "") + (piece.replace("\n", "\n" + margin) if margin else piece)
        at = found + len(placeholder)
    yield text[at:]


_NOT_ASCII = re.compile(r"[^\x00-\x7f]")


def _escaped(text: str) -> str:
    """JSON text as ``ensure_ascii`` writes it: outside strings it is ASCII already."""
    return _NOT_ASCII.sub(lambda m: json.dumps(m.group())[1:-1], text)


def _json_text(data: Any, *, compact: bool = False) -> Iterator[str]:
    """``data`` as a JSON document that stdout carries whole, in pieces: non-ASCII text as
    itself on a UTF-8 stdout, else (a Windows code page, ``PYTHONIOENCODING=ascii``) as ``\\u``
    escapes — written as is, "µ" became the byte 0xB5 (no UTF-8 reader takes it) and "测" a
    traceback. Text that is not valid Unicode (a ``--db`` path's undecodable bytes, held as
    lone surrogates) is escaped too, and so is all that follows it: written, it went out raw or
    as a traceback; escaped, ``json.loads`` and ``os.fsencode`` give the path back."""
    utf8 = _stdout_takes_utf8()
    escaping = False
    for chunk in _json_chunks(data, None if compact else 2, ascii_only=not utf8):
        if not escaping and not chunk.isascii():
            try:
                chunk.encode("utf-8")
            except UnicodeEncodeError:
                escaping = True
        yield _escaped(chunk) if escaping else chunk


def print_json(data: Any, *, compact: bool = False) -> None:
    """One JSON document on stdout: indented, or ``compact`` on one line (JSON Lines). Written
    as it is made, each :class:`Streamed` list an item at a time, so memory does not grow with
    the document."""
    write = sys.stdout.write
    for chunk in _json_text(data, compact=compact):
        write(chunk)
    write("\n")
    sys.stdout.flush()
