#!/usr/bin/env python
"""Convert the authors' iLLaMA checkpoints into Hugging Face folders (same as `illama-convert`)."""

import sys

from modeling_illama.cli.convert import main

if __name__ == "__main__":
    sys.exit(main())
