#!/usr/bin/env python
"""Train or fine-tune a TTT-ViT with Trainer (`ttt-hf train --help`).

The logic lives in ttt_hf; this file only runs it, in the transformers-examples style."""

import sys

from ttt_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
