#!/usr/bin/env python
"""Print the markdown results table of the runs under a directory (e.g. scripts/fashion_mnist_grid.sh's)."""

import argparse

from ttt_hf.reporting import results_table

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="?", default="outputs/fmnist", help="directory of training runs")
    print(results_table(parser.parse_args().runs))
