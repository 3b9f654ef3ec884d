#!/usr/bin/env python
"""Evaluate a checkpoint on a dataset split (`ttt-hf evaluate --help`).

The logic lives in ttt_hf; this file only runs it, in the transformers-examples style."""

import sys

from ttt_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
