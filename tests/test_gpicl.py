"""GPICL: the causal TTT mixer against its token-by-token definition, the token format (no label leakage),
causality of every backbone, state sizes, bad inputs, save/load and remote code."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForTokenClassification, pipeline
from transformers.dynamic_module_utils import get_imports, get_relative_import_files

from ttt_hf import GPICLConfig, GPICLForInContextClassification, GPICLModel
from ttt_hf.modeling.causal_ttt_layers import CausalTTTMixer

from .conftest import HIDE_TTT_HF

BACKBONES = ("transformer", "lstm", "ttt_linear", "ttt_mlp")


def tiny(backbone="transformer", **overrides) -> GPICLConfig:
    fields = dict(backbone=backbone, input_dim=6, num_classes=3, hidden_size=12, num_hidden_layers=2,
                  num_attention_heads=3, intermediate_size=24, ttt_mini_batch_size=4,
                  max_position_embeddings=32)  # fmt: skip
    return GPICLConfig(**{**fields, **overrides})


def _double_mixer(**overrides) -> CausalTTTMixer:
    mixer = CausalTTTMixer(tiny(**overrides)).double()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in list(mixer.parameters()) + list(mixer.buffers()):
            p.copy_(0.4 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return mixer


def naive_causal(mixer: CausalTTTMixer, x: torch.Tensor) -> torch.Tensor:
    """The definition, token by token with autograd: in each mini-batch from W, token t's output is f(q_t; W_t),
    W_t = W - lr * d/dW sum_{i <= t} l_i(W), l_i = token i's reconstruction loss / b; then W_t of the last token
    carries over."""
    task, learner = mixer.reconstruction_task(), mixer.learner
    heads, k = mixer.num_heads, x.shape[-1] // mixer.num_heads
    key_in, query_in = x, x
    if mixer.key_conv is not None:  # causal convolutions, written out: position t sums w_j x_{t-j}
        taps = mixer.key_conv.conv.kernel_size[0]
        shifted = [torch.cat([x.new_zeros(x.shape[0], j, x.shape[2]), x[:, : x.shape[1] - j]], 1) for j in range(taps)]
        key_in, query_in = (
            sum(conv.conv.weight[:, 0, taps - 1 - j] * shifted[j] for j in range(taps)) + conv.conv.bias
            for conv in (mixer.key_conv, mixer.query_conv)
        )
    keys = mixer.key(key_in).view(*x.shape[:2], heads, k).transpose(1, 2)  # [B, H, T, k]
    queries = mixer.query(query_in).view(*x.shape[:2], heads, k).transpose(1, 2)
    if learner.starts_at_zero:
        params = [torch.zeros(x.shape[0], heads, *s, dtype=x.dtype) for s in learner.shapes]
    else:
        params = [p.unsqueeze(0).expand(x.shape[0], *p.shape).clone() for p in mixer.inner_init_params()]
    lr, size, outputs = mixer.config.inner_lr, mixer.config.ttt_mini_batch_size, []
    for start in range(0, x.shape[1], size):
        end = min(start + size, x.shape[1])
        w = [p.detach().requires_grad_() for p in params]
        for t in range(start, end):
            loss = sum(task.loss(w, keys[:, :, i : i + 1], x[:, i : i + 1].unsqueeze(1)) for i in range(start, t + 1))
            grads = torch.autograd.grad(loss.sum() / size, w)  # a mean over b, also in a shorter last mini-batch
            w_t = [p - lr * g for p, g in zip(w, grads)]
            outputs.append(learner.forward(queries[:, :, t : t + 1], w_t)[0])
        params = [p.detach() for p in w_t]
    out = torch.cat(outputs, dim=2).transpose(1, 2).reshape(x.shape)
    return mixer.output(out)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(backbone="ttt_linear", decoder_layer_norm=False),
        dict(backbone="ttt_linear", learn_inner_init=False, decoder_layer_norm=False),
        dict(backbone="ttt_linear"),
        dict(backbone="ttt_mlp"),
        dict(backbone="ttt_mlp", decoder_layer_norm=False, inner_lr=0.3),
        dict(backbone="ttt_linear", ttt_conv_size=3),
        dict(backbone="ttt_mlp", ttt_conv_size=2),
    ],
    ids=["linear", "linear-zero-init", "linear-ln", "mlp-ln", "mlp", "linear-conv", "mlp-conv"],
)
def test_causal_ttt_mixer_equals_token_by_token_definition_float64(overrides):
    mixer = _double_mixer(**overrides)
    x = torch.randn(2, 10, 12, dtype=torch.float64)  # 10 tokens: mini-batches of 4, 4 and 2
    with torch.no_grad():
        ours = mixer(x)[0]
    reference = naive_causal(mixer, x).detach()
    assert ours.shape == (2, 10, 12)
    torch.testing.assert_close(ours, reference, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("backbone,conv", [("ttt_linear", 0), ("ttt_mlp", 0), ("ttt_linear", 4)])
def test_causal_ttt_mixer_is_causal_and_differentiable(backbone, conv):
    mixer = _double_mixer(backbone=backbone, ttt_conv_size=conv)
    x = torch.randn(1, 11, 12, dtype=torch.float64, requires_grad=True)
    out = mixer(x)[0]
    for t in (0, 3, 5, 10):
        (grad,) = torch.autograd.grad(out[0, t].sum(), x, retain_graph=True)
        assert grad[0, t + 1 :].abs().sum() == 0  # nothing after t reaches the output at t
        # every token up to t does: tokens of earlier mini-batches (b = 4) only through the carried state W
        assert grad[0, : t + 1].abs().amax(-1).min() > 0
    assert torch.autograd.gradcheck(lambda inp: mixer(inp)[0], (x[:, :6].detach().requires_grad_(),))


@pytest.mark.parametrize("backbone", BACKBONES)
def test_a_prefix_gets_the_same_predictions_as_the_whole_sequence(backbone):
    """The prediction at t depends on nothing after t, not even on how many tokens follow (TTT: the last, shorter
    mini-batch takes the same inner step size as the others)."""
    model = GPICLForInContextClassification(tiny(backbone)).double().eval()
    x, labels = torch.randn(2, 11, 6, dtype=torch.float64), torch.randint(0, 3, (2, 11))
    with torch.no_grad():
        whole = model(x, labels).logits
        for n in (1, 5, 6, 9):  # mini-batches of 4: cut inside and at their ends
            torch.testing.assert_close(model(x[:, :n], labels[:, :n]).logits, whole[:, :n], rtol=1e-12, atol=1e-12)


def test_tokens_show_the_previous_label_and_never_the_current_one():
    model = GPICLModel(tiny())
    x = torch.randn(2, 5, 6)
    labels = torch.tensor([[2, 0, 1, -100, 1], [1, 1, -100, 2, 0]])
    tokens = model.tokens(x, labels)
    assert tokens.shape == (2, 5, 9)
    torch.testing.assert_close(tokens[..., :6], x)
    assert tokens[:, 0, 6:].abs().sum() == 0  # t = 1: no previous label
    assert tokens[0, 1, 6:].tolist() == [0, 0, 1] and tokens[0, 2, 6:].tolist() == [1, 0, 0]
    assert tokens[0, 4, 6:].abs().sum() == 0  # after an unknown (-100) label: zeros
    assert tokens[1, 3, 6:].abs().sum() == 0 and tokens[1, 4, 6:].tolist() == [0, 0, 1]
    assert model.tokens(x, None)[..., 6:].abs().sum() == 0


@pytest.mark.parametrize(
    "backbone, conv, positions",
    [(b, 0, "learned") for b in BACKBONES]
    + [(b, 2, p) for b in ("transformer", "ttt_linear") for p in ("learned", "none")],
    ids=str,
)
def test_every_backbone_is_causal_and_never_sees_its_own_label(backbone, conv, positions):
    torch.manual_seed(0)
    config = tiny(backbone, ttt_conv_size=conv, position_embedding_type=positions)
    model = GPICLForInContextClassification(config).eval()
    x, labels = torch.randn(2, 9, 6), torch.randint(0, 3, (2, 9))
    with torch.no_grad():
        base = model(x, labels).logits
        t0 = 5
        later_x = x.clone()
        later_x[:, t0:] = torch.randn(2, 9 - t0, 6)
        torch.testing.assert_close(model(later_x, labels).logits[:, :t0], base[:, :t0], rtol=0, atol=1e-6)
        other = labels.clone()
        other[:, t0] = (labels[:, t0] + 1) % 3  # y_t changes: the prediction at t must not
        changed = model(x, other).logits
    torch.testing.assert_close(changed[:, : t0 + 1], base[:, : t0 + 1], rtol=0, atol=1e-6)
    assert (changed[:, t0 + 1] - base[:, t0 + 1]).abs().max() > 1e-6  # but it is shown at t + 1


@pytest.mark.parametrize("backbone", ["transformer", "ttt_linear"])
def test_without_positions_a_learner_runs_past_its_position_table(backbone):
    """`position_embedding_type="none"`: the choice for running longer than meta-training (question 2 of the
    GPICL study); with learned positions a sequence longer than the table is refused, naming the limit."""
    x, labels = torch.randn(2, 20, 6), torch.randint(0, 3, (2, 20))
    learned = GPICLForInContextClassification(tiny(backbone, max_position_embeddings=8)).eval()
    with pytest.raises(ValueError, match="more than `max_position_embeddings`"):
        learned(x, labels)
    free = GPICLForInContextClassification(tiny(backbone, max_position_embeddings=8, position_embedding_type="none"))
    with torch.no_grad():
        long = free.eval()(x, labels).logits
        torch.testing.assert_close(free(x[:, :8], labels[:, :8]).logits, long[:, :8], rtol=0, atol=1e-5)  # causal
    assert long.shape == (2, 20, 3) and torch.isfinite(long).all()


def test_attention_with_convolutions_is_attention_on_convolved_queries_and_keys():
    attention = GPICLForInContextClassification(tiny("transformer", ttt_conv_size=2)).gpicl.layers[0].mixer.double()
    x = torch.randn(2, 7, 12, dtype=torch.float64)
    w, b = attention.qkv.weight.chunk(3), attention.qkv.bias.chunk(3)
    conv_q, conv_k = attention.query_conv.conv, attention.key_conv.conv
    shifted = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)  # x_{t-1}, zero before the first token
    q = (x * conv_q.weight[:, 0, 1] + shifted * conv_q.weight[:, 0, 0] + conv_q.bias) @ w[0].T + b[0]
    k = (x * conv_k.weight[:, 0, 1] + shifted * conv_k.weight[:, 0, 0] + conv_k.bias) @ w[1].T + b[1]
    v = x @ w[2].T + b[2]
    heads = [t.unflatten(-1, (3, 4)).transpose(1, 2) for t in (q, k, v)]  # [B, H, T, k]
    scores = heads[0] @ heads[1].transpose(-1, -2) / 2.0 + torch.full((7, 7), float("-inf")).triu(1)
    expected = attention.output((scores.softmax(-1) @ heads[2]).transpose(1, 2).flatten(2))
    torch.testing.assert_close(attention(x)[0], expected, rtol=1e-12, atol=1e-12)


def test_loss_is_mean_cross_entropy_over_labelled_positions():
    model = GPICLForInContextClassification(tiny("lstm"))
    x, labels = torch.randn(2, 7, 6), torch.randint(0, 3, (2, 7))
    labels[1, 3] = -100
    out = model(x, labels)
    keep = labels >= 0
    expected = torch.nn.functional.cross_entropy(out.logits[keep], labels[keep])
    torch.testing.assert_close(out.loss, expected)
    assert model(x).loss is None and model(x).logits.shape == (2, 7, 3)


def test_state_size_counts_what_a_position_carries():
    config = dict(hidden_size=12, num_hidden_layers=2, num_attention_heads=3)
    transformer = GPICLForInContextClassification(tiny("transformer", **config))
    assert transformer.state_size(99) == 2 * 2 * 99 * 12  # keys and values, every layer and position
    assert GPICLForInContextClassification(tiny("lstm", **config)).state_size(99) == 2 * 2 * 12  # h and c
    linear = GPICLForInContextClassification(tiny("ttt_linear", **config))
    # per layer and head: the mini-batch's starting W and the running W, [k, k] each (the official TTT cache's two)
    assert linear.state_size(5) == linear.state_size(99) == 2 * 3 * 2 * 4 * 4
    mlp = GPICLForInContextClassification(tiny("ttt_mlp", **config))
    assert mlp.state_size(99) == 2 * 3 * 2 * (4 * 16 + 16 + 16 * 4 + 4)  # W1, b1, W2, b2, twice
    # causal convolutions of width 3 keep their last 2 inputs (width 12) in every layer, once for keys and queries
    for backbone, without in (("transformer", 2 * 2 * 99 * 12), ("ttt_linear", 2 * 3 * 2 * 4 * 4)):
        convolved = GPICLForInContextClassification(tiny(backbone, ttt_conv_size=3, **config))
        assert convolved.state_size(99) == without + 2 * 2 * 12


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(backbone="gru"), "`backbone` must be one of"),
        (dict(num_classes=1), "`num_classes` must be at least 2"),
        (dict(hidden_size=10), "must be divisible by `num_attention_heads`"),
        (dict(ttt_mini_batch_size=0), "`ttt_mini_batch_size` must be a positive integer"),
        (dict(inner_lr=-1.0), "`inner_lr` must be a positive number"),
        (dict(ttt_conv_size=-1), "`ttt_conv_size` must be a non-negative integer"),
        (dict(backbone="lstm", ttt_conv_size=2), "the LSTM takes none"),
        (dict(position_embedding_type="rope"), "`position_embedding_type` must be one of"),
    ],
)
def test_bad_config_is_refused_by_name(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny(**overrides)


def test_bad_inputs_get_clear_errors():
    model = GPICLForInContextClassification(tiny())
    with pytest.raises(ValueError, match="input_dim=6"):
        model(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match="class indices in \\[0, 3\\) or -100"):
        model(torch.randn(2, 5, 6), torch.full((2, 5), 3))
    with pytest.raises(ValueError, match="integer tensor"):
        model(torch.randn(2, 5, 6), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="more than `max_position_embeddings` \\(32\\)"):
        model(torch.randn(1, 33, 6))


REMOTE_SCRIPT = HIDE_TTT_HF + textwrap.dedent(
    """
    import torch
    from transformers import AutoModel, AutoModelForTokenClassification, pipeline
    path = sys.argv[1]
    model = AutoModelForTokenClassification.from_pretrained(path, trust_remote_code=True).eval()
    base = AutoModel.from_pretrained(path, trust_remote_code=True)
    x, labels = torch.load(path + "/x.pt"), torch.load(path + "/labels.pt")
    classify = pipeline("in-context-classification", model=path, trust_remote_code=True)
    support = list(x[0].numpy())
    print(json.dumps({"module": type(model).__module__, "class": type(model).__name__,
                      "base": type(base).__name__, "logits": model(x, labels).logits.tolist(),
                      "pipeline": type(classify).__module__,
                      "predictions": classify(support[:3], support=support, support_labels=labels[0].tolist(),
                                              top_k=2)}))
    """
)


@pytest.mark.parametrize("backbone", ["transformer", "ttt_mlp"])
def test_save_load_and_remote_code_round_trip(tmp_path, backbone):
    model = GPICLForInContextClassification(tiny(backbone)).eval()
    repo = tmp_path / "repo"
    model.save_pretrained(repo)
    x, labels = torch.randn(2, 9, 6), torch.randint(0, 3, (2, 9))
    torch.save(x, repo / "x.pt")
    torch.save(labels, repo / "labels.pt")
    config = json.loads((repo / "config.json").read_text())
    assert config["model_type"] == "gpicl" and config["auto_map"]["AutoModelForTokenClassification"].endswith(
        "GPICLForInContextClassification"
    )
    assert type(AutoConfig.from_pretrained(repo)) is GPICLConfig
    assert type(AutoModel.from_pretrained(repo)) is GPICLModel
    loaded = AutoModelForTokenClassification.from_pretrained(repo).eval()
    with torch.no_grad():
        expected = model(x, labels).logits
        torch.testing.assert_close(loaded(x, labels).logits, expected, rtol=0, atol=0)
    for name in ("configuration_gpicl.py", "modeling_gpicl.py", "causal_ttt_layers.py", "ttt_layers.py",
                 "pipeline_gpicl.py", "tasks_gpicl.py", "pipeline_ttt_vit.py"):  # fmt: skip
        assert (repo / name).exists(), name
    assert "custom_pipelines" not in config  # installed, ttt_hf registers the task: no trust_remote_code needed
    chain = [repo / "modeling_gpicl.py", *get_relative_import_files(repo / "modeling_gpicl.py")]
    assert not any("pipeline" in str(path) for path in chain)  # the model's code does not import the pipeline's,
    assert "PIL" not in {name for path in chain for name in get_imports(path)}  # so it loads without PIL
    classify = pipeline("in-context-classification", model=str(repo))
    support = list(x[0].numpy())
    predictions = classify(support[:3], support=support, support_labels=labels[0].tolist(), top_k=2)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, "-c", REMOTE_SCRIPT, str(repo)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert (
        report["module"].startswith("transformers_modules.") and report["class"] == "GPICLForInContextClassification"
    )
    assert report["base"] == "GPICLModel"
    torch.testing.assert_close(torch.tensor(report["logits"]), expected, rtol=1e-6, atol=1e-6)
    # the pipeline as remote code: the checkpoint's pipeline_gpicl.py, the same predictions as the installed one
    assert report["pipeline"].startswith("transformers_modules.") and report["pipeline"].endswith("pipeline_gpicl")
    assert [[r["label"] for r in q] for q in report["predictions"]] == [[r["label"] for r in q] for q in predictions]
    torch.testing.assert_close(
        torch.tensor([[r["score"] for r in q] for q in report["predictions"]]),
        torch.tensor([[r["score"] for r in q] for q in predictions]),
    )
