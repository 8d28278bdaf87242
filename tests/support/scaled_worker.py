"""``python -m tests.support.scaled_worker FACTOR ARGS...``: the real worker (``python -m app
ARGS...``) with every retry schedule of :mod:`domain.waiting` scaled by ``FACTOR``.

For fault tests that would otherwise wait out real backoff: a 30 s outage scaled by 0.1 has the
same shape (the same count of retries, the same caps reached) in 3 s. Not a user setting: the
schedules are the product's; only tests change their clock speed.
"""

from __future__ import annotations

import sys

from domain import waiting


def scale_schedules(factor: float) -> None:
    """Replace each module-level schedule with its copy scaled by ``factor`` (callers read them
    as ``waiting.NAME`` at each wait)."""
    schedules = {name: value for name, value in vars(waiting).items()
                 if isinstance(value, waiting.Schedule)}
    for name, schedule in schedules.items():
        setattr(waiting, name, schedule.scaled(factor))


if __name__ == "__main__":
    scale_schedules(float(sys.argv[1]))
    from app.cli import main

    sys.exit(main(sys.argv[2:]))
