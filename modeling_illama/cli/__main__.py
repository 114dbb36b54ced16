"""`python -m modeling_illama.cli <command> ...` (the same as the `illama` console script)."""

import sys

from .main import main

sys.exit(main())
