#!/usr/bin/env python
"""Initialise an iLLaMA from a Hugging Face LLaMA checkpoint by weight selection (same as `illama-select-weights`)."""

import sys

from modeling_illama.cli.select_weights import main

if __name__ == "__main__":
    sys.exit(main())
