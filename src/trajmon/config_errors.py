"""How a refused configuration is told: one line, naming the field — and for a field that does
not exist, the one that was probably meant.

A notebook user who typed ``MonitorConfig(intervall_s=1)`` got pydantic's four-line report
("Extra inputs are not permitted", a URL) and had to guess the right spelling; an operator with
``tolerence_abs:`` in a channels file got the same in one line. Both now read
``intervall_s: unknown field; did you mean 'interval_s'?``.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Sequence
from typing import get_args

from pydantic import BaseModel, ValidationError
from pydantic_core import InitErrorDetails

__all__ = ["MODELS", "ConfigError", "InvalidConfigError", "format_validation_error"]

#: The configuration models by name (a ``ValidationError``'s title), to name their fields.
MODELS: dict[str, type[BaseModel]] = {}


class ConfigError(ValueError):
    """A configuration a run must not start with; the message is one line for the operator."""


class InvalidConfigError(ValidationError, ConfigError):
    """What ``MonitorConfig(...)`` and ``ChannelSpec(...)`` raise: a :class:`ConfigError` with
    one line, as every configuration error of the library is, and still the pydantic
    ``ValidationError`` (``errors()``) that code written against pydantic catches."""

    def __str__(self) -> str:
        return f"{self.title}: {format_validation_error(self)}"

    @classmethod
    def of(cls, exc: ValidationError) -> ValidationError:
        """``exc`` as an :class:`InvalidConfigError` (``exc`` itself if it cannot be rebuilt)."""
        details: list[InitErrorDetails] = []
        for err in exc.errors():
            detail: InitErrorDetails = {
                "type": err["type"],
                "loc": err["loc"],
                "input": err["input"],
            }
            if "ctx" in err:
                detail["ctx"] = err["ctx"]
            details.append(detail)
        try:
            return cls.from_exception_data(exc.title, details)
        except Exception:  # an error type pydantic cannot rebuild: keep the original
            return exc


def _fields_at(title: str, loc: Sequence[int | str]) -> list[str] | None:
    """The field names of the model that holds ``loc``'s last key (``channels.0.tolerence_abs``
    is in a ``ChannelSpec``), or None when that model is not known."""
    model: type[BaseModel] | None = MODELS.get(title)
    for part in loc[:-1]:
        if model is None:
            return None
        if isinstance(part, int):  # an entry of a list: the list's model is already found
            continue
        field = model.model_fields.get(part)
        types = () if field is None else (field.annotation, *get_args(field.annotation))
        model = next((t for t in types if inspect.isclass(t) and issubclass(t, BaseModel)), None)
    return None if model is None else list(model.model_fields)


def _unknown(title: str, loc: Sequence[int | str]) -> str:
    fields = _fields_at(title, loc)
    if not fields:
        return "unknown field"
    match = difflib.get_close_matches(str(loc[-1]), fields, n=1)
    if match:
        return f"unknown field; did you mean {match[0]!r}?"
    return f"unknown field (the fields are: {', '.join(fields)})"


def format_validation_error(exc: ValidationError) -> str:
    """Pydantic's multi-line report, folded into the one line an operator reads."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden" and err["loc"]:  # "Extra inputs are not permitted"
            message = _unknown(exc.title, err["loc"])
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)
