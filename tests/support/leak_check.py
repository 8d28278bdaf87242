"""Known secret values for the security tests, and the check that finds any piece of them.

A secret counts as leaked when any 6 consecutive characters of it appear in an output: a
redactor that replaces whole secrets misses a key cut in two by an excerpt, and a helper that
prints a secret's first and last characters (as the seed pod worker's did) leaks part of it.
"""

from __future__ import annotations

JOB_KEY = "jQ7f3Lx9Rw2KpZt4Vb8N"
POD_KEY = "rpVb8Nc2Hs5Td1Mg6YwE3kUq"
S3_KEY_ID = "AKIAZ7QW3ER9TY5UI2OP"
S3_SECRET = "wJ8sK2dL5fG7hJ3kL9zX4cV6bN1mQ0pR8tY2uI5o"
SECRETS = {"job API key": JOB_KEY, "RunPod API key": POD_KEY, "S3 access key id": S3_KEY_ID,
           "S3 secret": S3_SECRET}
PIECE = 6


def pieces(secret: str) -> set[str]:
    """Every ``PIECE``-character run of ``secret``."""
    return {secret[i : i + PIECE] for i in range(len(secret) - PIECE + 1)}


def leaks(text: str) -> list[str]:
    """``name: piece`` for every piece of a secret found in ``text``."""
    return [f"{name}: {piece!r}" for name, secret in SECRETS.items()
            for piece in sorted(pieces(secret)) if piece in text]


def assert_no_secret(where: str, text: str) -> None:
    found = leaks(text)
    assert not found, f"secret pieces in {where}: {found}"


def straddling(secret: str, limit: int = 200, prefix: str = '{"error":"') -> dict[str, str]:
    """An error body whose text holds ``secret`` where a ``limit``-character excerpt of it (as
    error messages show) cuts the secret in two."""
    return {"error": "x" * (limit - len(prefix) - len(secret) // 2) + secret + " (echoed)"}
