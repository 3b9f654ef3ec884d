"""The fused Triton kernels of the MTTT-MLP learner against its PyTorch ops, in float64.

Without a GPU the kernels run in Triton's CPU interpreter (conftest sets TRITON_INTERPRET=1), which executes
the same kernel code with NumPy: every index, mask, atomic add and partial sum is checked here; only the GPU's
compilation and bfloat16 products are not."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

if sys.platform != "linux":
    pytest.skip("Triton (a dev dependency on Linux) has no wheels here", allow_module_level=True)
import triton  # noqa: E402  (on Linux a missing triton is an error, not a skip)

from ttt_hf import TTTViTForImageClassification
from ttt_hf.modeling import fused_mlp, ttt_layers
from ttt_hf.modeling.fused_mlp import fused_mlp_available, mlp_forward, mlp_param_grad
from ttt_hf.modeling.ttt_layers import FusedMLPLearner, MLPLearner, TTTMixer

from .conftest import tiny_config


def _mlp(batch_w, heads, k, m, dtype=torch.float64):
    g = torch.Generator().manual_seed(2)
    shapes = [(k, m), (m,), (m, k), (k,)]
    return [(0.4 * torch.randn(batch_w, heads, *s, generator=g, dtype=dtype)).requires_grad_() for s in shapes]


@pytest.mark.parametrize(
    "batch_w,k,m,tokens,splits",
    [(1, 16, 64, 70, None), (2, 12, 48, 33, None), (2, 16, 128, 200, 3)],
    ids=["shared-W0", "padded-k-and-m", "two-hidden-slices-three-splits"],
)
def test_fused_kernels_equal_torch_ops_float64(monkeypatch, batch_w, k, m, tokens, splits):
    """Forward, inner gradient, and the backward of both (first and second order) to rounding."""
    if splits:
        monkeypatch.setattr(fused_mlp, "_splits", lambda x, tiles, programs: min(tiles, splits))
    compare_kernels_with_torch_ops(batch_w, k, m, tokens, "cpu", torch.float64, atol=1e-10)


def compare_kernels_with_torch_ops(batch_w, k, m, tokens, device, dtype, atol, autocast=False):
    """The kernels' forward, inner gradient and the backward of both against MLPLearner's ops in float64 (the
    kernels' inputs in `dtype`, or float32 under bfloat16 autocast); every error <= atol x the largest value."""
    batch, heads = 2, 2
    params = [p.detach().to(device).requires_grad_() for p in _mlp(batch_w, heads, k, m)]
    z = torch.randn(batch, heads, tokens, k, dtype=torch.float64, device=device, requires_grad=True)
    g = torch.randn(batch, heads, tokens, k, dtype=torch.float64, device=device, requires_grad=True)
    torch_ops = MLPLearner(k, m)
    f_ref, cache = torch_ops.forward(z, params)
    grads_ref = torch_ops.backward(g, z, cache, params)
    cast = [t.to(torch.float32 if autocast else dtype) for t in (z, g, *params)]
    with torch.autocast(device, dtype=dtype, enabled=autocast):
        inputs = [t.to(dtype) for t in cast[:2]] if autocast else cast[:2]  # autocast hands the kernels bf16 tokens
        f, grads = mlp_forward(inputs[0], cast[2:]), mlp_param_grad(inputs[0], inputs[1], cast[2:])
    # the outer loop's backward through both: random cotangents on every output
    cotangents = [torch.randn_like(t) for t in (f_ref, *grads_ref)]

    def backward(outputs, wrt):
        loss = sum((o.double() * c).sum() for o, c in zip(outputs, cotangents, strict=True))
        return torch.autograd.grad(loss, wrt)

    pairs = list(zip([f, *grads], [f_ref, *grads_ref], strict=True))
    pairs += zip(backward([f, *grads], cast), backward([f_ref, *grads_ref], [z, g, *params]), strict=True)
    for ours, reference in pairs:
        assert ours.shape == reference.shape
        torch.testing.assert_close(ours.double(), reference, rtol=0, atol=atol * reference.abs().max().item())


def test_fused_kernels_under_half_precision_autocast():
    """Autocast hands the kernels half-precision tokens and float32 weights (float16 here: the interpreter has no
    bfloat16); products in half precision with float32 accumulation stay within half precision's error."""
    compare_kernels_with_torch_ops(2, 16, 128, 200, "cpu", torch.float16, atol=1e-2, autocast=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: the compiled kernels (CI has none)")
def test_fused_kernels_on_cuda():
    """On a GPU the kernels run compiled (a subprocess without the interpreter): float64 to rounding, float32
    (IEEE products) and bfloat16 autocast to their precision."""
    script = """
import copy
import os
os.environ["TRITON_INTERPRET"] = "0"
import torch
from tests.test_fused_mlp import compare_kernels_with_torch_ops as compare
from ttt_hf.modeling.fused_mlp import fused_mlp_available
assert fused_mlp_available(torch.zeros(1, device="cuda"))
for shape in [(1, 64, 256, 3136), (2, 12, 48, 33), (2, 64, 256, 200)]:
    compare(*shape, "cuda", torch.float64, atol=1e-10)
    compare(*shape, "cuda", torch.float32, atol=1e-4)
    compare(*shape, "cuda", torch.bfloat16, atol=3e-2, autocast=True)
# whole models on the GPU: a bfloat16 model (no autocast), and torch.compile (inductor's code around the kernels)
from tests.test_fused_mlp import model_pair
reference, fused = (model.cuda() for model in model_pair())
x, labels = torch.randn(2, 3, 8, 8, device="cuda"), torch.tensor([0, 3], device="cuda")
expected = reference(pixel_values=x, labels=labels)
with torch.no_grad():
    low = copy.deepcopy(fused).bfloat16()(pixel_values=x.bfloat16()).logits
assert low.dtype == torch.bfloat16
torch.testing.assert_close(low.float(), expected.logits, rtol=0, atol=0.05 * expected.logits.abs().max().item())
compiled = torch.compile(fused)(pixel_values=x, labels=labels)
expected.loss.backward()
compiled.loss.backward()
torch.testing.assert_close(compiled.logits, expected.logits, rtol=1e-4, atol=1e-5)
for p, q in zip(reference.parameters(), fused.parameters()):
    torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-5)
"""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[1], env=env,
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def count_kernel_calls(monkeypatch) -> list[str]:
    """The names of the fused operations the layers call from now on: proof that the kernels ran, not the
    fallback."""
    calls = []
    for name in ("mlp_forward", "mlp_param_grad"):
        fn = getattr(ttt_layers, name)
        monkeypatch.setattr(ttt_layers, name, lambda *a, _fn=fn, _name=name: calls.append(_name) or _fn(*a))
    return calls


def model_pair(**overrides):
    """A tiny classifier away from its initialisation (a zero head would make logits trivially equal) and its
    twin with inner_kernel="triton" and the same weights, both in training mode."""
    torch.manual_seed(0)
    reference = TTTViTForImageClassification(tiny_config(num_labels=5, **overrides))
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.2 * torch.randn_like(p))
    fused = TTTViTForImageClassification(tiny_config(num_labels=5, inner_kernel="triton", **overrides))
    fused.load_state_dict(reference.state_dict())
    return reference.train(), fused.train()


@pytest.mark.parametrize("overrides", [{}, {"inner_steps": 2, "inner_batching": "shuffled"}],
                         ids=["one-full-step", "two-shuffled-steps"])  # fmt: skip
def test_model_with_triton_kernel_equals_torch_float64(monkeypatch, overrides):
    """A whole classifier with inner_kernel="triton" (training mode): logits, inner losses, every gradient."""
    reference, fused = (model.double() for model in model_pair(**overrides))
    assert isinstance(fused.ttt_vit.layers[0].mixer, TTTMixer)
    assert type(fused.ttt_vit.layers[0].mixer.learner) is FusedMLPLearner
    pixels = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    labels = torch.tensor([0, 3, 4])
    calls = count_kernel_calls(monkeypatch)
    outs = []
    for model in (reference, fused):
        torch.manual_seed(1)  # the same shuffled-batching permutations for both
        outs.append(model(pixel_values=pixels, labels=labels, output_inner_losses=True))
    assert outs[0].logits.abs().min() > 1e-3
    # per layer and step: f on the keys, a gradient, the inner loss; then the last loss and f on the queries
    steps, layers = overrides.get("inner_steps", 1), 2
    assert sorted(calls) == sorted(["mlp_forward"] * (2 * steps + 2) * layers + ["mlp_param_grad"] * steps * layers)
    torch.testing.assert_close(outs[1].logits, outs[0].logits, rtol=0, atol=1e-12)
    for a, b in zip(outs[1].inner_losses, outs[0].inner_losses, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    for out in outs:
        out.loss.backward()
    for (name, p), q in zip(reference.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=1e-10, msg=name)


def test_fused_kernel_falls_back_to_torch_ops_where_it_cannot_run(monkeypatch):
    x = torch.zeros(1, 1, 4, 16)
    assert fused_mlp_available(x)  # the interpreter is on in the tests
    assert not fused_mlp_available(torch.zeros(1, 1, 4, 96))  # head width > 64: the launch settings do not fit
    with monkeypatch.context() as m:
        m.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)
        assert not fused_mlp_available(x)  # the atomic adds sum in no fixed order
    monkeypatch.setattr(fused_mlp, "_INTERPRETED", False)
    assert not fused_mlp_available(x)  # CPU tensors without the interpreter: MLPLearner's ops
    params = _mlp(1, 1, 16, 64)
    f, cache = FusedMLPLearner(16, 64).forward(x.double(), params)
    assert cache is not None  # the torch path ran (it keeps the hidden activations for the backward)
    torch.testing.assert_close(f, MLPLearner(16, 64).forward(x.double(), params)[0], rtol=0, atol=0)


@pytest.mark.parametrize(
    "overrides,field",
    [({"mixer": "ttt_linear"}, "mixer='ttt_linear'"), ({"inner_gradient": "autograd"}, "inner_gradient='autograd'"),
     ({"inner_kernel": "cuda"}, "`inner_kernel` must be one of")],
)  # fmt: skip
def test_inner_kernel_config_errors(overrides, field):
    with pytest.raises(ValueError, match=field.replace("(", r"\(").replace("[", r"\[")):
        tiny_config(**{"inner_kernel": "triton", **overrides})


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["bf16", "fp32", "fp64"])  # fp64: the precision report's reference
def test_fused_kernels_compile_for_an_h100_without_one(dtype):
    """The interpreter runs code that the GPU compiler may reject (it did: a non-constexpr global); Triton's
    compiler and bundled ptxas build every kernel for sm_90 on this CPU machine."""
    script = Path(__file__).parents[1] / "scripts" / "fused_kernel_report.py"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, str(script), "--dtype", dtype, "--arch", "90"], capture_output=True,
                            text=True, env=env, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[2:]]
    assert len(rows) == 4 and all(row[-1].isdigit() and int(row[-1]) > 0 for row in rows), result.stdout


def _fresh_copy_of_fused_mlp():
    import importlib.util

    spec = importlib.util.spec_from_file_location("copy_of_fused_mlp", fused_mlp.__file__)
    copy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy)
    return copy


def test_old_triton_falls_back(monkeypatch):
    """Triton 3.3's compiler fails on these kernels and 3.2's aborts the process: they run the PyTorch ops."""
    x = torch.zeros(1, 1, 4, 16)
    monkeypatch.setattr(triton, "__version__", "3.3.1")
    assert not _fresh_copy_of_fused_mlp().fused_mlp_available(x)
    monkeypatch.setattr(triton, "__version__", "3.4.0")
    assert _fresh_copy_of_fused_mlp().fused_mlp_available(x)


@pytest.mark.slow
def test_compiled_model_with_triton_kernel_equals_eager_torch():
    """torch.compile keeps the kernels (custom operators) in one graph without breaks; inductor's code around
    them computes what the eager PyTorch model computes: logits and every parameter gradient."""
    reference, fused = model_pair()
    x, labels = torch.randn(2, 3, 8, 8), torch.tensor([0, 3])
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(fused)(x, labels=labels)
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), explanation.break_reasons
    graph_ops = {str(node.target) for graph in explanation.graphs for node in graph.graph.nodes}  # the kernels:
    assert {f"{fused_mlp._NAMESPACE}.mlp_forward", f"{fused_mlp._NAMESPACE}.mlp_backward"} <= graph_ops, graph_ops

    def step(forward, model):
        model.zero_grad(set_to_none=True)
        out = forward(pixel_values=x, labels=labels)
        out.loss.backward()
        return out.logits.detach(), [p.grad.clone() for p in model.parameters()]

    logits, grads = step(reference, reference)
    torch._dynamo.reset()
    compiled_logits, compiled_grads = step(torch.compile(fused), fused)
    torch.testing.assert_close(compiled_logits, logits, rtol=1e-4, atol=1e-5)
    for g_compiled, g in zip(compiled_grads, grads, strict=True):
        torch.testing.assert_close(g_compiled, g, rtol=1e-3, atol=1e-5)


def test_parameter_gradients_without_an_input_gradient():
    """When x needs no gradient (f on the keys of a frozen projection) the backward skips dx: the parameters'
    gradients, first and second order, stay those of the PyTorch ops."""
    params = _mlp(2, 2, 16, 64)
    x, g = torch.randn(2, 2, 37, 16, dtype=torch.float64), torch.randn(2, 2, 37, 16, dtype=torch.float64)
    torch_ops = MLPLearner(16, 64)
    ref_f, cache = torch_ops.forward(x, params)

    def loss(f, grads):
        return (f * g).sum() + sum(t.square().sum() for t in grads)

    ours = torch.autograd.grad(loss(mlp_forward(x, params), mlp_param_grad(x, g, params)), params)
    reference = torch.autograd.grad(loss(ref_f, torch_ops.backward(g, x, cache, params)), params)
    for a, b in zip(ours, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_a_third_derivative_is_refused_not_wrong():
    params = _mlp(1, 1, 16, 32)
    x = torch.randn(1, 1, 5, 16, dtype=torch.float64, requires_grad=True)
    g = torch.randn(1, 1, 5, 16, dtype=torch.float64, requires_grad=True)
    (dx,) = torch.autograd.grad(mlp_forward(x, params).square().sum(), x, create_graph=True)  # through f
    with pytest.raises(RuntimeError, match="inner_kernel='torch'"):
        dx.sum().backward()
    grads = mlp_param_grad(x, g, params)  # through the inner gradient
    (dg,) = torch.autograd.grad(sum(t.square().sum() for t in grads), g, create_graph=True)
    with pytest.raises(RuntimeError, match="inner_kernel='torch'"):
        dg.sum().backward()


def test_a_half_precision_model_stays_in_its_dtype(monkeypatch):
    """A model cast to float16 (no autocast; `ttt-hf evaluate --dtype` does this with bfloat16, which Triton's
    interpreter lacks) gets float16 from the kernels, as from PyTorch's ops, and the same answer."""
    reference, fused = (model.eval() for model in model_pair())
    pixels = torch.randn(2, 3, 8, 8)
    calls = count_kernel_calls(monkeypatch)
    with torch.no_grad():
        expected = reference(pixel_values=pixels).logits
        logits = fused.half()(pixel_values=pixels.half()).logits
    assert logits.dtype == torch.float16 and "mlp_forward" in calls
    torch.testing.assert_close(logits.float(), expected, rtol=0, atol=0.02 * expected.abs().max().item())


def test_a_second_copy_of_the_module_reuses_the_registered_operators():
    """The Hub's remote code is a second copy of fused_mlp.py beside the installed package: importing it must not
    fail on registering torch.ops.ttt_hf_<hash>.* again."""
    copy = _fresh_copy_of_fused_mlp()
    assert copy._ops is fused_mlp._ops  # the same code (hash) reuses the operators; other code would get its own
    params = _mlp(1, 1, 16, 32)
    x = torch.randn(1, 1, 5, 16, dtype=torch.float64)
    torch.testing.assert_close(copy.mlp_forward(x, params), mlp_forward(x, params), rtol=0, atol=0)


def test_the_fused_layer_keeps_no_hidden_activations_for_the_backward():
    """What the kernels are for: no [B, H, N, m] tensor is saved for the backward (the PyTorch path saves several),
    and with the decoder-LN gradient recomputed the saved bytes shrink 3x at this size (4.6x at 12,544 tokens)."""
    from ttt_hf.bench.measure import layer_config, memory_of
    from ttt_hf.modeling.ttt_layers import MIXER_CLASSES

    batch, tokens, width, heads = 1, 40, 48, 3
    hidden = batch * heads * tokens * 4 * (width // heads)  # elements of one [B, H, N, m] tensor

    def saved(kernel):
        torch.manual_seed(0)
        layer = MIXER_CLASSES["ttt_mlp"](layer_config({"mixer": "ttt_mlp", "inner_kernel": kernel}, width, heads))
        x = torch.randn(batch, tokens, width, requires_grad=True)
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
            layer(x)[0].sum().backward()
        return sizes, memory_of(lambda: layer(x)[0].sum().backward(), "cpu", list(layer.parameters()))

    torch_sizes, torch_bytes = saved("torch")
    fused_sizes, fused_bytes = saved("triton")
    assert max(torch_sizes) >= hidden > max(fused_sizes)
    assert fused_bytes * 3 < torch_bytes, (fused_bytes, torch_bytes)
