"""The model zoo: one registry of mixers (everything else derives from it), the zoo table's commands, a test per
trained model in model_cards/ (its weights reproduce its card and all_results.json), and `ttt-hf zoo publish`."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoModelForImageClassification, pipeline

from ttt_hf import MIXER_PRESETS, PRESETS, TTTViTConfig, cli, zoo
from ttt_hf.bench import benchmark
from ttt_hf.common import arguments
from ttt_hf.common.provenance import code_provenance, modeling_folder
from ttt_hf.common.run_files import CARD_FILE
from ttt_hf.gpicl import meta_training
from ttt_hf.gpicl.meta_training import MetaArguments, reproduce_final_accuracy, unseen_sampler
from ttt_hf.hub.gpicl_card import gpicl_eval_results
from ttt_hf.hub.publish import MANIFEST_FILE, repo_files
from ttt_hf.hub.vit_card import PAPER_IMAGENET, paper_mixer_name
from ttt_hf.modeling import configuration_ttt_vit, ttt_layers
from ttt_hf.modeling.configuration_ttt_vit import MIXER_TYPES, mixer_preset_of
from ttt_hf.vision import training

from .conftest import HIDE_TTT_HF
from .test_training import COMMON, NO_AUGMENTATION

ROOT = Path(__file__).resolve().parents[1]
TRAINED = [name for name in zoo.ZOO if zoo.is_trained(name)]
PICKLES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


# ------------------------------------------------------------------------------------- one registry


def test_mixer_presets_are_the_one_source():
    mixer_fields = {suffix: preset.fields for suffix, preset in MIXER_PRESETS.items()}
    # presets: every size x tokeniser x registry mixer, and each preset's mixer is its suffix's
    for name, fields in PRESETS.items():
        suffix = mixer_preset_of(fields)
        assert suffix is not None and name.endswith(f"-{suffix}"), name
        assert {key: fields[key] for key in mixer_fields[suffix]} == mixer_fields[suffix]
    assert len(PRESETS) == len(configuration_ttt_vit._SIZES) * len(configuration_ttt_vit._TOKENIZERS) * len(
        MIXER_PRESETS
    )
    # the config's valid mixers, the layer classes and the registry name the same mixers; one `MIXERS` no more
    assert set(MIXER_TYPES) == set(ttt_layers.MIXER_CLASSES) == {f["mixer"] for f in mixer_fields.values()}
    assert not hasattr(ttt_layers, "MIXERS") and not hasattr(configuration_ttt_vit, "MIXERS")
    # names: the results tables', the cards' and the paper table's are the registry's
    for preset in MIXER_PRESETS.values():
        assert paper_mixer_name(preset.fields) == preset.paper_name
        assert paper_mixer_name(TTTViTConfig(**preset.fields).to_dict()) == preset.paper_name
    paper_rows = {name for _, rows in PAPER_IMAGENET.values() for name, _ in rows}
    assert paper_rows == {preset.paper_name for preset in MIXER_PRESETS.values()}
    # the benchmark's model rows and the tests' mixer list
    assert set(benchmark.BASE_MIXER_SUFFIXES) == {"mlp", "linear", "linattn", "attn"}
    assert {f"ttt-vit-small16-{s}" for s in benchmark.BASE_MIXER_SUFFIXES} <= {
        row[0] for row in benchmark.model_suite(quick=False)
    }
    from .test_modeling import ALL_MIXERS, MIXER_IDS

    assert MIXER_IDS == list(MIXER_PRESETS) and ALL_MIXERS == list(mixer_fields.values())


def test_zoo_mixers_prints_the_presets_for_shell_scripts(capsys):
    zoo.main(["mixers"])
    lines = capsys.readouterr().out.splitlines()
    parsed = {suffix: arguments.parse_overrides(fields) for suffix, fields in (line.split(" ") for line in lines)}
    assert parsed == {suffix: preset.fields for suffix, preset in MIXER_PRESETS.items()}


def test_zoo_entries_are_train_commands_of_the_intended_models():
    assert {"ttt-vit-mlp-digits", "ttt-vit-mlp-mnist-5k"} <= set(zoo.ZOO)
    assert zoo.ZOO["ttt-vit-mlp-digits"].command() == "ttt-hf train --dataset digits"
    for setting in ("fmnist-cpu", "digits-pixel", "fmnist-patch", "fmnist-pixel", "fmnist-pixel28"):
        entries = [entry for entry in zoo.ZOO.values() if entry.setting == setting]
        mixers = {entry.mixer for entry in entries}
        every = set(MIXER_PRESETS) if "pixel" in setting else set(MIXER_PRESETS) - {"mlp-shuffled4"}
        assert mixers >= every or setting == "fmnist-pixel28", setting  # 784 tokens: the paper's four pixel rows
        if setting in ("fmnist-cpu", "fmnist-patch", "fmnist-pixel"):  # the paper's key comparison: two seeds each
            for suffix in ("mlp", "linattn"):
                assert len({entry.seed for entry in entries if entry.mixer == suffix}) == 2
        assert len({entry.tier for entry in entries}) == 1 and len({entry.dataset for entry in entries}) == 1
        assert len({(entry.flags, entry.recipe) for entry in entries}) == 1  # same budget
        geometry = set()
        for entry in entries:
            model_args, _, _ = training.parse_arguments([*entry.train_arguments(), "--use_cpu", "true"])  # bf16: GPU
            fields = {**PRESETS.get(model_args.preset, {}), **arguments.parse_overrides(model_args.config_overrides)}
            geometry.add((fields.get("patch_size"), model_args.image_size, fields.get("hidden_size")))
        assert len(geometry) == 1, geometry  # same model size and input for every mixer
    assert {e.tier for e in zoo.ZOO.values() if e.setting.startswith("fmnist-p")} == {"GPU"}
    for entry in (entry for entry in zoo.ZOO.values() if entry.in_context):  # GPICL learners: `ttt-hf meta-train`
        meta, meta_args = meta_training.parse_arguments(entry.train_arguments())
        assert (meta.backbone, meta.dataset, meta_args.seed) == (entry.mixer, entry.dataset, entry.seed)
        assert entry.command().startswith("ttt-hf meta-train --dataset mnist-5k --backbone ")
    for entry in (entry for entry in zoo.ZOO.values() if not entry.in_context):
        model_args, data_args, training_args = training.parse_arguments(
            [*entry.train_arguments(), "--use_cpu", "true"]
        )
        assert (data_args.dataset, training_args.seed, training_args.recipe) == (
            entry.dataset, entry.seed, entry.recipe)  # fmt: skip
        fields = PRESETS.get(model_args.preset, {"mixer": "ttt_mlp"})
        assert mixer_preset_of({**fields, **arguments.parse_overrides(model_args.config_overrides)}) == entry.mixer
    folders = {path.name for path in (ROOT / "model_cards").iterdir() if path.is_dir()}
    assert folders <= set(zoo.ZOO), folders - set(zoo.ZOO)  # every folder is a registry entry


def test_zoo_list_says_what_is_trained(capsys):
    zoo.main(["list"])
    out = capsys.readouterr().out
    for name in zoo.ZOO:
        assert f"\n{name}  [" in f"\n{out}"
    assert out.count("trained: model_cards/") == len(TRAINED)
    assert out.count("not trained yet") == len(zoo.ZOO) - len(TRAINED)


# ---------------------------------------------------------------------------- a test per zoo model


def check_zoo_folder(folder: Path, entry: zoo.ZooEntry, with_pipeline: bool = True) -> None:
    """The folder is a complete, code-free, pickle-free zoo folder whose weights reproduce the test-slice accuracy
    its all_results.json and card record, and whose card is the one its results make (AssertionError if not)."""
    names = {p.name for p in folder.iterdir()}
    assert {"README.md", "config.json", "model.safetensors", "preprocessor_config.json", zoo.RESULTS_FILE,
            "training_args.json", "training_curves.png", "sample.png"} <= names, names  # fmt: skip
    assert not any(name.endswith((".py", *PICKLES)) for name in names), names
    assert sum(p.stat().st_size for p in folder.iterdir()) <= zoo.MAX_FOLDER_BYTES
    results = json.loads((folder / zoo.RESULTS_FILE).read_text())
    arguments = json.loads((folder / "training_args.json").read_text())
    assert arguments["data"]["dataset"] == entry.dataset
    images, labels, description = zoo.fixed_test_slice(arguments)
    assert (results["test_slice"], results["test_slice_size"]) == (description, len(labels))

    model = AutoModelForImageClassification.from_pretrained(folder)
    assert type(model).__name__ == "TTTViTForImageClassification"
    assert mixer_preset_of(model.config) == entry.mixer
    found = zoo.predictions(folder, images)
    assert zoo.accuracy(found, labels) == results["test_slice_accuracy"]
    if with_pipeline:
        classify = pipeline("image-classification", model=str(folder))
        top = [answer[0]["label"] for answer in classify(images, top_k=1)]
        assert zoo.accuracy([model.config.label2id[label] for label in top], labels) == results["test_slice_accuracy"]
        sample = results["sample"]  # the first image of the slice, as the card's usage example classifies it
        assert np.array_equal(np.asarray(Image.open(folder / "sample.png")), np.asarray(images[0]))
        assert sample["label"] == model.config.id2label[labels[0]]
        assert classify(str(folder / "sample.png"), top_k=1)[0]["label"] == sample["predicted"]

    card = ModelCard.load(folder / "README.md")
    recorded = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert recorded["top-1 accuracy"] == results["test_accuracy"]
    assert {r.dataset_split for r in card.data.eval_results} == {
        "test" if entry.dataset == "fashion-mnist" else "train"
    }
    assert f"top-1 {100 * results['test_slice_accuracy']:.2f} %" in card.text
    assert f"# prints: {results['sample']['predicted']}" in card.text
    repo_id = zoo.usage_repo_id(card.text)
    assert (folder / "README.md").read_bytes() == repo_files(folder, repo_id, provenance=False)[CARD_FILE]


def check_learner_folder(folder: Path, entry: zoo.ZooEntry) -> None:
    """The folder is a complete, code-free, pickle-free zoo folder of an in-context learner whose weights reproduce,
    on the very sequences of its run's final evaluation, the accuracy its all_results.json and card record."""
    names = {p.name for p in folder.iterdir()}
    assert {"README.md", "config.json", "model.safetensors", zoo.RESULTS_FILE, "training_args.json",
            "in_context_accuracy.png", "meta_training_curves.png"} <= names, names  # fmt: skip
    assert not any(name.endswith((".py", *PICKLES)) for name in names), names
    assert sum(p.stat().st_size for p in folder.iterdir()) <= zoo.MAX_FOLDER_BYTES
    results = json.loads((folder / zoo.RESULTS_FILE).read_text())
    assert (results["backbone"], results["meta_arguments"]["dataset"]) == (entry.mixer, entry.dataset)
    task_set, found, recorded = reproduce_final_accuracy(folder)
    assert abs(found - recorded) <= 1e-3 and abs(results["test_slice_accuracy"] - found) <= 1e-3
    assert task_set == f"unseen-{entry.dataset}"
    card = ModelCard.load(folder / "README.md")
    recorded_card = {r.dataset_name: r.metric_value for r in card.data.eval_results}
    assert recorded_card == {r.dataset_name: r.metric_value for r in gpicl_eval_results(results)}
    repo_id = zoo.usage_repo_id(card.text)
    assert (folder / "README.md").read_bytes() == repo_files(folder, repo_id, provenance=False)[CARD_FILE]


@pytest.mark.parametrize("name", TRAINED or [pytest.param(None, marks=pytest.mark.skip("no trained zoo model"))])
def test_zoo_model_reproduces_its_card(name):
    (check_learner_folder if zoo.ZOO[name].in_context else check_zoo_folder)(zoo.folder(name), zoo.ZOO[name])


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A tiny digits run kept by `ttt-hf zoo store` as the digits entry, in a model_cards folder of its own."""
    root = tmp_path_factory.mktemp("zoo")
    run = root / "run"
    training.main([*COMMON, *NO_AUGMENTATION, "--output_dir", str(run), "--max_steps", "3", "--max_train_samples",
                   "64", "--save_strategy", "steps", "--save_steps", "3"])  # fmt: skip
    assert cli.main(["zoo", "--model_cards", str(root / "cards"), "store", "ttt-vit-mlp-digits", str(run)]) == 0
    return root / "cards"


def voting_for_one_class(folder: Path, copy: Path, labels: torch.Tensor, recorded: float) -> Path:
    """A copy of the zoo folder whose head always votes for one class, one whose share of `labels` differs from the
    recorded accuracy (so that the drift shows)."""
    k = next(c for c in range(10) if (labels == c).double().mean().item() != recorded)
    drifted = shutil.copytree(folder, copy)
    weights = load_file(drifted / "model.safetensors")
    weights["classifier.bias"] = torch.zeros_like(weights["classifier.bias"])
    weights["classifier.bias"][k] = 1e4
    save_file(weights, drifted / "model.safetensors", metadata={"format": "pt"})
    return drifted


def test_store_keeps_a_checked_folder_and_drift_fails(stored, tmp_path):
    folder, entry = stored / "ttt-vit-mlp-digits", zoo.ZOO["ttt-vit-mlp-digits"]
    check_zoo_folder(folder, entry)
    assert not (folder / "checkpoint-3").exists()

    # weights drift: the head votes for one class whose share of the slice differs from the recorded accuracy
    results = json.loads((folder / zoo.RESULTS_FILE).read_text())
    _, labels, _ = zoo.fixed_test_slice(json.loads((folder / "training_args.json").read_text()))
    drifted = voting_for_one_class(folder, tmp_path / "weights", torch.tensor(labels), results["test_slice_accuracy"])
    with pytest.raises(AssertionError):
        check_zoo_folder(drifted, entry, with_pipeline=False)

    # results drift: all_results.json says another test accuracy than the card
    drifted = shutil.copytree(folder, tmp_path / "results")
    (drifted / zoo.RESULTS_FILE).write_text(json.dumps({**results, "test_accuracy": 0.99}))
    with pytest.raises(AssertionError):
        check_zoo_folder(drifted, entry, with_pipeline=False)


LEARNER = next(name for name, entry in zoo.ZOO.items() if entry.in_context)


@pytest.fixture(scope="module")
def stored_learner(tmp_path_factory):
    """A tiny run of the GPICL entry's own `ttt-hf meta-train` command (smaller model and budget), kept by
    `ttt-hf zoo store` in a model_cards folder of its own."""
    root = tmp_path_factory.mktemp("zoo_gpicl")
    run = root / "run"
    meta_training.main([*zoo.ZOO[LEARNER].train_arguments(), "--image_size", "8", "--hidden_size", "16",
                        "--num_hidden_layers", "1", "--num_attention_heads", "2", "--sequence_length", "12",
                        "--max_steps", "4", "--eval_steps", "2", "--per_device_train_batch_size", "8",
                        "--eval_sequences", "16", "--final_eval_sequences", "64", "--eval_datasets", "mnist-5k",
                        "--output_dir", str(run)])  # fmt: skip
    assert cli.main(["zoo", "--model_cards", str(root / "cards"), "store", LEARNER, str(run)]) == 0
    return run, root / "cards"


def test_store_keeps_a_learner_whose_weights_reproduce_its_card(stored_learner, stored, tmp_path, capsys):
    run, cards = stored_learner
    folder, entry = cards / LEARNER, zoo.ZOO[LEARNER]
    check_learner_folder(folder, entry)
    assert zoo.main(["--model_cards", str(cards), "list"]) is None
    assert "trained: model_cards/gpicl-" in capsys.readouterr().out

    # weights drift: the head votes for one class whose share of the final labels differs from the recorded accuracy
    results = json.loads((folder / zoo.RESULTS_FILE).read_text())
    seed = json.loads((folder / "training_args.json").read_text())["training"]["seed"]
    sampler = unseen_sampler(MetaArguments(**results["meta_arguments"]), entry.dataset, seed)
    labels = sampler.batch(0, 64)["labels"][:, -1]  # the final evaluation: 64 sequences, one batch
    drifted = voting_for_one_class(folder, tmp_path / "weights", labels, results["test_slice_accuracy"])
    with pytest.raises(AssertionError):
        check_learner_folder(drifted, entry)
    with pytest.raises(ValueError, match="the weights give"):
        zoo.in_context_slice(drifted)

    # a run of the other kind, or another backbone, is refused by name
    with pytest.raises(ValueError, match="not a `ttt-hf meta-train` run"):
        zoo.store(LEARNER, stored / "ttt-vit-mlp-digits", tmp_path / "cards")
    with pytest.raises(ValueError, match="not a `ttt-hf train` run"):
        zoo.store("ttt-vit-mlp-digits", run, tmp_path / "cards")
    other = shutil.copytree(run, tmp_path / "other")
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "backbone": "lstm"}))
    with pytest.raises(ValueError, match="zoo entry gpicl-"):
        zoo.store(LEARNER, other, tmp_path / "cards")

    zoo.main(["--model_cards", str(cards), "table", "--learners"])
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| model | backbone |") and table[2].startswith(f"| `{LEARNER}` | ttt_linear (")
    assert "bursty 10:400" in table[2]


def test_zoo_publish_dry_run_adds_the_model_code(stored, tmp_path, capsys):
    cards = [stored, *([ROOT / "model_cards"] if TRAINED else [])]
    for index, model_cards in enumerate(cards):
        out = tmp_path / f"dry{index}"
        assert cli.main(["zoo", "--model_cards", str(model_cards), "publish", "--org", "tester", "--dry-run",
                         str(out)]) == 0  # fmt: skip
        trained = [name for name in zoo.ZOO if zoo.is_trained(name, model_cards)]
        assert sorted(p.name for p in out.iterdir()) == sorted(trained)
        for name in trained:
            source, written = model_cards / name, out / name
            code = {p.name for p in written.glob("*.py")}
            family = "gpicl" if zoo.ZOO[name].in_context else "ttt_vit"
            assert {f"modeling_{family}.py", f"configuration_{family}.py", "ttt_layers.py"} <= code
            for file in code:  # the installed package's model code
                assert (written / file).read_bytes() == (modeling_folder() / file).read_bytes()
            for file in source.iterdir():
                if file.name not in ("README.md", "config.json"):
                    assert (written / file.name).read_bytes() == file.read_bytes(), file.name
            uploaded = json.loads((written / "config.json").read_text())  # the stored config and the provenance
            assert uploaded == {**json.loads((source / "config.json").read_text()), **code_provenance(
                [modeling_folder() / file for file in code])}  # fmt: skip
            assert zoo.usage_repo_id((written / "README.md").read_text()) == f"tester/{name}"
    assert "tester/ttt-vit-mlp-digits" in capsys.readouterr().out


def test_zoo_table_lists_the_trained_entries(stored, capsys):
    zoo.main(["--model_cards", str(stored), "table"])
    table = capsys.readouterr().out.splitlines()
    results = json.loads((stored / "ttt-vit-mlp-digits" / zoo.RESULTS_FILE).read_text())
    assert len(table) == 3 and table[2].startswith("| `ttt-vit-mlp-digits` | digits | MTTT-MLP (T=1) |")
    assert f"| {100 * results['test_accuracy']:.2f} |" in table[2]


def test_zoo_publish_round_trip_through_the_hub_protocol(stored, hub_server, tmp_path):
    """Publish the stored folder, then load it in a fresh process without ttt_hf (remote code from the package)."""
    (published,) = zoo.publish_zoo(hub_server.user, ["ttt-vit-mlp-digits"], model_cards=stored)
    repo = f"{hub_server.user}/ttt-vit-mlp-digits"
    files = hub_server.files(repo)
    planned = repo_files(stored / "ttt-vit-mlp-digits", repo)
    assert set(files) == set(planned) | {".gitattributes", MANIFEST_FILE} and "ttt_layers.py" in files
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        local = AutoModelForImageClassification.from_pretrained(stored / "ttt-vit-mlp-digits")(x).logits
    code = (
        HIDE_TTT_HF
        + f"""
import torch
from transformers import AutoModelForImageClassification
model = AutoModelForImageClassification.from_pretrained({repo!r}, trust_remote_code=True).eval()
with torch.no_grad():
    print("RESULT", json.dumps(model(torch.load({str(tmp_path / "x.pt")!r})).logits.tolist()))
"""
    )
    result = hub_server.python(code, tmp_path / "hf_home")
    remote = torch.tensor(json.loads(result.stdout.split("RESULT ", 1)[1]))
    torch.testing.assert_close(remote, local, rtol=0, atol=1e-5)
    assert published.commit == hub_server.head(repo)


@pytest.mark.parametrize("learners", [False, True], ids=["classifiers", "learners"])
def test_readme_zoo_tables_are_the_commands_output(learners):
    readme = (ROOT / "README.md").read_text()
    command = "ttt-hf zoo table" + (" --learners" if learners else "")
    match = re.search(f"<!-- zoo table: {command} -->\n(.*?)\n<!-- end zoo table -->", readme, flags=re.S)
    assert match, f"README lacks the table `{command}` generates"
    assert match.group(1).strip() == zoo.results_table(learners=learners).strip()


@pytest.mark.slow
def test_zoo_train_a_setting_runs_its_entries_in_parallel_processes(tmp_path, capsys):
    """Two processes at once, one thread each, every run an ordinary run folder with its log; finished ones skipped."""
    flags = ["--max_steps", "2", "--max_eval_samples", "20", "--save_strategy", "no", "--plots", "false",
             "--config_overrides", "hidden_size=12,num_hidden_layers=1,num_attention_heads=3,intermediate_size=24",
             "--report_to", "none", "--disable_tqdm", "true"]  # fmt: skip
    names = [entry.name for entry in zoo.ZOO.values() if entry.setting == "digits-pixel"][:3]
    (tmp_path / names[2]).mkdir()
    (tmp_path / names[2] / zoo.RESULTS_FILE).write_text("{}")  # done already
    assert zoo.train_many(names, tmp_path, parallel=2, extra=flags, poll=0.2) == dict.fromkeys(names, 0)
    for name in names[:2]:
        results = json.loads((tmp_path / name / zoo.RESULTS_FILE).read_text())
        assert results["device"].startswith("CPU (") and "1 thread(s)" in results["device"]
        assert results["epoch"] > 0 and results["data_path"] == "device-resident"
        assert (tmp_path / f"{name}.log").stat().st_size > 0
    printed = capsys.readouterr().out
    assert f"{names[2]}: done already" in printed and printed.count("finished: ") == 2
    assert zoo.train_many(names[:1], tmp_path / "bad", extra=["--max_steps", "x"], poll=0.2) == {names[0]: 2}
    assert "--max-steps: invalid int value" in (tmp_path / "bad" / f"{names[0]}.log").read_text()


@pytest.mark.parametrize(
    "user, parallel, threads",
    [(None, 1, "2"), (None, 2, "1"), ("1", 1, "1"), (" 1 ", 1, "1"), ("8", 1, "2"), ("0", 1, "2"), ("all", 1, "2")],
)
def test_parallel_runs_share_the_cores_or_take_the_users_fewer_threads(tmp_path, monkeypatch, user, parallel, threads):
    """On a CPU machine each process gets the cores over the runs at once, or the user's OMP_NUM_THREADS where it is
    fewer: two runners side by side, each told one thread, must not take both cores each."""
    from ttt_hf.common.parallel import run_many

    started = []

    class Finished:  # a process that ends at once; it records the environment it was given
        returncode = 0

        def __init__(self, command, stdout, stderr, env):
            started.append(env)

        def poll(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", Finished)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if user is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", user)
    assert run_many({"a": ["x"], "b": ["y"]}, tmp_path, parallel, poll=0) == {"a": 0, "b": 0}
    assert [(env["OMP_NUM_THREADS"], env["TORCHINDUCTOR_COMPILE_THREADS"]) for env in started] == [(threads,) * 2] * 2


def test_zoo_train_a_tier_passes_its_entries_and_fails_when_one_fails(monkeypatch):
    calls = []
    monkeypatch.setattr(zoo.runs, "train_many", lambda *args: calls.append(args) or {args[0][0]: 0, args[0][1]: 1})
    with pytest.raises(SystemExit, match=r"1 of 2 runs failed \(see their .log files\)"):
        zoo.main(["train", "--tier", "CPU", "--parallel", "2", "--output_dir", "runs", "--max_steps", "5"])
    names, root, parallel, extra = calls[0]
    assert names == [e.name for e in zoo.ZOO.values() if e.tier == "CPU" and e.setting in zoo.SETTINGS]
    assert (root, parallel, extra) == ("runs", 2, ["--max_steps", "5"])
    with pytest.raises(ValueError, match="NAME or --setting"):
        zoo.main(["train", names[0], "--setting", "digits-pixel"])


@pytest.mark.slow
def test_the_device_script_dry_run_on_the_cpu_trains_and_packs(tmp_path):
    """scripts/train_zoo_gpu.sh end to end on a CPU (ALLOW_CPU), on the digits setting: environment check, runs in
    parallel under their time budget, the archives of the way back, which unpack into storable runs."""
    import os

    env = {
        **os.environ,
        "ALLOW_CPU": "1",
        "NO_WHEELS": "1",
        "PYTHON": sys.executable,
        "OUT": str(tmp_path / "out"),
        "RUNS": str(tmp_path / "runs"),
        "SITE": str(tmp_path / "site"),
        "DATA_DIR": "",
        "SETTINGS": "--setting digits-pixel",
        "PARALLEL": "2",
        "BUDGET_S": "1",
        "EXTRA": "--num_train_epochs 50 --max_eval_samples 40 --use_cpu true --plots false "
        "--config_overrides hidden_size=12,num_hidden_layers=1,num_attention_heads=3,intermediate_size=24",
    }
    done = subprocess.run(["bash", "scripts/train_zoo_gpu.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    log = (tmp_path / "out" / "device_call.log").read_text()
    assert done.returncode == 0 and "] done" in log, done.stdout[-3000:] + done.stderr[-3000:]
    assert "CPU (ALLOW_CPU: a dry run)" in log and "finished: ttt-vit-attn-digits-pixel" in log
    archives = sorted((tmp_path / "out").glob("zoo-runs-*.tar.gz"))
    assert 1 <= len(archives) <= 7 and all(path.stat().st_size <= zoo.MAX_ARCHIVE_BYTES for path in archives)
    runs = zoo.unpack(archives, tmp_path / "back")
    assert {run.name for run in runs} == {e.name for e in zoo.ZOO.values() if e.setting == "digits-pixel"}
    for run in runs:
        results = json.loads((run / zoo.RESULTS_FILE).read_text())
        assert results["stopped_by_time_budget"] and results["epoch"] < results["planned_epochs"] == 50  # the budget
        assert "steady_train_images_per_second" in results


def _fake_run(folder: Path, payload: bytes = b"") -> None:
    folder.mkdir(parents=True)
    (folder / zoo.RESULTS_FILE).write_text('{"test_accuracy": 0.5}')
    (folder / "model.safetensors").write_bytes(payload)
    (folder / "training_args.bin").write_bytes(b"a pickle")
    (folder / "checkpoint-10").mkdir()
    (folder / "checkpoint-10" / "optimizer.pt").write_bytes(b"big")


def test_pack_fits_the_way_back_and_unpack_restores_the_runs(tmp_path):
    import os

    root = tmp_path / "runs"
    for k in range(5):  # incompressible 300 KiB each: two fit an archive of 700 KiB
        _fake_run(root / f"run-{k}", os.urandom(300 * 1024))
    (root / "unfinished").mkdir()
    (root / "run-0.log").write_text("the run's output")
    archives = zoo.pack(root, tmp_path / "out", max_files=3, max_bytes=700 * 1024)
    assert len(archives) == 3 and all(path.stat().st_size <= 700 * 1024 for path in archives)
    runs = zoo.unpack(archives, tmp_path / "back")
    assert sorted(run.name for run in runs) == [f"run-{k}" for k in range(5)]
    for k in range(5):
        back, original = tmp_path / "back" / f"run-{k}", root / f"run-{k}"
        assert (back / "model.safetensors").read_bytes() == (original / "model.safetensors").read_bytes()
        assert not (back / "training_args.bin").exists() and not (back / "checkpoint-10").exists()
    assert (tmp_path / "back" / "run-0" / "run-0.log").read_text() == "the run's output"
    with pytest.raises(FileExistsError, match="--force"):
        zoo.unpack(archives[:1], tmp_path / "back")
    zoo.unpack(archives[:1], tmp_path / "back", force=True)
    with pytest.raises(ValueError, match="more than 2"):
        zoo.pack(root, tmp_path / "out2", max_files=2, max_bytes=700 * 1024)
    assert not (tmp_path / "out2").exists()  # refused before writing anything
    with pytest.raises(ValueError, match="over 0.25 MiB"):
        zoo.pack(root, tmp_path / "out3", max_bytes=256 * 1024)
    with pytest.raises(ValueError, match="No finished run"):
        zoo.pack(tmp_path / "back" / "run-0", tmp_path / "out4")


def test_zoo_train_runs_the_entrys_command_with_extra_flags(monkeypatch):
    calls = []
    monkeypatch.setattr(training, "main", calls.append)
    assert cli.main(["zoo", "train", "ttt-vit-mlp-fmnist-pixel-seed1", "--max_steps", "2"]) == 0
    entry = zoo.ZOO["ttt-vit-mlp-fmnist-pixel-seed1"]
    assert calls == [[*entry.train_arguments(), "--output_dir", f"outputs/zoo/{entry.name}", "--max_steps", "2"]]
    assert cli.main(["zoo", "train", "no-such-model"]) == 1  # a user error, one line
    monkeypatch.setattr(meta_training, "main", calls.append)
    assert cli.main(["zoo", "train", LEARNER, "--max_steps", "2"]) == 0  # a learner: `ttt-hf meta-train`
    assert calls[-1] == [*zoo.ZOO[LEARNER].train_arguments(), "--output_dir", f"outputs/zoo/{LEARNER}",
                         "--max_steps", "2"]  # fmt: skip


def _fake_results(model_cards: Path, name: str, accuracy: float, **more) -> None:
    (model_cards / name).mkdir(parents=True)
    results = {"test_accuracy": accuracy, "epoch": 12.0, **more}
    (model_cards / name / zoo.RESULTS_FILE).write_text(json.dumps(results))


def test_summary_gives_mean_and_spread_and_calls_a_tie_a_tie(tmp_path):
    cards = tmp_path / "cards"
    for name, accuracy in (("mlp-fmnist-cpu", 0.90), ("mlp-fmnist-cpu-seed1", 0.89), ("linattn-fmnist-cpu", 0.88),
                           ("linattn-fmnist-cpu-seed1", 0.87), ("attn-fmnist-cpu", 0.91)):  # fmt: skip
        _fake_results(cards, f"ttt-vit-{name}", accuracy)
    summary = zoo.setting_summary(cards)
    assert "| CPU | Fashion-MNIST, 7x7 patches (16 tokens) | MTTT-MLP (T=1) | 2 | 12, 12 | 89.50 ± 0.50 |" in summary
    assert "| self-attention | 1 | 12 | 91.00 ± 0.00 |" in summary
    assert (
        "MTTT-MLP (T=1) 89.50 ± 0.50 % against linear attention (identity map) 87.50 ± 0.50 % (2 and 2 seed(s)): "
        "MTTT-MLP (T=1) is ahead by more than the seeds' spread." in summary
    )
    (cards / "ttt-vit-linattn-fmnist-cpu-seed1" / zoo.RESULTS_FILE).write_text('{"test_accuracy": 0.905, "epoch": 12}')
    assert zoo.compare("fmnist-cpu", "mlp", "linattn", cards).endswith("a tie within the seeds' spread.")
    shutil.rmtree(cards / "ttt-vit-linattn-fmnist-cpu-seed1")
    assert zoo.compare("fmnist-cpu", "mlp", "linattn", cards).endswith("no spread to compare against, so no verdict.")
    _fake_results(cards, "ttt-vit-linattn-fmnist-cpu-seed1", 0.80, stopped_by_time_budget=True, epoch=7.5)
    assert zoo.compare("fmnist-cpu", "mlp", "linattn", cards).endswith("cut short by its time budget, so no verdict.")
    assert "12, 7.5 (cut short)" in zoo.setting_summary(cards)
    assert zoo.compare("digits-pixel", "mlp", "linattn", cards) is None  # untrained


def card_code(card_text: str) -> list[str]:
    """The python blocks of a card's usage section, in order."""
    usage = card_text.split("## How to use", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", usage, flags=re.S)


LOCAL_MNIST = """
import datasets
datasets.load_dataset = lambda name, split: datasets.load_from_disk({path!r})  # offline: the local test digits
"""


@pytest.mark.slow
@pytest.mark.skipif(not {"ttt-vit-mlp-digits", "gpicl-ttt-linear-mnist-5k"} <= set(TRAINED), reason="not trained")
def test_the_cards_usage_examples_run_as_written(hub_server, tmp_path):
    """Publish a classifier and a learner, then run each card's usage code as a visitor would, in a fresh process
    without ttt_hf: it prints what the card says it prints (the sample image's label), and the in-context example
    answers its queries at about the learner's recorded accuracy."""
    from ttt_hf.common.data import load_image_dataset

    classifier, learner = (f"{hub_server.user}/{name}" for name in ("ttt-vit-mlp-digits", "gpicl-ttt-linear-mnist-5k"))
    zoo.publish_zoo(hub_server.user, [classifier.split("/")[1], learner.split("/")[1]])
    card = hub_server.files(classifier)["README.md"].decode()
    blocks = card_code(card)
    assert len(blocks) == 2 and all(f'"{classifier}"' in block for block in blocks)
    printed = re.findall(r"# prints: (.+)", card)
    result = hub_server.python(HIDE_TTT_HF + "\n".join(blocks), tmp_path / "hf_home")
    assert result.stdout.splitlines()[:2] == printed == [json.loads(hub_server.files(classifier)["all_results.json"])[
        "sample"]["predicted"]] * 2  # fmt: skip
    assert len(json.loads(result.stdout.splitlines()[2])) == 4  # the inner losses of the 4 TTT layers

    load_image_dataset("mnist-5k")["test"].save_to_disk(tmp_path / "mnist")
    (block,) = card_code(hub_server.files(learner)["README.md"].decode())
    assert 'load_dataset("ylecun/mnist", split="test")' in block
    code = HIDE_TTT_HF + LOCAL_MNIST.format(path=str(tmp_path / "mnist")) + block
    correct, total = map(int, re.fullmatch(r"(\d+) of (\d+) queries right\n", hub_server.python(
        code, tmp_path / "hf_home").stdout).groups())  # fmt: skip
    assert total == 10 and correct >= 3  # the learner's recorded accuracy after 99 examples is about 0.6


def test_learners_over_seeds_give_mean_and_spread():
    entries = [zoo.ZOO[name] for name in ("gpicl-ttt-linear-mnist-5k", "gpicl-ttt-linear-mnist-5k-seed1",
                                          "gpicl-transformer-mnist-5k")]  # fmt: skip
    assert [entry.seed for entry in entries] == [zoo.DEFAULT_SEED, 1, zoo.DEFAULT_SEED]
    runs = [{"final_unseen-mnist-5k_accuracy_last": value} for value in (0.65, 0.61, 0.67)]
    assert zoo.tables.learner_seeds(runs[:1], entries[:1]) == ""  # one seed: no spread to give
    table = zoo.tables.learner_seeds(runs, entries)
    assert "| ttt_linear | 42, 1 | 63.0 ± 2.0 % |" in table and "| transformer | 42 | 67.0 ± 0.0 % |" in table
    assert "--seed 1" in entries[1].command() and "--seed" not in entries[0].command()
