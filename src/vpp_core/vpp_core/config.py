"""Filling nested configuration dataclasses from plain dicts (a YAML file, ROS parameters, a checkpoint)."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping, TypeVar

T = TypeVar("T")

__all__ = ["dataclass_from_dict", "dataclass_to_dict"]


def _unwrap_optional(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        arguments = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(arguments) == 1:
            return arguments[0]
    return annotation


def _convert(annotation: Any, value: Any, path: str) -> Any:
    if value is None:
        return None
    target = _unwrap_optional(annotation)
    if dataclasses.is_dataclass(target) and isinstance(target, type):
        if isinstance(value, target):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"{path}: expected a mapping for {target.__name__}, got {value!r}")
        return dataclass_from_dict(target, value, _path=path)
    origin = typing.get_origin(target)
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise ValueError(f"{path}: expected a sequence, got {value!r}")
        items = list(value)
        arguments = typing.get_args(target)
        if len(arguments) == 2 and arguments[1] is Ellipsis:
            return tuple(_convert(arguments[0], item, f"{path}[{i}]") for i, item in enumerate(items))
        if not arguments:
            return tuple(items)
        if len(arguments) != len(items):
            raise ValueError(f"{path}: expected {len(arguments)} values, got {len(items)}")
        return tuple(_convert(a, item, f"{path}[{i}]") for i, (a, item) in enumerate(zip(arguments, items)))
    if target is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if target is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{path}: expected an integer, got {value!r}")
        return value
    if target is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{path}: expected true/false, got {value!r}")
        return value
    if target is str:
        if not isinstance(value, str):
            raise ValueError(f"{path}: expected a string, got {value!r}")
        return value
    return value


def dataclass_from_dict(cls: type[T], data: Mapping[str, Any] | None, _path: str = "") -> T:
    """Build ``cls`` from ``data``, recursing into nested dataclass fields.

    Missing keys keep their defaults; unknown keys raise ``ValueError`` (a typo in a YAML file
    must not silently fall back to a default). Lists become tuples where the field is a tuple.
    """
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(
            f"{_path or cls.__name__}: unknown keys {unknown}; known keys: {sorted(fields)}"
        )
    kwargs = {
        name: _convert(hints[name], value, f"{_path + '.' if _path else ''}{name}")
        for name, value in data.items()
    }
    return cls(**kwargs)


def dataclass_to_dict(instance: Any) -> dict[str, Any]:
    """Inverse of :func:`dataclass_from_dict`, with tuples as lists (YAML friendly)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        return value

    return plain(instance)
