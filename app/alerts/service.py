"""Alert rule rules: tenancy, the per-tenant limit, validation beyond the schema (condition, market, destination,
expiry), the fire-state reset on edits, and the audit trail. Services only flush; the request's session commits."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from app.alerts import repository
from app.alerts.claims import bump_generations
from app.alerts.conditions import ConditionError, ConditionInvalid, parse_condition, to_json
from app.alerts.evaluator import describe_stored
from app.alerts.frequency import Frequency
from app.alerts.schemas import (
    AlertRuleCreate,
    AlertRuleRead,
    AlertRuleUpdate,
    Destination,
    NoDestination,
    UrlDestination,
    WebhookDestination,
)
from app.audit import repository as audit
from app.config import Settings
from app.core.errors import AppError
from app.core.pagination import decode_cursor, encode_cursor
from app.core.redis import RedisClient
from app.keys.service import Actor, resolve_tenant
from app.market.aggregation import TIMEFRAMES
from app.market.events import VENUES
from app.market.feeds import parse_feeds
from app.market.store import list_feeds
from app.models import AlertRule
from app.tenants.egress import refused_host

# What a rule watches: changing any of it starts its fire state afresh (an edge seen on the old condition or
# market says nothing about the new one).
_WATCHED = ("venue", "symbol", "timeframe", "condition")


class AlertRuleNotFound(AppError):
    slug = "alert-rule-not-found"
    title = "Alert rule not found"
    status = 404
    description = "No alert rule with this id exists in your tenant."


class AlertRuleInvalid(AppError):
    slug = "alert-rule-invalid"
    title = "Invalid alert rule"
    status = 422
    description = (
        "The rule breaks a rule its schema cannot state: the condition's grammar or size, a market without a feed, "
        "a destination that is not public, an expiry in the past. `errors` points at each offending member or "
        "condition node (`#/condition/all/2/op`)."
    )


class AlertRuleLimitReached(AppError):
    slug = "alert-rule-limit-reached"
    title = "Too many alert rules"
    status = 409
    description = "The tenant has DELTAFLOW_ALERT_MAX_RULES_PER_TENANT rules; delete one to create another."


def _invalid(errors: Sequence[ConditionError]) -> AlertRuleInvalid:
    shown = "; ".join(f"{e.pointer}: {e.detail}" for e in errors[:5])
    return AlertRuleInvalid(shown, extensions={"errors": [e.to_dict() for e in errors]})


class AlertService:
    def __init__(
        self,
        session: AsyncSession,
        settings: Settings,
        redis: RedisClient,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.session = session
        self.settings = settings
        self.redis = redis
        self.clock = clock

    # --- reads -----------------------------------------------------------------------------------------------

    def to_read(self, rule: AlertRule) -> AlertRuleRead:
        destination: Destination
        if rule.destination_type == "url" and rule.destination_url is not None:
            destination = UrlDestination.model_validate({"type": "url", "url": rule.destination_url})
        elif rule.destination_type == "none":
            destination = NoDestination(type="none")
        else:
            destination = WebhookDestination()
        fired = rule.last_fired_bar_ms
        return AlertRuleRead(
            id=rule.id,
            tenant_id=rule.tenant_id,
            name=rule.name,
            venue=rule.venue,
            symbol=rule.symbol,
            timeframe=rule.timeframe,
            condition=rule.condition,
            description=describe_stored(rule.condition),
            frequency=Frequency(rule.frequency),
            cooldown_bars=rule.cooldown_bars,
            expires_at=rule.expires_at,
            enabled=rule.enabled,
            destination=destination,
            created_at=rule.created_at,
            updated_at=rule.updated_at,
            last_fired_at=None if fired is None else datetime.fromtimestamp(fired / 1000, UTC),
        )

    async def get(self, actor: Actor, rule_id: uuid.UUID, tenant_id: uuid.UUID | None) -> AlertRule:
        if actor.principal.is_operator and tenant_id is None:
            rule = await repository.get_rule_any_tenant(self.session, rule_id)
        else:
            tenant = await resolve_tenant(self.session, actor, tenant_id)
            rule = await repository.get_rule(self.session, tenant, rule_id)
        if rule is None:
            raise AlertRuleNotFound(f"Alert rule {rule_id} not found.")
        return rule

    async def list_rules(
        self, actor: Actor, *, cursor: str | None, limit: int, tenant_id: uuid.UUID | None
    ) -> tuple[Sequence[AlertRule], str | None]:
        tenant = await resolve_tenant(self.session, actor, tenant_id)
        page = await repository.list_rules(self.session, tenant, after=decode_cursor(cursor), limit=limit + 1)
        items = list(page[:limit])
        next_cursor = encode_cursor(items[-1].created_at, items[-1].id) if len(page) > limit else None
        return items, next_cursor

    # --- writes ----------------------------------------------------------------------------------------------

    async def create(self, actor: Actor, data: AlertRuleCreate, tenant_id: uuid.UUID | None) -> AlertRule:
        tenant = await resolve_tenant(self.session, actor, tenant_id)
        errors: list[ConditionError] = []
        condition = self._condition(data.condition, errors)
        errors += await self._market_errors(data.venue, data.symbol, data.timeframe)
        errors += self._destination_errors(data.destination)
        errors += self._expiry_errors(data.expires_at)
        if errors or condition is None:
            raise _invalid(errors)
        now = self.clock()
        destination_type, destination_url = _destination_columns(data.destination)
        values: dict[str, Any] = {
            "id": uuid.uuid4(),
            "tenant_id": tenant,
            "name": data.name,
            "venue": data.venue,
            "symbol": data.symbol,
            "timeframe": data.timeframe,
            "condition": condition,
            "frequency": data.frequency.value,
            "cooldown_bars": data.cooldown_bars,
            "expires_at": data.expires_at,
            "enabled": data.enabled,
            "destination_type": destination_type,
            "destination_url": destination_url,
            "created_at": now,
            "updated_at": now,
        }
        limit = self.settings.alert_max_rules_per_tenant
        rule_id = await repository.insert_within_limit(self.session, values, limit)
        if rule_id is None:
            raise AlertRuleLimitReached(f"The tenant already has {limit} alert rules (the most it may keep).")
        rule = await repository.get_rule(self.session, tenant, rule_id)
        if rule is None:  # pragma: no cover - inserted by this transaction a moment ago
            raise AlertRuleNotFound(f"Alert rule {rule_id} not found.")
        self._audit(actor, rule, "alert.created", {"name": rule.name, "market": _market(rule)})
        await self._rules_changed({_market_key(rule)})
        return rule

    async def update(
        self, actor: Actor, rule_id: uuid.UUID, data: AlertRuleUpdate, tenant_id: uuid.UUID | None
    ) -> AlertRule:
        rule = await self.get(actor, rule_id, tenant_id)
        market_before = _market_key(rule)
        # Only the members the client sent (the schema refuses null for all but `expires_at`).
        changes: dict[str, Any] = {name: getattr(data, name) for name in data.model_fields_set}
        errors: list[ConditionError] = []
        if "condition" in changes:
            changes["condition"] = self._condition(changes["condition"], errors)
        if changes.keys() & {"venue", "symbol", "timeframe"}:
            venue = changes.get("venue", rule.venue)
            symbol = changes.get("symbol", rule.symbol)
            timeframe = changes.get("timeframe", rule.timeframe)
            errors += await self._market_errors(venue, symbol, timeframe)
        if "destination" in changes:
            errors += self._destination_errors(changes["destination"])
        if "expires_at" in changes:
            errors += self._expiry_errors(changes["expires_at"])
        if errors:
            raise _invalid(errors)
        changed = sorted(name for name, value in changes.items() if _column_value(name, value) != _current(rule, name))
        reset = any(name in _WATCHED for name in changed) or (changes.get("enabled") is True and not rule.enabled)
        for name, value in changes.items():
            if name == "destination":
                rule.destination_type, rule.destination_url = _destination_columns(value)
                # Setting the destination, even to the same URL, re-enables one that delivery disabled (as
                # `PUT /v1/webhook` does for the endpoint): the tenant says the receiver is back.
                rule.destination_disabled_at = rule.destination_failing_since = None
            else:
                setattr(rule, name, _column_value(name, value))
        if reset:
            rule.last_result = rule.last_fired_bar_ms = None
        rule.updated_at = self.clock()
        await self.session.flush()
        self._audit(actor, rule, "alert.updated", {"changed": changed, "fire_state_reset": reset})
        await self._rules_changed({market_before, _market_key(rule)})
        return rule

    async def delete(self, actor: Actor, rule_id: uuid.UUID, tenant_id: uuid.UUID | None) -> None:
        rule = await self.get(actor, rule_id, tenant_id)
        details = {"name": rule.name, "market": _market(rule)}
        # The conditional delete decides between concurrent deletions: one audits, the others answer 404.
        if not await repository.delete_rule(self.session, rule.tenant_id, rule.id):
            raise AlertRuleNotFound(f"Alert rule {rule_id} not found.")
        self._audit(actor, rule, "alert.deleted", details)
        await self._rules_changed({_market_key(rule)})

    # --- checks ----------------------------------------------------------------------------------------------

    async def validate(self, data: AlertRuleCreate) -> dict[str, Any]:
        """The checks `create` makes, without creating (`POST /v1/alerts/test`): the canonical condition, or
        AlertRuleInvalid pointing at every offending member, so a body is refused by both routes alike."""
        errors: list[ConditionError] = []
        condition = self._condition(data.condition, errors)
        errors += await self._market_errors(data.venue, data.symbol, data.timeframe)
        errors += self._destination_errors(data.destination)
        errors += self._expiry_errors(data.expires_at)
        if errors or condition is None:
            raise _invalid(errors)
        return condition

    def _condition(self, raw: Any, errors: list[ConditionError]) -> dict[str, Any] | None:
        try:
            parsed = parse_condition(
                raw,
                max_depth=self.settings.alert_condition_max_depth,
                max_nodes=self.settings.alert_condition_max_nodes,
            )
        except ConditionInvalid as exc:
            errors += exc.errors
            return None
        return to_json(parsed)

    async def _market_errors(self, venue: str, symbol: str, timeframe: str) -> list[ConditionError]:
        """The market-data routes' checks, as pointers into the body: a rule on a market without a feed could never
        fire, so it is refused rather than kept silent."""
        errors = []
        if venue not in VENUES:
            errors.append(ConditionError("#/venue", f"one of {', '.join(VENUES)}"))
        else:
            live = {tuple(feed.split(":", 1)) for feed in await list_feeds(self.redis)}
            known = sorted(
                {s for v, s in live if v == venue} | {s for v, s in parse_feeds(self.settings.feeds) if v == venue}
            )
            if symbol not in known:
                shown = ", ".join(known[:20]) or "none"
                errors.append(ConditionError("#/symbol", f"no {venue} feed for this symbol (feeds: {shown})"))
        if timeframe not in TIMEFRAMES:
            errors.append(ConditionError("#/timeframe", f"one of {', '.join(TIMEFRAMES)}"))
        return errors

    def _destination_errors(self, destination: Destination) -> list[ConditionError]:
        if not isinstance(destination, UrlDestination) or self.settings.webhook_allow_private_destinations:
            return []
        reason = refused_host(destination.url.host or "")
        return [] if reason is None else [ConditionError("#/destination/url", f"{reason}; it must be public")]

    def _expiry_errors(self, expires_at: datetime | None) -> list[ConditionError]:
        if expires_at is None:
            return []
        if expires_at.tzinfo is None:
            return [ConditionError("#/expires_at", "the timestamp needs a time zone (e.g. Z)")]
        try:
            expires_at.astimezone(UTC)  # stored in UTC: 9999-12-31T23:59:59-14:00 is past year 9999 there
        except OverflowError:
            return [ConditionError("#/expires_at", "out of range once converted to UTC")]
        if expires_at <= self.clock():
            return [ConditionError("#/expires_at", "must be in the future")]
        return []

    async def _rules_changed(self, markets: set[tuple[str, str, str]]) -> None:
        """Bump these markets' rules generations: every instance's alert engine reparses their rules at its next
        close of them. Bumped before the request commits; an engine that reloads in between still sees the rule's
        new `updated_at` at a later close (app/alerts/rule_cache.py), so a lost or early bump only costs a reload."""
        with suppress(RedisError):
            await bump_generations(self.redis, markets)

    def _audit(self, actor: Actor, rule: AlertRule, action: str, details: dict[str, Any]) -> None:
        audit.record(
            self.session,
            tenant_id=rule.tenant_id,
            actor_key_id=actor.principal.key_id,
            actor_user_id=actor.principal.user_id,
            action=action,
            target=f"alert_rule:{rule.id}",
            request_id=actor.request_id,
            details=details,
        )


def _market(rule: AlertRule) -> str:
    return f"{rule.venue}:{rule.symbol}:{rule.timeframe}"


def _market_key(rule: AlertRule) -> tuple[str, str, str]:
    return rule.venue, rule.symbol, rule.timeframe


def _destination_columns(destination: Destination) -> tuple[str, str | None]:
    if isinstance(destination, UrlDestination):
        return "url", str(destination.url)
    return destination.type, None


def _column_value(name: str, value: Any) -> Any:
    if isinstance(value, Frequency):
        return value.value
    if name == "expires_at" and value is not None:
        return value.astimezone(UTC)
    if name == "destination":
        return _destination_columns(value)
    return value


def _current(rule: AlertRule, name: str) -> Any:
    if name == "destination":
        return rule.destination_type, rule.destination_url
    return getattr(rule, name)
