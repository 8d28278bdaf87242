"""``python -m app``: the podworker command line."""

import sys

try:
    from app.cli import main
except ModuleNotFoundError as missing:  # a Python without podworker's dependencies
    from app.setup_hint import missing_dependency

    print(missing_dependency(missing), file=sys.stderr)
    sys.exit(2)

sys.exit(main())
