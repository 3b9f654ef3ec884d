"""`python -m ttt_hf.zoo ...`, as `ttt-hf zoo ...`."""

from .cli import main

main()
