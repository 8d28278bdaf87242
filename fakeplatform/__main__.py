"""``python -m fakeplatform``: the same as ``python -m app fake-api``."""

from fakeplatform.cli import main

raise SystemExit(main())
