#!/usr/bin/env python
"""Export a Hugging Face iLLaMA folder back to the authors' state-dict layout (same as `illama-export-official`)."""

import sys

from modeling_illama.cli.export_official import main

if __name__ == "__main__":
    sys.exit(main())
