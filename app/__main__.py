"""``python -m app``: the podworker command line."""

import sys

from app.cli import main

sys.exit(main())
