"""``Artifact.rendered``: bytes made on first read, once, on the reading thread; plain artifacts
unchanged."""

from __future__ import annotations

import threading

import pytest

from domain.job import Artifact


class CountingRender:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.threads: list[str] = []
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> bytes:
        self.threads.append(threading.current_thread().name)
        self.started.set()
        assert self.release.wait(10)
        return self.data


def test_a_rendered_artifact_makes_its_bytes_on_first_read_on_the_reading_thread() -> None:
    render = CountingRender(b"\x89PNG...")
    render.release.set()
    artifact = Artifact.rendered(render)

    assert render.threads == []
    assert "not rendered yet" in repr(artifact)
    reader = threading.Thread(target=lambda: artifact.data, name="store")
    reader.start()
    reader.join(10)

    assert render.threads == ["store"]
    assert artifact.data == b"\x89PNG..."
    assert render.threads == ["store"]  # read again: not rendered again
    assert repr(artifact) == "Artifact(image/png, 7 bytes)"


def test_readers_racing_for_the_first_read_render_once_and_see_the_same_bytes() -> None:
    render = CountingRender(b"pixels")
    artifact = Artifact.rendered(render, "image/webp", "webp")
    seen: list[bytes] = []
    readers = [threading.Thread(target=lambda: seen.append(artifact.data)) for _ in range(4)]
    for reader in readers:
        reader.start()
    assert render.started.wait(10)
    render.release.set()
    for reader in readers:
        reader.join(10)

    assert seen == [b"pixels"] * 4
    assert len(render.threads) == 1
    assert (artifact.content_type, artifact.extension) == ("image/webp", "webp")


def test_a_render_that_fails_raises_to_the_reader_and_is_tried_again_on_the_next_read() -> None:
    attempts: list[int] = []

    def flaky() -> bytes:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("disk full")
        return b"ok"

    artifact = Artifact.rendered(flaky)

    with pytest.raises(OSError, match="disk full"):
        _ = artifact.data
    assert artifact.data == b"ok"
    assert len(attempts) == 2


def test_plain_artifacts_hold_their_bytes_and_compare_by_value() -> None:
    plain = Artifact(b"png", "image/png", "png")
    rendered = Artifact.rendered(lambda: b"png")

    assert plain.data == b"png"
    assert plain == rendered == Artifact(data=b"png")
    assert hash(plain) == hash(rendered)
    assert plain != Artifact(b"png", "image/gif", "gif")
    assert repr(plain) == "Artifact(image/png, 3 bytes)"
