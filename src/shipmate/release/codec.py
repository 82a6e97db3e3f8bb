"""Frozen dataclasses to JSON-ready dicts and back, driven by their fields' type hints.

Called by the release engine and the store to persist `Release` and `Rollout` (with the `Plan`,
steps and decisions inside them), and by `history` / `rollout status --output json`. Pure: this
module must not do I/O; it turns values into plain data and back and nothing else.

The rules, from the type hints: a dataclass is an object of its fields, in field order; a tuple
is a list; a `Mapping` an object (int keys written as strings); `Literal` values are checked;
a union takes the first member the value fits, in the order written (so `int | str` keeps 5
and "25%" apart); `Any` is JSON data, copied. A float that is not finite is written as the
string "NaN", "Infinity" or "-Infinity". Decoding checks every value against its hint, fills
fields left out with their defaults (a field added later reads older data) and refuses
unknown fields, so nothing is lost silently. `from_json(C, to_json(x)) == x` for every value
these rules cover; `Any` data must be JSON already (lists, not tuples).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, cast

T = TypeVar("T")

_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class CodecError(ValueError):
    """A value does not fit its type hint; the message names the field path."""


def to_json(obj: Any) -> dict[str, Any]:
    """A dataclass instance as JSON-ready data (json.dumps takes it; equal values give equal output)."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise CodecError(f"to_json takes a dataclass instance, not {type(obj).__name__}")
    return cast(dict[str, Any], _encode(type(obj), obj, type(obj).__name__))


def from_json(cls: type[T], data: Mapping[str, Any]) -> T:
    """The instance of dataclass `cls` that `to_json` wrote as `data`."""
    if not dataclasses.is_dataclass(cls):
        raise CodecError(f"from_json takes a dataclass, not {cls!r}")
    return cast(T, _decode(cls, data, cls.__name__))


_HINTS: dict[type, tuple[tuple[str, Any, bool], ...]] = {}


def _hints(cls: type) -> tuple[tuple[str, Any, bool], ...]:
    """(name, hint, has a default) of each init field of a dataclass (computed once per class)."""
    known = _HINTS.get(cls)
    if known is not None:
        return known
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        out.append((f.name, hints[f.name], has_default))
    _HINTS[cls] = tuple(out)
    return _HINTS[cls]


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _encode(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any:
        return _encode_any(value, path)
    if hint is type(None) or hint is None:
        if value is not None:
            raise CodecError(f"{path}: expected null, got {type(value).__name__}")
        return None
    if origin is typing.Literal:
        if not any(value == a and type(value) is type(a) for a in typing.get_args(hint)):
            raise CodecError(f"{path}: {value!r} is not one of {list(typing.get_args(hint))}")
        return value
    if _is_union(hint):
        for member in typing.get_args(hint):
            try:
                return _encode(member, value, path)
            except CodecError:
                continue
        raise CodecError(f"{path}: {value!r} fits none of {_name(hint)}")
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if type(value) is not hint:
            raise CodecError(f"{path}: expected {hint.__name__}, got {type(value).__name__}")
        return {name: _encode(h, getattr(value, name), f"{path}.{name}") for name, h, _ in _hints(hint)}
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, tuple):
            raise CodecError(f"{path}: expected a tuple, got {type(value).__name__}")
        return [_encode(h, v, f"{path}[{i}]") for i, (h, v) in enumerate(_tuple_items(args, value, path))]
    if origin in (Mapping, dict):
        key_hint, value_hint = typing.get_args(hint) or (str, Any)
        if not isinstance(value, Mapping):
            raise CodecError(f"{path}: expected a mapping, got {type(value).__name__}")
        return {_encode_key(key_hint, k, path): _encode(value_hint, v, _item(path, k)) for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise CodecError(f"{path}: expected a bool, got {type(value).__name__}")
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise CodecError(f"{path}: expected an int, got {type(value).__name__}")
        return value
    if hint is float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise CodecError(f"{path}: expected a float, got {type(value).__name__}")
        return _encode_float(float(value))
    if hint is str:
        if not isinstance(value, str):
            raise CodecError(f"{path}: expected a str, got {type(value).__name__}")
        return value
    raise CodecError(f"{path}: cannot encode a value of type hint {_name(hint)}")


def _decode(hint: Any, data: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any:
        return _decode_any(data, path)
    if hint is type(None) or hint is None:
        if data is not None:
            raise CodecError(f"{path}: expected null, got {type(data).__name__}")
        return None
    if origin is typing.Literal:
        for option in typing.get_args(hint):
            if data == option and type(data) is type(option):
                return option
        raise CodecError(f"{path}: {data!r} is not one of {list(typing.get_args(hint))}")
    if _is_union(hint):
        for member in typing.get_args(hint):
            try:
                return _decode(member, data, path)
            except CodecError:
                continue
        raise CodecError(f"{path}: {data!r} fits none of {_name(hint)}")
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(data, Mapping):
            raise CodecError(f"{path}: expected an object for {hint.__name__}, got {type(data).__name__}")
        fields = _hints(hint)
        unknown = sorted(set(data) - {name for name, _, _ in fields})
        if unknown:
            raise CodecError(f"{path}: unknown field(s) of {hint.__name__}: {', '.join(map(str, unknown))}")
        kwargs = {}
        for name, h, has_default in fields:
            if name in data:
                kwargs[name] = _decode(h, data[name], f"{path}.{name}")
            elif not has_default:
                raise CodecError(f"{path}: missing field {name!r} of {hint.__name__}")
        return hint(**kwargs)
    if origin is tuple:
        if not isinstance(data, list):
            raise CodecError(f"{path}: expected a list, got {type(data).__name__}")
        items = _tuple_items(typing.get_args(hint), tuple(data), path)
        return tuple(_decode(h, v, f"{path}[{i}]") for i, (h, v) in enumerate(items))
    if origin in (Mapping, dict):
        key_hint, value_hint = typing.get_args(hint) or (str, Any)
        if not isinstance(data, Mapping):
            raise CodecError(f"{path}: expected an object, got {type(data).__name__}")
        return {_decode_key(key_hint, k, path): _decode(value_hint, v, _item(path, k)) for k, v in data.items()}
    if hint is bool:
        if not isinstance(data, bool):
            raise CodecError(f"{path}: expected a bool, got {type(data).__name__}")
        return data
    if hint is int:
        if not isinstance(data, int) or isinstance(data, bool):
            raise CodecError(f"{path}: expected an int, got {type(data).__name__}")
        return data
    if hint is float:
        if isinstance(data, str) and data in _NON_FINITE:
            return _NON_FINITE[data]
        if not isinstance(data, int | float) or isinstance(data, bool):
            raise CodecError(f"{path}: expected a number, got {type(data).__name__}")
        return float(data)
    if hint is str:
        if not isinstance(data, str):
            raise CodecError(f"{path}: expected a string, got {type(data).__name__}")
        return data
    raise CodecError(f"{path}: cannot decode a value of type hint {_name(hint)}")


def _tuple_items(args: tuple[Any, ...], value: tuple[Any, ...], path: str) -> list[tuple[Any, Any]]:
    if len(args) == 2 and args[1] is Ellipsis:
        return [(args[0], v) for v in value]
    if not args:
        return [(Any, v) for v in value]
    if len(args) != len(value):
        raise CodecError(f"{path}: expected {len(args)} items, got {len(value)}")
    return list(zip(args, value, strict=True))


def _item(path: str, key: Any) -> str:
    return f"{path}.{key}" if isinstance(key, str) else f"{path}[{key!r}]"


def _encode_key(hint: Any, key: Any, path: str) -> str:
    if hint is int and isinstance(key, int) and not isinstance(key, bool):
        return str(key)
    if hint in (str, Any) and isinstance(key, str):
        return key
    raise CodecError(f"{path}: key {key!r} does not fit {_name(hint)}")


def _decode_key(hint: Any, key: str, path: str) -> Any:
    if hint is int:
        try:
            return int(key)
        except ValueError:
            raise CodecError(f"{path}: key {key!r} is not an int") from None
    return key


def _encode_float(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _encode_any(value: Any, path: str) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CodecError(f"{path}: {value} is not JSON")
        return value
    if isinstance(value, list | tuple):
        return [_encode_any(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise CodecError(f"{path}: key {k!r} is not a string")
            out[k] = _encode_any(v, _item(path, k))
        return out
    raise CodecError(f"{path}: a {type(value).__name__} is not JSON data")


def _decode_any(data: Any, path: str) -> Any:
    if isinstance(data, list):
        return [_decode_any(v, f"{path}[{i}]") for i, v in enumerate(data)]
    if isinstance(data, Mapping):
        return {str(k): _decode_any(v, _item(path, k)) for k, v in data.items()}
    return _encode_any(data, path)
