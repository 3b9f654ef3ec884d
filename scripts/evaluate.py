#!/usr/bin/env python
"""Entry point in the transformers-examples style; the logic lives in ttt_hf.evaluation (`ttt-hf evaluate --help`)."""

from ttt_hf.evaluation import main

if __name__ == "__main__":
    main()
