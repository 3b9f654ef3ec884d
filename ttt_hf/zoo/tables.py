"""The zoo's tables: the listing, the README's results tables, and the mean-and-spread summary of each setting."""

import json
from dataclasses import dataclass

from ..common.run_files import RESULTS_FILE
from ..modeling.configuration_ttt_vit import MIXER_PRESETS
from .registry import SETTINGS, ZOO, folder, is_trained


def listing(model_cards=None) -> str:
    lines = []
    for name, entry in ZOO.items():
        if is_trained(name, model_cards):
            results = json.loads((folder(name, model_cards) / RESULTS_FILE).read_text())
            score = "in-context, after the last example" if entry.in_context else "test top-1"
            status = f"trained: model_cards/{name}/, {score} {100 * results['test_slice_accuracy']:.2f} % (slice)"
        else:
            status = f"not trained yet (planned: {entry.plan}; `ttt-hf zoo train {name}`)"
        lines += [f"{name}  [{entry.description}, {entry.dataset}, seed {entry.seed}]",
                  f"    {status}", f"    {entry.command()}"]  # fmt: skip
    return "\n".join(lines)


def _percent(value) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def results_table(model_cards=None, learners: bool = False) -> str:
    """A markdown table of every trained classifier (or, with `learners`, in-context learner), from its
    all_results.json and config.json."""
    if learners:
        from ..gpicl.report import load_runs, table

        names = [name for name, entry in ZOO.items() if entry.in_context and is_trained(name, model_cards)]
        runs = load_runs([folder(name, model_cards) for name in names])
        return table(runs, names=names) + learner_seeds(runs, [ZOO[name] for name in names])
    lines = [
        "| model | setting | mixer (paper's name) | params | tokens | test top-1 % | test top-5 % | test slice % "
        "| inference img/s | epochs | training time | device | paper: ImageNet top-1 of this mixer (rank) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    machines = set()
    tiers = {name: f"{setting.tier}: {setting.description}" for name, setting in SETTINGS.items()}
    for name, entry in ZOO.items():
        if not is_trained(name, model_cards) or entry.in_context:
            continue
        results = json.loads((folder(name, model_cards) / RESULTS_FILE).read_text())
        config = json.loads((folder(name, model_cards) / "config.json").read_text())
        grid = config["image_size"] // config["patch_size"]
        top5 = next((v for k, v in results.items() if k.startswith("test_top") and k.endswith("_accuracy")), None)
        minutes = results.get("train_runtime")
        speed = results.get("inference_images_per_s")
        machines.add(results.get("inference_machine"))
        lines.append(
            f"| `{name}` | {tiers.get(entry.setting, entry.setting)} | {MIXER_PRESETS[entry.mixer].paper_name} "
            f"| {results['num_parameters'] / 1e6:.2f} M | {grid * grid} | {_percent(results['test_accuracy'])} "
            f"| {_percent(top5)} | {_percent(results.get('test_slice_accuracy'))} "
            f"| {'—' if speed is None else f'{speed:,.0f}'} "
            f"| {results.get('epoch', '—'):g} | {'—' if minutes is None else f'{minutes / 60:.1f} min'} "
            f"| {results.get('device', 'not recorded')} | {_paper_rank(config, entry.mixer)} |"
        )
    machines.discard(None)
    if machines:
        lines += [
            "",
            f"Inference images/s: `ttt-hf zoo speed` (batch 256, eager float32) on {', '.join(sorted(machines))}.",
        ]
    summary = setting_summary(model_cards)
    return "\n".join(lines + (["", summary] if summary else []))


@dataclass(frozen=True)
class Trained:
    """What the summary needs of one trained seed."""

    test_accuracy: float
    epochs: float
    cut_short: bool  # stopped by its time budget before its planned epochs


def _trained_seeds(model_cards=None) -> dict[tuple[str, str], list[Trained]]:
    """(setting, mixer) -> every trained seed, for the settings of `SETTINGS`."""
    found: dict[tuple[str, str], list[Trained]] = {}
    for name, entry in ZOO.items():
        if entry.setting in SETTINGS and is_trained(name, model_cards):
            results = json.loads((folder(name, model_cards) / RESULTS_FILE).read_text())
            seed = Trained(
                results["test_accuracy"], results.get("epoch", 0), bool(results.get("stopped_by_time_budget"))
            )
            found.setdefault((entry.setting, entry.mixer), []).append(seed)
    return found


def learner_seeds(runs: list[dict], entries: list) -> str:
    """The learners over their seeds: per backbone, the mean and half the range of the accuracy after the last
    example on each set of unseen tasks ('' while no backbone has more than one seed stored)."""
    by_backbone = {}
    for run, entry in zip(runs, entries):
        by_backbone.setdefault(entry.mixer, []).append((entry.seed, run))
    if all(len(seeds) < 2 for seeds in by_backbone.values()):
        return ""
    sets = sorted({key[len("final_") : -len("_accuracy_last")] for run in runs for key in run
                   if key.startswith("final_unseen-") and key.endswith("_accuracy_last")})  # fmt: skip
    intro = "Over seeds (mean ± half the range of the seeds; each seed's own 95 % interval is in the table above):"
    lines = ["", "", intro, "", "| backbone | seeds | " + " | ".join(sets) + " |", "|---|---|" + "---|" * len(sets)]
    for backbone, seeds in by_backbone.items():
        cells = []
        for name in sets:
            mean, spread = _mean_spread([run[f"final_{name}_accuracy_last"] for _, run in seeds])
            cells.append(f"{mean:.1f} ± {spread:.1f} %")
        lines.append(f"| {backbone} | {', '.join(str(seed) for seed, _ in seeds)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean_spread(values: list[float]) -> tuple[float, float]:
    """Mean and half the range (0 for one seed), in percent."""
    return 100 * sum(values) / len(values), 50 * (max(values) - min(values))


def compare(setting: str, first: str, second: str, model_cards=None) -> str | None:
    """One sentence: whether mixer `first` beats `second` in `setting` by more than the seeds' spread (a verdict
    only with two seeds or more each, every run at its planned epochs), or None when either is untrained."""
    trained = _trained_seeds(model_cards)
    if (setting, first) not in trained or (setting, second) not in trained:
        return None
    runs = trained[setting, first], trained[setting, second]
    (a, da), (b, db) = (_mean_spread([seed.test_accuracy for seed in seeds]) for seeds in runs)
    names = MIXER_PRESETS[first].paper_name, MIXER_PRESETS[second].paper_name
    facts = f"{names[0]} {a:.2f} ± {da:.2f} % against {names[1]} {b:.2f} ± {db:.2f} % ({len(runs[0])} and " + (
        f"{len(runs[1])} seed(s))"
    )
    if any(seed.cut_short for seeds in runs for seed in seeds):
        verdict = "a run was cut short by its time budget, so no verdict"
    elif min(len(seeds) for seeds in runs) < 2:
        verdict = "one seed of one of them: no spread to compare against, so no verdict"
    elif abs(a - b) > da + db:
        verdict = f"{names[0] if a > b else names[1]} is ahead by more than the seeds' spread"
    else:
        verdict = "a tie within the seeds' spread"
    return f"{SETTINGS[setting].description}: {facts}: {verdict}."


def setting_summary(model_cards=None) -> str:
    """Markdown: per tier and setting, each mixer's test top-1 as mean ± half the range over its seeds, and the
    paper's key comparison (MTTT-MLP against linear attention) in words."""
    trained = _trained_seeds(model_cards)
    if not trained:
        return ""
    lines = ["| tier | setting | mixer (paper's name) | seeds | epochs | test top-1 %, mean ± half-range |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for setting in SETTINGS.values():
        for mixer in setting.mixers:
            if (setting.name, mixer) in trained:
                seeds = trained[setting.name, mixer]
                mean, spread = _mean_spread([seed.test_accuracy for seed in seeds])
                epochs = ", ".join(f"{seed.epochs:g}" + (" (cut short)" if seed.cut_short else "") for seed in seeds)
                lines.append(f"| {setting.tier} | {setting.description} | {MIXER_PRESETS[mixer].paper_name} "
                             f"| {len(seeds)} | {epochs} | {mean:.2f} ± {spread:.2f} |")  # fmt: skip
    sentences = [compare(name, "mlp", "linattn", model_cards) for name in SETTINGS]
    sentences = [sentence for sentence in sentences if sentence]
    return "\n".join(lines + (["", *sentences] if sentences else []))


def _paper_rank(config: dict, mixer: str) -> str:
    """The paper's ImageNet top-1 of this model's mixer in its setting (patches or pixels) and its rank there."""
    from ..hub.vit_card import PAPER_IMAGENET

    _, rows = PAPER_IMAGENET["pixels" if config.get("patch_size") == 1 else "patches"]
    ranked = [name for name, value in sorted(rows, key=lambda row: -(row[1] or 0)) if value is not None]
    value = dict(rows).get(MIXER_PRESETS[mixer].paper_name)
    if value is None:
        return "—"
    return f"{value} % ({ranked.index(MIXER_PRESETS[mixer].paper_name) + 1} of {len(ranked)})"


def mixers() -> str:
    """`suffix field=value,...` per mixer preset: the --config_overrides of each, for shell scripts."""
    return "\n".join(
        f"{suffix} {','.join(f'{key}={value}' for key, value in preset.fields.items())}"
        for suffix, preset in MIXER_PRESETS.items()
    )
