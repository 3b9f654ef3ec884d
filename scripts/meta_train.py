#!/usr/bin/env python
"""Meta-train a general-purpose in-context learner (GPICL) with Trainer (`ttt-hf meta-train --help`).

The logic lives in ttt_hf; this file only runs it, in the transformers-examples style."""

import sys

from ttt_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["meta-train", *sys.argv[1:]]))
