#!/usr/bin/env python
"""The reliability analyses of a saved classifier (same as `illama-analyze`): calibration, shape bias, attention rank,
int8 quantization, ONNX export."""

import sys

from modeling_illama.cli.analyze import main

if __name__ == "__main__":
    sys.exit(main())
