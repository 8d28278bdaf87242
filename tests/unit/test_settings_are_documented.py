"""The settings code, the README's table and .env.example name the same variables, with the
same defaults, and .env.example loads as it is."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import AliasChoices

from app.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]


def readme_rows() -> dict[str, list[str]]:
    text = (ROOT / "README.md").read_text()
    table = text.split("<!-- settings-table:start -->")[1].split("<!-- settings-table:end -->")[0]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells
    return rows


def env_example() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if m := re.fullmatch(r"([A-Z][A-Z0-9_]+)=(.*)", line):
            found[m.group(1)] = m.group(2)
        elif m := re.fullmatch(r"# ([A-Z][A-Z0-9_]+)=", line):
            found[m.group(1)] = None
    return found


def shown(default: object) -> str | None:
    if default is None:
        return None
    value = getattr(default, "value", default)
    return str(value).lower() if isinstance(value, bool) else str(value)


def test_the_three_name_the_same_variables() -> None:
    names = set(Settings.model_fields)
    assert set(readme_rows()) == names
    assert set(env_example()) == names


def test_the_three_give_the_same_defaults() -> None:
    rows = readme_rows()
    example = env_example()
    for name, field in Settings.model_fields.items():
        expected = shown(field.default)
        assert example[name] == expected, name
        assert rows[name][2] == ("unset" if expected is None else f"`{expected}`"), name


def test_the_readme_names_every_alternative_name() -> None:
    rows = readme_rows()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        others = alias.choices[1:] if isinstance(alias, AliasChoices) else []
        assert rows[name][1] == " / ".join(f"`{o}`" for o in others), name


def test_env_example_loads_as_the_defaults() -> None:
    from_file = load_settings(env_file=ROOT / ".env.example")
    assert from_file.model_dump() == Settings(_env_file=None).model_dump()
