"""Parameters: declared once, from the core's config dataclasses, filled from config/*.yaml.

A node calls :func:`declare_dataclass_parameters` with the dataclass its core object takes; every
field becomes a ROS parameter (nested dataclasses become dotted names, e.g.
``safety.max_step_translation_m``) with the field's ``metadata["help"]`` as its description and
the dataclass default as its default. The values then come from the YAML parameter file that
both ``ros2 launch`` and the non-launch runner pass, so each number lives in exactly one place.

ROS parameters have no "unset" and no nested arrays, so: optional lists use ``[]`` and optional
floats NaN (``.nan`` in YAML) for "not set"; lists of (low, high) pairs are flat
``[low0, high0, low1, high1, ...]``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import pathlib
import types
import typing
from typing import Any

import yaml

from vpp_core.config import dataclass_from_dict

_SCALARS = {bool: "bool", int: "int", float: "float", str: "str"}


def _field_help(cls: type, field: dataclasses.Field) -> str:
    """``metadata["help"]``, else the ``#:`` comment above the field in the class source."""
    if "help" in field.metadata:
        return str(field.metadata["help"])
    return _comment_help(cls).get(field.name, "")


@functools.lru_cache(maxsize=None)
def _comment_help(cls: type) -> dict[str, str]:
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    helps: dict[str, str] = {}
    pending: list[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        name = stripped.split(":", 1)[0].strip()
        if pending and name.isidentifier():
            helps[name] = " ".join(pending)
        pending = []
    return helps


def iter_dataclass_fields(cls: type, prefix: str = ""):
    """Yield (dotted_name, field, resolved_type, default, owning_class) for every leaf field."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        tp = hints[field.name]
        name = f"{prefix}{field.name}"
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            yield from iter_dataclass_fields(tp, prefix=f"{name}.")
            continue
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = field.default_factory()  # type: ignore[misc]
        else:
            raise TypeError(f"{cls.__name__}.{field.name} needs a default to become a ROS parameter")
        yield name, field, tp, default, cls


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _kind(tp: Any) -> str:
    """How a field is stored as a ROS parameter: a scalar kind, '<scalar>_list' or 'pair_list'."""
    inner, _ = _unwrap_optional(tp)
    if typing.get_origin(inner) in (tuple, list):
        args = [a for a in typing.get_args(inner) if a is not Ellipsis]
        element = args[0] if args else float
        if typing.get_origin(element) in (tuple, list):
            return "pair_list"
        return f"{_SCALARS.get(element, 'float')}_list"
    return _SCALARS.get(inner, "str")


def _ros_default(kind: str, default: Any) -> Any:
    if kind == "pair_list":
        return [float(v) for pair in (default or ()) for v in pair]
    if kind.endswith("_list"):
        return list(default) if default is not None else []
    if default is None:
        if kind == "float":
            return math.nan
        if kind == "str":
            return ""
        raise TypeError("an optional int/bool field cannot be a ROS parameter; give it a default")
    return default


def _parameter_type(kind: str):
    from rcl_interfaces.msg import ParameterType as P

    return {
        "bool": P.PARAMETER_BOOL, "int": P.PARAMETER_INTEGER, "float": P.PARAMETER_DOUBLE,
        "str": P.PARAMETER_STRING, "bool_list": P.PARAMETER_BOOL_ARRAY,
        "int_list": P.PARAMETER_INTEGER_ARRAY, "float_list": P.PARAMETER_DOUBLE_ARRAY,
        "str_list": P.PARAMETER_STRING_ARRAY, "pair_list": P.PARAMETER_DOUBLE_ARRAY,
    }[kind]


def _from_ros_value(kind: str, optional: bool, value: Any) -> Any:
    if kind == "pair_list":
        values = [float(v) for v in value]
        if len(values) % 2:
            raise ValueError(f"expected (low, high) pairs, got {len(values)} numbers")
        return [values[i:i + 2] for i in range(0, len(values), 2)]
    if kind.endswith("_list"):
        values = list(value)
        if kind == "float_list":
            values = [float(v) for v in values]
        return None if optional and not values else values
    if optional and ((kind == "float" and isinstance(value, float) and math.isnan(value)) or value == ""):
        return None
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def nest_parameters(flat: dict[str, Any]) -> dict[str, Any]:
    """{'a.b': 1} -> {'a': {'b': 1}}: the inverse of :func:`flatten`."""
    nested: dict[str, Any] = {}
    for name, value in flat.items():
        node = nested
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def declare_dataclass_parameters(node, cls: type, prefix: str = "", skip: tuple[str, ...] = ()):
    """Declare every field of ``cls`` as a parameter of ``node`` and return ``cls`` filled in.

    ``prefix`` puts the fields under a namespace (``arm.host``); fields named in ``skip`` are not
    declared and keep their defaults (the node sets them from its own parameters).
    """
    from rcl_interfaces.msg import ParameterDescriptor

    flat: dict[str, Any] = {}
    for name, field, tp, default, owner in iter_dataclass_fields(cls):
        if name in skip:
            continue
        kind = _kind(tp)
        ros_name = f"{prefix}{name}"
        descriptor = ParameterDescriptor(name=ros_name, description=_field_help(owner, field), type=_parameter_type(kind))
        initial = _ros_default(kind, default)
        if isinstance(initial, list) and not initial:
            # rclpy cannot infer an element type from []: declare the type, then read back.
            from rclpy.exceptions import ParameterUninitializedException
            from rclpy.parameter import Parameter

            node.declare_parameter(ros_name, Parameter.Type(descriptor.type), descriptor)
            try:
                value = node.get_parameter(ros_name).value
            except ParameterUninitializedException:
                value = []
        else:
            value = node.declare_parameter(ros_name, initial, descriptor).value
        try:
            flat[name] = _from_ros_value(kind, _unwrap_optional(tp)[1], value)
        except ValueError as exc:
            raise ValueError(f"parameter {ros_name!r}: {exc}") from None
    return dataclass_from_dict(cls, nest_parameters(flat))


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

    Merges the ``/**`` wildcard section with the node's own section (own values win), as ROS
    applies the file, so code without a running node (tests, the simulation demo) reads the same
    values the nodes run with.
    """
    data = yaml.safe_load(pathlib.Path(config_path).read_text()) or {}
    merged: dict[str, Any] = {}
    for key in ("/**", node_name, f"/{node_name}"):
        section = data.get(key) or {}
        merged.update(flatten(section.get("ros__parameters") or {}))
    return merged


def dataclass_from_parameters(cls: type, flat: dict[str, Any], prefix: str = ""):
    """Fill ``cls`` from the flat parameters under ``prefix`` (others are ignored).

    Unknown names under the prefix raise: a typo in the YAML must not fall back to a default.
    """
    fields = {name: tp for name, _f, tp, _d, _c in iter_dataclass_fields(cls)}
    values = {}
    unknown = []
    for name, value in flat.items():
        if not name.startswith(prefix):
            continue
        short = name[len(prefix):]
        if short not in fields:
            unknown.append(name)
            continue
        values[short] = _from_ros_value(_kind(fields[short]), _unwrap_optional(fields[short])[1], value)
    if unknown:
        raise KeyError(f"unknown parameters for {cls.__name__}: {sorted(unknown)}")
    return dataclass_from_dict(cls, nest_parameters(values))
