"""Query parameters → one module's parameter dataclass, and their OpenAPI description.

The parameters are those of POST /v1/analyze's `params.<module>` and are checked the same way: types by the
pydantic mirror of the module's dataclass (`app.trading.schemas.params_model`), ranges by the dataclass itself
(`app.trading.params.build_module_params`). So both routes accept exactly the same values and name the same
field when one is out of range. Query-only rules on top:

- a parameter the module does not take (including another module's) is a 422 naming it, not silently ignored:
  a typo such as `swing_lenght=3` would otherwise return the default analysis as if it were the asked one;
- a scalar given twice is a 422 (which one was meant is ambiguous);
- list parameters (fibonacci `retracements`, `extensions`) are repeated (`?retracements=0.5&retracements=0.618`)
  or comma-separated (`?retracements=0.5,0.618`), or both;
- numbers must be finite (JSON bodies cannot carry `nan` or `inf`; a query string can).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from app.analytics import AnalysisParams
from app.trading.errors import BodyInvalid
from app.trading.params import build_module_params
from app.trading.schemas import PARAM_DATACLASSES, params_model

# Declared on the route itself; every other query parameter must belong to the module.
ROUTE_PARAMETERS = ("timeframe", "bars", "include_forming", "include_series")
# Ranges come from the analytics dataclasses (app/analytics/bounds.py) through `params_model`.
# Rules across values, which a parameter's schema cannot state: said in words, enforced with a 422.
RULES = {
    ("fibonacci", "retracements"): " Strictly increasing.",
    ("fibonacci", "extensions"): " Strictly increasing.",
    ("indicators", "macd_fast"): " Smaller than `macd_slow`.",
    ("indicators", "macd_slow"): " Greater than `macd_fast`.",
}


def _model(module: str) -> type[BaseModel]:
    return params_model(PARAM_DATACLASSES[module])


def _is_list(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "array"


def _properties(module: str) -> dict[str, dict[str, Any]]:
    properties: dict[str, dict[str, Any]] = _model(module).model_json_schema()["properties"]
    return properties


def _error(name: str, code: str, message: str) -> dict[str, Any]:
    return {"type": code, "loc": ("query", name), "msg": message, "input": None}


def module_params(module: str, query: Iterable[tuple[str, str]]) -> AnalysisParams:
    """The analysis parameters with the module's member built from the query; 422 for anything invalid."""
    properties = _properties(module)
    values: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    for name, value in query:
        if name in ROUTE_PARAMETERS:
            continue
        if name not in properties:
            takes = ", ".join(properties)
            errors.append(_error(name, "extra_forbidden", f"not a parameter of {module}; it takes {takes}"))
        elif _is_list(properties[name]):
            values.setdefault(name, []).extend(part.strip() for part in value.split(","))
        elif name in values:
            errors.append(_error(name, "repeated", "given more than once"))
        else:
            values[name] = value
    if errors:
        raise RequestValidationError(errors)
    try:
        checked = _model(module).model_validate(values)
    except ValidationError as error:
        raise RequestValidationError(
            [
                {"type": item["type"], "loc": ("query", *item["loc"]), "msg": item["msg"], "input": None}
                for item in error.errors(include_url=False)
            ]
        ) from None
    supplied = checked.model_dump(exclude_unset=True)
    errors = [_error(name, "finite_number", "Input should be a finite number") for name in _non_finite(supplied)]
    if errors:
        raise RequestValidationError(errors)
    try:
        built = build_module_params(module, supplied, ("query",))
    except BodyInvalid as error:
        raise RequestValidationError(error.errors) from None
    return AnalysisParams(**{module: built})


def _non_finite(supplied: dict[str, Any]) -> list[str]:
    def finite(value: Any) -> bool:
        if isinstance(value, float):
            return math.isfinite(value)
        if isinstance(value, list | tuple):
            return all(finite(item) for item in value)
        return True

    return [name for name, value in supplied.items() if not finite(value)]


def _query_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A field's JSON schema as a query parameter's: no title, and `null` dropped (omit the parameter instead)."""
    result = {key: value for key, value in schema.items() if key not in {"title", "default"}}
    options = result.pop("anyOf", None)
    if options is not None:
        kept = [option for option in options if option.get("type") != "null"]
        result.update(kept[0] if len(kept) == 1 else {"anyOf": kept})
    return result


def openapi_parameters(module: str) -> list[dict[str, Any]]:
    """The module's parameters as OpenAPI query parameters, with their defaults and ranges."""
    parameters = []
    for name, field_schema in _properties(module).items():
        schema = _query_schema(field_schema)
        default = field_schema.get("default")
        if default is None:
            description = "Automatic when omitted."
        else:
            schema["default"] = default
            description = f"Default {_shown(default)}."
        if _is_list(schema):
            description += " Repeat it or separate values with commas."
        description += RULES.get((module, name), "")
        parameters.append({
            "name": name, "in": "query", "required": False, "schema": schema, "description": description,
        })  # fmt: skip
    return parameters


def _shown(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    return str(value)
