"""The model zoo: every model ttt-hf trains and publishes, written once (`ZOO`), and `ttt-hf zoo ...`.

An entry is a `ttt-hf train` command (a TTT-ViT classifier: preset or "auto", config overrides, dataset, recipe,
extra flags, seed) or a `ttt-hf meta-train` command (a GPICL in-context learner: backbone, config overrides,
dataset, flags, seed); its trained model lives in `model_cards/<name>/` as a ready-to-push Hub folder without the
model code, which `ttt_hf.hub.publish` adds from the installed package at publish time. The mixers are
`MIXER_PRESETS`'s.

    ttt-hf zoo list                               the entries, their commands, and which are trained
    ttt-hf zoo train NAME [--output_dir DIR] [flags]   run the entry's `ttt-hf train`/`meta-train` (+ flags)
    ttt-hf zoo store NAME RUN_DIR                 keep a finished run as model_cards/NAME/ (with its test-slice score)
    ttt-hf zoo publish --org ORG [--tag T] [--collection TITLE] [--space S] [--dry-run DIR] [NAME ...]
                                                  publish to ORG/NAME (and the demo's Space on them to ORG/S)
    ttt-hf zoo space DIR --org ORG [--models NAME ...]   the demo as a Hub Space folder (models: ORG/NAME)
    ttt-hf zoo train --setting S|--tier T [--parallel N]   every entry of a setting or tier, N processes at once
    ttt-hf zoo pack OUT [--root DIR]              finished runs into at most 8 archives of 16 MiB (a device call)
    ttt-hf zoo unpack ARCHIVE... [--root DIR]     the runs again, ready for `zoo store`
    ttt-hf zoo table [--learners]                 the README's results tables (classifiers, or in-context learners)
    ttt-hf zoo cards                              rewrite the stored cards from their files (after a template change)
    ttt-hf zoo mixers                             the mixer presets: `suffix field=value,...` (for shell scripts)
"""

from .cli import argument_parser, main
from .folders import (
    COLLECTION_DESCRIPTION,
    accuracy,
    check_run_is_the_entry,
    fixed_test_slice,
    in_context_slice,
    measure_speed,
    predictions,
    publish_zoo,
    refresh_cards,
    sample_of,
    store,
    usage_repo_id,
)
from .registry import (
    DEFAULT_SEED,
    MAX_FOLDER_BYTES,
    MODEL_CARDS,
    RESULTS_FILE,
    SETTINGS,
    SLICE_SIZE,
    ZOO,
    ZooEntry,
    ZooSetting,
    folder,
    get_entry,
    is_trained,
)
from .runs import MAX_ARCHIVE_BYTES, MAX_ARCHIVES, pack, train_many, unpack
from .tables import compare, listing, mixers, results_table, setting_summary

__all__ = [
    "COLLECTION_DESCRIPTION",
    "DEFAULT_SEED",
    "MAX_ARCHIVES",
    "MAX_ARCHIVE_BYTES",
    "MAX_FOLDER_BYTES",
    "MODEL_CARDS",
    "RESULTS_FILE",
    "SETTINGS",
    "SLICE_SIZE",
    "ZOO",
    "ZooEntry",
    "ZooSetting",
    "accuracy",
    "argument_parser",
    "check_run_is_the_entry",
    "compare",
    "fixed_test_slice",
    "folder",
    "get_entry",
    "in_context_slice",
    "is_trained",
    "listing",
    "main",
    "measure_speed",
    "mixers",
    "pack",
    "predictions",
    "publish_zoo",
    "refresh_cards",
    "results_table",
    "sample_of",
    "setting_summary",
    "store",
    "train_many",
    "unpack",
    "usage_repo_id",
]
