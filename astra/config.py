"""Strict dataclass <-> YAML configs with ``key.path=value`` overrides.

A config is a tree of dataclasses whose fields are typed with ``int``, ``float``, ``str``,
``bool``, ``list[T]``, ``tuple[T, ...]``, ``dict[str, T]``, ``Optional[T]`` (``T | None``),
``Literal[...]`` or another dataclass, each with a default. Loading is strict: a key the
dataclass does not have, a value of the wrong type, a missing or unreadable file are all a
:class:`ConfigError` whose one-line message names the file and the dotted key.

    cfg = load_config(TrainConfig, "recipes/tiny/pretrain.yaml", ["optim.lr=3e-4"])
    save_config(cfg, "exp/run/config.yaml")

Override values are parsed as YAML (``a.b=1e-3`` is a float, ``a.c=[en, fr]`` a list,
``a.d=null`` None); dotted keys address nested dataclasses and ``dict`` entries.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from astra.errors import ConfigError

T = TypeVar("T")

__all__ = [
    "ConfigError",
    "apply_overrides",
    "check_choices",
    "from_dict",
    "load_config",
    "load_yaml",
    "save_config",
    "to_dict",
]


def check_choices(obj: Any, prefix: str) -> None:
    """Raise ``ValueError`` naming the first field of dataclass ``obj`` typed ``Literal[...]``
    (or ``Literal[...] | None``) whose value is not one of its choices, so a config built in code
    is checked like one loaded from YAML. ``prefix`` names the section (``"model."``)."""
    for name, tp in _field_types(type(obj)).items():
        args = typing.get_args(tp)
        if typing.get_origin(tp) in (Union, types.UnionType):
            literals = [a for a in args if typing.get_origin(a) is Literal]
            if not literals or (getattr(obj, name) is None and type(None) in args):
                continue
            args = typing.get_args(literals[0])
        elif typing.get_origin(tp) is not Literal:
            continue
        value = getattr(obj, name)
        if value not in args:
            raise ValueError(f"{prefix}{name}={value!r}: use one of {args}")


def _renamed(cls: type, name: str, key: str) -> ConfigError | None:
    """The error for ``key`` when ``name`` is a key that dataclass ``cls`` renamed (its class
    attribute ``RENAMED_KEYS``, old name -> new name), else None."""
    new = getattr(cls, "RENAMED_KEYS", {}).get(name)
    if new is None:
        return None
    return ConfigError(f"'{key}' was renamed: use '{key[: len(key) - len(name)]}{new}'")


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` (plain YAML data) against type ``tp`` and convert it; ``key`` names it."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        return _convert_union(value, tp, args, key)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{key}: {value!r} is not one of {choices}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if origin in (list, tuple, dict):
        return _convert_container(value, origin, args, key)
    return _convert_scalar(value, tp, key)


def _convert_union(value: Any, tp: Any, args: tuple, key: str) -> Any:
    """``Optional[T]`` / ``A | B``: None when allowed, else the first member type that fits."""
    if value is None and type(None) in args:
        return None
    non_none = [a for a in args if a is not type(None)]
    if len(non_none) == 1:
        return _convert(value, non_none[0], key)
    for arg in non_none:
        try:
            return _convert(value, arg, key)
        except ConfigError:
            continue
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _convert_container(value: Any, origin: type, args: tuple, key: str) -> Any:
    """``list[T]``, ``tuple[T, ...]`` or ``dict[K, V]``, item by item."""
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        items = [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping, got {value!r}")
    key_tp, val_tp = args if args else (Any, Any)
    return {
        _convert(k, key_tp, f"{key} key"): _convert(v, val_tp, f"{key}.{k}")
        for k, v in value.items()
    }


def _convert_scalar(value: Any, tp: Any, key: str) -> Any:
    """``bool``, ``int``, ``float`` (a number-like string too), ``str`` or another class."""
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # YAML 1.1 reads "1e-3" (no dot) as a string: accept it when it is a number.
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type):
        if not isinstance(value, tp):
            raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported field type {_type_name(tp)}")


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a plain mapping; unknown keys and bad types are errors."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        where = prefix or "config"
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = _field_types(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if name not in fields:
            renamed = _renamed(cls, name, key)
            if renamed is not None:
                raise renamed
            known = ", ".join(sorted(fields))
            raise ConfigError(f"unknown key '{key}' (known keys here: {known})")
        kwargs[name] = _convert(value, hints[name], key)
    where = f"{prefix}: " if prefix else ""
    try:
        obj = cls(**kwargs)
        # a dataclass may check its own consistency (``validate()`` raising ValueError)
        validate = getattr(obj, "validate", None)
        if callable(validate):
            validate()
    except TypeError as e:  # a field without default that is missing from the file
        raise ConfigError(f"{where}{e}") from None
    except ValueError as e:  # __post_init__ / validate() naming the field
        raise ConfigError(f"{where}{e}") from None
    return obj


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain YAML-ready data (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file, a syntax error or a non-mapping is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}{where}: invalid YAML ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top, got {type(data).__name__}")
    return data


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}': empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(cls: type, data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Set ``a.b.c=value`` entries into the plain mapping ``data`` (a copy is returned).

    Keys are checked against ``cls`` so a typo names the key rather than silently adding one.
    """
    import copy

    data = copy.deepcopy(data) if data else {}
    for text in overrides or []:
        parts, value = _parse_override(text)
        tp: Any = cls
        node = data
        for depth, part in enumerate(parts):
            key = ".".join(parts[: depth + 1])
            last = depth == len(parts) - 1
            if dataclasses.is_dataclass(tp):
                hints = _field_types(tp)
                if part not in hints:
                    renamed = _renamed(tp, part, key)
                    if renamed is not None:
                        raise renamed
                    known = ", ".join(sorted(hints))
                    raise ConfigError(f"unknown key '{key}' in --set {text} (known keys here: {known})")
                tp = hints[part]
            elif typing.get_origin(tp) is dict:
                tp = typing.get_args(tp)[1] if typing.get_args(tp) else Any
            else:
                raise ConfigError(f"--set {text}: '{'.'.join(parts[:depth])}' has no sub-keys")
            # unwrap Optional[Dataclass] so deeper keys can be addressed
            if typing.get_origin(tp) in (Union, types.UnionType) and not last:
                non_none = [a for a in typing.get_args(tp) if a is not type(None)]
                if len(non_none) == 1:
                    tp = non_none[0]
            if last:
                node[part] = value
            else:
                child = node.get(part)
                if child is None:
                    child = {}
                    node[part] = child
                elif not isinstance(child, dict):
                    raise ConfigError(f"--set {text}: '{key}' is not a mapping in the config")
                node = child
    return data


def load_config(cls: type[T], path: str | Path | None, overrides: list[str] | None = None) -> T:
    """Load dataclass ``cls`` from a YAML file (or defaults when ``path`` is None) + overrides."""
    data = load_yaml(path) if path is not None else {}
    data = apply_overrides(cls, data, overrides)
    try:
        return from_dict(cls, data)
    except ConfigError as e:
        if path is None:
            raise
        raise ConfigError(f"{path}: {e}") from None


def save_config(cfg: Any, path: str | Path) -> None:
    """Write a dataclass config as YAML (key order as declared)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)
    path.write_text(text, encoding="utf-8")
