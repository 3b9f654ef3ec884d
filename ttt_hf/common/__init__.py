"""Shared by every family: the bundled datasets, run provenance, checkpoints, plotting."""
