"""Binding configured labels to live QCoDeS parameters, and grouping them for polling; what a
parameter's validator says about its values (storage type, a stable description).

Resolution happens before the run exists: an unknown instrument or parameter is a configuration
error the operator fixes, not a run full of NULLs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .channels import Channel, PollGroup, ValueType
from .config import ChannelSpec, ConfigError, MonitorConfig

__all__ = [
    "build_groups",
    "describe_vals",
    "resolve_parameter",
    "value_type_from_vals",
    "value_type_of",
]


def resolve_parameter(source: str, instruments: Mapping[str, Any]) -> tuple[str, Any]:
    """``"stm.current"`` or ``"dmm.ch1.voltage"`` -> (instrument name, parameter object)."""
    name, *path = source.split(".")
    if name not in instruments:
        known = ", ".join(sorted(instruments)) or "none"
        raise ConfigError(f"unknown instrument {name!r} in {source!r} (instruments: {known})")
    node: Any = instruments[name]
    parent: Any = None
    for i, part in enumerate(path):
        parent = node
        where = ".".join([name, *path[:i]])
        key, indexes = _split_indexes(part)
        node = _child(node, key)
        if node is None:
            raise ConfigError(_missing(parent, key, where, source))
        for index in indexes:
            node = _indexed(node, index, f"{where}.{key}", source)
    # An instrument or channel has a get() too; a parameter that groups others (a delegate
    # instrument's GroupedParameter) has .parameters too — a ParameterBase is a parameter.
    # Imported here: instruments exist by now, and `import trajmon` (queries, export) stays
    # without QCoDeS's ~23 MB.
    from qcodes.instrument import ChannelTuple
    from qcodes.parameters import ParameterBase

    if isinstance(node, ChannelTuple):  # its get() is the instrument's: every read would fail
        first = next(iter(node), None)
        # A channel that is also its owner's submodule has the shorter path, under the key it
        # was added by (a DummyChannelInstrument's channel ChanA is its submodule A).
        submodules = getattr(parent, "submodules", {})
        keys = [key for key, sub in submodules.items() if first is not None and sub is first]
        example = f"{source}.{first.short_name}" if first is not None else source
        example = f"{source.rsplit('.', 1)[0]}.{keys[0]}" if keys else example
        hint = "" if first is None else f", e.g. {example}.<parameter>"
        hint = f" (name a parameter of one channel{hint})"
        raise ConfigError(f"{source!r} is a list of channels, not a parameter{hint}")
    container = hasattr(node, "parameters") and not isinstance(node, ParameterBase)
    # A set-only parameter has no get() at all: it is a parameter, just not one to read.
    if not getattr(node, "gettable", True) and not container:
        raise ConfigError(f"{source!r} is not gettable (a set-only parameter)")
    if not callable(getattr(node, "get", None)) or container:
        raise ConfigError(f"{source!r} is not a parameter")
    return name, node


def _missing(node: Any, key: str, where: str, source: str) -> str:
    """Why ``key`` names nothing under ``where``; a channel list says what it holds."""
    from qcodes.instrument import ChannelTuple

    if isinstance(node, ChannelTuple):
        names = ", ".join(channel.short_name for channel in node) or "none"
        return (
            f"{where} has no channel {key!r} (in {source!r}); its channels: {names}"
            f" (or by position: {where}[0])"
        )
    return f"{where} has no parameter or submodule {key!r} (in {source!r})"


#: QCoDeS's own station file indexes a channel list as ``dac.channels[0]`` (its
#: ``getattr_indexed``); the same path in a channels file names the same channel.
_INDEXED = re.compile(r"^(.*?)((?:\[-?\d+\])+)$")


def _split_indexes(part: str) -> tuple[str, list[int]]:
    """``"channels[0]"`` -> (``"channels"``, ``[0]``); a part without ``[i]`` is itself."""
    match = _INDEXED.match(part)
    if match is None or not match.group(1):
        return part, []
    return match.group(1), [int(i) for i in re.findall(r"-?\d+", match.group(2))]


def _child(node: Any, key: str) -> Any:
    """The parameter, submodule or channel ``key`` of ``node``, else ``None``.

    Besides the node's own tables, an attribute set on the instance that is a parameter,
    instrument or channel list: QCoDeS's station file makes a parameter's ``alias:`` that way
    (``setattr(instrument, alias, parameter)``), and it is the name the operator knows it by.
    Only an instrument's or channel's own public attributes: a driver's property could talk to
    the instrument."""
    parameters = getattr(node, "parameters", {})
    submodules = getattr(node, "submodules", {})
    if key in parameters:
        return parameters[key]
    if key in submodules:
        return submodules[key]
    if (channel := _channel_named(node, key)) is not None:
        return channel
    from qcodes.instrument import ChannelTuple, InstrumentBase
    from qcodes.parameters import ParameterBase

    if not isinstance(node, InstrumentBase) or key.startswith("_"):
        return None
    attribute = vars(node).get(key)
    return (
        attribute if isinstance(attribute, ParameterBase | InstrumentBase | ChannelTuple) else None
    )


def _indexed(node: Any, index: int, where: str, source: str) -> Any:
    """``node[index]`` of a channel list, with the reason in one line when it is not one."""
    from qcodes.instrument import ChannelTuple

    if not isinstance(node, ChannelTuple):
        raise ConfigError(
            f"{where} is not a list of channels to index with [{index}] (in {source!r})"
        )
    if not -len(node) <= index < len(node):
        raise ConfigError(
            f"{where} has {len(node)} channel(s): [{index}] is out of range (in {source!r})"
        )
    return node[index]


def _channel_named(node: Any, name: str) -> Any:
    """The channel called ``name`` (its ``short_name``) of a channel list, else ``None``.

    Many drivers (a Rigol DS1074Z's ``ch1``…``ch4``) add their channels only as a list
    (``add_submodule("channels", channels.to_channel_tuple())``): ``scope.channels.ch1.trace``
    is then the only path to them."""
    from qcodes.instrument import ChannelTuple

    if not isinstance(node, ChannelTuple):
        return None
    return next((channel for channel in node if channel.short_name == name), None)


def value_type_from_vals(vals: object) -> ValueType:
    """Map a QCoDeS validator to a storage type; unknown validators store values untyped."""
    from qcodes import validators as v

    if vals is None:
        return "any"
    if isinstance(vals, v.Bool):
        return "bool"
    if isinstance(vals, v.Ints | v.PermissiveInts):
        return "int"
    if isinstance(vals, v.Numbers | v.PermissiveMultiples | v.Multiples):
        return "int" if isinstance(vals, v.Multiples) else "float"
    if isinstance(vals, v.Strings):
        return "str"
    if isinstance(vals, v.Arrays):
        return "array"
    if isinstance(vals, v.Enum):
        return _members_type(list(vals._valid_values))
    return "any"


def _members_type(members: list[Any]) -> ValueType:
    """The type of a value that is always one of ``members`` (an ``Enum``'s)."""
    if members and all(isinstance(m, bool) for m in members):
        return "bool"
    if members and all(isinstance(m, int) and not isinstance(m, bool) for m in members):
        return "int"
    if members and all(isinstance(m, str) for m in members):
        return "str"
    if members and all(isinstance(m, int | float) for m in members):
        return "float"
    return "any"


# What a repr carries that changes from run to run: QCoDeS's repr of a parameter (an Arrays
# shape), a default object repr's address (QCoDeS's OnOff validator has no repr of its own),
# any other address (a function's).
_NAMED_AT = re.compile(r"<[\w.]+: ([^<>]*?) at \d+>")
_OBJECT_AT = re.compile(r"(?:[\w.]+\.)?(\w+) object at 0x[0-9a-fA-F]+")
_AT = re.compile(r" at 0x[0-9a-fA-F]+")


def describe_vals(vals: object) -> str | None:
    """A validator as text (``<Numbers -1<=v<=1>``): its repr without memory addresses, so a
    driver's validator reads the same in every run — ``<OnOff>``, ``<Arrays, shape: (n,)>``
    rather than ``<qcodes.validators.validators.OnOff object at 0x7f…>`` and a shape that
    names a parameter by its ``id``."""
    if vals is None:
        return None
    text = _OBJECT_AT.sub(r"\1", _NAMED_AT.sub(r"\1", _sorted_repr(vals)))
    return _AT.sub("", text)


def _member_key(member: object) -> tuple[int, float, str]:
    if isinstance(member, int | float) and not isinstance(member, bool):
        return (0, member, "")
    return (1, 0.0, repr(member))


def _sorted_repr(vals: object) -> str:
    """``repr(vals)``, with an ``Enum``'s members in order, also inside a ``MultiType``: QCoDeS
    prints them as a set, whose order of strings changes from process to process (hash
    randomisation), so ``<Enum: {'on', 'off'}>`` was ``<Enum: {'off', 'on'}>`` in the next run."""
    from qcodes import validators as v

    if isinstance(vals, v.Enum) and type(vals).__repr__ is v.Enum.__repr__:
        members = sorted(vals._values, key=_member_key)
        return f"<Enum: {{{', '.join(map(repr, members))}}}>"
    if type(vals) in (v.MultiType, v.MultiTypeOr, v.MultiTypeAnd):
        parts = ", ".join(_sorted_repr(x)[1:-1] for x in vals._validators)  # type: ignore[attr-defined]
        return f"<{type(vals).__name__}: {parts}>"
    return repr(vals)


#: A ``get_parser`` that decides the type of every value ``get()`` returns.
_PARSERS: tuple[tuple[Any, ValueType], ...] = ((float, "float"), (int, "int"), (str, "str"))


def _chain(param: Any) -> list[Any]:
    """``param``, then a ``DelegateParameter``'s source, its source… (each once)."""
    chain: list[Any] = []
    node = param
    while node is not None and all(node is not seen for seen in chain):
        chain.append(node)
        node = getattr(node, "source", None)
    return chain


def value_type_of(param: Any) -> ValueType:
    """The storage type of a parameter's values, from what the parameter declares.

    A ``val_mapping`` decides: ``get()`` returns its keys, not the validator's whole set — a
    QCoDeS ``create_on_off_val_mapping`` validator also allows ``"on"``, ``"ON"``, ``"1"``…,
    yet every read is ``True`` or ``False``: a ``bool``, not an untyped column. Otherwise the
    validator; without one, a ``get_parser`` of ``float``, ``int`` or ``str`` (a Lakeshore's
    temperatures: every value is what it returns). A parameter with ``scale`` or ``offset``
    returns ``(raw - offset) / scale`` — a fraction even when its validator (which checks what is
    *set*) says ``Ints``. All of it also through a ``DelegateParameter``'s source."""
    chain = _chain(param)
    for node in chain:
        mapping = getattr(node, "val_mapping", None)
        if isinstance(mapping, Mapping) and mapping:
            # QCoDeS reads through the inverse mapping: the last key of each raw value.
            return _members_type(list({raw: key for key, raw in mapping.items()}.values()))
    value_type = value_type_from_vals(getattr(param, "vals", None))
    if value_type == "any":
        parsers = [getattr(node, "get_parser", None) for node in chain]
        parsed = (kind for parser in parsers for fn, kind in _PARSERS if parser is fn)
        value_type = next(parsed, "any")
    scaled = any(
        getattr(node, "scale", None) is not None or getattr(node, "offset", None) is not None
        for node in chain
    )
    return "float" if scaled and value_type == "int" else value_type


#: Value types whose changes have no size: a tolerance on them would be ignored.
_EXACT_ONLY = frozenset({"bool", "str", "array"})


def _channel(spec: ChannelSpec, instruments: Mapping[str, Any]) -> Channel:
    instrument, param = resolve_parameter(spec.source, instruments)
    value_type = value_type_of(param)
    if value_type in _EXACT_ONLY and (spec.tolerance_abs or spec.tolerance_rel):
        raise ConfigError(
            f"{spec.label!r}: a tolerance applies to numbers, and {spec.source!r} is"
            f" {value_type} (compared exactly); remove its tolerance"
        )
    return Channel(
        label=spec.label,
        kind=spec.kind,
        source=spec.source,
        instrument=instrument,
        group=spec.group_name,
        unit=str(getattr(param, "unit", "") or ""),
        value_type=value_type,
        vals=describe_vals(getattr(param, "vals", None)),
        tolerance_abs=spec.tolerance_abs,
        tolerance_rel=spec.tolerance_rel,
        parameter=param,
    )


def build_groups(config: MonitorConfig, instruments: Mapping[str, Any]) -> list[PollGroup]:
    """Signal groups first, then spec groups, each in configuration order.

    Groups are consistent by construction (one kind, one interval, one spelling: checked when
    the :class:`MonitorConfig` was validated), and a group's interval comes from every
    configured channel, so narrowing the selection never changes a group's schedule.
    """
    specs = config.selected_channels()
    if not specs:
        raise ConfigError("no channels selected")
    members: dict[str, list[Channel]] = {}
    intervals: dict[str, float] = {}
    kinds: dict[str, str] = {}
    for spec in specs:
        group = spec.group_name
        kinds[group] = spec.kind
        intervals[group] = config.group_interval(spec)
        members.setdefault(group, []).append(_channel(spec, instruments))
    order = sorted(members, key=lambda g: (kinds[g] != "signal", list(members).index(g)))
    return [
        PollGroup(
            name=g, kind=members[g][0].kind, interval_s=intervals[g], channels=tuple(members[g])
        )
        for g in order
    ]
