"""``python -m tfdropblock``: the ``tfdropblock`` command, for when the script is not on PATH."""

import sys

from tfdropblock.cli import main

sys.exit(main())
