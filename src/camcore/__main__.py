"""``python -m camcore`` is the ``camcore`` command."""

import sys

from camcore.cli import main

sys.exit(main())
