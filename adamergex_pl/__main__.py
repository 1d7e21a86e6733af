"""``python -m adamergex_pl`` is the ``adamergex`` command."""

import sys

from adamergex_pl.cli import main

sys.exit(main())
