"""``python -m verydeep`` is the ``verydeep`` command."""

import sys

from .cli import main

sys.exit(main())
