#!/usr/bin/env python
"""Convert the authors' iLLaMA checkpoints into Hugging Face folders (same as `illama-convert`).

python scripts/convert_official_checkpoint.py --checkpoint illama-tiny-in1k-75.0.pth --output illama-tiny-224-in1k --verify
python scripts/convert_official_checkpoint.py --all downloads/ converted/
"""

import sys

from modeling_illama.cli.convert import main

if __name__ == "__main__":
    sys.exit(main())
