"""CoinAPI golden messages (hand-written from the documented formats), symbol mapping and taker-side handling."""

from __future__ import annotations

import json

import pytest

from app.market.events import BUY, SELL, BookSnapshot, Trade
from app.market.venues.coinapi import (
    MalformedFrameError,
    TickRule,
    coinapi_symbol_id,
    default_symbol,
    hello_message,
    is_auth_error,
    parse_message,
    parse_time_ms,
    symbol_map,
    trade_id,
)

SYMBOLS = {"BINANCE_SPOT_BTC_USDT": "BTCUSDT"}
RECEIVED = 1_700_000_000_999

TRADE = {
    "type": "trade",
    "symbol_id": "BINANCE_SPOT_BTC_USDT",
    "sequence": 2323346,
    "time_exchange": "2013-09-28T22:40:50.0000000Z",
    "time_coinapi": "2017-03-18T22:42:21.3763342Z",
    "uuid": "770C7A3B-7258-4441-8182-83740F3E2457",
    "price": 770.0,
    "size": 0.05,
    "taker_side": "BUY",
}
BOOK20 = {
    "type": "book20",
    "symbol_id": "BINANCE_SPOT_BTC_USDT",
    "sequence": 2323346,
    "time_exchange": "2013-09-28T22:40:50.0000000Z",
    "time_coinapi": "2017-03-18T22:42:21.3763342Z",
    "asks": [{"price": 456.35, "size": 123}, {"price": 456.36, "size": 23}],
    "bids": [{"price": 456.10, "size": 42}, {"price": 456.09, "size": 5}],
}


def _parse(message: dict[str, object], ticks: TickRule | None = None):  # type: ignore[no-untyped-def]
    return parse_message(json.dumps(message), SYMBOLS, RECEIVED, ticks or TickRule())


def test_hello_carries_key_heartbeat_data_types_and_exact_symbol_filters() -> None:
    hello = json.loads(hello_message("k-123", ["BINANCE_SPOT_BTC_USDT", "COINBASE_SPOT_ETH_USD"]))
    assert hello == {
        "type": "hello",
        "apikey": "k-123",
        "heartbeat": True,
        "subscribe_data_type": ["trade", "book20"],
        # A trailing $ turns CoinAPI's prefix filter into an exact match.
        "subscribe_filter_symbol_id": ["BINANCE_SPOT_BTC_USDT$", "COINBASE_SPOT_ETH_USD$"],
    }


def test_symbol_ids_map_to_upper_case_base_quote_symbols() -> None:
    assert default_symbol("BINANCE_SPOT_BTC_USDT") == "BTCUSDT"
    assert default_symbol("binancefts_perp_eth_usdt") == "ETHUSDT"
    assert default_symbol("BITMEX_FTS_XBT_USD_210625") == "XBTUSD210625"
    assert symbol_map(["binance_spot_btc_usdt"]) == {"BINANCE_SPOT_BTC_USDT": "BTCUSDT"}
    assert symbol_map({"KRAKEN_SPOT_XBT_USD": "btcusd"}) == {"KRAKEN_SPOT_XBT_USD": "BTCUSD"}
    with pytest.raises(ValueError, match="both map to BTCUSDT"):
        symbol_map(["BINANCE_SPOT_BTC_USDT", "OKEX_SPOT_BTC_USDT"])
    with pytest.raises(ValueError, match="symbol id"):
        default_symbol("BTCUSDT")
    with pytest.raises(ValueError, match="at least one"):
        symbol_map([])


def test_trade_message_becomes_a_trade_with_exchange_time_in_ms() -> None:
    message = _parse(TRADE)
    trade = message.event
    assert isinstance(trade, Trade)
    assert (trade.venue, trade.symbol, trade.price, trade.quantity, trade.side) == (
        "coinapi",
        "BTCUSDT",
        770.0,
        0.05,
        BUY,
    )
    assert trade.exchange_ts == 1380408050000
    assert trade.receive_ts == RECEIVED
    assert trade.trade_id == trade_id(TRADE["uuid"])  # type: ignore[arg-type]
    assert message.trade_uuid == TRADE["uuid"]
    assert (message.side_exact, message.side_known) == (True, True)


@pytest.mark.parametrize(
    ("taker_side", "side", "exact"),
    [("BUY", BUY, True), ("SELL", SELL, True), ("BUY_ESTIMATED", BUY, False), ("SELL_ESTIMATED", SELL, False)],
)
def test_reported_and_estimated_taker_sides(taker_side: str, side: int, exact: bool) -> None:
    message = _parse({**TRADE, "taker_side": taker_side})
    assert isinstance(message.event, Trade)
    assert message.event.side == side
    assert message.side_exact is exact
    assert message.side_known


def test_unknown_taker_sides_follow_the_tick_rule() -> None:
    ticks = TickRule()
    sides = []
    for price in (100.0, 101.0, 101.0, 100.5, 100.5, 102.0):
        message = _parse({**TRADE, "price": price, "taker_side": "UNKNOWN"}, ticks)
        assert isinstance(message.event, Trade)
        assert not message.side_known
        assert not message.side_exact
        sides.append(message.event.side)
    # First trade has no reference (BUY); then uptick, same, downtick, same, uptick.
    assert sides == [BUY, BUY, BUY, SELL, SELL, BUY]
    # A reported side also becomes the reference for the next unknown one at the same price.
    _parse({**TRADE, "price": 102.0, "taker_side": "SELL"}, ticks)
    same = _parse({**TRADE, "price": 102.0, "taker_side": "UNKNOWN"}, ticks).event
    assert isinstance(same, Trade)
    assert same.side == SELL


def test_zero_size_trades_mark_a_price_and_carry_no_volume() -> None:
    assert _parse({**TRADE, "size": 0}).event is None


def test_book20_is_a_full_snapshot_best_first() -> None:
    snapshot = _parse(BOOK20).event
    assert isinstance(snapshot, BookSnapshot)
    assert snapshot.bids == ((456.10, 42.0), (456.09, 5.0))
    assert snapshot.asks == ((456.35, 123.0), (456.36, 23.0))
    assert snapshot.last_update_id == 2323346
    assert (snapshot.venue, snapshot.symbol) == ("coinapi", "BTCUSDT")


def test_book_levels_are_bounded() -> None:
    many = {**BOOK20, "bids": [{"price": 100 - i, "size": 1} for i in range(100)]}
    snapshot = parse_message(json.dumps(many), SYMBOLS, RECEIVED, TickRule(), max_levels=20).event
    assert isinstance(snapshot, BookSnapshot)
    assert len(snapshot.bids) == 20


def test_data_for_other_symbol_ids_is_left_unparsed() -> None:
    message = _parse({**TRADE, "symbol_id": "BINANCE_SPOT_ETH_USDT"})
    assert (message.type, message.event) == ("trade", None)


@pytest.mark.parametrize("kind", ["hearbeat", "heartbeat"])
def test_heartbeats_in_both_spellings(kind: str) -> None:
    assert _parse({"type": kind}).type == "heartbeat"


def test_reconnect_and_error_messages() -> None:
    notice = _parse({"type": "reconnect", "within_seconds": 10, "before_time": "2020-04-22T15:45:52.5133301Z"})
    assert (notice.type, notice.within_seconds) == ("reconnect", 10.0)
    error = _parse({"type": "error", "message": "Invalid API key"})
    assert (error.type, error.text) == ("error", "Invalid API key")
    assert _parse({"type": "exrate"}).type == "exrate"


def test_auth_errors_are_told_apart_from_transient_ones() -> None:
    assert is_auth_error("Invalid API key")
    assert is_auth_error("Your APIKEY has insufficient quota")
    assert is_auth_error("Unauthorized")
    assert not is_auth_error("Internal server error, please reconnect")
    assert not is_auth_error("Too many messages")


def test_seven_digit_fractions_are_truncated_to_milliseconds() -> None:
    assert parse_time_ms("2017-03-18T22:42:21.3763342Z") == 1489876941376
    assert parse_time_ms("2017-03-18T22:42:21Z") == 1489876941000


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[]",
        json.dumps({"no": "type"}),
        json.dumps({"type": 5}),
        json.dumps({**TRADE, "taker_side": "SIDEWAYS"}),
        json.dumps({**TRADE, "uuid": "not-a-uuid"}),
        json.dumps({**TRADE, "time_exchange": "yesterday"}),
        json.dumps({**BOOK20, "asks": [{"price": 1}]}),
    ],
)
def test_malformed_messages_raise(raw: str) -> None:
    with pytest.raises(MalformedFrameError):
        parse_message(raw, SYMBOLS, RECEIVED, TickRule())


@pytest.mark.parametrize(
    ("symbol", "prefix", "overrides", "symbol_id"),
    [
        ("BTCUSDT", "BINANCE_SPOT", {}, "BINANCE_SPOT_BTC_USDT"),  # USDT, not USD + "T"
        ("ethbtc", "binance_spot", {}, "BINANCE_SPOT_ETH_BTC"),
        ("BTCUSD", "COINBASE_SPOT", {}, "COINBASE_SPOT_BTC_USD"),
        ("BTCFDUSD", "BINANCE_SPOT", {}, "BINANCE_SPOT_BTC_FDUSD"),
        ("BTCUSDT", "BINANCE_SPOT", {"btcusdt": "binancefts_perp_btc_usdt"}, "BINANCEFTS_PERP_BTC_USDT"),
    ],
)
def test_our_symbols_map_to_coinapi_ids_by_prefix_and_quote_or_explicitly(
    symbol: str, prefix: str, overrides: dict[str, str], symbol_id: str
) -> None:
    assert coinapi_symbol_id(symbol, prefix, overrides) == symbol_id


@pytest.mark.parametrize(
    ("symbol", "prefix", "overrides", "message"),
    [
        ("XYZ", "BINANCE_SPOT", {}, "DELTAFLOW_COINAPI_SYMBOL_MAP"),  # no known quote asset
        ("USDT", "BINANCE_SPOT", {}, "DELTAFLOW_COINAPI_SYMBOL_MAP"),  # nothing but a quote
        ("BTCUSDT", "BINANCE", {}, "DELTAFLOW_COINAPI_SYMBOL_PREFIX"),
        ("BTCUSDT", "BINANCE_SPOT", {"BTCUSDT": "BTC"}, "not a CoinAPI symbol id"),
    ],
)
def test_unmappable_symbols_name_the_setting_to_change(
    symbol: str, prefix: str, overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        coinapi_symbol_id(symbol, prefix, overrides)
