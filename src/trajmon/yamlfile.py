"""Read a hand-written YAML file (channels, station, simulator scenario, fault plan) strictly.

``yaml.safe_load`` lets a repeated key silently replace the first (a second ``changes:`` drops
every change of the first list), and its error text starts with a context line ("while parsing a
flow mapping") that says neither where nor what. Here a repeated key is an error and every
problem is one line: ``line L, column C: problem`` for the YAML itself
(:class:`YamlSyntaxError`), the reason otherwise (not UTF-8, not readable).
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

__all__ = ["YamlFileError", "YamlSyntaxError", "read_yaml"]


class YamlFileError(ValueError):
    """The file cannot be read or parsed; the message is one line, without the file name."""


class YamlSyntaxError(YamlFileError):
    """The file was read but is not valid YAML (or repeats a key): ``line L, column C: ...``."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping."""


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _check_unique(loader: _StrictLoader, node: yaml.MappingNode) -> None:
    """Refuse a key given twice in ``node``. A merge key (``<<: *defaults``) is YAML's way to
    share entries: the mappings it merges are checked on their own, and a key given beside it
    overrides theirs, as YAML says (``safe_load`` does the same); a second ``<<`` is a repeat."""
    seen: set[Hashable] = set()
    merges = 0
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE_TAG:
            merges += 1
            if merges > 1:
                raise yaml.constructor.ConstructorError(
                    None, None, "duplicate key '<<'", key_node.start_mark
                )
            merged = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for sub in merged:
                if isinstance(sub, yaml.MappingNode):
                    _check_unique(loader, sub)
            continue
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, Hashable) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        if isinstance(key, Hashable):
            seen.add(key)


def _mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    _check_unique(loader, node)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)

#: Numbers YAML 1.1 reads in another base than the one written: ``interval_s: 010`` is 8 (octal)
#: and ``1:30`` is 90 (base 60), while QCoDeS reads a station file as YAML 1.2, where ``010`` is 10.
_OTHER_BASE = (
    (re.compile(r"[-+]?0[0-7_]+"), "octal", "the leading zero"),
    (re.compile(r"[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?"), "base 60", "the colons"),
)


def _number(loader: _StrictLoader, node: yaml.ScalarNode) -> Any:
    """An int or float, refused when YAML 1.1 reads its digits in another base: a schedule
    polled every 8 s instead of 10 s, with nothing said, is worse than an error."""
    is_int = node.tag.endswith(":int")
    try:
        value = loader.construct_yaml_int(node) if is_int else loader.construct_yaml_float(node)
    except ValueError as exc:  # an int of over 4300 digits: Python's limit on int("…")
        problem = f"a number of {len(str(node.value))} characters is too long to read"
        raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from exc
    text = str(node.value)
    for pattern, base, drop in _OTHER_BASE:
        if pattern.fullmatch(text):
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"{text} is read by YAML as {base} ({value}); write it without {drop},"
                " or quote it for text",
                node.start_mark,
            )
    return value


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _number)
_StrictLoader.add_constructor("tag:yaml.org,2002:float", _number)


def _describe(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        context = f" ({exc.context})" if exc.context else ""
        return f"{where}{exc.problem}{context}"
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def read_yaml(path: Path) -> Any:
    """The parsed content of ``path`` (UTF-8 YAML); :class:`YamlFileError` on any problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise YamlFileError(
            f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
        ) from exc
    except OSError as exc:
        raise YamlFileError(exc.strerror or str(exc)) from exc
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: safe
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(_describe(exc)) from exc
    except RecursionError as exc:  # thousands of nested [ or {: PyYAML recurses per level
        raise YamlSyntaxError("nested too deeply") from exc
