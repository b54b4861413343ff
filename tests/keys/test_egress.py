"""Webhook egress guard: tenant URLs reach public addresses only, checked at registration and at connection time."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select

from app.auth.scopes import Role
from app.config import Settings
from app.main import create_app
from app.models import WebhookEndpoint
from app.tenants.egress import PublicOnlyBackend, is_public_address, refused_host, webhook_client
from tests.helpers import http_receiver, running
from tests.keys.conftest import MakeKey


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fc00::1", False),
        ("fe80::1%eth0", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("::ffff:8.8.8.8", True),
        ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
        ("64:ff9b::808:808", True),  # NAT64 of 8.8.8.8
        ("64:ff9b:1::808:808", False),  # local-use NAT64 prefix: the operator's own translator
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("2002:a00:1::1", False),  # 6to4 of 10.0.0.1
        ("2002:808:808::1", True),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", False),  # Teredo, client 127.0.0.1
        ("::7f00:1", False),  # IPv4-compatible 127.0.0.1
        ("::ffff:0:7f00:1", False),  # SIIT IPv4-translated 127.0.0.1
        ("::ffff:0:808:808", True),
        ("not-an-ip", False),
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public_address(address) is public


@pytest.mark.parametrize(
    ("host", "refused"),
    [
        ("hooks.example.com", False),  # a name is judged when it is resolved, at connection time
        ("8.8.8.8", False),
        ("localhost", True),
        ("api.localhost", True),
        ("LOCALHOST.", True),
        ("127.0.0.1", True),
        ("[::1]", True),
        ("169.254.169.254", True),
    ],
)
def test_hosts_refused_at_registration(host: str, refused: bool) -> None:
    assert (refused_host(host) is not None) is refused


@pytest.fixture
async def guarded(settings: Settings, client: AsyncClient) -> AsyncIterator[tuple[FastAPI, AsyncClient]]:
    """An app with the production default (public destinations only), beside the test app `make_key` uses."""
    app = create_app(settings.model_copy(update={"webhook_allow_private_destinations": False}))
    async with running(app) as guarded_client:
        yield app, guarded_client


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://169.254.169.254/latest",
        "http://localhost/x",
        "http://[::1]/x",
        "http://[64:ff9b::7f00:1]/",
        "http://[2002:7f00:1::]/",
    ],
)
async def test_registering_a_private_destination_is_a_422_problem(
    guarded: tuple[FastAPI, AsyncClient], make_key: MakeKey, url: str
) -> None:
    app, client = guarded
    admin = await make_key(Role.ADMIN)
    response = await client.put("/v1/webhook", json={"url": url}, headers=admin.headers)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/webhook-destination-refused")
    assert "public address" in response.json()["detail"]
    async with app.state.session_factory() as session:
        assert (await session.execute(select(WebhookEndpoint))).scalars().all() == [], "nothing stored"


async def test_a_public_name_is_accepted(guarded: tuple[FastAPI, AsyncClient], make_key: MakeKey) -> None:
    _app, client = guarded
    admin = await make_key(Role.ADMIN)
    response = await client.put("/v1/webhook", json={"url": "https://hooks.example.com/x"}, headers=admin.headers)
    assert response.status_code == 200


async def test_the_guarded_client_never_connects_to_a_private_address(settings: Settings) -> None:
    # A name that resolves to loopback (as a rebinding DNS answer would) is refused at connection time.
    async with http_receiver([200]) as (url, received):
        port = httpx.URL(url).port
        async with webhook_client(settings.model_copy(update={"webhook_allow_private_destinations": False})) as http:
            for target in (url, f"http://localhost:{port}/hooks/deltaflow"):
                with pytest.raises(httpx.ConnectError, match="not public"):
                    await http.post(target, content=b"{}")
        assert received == []
        async with webhook_client(settings) as http:  # the test settings allow private receivers
            assert (await http.post(url, content=b"{}")).status_code == 200
        assert len(received) == 1


async def test_the_guarded_backend_connects_to_the_address_it_checked() -> None:
    connected: list[str] = []

    class Inner:
        async def connect_tcp(self, host: str, port: int, *args: object) -> object:
            connected.append(host)
            raise OSError("stop here")

    backend = PublicOnlyBackend(inner=Inner())  # type: ignore[arg-type]
    with pytest.raises(OSError, match="stop here"):
        await backend.connect_tcp("8.8.8.8", 443)
    assert connected == ["8.8.8.8"]  # the address that was checked is the one connected to
