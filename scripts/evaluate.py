#!/usr/bin/env python
"""Same as `illama-eval`."""
import os
import sys

# This folder holds evaluate.py, which would shadow the `evaluate` library: keep it off the import path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

from modeling_illama.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
