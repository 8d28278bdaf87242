"""Idle and slow connections to the health port (issue 26, item 8).

Each idle connection once pinned a thread and a file descriptor for ever (threads 9 -> 309), and
at the open-file limit the outbox could not be written. The health port now holds at most
``MAX_CONNECTIONS`` at once, each for at most ``CONNECTION_DEADLINE_S``: hundreds of idle
connections cost a bounded number of threads and descriptors, are let go, and ``/health``
answers again.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

import requests

from app.health import CONNECTION_DEADLINE_S, MAX_CONNECTIONS
from tests.support.fault_kit import Rig, poll_until

IDLE = 300


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def fds_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@contextlib.contextmanager
def idle_connections(port: int, count: int) -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            with contextlib.suppress(OSError):
                opened.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        yield opened
    finally:
        for sock in opened:
            sock.close()


def healthy(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_hundreds_of_idle_connections_cost_bounded_threads_and_are_let_go(rig: Rig) -> None:
    worker = rig.start()
    poll_until(lambda: healthy(rig.health_port), 30, "the health port")
    pid = worker.proc.pid
    threads, fds = threads_of(pid), fds_of(pid)
    with idle_connections(rig.health_port, IDLE) as opened:
        assert len(opened) > MAX_CONNECTIONS
        most_threads = most_fds = 0

        def settled() -> bool:
            nonlocal most_threads, most_fds
            most_threads = max(most_threads, threads_of(pid))
            most_fds = max(most_fds, fds_of(pid))
            return healthy(rig.health_port)

        poll_until(settled, 3 * CONNECTION_DEADLINE_S + 10, "/health to answer again")
        job = rig.submit({"n": 1})  # the outbox can still be written, the job delivered
        assert rig.wait_result(job) == {"output": {"n": 1}}
        assert most_threads <= threads + MAX_CONNECTIONS + 2, (threads, most_threads)
        assert most_fds <= fds + MAX_CONNECTIONS + 8, (fds, most_fds)
    assert worker.terminate() == 0
    rig.assert_delivered_once()


def test_a_connection_that_sends_a_byte_at_a_time_is_cut_at_the_deadline(rig: Rig) -> None:
    worker = rig.start()
    poll_until(lambda: healthy(rig.health_port), 30, "the health port")
    with socket.create_connection(("127.0.0.1", rig.health_port), timeout=5) as slow:
        slow.sendall(b"G")

        def cut() -> bool:
            try:
                slow.sendall(b"E")
                slow.settimeout(0.05)
                return slow.recv(1024) == b""
            except TimeoutError:
                return False
            except OSError:
                return True

        poll_until(cut, CONNECTION_DEADLINE_S + 10, "the slow connection to be cut",
                   interval=0.5)
    assert worker.terminate() == 0
