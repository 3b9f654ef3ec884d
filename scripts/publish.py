#!/usr/bin/env python
"""Publish a training run to the Hugging Face Hub (`ttt-hf publish --help`).

The logic lives in ttt_hf; this file only runs it, in the transformers-examples style."""

import sys

from ttt_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["publish", *sys.argv[1:]]))
