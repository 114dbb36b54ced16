#!/usr/bin/env python
"""Evaluate a saved model on a dataset split (same as `illama-eval`): top-1, top-5, ECE, loss, images/s."""

import sys

from modeling_illama.cli.eval import main

if __name__ == "__main__":
    sys.exit(main())
