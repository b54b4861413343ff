"""GET /v1/signals/{venue}/{symbol} over bars stored the way the ingestors store them."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from redis.asyncio import Redis

from app.analytics import AnalysisParams, Candles, SignalParams, analyze
from app.config import Settings
from app.market.keys import FeedKeys
from tests.helpers import free_port
from tests.trading.conftest import MINUTE_MS, START_MS, candle_rows, signals_client_with
from tests.trading.test_markets import seed_feed

PATH = "/v1/signals/binance/BTCUSDT"


def stored_rows(count: int, seed: int = 11, drift: float = 0.0) -> list[dict[str, Any]]:
    """A random walk in the stored candle layout (`{t, o, h, l, c, v, buy_v, sell_v, delta, trades, vwap, closed}`);
    ``drift`` as for `candle_rows`."""
    rows = []
    for row in candle_rows(count, seed, drift=drift):
        buy = row["taker_buy_v"]
        rows.append({
            "t": row["t"], "o": row["o"], "h": row["h"], "l": row["l"], "c": row["c"], "v": row["v"],
            "buy_v": buy, "sell_v": row["v"] - buy, "delta": 2 * buy - row["v"], "trades": 5,
            "vwap": (row["h"] + row["l"]) / 2, "closed": True,
        })  # fmt: skip
    return rows


async def seed_walk(
    redis: Redis, closed: int = 60, *, forming: bool = True, drift: float = 0.0
) -> list[dict[str, Any]]:
    """`closed` closed bars and (optionally) a forming bar after them; returns every row, forming last. A decided
    (calibrated) signal needs a trend and ~324 bars: e.g. `closed=400, drift=1.0`."""
    rows = stored_rows(closed + 1, drift=drift)
    rows[-1]["closed"] = False
    keys = FeedKeys("binance", "BTCUSDT")
    await redis.zadd(keys.bars["1m"], {orjson.dumps(r): r["t"] for r in rows[:-1]})
    if forming:
        await redis.set(keys.forming["1m"], orjson.dumps(rows[-1]), ex=60)
    return rows


async def close_bar(redis: Redis, row: dict[str, Any], app: FastAPI | None = None) -> None:
    """Store ``row`` as closed and announce it as the store's bar-closing script does; with ``app``, wait until
    that app's signal memo has applied the announcement (it arrives over Redis pub/sub)."""
    keys = FeedKeys("binance", "BTCUSDT")
    memo = app.state.signal_service.memo if app is not None else None
    if memo is not None:
        await asyncio.wait_for(memo.listening.wait(), timeout=10)
    await redis.zadd(keys.bars["1m"], {orjson.dumps({**row, "closed": True}): row["t"]})
    await redis.publish(keys.bar_closed, f"1m:{row['t']}")
    if memo is not None:
        for _ in range(1000):
            if memo._closed.get(("binance", "BTCUSDT", "1m"), (None,))[0] == row["t"]:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the bar close never reached the signal memo")


def expected_signal(rows: list[dict[str, Any]], params: SignalParams | None = None) -> dict[str, Any]:
    candles = Candles.from_arrays(
        open_time=[r["t"] for r in rows], open=[r["o"] for r in rows], high=[r["h"] for r in rows],
        low=[r["l"] for r in rows], close=[r["c"] for r in rows], volume=[r["v"] for r in rows],
        taker_buy_volume=[r["buy_v"] for r in rows], trade_count=[r["trades"] for r in rows], interval_ms=MINUTE_MS,
    )  # fmt: skip
    result = analyze(candles, params=AnalysisParams(signal=params or SignalParams()))
    signal: dict[str, Any] = orjson.loads(orjson.dumps(result.signal.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY))
    return signal


async def test_a_complete_signal_on_the_latest_closed_bars(signals_client: AsyncClient, redis_client: Redis) -> None:
    rows = await seed_walk(redis_client)
    response = await signals_client.get(PATH, params={"timeframe": "1m"})
    assert response.status_code == 200, response.text
    body = response.json()
    last_close = START_MS + 60 * MINUTE_MS  # close of the 60th closed bar; the forming bar is left out
    assert body["as_of"] == last_close
    assert body["as_of_iso"] == "2023-11-14T23:13:20Z"
    assert body["forming"] is False
    assert body["bar_count"] == 60
    assert body["inputs"]["cvd"] == {"side_source": "kline_taker_volume", "exact": True}
    assert body["feed"] == {"state": "no_ingestor", "connected": False, "last_message_age_s": None}
    signal = body["signal"]
    assert signal["bias"] in {"long", "short", "neutral"}
    assert {"score", "confidence", "components", "levels"} <= set(signal)
    assert all("reasons" in component for component in signal["components"])
    assert signal["close_time"] == last_close
    # No drift: the same as the analytics engine on the same stored bars.
    assert signal == expected_signal(rows[:-1])
    assert response.headers["x-cache"] == "miss"


async def test_the_signal_equals_post_analyze_on_the_same_candles(
    signals_client: AsyncClient, redis_client: Redis
) -> None:
    rows = await seed_walk(redis_client)
    closed = rows[:-1]
    analyzed = await signals_client.post("/v1/analyze", json={"candles": closed})
    assert analyzed.status_code == 200, analyzed.text
    body = (await signals_client.get(PATH)).json()
    assert body["signal"] == analyzed.json()["signal"]


async def test_a_repeated_request_is_a_cache_hit_until_a_new_bar_closes(
    signals_client: AsyncClient, app: FastAPI, redis_client: Redis
) -> None:
    rows = await seed_walk(redis_client)
    first = await signals_client.get(PATH)
    second = await signals_client.get(PATH)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
    assert second.content == first.content
    assert second.headers["etag"] == first.headers["etag"]

    await close_bar(redis_client, rows[-1], app)  # pushed to the memo: no waiting for its TTL
    third = await signals_client.get(PATH)
    assert third.headers["x-cache"] == "miss"
    assert third.json()["as_of"] == first.json()["as_of"] + MINUTE_MS
    assert third.json()["signal"] == expected_signal([*rows[:-1], {**rows[-1], "closed": True}])
    assert third.headers["etag"] != first.headers["etag"]


async def test_a_close_heard_before_its_bar_is_readable_never_caches_older_bars_under_it(
    signals_client: AsyncClient, app: FastAPI, redis_client: Redis
) -> None:
    rows = await seed_walk(redis_client)
    memo = app.state.signal_service.memo
    await asyncio.wait_for(memo.listening.wait(), timeout=10)
    keys = FeedKeys("binance", "BTCUSDT")
    # The announcement outruns the bar (as from a lagging replica): the memo believes the new bar is there.
    await redis_client.publish(keys.bar_closed, f"1m:{rows[-1]['t']}")
    for _ in range(1000):
        if memo._closed.get(("binance", "BTCUSDT", "1m"), (None,))[0] == rows[-1]["t"]:
            break
        await asyncio.sleep(0.01)
    early = await signals_client.get(PATH)
    assert early.status_code == 200, early.text
    assert early.json()["as_of"] == rows[-2]["t"] + MINUTE_MS  # what can be read, not a 500 or a 503
    # Once the bar is readable, its signal is computed on it: nothing older was cached under its key.
    await close_bar(redis_client, rows[-1], app)
    late = await signals_client.get(PATH)
    assert late.json()["as_of"] == rows[-1]["t"] + MINUTE_MS
    assert late.json()["signal"] == expected_signal([*rows[:-1], {**rows[-1], "closed": True}])


async def test_if_none_match_with_the_current_etag_is_304(signals_client: AsyncClient, redis_client: Redis) -> None:
    await seed_walk(redis_client)
    first = await signals_client.get(PATH)
    tag = first.headers["etag"]
    again = await signals_client.get(PATH, headers={"if-none-match": tag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == tag
    other = await signals_client.get(PATH, headers={"if-none-match": 'W/"stale"'})
    assert other.status_code == 200


async def test_position_sizing_is_applied_per_caller_to_the_shared_cached_signal(
    signals_client: AsyncClient, redis_client: Redis
) -> None:
    rows = await seed_walk(redis_client, closed=400, drift=1.0)
    plain = await signals_client.get(PATH)
    sized = await signals_client.get(PATH, params={"account_equity": 10_000, "risk_pct": 1})
    # Sizing does not fragment the cache: the second caller is served the same computation.
    assert (plain.headers["x-cache"], sized.headers["x-cache"]) == ("miss", "hit")
    params = SignalParams(account_equity=10_000, risk_pct=1)
    assert sized.json()["signal"] == expected_signal(rows[:-1], params)
    assert sized.headers["etag"] != plain.headers["etag"]
    levels = sized.json()["signal"]["levels"]
    assert levels is not None, "the seeded walk must give a directional signal for this test to mean anything"
    assert levels["position_size"] == pytest.approx(100 / abs(levels["entry"] - levels["stop"]))
    assert plain.json()["signal"]["levels"]["position_size"] is None


async def test_risk_parameters_must_come_together(signals_client: AsyncClient, redis_client: Redis) -> None:
    await seed_walk(redis_client)
    response = await signals_client.get(PATH, params={"account_equity": 10_000})
    assert response.status_code == 422
    assert response.json()["type"] == "/problems/validation-failed"


async def test_include_forming_evaluates_the_forming_bar_and_flags_it(
    signals_client: AsyncClient, redis_client: Redis
) -> None:
    rows = await seed_walk(redis_client)
    response = await signals_client.get(PATH, params={"include_forming": "true"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["forming"] is True
    assert body["as_of"] == START_MS + 61 * MINUTE_MS
    assert body["bar_count"] == 61
    assert body["signal"] == expected_signal(rows)
    assert response.headers["x-cache"] == "miss"
    assert (await signals_client.get(PATH, params={"include_forming": "true"})).headers["x-cache"] == "miss"


@pytest.mark.parametrize(
    ("path", "params", "status", "slug", "valid"),
    [
        ("/v1/signals/kraken/BTCUSDT", {}, 404, "venue-not-found", "binance"),
        ("/v1/signals/binance/DOGEUSDT", {}, 404, "symbol-not-found", "BTCUSDT"),
        ("/v1/signals/binance/BTCUSDT", {"timeframe": "7m"}, 422, "timeframe-invalid", "1h"),
    ],
)
async def test_unknown_venue_symbol_or_timeframe_lists_the_valid_values(
    signals_client: AsyncClient,
    redis_client: Redis,
    path: str,
    params: dict[str, str],
    status: int,
    slug: str,
    valid: str,
) -> None:
    await seed_feed(redis_client)
    response = await signals_client.get(path, params=params)
    assert response.status_code == status
    body = response.json()
    assert body["type"] == f"/problems/{slug}"
    assert valid in body["valid"]


async def test_a_configured_feed_without_data_is_503_with_its_status(signals_client: AsyncClient) -> None:
    response = await signals_client.get("/v1/signals/binance/ETHUSDT")  # in the default DELTAFLOW_FEEDS
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    body = response.json()
    assert body["type"] == "/problems/market-data-unavailable"
    assert body["feed"]["state"] == "no_ingestor"


async def test_a_feed_with_only_a_forming_bar_is_503_unless_it_is_included(
    signals_client: AsyncClient, redis_client: Redis
) -> None:
    row = stored_rows(1)[0]
    await redis_client.set(FeedKeys("binance", "BTCUSDT").forming["1m"], orjson.dumps({**row, "closed": False}))
    assert (await signals_client.get(PATH)).status_code == 503
    forming = await signals_client.get(PATH, params={"include_forming": "true"})
    assert forming.status_code == 200, forming.text
    assert forming.json()["forming"] is True


async def test_large_responses_are_gzipped_for_clients_that_accept_it(
    signals_client: AsyncClient, redis_client: Redis
) -> None:
    await seed_walk(redis_client)
    plain = await signals_client.get(PATH, headers={"accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert len(plain.content) > 1400  # above the default DELTAFLOW_GZIP_MIN_BYTES
    zipped = await signals_client.get(PATH, headers={"accept-encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert int(zipped.headers["content-length"]) < len(plain.content) * 0.7
    assert zipped.json() == {**plain.json(), "feed": zipped.json()["feed"]}  # httpx decodes the body
    assert zipped.headers["etag"] == plain.headers["etag"]


async def test_an_unreachable_redis_is_503_not_500(settings: Settings) -> None:
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    async with signals_client_with(down) as client:  # the key is verified against Postgres
        response = await client.get(PATH)
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["retry-after"] == "2"
        assert response.json()["type"] == "/problems/service-unavailable"


@pytest.mark.parametrize("form", ["strong", "weak", "listed", "spaced"])
async def test_if_none_match_compares_weakly_so_every_form_of_the_current_tag_is_304(
    signals_client: AsyncClient, redis_client: Redis, form: str
) -> None:
    """RFC 9110 §13.1.2: If-None-Match uses the weak comparison, so the strong form of our weak tag matches too."""
    await seed_walk(redis_client)
    tag = (await signals_client.get(PATH)).headers["etag"]
    assert tag.startswith('W/"')
    sent = {
        "strong": tag.removeprefix("W/"),
        "weak": tag,
        "listed": f'"other", {tag.removeprefix("W/")}',
        "spaced": f'  W/"x" ,{tag}  ',
    }[form]
    for headers in ({"if-none-match": sent}, {"if-none-match": sent, "accept-encoding": "identity"}):
        assert (await signals_client.get(PATH, headers=headers)).status_code == 304, (form, headers)
