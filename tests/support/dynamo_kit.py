"""A clean dynamo for each compile test: its caches and counters are process-wide, so a graph
compiled by one test would count (or be reused) in the next. Use with
``pytestmark = pytest.mark.usefixtures("fresh_dynamo")``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture
def fresh_dynamo() -> Iterator[None]:
    """dynamo reset and its counters cleared before the test, reset again after."""
    import torch
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()
