"""Parameters: declared once, from the core's config dataclasses, filled from config/*.yaml.

A node calls :func:`declare_dataclass_parameters` with the dataclass its core object takes; every
field becomes a ROS parameter (nested dataclasses become dotted names, e.g.
``safety.max_step_translation``) with the field's ``metadata["help"]`` as its description and the
dataclass default as its default. The values then come from the YAML parameter file that both
``ros2 launch`` and the non-launch runner pass, so each number lives in exactly one place.
"""

from __future__ import annotations

import dataclasses
import pathlib
import typing
from typing import Any

import yaml


def _field_help(field: dataclasses.Field) -> str:
    return str(field.metadata.get("help", ""))


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def iter_dataclass_fields(cls: type, prefix: str = ""):
    """Yield (dotted_name, field, resolved_type, default) for every leaf field of ``cls``."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        tp = hints[field.name]
        name = f"{prefix}{field.name}"
        if _is_dataclass_type(tp):
            yield from iter_dataclass_fields(tp, prefix=f"{name}.")
            continue
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = field.default_factory()  # type: ignore[misc]
        else:
            raise TypeError(f"{cls.__name__}.{field.name} needs a default to become a ROS parameter")
        yield name, field, tp, default


def _to_ros_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if value is None:
        return ""
    return value


def _parameter_type(tp: Any, default: Any):
    from rcl_interfaces.msg import ParameterType

    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (list, tuple) or isinstance(default, (list, tuple)):
        inner = args[0] if args else (type(default[0]) if default else float)
        return {
            float: ParameterType.PARAMETER_DOUBLE_ARRAY,
            int: ParameterType.PARAMETER_INTEGER_ARRAY,
            str: ParameterType.PARAMETER_STRING_ARRAY,
            bool: ParameterType.PARAMETER_BOOL_ARRAY,
        }.get(inner, ParameterType.PARAMETER_DOUBLE_ARRAY)
    if origin is typing.Union:  # Optional[X]: stored as X, None as "" / NaN is not allowed
        non_none = [a for a in args if a is not type(None)]
        return _parameter_type(non_none[0], default)
    return {
        float: ParameterType.PARAMETER_DOUBLE,
        int: ParameterType.PARAMETER_INTEGER,
        str: ParameterType.PARAMETER_STRING,
        bool: ParameterType.PARAMETER_BOOL,
    }.get(tp, ParameterType.PARAMETER_STRING)


def _coerce(value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is tuple:
        return tuple(value)
    if origin is list:
        return list(value)
    if origin is typing.Union:
        non_none = [a for a in typing.get_args(tp) if a is not type(None)]
        if value in ("", None):
            return None
        return _coerce(value, non_none[0])
    if tp is float and isinstance(value, int):
        return float(value)
    return value


def _build(cls: type, flat: dict[str, Any], prefix: str = ""):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        tp = hints[field.name]
        name = f"{prefix}{field.name}"
        if _is_dataclass_type(tp):
            kwargs[field.name] = _build(tp, flat, prefix=f"{name}.")
        elif name in flat:
            kwargs[field.name] = _coerce(flat[name], tp)
    return cls(**kwargs)


def declare_dataclass_parameters(node, cls: type, prefix: str = ""):
    """Declare every field of ``cls`` as a parameter of ``node`` and return ``cls`` filled in."""
    from rcl_interfaces.msg import ParameterDescriptor

    flat: dict[str, Any] = {}
    for name, field, tp, default in iter_dataclass_fields(cls, prefix=prefix):
        descriptor = ParameterDescriptor(
            name=name, description=_field_help(field), type=_parameter_type(tp, default)
        )
        param = node.declare_parameter(name, _to_ros_value(default), descriptor)
        flat[name] = param.value
    return _build(cls, flat, prefix=prefix)


def flatten(nested: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1} (how ROS names nested YAML parameters)."""
    out: dict[str, Any] = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, prefix=f"{name}."))
        else:
            out[name] = value
    return out


def load_node_parameters(config_path: str | pathlib.Path, node_name: str) -> dict[str, Any]:
    """The flat parameters a node named ``node_name`` gets from a ROS 2 YAML parameter file.

    Merges the ``/**`` wildcard section with the node's own section (own values win), exactly as
    the parameter file is applied by ROS, so code without a running node (tests, the simulation
    demo) reads the same values the nodes run with.
    """
    data = yaml.safe_load(pathlib.Path(config_path).read_text()) or {}
    merged: dict[str, Any] = {}
    for key in ("/**", node_name, f"/{node_name}"):
        section = data.get(key) or {}
        merged.update(flatten(section.get("ros__parameters") or {}))
    return merged


def dataclass_from_parameters(cls: type, flat: dict[str, Any], prefix: str = ""):
    """Fill ``cls`` from flat (dotted) parameters, e.g. from :func:`load_node_parameters`."""
    known = {name for name, *_ in iter_dataclass_fields(cls, prefix=prefix)}
    unknown = sorted(k for k in flat if k.startswith(prefix) and k not in known)
    if unknown:
        raise KeyError(f"unknown parameters for {cls.__name__}: {unknown}; known: {sorted(known)}")
    return _build(cls, flat, prefix=prefix)
