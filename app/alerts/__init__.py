"""Alerts: tenant-defined conditions on a market's closed bars (issue 15).

The parts: rules (`router.py` → `service.py` → `repository.py`, table `alert_rules`); the condition grammar
(`conditions.py`, documented for OpenAPI by `condition_schema.py`); the pure evaluator and its sentences
(`evaluator.py`) over a snapshot of a closed bar (`snapshot.py`); the frequency / cooldown state machine
(`frequency.py`); evaluation at every bar close, once across instances (`engine.py`, `claims.py`, `firing.py`,
`firing_repository.py`, `rule_cache.py`, `closed_bar.py`), writing `alert_events` and their outbox rows in one
transaction; delivery as Standard Webhooks (`app/webhooks/`, with redeliver and recover); the history
(`history.py`, `event_repository.py`), the stream (`stream.py`, `stream_hub.py`, `stream_reader.py`) and the
backtest (`backtest.py`, `backtest_service.py`, `cli.py`), all read through `read_router.py`. The event document
every one of them carries is `events.py`'s.

Decisions (where the issue is silent):
- Scopes: readers get `alerts:read`, admins `alerts:read` + `alerts:write`; operators hold every scope and, as with
  keys, reach another tenant's rules (by id, or `?tenant_id=` to list and create). Anyone else: 404, never 403.
- The tenant's rule limit is a 409 `alert-rule-limit-reached` (the request is valid; the tenant's state refuses it,
  and deleting a rule resolves it), counted in the INSERT itself (repository.insert_within_limit says why it is
  race-free on both backends).
- Every rule problem the schema cannot state is one 422 type, `alert-rule-invalid`, listing each offending member
  or condition node as a JSON pointer (`#/condition/all/2/op`, at most 20); shape errors are `validation-failed`
  with pointers too. A rule on a venue/symbol without a feed, or an unknown timeframe, is refused (422 pointing at
  the member, the market-data routes' 404/422 turned into body pointers): it could never fire.
- `destination`: `{"type": "webhook"}` (default: the tenant's `PUT /v1/webhook` endpoint, whatever its URL is when
  the alert fires; a rule may exist before the webhook does), `{"type": "url", "url": …}` (public addresses only,
  as for the webhook; signed with the tenant's secret) or `{"type": "none"}` (events recorded and streamed only).
- Conditions: `bias` takes `long|short|neutral` with `eq`/`ne`/`changes_to`; numeric fields take every op;
  `crosses_*` follow TradingView's crossover (at or beyond the level on the previous close, strictly through it
  now; a level cross compares each bar with its own level); a missing value (RSI warming up, no stop) makes a
  predicate false, `ne` included; on a rule's first evaluation `crosses_*`/`changes_to`/level crosses are false.
  Events count at the bar that confirmed them. `equal_highs`/`equal_lows` take no direction; a liquidity sweep of
  highs is bearish, of lows bullish. Fibonacci ratios are the signal's own (retracements and extensions); `target`
  is the signal's first target.
- Frequency: `on_change` treats a rule's first evaluation as "was false", so a rule created while its condition
  holds fires at the next close; a cooldown of N skips the N closes after a fire, counted by bar close times (a
  feed gap counts its missing bars), and an `on_change` edge inside it is spent, not fired late; `once` fires then
  disables the rule. A close at or before the last evaluated one never fires (replays, duplicates).
- PATCH replaces the members given (null only for `expires_at`); changing the market, timeframe or condition, or
  re-enabling a disabled rule, resets its fire state (so a `once` rule re-enabled can fire again).

The read side: the history (`history.py`, SQL in `event_repository.py`, routes in `read_router.py`), the stream
(`stream.py`, what it sends in `stream_reader.py`, over the pub/sub hub `stream_hub.py`) and the backtest
(`backtest.py`, pure; run by `backtest_run.py` for `POST /v1/alerts/test` via `backtest_service.py` and for
`deltaflow alerts test` in `cli.py`).
Their decisions are in those modules' docstrings: history ranges bound `created_at`; a stream without
Last-Event-ID starts now, an unknown Last-Event-ID is a 422, catch-ups re-read an overlap window (an event may
repeat after a reconnect, never get lost); a backtest warms up before it evaluates, starts the rule fresh, ignores
`enabled`/`expires_at`, and counts `cvd` over the live window.

Evaluation at bar close (`engine.py`, started from the app lifespan; claims and the Redis layout in `claims.py`, the
pure plan of a close in `firing.py` over the conditions compiled by `circuit.py`, its SQL in `firing_repository.py`,
parsed rules per market in `rule_cache.py`, the closed bar's analysis in `closed_bar.py`, the snapshot's JSON in
`snapshot_json.py`). Decisions: a close is evaluated on the signal's window (`DELTAFLOW_SIGNAL_BARS` stored bars
ending at it); a rule takes part in the closes after its creation and before its `expires_at`, both compared with
the bar's close time (a late catch-up decides as a prompt evaluation would, and a new rule never fires on a bar that
closed before it); a market's closes are evaluated in order (a close held by another instance holds the later ones
back until it is done or its claim expires); `url` destinations get an outbox row with their URL, `webhook` ones a
row without (the tenant's endpoint as it is at delivery), `none` and disabled own URLs none; the destination is the
one read with the rule's definition (an edit racing a close may send that close's event to the previous
destination); the last bar evaluated is one cursor per market, and a close writes only the rules whose fire state
moved.
"""
