#!/usr/bin/env python
"""Same as `illama-eval`."""
import sys

from modeling_illama.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
