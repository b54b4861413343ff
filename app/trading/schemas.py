"""Request and response shapes of POST /v1/analyze.

The route reads the raw body and validates the candle and trade arrays column-wise (see `parsing.py`): per-item
pydantic validation of 100 000 candles costs ~330 ms against ~140 ms for the vectorised path. These models are
still the contract: they document the body in OpenAPI, validate the small top-level members (modules, params,
flags), and, when the fast path finds a structural problem (a missing key, a string where a number belongs),
validate the offending array item by item to produce pydantic's usual per-field errors.

Module parameters are the analytics dataclasses themselves, mirrored here field by field (types, defaults and
declared ranges read from the dataclasses) so the API and the engine cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from app.analytics import CvdParams, FibonacciParams, IndicatorParams, OrderflowParams, SignalParams, SmcParams
from app.analytics.bounds import Bounds, ItemBounds, field_bounds

ModuleName = Literal["cvd", "orderflow", "smc", "fibonacci", "indicators"]
# Largest accepted open time: 9999-12-31T23:59:59.999Z in epoch milliseconds.
MAX_EPOCH_MS = 253_402_300_799_999

# Prices, volumes and quantities are at most this in magnitude: finite inputs whose sums, products and squares
# over a full request (1 000 000 trades) stay finite (two trades of q = 1e308 overflowed a sum to inf and ended in
# a 500). 1e18 is far beyond any real market (a meme coin's yearly volume is ~1e16 units).
MAX_MARKET_VALUE = 1e18
FiniteNumber = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-MAX_MARKET_VALUE, le=MAX_MARKET_VALUE)]
NonNegativeNumber = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, le=MAX_MARKET_VALUE)]
EpochMs = Annotated[int, Field(strict=True, ge=0, le=MAX_EPOCH_MS)]

# What `confidence` means, for every response that carries a signal (issue 19 changed it).
CONFIDENCE_MEANING = (
    "`confidence` is the calibrated probability that following the bias (when neutral: the better side) wins after "
    "fees over `model.horizon_bars`; the bias is neutral unless that side's expected return after fees is "
    "positive; `model` says how it was fitted. With `params.signal.calibrated` false: the heuristic signal "
    "(confidence = |score| x agreement x coverage, no `model`)."
)


class CandleIn(BaseModel):
    """One closed bar. The keys are those GET /v1/candles returns, so its output can be posted back as is."""

    model_config = ConfigDict(extra="forbid")

    t: EpochMs = Field(description="Open time, epoch milliseconds (UTC); strictly increasing.")
    o: FiniteNumber = Field(description="Open price.")
    h: FiniteNumber = Field(description="High price: at least max(o, c).")
    l: FiniteNumber = Field(description="Low price: at most min(o, c).")  # noqa: E741 - the wire name
    c: FiniteNumber = Field(description="Close price.")
    v: NonNegativeNumber = Field(description="Volume (base asset).")
    taker_buy_v: NonNegativeNumber | None = Field(
        default=None,
        description="Taker-buy volume in [0, v]: makes the CVD delta exact (2·taker_buy_v - v). Give it for "
        "every candle or for none.",
    )
    trades_count: Annotated[int, Field(strict=True, ge=0)] | None = Field(
        default=None, description="Number of trades in the bar. Give it for every candle or for none."
    )
    buy_v: NonNegativeNumber | None = Field(
        default=None,
        description="GET /v1/candles' taker-buy volume: used as `taker_buy_v` when that is absent; ignored when "
        "both are given.",
    )
    sell_v: Any = Field(default=None, description="Ignored (implied by v and the taker-buy volume).")
    delta: Any = Field(default=None, description="Ignored (recomputed).")
    trades: Any = Field(default=None, description="Ignored (GET /v1/candles' trade count; use trades_count).")
    vwap: Any = Field(default=None, description="Ignored.")
    closed: Any = Field(
        default=None, description="Ignored: every bar is analysed as closed, so drop a forming bar first."
    )
    partial: Any = Field(default=None, description="Ignored (GET /v1/candles' flag on a bar observed in part).")


class TradeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    t: EpochMs = Field(description="Trade time, epoch milliseconds; non-decreasing.")
    p: FiniteNumber = Field(gt=0, description="Price.")
    q: NonNegativeNumber = Field(description="Quantity (base asset).")
    side: Literal["buy", "sell"] = Field(description="Taker side: `buy` when the taker bought (lifted the ask).")


class CandleColumnsIn(BaseModel):
    """The columnar form of `candles`: one array per `CandleIn` field, all of the same length."""

    model_config = ConfigDict(extra="forbid")

    t: list[EpochMs]
    o: list[FiniteNumber]
    h: list[FiniteNumber]
    l: list[FiniteNumber]  # noqa: E741 - the wire name
    c: list[FiniteNumber]
    v: list[NonNegativeNumber]
    taker_buy_v: list[NonNegativeNumber | None] | None = None
    trades_count: list[Annotated[int, Field(strict=True, ge=0)] | None] | None = None
    buy_v: list[NonNegativeNumber | None] | None = None
    sell_v: Any = None
    delta: Any = None
    trades: Any = None
    vwap: Any = None
    closed: Any = None
    partial: Any = None


class TradeColumnsIn(BaseModel):
    """The columnar form of `trades`: one array per `TradeIn` field, all of the same length."""

    model_config = ConfigDict(extra="forbid")

    t: list[EpochMs]
    p: list[Annotated[float, Field(strict=True, allow_inf_nan=False, gt=0, le=MAX_MARKET_VALUE)]]
    q: list[NonNegativeNumber]
    side: list[Literal["buy", "sell"]]


def _field_type(hint: Any) -> Any:
    """Nested parameter dataclasses (SignalParams.weights) become models too; other hints are kept."""
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return params_model(hint) | None
    return hint


# pydantic's constraint names → the JSON Schema keywords pydantic would emit for them.
_KEYWORDS = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum", "lt": "exclusiveMaximum"}


def _range_keywords(bounds: Bounds) -> dict[str, Any]:
    return {_KEYWORDS[name]: value for name, value in bounds.limits().items()}


def _documented_range(bounds: Bounds | ItemBounds) -> Callable[[dict[str, Any]], None]:
    """Adds a field's declared range to its JSON schema (the number or array branch when it may be null).

    Only documented, not enforced by pydantic: the dataclass enforces it, so an out-of-range value keeps
    reading `value_error` "<field> must be in …" on every route, as the dataclass words it.
    """

    def extend(schema: dict[str, Any]) -> None:
        options = schema.get("anyOf", [])
        target = next((option for option in options if option.get("type") != "null"), schema)
        if isinstance(bounds, ItemBounds):
            target.update(minItems=bounds.min_length, maxItems=bounds.max_length)
            target["items"].update(_range_keywords(bounds.items))
        else:
            target.update(_range_keywords(bounds))

    return extend


_MIRRORS: dict[type[Any], type[BaseModel]] = {}


def params_model(dataclass: type[Any]) -> type[BaseModel]:
    """A pydantic mirror of a parameter dataclass: same fields, types and defaults; unknown keys rejected.

    Values are type-checked here; ranges declared on the dataclass (`app.analytics.bounds`) appear in the JSON
    schema and are enforced by the dataclass's own `__post_init__`.
    """
    if dataclass in _MIRRORS:
        return _MIRRORS[dataclass]
    hints = typing.get_type_hints(dataclass)
    fields: dict[str, Any] = {}
    for item in dataclasses.fields(dataclass):
        if item.default is not dataclasses.MISSING:
            default = item.default
        elif item.default_factory is not dataclasses.MISSING:
            default = dataclasses.asdict(item.default_factory())
        else:  # pragma: no cover - every parameter dataclass has defaults
            default = ...
        bounds = field_bounds(item)
        extra = None if bounds is None else _documented_range(bounds)
        fields[item.name] = (_field_type(hints[item.name]), Field(default=default, json_schema_extra=extra))
    model: type[BaseModel] = create_model(
        f"{dataclass.__name__}In",
        __config__=ConfigDict(extra="forbid"),
        __doc__=f"Parameters of `{dataclass.__name__}`; omitted fields take these defaults.",
        **fields,
    )
    _MIRRORS[dataclass] = model
    return model


PARAM_DATACLASSES: dict[str, type[Any]] = {
    "cvd": CvdParams,
    "orderflow": OrderflowParams,
    "smc": SmcParams,
    "fibonacci": FibonacciParams,
    "indicators": IndicatorParams,
    "signal": SignalParams,
}

AnalysisParamsIn: type[BaseModel] = create_model(
    "AnalysisParamsIn",
    __config__=ConfigDict(extra="forbid"),
    __doc__="Per-module parameters; omitted modules and fields keep their defaults.",
    **{name: (params_model(cls) | None, None) for name, cls in PARAM_DATACLASSES.items()},  # type: ignore[call-overload]
)


class EvaluateIn(BaseModel):
    """How to evaluate the signal's track record over the given candles (see README, "Track record")."""

    model_config = ConfigDict(extra="forbid")

    horizons: list[Annotated[int, Field(strict=True, ge=1, le=1000)]] = Field(
        default=[1, 4, 12, 24],
        min_length=1,
        max_length=16,
        description="Bars each signal is followed for (entry at the next bar's open, exit at the close `h` bars "
        "later, or at the signal's own stop or first target); duplicates are merged.",
    )
    fees_bps: float = Field(default=5.0, ge=0, le=1000, description="Fee per side (entry and exit), basis points")
    slippage_bps: float = Field(default=5.0, ge=0, le=1000, description="Slippage per side, basis points")


class AnalyzeOptions(BaseModel):
    """Every member except the two arrays: small, so validated by pydantic as usual."""

    model_config = ConfigDict(extra="forbid")

    interval_ms: Annotated[int, Field(strict=True, ge=1, le=31 * 86_400_000)] | None = Field(
        default=None,
        description="Bar length in ms. Default: the median spacing of the open times; required for one candle.",
    )
    modules: list[ModuleName] | None = Field(
        default=None, min_length=1, description="Modules to run (default all); the signal always runs."
    )
    params: AnalysisParamsIn | None = None
    include_series: bool = Field(
        default=False,
        description="Return per-bar series (CVD, indicators, every footprint bar). Off by default: 100 000 "
        "candles give ~15 MB without them and ~48 MB with them; `last` always holds the last bar's values.",
    )
    evaluate: EvaluateIn | None = Field(
        default=None,
        description="Also replay the signal at every bar (from the bars up to it only) and evaluate it: "
        "`evaluation.by_horizon` with `all`, `long`, `short` and `baselines` (`always_long`, `random`); with "
        "`include_series`, the per-bar bias, score and forward return per horizon. Candles only (no `trades`). "
        "The calibrated signal's replay (the default) refits the model at every bar: at most "
        "`DELTAFLOW_ANALYZE_EVALUATE_CALIBRATED_MAX_CANDLES` candles (5 000 by default); the heuristic signal's "
        "(`params.signal.calibrated` false) only the plain candle limit.",
    )


class AnalyzeRequest(AnalyzeOptions):
    candles: Annotated[list[CandleIn], Field(min_length=1)] | CandleColumnsIn = Field(
        description="Closed bars, oldest first (1 to 100 000 by default): an array of objects, or an object of "
        "arrays (one per field, all of the same length)."
    )
    trades: list[TradeIn] | TradeColumnsIn | None = Field(
        default=None,
        description="Individual trades in time order (up to 1 000 000 by default): exact delta and footprints. "
        "An array of objects or an object of arrays.",
    )


class AnalyzeResponse(BaseModel):
    """Module outputs are documented in the analytics modules; times are epoch ms, never positional indexes."""

    interval_ms: int
    bar_count: int
    first_open_time: int
    last_close_time: int
    modules: list[ModuleName]
    include_series: bool
    signal: dict[str, Any] = Field(
        description="Bias, score, confidence, components with reasons, levels, model. " + CONFIDENCE_MEANING
    )
    cvd: dict[str, Any] | None = None
    orderflow: dict[str, Any] | None = None
    smc: dict[str, Any] | None = None
    fibonacci: dict[str, Any] | None = None
    indicators: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = Field(
        default=None,
        description='With `evaluate`: bars, gaps, costs and `by_horizon["<h>"]` (`all`, `long`, `short`, '
        "`baselines.always_long`, `baselines.random`, `calibration`, `ic`); `series` with `include_series`.",
    )


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with `$defs` references inlined, so it can sit inside an OpenAPI operation."""
    schema = model.model_json_schema()
    definitions: dict[str, Any] = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            reference = node.get("$ref")
            if isinstance(reference, str) and reference.startswith("#/$defs/"):
                return resolve(definitions[reference.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved
