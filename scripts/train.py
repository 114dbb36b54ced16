#!/usr/bin/env python
"""Train or fine-tune an iLLaMA classifier (same as `illama-train`); usable with `accelerate launch scripts/train.py ...`."""

import sys

from modeling_illama.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
