#!/usr/bin/env python
"""Entry point; the logic lives in ttt_hf.benchmark (`ttt-hf benchmark --help`)."""

from ttt_hf.benchmark import main

if __name__ == "__main__":
    main()
