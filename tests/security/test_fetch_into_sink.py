"""A fetch with a ``sink`` (what a LoRA URL uses): the final body goes there as it arrives.

A LoRA may be as large as ``LORA_MAX_BYTES`` (1 GB by default); held whole, and then joined,
it cost the worker about twice that in memory. With a sink the fetcher holds a chunk at a
time, the size cap and the deadline still apply, and only the final answer's body (never a
redirect's) is written.
"""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Iterator

import pytest

from adapters.http.safe_fetch import FetchRefused
from tests.support.image_fetch_kit import STAND_IN_PUBLIC, fetcher
from tests.support.image_server import ImageServer, Route

BIG = bytes(range(256)) * (96 * 1024)  # 24 MiB
BINARY = {"Content-Type": "application/octet-stream"}


class Collector:
    """A sink that hashes what it gets and counts it, keeping nothing."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.sha.update(chunk)
        self.size += len(chunk)


@pytest.fixture
def big_files() -> Iterator[ImageServer]:
    routes = {"/big.bin": Route(body=BIG, headers=BINARY),
              "/moved": Route(302, body=b"<html>moved</html>", headers={"Location": "/big.bin"})}
    with ImageServer(routes, host=STAND_IN_PUBLIC) as server:
        yield server


def test_a_large_body_goes_to_the_sink_a_chunk_at_a_time_and_is_not_kept(
    big_files: ImageServer,
) -> None:
    sink = Collector()
    tracemalloc.start()
    try:
        fetched = fetcher(max_bytes=len(BIG)).fetch(big_files.url("/big.bin"), accept="*/*",
                                                    sink=sink)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (sink.size, sink.sha.hexdigest()) == (len(BIG), hashlib.sha256(BIG).hexdigest())
    assert fetched.content == b""
    assert peak < len(BIG) // 8, f"held {peak} bytes at once for a {len(BIG)}-byte body"


def test_only_the_final_answer_reaches_the_sink_never_a_redirect_page(
    big_files: ImageServer,
) -> None:
    sink = Collector()
    fetcher(max_bytes=len(BIG)).fetch(big_files.url("/moved"), accept="*/*", sink=sink)
    assert [path for path, _ in big_files.requests] == ["/moved", "/big.bin"]
    assert (sink.size, sink.sha.hexdigest()) == (len(BIG), hashlib.sha256(BIG).hexdigest())


def test_the_size_cap_holds_for_a_sink_and_past_it_the_fetch_is_refused(
    big_files: ImageServer,
) -> None:
    sink = Collector()
    cap = len(BIG) // 3
    with pytest.raises(FetchRefused, match="limit"):
        fetcher(max_bytes=cap).fetch(big_files.url("/big.bin"), accept="*/*", sink=sink)
    assert sink.size <= cap  # refused from Content-Length here: nothing past the cap written
