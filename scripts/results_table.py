#!/usr/bin/env python
"""Print the markdown results table of the runs under a directory (e.g. scripts/fashion_mnist_grid.sh's)."""

import sys

from ttt_hf.reporting import results_table

if __name__ == "__main__":
    print(results_table(sys.argv[1] if len(sys.argv) > 1 else "outputs/fmnist"))
