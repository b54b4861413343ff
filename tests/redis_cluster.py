"""A real 3-master Redis Cluster on loopback ports, started from the machine's redis-server for a test module.

Each node runs in its own directory of a temp dir (nodes.conf, no persistence); `redis-cli --cluster create` splits
the 16 384 slots over the masters, and the cluster is ready once every node reports `cluster_state:ok`."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import redis

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")
MASTERS = 3


class LocalRedisCluster:
    def __init__(self, directory: Path, masters: int = MASTERS) -> None:
        if REDIS_SERVER is None or REDIS_CLI is None:
            raise RuntimeError("redis-server and redis-cli are not installed")
        self.directory = directory
        self.ports = _free_node_ports(masters)
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """The URL of one node: the client discovers the others (CLUSTER SLOTS)."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self, *, within: float = 20.0) -> None:
        assert REDIS_SERVER is not None
        assert REDIS_CLI is not None
        for port in self.ports:
            node_dir = self.directory / str(port)
            node_dir.mkdir(parents=True, exist_ok=True)
            command = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node_dir)]
            command += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            command += ["--save", "", "--appendonly", "no"]
            self.processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + within
        for port in self.ports:
            self._wait(partial(_answers, port), deadline)
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        create = [REDIS_CLI, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"]
        subprocess.run(create, check=True, capture_output=True, timeout=within)
        for port in self.ports:
            self._wait(partial(_cluster_ok, port), deadline)

    def keys_per_node(self) -> dict[int, list[bytes]]:
        """Every key stored, by the port of the master that holds it."""
        out: dict[int, list[bytes]] = {}
        for port in self.ports:
            with redis.Redis(port=port) as node:
                out[port] = sorted(node.keys("*"))
        return out

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    def _wait(self, ready: Callable[[], bool], deadline: float) -> None:
        while True:
            try:
                if ready():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.processes):
                raise RuntimeError("the Redis Cluster did not become ready")
            time.sleep(0.05)


def _answers(port: int) -> bool:
    with redis.Redis(port=port, socket_timeout=1) as node:
        return bool(node.ping())


def _cluster_ok(port: int) -> bool:
    with redis.Redis(port=port, socket_timeout=1) as node:
        info: dict[str, str] = node.execute_command("CLUSTER INFO")  # parsed by redis-py into fields
        return info["cluster_state"] == "ok"


def _free_node_ports(count: int) -> list[int]:
    """Ports free for a node and for its cluster bus (port + 10 000), hence below the kernel's ephemeral range:
    a port it picks (tests.helpers.free_port) is often above 55 535, where the bus port cannot exist."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(20_000, 30_000)
        if port not in ports and all(_bindable(p) for p in (port, port + 10_000)):
            ports.append(port)
    return ports


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
