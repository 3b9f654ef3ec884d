"""The paper's equivalences (MTTT.md): MTTT-Linear from zero is linear attention; attention is a kernel estimator."""

import pytest
import torch

from ttt_hf.modeling.attention_layers import LinearAttentionMixer, SelfAttentionMixer, nadaraya_watson
from ttt_hf.modeling.ttt_layers import TTTMixer

from .conftest import tiny_config


def _randomise(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def linear_attention_from_ttt_linear(ttt: TTTMixer) -> LinearAttentionMixer:
    """Linear attention with the same parameters as MTTT-Linear (W_0 = 0, T = 1, eta = 1, no decoder LN).

    One step from zero: W_1 = (1/(N k)) sum_i phi(x_i)^T (x_i - g_bias) g_h^T, so
    f(psi(x_j); W_1) = (1/(N k)) sum_i (psi(x_j) . phi(x_i)) v_i  with  v_i = g_h (x_i - g_bias):
    key = phi, query = psi, value = x -> g_h x - g_h g_bias, the same output projection.
    """
    config = ttt.config
    attn = LinearAttentionMixer(config).to(ttt.value_weight.dtype)
    heads, k, d = ttt.value_weight.shape
    with torch.no_grad():
        attn.key.load_state_dict(ttt.key.state_dict())
        attn.query.load_state_dict(ttt.query.state_dict())
        attn.output.load_state_dict(ttt.output.state_dict())
        attn.value.weight.copy_(ttt.value_weight.reshape(heads * k, d))  # [H*k, d]: row block h is g_h
        attn.value.bias.copy_(-(ttt.value_weight @ ttt.value_bias).reshape(heads * k))
    return attn


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-6), (torch.float64, 1e-12)])
def test_ttt_linear_from_zero_equals_linear_attention(dtype, tol):
    config = tiny_config(mixer="ttt_linear")
    assert (config.inner_steps, config.inner_lr, config.decoder_layer_norm, config.learn_inner_init) == (
        1,
        1.0,
        False,
        False,
    )
    ttt = _randomise(TTTMixer(config).to(dtype))
    assert ttt.learner.starts_at_zero  # W_0 = 0, frozen: the first step starts from f = 0
    attn = linear_attention_from_ttt_linear(ttt)
    x = torch.randn(3, 16, 12, dtype=dtype)
    out_ttt, _ = ttt(x)
    out_attn, _ = attn(x)
    assert out_ttt.abs().max() > 0.1
    err = (out_ttt - out_attn).abs().max().item()
    assert err < tol * out_ttt.abs().max().item(), err


def test_ttt_linear_equivalence_breaks_with_a_second_step():
    """The equivalence is specific to T = 1: a second step makes the layer non-linear in the values."""
    config = tiny_config(mixer="ttt_linear", inner_steps=2)
    ttt = _randomise(TTTMixer(config).double())
    attn = linear_attention_from_ttt_linear(ttt)
    x = torch.randn(2, 16, 12, dtype=torch.float64)
    assert (ttt(x)[0] - attn(x)[0]).abs().max() > 1e-3


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_self_attention_is_the_nadaraya_watson_kernel_estimator(dtype, tol):
    config = tiny_config(mixer="self_attention")
    attn = _randomise(SelfAttentionMixer(config).to(dtype))
    x = torch.randn(2, 16, 12, dtype=dtype)
    sdpa, _ = attn(x)
    # The learner: store (k_i, v_i), predict at q_j with the kernel-weighted mean, kernel exp(q . k / sqrt(k)).
    split = lambda t: t.view(2, 16, 3, 4).transpose(1, 2)  # noqa: E731
    q, k, v = split(attn.query(x)), split(attn.key(x)), split(attn.value(x))
    kernel = torch.exp(q @ k.transpose(-1, -2) / 2.0)  # sqrt(head width 4) = 2
    estimate = (kernel @ v) / kernel.sum(-1, keepdim=True)
    explicit = attn.output(estimate.transpose(1, 2).reshape(2, 16, 12))
    torch.testing.assert_close(sdpa, explicit, rtol=tol, atol=tol)
    torch.testing.assert_close(nadaraya_watson(q, k, v, 0.5), estimate, rtol=tol, atol=tol)
    config._attn_implementation = "eager"  # the mixer's own kernel-estimator path
    torch.testing.assert_close(attn(x)[0], sdpa, rtol=tol, atol=tol)


def test_linear_attention_normalisers():
    config = tiny_config(
        mixer="linear_attention", linear_attention_feature_map="elu_plus_one", linear_attention_normalizer="adaptive"
    )
    attn = _randomise(LinearAttentionMixer(config).double())
    x = torch.randn(2, 16, 12, dtype=torch.float64)
    split = lambda t: t.view(2, 16, 3, 4).transpose(1, 2)  # noqa: E731
    q, k = (torch.nn.functional.elu(split(p(x))) + 1 for p in (attn.query, attn.key))
    v = split(attn.value(x))
    scores = q @ k.transpose(-1, -2)  # quadratic-order reference
    expected = attn.output(((scores @ v) / scores.sum(-1, keepdim=True)).transpose(1, 2).reshape(2, 16, 12))
    torch.testing.assert_close(attn(x)[0], expected, rtol=1e-12, atol=1e-12)
