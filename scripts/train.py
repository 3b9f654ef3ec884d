#!/usr/bin/env python
"""Entry point in the transformers-examples style; the logic lives in ttt_hf.training (`ttt-hf train --help`)."""

from ttt_hf.training import main

if __name__ == "__main__":
    main()
