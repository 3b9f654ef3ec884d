"""GPICL's tasks, in-context evaluation, the SGD row, meta-training with Trainer and the pipeline."""

import json
import textwrap

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from transformers import AutoModelForTokenClassification, pipeline

import ttt_hf
from ttt_hf import InContextClassificationPipeline
from ttt_hf.common.arguments import DEFAULT_SEED
from ttt_hf.common.data import load_image_arrays
from ttt_hf.gpicl.evaluation import (
    BASELINE_NAMES,
    _sgd_linear,
    in_context_accuracy,
    interval,
    pipeline_accuracy,
    sgd_accuracy,
)
from ttt_hf.gpicl.meta_training import main as meta_train
from ttt_hf.gpicl.meta_training import steps_to_leave_plateau
from ttt_hf.gpicl.tasks import (
    FIXED_TASK_SEED,
    POOL_TASK_OFFSET,
    SEED_FAMILIES,
    UNSEEN_TASK_OFFSET,
    TaskSampler,
    TaskStream,
    base_inputs,
    parse_curriculum,
    task_of,
)
from ttt_hf.hub.gpicl_card import interventions
from ttt_hf.hub.publish import MANIFEST_FILE, publish, repo_files
from ttt_hf.modeling.tasks_gpicl import PIPELINE_TASK_OFFSET

from .conftest import HIDE_TTT_HF


@pytest.fixture(scope="module")
def digits():
    return base_inputs("digits", "train", image_size=8)


def test_base_inputs_are_flat_and_z_normalised(digits):
    x, y = digits
    assert x.shape == (1437, 64) and y.shape == (1437,) and x.dtype == torch.float32
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std()) - 1) < 1e-4  # over all examples and pixels
    assert set(y.tolist()) == set(range(10))


def test_a_task_is_a_gaussian_projection_and_a_label_permutation():
    projection, permutation = task_of(7, 196, 10)
    assert projection.shape == (196, 196) and sorted(permutation.tolist()) == list(range(10))
    assert abs(float(projection.var()) * 196 - 1) < 0.05 and abs(float(projection.mean())) < 0.01  # N(0, 1/N_x)
    again = task_of(7, 196, 10)
    assert torch.equal(again[0], projection) and torch.equal(again[1], permutation)
    assert not torch.equal(task_of(8, 196, 10)[0], projection)


def test_sampler_builds_sequences_of_one_task_and_reproduces(digits):
    x, y = digits
    sampler = TaskSampler(x, y, sequence_length=30, num_tasks=4, fixed_task_fraction=0.25, seed=3)
    batch = sampler.batch(5, 8)
    assert batch["inputs"].shape == (8, 30, 64) and batch["labels"].shape == (8, 30)
    seeds = batch["task_seeds"].tolist()
    assert seeds[:2] == [FIXED_TASK_SEED] * 2  # 25 % fixed, the rest from a pool of 4
    assert all(POOL_TASK_OFFSET <= s < POOL_TASK_OFFSET + 4 for s in seeds[2:])
    for i, seed in enumerate(seeds):  # every example is x A^T of a base example, labelled by the permutation
        projection, permutation = task_of(seed, 64, 10)
        base = batch["inputs"][i] @ torch.linalg.inv(projection.T)
        rows = torch.cdist(base, x).argmin(-1)
        torch.testing.assert_close(base, x[rows], rtol=1e-3, atol=1e-3)
        assert torch.equal(batch["labels"][i], permutation[y[rows]])
    again = TaskSampler(x, y, sequence_length=30, num_tasks=4, fixed_task_fraction=0.25, seed=3).batch(5, 8)
    assert all(torch.equal(batch[k], again[k]) for k in batch)
    assert not torch.equal(sampler.batch(6, 8)["inputs"], batch["inputs"])
    unseen = TaskSampler(x, y, sequence_length=30, unseen=True).batch(0, 4)["task_seeds"]
    assert (unseen >= UNSEEN_TASK_OFFSET).all()
    fresh = TaskSampler(x, y, sequence_length=30).batch(0, 64)["task_seeds"]
    assert len(set(fresh.tolist())) == 64  # unlimited tasks: a new one per sequence
    stream = iter(TaskStream(sampler, 8))
    first = [next(stream) for _ in range(8)]
    assert torch.equal(torch.stack([f["inputs"] for f in first]), sampler.batch(0, 8)["inputs"])


def test_a_pool_never_holds_an_unseen_task(digits):
    """torch's generator keeps a seed's low 32 bits: pools and meta-test tasks must differ there (they once did not,
    and the first unseen sequences of a pool run were its own training tasks)."""
    pool = TaskSampler(*digits, num_tasks=2**16)
    pool_seeds = {(POOL_TASK_OFFSET + i) % 2**32 for i in range(2**16)}
    unseen = TaskSampler(*digits, unseen=True)
    unseen_seeds = {s % 2**32 for step in range(64) for s in unseen.task_seeds(step, 128)}  # 8,192 sequences
    assert len(unseen_seeds) == 64 * 128 and not pool_seeds & unseen_seeds
    assert all(POOL_TASK_OFFSET <= s < POOL_TASK_OFFSET + 2**16 for s in pool.task_seeds(0, 128))
    first_pool, first_unseen = task_of(POOL_TASK_OFFSET, 64, 10)[0], task_of(UNSEEN_TASK_OFFSET, 64, 10)[0]
    assert not torch.equal(first_pool, first_unseen)
    assert torch.equal(task_of(UNSEEN_TASK_OFFSET, 64, 10)[0], task_of(0, 64, 10)[0])  # the low bits name the task


def test_no_two_seed_families_meet(digits):
    """Every family of task seeds has its own range of torch's low 32 bits: meta-test tasks, the pipeline's
    projections (its default included), pools and the fixed task never name the same task."""
    spans = sorted(((start % 2**32, start % 2**32 + count), name) for name, (start, count) in SEED_FAMILIES.items())
    for (first, _), (second, _) in zip(spans, spans[1:]):
        assert first[1] <= second[0], (first, second)
    assert spans[-1][0][1] <= 2**32
    assert {s for s in TaskSampler(*digits, fixed_task_fraction=0.5).task_seeds(0, 8)} >= {FIXED_TASK_SEED}
    assert PIPELINE_TASK_OFFSET == SEED_FAMILIES["pipeline projections"][0]
    assert not torch.equal(task_of(PIPELINE_TASK_OFFSET, 64, 10)[0], task_of(FIXED_TASK_SEED, 64, 10)[0])


def test_meta_test_sequences_hold_distinct_images_and_meta_training_may_repeat(digits):
    x, y = digits
    unseen = TaskSampler(x, y, unseen=True, sequence_length=100).batch(0, 64)  # 100 of digits' test-size split
    training = TaskSampler(x, y, sequence_length=100).batch(0, 64)

    def repeats(batch):  # sequences in which some projected input occurs twice
        return sum(len(torch.unique(sequence, dim=0)) < len(sequence) for sequence in batch["inputs"])

    assert repeats(unseen) == 0 and repeats(training) > 0


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(num_tasks=0), "`num_tasks`"),
        (dict(num_tasks=2**30 + 1), "1 .. 2\\^30"),
        (dict(fixed_task_fraction=1.5), "in"),
    ],
)
def test_sampler_refuses_bad_settings(digits, kwargs, message):
    with pytest.raises(ValueError, match=message):
        TaskSampler(*digits, **kwargs)


def test_sgd_row_is_minibatch_sgd_on_cross_entropy():
    """One epoch with one minibatch covering all examples = one step of torch.optim.SGD on the mean CE."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 5, 4, generator=g), torch.randint(0, 3, (3, 5), generator=g)
    weight, bias = _sgd_linear(x, y, 3, learning_rate=0.5, epochs=1, batch_size=5, seed=0)
    for i in range(3):
        linear = torch.nn.Linear(4, 3)
        torch.nn.init.zeros_(linear.weight)
        torch.nn.init.zeros_(linear.bias)
        optimizer = torch.optim.SGD(linear.parameters(), lr=0.5)
        torch.nn.functional.cross_entropy(linear(x[i]), y[i]).backward()
        optimizer.step()
        torch.testing.assert_close(weight[i], linear.weight.detach().T)
        torch.testing.assert_close(bias[i], linear.bias.detach())


def test_sgd_row_learns_an_easy_task(digits):
    sampler = TaskSampler(*digits, sequence_length=60, seed=1)
    accuracy = sgd_accuracy(sampler, [1, 59], num_sequences=64)
    assert accuracy[1] < 0.4 < 0.75 < accuracy[59]  # 8x8 digits: SGD on 59 examples is far above chance


class _Oracle(torch.nn.Module):
    """Predicts y_t from the labels it is given: `shift` = 0 reads y_t itself (what a model must never do: accuracy 1),
    `shift` = 1 repeats y_{t-1} (class 0 at t = 0)."""

    def __init__(self, shift):
        super().__init__()
        self.shift, self.weight = shift, torch.nn.Parameter(torch.zeros(1))

    def forward(self, inputs, labels):
        shown = labels if self.shift == 0 else torch.cat([torch.zeros_like(labels[:, :1]), labels[:, :-1]], 1)
        return type("Out", (), {"logits": torch.nn.functional.one_hot(shown, 10).float()})


def test_in_context_accuracy_is_per_position_over_the_samplers_sequences(digits):
    sampler = TaskSampler(*digits, sequence_length=12, seed=4)
    assert in_context_accuracy(_Oracle(0), sampler, num_sequences=40, batch_size=16)["accuracy"] == [1.0] * 12
    labels = torch.cat([sampler.batch(step, size)["labels"] for step, size in ((0, 16), (1, 16), (2, 8))])
    expected = [float((labels[:, 0] == 0).float().mean())]
    expected += (labels[:, 1:] == labels[:, :-1]).float().mean(0).tolist()
    result = in_context_accuracy(_Oracle(1), sampler, num_sequences=40, batch_size=16)["accuracy"]
    torch.testing.assert_close(torch.tensor(result), torch.tensor(expected))


def test_in_context_accuracy_reads_every_position(digits):
    from ttt_hf import GPICLConfig, GPICLForInContextClassification

    model = GPICLForInContextClassification(
        GPICLConfig(backbone="lstm", input_dim=64, hidden_size=8, num_hidden_layers=1)
    )
    result = in_context_accuracy(model, TaskSampler(*digits, sequence_length=12), num_sequences=40, batch_size=16)
    assert len(result["accuracy"]) == len(result["loss"]) == 12
    assert all(0 <= a <= 1 for a in result["accuracy"]) and all(loss > 0 for loss in result["loss"])


def test_steps_to_leave_the_plateau():
    curves = [{"step": 100, "u": [0.1, 0.12]}, {"step": 200, "u": [0.1, 0.19]}, {"step": 300, "u": [0.3, 0.25]}]
    assert steps_to_leave_plateau(curves, "u") == 300
    assert steps_to_leave_plateau(curves[:2], "u") is None


@pytest.fixture(scope="module")
def meta_trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpicl") / "run"
    results = meta_train([
        "--backbone", "ttt_linear", "--dataset", "digits", "--eval_datasets", "digits", "--image_size", "8",
        "--hidden_size", "16", "--num_hidden_layers", "1", "--num_attention_heads", "2", "--sequence_length", "12",
        "--num_tasks", "4", "--max_steps", "4", "--eval_steps", "2", "--per_device_train_batch_size", "8",
        "--eval_sequences", "16", "--final_eval_sequences", "16", "--output_dir", str(out),
    ])  # fmt: skip
    return out, results


def test_a_tiny_meta_training_run_writes_model_results_and_plots(meta_trained):
    out, results = meta_trained
    for name in ("config.json", "model.safetensors", "all_results.json", "training_args.json",
                 "in_context_accuracy.png", "meta_training_curves.png", "modeling_gpicl.py",
                 "causal_ttt_layers.py"):  # fmt: skip
        assert (out / name).exists(), name
    saved = json.loads((out / "all_results.json").read_text())
    assert saved["train_steps"] == 4 and saved["backbone"] == "ttt_linear"
    assert [c["step"] for c in saved["curves"]] == [2, 4, 4]  # two evaluations, then the final one
    assert set(saved["curves"][-1]) == {"step", "seen", "unseen-digits"} and len(saved["curves"][-1]["seen"]) == 12
    assert (
        saved["state_size"] == 2 * 2 * 8 * 8 and saved["state_size_examples"] == 11
    )  # TTT-Linear: W [k, k] twice per head
    assert saved["optimizer"] == {"meta_batch_size": 8, "learning_rate": 1e-3, "adam_epsilon": 1e-8}
    assert interventions(saved["meta_arguments"], saved["optimizer"]) == "4 tasks, meta-batch 8"
    assert set(saved["sgd"]["unseen-digits"]) == {"1", "2", "5", "10", "11"}
    assert 0 <= saved["final_unseen-digits_accuracy_last"] <= 1
    model = AutoModelForTokenClassification.from_pretrained(out)
    assert model.config.backbone == "ttt_linear" and model.config.input_dim == 64


def test_pipeline_accuracy_counts_what_the_pipeline_answers(monkeypatch):
    """A stand-in pipeline that always answers the first support label: the accuracy is the share of queries of
    that class, and every image arrives at its own size with its class name."""
    images, labels = load_image_arrays("digits", "test")
    seen = []

    def first_label(model):
        def classify(queries, support, support_labels, projection_seed):
            seen.append((model, len(queries), len(support), {image.size for image in queries + support},
                         projection_seed))  # fmt: skip
            return [[{"label": support_labels[0], "score": 1.0}] for _ in queries]

        return classify

    monkeypatch.setattr("transformers.pipeline", lambda task, model: first_label(model))
    found = pipeline_accuracy("some/learner", "digits", support=11, queries=6, draws=3, seed=1)
    expected, rng = 0, np.random.default_rng(1)
    for _ in range(3):
        chosen = rng.permutation(len(labels))[:17]
        expected += int((labels[chosen[11:]] == labels[chosen[0]]).sum())
    assert found == expected / 18 and 0 < found < 1
    tasks = [PIPELINE_TASK_OFFSET + 1 + 3 + draw for draw in range(3)]  # each draw its own task (seed 1, 3 draws)
    assert seen == [("some/learner", 6, 11, {(8, 8)}, task) for task in tasks]
    with pytest.raises(ValueError, match="180 images, fewer than support \\+ queries = 200"):
        pipeline_accuracy("some/learner", "digits", support=150, queries=50)


def test_pipeline_classifies_queries_from_labelled_support(meta_trained):
    out, _ = meta_trained
    classify = pipeline("in-context-classification", model=str(out))
    assert isinstance(classify, InContextClassificationPipeline)
    rng = np.random.default_rng(0)
    support = [Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)) for _ in range(6)]
    labels = ["cat", "dog", "cat", "bird", "dog", "cat"]
    result = classify(support[:2], support=support, support_labels=labels, top_k=3)
    assert len(result) == 2 and all(len(r) == 3 for r in result)
    assert {r["label"] for r in result[0]} == {"cat", "dog", "bird"}  # only the support's classes
    assert abs(sum(r["score"] for r in result[0]) - 1) < 1e-5
    # the pipeline is the model on the documented preprocessing
    x = torch.stack([torch.from_numpy(np.asarray(i, dtype=np.float32).reshape(-1)) for i in support])
    mean, std = x.mean(), x.std()
    projection, _ = task_of(PIPELINE_TASK_OFFSET, 64, 10)  # the default: the first of the pipeline's family
    z = (x - mean) / std @ projection.T
    inputs = torch.cat([z, z[:1]])[None]
    label_ids = torch.tensor([[0, 1, 0, 2, 1, 0, -100]])
    logits = classify.model(inputs=inputs, labels=label_ids).logits[0, -1, :3].softmax(-1)
    scores = {r["label"]: r["score"] for r in result[0]}
    torch.testing.assert_close(torch.tensor([scores["cat"], scores["dog"], scores["bird"]]), logits)
    with pytest.raises(ValueError, match="support_labels"):
        classify(support[0], support=support, support_labels=labels[:3])
    with pytest.raises(ValueError, match="at most 10"):
        classify(support[0], support=support * 2, support_labels=[str(i) for i in range(12)])


def test_pipeline_warns_on_a_support_set_longer_than_meta_training(meta_trained, caplog):
    """Meta-trained on sequences of 12: 11 support examples and the query are what it learned; 12 are not."""
    out, _ = meta_trained
    classify = pipeline("in-context-classification", model=str(out))
    assert classify.model.config.trained_sequence_length == 12
    rng = np.random.default_rng(0)
    support = [rng.normal(size=64).astype(np.float32) for _ in range(12)]
    labels = [str(i % 3) for i in range(12)]
    with caplog.at_level("WARNING"):
        classify(support[0], support=support[:11], support_labels=labels[:11])
    assert "meta-trained on" not in caplog.text
    with caplog.at_level("WARNING"):
        classify(support[0], support=support, support_labels=labels)
    assert "sequences of 13, longer than the 12 this learner was meta-trained on" in caplog.text
    assert "at most 11 examples" in caplog.text


REMOTE_LOAD = HIDE_TTT_HF + textwrap.dedent(
    """
    import torch
    from transformers import AutoModelForTokenClassification
    repo, x, labels = sys.argv[1:] if len(sys.argv) > 1 else {args}
    model = AutoModelForTokenClassification.from_pretrained(repo, trust_remote_code=True).eval()
    with torch.no_grad():
        logits = model(torch.load(x), torch.load(labels)).logits
    print("RESULT " + json.dumps({{"module": type(model).__module__, "logits": logits.tolist()}}))
    """
)


def test_a_learner_publishes_with_its_card_and_loads_from_the_hub_as_remote_code(meta_trained, hub_server, tmp_path):
    out, results = meta_trained
    repo = f"{hub_server.user}/gpicl-digits"
    files = repo_files(out, repo)
    assert {"README.md", "config.json", "model.safetensors", "all_results.json", "training_args.json",
            "modeling_gpicl.py", "causal_ttt_layers.py", "ttt_layers.py"} <= set(files)  # fmt: skip
    assert not any(name.endswith(".bin") for name in files)  # no pickle
    card = ModelCard(files["README.md"].decode())
    [entry] = card.data.eval_results
    assert entry.metric_value == results["final_unseen-digits_accuracy_last"] and entry.metric_name == (
        "accuracy after 11 examples"
    )
    assert "ttt-hf meta-train --backbone ttt_linear" in card.text and "| unseen-digits |" in card.text
    assert card.data.pipeline_tag == "other" and "token-classification" not in str(card.data.to_dict())
    assert entry.dataset_split == "train" and "held out of the training split" in entry.dataset_name  # digits
    text = card.text
    assert "@article{kirsch2022general" in text and "@article{sun2024learning" in text and "@software{ttt_hf" in text
    assert "@article{sun2023learning" not in text  # the vision paper is not this model's
    assert f'model="{repo}", trust_remote_code=True' in text and "support, queries = images[:99]" in text
    assert "## Intended use and limits" in text and "an independent implementation" in text
    assert all(f"]({name})" in text for name in files if name.endswith(".png"))  # every plot, with its caption
    recorded = json.loads((out / "all_results.json").read_text())
    meta = recorded["meta_arguments"]
    for key in ("sgd", "nearest_neighbour", "logistic"):  # the simple learners on the same sequences, with intervals
        value = recorded[key]["unseen-digits"][str(meta["sequence_length"] - 1)]
        assert f"{100 * value:.1f} ± {100 * interval(value, meta['final_eval_sequences']):.1f} %" in text
    assert json.loads(files["config.json"])["ttt_hf_version"] == ttt_hf.__version__  # the code's provenance
    published = publish(out, repo)
    assert published.commit == hub_server.head(repo) and set(hub_server.files(repo)) == set(files) | {
        ".gitattributes",
        MANIFEST_FILE,
    }
    x, labels = torch.randn(2, 12, 64), torch.randint(0, 10, (2, 12))
    torch.save(x, tmp_path / "x.pt")
    torch.save(labels, tmp_path / "labels.pt")
    args = json.dumps([repo, str(tmp_path / "x.pt"), str(tmp_path / "labels.pt")])
    result = hub_server.python(REMOTE_LOAD.format(args=args), tmp_path / "hf_home")
    report = json.loads(result.stdout.split("RESULT ", 1)[1])
    assert report["module"].startswith("transformers_modules.")
    with torch.no_grad():
        expected = AutoModelForTokenClassification.from_pretrained(out)(x, labels).logits
    torch.testing.assert_close(torch.tensor(report["logits"]), expected, rtol=1e-6, atol=1e-6)


def test_curriculum_gives_fewer_classes_per_task_first(digits):
    sampler = TaskSampler(*digits, sequence_length=40, curriculum=parse_curriculum("2:5,5:10"))
    assert [sampler.classes_per_task(s) for s in (0, 4, 5, 9, 10, 1000)] == [2, 2, 5, 5, 10, 10]
    for step, k in ((0, 2), (7, 5)):
        labels = sampler.batch(step, 16)["labels"]
        assert all(len(set(row.tolist())) <= k for row in labels) and max(len(set(r.tolist())) for r in labels) == k
    with pytest.raises(ValueError, match="value:until_step"):
        parse_curriculum("2-500")
    with pytest.raises(ValueError, match="increasing"):
        parse_curriculum("2:500,5:100")
    for text in ("2:500,5:500", "2:0"):  # a stage that would never run
        with pytest.raises(ValueError, match="increasing positive steps"):
            parse_curriculum(text)


def test_bursty_sequences_repeat_few_examples_first(digits):
    stages = parse_curriculum("3:5,20:10", "--distinct_examples")
    sampler = TaskSampler(*digits, sequence_length=40, distinct_examples=stages, seed=3)
    assert [sampler.examples_per_sequence(s) for s in (0, 4, 5, 9, 10)] == [3, 3, 20, 20, None]
    for step, m in ((0, 3), (7, 20)):
        batch = sampler.batch(step, 8)
        distinct = [len(torch.unique(row, dim=0)) for row in batch["inputs"]]
        assert max(distinct) <= m and max(distinct) >= min(m, 10)  # repeats of at most m examples
        for row, labels in zip(batch["inputs"], batch["labels"]):  # one task: equal inputs have equal labels
            same = (row[:, None] == row[None]).all(-1)
            assert (labels[:, None] == labels[None])[same].all()
    fresh = sampler.batch(10, 8)["inputs"]
    assert min(len(torch.unique(row, dim=0)) for row in fresh) > 30  # afterwards every example is drawn afresh
    torch.testing.assert_close(sampler.batch(7, 8)["inputs"], sampler.batch(7, 8)["inputs"])  # reproducible
    with pytest.raises(ValueError, match="--distinct_examples takes value:until_step"):
        parse_curriculum("10-300", "--distinct_examples")
    with pytest.raises(ValueError, match="must be >= 1"):
        TaskSampler(*digits, distinct_examples=((5, 0),))


def test_report_tabulates_runs_and_plots(meta_trained, tmp_path):
    from ttt_hf.gpicl.report import interval, load_runs, main, table

    out, results = meta_trained
    text = table(load_runs([out]))
    row = text.splitlines()[2]
    p, n = results["final_unseen-digits_accuracy_last"], 16  # --final_eval_sequences 16
    half = 1.96 * (min(max(p, 1 / n), 1 - 1 / n) * (1 - min(max(p, 1 / n), 1 - 1 / n)) / n) ** 0.5
    assert interval(p, n) == pytest.approx(half) and interval(0.5, 1024) == pytest.approx(0.0306, abs=1e-4)
    base = [100 * results[key]["unseen-digits"][11] for key in ("sgd", "nearest_neighbour", "logistic")]
    cell = f"{100 * p:.1f} ± {100 * half:.1f} % (SGD {base[0]:.1f}, 1-NN {base[1]:.1f}, LR {base[2]:.1f} %)"
    assert row.startswith("| ttt_linear | 4 tasks, meta-batch 8 |") and cell in row
    seen = results["final_seen_accuracy_last"]  # a pool of 4 tasks: the meta-training tasks have a column
    assert "| time | seen | unseen-digits (baselines) |" in text.splitlines()[0]
    assert f"| {100 * seen:.1f} ± {100 * interval(seen, n):.1f} % | {cell} |" in row
    assert "16 sequences, distinct examples per sequence; ± a 95 % interval" in text
    main([str(out), "--plot", str(tmp_path / "cmp.png"), "--task_set", "unseen-digits"])
    assert (tmp_path / "cmp.png").stat().st_size > 1000


def test_report_windows_average_the_periodic_evaluations(meta_trained, tmp_path, capsys):
    """`report --windows N`: per run, the mean of its periodic evaluations (not the final one) in each N steps, an
    evaluation at a window's last step inside it, up to the longest run's end; a window without an evaluation is a
    dash; a width below one step is refused before anything is read."""
    import shutil

    from ttt_hf.gpicl import report

    out, results = meta_trained
    run = shutil.copytree(out, tmp_path / "run")  # periodic evaluations at steps 3, 4, 6 and a final one at 6
    curves = [{"step": step, "unseen-digits": [0.0, a]} for step, a in ((3, 0.1), (4, 0.3), (6, 0.5), (6, 0.9))]
    (run / "all_results.json").write_text(json.dumps({**results, "train_steps": 6, "curves": curves}))
    longer = shutil.copytree(out, tmp_path / "longer")  # recorded as 8 steps long, evaluated at 2 and 4
    (longer / "all_results.json").write_text(json.dumps({**results, "train_steps": 8}))
    at = {c["step"]: c["unseen-digits"][-1] for c in results["curves"][:-1]}
    report.main([str(run), str(longer), "--windows", "3", "--task_set", "unseen-digits"])
    printed = capsys.readouterr().out.split("\n\n")[-2].splitlines()  # the windows' table
    assert printed[0] == "| run | steps 1–3 | steps 4–6 | steps 7–8 |"
    assert printed[2:] == [
        "| `run` | 10.0 % | 40.0 % | — |",
        f"| `longer` | {100 * at[2]:.1f} % | {100 * at[4]:.1f} % | — |",
    ]
    assert "16 sequences per evaluation" in report.windows(report.load_runs([run]), "unseen-digits", 3)
    with pytest.raises(SystemExit):
        report.main([str(tmp_path / "no-such-run"), "--windows", "0"])
    assert "--windows must be a positive number of steps, got 0" in capsys.readouterr().err


def test_report_plot_gives_seeds_of_one_recipe_one_colour(meta_trained, tmp_path, monkeypatch):
    """Seeds of one recipe and length share a colour and differ in marker; another length gets its own colour; the
    legend names each run's folder."""
    import shutil

    from ttt_hf.common import plots
    from ttt_hf.gpicl import report

    out, _ = meta_trained
    longer = shutil.copytree(out, tmp_path / "longer")
    results = json.loads((longer / "all_results.json").read_text())
    (longer / "all_results.json").write_text(json.dumps({**results, "train_steps": 3 * results["train_steps"]}))
    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.append(fig))
    report.plot(report.load_runs([out, shutil.copytree(out, tmp_path / "seed1"), longer]), "x.png", "unseen-digits")
    lines = figures[0].axes[0].get_lines()[:3]  # then the chance lines
    assert [line.get_color() for line in lines] == ["C0", "C0", "C1"]
    assert [line.get_marker() for line in lines] == ["o", "s", "o"]
    assert [line.get_label().split(":")[0] for line in lines] == [out.name, "seed1", "longer"]


def test_state_study_pools_seeds_of_one_configuration_and_places_it_at_its_state_size(meta_trained, tmp_path, capsys):
    """`python -m ttt_hf.gpicl.state`: runs that differ only in their seed are one row with every seed's accuracy
    (the default seed first) and their mean ± half-range; another head count is another row at its own state size;
    a run on other data stays apart under a name of its own; the same run twice, or a folder that is not a run, is
    refused (on the command line with a message, no traceback); the simple learners are averaged once per set of
    sequences, and with --simple_learners once per configuration, next to it; CSV and plot written."""
    import shutil

    from ttt_hf.gpicl import report, state

    out, results = meta_trained
    p, sgd = results["final_unseen-digits_accuracy_last"], results["sgd"]["unseen-digits"][11]
    copies = {}
    for name, seed, heads, accuracy in (("a", None, 2, p), ("b", 1, 2, 0.25), ("c", 2, 1, 0.5), ("d", 3, 2, 0.75)):
        copies[name] = shutil.copytree(out, tmp_path / name)
        saved = json.loads((copies[name] / "all_results.json").read_text())
        saved["final_unseen-digits_accuracy_last"] = accuracy
        if name == "b":  # its own sequences: its own SGD accuracy
            saved["sgd"]["unseen-digits"]["11"] = 0.5
        if name == "d":  # the same model and recipe on other data: not a seed of the same configuration
            saved["meta_arguments"]["sequence_length"] = 24
        if heads == 1:  # another configuration: one head, a state twice as large
            saved["state_size"] *= 2
            config = json.loads((copies[name] / "config.json").read_text())
            (copies[name] / "config.json").write_text(json.dumps({**config, "num_attention_heads": 1}))
        (copies[name] / "all_results.json").write_text(json.dumps(saved))
        if seed is not None:
            arguments = json.loads((copies[name] / "training_args.json").read_text())
            arguments["training"]["seed"] = seed
            (copies[name] / "training_args.json").write_text(json.dumps(arguments))
    groups = state.main([str(copies[n]) for n in "cbda"] + ["--csv", str(tmp_path / "s.csv"), "--plot",
                        str(tmp_path / "s.png"), "--simple_learners"])  # fmt: skip
    printed = capsys.readouterr().out.splitlines()
    assert [g["name"] for g in groups] == ["TTT-Linear, 2 heads (a)", "TTT-Linear, 2 heads (d)", "TTT-Linear, 1 head"]
    assert [r["seed"] for r in groups[0]["runs"]] == [42, 1] and groups[0]["accuracy"]["unseen-digits"] == [p, 0.25]
    assert groups[2]["state_size"] == 2 * groups[0]["state_size"] == 2 * 2 * 2 * 8 * 8
    mean, half = (p + 0.25) / 2, abs(p - 0.25) / 2
    assert state.spread([p, 0.25]) == pytest.approx((mean, half)) and state.spread([0.5]) == (0.5, 0.0)
    lines = state.table(groups).splitlines()
    assert lines[2].startswith("| TTT-Linear, 2 heads (a) | 256 |")
    assert f"| {100 * mean:.1f} ± {100 * half:.1f} % |" in lines[2]
    assert f"{100 * p:.1f} / 25.0 %" in lines[2] and "| 42, 1 |" in lines[2]
    assert lines[4].startswith("| TTT-Linear, 1 head | 512 |") and "| 50.0 ± 0.0 % |" in lines[4]
    # the sets of sequences of seeds 42, 1 and 2 (d's longer ones have no SGD after 11 examples): b's once
    assert state.baselines(groups, "unseen-digits")["SGD"] == pytest.approx((2 * sgd + 0.5) / 3)
    # per configuration: a and b's two sets of sequences; c's own; d's longer ones have none after 23 examples
    nn, lr = (results[key]["unseen-digits"][11] for key in ("nearest_neighbour", "logistic"))
    assert printed[0].endswith("| unseen-digits: mean ± half-range | unseen-digits: simple learners, same sequences |")
    assert printed[2].endswith(f"| 1-NN {100 * nn:.1f}, LR {100 * lr:.1f}, SGD {100 * (sgd + 0.5) / 2:.1f} % |")
    assert printed[3].endswith("| — |") and printed[4].endswith(f"SGD {100 * sgd:.1f} % |")
    assert "simple learners" not in lines[0] and "Simple learners" not in lines[-1]  # only with the flag
    # the fewest seeds of a configuration (one: c's and d's) set the widest interval of a mean: ± 24.5 on 16 sequences
    assert "A mean over 1 or more seeds stands on 1 times the sequences: ± at most 24.5 points" in printed[-1]
    written = (tmp_path / "s.csv").read_text().splitlines()
    assert len(written) == 5 and written[1].startswith('"TTT-Linear, 2 heads (a)",a,42,256,')
    assert (tmp_path / "s.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="share a seed"):
        state.group(state.load([copies["a"], copies["a"]]))
    (tmp_path / "c.log").write_text("a run's log, not a run")
    with pytest.raises(FileNotFoundError, match="c.log is not a finished meta-training run"):
        state.load([copies["a"], tmp_path / "c.log"])
    capsys.readouterr()
    for module, given in ((state, [copies["a"], tmp_path / "c.log"]), (report, [tmp_path / "c.log"]),
                          (state, [copies["a"], copies["a"]])):  # fmt: skip
        with pytest.raises(SystemExit) as raised:  # the command line says what is wrong, with no traceback
            module.main([str(path) for path in given])
        assert raised.value.code == 2
        error = capsys.readouterr().err
        assert ("c.log is not a finished meta-training run" in error) != ("share a seed" in error)


def test_the_published_state_study_is_what_its_run_records_give():
    """docs/gpicl/state.csv and the table in docs/gpicl.md (question 1) are `python -m ttt_hf.gpicl.state` on the
    stored learners and the q1 runs' records kept in docs/gpicl/q1: every row, to the last digit."""
    import csv
    from pathlib import Path

    from ttt_hf.gpicl import state

    root = Path(__file__).resolve().parents[1]
    folders = sorted(root.glob("model_cards/gpicl-*-mnist-5k*")) + sorted(root.glob("docs/gpicl/q1/*/"))
    rows = state.rows(state.group(state.load(folders)))
    published = list(csv.DictReader(open(root / "docs" / "gpicl" / "state.csv")))
    assert len(rows) == len(published) >= 2 * 12  # two task sets, at least 12 runs
    assert [{k: str(v) for k, v in row.items()} for row in rows] == published
    names = {row["learner"] for row in rows}
    assert {"LSTM", "Transformer", "TTT-Linear, 1 head", "TTT-Linear, 4 heads", "TTT-Linear, 16 heads"} <= names
    text = (root / "docs" / "gpicl.md").read_text()  # its table, as the tool prints it
    assert all(f"   {line}\n" in text for line in state.table(state.group(state.load(folders))).splitlines()[:-2])


@pytest.mark.parametrize("backbone, seeds", [("transformer", (DEFAULT_SEED, 1, 2)), ("ttt-linear", (DEFAULT_SEED, 1))])
def test_the_published_longer_meta_training_is_what_its_run_records_give(backbone, seeds):
    """Question 5's tables in docs/gpicl.md are `python -m ttt_hf.gpicl.state --simple_learners` and `python -m
    ttt_hf.gpicl.report --windows 500` on a zoo learner's three seeds and the kept records of the grid's q5 runs
    of its recipe: the grid's commands, three times the zoo learner's steps, each seed on its zoo seed's
    sequences."""
    from pathlib import Path

    from ttt_hf.gpicl import grid, report, state

    root = Path(__file__).resolve().parents[1]
    suffix = {seed: "" if seed == DEFAULT_SEED else f"-seed{seed}" for seed in (DEFAULT_SEED, 1, 2)}
    zoo = [root / f"model_cards/gpicl-{backbone}-mnist-5k{s}" for s in suffix.values()]
    q5 = [root / f"docs/gpicl/q5/q5-{backbone}-steps3000{suffix[seed]}" for seed in seeds]
    groups = state.group(state.load(zoo + q5))
    assert [[Path(r["path"]) for r in g["runs"]] for g in groups] == [zoo, q5]  # one configuration each, by seed
    for short, longer in zip(*(g["runs"] for g in groups)):  # the seeds both have
        name, seed = Path(longer["path"]).name, longer["seed"]
        assert short["seed"] == seed
        given = longer["command"].split(" meta-train ")[1].split(" --output_dir")[0]
        assert given == " ".join(grid.seeded(grid.grid(), seed)[name][1:])
        assert longer["train_steps"] == 3 * short["train_steps"] == 3000
        assert longer["sgd"] == short["sgd"]  # the zoo seed's sequences
    text = (root / "docs" / "gpicl.md").read_text()
    windows = report.windows(report.load_runs(zoo + q5), "unseen-mnist-5k", 500)
    for table in (state.table(groups, simple_learners=True), windows):
        lines = table.splitlines()[:-2]  # the table without its footnote
        assert f"\n\n   {lines[0]}\n   {lines[1]}\n" in text  # a table of its own: a blank line, its head
        assert all(f"   {line}\n" in text for line in lines[2:])
    # the prose: the lift per seed, and the q5 runs retracing their zoo runs through step 1,000
    prose = " ".join(text.split())
    if backbone == "transformer":  # per seed and in the mean of the three seeds, on mnist-5k
        short, longer = ([round(100 * v, 1) for v in g["accuracy"]["unseen-mnist-5k"]] for g in groups)
        lifts = [f"{b - a:+.1f}" for a, b in zip(short, longer)]
        means = [round(100 * state.spread(state.measured(g, "unseen-mnist-5k"))[0], 1) for g in groups]
        lift = f"by {means[1] - means[0]:.1f} points on mnist-5k ({means[0]} to {means[1]} %), on every seed"
        assert f"{lift} ({', '.join(lifts)})" in prose
        assert "seeds 1 and 2 retrace their zoo runs exactly through step 1,000" in prose
    else:  # per seed and in the mean of the two seeds, on both task sets
        for task_set, name in (("unseen-mnist-5k", "mnist-5k"), ("unseen-fashion-mnist", "Fashion-MNIST")):
            pairs = [[100 * v for v in g["accuracy"][task_set][: len(seeds)]] for g in groups]
            shown = [[round(v, 1) for v in values] for values in pairs]
            lifts = " and ".join(f"{b - a:+.1f}".replace("-", "−") for a, b in zip(*shown))
            accuracies = ", ".join(f"{a} to {b} %" for a, b in zip(*shown))
            assert f"{lifts} on {name} ({accuracies}" in prose or f"{lifts} points on {name} ({accuracies}" in prose
        zoo_mean, q5_mean = (100 * sum(g["accuracy"]["unseen-mnist-5k"][: len(seeds)]) / len(seeds) for g in groups)
        assert f"{zoo_mean:.1f} to {q5_mean:.1f} % in their mean, {q5_mean - zoo_mean:+.1f})" in prose
        assert "Both seeds retrace their zoo runs' training exactly through step 1,000" in prose
    for short, longer in zip(*(g["runs"] for g in groups)):
        losses = [[e["loss"] for e in r["log_history"] if "loss" in e and e["step"] <= 1000] for r in (short, longer)]
        curves = [[c for c in r["curves"][:-1] if c["step"] <= 1000] for r in (short, longer)]
        # the Transformer's seed 42 drifted from step 150; the zoo's seed-42 runs recorded their periodic evaluations
        # before those drew distinct images
        assert losses[0] and curves[0]
        assert (losses[0] == losses[1]) == (backbone == "ttt-linear" or longer["seed"] != DEFAULT_SEED)
        assert (curves[0] == curves[1]) == (longer["seed"] != DEFAULT_SEED)


def test_nearest_neighbour_and_logistic_baselines_match_scikit_learn(digits):
    """The simple learners beside SGD, on the same sequences: 1-NN is scikit-learn's, and logistic regression
    trained to convergence (L-BFGS, L2 penalty) predicts as scikit-learn's at the same penalty."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    from ttt_hf.gpicl.evaluation import LOGISTIC_L2, logistic_accuracy, nearest_neighbour_accuracy

    sampler = TaskSampler(*digits, unseen=True, sequence_length=40)
    batch = sampler.batch(0, 16)
    for t in (5, 30):
        knn, logistic = [], []
        for x, y in zip(batch["inputs"].numpy(), batch["labels"].numpy()):
            knn.append(KNeighborsClassifier(1).fit(x[:t], y[:t]).predict(x[t : t + 1])[0] == y[t])
            fitted = LogisticRegression(C=1 / (LOGISTIC_L2 * t), tol=1e-8, max_iter=5000).fit(x[:t], y[:t])
            logistic.append(fitted.predict(x[t : t + 1])[0] == y[t])
        assert nearest_neighbour_accuracy(sampler, [t], 16)[t] == pytest.approx(sum(knn) / 16)
        assert logistic_accuracy(sampler, [t], 16)[t] == pytest.approx(sum(logistic) / 16, abs=1 / 16)
    assert nearest_neighbour_accuracy(sampler, [0], 16)[0] == pytest.approx(
        float((batch["labels"][:, 0] == 0).float().mean())
    )


def test_longer_sequences_than_meta_training_are_measured_on_the_same_task_family(meta_trained, tmp_path, capsys):
    """At the trained length the study gives back the run's own final accuracy (same sequences); longer sequences
    report after every multiple of the trained context and at their end, with intervals, as CSV and plot."""
    from ttt_hf.gpicl import lengths

    out, _ = meta_trained
    recorded = json.loads((out / "all_results.json").read_text())["final_unseen-digits_accuracy_last"]
    rows = lengths.main([str(out), "--lengths", "12,24", "--sequences", "16", "--csv", str(tmp_path / "l.csv"),
                         "--plot", str(tmp_path / "l.png")])  # fmt: skip
    assert [(row["length"], row["examples"]) for row in rows] == [(12, 11), (24, 11), (24, 23)]
    assert rows[0]["accuracy"] == recorded and all(0 <= row["accuracy"] <= 1 for row in rows)
    assert rows[0]["positions"] == "learned" and rows[0]["trained_length"] == 12
    assert (tmp_path / "l.png").stat().st_size > 0 and len((tmp_path / "l.csv").read_text().splitlines()) == 4
    assert "| run | learned | unseen-digits | 24 | 23 |" in capsys.readouterr().out


def test_longer_sequences_with_baselines_give_back_the_runs_own_simple_learners(meta_trained, tmp_path, capsys):
    """`--baselines all`: SGD, 1-NN and logistic regression on the same sequences, once per set of sequences (a copy
    of the run with the same seed adds none, one with another seed adds its own); at the trained length they are the
    run's own recorded baselines."""
    import shutil

    from ttt_hf.gpicl import lengths

    out, _ = meta_trained
    recorded = json.loads((out / "all_results.json").read_text())
    copy, other = shutil.copytree(out, tmp_path / "copy"), shutil.copytree(out, tmp_path / "other")
    arguments = json.loads((other / "training_args.json").read_text())
    arguments["training"]["seed"] = 7  # other sequences: the simple learners again
    (other / "training_args.json").write_text(json.dumps(arguments))
    rows = lengths.main([str(out), str(copy), str(other), "--lengths", "12,24", "--sequences", "16", "--baselines",
                         "all", "--plot", str(tmp_path / "l.png")])  # fmt: skip
    learners = list(dict.fromkeys(row["learner"] for row in rows))
    assert learners == ["run", "SGD, seed 42", "1-NN, seed 42", "LR, seed 42", "copy", "other", "SGD, seed 7",
                        "1-NN, seed 7", "LR, seed 7"]  # fmt: skip
    for key, (short, _) in BASELINE_NAMES.items():
        mine = {(r["length"], r["examples"]): r for r in rows if r["learner"] == f"{short}, seed 42"}
        assert list(mine) == [(12, 11), (24, 11), (24, 23)] and mine[12, 11]["positions"] == ""
        assert mine[12, 11]["accuracy"] == pytest.approx(recorded[key]["unseen-digits"]["11"])
    assert (tmp_path / "l.png").stat().st_size > 1000
    some = lengths.main([str(out), "--lengths", "12", "--sequences", "16", "--baselines", "nearest_neighbour"])
    assert [row["learner"] for row in some] == ["run", "1-NN, seed 42"]
    with pytest.raises(SystemExit):  # argparse's error: names the simple learners there are
        lengths.main([str(out), "--baselines", "svm"])
    assert "unknown ['svm']; the simple learners are sgd, nearest_neighbour, logistic" in capsys.readouterr().err


def test_the_grid_is_valid_meta_train_commands_that_vary_one_thing(monkeypatch):
    """Every grid run parses as `ttt-hf meta-train`; q1's TTT-Linear runs and LSTM have about the same parameters,
    the TTT-Linear states 15x apart; --seed N names the runs NAME-seedN; q2 drops the positions; q4 drops the
    convolutions and the bursty start; q5 is the recipe three times longer; --steps sizes them all, and a seed or
    length after -- is refused; --only takes whole names and prefixes."""
    from ttt_hf.gpicl import grid
    from ttt_hf.gpicl.meta_training import build_model, parse_arguments

    started = []  # what `grid run` would start
    monkeypatch.setattr(grid, "run_many", lambda chosen, root, parallel: started.append(list(chosen)) or {})
    runs = grid.grid()
    assert len(runs) == len(set(runs)) >= 28
    parsed = {name: parse_arguments(command[1:]) for name, command in runs.items()}
    sizes = {}
    for heads in (1, 4, 16):
        meta, _ = parsed[f"q1-ttt-linear-heads{heads}"]
        model = build_model(meta)
        sizes[heads] = (sum(p.numel() for p in model.parameters()), model.state_size(99))
    params = [count for count, _ in sizes.values()]
    lstm = build_model(parsed["q1-lstm"][0])
    params.append(sum(p.numel() for p in lstm.parameters()))
    zoo_learner = sizes[4][0]  # about the parameters of the zoo's TTT-Linear (one head learns a larger W_0)
    assert all(abs(count / zoo_learner - 1) < 0.05 for count in params)
    assert lstm.state_size(99) == 2 * 4 * 168 and parsed["q1-lstm"][0].distinct_examples == "10:400"
    again = grid.seeded(runs, 2)
    assert again["q1-lstm-seed2"][-2:] == ["--seed", "2"] and grid.seeded(runs, 42) == runs
    assert parse_arguments(again["q1-ttt-linear-heads1-seed2"][1:])[1].seed == 2
    with pytest.raises(ValueError, match="grid run --seed N"):  # a seed after -- would run under the default's name
        grid.main(["run", "--root", "unused", "--only", "q1-lstm", "--", "--seed", "3"])
    assert sizes[1][1] > sizes[4][1] > sizes[16][1] and sizes[1][1] / sizes[16][1] > 10  # states 15x apart
    assert "position_embedding_type=none" in parsed["q2-ttt-linear-no-positions"][0].config_overrides
    meta, args = parsed["q4-transformer-batch2048-eps1e-16"]
    assert (meta.config_overrides, meta.distinct_examples, args.adam_epsilon) == (None, None, 1e-16)
    assert parsed["q3-ttt-linear-tasks256"][0].num_tasks == 256 and parsed["q1-ttt-mlp-hidden4"][1].max_steps == 600
    longer = parsed["q5-transformer-steps3000"]  # q5: the zoo learner's recipe, three times as long
    assert longer[1].max_steps == 3000 and longer[0].config_overrides == "ttt_conv_size=2"
    sized = grid.grid(steps=500)  # the device call's --steps: every run that long, TTT-MLP's too, q5's three times
    assert parse_arguments(sized["q1-ttt-mlp-hidden4"][1:])[1].max_steps == 500
    assert [name for name in sized if name.startswith("q5")] == ["q5-transformer-steps1500", "q5-ttt-linear-steps1500"]
    assert parse_arguments(sized["q5-ttt-linear-steps1500"][1:])[1].max_steps == 1500
    for length in (["--max_steps", "3"], ["--max-steps=3"], ["--steps", "3"]):  # it would cut q5's runs short
        with pytest.raises(ValueError, match="grid run --steps N"):
            grid.main(["run", "--root", "unused", "--only", "q5", "--", *length])
    # --only: a run's whole name is that run alone (hidden1, not hidden16 too), else a prefix; several, comma-separated
    grid.main(["run", "--root", "unused", "--only", "q1-ttt-mlp-hidden1", "--seed", "1"])
    grid.main(["run", "--root", "unused", "--only", "q1-ttt-mlp-hidden"])
    grid.main(["run", "--root", "unused", "--only", "q1-ttt-linear-heads1,q1-ttt-linear-heads16,q5"])
    assert started == [
        ["q1-ttt-mlp-hidden1-seed1"],
        ["q1-ttt-mlp-hidden1", "q1-ttt-mlp-hidden4", "q1-ttt-mlp-hidden16"],
        ["q1-ttt-linear-heads1", "q1-ttt-linear-heads16", "q5-transformer-steps3000", "q5-ttt-linear-steps3000"],
    ]
    with pytest.raises(ValueError, match="No grid run is or starts with 'q9'"):
        grid.main(["run", "--root", "unused", "--only", "q2,q9"])
    with pytest.raises(ValueError, match="--steps must be a positive"):
        grid.main(["list", "--steps", "0"])


@pytest.mark.slow
def test_the_grid_device_call_dry_run_on_the_cpu_runs_and_packs_without_weights(tmp_path):
    """scripts/train_zoo_gpu.sh with JOB=gpicl-grid on a CPU (ALLOW_CPU): q2's two runs at once, tiny and short,
    packed without weights; they unpack into run folders the length study reads."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from ttt_hf import zoo
    from ttt_hf.gpicl import lengths

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "ALLOW_CPU": "1", "NO_WHEELS": "1", "PYTHON": sys.executable, "OUT": str(tmp_path / "out"),
           "RUNS": str(tmp_path / "runs"), "SITE": str(tmp_path / "site"), "DATA_DIR": "", "JOB": "gpicl-grid",
           "ONLY": "q2", "PARALLEL": "2", "STEPS": "3",
           "EXTRA": "--eval_datasets digits --dataset digits --image_size 8 --hidden_size 16 --num_hidden_layers 1 "
           "--num_attention_heads 2 --sequence_length 12 --eval_steps 3 --eval_sequences 8 "
           "--final_eval_sequences 8 --per_device_train_batch_size 4 --use_cpu true"}  # fmt: skip
    done = subprocess.run(["bash", "scripts/train_zoo_gpu.sh"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    log = (tmp_path / "out" / "device_call.log").read_text()
    assert done.returncode == 0 and "] done" in log, done.stdout[-3000:] + done.stderr[-3000:]
    assert "finished: q2-transformer-no-positions" in log and "finished: q2-ttt-linear-no-positions" in log
    runs = zoo.unpack(sorted((tmp_path / "out").glob("zoo-runs-*.tar.gz")), tmp_path / "back")
    assert sorted(run.name for run in runs) == ["q2-transformer-no-positions", "q2-ttt-linear-no-positions"]
    assert not any(p.suffix == ".safetensors" for run in runs for p in run.iterdir())  # results, not weights
    assert json.loads((runs[0] / "config.json").read_text())["position_embedding_type"] == "none"
    rows = lengths.accuracy_by_length(tmp_path / "runs" / runs[0].name, (12, 24), 8)  # the device's folder
    assert [row["examples"] for row in rows] == [11, 11, 23] and rows[0]["positions"] == "none"
