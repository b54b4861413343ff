"""Prometheus metrics in one process: the request middleware's labels, the small counters at their call sites.

The real server (granian workers, the separate listener, the sim feed) is tested in tests/e2e/test_metrics_serve.py.
Values live in the process-wide default registry, shared by every test: each test compares before and after.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from prometheus_client import REGISTRY

from app.config import Settings
from app.core import tally
from app.core.instrument import endpoint_templates
from app.core.redis import create_redis
from app.main import create_app
from app.market.feed_metrics import FeedMetrics
from tests.conftest import make_settings
from tests.helpers import blackhole_server, free_port, running
from tests.trading.conftest import signals_client_with

SIGNAL_ROUTE = "/v1/signals/{venue}/{symbol}"


def sample(name: str, **labels: str) -> float:
    tally.flush()  # what requests counted in memory, written now rather than within metrics_flush_seconds
    return REGISTRY.get_sample_value(name, labels) or 0.0


def requests(route: str, method: str, status: str) -> float:
    return sample("deltaflow_http_requests_total", route=route, method=method, status=status)


@pytest.fixture
async def metered(settings: Settings) -> AsyncIterator[AsyncClient]:
    app: FastAPI = create_app(settings.model_copy(update={"metrics_port": free_port()}))
    async with running(app) as http:
        yield http


async def test_requests_are_counted_by_route_template_not_path(metered: AsyncClient) -> None:
    before = requests(SIGNAL_ROUTE, "GET", "4xx")
    latency_before = sample(
        "deltaflow_http_request_duration_seconds_count", route=SIGNAL_ROUTE, method="GET", status="4xx"
    )
    for symbol in ("BTCUSDT", "ETHUSDT", "NOPE"):
        assert (await metered.get(f"/v1/signals/sim/{symbol}")).status_code == 401
    assert requests(SIGNAL_ROUTE, "GET", "4xx") == before + 3
    latency = sample("deltaflow_http_request_duration_seconds_count", route=SIGNAL_ROUTE, method="GET", status="4xx")
    assert latency == latency_before + 3
    assert sample("deltaflow_http_requests_total", route="/v1/signals/sim/BTCUSDT", method="GET", status="4xx") == 0


async def test_histogram_separates_routes_and_buckets_the_latency(metered: AsyncClient) -> None:
    before = sample("deltaflow_http_request_duration_seconds_count", route="/healthz", method="GET", status="2xx")
    inf_before = sample(
        "deltaflow_http_request_duration_seconds_bucket", route="/healthz", method="GET", status="2xx", le="+Inf"
    )
    assert (await metered.get("/healthz")).status_code == 200
    assert (
        sample("deltaflow_http_request_duration_seconds_count", route="/healthz", method="GET", status="2xx")
        == before + 1
    )
    assert (
        sample(
            "deltaflow_http_request_duration_seconds_bucket", route="/healthz", method="GET", status="2xx", le="+Inf"
        )
        == inf_before + 1
    )
    assert sample("deltaflow_http_request_duration_seconds_sum", route="/healthz", method="GET", status="2xx") > 0


async def test_unknown_paths_and_methods_collapse_into_fixed_labels(metered: AsyncClient) -> None:
    unmatched = requests("unmatched", "GET", "4xx")
    other = requests("/healthz", "other", "4xx")
    for path in ("/a", "/b/c", "/wp-login.php"):
        assert (await metered.get(path)).status_code == 404
    assert (await metered.request("BREW", "/healthz")).status_code == 405
    assert requests("unmatched", "GET", "4xx") == unmatched + 3
    assert requests("/healthz", "other", "4xx") == other + 1
    assert sample("deltaflow_http_requests_total", route="/a", method="GET", status="4xx") == 0


async def test_method_not_allowed_is_counted_under_the_route(metered: AsyncClient) -> None:
    before = requests("/healthz", "DELETE", "4xx")
    assert (await metered.delete("/healthz")).status_code == 405
    assert requests("/healthz", "DELETE", "4xx") == before + 1


async def test_auth_failures_are_counted_by_problem_type(metered: AsyncClient) -> None:
    missing = sample("deltaflow_auth_failures_total", reason="api-key-missing")
    invalid = sample("deltaflow_auth_failures_total", reason="api-key-invalid")
    assert (await metered.get("/v1/signals/sim/BTCUSDT")).status_code == 401
    answer = await metered.get("/v1/signals/sim/BTCUSDT", headers={"authorization": "Bearer dfk_nonsense"})
    assert answer.status_code == 401
    assert answer.json()["type"] == "/problems/api-key-invalid"
    assert sample("deltaflow_auth_failures_total", reason="api-key-missing") == missing + 1
    assert sample("deltaflow_auth_failures_total", reason="api-key-invalid") == invalid + 1


async def test_counts_reach_the_metrics_by_themselves_within_the_flush_period(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"metrics_port": free_port(), "metrics_flush_seconds": 0.05}))
    tally.flush()
    before = REGISTRY.get_sample_value(
        "deltaflow_http_requests_total", {"route": "/startupz", "method": "GET", "status": "2xx"}
    )
    async with running(app) as http:
        assert (await http.get("/startupz")).status_code == 200
        labels = {"route": "/startupz", "method": "GET", "status": "2xx"}
        assert (REGISTRY.get_sample_value("deltaflow_http_requests_total", labels) or 0) == (before or 0), "in memory"
        await asyncio.sleep(0.3)
        assert REGISTRY.get_sample_value("deltaflow_http_requests_total", labels) == (before or 0) + 1


async def test_in_flight_gauge_returns_to_its_value(metered: AsyncClient) -> None:
    before = sample("deltaflow_http_requests_in_flight")
    assert (await metered.get("/healthz")).status_code == 200
    assert sample("deltaflow_http_requests_in_flight") == before


async def test_readiness_is_exported(metered: AsyncClient) -> None:
    assert (await metered.get("/readyz")).status_code == 200
    assert sample("deltaflow_ready") == 1


async def test_metrics_off_adds_no_middleware(settings: Settings) -> None:
    app = create_app(settings)
    assert settings.metrics_port is None
    before = requests("/healthz", "GET", "2xx")
    async with running(app) as http:
        assert (await http.get("/healthz")).status_code == 200
    assert requests("/healthz", "GET", "2xx") == before


def test_blank_metrics_port_means_off() -> None:
    assert Settings.model_validate({"metrics_port": ""}).metrics_port is None
    assert Settings.model_validate({"metrics_port": "9464"}).metrics_port == 9464


async def test_redis_connection_failures_are_counted_once() -> None:
    async with blackhole_server() as port:  # accepts and never answers: a timeout
        redis = create_redis(make_settings(redis_url=f"redis://127.0.0.1:{port}/0", redis_socket_timeout_seconds=0.2))
        before = sample("deltaflow_redis_errors_total", kind="timeout")
        with pytest.raises(Exception, match="Timeout"):
            await redis.get("x")
        await redis.aclose()
    assert sample("deltaflow_redis_errors_total", kind="timeout") == before + 1
    refused = create_redis(make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    before = sample("deltaflow_redis_errors_total", kind="connection")
    with pytest.raises(Exception, match=r"(?i)connect"):
        await refused.get("x")
    await refused.aclose()
    assert sample("deltaflow_redis_errors_total", kind="connection") == before + 1


def test_feed_counters_advance_by_the_status_deltas_and_restart_with_a_session() -> None:
    feed = FeedMetrics("sim", "METRICS1")
    labels = {"venue": "sim", "symbol": "METRICS1"}
    now_ms = int(time.time() * 1000)
    feed.observe({"connected": True, "reconnects": 2, "coalesced": 10, "queue_depth": 7, "last_message_ms": now_ms})
    feed.observe({"connected": True, "reconnects": 3, "coalesced": 15, "queue_depth": 3, "last_message_ms": now_ms})
    assert sample("deltaflow_feed_reconnects_total", **labels) == 3
    assert sample("deltaflow_feed_coalesced_total", **labels) == 15
    assert sample("deltaflow_feed_queue_depth", **labels) == 3
    assert sample("deltaflow_feed_connected", **labels) == 1
    assert sample("deltaflow_feed_last_message_timestamp_seconds", **labels) == now_ms / 1000
    feed.new_session()  # the lease was taken again: the status counts start at 0
    feed.observe({"connected": False, "reconnects": 1, "coalesced": 0})
    assert sample("deltaflow_feed_reconnects_total", **labels) == 4
    assert sample("deltaflow_feed_connected", **labels) == 0
    feed.observe({"connected": True, "queue_depth": 9}, stopped=True)
    assert (sample("deltaflow_feed_connected", **labels), sample("deltaflow_feed_queue_depth", **labels)) == (0, 0)


def test_rest_budget_refusals_of_a_shared_breaker_count_once_per_venue() -> None:
    venue = "metrics-venue"
    one, two = FeedMetrics(venue, "A"), FeedMetrics(venue, "B")
    one.observe({"rest_budget_refusals": 4})
    two.observe({"rest_budget_refusals": 4})  # the same breaker, seen by the venue's second feed
    two.observe({"rest_budget_refusals": 6})
    assert sample("deltaflow_feed_rest_budget_refusals_total", venue=venue) == 6


async def test_fast_lane_route_is_labelled_with_its_template(settings: Settings) -> None:
    """The cached signal is a plain Starlette route (app.core.fast_lane), for which FastAPI's router leaves no
    `route` on the scope: its template comes from the endpoint table, not from matching every route again."""
    assert SIGNAL_ROUTE in endpoint_templates(create_app(settings)).values()
    async with signals_client_with(settings, metrics_port=free_port()) as http:
        before = {status: requests(SIGNAL_ROUTE, "GET", status) for status in ("2xx", "4xx", "5xx")}
        answer = await http.get("/v1/signals/sim/BTCUSDT", params={"timeframe": "1m"})
        assert answer.status_code in {200, 404, 503}, answer.text  # routed, whether or not the feed has bars
        status = f"{answer.status_code // 100}xx"
        assert requests(SIGNAL_ROUTE, "GET", status) == before[status] + 1
