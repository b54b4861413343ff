"""Webhook egress: tenant-chosen URLs reach only public addresses (no SSRF into the operator's network).

A tenant admin sets the URL the service POSTs to, and every attempt's status and error are recorded where the
tenant can read them; without a guard that is a probe into whatever the service can reach: the metadata endpoint
(169.254.169.254), Redis and Postgres on loopback, the private network. Two checks:

- `PUT /v1/webhook` refuses a URL whose host is a non-public IP literal or `localhost` (immediate feedback);
- at delivery, the connection itself is guarded: the host is resolved, every address must be public, and the TCP
  connection goes to that checked address (TLS still verifies the URL's host name). Checking the name at
  registration alone would not do: DNS can answer differently later (rebinding).

`DELTAFLOW_WEBHOOK_ALLOW_PRIVATE_DESTINATIONS=true` lifts both, for self-hosted receivers on a private network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import httpcore
import httpx

from app.config import Settings
from app.core.errors import AppError


class WebhookDestinationRefused(AppError):
    slug = "webhook-destination-refused"
    title = "Webhook destination not allowed"
    status = 422
    description = "Webhook URLs must reach a public address: loopback, private, link-local and reserved are refused."


# IPv6 prefixes whose addresses carry an IPv4 address in their last 32 bits, which is where a packet really goes:
# NAT64's well-known prefix (RFC 6052), SIIT's IPv4-translated form (RFC 2765) and the deprecated IPv4-compatible
# form (RFC 4291). Python calls most of them global, so `64:ff9b::7f00:1` passed as public while it is 127.0.0.1.
_LAST_32_BITS_CARRY_IPV4 = (
    ipaddress.IPv6Network("64:ff9b::/96"),
    ipaddress.IPv6Network("::ffff:0:0:0/96"),
    ipaddress.IPv6Network("::/96"),
)
# RFC 8215's local-use NAT64 prefix translates into the operator's own network by definition.
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")
_IPV4_BITS = 0xFFFF_FFFF


def is_public_address(address: str) -> bool:
    """Globally routable unicast. An IPv6 address that carries an IPv4 address (mapped, NAT64, SIIT,
    IPv4-compatible, 6to4, Teredo) is judged by the IPv4 address it carries."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone index is not part of the address
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _LOCAL_NAT64:
            return False
        carried = embedded_ipv4(ip)
        if carried is not None:
            return carried.is_global and not carried.is_multicast
    return ip.is_global and not ip.is_multicast


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if it is one of the forms that carry one."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # the client's address, where the packet ends up
    if any(ip in network for network in _LAST_32_BITS_CARRY_IPV4) and int(ip) > 1:  # not :: or ::1
        return ipaddress.IPv4Address(int(ip) & _IPV4_BITS)
    return None


def refused_host(host: str) -> str | None:
    """Why a URL host is refused outright at registration (no DNS lookup: see the module docstring), or None."""
    name = host.strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return f"{host} is the local machine"
    try:
        ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return None  # a name: checked when its addresses are known, at connection time
    return None if is_public_address(name) else f"{host} is not a public address"


class PublicOnlyBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to checked public addresses."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's backend interface
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError) as error:
            raise httpcore.ConnectError(f"cannot resolve {host}: {error}") from error
        addresses = [str(info[4][0]) for info in infos]
        refused = [address for address in addresses if not is_public_address(address)]
        if refused or not addresses:
            raise httpcore.ConnectError(f"{host} resolves to {refused[0] if refused else 'nothing'}: not public")
        return await self._inner.connect_tcp(addresses[0], port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's backend interface
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks are never delivered to a Unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def webhook_client(settings: Settings) -> httpx.AsyncClient:
    """The client that delivers webhooks: no redirects (a 3xx could point anywhere), guarded connections."""
    transport = httpx.AsyncHTTPTransport()
    if not settings.webhook_allow_private_destinations:
        # httpx (0.28) takes no network backend of its own; its connection pool does. tests/keys/test_egress.py
        # fails if a later httpx stops using this one.
        transport._pool._network_backend = PublicOnlyBackend()
    return httpx.AsyncClient(transport=transport, follow_redirects=False)
