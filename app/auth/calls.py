"""One authenticated `/v1` request as the call log keeps it, filled in as the response goes out.

Shared by the auth middleware (which logs the requests it refuses once their key is known: missing scopes,
unknown query parameters) and the metering middleware (everything else, throttled requests included).
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Protocol

from starlette.types import Scope

from app.auth.principal import Principal

CALL_LOG_STATE = "call_log"
USER_AGENT_MAX = 200


class CallLog(Protocol):
    def record(
        self,
        *,
        at: datetime,
        tenant_id: uuid.UUID,
        key_id: uuid.UUID,
        method: str,
        route: str,
        status: int,
        latency_ms: float,
        response_bytes: int,
        client_address: str | None,
        request_id: str,
        user_agent: str | None,
        cache: str | None,
    ) -> None: ...


class RequestCall:
    """What the call log keeps of one request, filled in as the response goes out."""

    __slots__ = ("at", "bytes", "cache", "started", "status")

    def __init__(self) -> None:
        self.at = datetime.now(UTC)
        self.started = time.perf_counter()
        self.status = 500  # what the client gets if the app raises before it responds
        self.bytes = 0
        self.cache: str | None = None

    def log(self, calls: CallLog, scope: Scope, principal: Principal, path: str) -> None:
        if principal.key_id is None:
            return
        user_agent = None
        for name, value in scope.get("headers", ()):
            if name == b"user-agent":
                user_agent = value[:USER_AGENT_MAX].decode("latin-1")
                break
        client = scope.get("client")
        # Bounded to the columns: a client picks its method, and a trusted proxy's forwarded address is a string.
        calls.record(
            at=self.at, tenant_id=principal.tenant_id, key_id=principal.key_id, method=scope["method"][:8], route=path,
            status=self.status, latency_ms=(time.perf_counter() - self.started) * 1000, response_bytes=self.bytes,
            client_address=str(client[0])[:45] if client else None,
            request_id=scope.get("state", {}).get("request_id", ""),
            user_agent=user_agent, cache=self.cache,
        )  # fmt: skip
