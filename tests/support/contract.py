"""Strict conformance of a JSON answer to a vendor SDK's pydantic model.

The ``elevenlabs`` SDK's models are lenient on purpose (``extra="allow"``, and every
enum typed ``Literal[...] | Any`` so that new server values never break a client),
and its HTTP client does not validate at all. That leniency would hide exactly the
divergences a contract test must catch, so :func:`divergences` walks the JSON and
the model's field annotations together and reports:

- a required field that is missing;
- a key the model does not declare (an emulator inventing or misspelling a field);
- a value of the wrong JSON type (``bool`` is not an ``int``; an ``int`` is a float);
- an enum value outside the model's ``Literal`` (the ``| Any`` escape is ignored).

``model_validate`` is still run by the tests (the SDK's own view); this is the
stricter one.
"""

from __future__ import annotations

import types
import typing
from typing import Any

import pydantic

_SCALARS: dict[type, tuple[type, ...]] = {
    str: (str,),
    int: (int,),
    float: (int, float),
    bool: (bool,),
}


def divergences(model: type[pydantic.BaseModel], data: Any, path: str = "$") -> list[str]:
    """Every way ``data`` (decoded JSON) departs from ``model``; empty if it conforms."""
    return _check_model(model, data, path)


def _check_model(model: type[pydantic.BaseModel], data: Any, path: str) -> list[str]:
    if not isinstance(data, dict):
        return [f"{path}: expected an object for {model.__name__}, got {type(data).__name__}"]
    problems: list[str] = []
    by_key = {(field.alias or name): field for name, field in model.model_fields.items()}
    for key in data:
        if key not in by_key:
            problems.append(f"{path}.{key}: not a field of {model.__name__}")
    for key, field in by_key.items():
        if key not in data:
            if field.is_required():
                problems.append(f"{path}.{key}: required by {model.__name__}, missing")
            continue
        problems += _check(field.annotation, data[key], f"{path}.{key}")
    return problems


def _check(annotation: Any, value: Any, path: str) -> list[str]:  # noqa: PLR0911, PLR0912
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any or annotation is object:
        return []
    if origin is typing.Annotated:
        return _check(args[0], value, path)
    if annotation is type(None):
        return [] if value is None else [f"{path}: expected null, got {value!r}"]
    if origin in (typing.Union, types.UnionType):
        literals = [a for a in args if typing.get_origin(a) is typing.Literal]
        others = [a for a in args if a is not Any and typing.get_origin(a) is not typing.Literal]
        if value is None and type(None) in args:
            return []
        if Any in args and not literals:
            return []  # a plain ``Any`` (or ``Optional[Any]``): anything goes
        if literals and isinstance(value, str):
            allowed = {v for lit in literals for v in typing.get_args(lit)}
            if value in allowed:
                return []
            if not [a for a in others if a is not type(None)]:
                return [f"{path}: {value!r} is not one of {sorted(allowed)}"]
        candidates = [a for a in others if a is not type(None)]
        if not candidates:
            return [f"{path}: {value!r} does not match {annotation}"]
        attempts = [_check(a, value, path) for a in candidates]
        for attempt in attempts:
            if not attempt:
                return []
        return min(attempts, key=len)
    if origin is typing.Literal:
        return [] if value in args else [f"{path}: {value!r} is not one of {list(args)}"]
    if origin in (list, typing.List):  # noqa: UP006 - the SDK's annotations
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {type(value).__name__}"]
        return [p for i, item in enumerate(value) for p in _check(args[0], item, f"{path}[{i}]")]
    if origin in (dict, typing.Dict):  # noqa: UP006 - the SDK's annotations
        if not isinstance(value, dict):
            return [f"{path}: expected an object, got {type(value).__name__}"]
        item_type = args[1] if len(args) == 2 else Any
        return [p for k, item in value.items() for p in _check(item_type, item, f"{path}.{k}")]
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return _check_model(annotation, value, path)
    if annotation in _SCALARS:
        wanted = _SCALARS[annotation]
        if isinstance(value, bool) and annotation is not bool:
            return [f"{path}: expected {annotation.__name__}, got a boolean"]
        if isinstance(value, wanted):
            return []
        return [f"{path}: expected {annotation.__name__}, got {type(value).__name__}"]
    return [f"{path}: no check for {annotation!r} (extend tests/support/contract.py)"]
