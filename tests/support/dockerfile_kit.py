"""The Dockerfile and requirements.lock, read without a Docker engine (tests/unit/test_dockerfile*).

A small Dockerfile parser (instructions with continuation lines joined, grouped in stages), its
fixtures (registered in tests/conftest.py) and a reader for requirements.lock.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
LOCK = REPO / "requirements.lock"
PYPROJECT = REPO / "pyproject.toml"


@dataclass(frozen=True)
class Instruction:
    line: int  # where it starts (1-based)
    keyword: str  # upper case: RUN, COPY, ...
    flags: tuple[str, ...]  # leading --name=value options
    args: str  # the rest, continuation lines joined with spaces
    stage: int  # index of its FROM (-1: before the first FROM, global ARGs)


@dataclass(frozen=True)
class Stage:
    index: int
    name: str
    parent: str  # the image or stage it is built FROM
    instructions: list[Instruction]

    def of(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.of("ENV"):
            for word in shlex.split(instruction.args):
                key, _, value = word.partition("=")
                values[key] = value
        return values

    def args(self) -> set[str]:
        return {i.args.split("=", 1)[0].strip() for i in self.of("ARG")}


def parse(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comment lines dropped."""
    instructions: list[Instruction] = []
    stage = -1
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments and blank lines, also inside a continued instruction
        if not pending:
            start = number
        pending.append(stripped.removesuffix("\\").strip())
        if stripped.endswith("\\"):
            continue
        keyword, _, rest = " ".join(pending).partition(" ")
        pending = []
        flags: list[str] = []
        rest = rest.strip()
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            flags.append(flag)
            rest = rest.strip()
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(start, keyword, tuple(flags), rest, stage))
    return instructions


def stages(instructions: list[Instruction]) -> list[Stage]:
    result = []
    for instruction in (i for i in instructions if i.keyword == "FROM"):
        words = instruction.args.split()
        name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(instruction.stage)
        body = [i for i in instructions if i.stage == instruction.stage and i.keyword != "FROM"]
        result.append(Stage(instruction.stage, name, words[0], body))
    return result


def flag(instruction: Instruction, name: str) -> str | None:
    for item in instruction.flags:
        key, _, value = item.partition("=")
        if key == f"--{name}":
            return value
    return None


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def all_stages(instructions: list[Instruction]) -> list[Stage]:
    return stages(instructions)


@pytest.fixture(scope="module")
def final(all_stages: list[Stage]) -> Stage:
    return all_stages[-1]


@pytest.fixture(scope="module")
def bake(all_stages: list[Stage]) -> tuple[Stage, Instruction]:
    """The stage and the RUN instruction that bake the weights."""
    found = [
        (stage, run)
        for stage in all_stages
        for run in stage.of("RUN")
        if re.search(r"\bpython -m app bake-weights\b", run.args)
    ]
    assert len(found) == 1, "exactly one RUN must call `python -m app bake-weights`"
    return found[0]


def option(command: str, name: str) -> str:
    words = shlex.split(command, posix=False)
    assert name in words, f"{name} missing from: {command}"
    return words[words.index(name) + 1].strip("\"'")


def ancestry(all_stages: list[Stage], stage: Stage) -> list[Stage]:
    """``stage`` and the stages it is built FROM, the oldest first."""
    by_name = {s.name: s for s in all_stages}
    chain = [stage]
    while chain[0].parent in by_name:
        chain.insert(0, by_name[chain[0].parent])
    return chain


@dataclass(frozen=True)
class Pin:
    version: str
    hashes: tuple[str, ...]
    via: tuple[str, ...]  # what requires it, as the lock's comments say


def lock_entries() -> dict[str, Pin]:
    """requirements.lock as {canonical name: Pin}."""
    entries: dict[str, Pin] = {}
    name = ""
    for raw in LOCK.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if match := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", raw):
            name = canonicalize_name(match.group(1))
            entries[name] = Pin(match.group(2), (), ())
        elif name and line.startswith("--hash="):
            pin = entries[name]
            entries[name] = Pin(pin.version, (*pin.hashes, line.split()[0]), pin.via)
        elif name and line.startswith("#"):
            text = line.lstrip("#").strip().removeprefix("via").strip()
            if text:
                pin = entries[name]
                entries[name] = Pin(pin.version, pin.hashes, (*pin.via, text))
    return entries


def runtime_requirements() -> list[Requirement]:
    """pyproject.toml's runtime set (core, s3, sd, redis) as the image gets it: without
    torch."""
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    texts = [*project["dependencies"], *extras["s3"], *extras["sd"], *extras["redis"]]
    environment = {"python_version": "3.11", "sys_platform": "linux",
                   "platform_machine": "x86_64"}
    requirements = [Requirement(text) for text in texts]
    return [
        r for r in requirements
        if canonicalize_name(r.name) != "torch"
        and (r.marker is None or r.marker.evaluate(environment))
    ]
