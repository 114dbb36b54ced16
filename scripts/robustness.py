#!/usr/bin/env python
"""ImageNet-C / -A / -R / -Sketch and FGSM / PGD robustness of a saved classifier (same as `illama-robustness`)."""

import sys

from modeling_illama.cli.robustness import main

if __name__ == "__main__":
    sys.exit(main())
