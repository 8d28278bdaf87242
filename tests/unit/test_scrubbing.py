"""No piece of six or more characters of any secret survives a scrubbed text."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from domain.scrubbing import REDACTED, Scrubber

KEY = "rpa_Q7X2M9KD4LZ0P8W3N6B1V5C"


def test_a_whole_key_a_masked_key_and_a_middle_piece_are_all_scrubbed() -> None:
    scrub = Scrubber([KEY])
    text = f"bad key {KEY}; masked {KEY[:6]}...{KEY[-6:]}; piece x{KEY[9:15]}y"
    cleaned = scrub(text)
    for i in range(len(KEY) - 5):
        assert KEY[i : i + 6] not in cleaned
    assert cleaned.count(REDACTED) == 4 and cleaned.startswith("bad key ")


def test_ordinary_text_and_short_fragments_are_left_alone() -> None:
    scrub = Scrubber([KEY, "abc"])
    assert scrub("result delivered job_id=j-1 ok") == "result delivered job_id=j-1 ok"
    assert scrub(f"five {KEY[:5]} chars") == f"five {KEY[:5]} chars"


@given(prefix=st.text(max_size=30), suffix=st.text(max_size=30),
       start=st.integers(0, len(KEY) - 6), length=st.integers(6, len(KEY)))
def test_any_piece_anywhere_is_scrubbed(prefix: str, suffix: str, start: int, length: int) -> None:
    piece = KEY[start : start + length]
    cleaned = Scrubber([KEY, "s3-secret-Zy81"])(prefix + piece + suffix)
    for secret in (KEY, "s3-secret-Zy81"):
        for i in range(len(secret) - 5):
            assert secret[i : i + 6] not in cleaned


def test_the_workers_scrubber_knows_the_secrets_libraries_read_from_the_environment() -> None:
    from app.bootstrap import redactor_for
    from app.settings import Settings

    environ = {"HF_TOKEN": "hf_QbXf8mYtNw2LdA7c", "AWS_SESSION_TOKEN": "IQoJb3JpZ2luX2VjEXAMPLE",
               "HOME": "/home/worker"}
    scrub = redactor_for(Settings(_env_file=None), environ)

    line = ("GET https://huggingface.co/api/models (token hf_QbXf8mYtNw2LdA7c) from /home/worker"
            " with IQoJb3JpZ2luX2VjEXAMPLE")
    out = scrub(line)
    assert "QbXf8m" not in out and "IQoJb3" not in out
    assert "/home/worker" in out  # not a secret: left alone
    assert redactor_for(Settings(_env_file=None), {})("hf_QbXf8mYtNw2LdA7c") == (
        "hf_QbXf8mYtNw2LdA7c")  # scrubbed only when set
