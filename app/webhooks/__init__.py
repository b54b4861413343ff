"""Outgoing webhooks (issue 15, item 5): every notice the service sends (`alert.fired`, `api_key.expiring`,
`quota.threshold`) is a row of the `webhook_deliveries` outbox, written in the transaction that made it and delivered
by `deliverer.py` as a Standard Webhook (`signing.py`, app/core/standard_webhooks.py) on Svix's retry schedule
(`schedule.py`). `service.py` and `router.py` replay: redeliver one alert event, recover failed deliveries.

Decisions (where the issue is silent):
- `webhook-id` is the row's `message_id`: an alert event's is derived from the event (app/alerts/events.py), so every
  retry and redelivery of it carries the same id; a key-expiry or quota notice has its own per row.
- The schedule's delays count from the previous attempt's end; an attempt is the whole exchange up to the response
  headers within the timeout (the body is never read). A redirect is a failure (never followed: it could point
  anywhere). `Retry-After` can lengthen a delay, never shorten it.
- Once any delivery of a message succeeds, its other pending deliveries are closed (`delivered`, their error naming
  the delivery that did it): a redelivery that succeeds stops the original's retries.
- Health is per destination: the tenant's endpoint, or a rule's own URL (through the event's rule; a deleted rule's
  URL is still delivered to, with no health kept). A row failed unsent (no endpoint, a disabled destination) made
  no attempt (`attempts` unchanged, the error says why). The failure that disables a destination also fails its row
  (no more retries to a disabled destination). Rule destinations are signed with the tenant's secret (version 1 of
  it until the tenant sets an endpoint, which shows it).
- `webhook.disabled` audit events carry `reason` (`gone`: a 410; `failing`: no success for the disable period),
  the URL, the delivery that tipped it and how to re-enable. The actor is the service (no key, no user).
"""
