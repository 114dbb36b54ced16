#!/usr/bin/env python
"""Insert frozen LLaMA decoder layers into an iLLaMA or ViT model (same as `illama-attach-frozen-llm`)."""

import sys

from modeling_illama.cli.attach_frozen_llm import main

if __name__ == "__main__":
    sys.exit(main())
