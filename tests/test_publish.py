"""Publishing a run: `ttt-hf publish` (ttt_hf.hub.publish), its model card (ttt_hf.hub.vit_card), the recorded command
line, and the round trip over the Hub's protocol with the real huggingface_hub client against tests/hub_server.py."""

import hashlib
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard, metadata_load
from PIL import Image
from transformers import AutoModelForImageClassification, pipeline

from ttt_hf import TTTViTForImageClassification, cli
from ttt_hf.common.provenance import code_provenance, command_line, modeling_folder
from ttt_hf.hub.cards import code_origin
from ttt_hf.hub.publish import MANIFEST_FILE, HubPublishError, publish, repo_files
from ttt_hf.hub.vit_card import build_card, check_card
from ttt_hf.vision import training

from .conftest import HIDE_TTT_HF, tiny_config
from .test_training import COMMON, NO_AUGMENTATION

SECRET = "hf_trainingSECRET0123456789abcdef"  # given to the training run as --hub_token: it must appear nowhere
RUN_FILES = {"model.safetensors", "config.json", "preprocessor_config.json", "all_results.json", "training_args.json",
             "training_curves.png", "inner_losses.png", "sample.png", "README.md"}  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A genuine tiny training run, with a checkpoint folder and Trainer's pickled arguments in it."""
    out = tmp_path_factory.mktemp("publish") / "run"
    training.main([*COMMON, *NO_AUGMENTATION, "--output_dir", str(out), "--max_steps", "2", "--max_train_samples",
                   "64", "--max_eval_samples", "40", "--save_strategy", "steps", "--save_steps", "2",
                   "--hub_token", SECRET])  # fmt: skip
    assert (out / "checkpoint-2" / "optimizer.pt").exists() and (out / "training_args.bin").exists()
    return out


def fingerprint(folder: Path) -> dict:
    """Every file under `folder`: content hash and modification time (to prove a run is left untouched)."""
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def code_files(run: Path) -> set[str]:
    return {p.name for p in run.glob("*.py")}


def metric_values(card: ModelCard) -> dict:
    return {(r.dataset_split, r.metric_name): r.metric_value for r in card.data.eval_results}


def expected_metrics(results: dict, split: str = "train") -> dict:
    """The model-index of a run: its test accuracies, under the split the test images come from (digits: train)."""
    return {(split, "top-1 accuracy"): results["test_accuracy"],
            (split, "top-5 accuracy"): results["test_top5_accuracy"]}  # fmt: skip


def copy_run(run: Path, target: Path) -> Path:
    shutil.copytree(run, target, ignore=shutil.ignore_patterns("checkpoint-*"))
    return target


# ------------------------------------------------------------------------------------------------- offline


def test_dry_run_writes_exactly_the_repo_files_and_a_card_that_parses_back(run_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    before = fingerprint(run_dir)
    out = tmp_path / "dry"
    assert cli.main(["publish", str(run_dir), "someone/tiny-ttt", "--dry-run", str(out)]) == 0
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}

    # the modeling files are those save_pretrained writes, derived from auto_map (not a hand-written list)
    saved = tmp_path / "saved"
    TTTViTForImageClassification(tiny_config()).save_pretrained(saved)
    assert code_files(run_dir) == code_files(saved) and "ttt_layers.py" in code_files(run_dir)
    assert written == RUN_FILES | code_files(run_dir)
    pickles = (".bin", ".pt", ".pth", ".pkl", ".pickle")
    assert not any(name.endswith(pickles) or "checkpoint" in name for name in written)
    for name in written - {"README.md", "config.json"}:
        assert (out / name).read_bytes() == (run_dir / name).read_bytes(), name
    uploaded = json.loads((out / "config.json").read_text())  # the run's config, and the code's provenance
    assert {k: v for k, v in uploaded.items() if not k.startswith("ttt_hf_")} == json.loads(
        (run_dir / "config.json").read_text())  # fmt: skip

    results = json.loads((run_dir / "all_results.json").read_text())
    card = ModelCard.load(out / "README.md")
    assert metric_values(card) == expected_metrics(results)  # the model-index is all_results.json's
    data = card.data
    assert (data.library_name, data.pipeline_tag, data.license, data.metrics) == (
        "transformers", "image-classification", "apache-2.0", ["accuracy"])  # fmt: skip
    assert {"image-classification", "vision", "test-time-training", "mttt", "ttt-mlp"} <= set(data.tags)
    assert data.datasets is None and data.base_model is None  # digits has no Hub dataset id; trained from scratch
    assert {r.dataset_type for r in data.eval_results} == {"digits"}
    assert metadata_load(out / "README.md")["model-index"][0]["name"] == "tiny-ttt"
    text = card.text
    assert "It has no Hub dataset id" in text and results["command"] in text and results["device"] in text
    assert 'from_pretrained("someone/tiny-ttt", trust_remote_code=True)' in text and "import ttt_hf" in text
    assert 'pipeline("image-classification", model="someone/tiny-ttt"' in text and "**Not comparable**" in text
    assert "@article{sun2023learning" in text and "@software{ttt_hf" in text and "74.6 %" in text
    assert "@article{kirsch2022general" not in text  # a card cites the papers its model uses, not others
    assert f"# prints: {results['sample']['predicted']}" in text and "an independent implementation" in text
    assert "MTTT-MLP" in text and f"Parameters: {results['num_parameters']:,}" in text

    # the token: masked in what the run recorded, absent from every file and from the output
    assert results["command"].startswith("ttt-hf train --dataset digits") and SECRET not in results["command"]
    assert "--hub_token '<hidden>'" in results["command"]
    assert json.loads((run_dir / "training_args.json").read_text())["training"]["hub_token"] == "<HUB_TOKEN>"
    for name in written:
        assert SECRET.encode() not in (out / name).read_bytes(), name
    printed = capsys.readouterr()
    assert SECRET not in printed.out + printed.err and f"{len(written)} files" in printed.out
    assert fingerprint(run_dir) == before


def test_bad_inputs_fail_clearly_before_any_request(run_dir, tmp_path, capsys, hub_server):
    for bad in ("not a repo", "a/b/c", "-bad/name", "x" * 97, "user/name--x"):
        with pytest.raises(ValueError, match="invalid repo id"):
            publish(run_dir, bad)
    assert cli.main(["publish", str(run_dir), "a/b/c"]) == 1
    stderr = capsys.readouterr().err
    assert stderr.startswith("ttt-hf publish: error: invalid repo id 'a/b/c'") and len(stderr.splitlines()) == 2

    with pytest.raises(FileNotFoundError, match="does not exist"):
        publish(tmp_path / "nowhere", "someone/x")
    for missing in ("model.safetensors", "ttt_layers.py", "training_args.json", "preprocessor_config.json"):
        broken = copy_run(run_dir, tmp_path / f"without-{missing}")
        (broken / missing).unlink()
        with pytest.raises(FileNotFoundError, match=missing.replace(".", r"\.")):
            publish(broken, "someone/x", dry_run=tmp_path / f"dry-{missing}")
        assert not (tmp_path / f"dry-{missing}").exists()

    broken = copy_run(run_dir, tmp_path / "bad-results")
    results = json.loads((broken / "all_results.json").read_text())
    (broken / "all_results.json").write_text(json.dumps({**results, "test_accuracy": math.nan}))
    with pytest.raises(ValueError, match=r"invalid model card: .*test top-1 accuracy is nan"):
        publish(broken, "someone/x")
    with pytest.raises(FileExistsError, match="not empty"):
        publish(run_dir, "someone/x", dry_run=broken)
    assert hub_server.requests == []  # every check ran before the network


def test_card_names_the_base_model_and_hub_datasets(run_dir):
    config = json.loads((run_dir / "config.json").read_text())
    results = json.loads((run_dir / "all_results.json").read_text())
    for dataset, hub_id in (("fashion-mnist", "zalando-datasets/fashion_mnist"), ("mnist-5k", "ylecun/mnist"),
                            ("org/my-images", "org/my-images")):  # fmt: skip
        arguments = {"model": {"model_name_or_path": "someone/ttt-base"}, "data": {"dataset": dataset}}
        card = build_card("me/tuned", config, results, arguments)
        check_card(card, results)
        assert card.data.base_model == "someone/ttt-base" and card.data.datasets == [hub_id]
        assert {r.dataset_type for r in card.data.eval_results} == {hub_id}
        # mnist-5k's test images are MNIST *training* images: the model-index says so, and claims no validation split
        split = "test" if dataset == "fashion-mnist" else "train"
        assert metric_values(card) == expected_metrics(results, split)
        names = {r.dataset_name for r in card.data.eval_results}
        assert all(("held out of the training split" in name) == (split == "train") for name in names), names
    local = build_card("me/tuned", config, results, {"model": {"model_name_or_path": "/tmp/run"}, "data": {}})
    assert local.data.base_model is None and "local checkpoint `/tmp/run`" in local.text


def test_the_recorded_command_is_the_one_typed(monkeypatch, tmp_path):
    flags = [*COMMON, *NO_AUGMENTATION, "--max_steps", "1", "--max_train_samples", "16", "--max_eval_samples", "10",
             "--save_strategy", "no", "--plots", "false", "--output_dir", str(tmp_path / "a run"),
             "--hub_token", SECRET]  # fmt: skip
    (tmp_path / "my_train.py").write_text("import sys\nfrom ttt_hf.vision.training import main\nmain(sys.argv[1:])\n")
    run = subprocess.run([sys.executable, "my_train.py", *flags], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    recorded = json.loads((tmp_path / "a run" / "all_results.json").read_text())["command"]
    assert recorded == shlex.join(["python", "my_train.py", *flags[:-1], "<hidden>"])  # a user's own script
    assert SECRET not in run.stdout + run.stderr

    flags = ["--dataset", "digits", "--hub_token", SECRET, "--output_dir", "out dir"]
    shown = "--dataset digits --hub_token '<hidden>' --output_dir 'out dir'"
    cases = {
        ("/venv/bin/python3", "/venv/bin/ttt-hf", "train"): "ttt-hf train",
        ("/venv/bin/python3", "/venv/bin/ttt-hf", "--debug", "train"): "ttt-hf --debug train",
        (".venv/bin/python", "-u", "-m", "ttt_hf.vision.training"): "python -m ttt_hf.vision.training",
        (".venv/bin/python", "my_train.py"): "python my_train.py",
        ("python3", "-m", "pytest", "tests"): "ttt-hf train",  # main() called from Python: the equivalent command
    }
    for prefix, launch in cases.items():
        monkeypatch.setattr("sys.orig_argv", [*prefix, *flags])
        assert command_line(flags) == f"{launch} {shown}", prefix
    monkeypatch.setattr("sys.orig_argv", ["python", "-u", "-m", "ttt_hf.vision.training", *flags])
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert command_line(flags) == f"torchrun --nproc_per_node=2 -m ttt_hf.vision.training {shown}"
    assert command_line(["--hub_token=abc"]) == "ttt-hf train '--hub_token=<hidden>'"


# --------------------------------------------------------------------------------- over the Hub protocol


def local_logits(path, x) -> str:
    model = AutoModelForImageClassification.from_pretrained(path).eval()
    with torch.no_grad():
        return model(x).logits.numpy().tobytes().hex()


LOAD = """
import json, torch
from PIL import Image
from transformers import AutoModelForImageClassification, pipeline
A = json.loads({args!r})
x, out = torch.load(A["x"]), {{}}
def logits(**kw):
    model = AutoModelForImageClassification.from_pretrained(A["repo"], **kw).eval()
    out["module"] = type(model).__module__
    with torch.no_grad():
        return model(x).logits.numpy().tobytes().hex()
out["head"] = logits(**A["kw"])
out["first"] = logits(revision=A["first"], **A["kw"])
if A["pipeline"]:
    classify = pipeline("image-classification", model=A["repo"], revision=A["first"], **A["kw"])
    out["pipeline"] = classify(Image.open(A["image"]), top_k=10)
if A["train"]:
    from ttt_hf import cli
    out["train"] = cli.main(A["train"])
print("RESULT " + json.dumps(out))
"""


def client(hub_server, hf_home, code, **args):
    result = hub_server.python(code.format(args=json.dumps(args)), hf_home, offline=args.pop("offline", False))
    assert hub_server.token not in result.stdout + result.stderr
    return json.loads(result.stdout.split("RESULT ", 1)[1])


def three_class_folder(root: Path) -> Path:
    for c, name in enumerate(("bar", "dot", "ring")):
        (root / name).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(((torch.rand(8, 8) * 60 + 60 * c).byte()).numpy(), "L").save(root / name / f"{i}.png")
    return root


@pytest.mark.slow
def test_publish_round_trip_through_the_hub_protocol(run_dir, hub_server, tmp_path, capsys, monkeypatch):
    """Publish, publish a changed run over it, then load both commits in fresh processes with empty caches: with
    ttt_hf, without it (remote code), through the pipeline, offline from the cache, and fine-tune the published model
    on new labels. Every load gives the local model's logits bit for bit."""
    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))  # same kernels as this process
    repo = f"{hub_server.user}/tiny-ttt"
    before = fingerprint(run_dir)
    first = publish(run_dir, repo)
    assert first.commit == hub_server.head(repo) and len(hub_server.commits(repo)) == 2  # one commit on the initial
    files = hub_server.files(repo)
    planned = repo_files(run_dir, repo)
    assert set(files) == set(planned) | {".gitattributes", MANIFEST_FILE} and set(planned) == RUN_FILES | code_files(
        run_dir
    )
    assert json.loads(files[MANIFEST_FILE])["files"] == sorted([*planned, MANIFEST_FILE])  # what this publish wrote
    for name, source in planned.items():
        assert files[name] == (source if isinstance(source, bytes) else source.read_bytes()), name
    entries = hub_server.file_entries(repo)
    assert entries["model.safetensors"].is_lfs and entries["inner_losses.png"].is_lfs  # the LFS path, as on the Hub
    assert not entries["config.json"].is_lfs

    # a second run over the repo: changed weights, a plot gone, and files others added to the repo
    second_run = copy_run(run_dir, tmp_path / "second")
    model = AutoModelForImageClassification.from_pretrained(second_run)
    with torch.no_grad():
        model.classifier.bias.add_(torch.linspace(-1, 1, model.config.num_labels))
    model.save_pretrained(second_run)
    (second_run / "inner_losses.png").unlink()
    theirs = {"notes.txt": b"added on the Hub", ".eval_results/fashion.yaml": b"value: 0.9\n", "extra.png": b"png"}
    hub_server.commit_files(repo, theirs)
    second = publish(second_run, repo, commit_message="Second run")
    files = hub_server.files(repo)
    ours = set(repo_files(second_run, repo))
    assert set(files) == ours | set(theirs) | {".gitattributes", MANIFEST_FILE}  # our stale plot gone, theirs kept
    assert all(files[name] == data for name, data in theirs.items())
    assert "inner_losses.png" in hub_server.files(repo, first.commit)
    assert hub_server.commits(repo)[0].title == "Second run" and second.commit == hub_server.head(repo)

    x = torch.randn(3, 1, 8, 8)
    torch.save(x, tmp_path / "x.pt")
    Image.fromarray((torch.rand(8, 8) * 255).byte().numpy(), "L").save(tmp_path / "digit.png")
    expected_first, expected_second = local_logits(run_dir, x), local_logits(second_run, x)
    local_scores = pipeline("image-classification", model=str(run_dir))(Image.open(tmp_path / "digit.png"), top_k=10)
    folder = three_class_folder(tmp_path / "shapes")
    tuned = tmp_path / "tuned"
    train = ["train", *COMMON, *NO_AUGMENTATION, "--dataset", str(folder), "--model_name_or_path", repo,
             "--output_dir", str(tuned), "--max_steps", "2", "--save_strategy", "no", "--plots", "false",
             "--validation_fraction", "0.2"]  # fmt: skip
    common = dict(repo=repo, first=first.commit, x=str(tmp_path / "x.pt"), image=str(tmp_path / "digit.png"))

    cache = tmp_path / "hf_home_installed"  # empty: nothing cached, no stored token
    with_ttt_hf = client(hub_server, cache, "import ttt_hf\n" + LOAD, **common, kw={}, pipeline=True, train=train)
    assert with_ttt_hf["module"].startswith("ttt_hf.")
    assert (with_ttt_hf["head"], with_ttt_hf["first"]) == (expected_second, expected_first)
    assert with_ttt_hf["pipeline"] == local_scores and with_ttt_hf["train"] == 0

    remote = client(hub_server, tmp_path / "hf_home_remote", HIDE_TTT_HF + LOAD, **common,
                    kw={"trust_remote_code": True}, pipeline=True, train=None)  # fmt: skip
    assert remote["module"].startswith("transformers_modules.")
    assert (remote["head"], remote["first"]) == (expected_second, expected_first)
    assert remote["pipeline"] == local_scores

    offline = client(hub_server, cache, "import ttt_hf\n" + LOAD, **common, kw={}, pipeline=False, train=None,
                     offline=True)  # fmt: skip
    assert (offline["head"], offline["first"]) == (expected_second, expected_first)

    # the fine-tune: a new 3-class head on the published body, with the Hub model named as its base
    tuned_model = AutoModelForImageClassification.from_pretrained(tuned)
    assert tuned_model.config.id2label == {0: "bar", 1: "dot", 2: "ring"}
    assert ModelCard(repo_files(tuned, "someone/tuned")["README.md"].decode()).data.base_model == repo

    printed = capsys.readouterr()
    assert hub_server.token not in printed.out + printed.err
    assert not any(hub_server.token.encode() in data for data in files.values())
    assert fingerprint(run_dir) == before and hub_server.server_errors == []


def test_push_to_hub_from_training_publishes_the_same_repo(hub_server, tmp_path, capsys):
    """Trainer's --push_to_hub goes through ttt_hf.hub.publish: this card, the model code and the processor, in one
    commit."""
    out, repo = tmp_path / "pushed", f"{hub_server.user}/pushed"
    training.main([*COMMON, *NO_AUGMENTATION, "--output_dir", str(out), "--max_steps", "1", "--max_train_samples",
                   "32", "--max_eval_samples", "20", "--save_strategy", "no", "--push_to_hub", "true",
                   "--hub_model_id", repo, "--hub_token", hub_server.token])  # fmt: skip
    files, planned = hub_server.files(repo), repo_files(out, repo)
    assert (
        set(files) == set(planned) | {".gitattributes", MANIFEST_FILE} and files["README.md"] == planned["README.md"]
    )
    assert len(hub_server.commits(repo)) == 2  # the Hub's initial commit and ours: Trainer pushed nothing itself
    card = ModelCard(files["README.md"].decode())
    assert card.data.pipeline_tag == "image-classification" and "--push_to_hub true" in card.text
    assert "<hidden>" in card.text and not any(hub_server.token.encode() in data for data in files.values())
    assert hub_server.token not in (out / "all_results.json").read_text() + (out / "training_args.json").read_text()
    printed = capsys.readouterr()
    assert hub_server.token not in printed.out + printed.err


def test_publish_faults_are_clear_errors_and_never_a_false_success(run_dir, hub_server, tmp_path, monkeypatch,
                                                                    capsys, caplog):  # fmt: skip
    import huggingface_hub.utils._http as http

    monkeypatch.setattr(http, "time", type("NoSleep", (), {"sleep": staticmethod(lambda s: None)})())
    repo = f"{hub_server.user}/faults"
    publish(run_dir, repo)
    changed = copy_run(run_dir, tmp_path / "changed")
    model = AutoModelForImageClassification.from_pretrained(changed)
    with torch.no_grad():
        model.classifier.bias.add_(1.0)
    model.save_pretrained(changed)  # new weights: the upload has an LFS object to send
    head, before = hub_server.head(repo), fingerprint(changed)

    monkeypatch.delenv("HF_TOKEN")
    requests = len(hub_server.requests)
    with pytest.raises(HubPublishError, match="no Hugging Face token"):
        publish(changed, repo)
    assert len(hub_server.requests) == requests  # stopped before the network
    wrong = "hf_wrong_token_0123456789"
    monkeypatch.setenv("HF_TOKEN", wrong)
    with pytest.raises(HubPublishError, match=r"rejected the token \(401 Unauthorized\)") as error:
        publish(changed, repo)
    assert wrong not in str(error.value)
    monkeypatch.setenv("HF_TOKEN", hub_server.token)

    faults = [
        # first: an LFS object uploaded by a later attempt would be skipped from then on
        (lambda: hub_server.drop(r"^/lfs-upload/", times=None), r"connection to .* failed.*Nothing was committed"),
        (lambda: hub_server.fail(r"/commit/", status=500, times=None), r"server error \(500\).*Nothing was committed"),
        (lambda: hub_server.drop(r"/commit/", times=None), r"while uploading .* may or may not have been made"),
        (lambda: hub_server.fail(r"/preupload/", status=503, times=None), r"server error \(503\)"),
    ]
    for inject, message in faults:
        inject()
        with pytest.raises(HubPublishError, match=message) as error:
            publish(changed, repo)
        hub_server.clear_faults()
        assert hub_server.head(repo) == head, message  # nothing half-published
        assert hub_server.token not in str(error.value) and "the run directory is unchanged" in str(error.value)
    assert cli.main(["publish", str(changed), repo, "--commit-message", "x"]) == 0  # and then it goes through
    assert hub_server.head(repo) != head and hub_server.files(repo)["model.safetensors"] == (
        changed / "model.safetensors").read_bytes()  # fmt: skip
    assert fingerprint(changed) == before

    branch = publish(run_dir, repo, revision="experiments")  # a new branch, made from main
    assert hub_server.head(repo, "experiments") == branch.commit != hub_server.head(repo)
    pr = publish(run_dir, repo, create_pr=True)
    assert pr.url.endswith("/discussions/1") and hub_server.head(repo, "refs/pr/1") == pr.commit
    publish(run_dir, f"{hub_server.user}/private-one", private=True)
    assert hub_server.repo(f"{hub_server.user}/private-one").private
    printed = capsys.readouterr()
    assert hub_server.token not in printed.out + printed.err + caplog.text


def test_a_push_in_between_makes_publish_fail_instead_of_overwriting_it(run_dir, hub_server, monkeypatch):
    """The commit names the head it was prepared on (parent_commit): another push landing between the listing and
    the commit gets a 412 from the Hub, and the publish says so; the other push's file is intact."""
    from huggingface_hub import HfApi

    repo = f"{hub_server.user}/raced"
    publish(run_dir, repo)
    listing = HfApi.list_repo_files

    def list_then_someone_pushes(self, *args, **kwargs):
        found = listing(self, *args, **kwargs)
        hub_server.commit_files(repo, {"config.json": b'{"theirs": true}'})
        return found

    monkeypatch.setattr(HfApi, "list_repo_files", list_then_someone_pushes)
    with pytest.raises(HubPublishError, match=r"another push reached .*raced.* \(412\).*Nothing was committed"):
        publish(run_dir, repo)
    assert hub_server.files(repo)["config.json"] == b'{"theirs": true}'


# ------------------------------------------------------------------------------------------------- provenance


def test_config_and_card_name_the_code_that_was_uploaded(run_dir, tmp_path):
    """config.json and the card record the ttt-hf version and commit of the uploaded model code: the installed
    package's when the run's copy is byte-equal to it, else what training recorded, else 'not recorded'."""
    import ttt_hf

    files = repo_files(run_dir, "me/run")
    config = json.loads(files["config.json"])
    expected = code_provenance([modeling_folder() / name for name in files if name.endswith(".py")])
    assert config["ttt_hf_version"] == ttt_hf.__version__ and expected["ttt_hf_version"] == ttt_hf.__version__
    assert config["ttt_hf_commit"] == expected["ttt_hf_commit"]
    assert code_origin(config) in files["README.md"].decode()
    recorded = json.loads((run_dir / "training_args.json").read_text())["code"]
    assert recorded["ttt_hf_version"] == ttt_hf.__version__  # written by the training run

    edited = copy_run(run_dir, tmp_path / "edited")  # the run's code is no longer the package's
    with open(edited / "modeling_ttt_vit.py", "a") as file:
        file.write("\n# a local change\n")
    arguments = json.loads((edited / "training_args.json").read_text())
    arguments["code"] = {"ttt_hf_version": "0.0.9", "ttt_hf_commit": "a" * 40}
    (edited / "training_args.json").write_text(json.dumps(arguments))
    files = repo_files(edited, "me/run")
    assert json.loads(files["config.json"])["ttt_hf_commit"] == "a" * 40
    assert f"ttt-hf 0.0.9, commit `{'a' * 40}`" in files["README.md"].decode()
    del arguments["code"]
    (edited / "training_args.json").write_text(json.dumps(arguments))
    files = repo_files(edited, "me/run")
    assert json.loads(files["config.json"])["ttt_hf_version"] is None
    assert "not recorded" in files["README.md"].decode()
    kept = repo_files(run_dir, "me/run", provenance=False)  # a folder kept for later (the zoo): no provenance yet
    assert (
        kept["config.json"] == run_dir / "config.json" and "when the folder is published" in kept["README.md"].decode()
    )


PROVENANCE = """
import json, sys
import ttt_hf
from ttt_hf.common.provenance import code_provenance, modeling_folder
if not ttt_hf.__file__.startswith(sys.argv[1]):  # edit only the copy made for this test
    raise SystemExit(f"imported {ttt_hf.__file__}, not the copy in {sys.argv[1]}")
before = code_provenance()
with open(modeling_folder() / "modeling_ttt_vit.py", "a") as file:
    file.write("# a local change\\n")
print("RESULT " + json.dumps({"file": ttt_hf.__file__, "before": before, "after": code_provenance()}))
"""


@pytest.mark.slow
def test_the_commit_is_the_checkouts_only_while_its_code_is_unchanged(tmp_path):
    """In a git checkout of ttt-hf the commit is HEAD until the code changes (then unknown); in a copy outside git it
    is what pip recorded (an editable install records none)."""
    root = Path(__file__).resolve().parents[1]
    for place in ("checkout", "copy"):
        source = tmp_path / place
        shutil.copytree(root / "ttt_hf", source / "ttt_hf", ignore=shutil.ignore_patterns("__pycache__", "modeling"))
        shutil.copytree(
            root / "modeling", source / "ttt_hf" / "modeling", ignore=shutil.ignore_patterns("__pycache__")
        )
    git = ["git", "-C", str(tmp_path / "checkout"), "-c", "user.name=t", "-c", "user.email=t@t"]
    for command in (["init", "-q"], ["add", "."], ["commit", "-qm", "code"]):
        subprocess.run([*git, *command], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    found = {}
    for place in ("checkout", "copy"):
        env = {**os.environ, "PYTHONPATH": str(tmp_path / place)}
        out = subprocess.run(
            [sys.executable, "-c", PROVENANCE, str(tmp_path / place)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        found[place] = json.loads(out.stdout.split("RESULT ", 1)[1])
        assert found[place]["file"].startswith(str(tmp_path / place))
    assert found["checkout"]["before"]["ttt_hf_commit"] == head and found["checkout"]["after"]["ttt_hf_commit"] is None
    assert found["copy"]["before"]["ttt_hf_commit"] is None  # no git, and the editable install records no commit


def test_tag_names_the_published_commit_and_never_moves(run_dir, hub_server, monkeypatch):
    import huggingface_hub.utils._http as http

    monkeypatch.setattr(http, "time", type("NoSleep", (), {"sleep": staticmethod(lambda s: None)})())
    repo = f"{hub_server.user}/tagged"
    requests = len(hub_server.requests)
    for bad in ("-v1", "v1..2", "with space", "x" * 101):
        with pytest.raises(ValueError, match="not a valid tag name"):
            publish(run_dir, repo, tag=bad)
    with pytest.raises(ValueError, match="pull request"):
        publish(run_dir, repo, tag="v1", create_pr=True)
    assert len(hub_server.requests) == requests  # refused before the network

    first = publish(run_dir, repo, tag="v1.0")
    assert first.tag == "v1.0" and hub_server.head(repo, "v1.0") == first.commit == hub_server.head(repo)
    commits = len(hub_server.commits(repo))
    with pytest.raises(ValueError, match=r"has a tag 'v1.0' already .*Nothing was committed"):
        publish(run_dir, repo, tag="v1.0")
    assert len(hub_server.commits(repo)) == commits and hub_server.head(repo, "v1.0") == first.commit
    hub_server.fail(r"/tag/", status=500, times=None)
    with pytest.raises(HubPublishError, match=r"The commit was made \([0-9a-f]{40}\) but not tagged: tag it with"):
        publish(run_dir, repo, tag="v2")
    hub_server.clear_faults()
    assert len(hub_server.commits(repo)) == commits  # the same files: the client makes no empty commit
    assert cli.main(["publish", str(run_dir), repo, "--tag", "v2"]) == 0
    assert hub_server.head(repo, "v2") == hub_server.head(repo) and hub_server.server_errors == []


def test_zoo_publish_gathers_the_entries_into_one_collection(hub_server, tmp_path, monkeypatch):
    import huggingface_hub.utils._http as http
    from huggingface_hub import HfApi

    from ttt_hf import zoo

    monkeypatch.setattr(http, "time", type("NoSleep", (), {"sleep": staticmethod(lambda s: None)})())
    names = ["ttt-vit-mlp-digits", "gpicl-ttt-linear-mnist-5k"]
    dry = zoo.publish_zoo("org", names, dry_run=tmp_path / "dry", collection="TTT zoo")
    assert json.loads((tmp_path / "dry" / "collection.json").read_text()) == {
        "title": "TTT zoo", "namespace": "org", "items": [f"org/{name}" for name in names]}  # fmt: skip
    assert [result.commit for result in dry] == [None, None] and hub_server.collections == {}

    org = hub_server.user
    hub_server.fail(r"^/api/collections/.*/items", status=500, times=None)
    with pytest.raises(HubPublishError, match=r"while adding .* to the collection .*models themselves are published"):
        zoo.publish_zoo(org, names, collection="TTT zoo")
    hub_server.clear_faults()
    assert all(hub_server.head(f"{org}/{name}") for name in names)
    zoo.publish_zoo(org, names, collection="TTT zoo", tag="v1")  # again: the same collection, each repo once
    zoo.publish_zoo(org, names[:1], collection="TTT zoo")
    ((slug, collection),) = hub_server.collections.items()
    assert collection["title"] == "TTT zoo" and [item["id"] for item in collection["items"]] == [
        f"{org}/{name}" for name in names]  # fmt: skip
    assert [item.item_id for item in HfApi(token=hub_server.token).get_collection(slug).items] == [
        f"{org}/{name}" for name in names]  # fmt: skip
    assert all(hub_server.head(f"{org}/{name}", "v1") for name in names)
    with pytest.raises(ValueError, match="needs a title"):
        zoo.publish_zoo(org, names[:1], collection=" ")
    assert hub_server.server_errors == []
