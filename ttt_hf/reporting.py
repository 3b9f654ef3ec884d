"""Tables of finished runs: mean and spread over seeds of every `all_results.json` under a directory."""

import json
import statistics
from collections import defaultdict
from pathlib import Path

from .modeling.configuration_ttt_vit import MIXER_PRESETS

MIXER_NAMES = {suffix: preset.paper_name for suffix, preset in MIXER_PRESETS.items()}  # run name -> paper name


def collect(root) -> dict[tuple[str, str], list[dict]]:
    """{(setting, run name without -seedN): [all_results of each seed]} for runs laid out as
    root/setting/name-seedN."""
    runs = defaultdict(list)
    for path in sorted(Path(root).glob("*/*/all_results.json")):
        setting, run = path.parent.parent.name, path.parent.name
        runs[(setting, run.rsplit("-seed", 1)[0])].append(json.loads(path.read_text()))
    return runs


def _mean_spread(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    values = [v * scale for v in values]
    spread = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.{digits}f}{spread}"


def results_table(root) -> str:
    """A markdown table: setting, mixer, seeds, test top-1 (%), validation top-1 (%), seconds per epoch."""
    lines = ["| setting | mixer | seeds | test top-1 % | val top-1 % | s / epoch |", "|---|---|---|---|---|---|"]
    for (setting, name), results in sorted(collect(root).items(), key=lambda item: (item[0][0], -statistics.mean(
            r["test_accuracy"] for r in item[1]))):  # fmt: skip
        lines.append(
            f"| {setting} | {MIXER_NAMES.get(name, name)} | {len(results)} "
            f"| {_mean_spread([r['test_accuracy'] for r in results], 100)} "
            f"| {_mean_spread([r['eval_accuracy'] for r in results], 100)} "
            f"| {_mean_spread([r['epoch_seconds'] for r in results], digits=0)} |"
        )
    return "\n".join(lines)
