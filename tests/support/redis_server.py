"""A real ``redis-server`` on loopback for the Redis queue's tests: started on a free port,
stopped after.

``redis_server`` (session) is one shared server: each test takes a queue name of its own
(``redis_queue``), so tests running side by side (pytest-xdist) never see each other's keys.
Tests that stop, kill or restart Redis take a private one from ``redis_server_factory``.

``RedisServer(appendonly=True, appendfsync="always")`` keeps an append-only file in its own
folder; ``kill()`` is SIGKILL (a crash: what the last fsync did not cover is lost),
``stop()`` is a clean shutdown (the file is written out), ``start()`` again on the same port
and folder loads what the file holds. ``redis-server`` comes from Debian's ``redis-server``
package (``make setup`` and ``.ci/run`` install it); without it every test here fails with
that message.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.ports import free_port

START_DEADLINE_S = 20.0
STOP_DEADLINE_S = 20.0
_POLL_S = 0.01


def redis_server_binary() -> str:
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
    if binary is None:
        raise RuntimeError("redis-server is not installed: `make setup` installs Debian's "
                           "redis-server package (apt-get install redis-server, as root)")
    return binary


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1 with its data in a folder of its own."""

    def __init__(self, *, appendonly: bool = False, appendfsync: str = "everysec",
                 password: str | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.password = password
        self.dir = Path(tempfile.mkdtemp(prefix="redis-test-"))
        self._appendonly = appendonly
        self._appendfsync = appendfsync
        self._process: subprocess.Popen[bytes] | None = None
        self._clients: list[redis.Redis] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def command(self) -> list[str]:
        args = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.dir), "--save", "", "--daemonize", "no",
                "--logfile", str(self.dir / "redis.log"),
                "--appendonly", "yes" if self._appendonly else "no",
                "--appendfsync", self._appendfsync]
        if self.password is not None:
            args += ["--requirepass", self.password]
        return args

    def start(self) -> None:
        """Start the process; return once it answers PING with its data loaded."""
        if self.running:
            return
        self._process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_DEADLINE_S
        pause = threading.Event()
        probe = redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                            socket_timeout=1, socket_connect_timeout=1)
        try:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self._process.returncode}: "
                                       f"{self.log_tail()}")
                try:
                    if probe.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError):  # BusyLoading included
                    pause.wait(_POLL_S)
        finally:
            probe.close()
        self.kill()
        raise RuntimeError(f"redis-server did not answer within {START_DEADLINE_S} s")

    def stop(self) -> None:
        """A clean shutdown (SIGTERM: Redis writes its append-only file out, then exits)."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """A crash (SIGKILL): writes the last fsync did not cover are lost."""
        self._end(signal.SIGKILL)

    def _end(self, how: signal.Signals) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(how)
        try:
            process.wait(STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_DEADLINE_S)

    def aof_tail(self) -> tuple[Path, int]:
        """The append-only file Redis appends to now, and its size (Redis 7 keeps its AOF as a
        base file and "incr" files in ``appendonlydir``)."""
        incr = sorted((self.dir / "appendonlydir").glob("*.incr.aof"),
                      key=lambda p: int(p.name.split(".")[-3]))
        if not incr:
            raise RuntimeError("no append-only file: start the server with appendonly=True")
        return incr[-1], incr[-1].stat().st_size

    def lose_aof_tail(self, since: tuple[Path, int]) -> bytes:
        """After ``kill()``: cut the append-only file back to ``since`` (from ``aof_tail``), as
        a machine crash loses what the last fsync did not cover. Returns what Redis will not
        replay, in its wire format: the cut, from the start of the last transaction (a script's
        writes) before it, which Redis reverts whole when the cut ends it halfway."""
        assert not self.running, "cut the file of a stopped server only"
        path, size = since
        content = path.read_bytes()
        assert len(content) > size, "nothing was written after that size: nothing to lose"
        with path.open("r+b") as handle:
            handle.truncate(size)
        start = content.rfind(b"*1\r\n$5\r\nMULTI\r\n", 0, size)
        return content[start if start >= 0 else size:]

    def client(self) -> Any:
        """A plain client (bytes in and out; typed Any: redis-py types each answer as
        sync-or-async); closed with the server."""
        client = redis.Redis.from_url(self.url, password=self.password, socket_timeout=10)
        self._clients.append(client)
        return client

    def log_tail(self) -> str:
        path = self.dir / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_redis_server(**options: object) -> RedisServer:
    """Start a server on a free port (another one if the port was taken meanwhile)."""
    for attempt in range(3):
        server = RedisServer(**options)  # type: ignore[arg-type]
        try:
            server.start()
            return server
        except RuntimeError:
            server.close()
            if attempt == 2:
                raise
    raise AssertionError("not reached")


class RedisServerFactory:
    """Starts private servers for one test and stops them all at its end."""

    def __init__(self) -> None:
        self.servers: list[RedisServer] = []

    def __call__(self, **options: object) -> RedisServer:
        server = start_redis_server(**options)
        self.servers.append(server)
        return server

    def close(self) -> None:
        for server in self.servers:
            server.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A Redis shared by the session (per xdist worker). Never stop it: use the factory."""
    server = start_redis_server()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_queue() -> str:
    """A queue name no other test uses."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def redis_server_factory() -> Iterator[RedisServerFactory]:
    """Call it to start a private server; all are stopped when the test ends."""
    factory = RedisServerFactory()
    try:
        yield factory
    finally:
        factory.close()
