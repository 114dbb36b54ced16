#!/usr/bin/env python
"""Draw the information-filtering activation maps of a model over an image (same as `illama-activation-maps`)."""

import sys

from modeling_illama.cli.activation_maps import main

if __name__ == "__main__":
    sys.exit(main())
