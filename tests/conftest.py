"""Shared pytest set-up. Fixture modules live in tests/support/ and are registered here."""

pytest_plugins: list[str] = [
    # each fixture module in tests/support/ is added here, one line each
]
