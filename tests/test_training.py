"""The outer loop end to end: a tiny training run, evaluation, two processes, and resuming after kill -9."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageClassification

from ttt_hf import cli
from ttt_hf.common import arguments
from ttt_hf.vision import evaluation, training

TINY_MODEL = "hidden_size=24,num_hidden_layers=2,num_attention_heads=3,intermediate_size=48,patch_size=2"
NO_AUGMENTATION = ["--random_resized_crop", "false", "--horizontal_flip", "false", "--rand_augment", "false",
                   "--mixup_alpha", "0"]  # fmt: skip
COMMON = ["--dataset", "digits", "--config_overrides", TINY_MODEL, "--eval_crop_fraction", "1.0",
          "--disable_tqdm", "true", "--report_to", "none", "--use_cpu", "true",
          "--dataloader_num_workers", "0"]  # fmt: skip


def test_train_then_evaluate_then_reload(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    metrics = training.main([*COMMON, *NO_AUGMENTATION, "--output_dir", str(out), "--num_train_epochs", "8",
                             "--max_train_samples", "512", "--per_device_train_batch_size", "32", "--learning_rate",
                             "3e-3", "--save_strategy", "no", "--mixup_alpha", "0.2"])  # fmt: skip
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "all_results.json",
                 "training_curves.png", "inner_losses.png", "modeling_ttt_vit.py"):  # fmt: skip
        assert (out / name).exists(), name
    results = json.loads((out / "all_results.json").read_text())
    assert results["test_accuracy"] == metrics["test_accuracy"]
    assert 0.3 < results["test_accuracy"] <= 1  # 10 classes: chance is 0.1; the run learns something
    assert results["test_top5_accuracy"] >= results["test_accuracy"]
    assert results["inner_loss_after"] < results["inner_loss_before"]
    assert results["train_loss"] > 0.5  # per image, not divided by the number of classes (mixup labels)
    model = AutoModelForImageClassification.from_pretrained(out)
    assert model.config.image_size == 8 and model.config.num_channels == 1 and model.config.id2label[3] == "3"

    summary = capsys.readouterr().out.splitlines()[-2:]  # the end of the run: scores and where the model went
    assert summary[0] == (
        f"validation top-1 {metrics['eval_accuracy']:.4f}, top-5 {metrics['eval_top5_accuracy']:.4f}"
        f"   test top-1 {metrics['test_accuracy']:.4f}, top-5 {metrics['test_top5_accuracy']:.4f}"
    )
    assert summary[1] == f"model, image processor and all_results.json: {out}"
    assert results["command"].startswith("ttt-hf train --dataset digits") and results["recipe"] == "small-data"
    assert results["settings"]["mixup_alpha"] == 0.2 and results["settings"]["learning_rate"] == 3e-3  # flags win

    monkeypatch.chdir(tmp_path)  # evaluate writes into a folder named for the model, dataset and split
    evaluated = evaluation.main(["--model_name_or_path", str(out), "--dataset", "digits", "--batch_size", "50"])
    assert evaluated["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-9)  # same split, same model
    assert evaluated["images"] == 180 and evaluated["images_per_second"] > 0
    folder = tmp_path / "outputs" / "eval" / "run-digits-test"
    assert (folder / "confusion_matrix.png").exists() and (folder / "eval_results.json").exists()
    printed = capsys.readouterr()
    assert printed.out.rstrip().endswith(f"results and confusion matrix: {folder}")
    assert "evaluating on test: 100%" in printed.err  # a progress bar, not 75 silent seconds on a large split


def test_bad_training_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a directory of images nor a bundled dataset"):
        training.main([*COMMON, "--dataset", str(tmp_path / "missing") + os.sep, "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="key=value pairs"):
        training.main([*COMMON, "--config_overrides", "hidden_size", "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="Unknown preset"):
        training.main([*COMMON, "--preset", "vit-huge", "--output_dir", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        training.main([*COMMON, *NO_AUGMENTATION, "--max_steps", "1", "--resume_from_checkpoint", "last",
                       "--output_dir", str(tmp_path / "fresh")])  # fmt: skip


def test_fine_tune_a_checkpoint_on_new_labels(tmp_path):
    """A model trained on 10 digit classes fine-tunes on a 3-class imagefolder: new head, same body."""
    from PIL import Image

    base = tmp_path / "base"
    training.main([*COMMON, *NO_AUGMENTATION, "--output_dir", str(base), "--max_steps", "2", "--save_strategy", "no",
                   "--max_train_samples", "64", "--plots", "false"])  # fmt: skip
    folder = tmp_path / "shapes"
    for c, name in enumerate(("bar", "dot", "ring")):
        (folder / name).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(((torch.rand(8, 8) * 60 + 60 * c).byte()).numpy(), "L").save(folder / name / f"{i}.png")
    tuned = tmp_path / "tuned"
    training.main([*COMMON, *NO_AUGMENTATION, "--dataset", str(folder), "--model_name_or_path", str(base),
                   "--output_dir", str(tuned), "--max_steps", "2", "--save_strategy", "no", "--plots", "false",
                   "--validation_fraction", "0.2"])  # fmt: skip
    model = AutoModelForImageClassification.from_pretrained(tuned)
    assert model.config.id2label == {0: "bar", 1: "dot", 2: "ring"} and model.classifier.weight.shape == (3, 24)
    with pytest.raises(ValueError, match=r"dataset has 3 classes but the model predicts 10 \(`num_labels`\)"):
        evaluation.main(["--model_name_or_path", str(base), "--dataset", str(folder), "--output_dir", str(tmp_path)])
    base_body, tuned_body = load_file(base / "model.safetensors"), load_file(tuned / "model.safetensors")
    assert base_body["classifier.weight"].shape == (10, 24)
    assert (
        base_body["ttt_vit.embeddings.patch_embeddings.weight"].shape
        == tuned_body["ttt_vit.embeddings.patch_embeddings.weight"].shape
    )


def test_bf16_and_activation_checkpointing_switches(tmp_path):
    metrics = training.main([*COMMON, *NO_AUGMENTATION, "--output_dir", str(tmp_path), "--max_steps", "3",
                             "--max_train_samples", "64", "--save_strategy", "no", "--plots", "false",
                             "--bf16", "true", "--activation_checkpointing", "true"])  # fmt: skip
    assert metrics["train_loss"] == pytest.approx(2.30, abs=0.1)  # zero head: log(10) at the start
    assert AutoModelForImageClassification.from_pretrained(tmp_path).dtype == torch.float32  # saved in fp32


def test_cli_lists_presets_and_dispatches(capsys):
    assert cli.main(["presets"]) == 0
    assert {"auto", "ttt-vit-small16-mlp"} <= set(capsys.readouterr().out.split())
    assert cli.main(["frobnicate"]) == 2


@pytest.mark.slow
def test_a_user_error_is_one_message_and_debug_shows_the_traceback(tmp_path):
    """`ttt-hf train` with a misspelt config key prints the message alone; --debug (or TTT_HF_DEBUG=1) re-raises."""
    argv = ["train", "--dataset", "digits", "--config_overrides", "num_hiden_layers=2", "--output_dir", str(tmp_path)]
    run = subprocess.run([sys.executable, "-m", "ttt_hf.cli", *argv], env=_env(), capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert run.stderr.startswith("ttt-hf train: error: --config_overrides: 'num_hiden_layers' is not a field")
    assert "Did you mean 'num_hidden_layers'" in run.stderr and len(run.stderr.splitlines()) == 2
    debug = subprocess.run([sys.executable, "-m", "ttt_hf.cli", "--debug", *argv], env=_env(), capture_output=True,
                           text=True, timeout=300)  # fmt: skip
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "num_hiden_layers" in debug.stderr


def test_log_lines_are_not_doubled(capsys):
    """ttt_hf logs through a handler of its own: a library logger with its own handler (huggingface_hub's retry
    warnings) prints once, and nothing is added to the root logger."""
    import logging

    root_handlers = list(logging.getLogger().handlers)
    arguments.setup_logging(training.TTTTrainingArguments(output_dir="unused", use_cpu=True, report_to="none"))
    hub = logging.getLogger("huggingface_hub.test_once")
    hub.addHandler(logging.StreamHandler())  # as a library with its own handler does
    hub.warning("retrying in 1s")
    logging.getLogger("ttt_hf.test_once").info("training on digits")
    out, err = capsys.readouterr()
    assert (out + err).count("retrying in 1s") == 1 and out.count("training on digits") == 1
    assert logging.getLogger().handlers == root_handlers


# ------------------------------------------------------------------------------ processes and resuming


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _weights(path):
    return load_file(os.path.join(path, "model.safetensors"))


def _train_cmd(out, *extra):
    return [*COMMON, "--output_dir", str(out), "--plots", "false", *extra]


def _metrics(path):
    return json.loads((path / "all_results.json").read_text())


@pytest.mark.slow
def test_two_processes_report_the_metrics_of_one(tmp_path):
    """torchrun and `accelerate launch` with 2 processes (2 x 16 images per step; no --use_cpu or --ddp_backend:
    a CPU machine gets gloo by itself) end with one process's weights and report its evaluation and test metrics to
    the last image (180 images do not split evenly into 2 x 64 batches) and its train_loss."""
    steps = ["--max_train_samples", "64", "--max_steps", "3", "--save_strategy", "no", "--eval_strategy", "no",
             "--learning_rate", "3e-3", "--seed", "3", "--global_batch_size", "32", *NO_AUGMENTATION]  # fmt: skip
    at = COMMON.index("--use_cpu")
    common = COMMON[:at] + COMMON[at + 2 :]
    args = [*common, "--plots", "false", *steps]
    cpu_only = {**_env(), "CUDA_VISIBLE_DEVICES": ""}  # the gloo path, also on a machine with a GPU
    launches = {
        "one": [sys.executable, "-m", "ttt_hf.vision.training"],
        "torchrun": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
                     "-m", "ttt_hf.vision.training"],
        "accelerate": [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                       "--main_process_port", "29518", "-m", "ttt_hf.vision.training"],
    }  # fmt: skip
    for name, launch in launches.items():
        run = subprocess.run([*launch, *args, "--output_dir", str(tmp_path / name)], env=cpu_only,
                             capture_output=True, text=True, timeout=600)  # fmt: skip
        assert run.returncode == 0, (name, run.stderr[-3000:])
        assert "parallel_mode != ParallelMode.DISTRIBUTED" not in run.stderr + run.stdout
    one = _metrics(tmp_path / "one")
    assert (one["settings"]["world_size"], one["settings"]["per_device_train_batch_size"]) == (1, 32)
    weights = _weights(tmp_path / "one")
    assert weights["classifier.weight"].abs().max() > 1e-3  # the zero-initialised head has trained
    for name in ("torchrun", "accelerate"):
        many = _metrics(tmp_path / name)
        assert (many["settings"]["world_size"], many["settings"]["per_device_train_batch_size"]) == (2, 16), name
        for key in ("eval_accuracy", "eval_top5_accuracy", "test_accuracy", "test_top5_accuracy"):
            assert many[key] == one[key], (name, key)  # every image counted once: same images, same predictions
        for key in ("eval_loss", "test_loss", "train_loss"):
            assert many[key] == pytest.approx(one[key], rel=1e-5), (name, key)
        for tensor, value in _weights(tmp_path / name).items():
            torch.testing.assert_close(value, weights[tensor], rtol=1e-4, atol=1e-5, msg=f"{name} {tensor}")


@pytest.mark.slow
def test_scripts_run_as_files(tmp_path):
    """`python scripts/x.py` puts scripts/ first on sys.path: no script may shadow a library it imports (a script
    named evaluate.py once broke `import evaluate`)."""
    root = Path(__file__).resolve().parents[1]
    for script in sorted((root / "scripts").glob("*.py")):
        run = subprocess.run([sys.executable, str(script), "--help"], cwd=tmp_path, env=_env(), capture_output=True,
                             text=True, timeout=300)  # fmt: skip
        assert run.returncode == 0, (script.name, run.stderr[-2000:])
        assert "usage" in run.stdout.lower(), script.name


@pytest.mark.slow
def test_kill_9_then_resume_ends_with_the_same_weights(tmp_path):
    """With augmentation and mixup on: a run killed after its step-10 checkpoint and resumed from it ends
    exactly where an uninterrupted run ends (RNG, optimizer, scheduler and data order restored)."""
    args = ["--max_train_samples", "64", "--per_device_train_batch_size", "16", "--max_steps", "24",
            "--save_strategy", "steps", "--save_steps", "10", "--eval_strategy", "no", "--seed", "5",
            "--save_total_limit", "5"]  # fmt: skip
    full = subprocess.run(
        [sys.executable, "-m", "ttt_hf.vision.training", *_train_cmd(tmp_path / "full", *args)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert full.returncode == 0, full.stderr[-3000:]

    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ttt_hf.vision.training", *_train_cmd(killed_dir, *args)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = killed_dir / "checkpoint-10"
    deadline = time.time() + 300
    while not (checkpoint / "trainer_state.json").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed_dir / "model.safetensors").exists()

    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "ttt_hf.vision.training",
            *_train_cmd(killed_dir, *args, "--resume_from_checkpoint", str(checkpoint)),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = _weights(tmp_path / "full"), _weights(killed_dir)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0, msg=name)


def test_epoch_timer_reports_steady_epochs():
    timer = training.EpochTimer()
    assert timer.metrics() == {}
    timer.durations = [30.0, 10.0, 12.0, 11.0]  # the first epoch pays for compilation
    assert timer.metrics() == {"epoch_seconds": 11.0, "first_epoch_seconds": 30.0}


def test_quickstart_on_digits_reloads_and_pipeline_agrees(tmp_path):
    """The README's main job on the smallest bundled set (8x8 digits -> 2x2 patches): it trains, the reloaded
    model's pipeline reproduces the run's test accuracy exactly, and the inner step lowers the inner loss."""
    from ttt_hf.vision.quickstart import main

    result = main(["--dataset", "digits", "--epochs", "1", "--max_train_samples", "128",
                   "--output_dir", str(tmp_path / "qs")])  # fmt: skip
    assert 0.0 < result["test_accuracy"] <= 1.0
    assert result["pipeline_accuracy"] == result["test_accuracy"]
    assert result["inner_loss_after"] < result["inner_loss_before"]
    assert (tmp_path / "qs" / "model.safetensors").exists()


def test_a_checkpoint_path_that_does_not_exist_says_so(tmp_path, monkeypatch):
    """A mistyped directory names the directory looked for, not only the Hub (which HF_HUB_OFFLINE keeps away)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"'\./run': no such directory \(.*/run\)"):
        evaluation.main(["--model_name_or_path", "./run", "--dataset", "digits"])
    with pytest.raises(FileNotFoundError, match="no such directory .* and not a Hub model id either"):
        training.main([*COMMON, "--model_name_or_path", "outputs/runs/last", "--output_dir", "out"])
    with pytest.raises(
        OSError, match=r"'outputs/run' is not a directory here \(.*outputs/run\), and loading it as a Hub"
    ):
        evaluation.main(["--model_name_or_path", "outputs/run", "--dataset", "digits"])
