"""Numbers as hand-written scenario and fault-plan files give them.

Both files are YAML 1.1, where ``2e-10`` is a string and an integer may be too large for any
float: the checks of both say so the same way, in one line, rather than with a traceback or a
complaint that contradicts the file.
"""

from __future__ import annotations

import math
from typing import TypeGuard

__all__ = ["is_finite_number", "yaml_number_hint"]


def is_finite_number(value: object) -> TypeGuard[int | float]:
    """An int or float (not a bool) that a float holds: an integer too large for one (YAML
    reads ``1000…0`` with 400 digits as an int) is no number of seconds, volts or metres."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def yaml_number_hint(value: object) -> str:
    """Why a number written in a YAML file arrived as text, to say after the complaint.

    YAML 1.1 reads ``2e-10`` (no decimal point, no exponent sign) as a string, so "must be a
    number, got '2e-10'" would contradict what the user sees in their file.
    """
    if not isinstance(value, str):
        return ""
    try:
        if not math.isfinite(float(value)):  # 'nan', 'inf': no number either way
            return ""
    except ValueError:
        return ""
    mantissa, e, exponent = value.strip().lower().partition("e")
    if not e:
        return " (a quoted number is text: write it without quotes)"
    if "." not in mantissa:
        mantissa += ".0"
    if exponent[:1] not in ("+", "-"):
        exponent = "+" + exponent
    return f" (YAML reads {value} as text: write {mantissa}e{exponent})"
