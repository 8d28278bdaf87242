"""``python -m streamqueue COMMAND``: the queue's command line (see :mod:`streamqueue.cli`)."""

import sys

from streamqueue.cli import main

sys.exit(main())
