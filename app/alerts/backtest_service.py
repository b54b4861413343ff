"""`POST /v1/alerts/test`: a rule validated as `POST /v1/alerts` validates it, replayed over its market's stored
closed bars in the analysis worker pool (off the event loop), bounded by DELTAFLOW_ALERT_TEST_MAX_BARS."""

from __future__ import annotations

from contextlib import suppress

from redis.exceptions import RedisError

from app.alerts.backtest_run import BacktestSpec, run_backtest
from app.alerts.read_schemas import AlertTestRequest
from app.alerts.service import AlertService
from app.analytics import AnalysisParams
from app.config import Settings
from app.core.redis import RedisClient
from app.market.aggregation import TIMEFRAMES
from app.market.store import read_candles_json
from app.signals import replay_memory
from app.trading.markets import market_unavailable
from app.trading.service import AnalysisRunner


class AlertTestService:
    def __init__(self, rules: AlertService, redis: RedisClient, settings: Settings, runner: AnalysisRunner) -> None:
        self.rules = rules
        self.redis = redis
        self.settings = settings
        self.runner = runner

    def bars(self, requested: int | None) -> int:
        """Bars to evaluate: the request's, capped by the setting (the response says how many were evaluated)."""
        return min(requested or self.settings.alert_test_default_bars, self.settings.alert_test_max_bars)

    async def run(self, body: AlertTestRequest) -> bytes:
        """The encoded `AlertTestResult`; AlertRuleInvalid for a body `POST /v1/alerts` would refuse, and 503 when
        the market has no closed bar stored yet."""
        condition = await self.rules.validate(body)
        bars = self.bars(body.bars)
        warmup = self.settings.alert_test_warmup_bars
        # One more than needed: the forming bar comes last and is never used.
        limit = bars + warmup + 1
        raw = await read_candles_json(self.redis, body.venue, body.symbol, body.timeframe, limit, max_limit=limit)
        spec = BacktestSpec(
            venue=body.venue,
            symbol=body.symbol,
            timeframe=body.timeframe,
            interval_ms=TIMEFRAMES[body.timeframe],
            condition=condition,
            frequency=body.frequency.value,
            cooldown_bars=body.cooldown_bars,
            bars=bars,
            warmup=warmup,
            window=self.settings.signal_bars,
        )
        # The calibrated model's predictions the feed's track record remembers (read only: this replay starts at
        # another bar, app.signals.replay_memory); the bars it lacks are fitted here, one model a bar.
        key = replay_memory.memory_key(body.venue, body.symbol, body.timeframe, AnalysisParams())
        memory = None
        with suppress(RedisError, OSError):
            memory = await self.redis.get(key)
        async with self.runner.admission():
            document = await self.runner.call(run_backtest, raw, spec, memory)
        if document == b"null":
            raise await market_unavailable(self.redis, body.venue, body.symbol)
        return document
