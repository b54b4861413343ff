"""Validated `params` → the analytics parameter dataclasses, with range errors pointing at the field.

The dataclasses enforce their own ranges in `__post_init__` and raise `ValueError` with a message that starts
with the field name ("swing_length must be …"); that name, when it is a field, completes the pointer.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import BaseModel

from app.analytics import AnalysisParams
from app.trading.errors import BodyInvalid
from app.trading.schemas import PARAM_DATACLASSES


def build_params(model: BaseModel | None) -> AnalysisParams:
    if model is None:
        return AnalysisParams()
    supplied = model.model_dump(exclude_unset=True)
    built: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    for name, values in supplied.items():
        if values is None:
            continue
        try:
            built[name] = _build(PARAM_DATACLASSES[name], values, ("body", "params", name))
        except _ParamError as error:
            errors.append(error.entry)
    if errors:
        raise BodyInvalid(errors)
    return AnalysisParams(**built)


def build_module_params(name: str, values: dict[str, Any], loc: tuple[str | int, ...]) -> Any:
    """One module's parameter dataclass from type-checked values (e.g. query parameters, `loc=("query",)`);
    a range error is a `BodyInvalid` pointing at the field under `loc`."""
    try:
        return _build(PARAM_DATACLASSES[name], values, loc)
    except _ParamError as error:
        raise BodyInvalid([error.entry]) from None


class _ParamError(Exception):
    def __init__(self, entry: dict[str, Any]) -> None:
        super().__init__(entry)
        self.entry = entry


def _build(cls: type[Any], values: dict[str, Any], loc: tuple[str | int, ...]) -> Any:
    names = {item.name: item for item in dataclasses.fields(cls)}
    arguments: dict[str, Any] = {}
    for key, value in values.items():
        factory: Any = names[key].default_factory  # a dataclass class for nested parameters (weights)
        if isinstance(value, dict) and isinstance(factory, type) and dataclasses.is_dataclass(factory):
            arguments[key] = _build(factory, value, (*loc, key))
        else:
            arguments[key] = value
    try:
        return cls(**arguments)
    except ValueError as error:
        message = str(error)
        field = message.split(" ", 1)[0]
        where = (*loc, field) if field in names else loc
        raise _ParamError({"type": "value_error", "loc": where, "msg": f"Value error, {message}"}) from None
