"""The analytic inner gradient against autograd, and the outer gradient through the inner loop."""

import pytest
import torch
from torch.func import functional_call

from ttt_hf.modeling.ttt_layers import (
    LinearLearner,
    MLPLearner,
    ReconstructionTask,
    TTTMixer,
    _GeluTanhGrad,
    inner_loop,
)

from .conftest import tiny_config

B, H, N, K, D = 2, 3, 7, 4, 12


def make(learner_class):
    """A learner of head width K (MLP hidden width 4K) whose W_0 is a tensor (learned), as the tests give it."""
    return LinearLearner(K, learned_init=True) if learner_class is LinearLearner else MLPLearner(K, 4 * K)


def random_task(learner_class, decoder_ln, dtype=torch.float64):
    learner = make(learner_class)
    g = torch.Generator().manual_seed(1)
    rand = lambda *shape: torch.randn(*shape, generator=g, dtype=dtype)  # noqa: E731
    ln = (1 + 0.3 * rand(H, D), 0.3 * rand(H, D)) if decoder_ln else (None, None)
    task = ReconstructionTask(learner, 0.5 * rand(H, K, D), 0.3 * rand(D), *ln, eps=1e-6)
    params = [0.5 * rand(B, H, *shape) for shape in learner.shapes]  # per image and head, as after a first step
    return task, params, rand(B, H, N, K), rand(B, 1, N, D)


def naive_inner_loop(task, init_params, keys, targets, lrs, perm=None):
    """The reference: autograd.grad(create_graph=True) on the loss, step by step, per image and head."""
    batch = keys.shape[0]
    params = [p.expand(batch, *p.shape[1:]).clone() for p in init_params]
    params = [p if p.requires_grad else p.requires_grad_() for p in params]
    targets = targets.unsqueeze(1).expand(-1, keys.shape[1], -1, -1)  # [B, H, N, d]
    if perm is not None:
        n = keys.shape[2] // len(lrs)
        idx = perm.expand(batch, keys.shape[1], -1)
        keys = torch.stack([keys[b, h, idx[b, h]] for b in range(batch) for h in range(keys.shape[1])])
        targets = torch.stack([targets[b, h, idx[b, h]] for b in range(batch) for h in range(targets.shape[1])])
        keys, targets = keys.view(batch, -1, *keys.shape[1:]), targets.view(batch, -1, *targets.shape[1:])
    for t, lr in enumerate(lrs):
        sl = slice(None) if perm is None else slice(t * n, (t + 1) * n)
        loss = task.loss(params, keys[:, :, sl], targets[:, :, sl]).sum()
        grads = torch.autograd.grad(loss, params, create_graph=True)
        params = [p - lr * g for p, g in zip(params, grads)]
    return params


@pytest.mark.parametrize("learner", [LinearLearner, MLPLearner], ids=["linear", "mlp"])
@pytest.mark.parametrize("decoder_ln", [False, True], ids=["no-ln", "decoder-ln"])
def test_analytic_inner_gradient_equals_autograd_float64(learner, decoder_ln):
    task, params, z, target = random_task(learner, decoder_ln)
    params = [p.requires_grad_() for p in params]
    auto = torch.autograd.grad(task.loss(params, z, target).sum(), params)
    analytic = task.grad(params, z, task.targets(target.squeeze(1)))
    assert len(analytic) == len(auto)
    for a, b in zip(analytic, auto):
        assert a.shape == b.shape
        assert a.abs().max() > 1e-3  # not trivially zero
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_inner_loss_is_the_papers_scaling():
    """0.5 * mean over N x d of the squared error, times H (= sum / (2 N d/H))."""
    task, params, z, target = random_task(LinearLearner, decoder_ln=False)
    f = z @ params[0]
    err = (f @ task.value_weight + task.value_bias - target).pow(2)
    expected = 0.5 * err.mean((-2, -1)) * H
    torch.testing.assert_close(task.loss(params, z, target), expected, rtol=1e-13, atol=0)


@pytest.mark.parametrize("learner", [LinearLearner, MLPLearner], ids=["linear", "mlp"])
@pytest.mark.parametrize("steps,lrs,shuffled", [(1, [1.0], False), (3, [1.0, 0.5, 0.25], False), (3, [0.7] * 3, True)])
def test_inner_loop_equals_naive_autograd_loop(learner, steps, lrs, shuffled):
    task, _, keys, _ = random_task(learner, decoder_ln=learner is MLPLearner)
    g = torch.Generator().manual_seed(2)
    targets = torch.randn(B, N, D, generator=g, dtype=torch.float64)
    init = [0.3 * torch.randn(1, H, *s, generator=g, dtype=torch.float64) for s in make(learner).shapes]
    perm = torch.rand(B, H, N, generator=g).argsort(-1) if shuffled else None
    fast, _ = inner_loop(task, init, keys, targets, lrs, perm)
    naive = naive_inner_loop(task, init, keys, targets, lrs, perm)
    library_reference, _ = inner_loop(task, init, keys, targets, lrs, perm, gradient="autograd")
    for a, b, c in zip(fast, naive, library_reference):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)
        torch.testing.assert_close(c, b, rtol=1e-11, atol=1e-11)


def _double_mixer(**overrides):
    config = tiny_config(**overrides)
    mixer = TTTMixer(config, layer_idx=0).double().eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in list(mixer.parameters()) + list(mixer.buffers()):
            p.copy_(0.4 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return mixer


@pytest.mark.parametrize(
    "overrides",
    [
        dict(mixer="ttt_mlp"),
        dict(mixer="ttt_linear", learn_inner_init=True),
        dict(mixer="ttt_mlp", inner_steps=2, inner_lr=[1.0, 0.5]),
        dict(mixer="ttt_mlp", inner_steps=2, inner_batching="shuffled"),
    ],
    ids=["mlp", "linear", "mlp-T2", "mlp-shuffled-T2"],
)
def test_outer_gradient_through_inner_loop_gradcheck(overrides):
    """torch.autograd.gradcheck of the whole layer w.r.t. its input and the parameters the inner loop uses."""
    mixer = _double_mixer(**overrides)
    names = ["value_weight", "value_bias", "inner_init_0", "key.weight"]
    if mixer.config.decoder_layer_norm:
        names += ["decoder_norm_weight", "decoder_norm_bias"]
    params = {n: p.detach().clone().requires_grad_() for n, p in mixer.named_parameters() if n in names}
    assert set(params) == set(names)
    x = torch.randn(1, 5, 12, dtype=torch.float64, requires_grad=True)

    def layer(x, *values):
        return functional_call(mixer, dict(zip(params, values)), (x,))[0]

    assert torch.autograd.gradcheck(layer, (x, *params.values()), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("mixer", ["ttt_mlp", "ttt_linear"])
def test_autograd_inner_gradient_option_gives_the_same_layer(mixer):
    """config.inner_gradient="autograd" (the reference path) matches the analytic path, outputs and outer grads."""
    analytic = _double_mixer(mixer=mixer, inner_steps=2)
    reference = _double_mixer(mixer=mixer, inner_steps=2, inner_gradient="autograd")
    x = torch.randn(2, 16, 12, dtype=torch.float64)
    out_a, out_r = analytic(x)[0], reference(x)[0]
    torch.testing.assert_close(out_a, out_r, rtol=1e-10, atol=1e-10)
    grads = [
        torch.autograd.grad(out.square().sum(), m.value_weight)[0]
        for out, m in ((out_a, analytic), (out_r, reference))
    ]
    torch.testing.assert_close(*grads, rtol=1e-9, atol=1e-10)
    with torch.no_grad():  # inference: the reference needs no graph from the outside
        torch.testing.assert_close(reference(x)[0], out_a, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("overrides", [dict(), dict(inner_steps=2), dict(decoder_layer_norm=True)])
def test_structural_zero_init_equals_a_zero_parameter(overrides):
    """MTTT-Linear's frozen W_0 = 0 (no tensor, first step skips f = 0) equals the general path from a zero W_0."""
    frozen = _double_mixer(mixer="ttt_linear", **overrides)
    general = _double_mixer(mixer="ttt_linear", learn_inner_init=True, **overrides)
    with torch.no_grad():
        general.inner_init_0.zero_()
        for name, p in frozen.named_parameters():
            dict(general.named_parameters())[name].copy_(p)
    x = torch.randn(2, 16, 12, dtype=torch.float64)
    out_f, losses_f = frozen(x, return_inner_losses=True)
    out_g, losses_g = general(x, return_inner_losses=True)
    torch.testing.assert_close(out_f, out_g, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(losses_f, losses_g, rtol=1e-12, atol=1e-12)
    grad_f, grad_g = (
        torch.autograd.grad(o.square().sum(), m.value_weight)[0] for o, m in ((out_f, frozen), (out_g, general))
    )
    torch.testing.assert_close(grad_f, grad_g, rtol=1e-11, atol=1e-12)


def test_inner_losses_report_before_and_after_every_step():
    mixer = _double_mixer(mixer="ttt_mlp", inner_steps=3, inner_lr=0.05)
    x = torch.randn(2, 16, 12, dtype=torch.float64)
    out, losses = mixer(x, return_inner_losses=True)
    assert losses.shape == (2, 3, 4)
    assert not losses.requires_grad
    assert (losses[..., 1:] < losses[..., :-1]).all()  # small steps descend the inner loss
    task = mixer.reconstruction_task()
    keys = mixer.key(x).view(2, 16, 3, 4).transpose(1, 2)
    w0 = [p.unsqueeze(0) for p in mixer.inner_init_params()]
    torch.testing.assert_close(losses[..., 0], task.loss(w0, keys, x.unsqueeze(1)))
    out_plain, none = mixer(x)
    assert none is None
    torch.testing.assert_close(out, out_plain, rtol=0, atol=0)


def test_hand_written_gelu_second_derivative_equals_autograd_float64():
    """The outer loop's second derivative of GELU (eager path) against autograd's formula for aten's
    gelu_backward, over a range that reaches the tanh's saturation; and gradcheck of the function."""
    g = torch.Generator().manual_seed(4)
    a = (6 * torch.randn(3, 50, generator=g, dtype=torch.float64)).requires_grad_()
    grad = torch.randn(3, 50, generator=g, dtype=torch.float64, requires_grad=True)
    dout = torch.randn(3, 50, generator=g, dtype=torch.float64)
    reference = torch.autograd.grad(torch.ops.aten.gelu_backward(grad, a, approximate="tanh"), (grad, a), dout)
    ours = torch.autograd.grad(_GeluTanhGrad.apply(grad, a), (grad, a), dout)
    for x, y in zip(ours, reference):
        assert y.abs().max() > 0.1
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(_GeluTanhGrad.apply, (grad[:, :6], a[:, :6]))
