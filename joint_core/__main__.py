"""``python -m joint_core`` == the ``joint`` command."""

import sys

from .cli import main

sys.exit(main())
