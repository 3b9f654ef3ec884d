"""The names of the files a run folder holds, written once: training writes them, the zoo, the cards and publishing
read them."""

RESULTS_FILE = "all_results.json"  # every measured number of a run (Trainer's save_metrics("all"))
TRAINING_ARGS_FILE = "training_args.json"  # the run's arguments as JSON (no pickle): model, data, training, code
CARD_FILE = "README.md"  # the model card
SAMPLE_IMAGE = "sample.png"  # a test image shipped with a classifier, its prediction recorded in RESULTS_FILE

__all__ = ["CARD_FILE", "RESULTS_FILE", "SAMPLE_IMAGE", "TRAINING_ARGS_FILE"]
