"""The condition tree as OpenAPI documents it: one model per node shape, so clients and fuzzers can generate
valid conditions. Documentation only: requests are parsed by `app/alerts/conditions.py`, whose 422s point
at the node (a test keeps the two grammars equal; what JSON Schema cannot say, the depth and node bounds, is the
parser's alone)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator

from app.alerts.conditions import FIB_RATIOS

NumericField = Literal["score", "confidence", "close", "rsi", "cvd", "delta", "volume"]
Op = Literal["eq", "ne", "gt", "gte", "lt", "lte", "crosses_above", "crosses_below", "changes_to"]
BiasOp = Literal["eq", "ne", "changes_to"]
DirectedEvent = Literal["bos", "choch", "fvg", "order_block", "liquidity_sweep", "cvd_divergence"]
UndirectedEvent = Literal["equal_highs", "equal_lows"]
Cross = Literal["crosses_above", "crosses_below"]


class _Node(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AlertBiasPredicate(_Node):
    field: Literal["bias"]
    op: BiasOp
    value: Literal["long", "short", "neutral"]


class AlertNumericPredicate(_Node):
    field: NumericField
    op: Op
    value: float


class AlertEvent(_Node):
    """Confirmed at the bar's close; without `direction` either one matches."""

    event: DirectedEvent
    direction: Literal["bullish", "bearish"] | None = None


class AlertEqualLevels(_Node):
    event: UndirectedEvent


class AlertFibonacciLevel(_Node):
    level: Literal["fibonacci"]
    ratio: Annotated[float, Field(json_schema_extra={"enum": list(FIB_RATIOS)})]
    op: Cross


class AlertSignalLevel(_Node):
    """The signal's own stop, or its first target."""

    level: Literal["stop", "target"]
    op: Cross


# Children are documented as objects, not as the union again: a recursive schema made schemathesis' generation
# (hypothesis-jsonschema) slow: 25 examples of the five /v1/alerts operations ran over 4 min against 50 s for 60
# flat ones, too slow for the fuzz stage. The shapes are all named here anyway.
Child = Annotated[dict[str, Any], Field(description="A condition node (any of the shapes of `condition`).")]


class AlertAll(_Node):
    all: list[Child] = Field(min_length=1)


class AlertAny(_Node):
    any: list[Child] = Field(min_length=1)


class AlertNot(_Node):
    not_: Child = Field(alias="not")


AlertConditionNode = (
    AlertAll
    | AlertAny
    | AlertNot
    | AlertBiasPredicate
    | AlertNumericPredicate
    | AlertEvent
    | AlertEqualLevels
    | AlertFibonacciLevel
    | AlertSignalLevel
)


def _an_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("a condition is an object (see the schema)")
    return value


# A request member: documented as the tree above, validated only as a JSON object here (the service parses it).
ConditionJson = Annotated[dict[str, Any], PlainValidator(_an_object, json_schema_input_type=AlertConditionNode)]
