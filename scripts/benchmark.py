#!/usr/bin/env python
"""Time and memory of every mixer and model (`ttt-hf benchmark --help`).

The logic lives in ttt_hf; this file only runs it, in the transformers-examples style."""

import sys

from ttt_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", *sys.argv[1:]]))
