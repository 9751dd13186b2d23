"""Typed dataclass configurations from untyped data: nested dicts, `key=value` overrides.

    cfg = from_dict(RunConfig, yaml.safe_load(text))       # every leaf checked against its hint
    key, value = parse_override("optim.lr=3e-3")            # the value read as YAML
    set_field(cfg, key, value)                              # checked, then set

A value is checked against its field's type hint and converted where the conversion is exact
(an int for a float, a YAML list for a tuple); anything else raises `ValueError` naming the
field, and an unknown key raises `ValueError` naming the known ones. The hints understood:
bool, int, float, str, Literal, unions (`X | None`), `dict[str, ...]`, `tuple[X, ...]`,
`tuple[X, Y]`, `list[X]` and nested dataclasses. Plain Python only: any layer may use it.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Literal

import yaml

_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def check_value(name: str, hint: Any, value: Any) -> Any:
    """`value` converted to the type `hint`, or ValueError naming the field `name`."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise ValueError(f"{name}: {value!r} is not one of {list(typing.get_args(hint))}")
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return check_value(name, option, value)
            except ValueError as error:
                errors.append(str(error))
        raise ValueError(errors[0] if len(errors) == 1 else f"{name}: {value!r} fits no option")
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ValueError(f"{name}: expected a mapping with string keys, got {value!r}")
        return dict(value)
    if origin in (tuple, list):
        return _check_sequence(name, origin, typing.get_args(hint), value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads "1e-3" (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{name}: expected a string, got {value!r}")
        return value
    if hint is Any:
        return value
    raise AssertionError(f"unhandled type {hint} for {name}")


def _check_sequence(name: str, origin: type, args: tuple[Any, ...], value: Any) -> Any:
    """A list or tuple field: `list[X]`, `tuple[X, ...]` (any length) or `tuple[X, Y]`."""
    if not isinstance(value, list | tuple):
        raise ValueError(f"{name}: expected a list, got {value!r}")
    if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            raise ValueError(f"{name}: expected {len(args)} values, got {value!r}")
        hints = args
    else:
        hints = (args[0] if args else Any,) * len(value)
    pairs = enumerate(zip(hints, value, strict=True))
    return origin(check_value(f"{name}[{i}]", hint, item) for i, (hint, item) in pairs)


def field_hint(cls: type, key: str, prefix: str = "", what: str = "config key") -> Any:
    """The type hint of the field `key` of the dataclass `cls`; ValueError naming the known
    fields when there is none. `prefix` (e.g. "optim.") and `what` word the message."""
    names = [f.name for f in dataclasses.fields(cls)]
    if key not in names:
        raise ValueError(f"unknown {what} {prefix + key!r}; known keys here: {', '.join(names)}")
    return typing.get_type_hints(cls)[key]


def from_dict(cls: type, data: Any, prefix: str = "", what: str = "config key") -> Any:
    """The dataclass `cls` built from nested dicts, every leaf checked against its hint.

    Missing fields take their defaults; the dataclass's own `__post_init__` checks run as usual.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    kwargs = {}
    for key, value in data.items():
        hint = field_hint(cls, key, prefix, what)
        if dataclasses.is_dataclass(hint):
            kwargs[key] = from_dict(hint, value, f"{prefix}{key}.", what)
        else:
            kwargs[key] = check_value(prefix + key, hint, value)
    return cls(**kwargs)


def set_field(cfg: Any, dotted: str, value: Any) -> None:
    """Set `cfg.<dotted>` (e.g. "optim.lr") to `value` after checking it against the field."""
    *parents, leaf = dotted.split(".")
    target: Any = cfg
    prefix = ""
    for part in parents:
        hint = field_hint(type(target), part, prefix)
        if not dataclasses.is_dataclass(hint):
            raise ValueError(f"unknown config key {dotted!r}: {prefix + part!r} is not a section")
        target, prefix = getattr(target, part), f"{prefix}{part}."
    hint = field_hint(type(target), leaf, prefix)
    if dataclasses.is_dataclass(hint):
        raise ValueError(f"{dotted!r} is a section; set one of its fields, e.g. {dotted}.<field>")
    setattr(target, leaf, check_value(dotted, hint, value))


def parse_override(text: str) -> tuple[str, Any]:
    """Split `key=value` (`section.field=value` for a nested field); the value is read as YAML
    (numbers, true/false, null, [lists], {maps}), an empty value as ""."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {text!r} must look like field=value or "
                         "section.field=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise ValueError(f"override {text!r}: cannot read the value ({error})") from None
    return key.strip(), value
