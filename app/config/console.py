"""Settings of the admin console (`/console`): sessions, passwords, login throttling.

A base class of `Settings` (read from the same `DELTAFLOW_*` environment), kept apart so the main settings module
stays readable. OWASP's Password Storage and Session Management cheat sheets are the source of the defaults.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings


class ConsoleSettings(BaseSettings):
    console_enabled: bool = True
    # Sessions (server-side, in Redis): ended after this long without a request, and this long after login at most
    # (the lower bounds are low so tests can watch both expire).
    console_session_idle_seconds: Annotated[int, Field(ge=1, le=86_400)] = 30 * 60
    # A page view renews the session's last-seen time in Redis only when the stored one is older than this: one
    # write per minute of activity instead of one per page, at the cost of an idle timeout up to this much early.
    console_session_renew_seconds: Annotated[int, Field(ge=0, le=3600)] = 60
    console_session_absolute_seconds: Annotated[int, Field(ge=1, le=30 * 86_400)] = 8 * 3600
    console_sessions_max_per_user: Annotated[int, Field(ge=1, le=1000)] = 20  # the oldest ends beyond this
    # The cookie is `__Host-deltaflow_session`, which browsers accept only with Secure. Chromium and Firefox treat
    # http://localhost and http://127.0.0.1 as secure contexts, so development over plain HTTP works there; false
    # drops Secure and the `__Host-` prefix (cookie `deltaflow_session`) for other browsers or hosts on plain HTTP.
    console_cookie_secure: bool = True
    # Passwords: argon2id at OWASP's minimum (19 MiB, 2 passes, 1 lane); stronger settings rehash on next login.
    console_password_min_length: Annotated[int, Field(ge=8, le=128)] = 12
    console_password_max_length: Annotated[int, Field(ge=12, le=1024)] = 128
    console_argon2_memory_kib: Annotated[int, Field(ge=8 * 1024, le=4 * 1024 * 1024)] = 19 * 1024
    console_argon2_time_cost: Annotated[int, Field(ge=1, le=20)] = 2
    console_argon2_parallelism: Annotated[int, Field(ge=1, le=16)] = 1
    # Login throttling: per account, a lockout after this many failures within the window, doubling each time from
    # the base up to the cap; per client address, at most this many attempts per window.
    console_login_max_failures: Annotated[int, Field(ge=1, le=100)] = 5
    console_login_failure_window_seconds: Annotated[int, Field(ge=60, le=86_400)] = 15 * 60
    console_lockout_base_seconds: Annotated[int, Field(ge=1, le=86_400)] = 60
    console_lockout_max_seconds: Annotated[int, Field(ge=1, le=7 * 86_400)] = 3600
    console_login_max_attempts_per_address: Annotated[int, Field(ge=1, le=100_000)] = 50
