"""A model's output made JSON: what cannot be sent as it is is refused, never silently changed."""

from __future__ import annotations

from typing import Any

import pytest

from domain.errors import ModelError
from domain.outputs import ensure_json


@pytest.mark.parametrize(
    ("output", "collides"),
    [
        ({1: "a", "1": "b"}, "'1'"),
        ({True: "a", "true": "b"}, "'true'"),
        ({None: "a", "null": "b"}, "'null'"),
        ({1.5: "a", "1.5": "b"}, "'1.5'"),
        ({"outer": [{"x": 0, 2: "two", "2": "deux"}]}, "'2'"),
    ],
)
def test_keys_that_collide_once_made_strings_are_refused_naming_the_key(
    output: Any, collides: str
) -> None:
    with pytest.raises(ModelError, match=f"keys collide as JSON strings: {collides}"):
        ensure_json(output)


@pytest.mark.parametrize(
    "output",
    [{1: "a", 2: "b"}, {"a": 1, "b": {"c": [1, 2]}}, {True: 1, 2: 2}, [{1: "x"}, {"1": "y"}]],
)
def test_keys_that_stay_distinct_as_strings_are_accepted(output: Any) -> None:
    ensure_json(output)


@pytest.mark.parametrize("output", [float("nan"), {"x": float("inf")}, {(1, 2): "tuple key"},
                                    {"x": object()}])
def test_what_json_cannot_carry_is_refused(output: Any) -> None:
    with pytest.raises(ModelError, match="cannot be sent as JSON"):
        ensure_json(output)
