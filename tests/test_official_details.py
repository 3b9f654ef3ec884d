"""Details of the authors' JAX code (github test-time-training/mttt) that the model reproduces exactly: the
init of every parameter, the weight-decay mask, the shuffled inner batching's permutations; and the
transformers API around them (output_attentions / output_hidden_states, a corrupt checkpoint)."""

import math
import re

import pytest
import torch
from safetensors import SafetensorError
from transformers import AutoModelForImageClassification

from ttt_hf import TTTViTForImageClassification, TTTViTModel

from .conftest import tiny_config

# ------------------------------------------------------------------------------------------------ init


def flax_variance_scaling(shape, scale, mode, distribution, in_axis=-2, out_axis=-1, batch_axis=()):
    """(std, bound) of `jax.nn.initializers.variance_scaling` on a flax kernel of `shape` (jax's formula:
    fans from `_compute_fans`; truncated normal = truncated_normal(-2, 2) * sqrt(variance) / 0.8796...)."""
    receptive = math.prod(shape) / shape[in_axis] / shape[out_axis] / math.prod(shape[a] for a in batch_axis)
    fan_in, fan_out = shape[in_axis] * receptive, shape[out_axis] * receptive
    variance = scale / {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    if distribution == "truncated_normal":  # 0.8796 is the std of a standard normal cut at +-2: std stays exact
        return math.sqrt(variance), 2 * math.sqrt(variance) / 0.87962566103423978
    if distribution == "uniform":
        return math.sqrt(variance), math.sqrt(3 * variance)
    return math.sqrt(variance), math.inf  # normal


def xavier_uniform(shape, **kw):
    return flax_variance_scaling(shape, 1.0, "fan_avg", "uniform", **kw)


def lecun_normal(shape):  # flax nn.Dense / nn.Conv default kernel_init
    return flax_variance_scaling(shape, 1.0, "fan_in", "truncated_normal")


def assert_distribution(tensor, std, bound, tol=0.03):
    """Sample std within `tol` of `std` (a 10 % error fails: every tensor checked has >= 3,000 values, so the
    sampling error is <= 1.3 %), no value beyond `bound`, and the bound reached (the distribution's shape)."""
    w = tensor.detach().double().flatten()
    assert w.numel() >= 3000
    assert abs(w.std().item() / std - 1) < tol, (w.std().item(), std)
    assert abs(w.mean().item()) < 5 * std / math.sqrt(w.numel())
    if math.isfinite(bound):
        assert w.abs().max().item() <= bound * (1 + 1e-6)
        assert w.abs().max().item() > 0.95 * bound


def test_init_follows_the_official_code():
    """model.py / inner_loop.py, ViT-Tiny width: each parameter against the official initializer's formula
    applied to the official (flax) kernel shape."""
    d, heads, mlp, patch, channels = 192, 3, 1536, 4, 3
    k = d // heads
    config = tiny_config(hidden_size=d, num_attention_heads=heads, intermediate_size=mlp, image_size=32,
                         patch_size=patch, position_embedding="learned", num_labels=10)  # fmt: skip
    model = TTTViTForImageClassification(config)
    base = model.ttt_vit
    # Model.word_embeddings: nn.Conv default (lecun_normal) on [p, p, C, d]; bias zero
    assert_distribution(base.embeddings.patch_embeddings.weight, *lecun_normal((patch, patch, channels, d)))
    assert base.embeddings.patch_embeddings.bias.abs().max() == 0
    # get_posemb("learn"): normal(1 / sqrt(d)), [1, N, d]
    assert_distribution(base.embeddings.position_embeddings, 1 / math.sqrt(d), math.inf)
    # pre_logits: nn.Dense default (lecun_normal) on [d, d]; head: zero kernel, zero bias
    assert_distribution(base.pooler.weight, *lecun_normal((d, d)))
    assert base.pooler.bias.abs().max() == 0
    assert model.classifier.weight.abs().max() == 0 and model.classifier.bias.abs().max() == 0
    mixers = [layer.mixer for layer in base.layers]
    stack = lambda name: torch.cat([m.get_parameter(name).flatten() for m in mixers])
    # TTTLayer: psi/phi "vs_fan_in" on [H, d, k], g/h "vs_fan_out" on [H, k, d], batch axis 0
    fan_in = flax_variance_scaling((heads, d, k), 1.0, "fan_in", "uniform", batch_axis=(0,))
    fan_out = flax_variance_scaling((heads, k, d), 1.0, "fan_out", "uniform", batch_axis=(0,))
    assert_distribution(stack("key.weight"), *fan_in)  # phi
    assert_distribution(stack("query.weight"), *fan_in)  # psi
    assert_distribution(stack("value_weight"), *fan_out)  # g
    assert_distribution(stack("output.weight"), *fan_out)  # h
    # inner encoder (W_0): inner_encoder_init="xavier_uniform", batch axis 0, on [H, k, 4k] and [H, 4k, k]
    assert_distribution(stack("inner_init_0"), *xavier_uniform((heads, k, 4 * k), batch_axis=(0,)))
    assert_distribution(stack("inner_init_2"), *xavier_uniform((heads, 4 * k, k), batch_axis=(0,)))
    for name in ("key.bias", "query.bias", "value_bias", "output.bias", "inner_init_1", "inner_init_3",
                 "decoder_norm_bias"):  # fmt: skip
        assert stack(name).abs().max() == 0, name
    assert (stack("decoder_norm_weight") == 1).all()
    # MlpBlock: xavier_uniform kernels, normal(1e-6) biases
    layers = base.layers
    assert_distribution(torch.cat([layer.mlp.fc1.weight.flatten() for layer in layers]), *xavier_uniform((d, mlp)))
    assert_distribution(torch.cat([layer.mlp.fc2.weight.flatten() for layer in layers]), *xavier_uniform((mlp, d)))
    biases = torch.cat([b for layer in layers for b in (layer.mlp.fc1.bias, layer.mlp.fc2.bias)])
    assert_distribution(biases, 1e-6, math.inf, tol=0.06)  # 3,456 values: sampling error 1.2 %
    # LayerNorms: scale one, bias zero
    for norm in [base.layernorm] + [n for layer in layers for n in (layer.norm1, layer.norm2)]:
        assert (norm.weight == 1).all() and norm.bias.abs().max() == 0


@pytest.mark.parametrize("mixer", ["self_attention", "linear_attention"])
def test_attention_baselines_init_follows_the_official_code(mixer):
    """SelfAttention(kernel_init=xavier_uniform): DenseGeneral initialises its [d, H, k] kernels flattened to
    [d, d]; LinearAttention's Dense layers are xavier_uniform too; biases zero."""
    d = 192
    model = TTTViTModel(tiny_config(hidden_size=d, intermediate_size=768, num_hidden_layers=1, mixer=mixer))
    attn = model.layers[0].mixer
    for proj in (attn.query, attn.key, attn.value, attn.output):
        assert_distribution(proj.weight, *xavier_uniform((d, d)))
        assert proj.bias.abs().max() == 0


def test_init_is_skipped_for_loaded_weights(tmp_path):
    """from_pretrained keeps the saved values of the parameters whose init changed (no re-init after loading)."""
    model = TTTViTForImageClassification(tiny_config(num_labels=3, position_embedding="learned"))
    model.save_pretrained(tmp_path)
    loaded = TTTViTForImageClassification.from_pretrained(tmp_path)
    for (name, p), q in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        torch.testing.assert_close(q, p, rtol=0, atol=0, msg=name)


# -------------------------------------------------------------------------------------- weight decay

OFFICIAL_MASK = re.compile(r".*/kernel$")  # config_{patch,pixel}.py wd_mults, matched by tools/build_optax.py


def official_name(name: str, mixer: str) -> str:
    """Our parameter name -> the official flax parameter path (model.py, inner_loop.py)."""
    top = {
        "embeddings.patch_embeddings.weight": "embedding/kernel", "embeddings.patch_embeddings.bias": "embedding/bias",
        "embeddings.position_embeddings": "pos_embedding",
        "layernorm.weight": "Transformer/encoder_norm/scale", "layernorm.bias": "Transformer/encoder_norm/bias",
        "pooler.weight": "pre_logits/kernel", "pooler.bias": "pre_logits/bias",
        "classifier.weight": "head/kernel", "classifier.bias": "head/bias",
    }  # fmt: skip
    block = {
        "norm1.weight": "LayerNorm_0/scale", "norm1.bias": "LayerNorm_0/bias",
        "norm2.weight": "LayerNorm_1/scale", "norm2.bias": "LayerNorm_1/bias",
        "mlp.fc1.weight": "MlpBlock_0/Dense_0/kernel", "mlp.fc1.bias": "MlpBlock_0/Dense_0/bias",
        "mlp.fc2.weight": "MlpBlock_0/Dense_1/kernel", "mlp.fc2.bias": "MlpBlock_0/Dense_1/bias",
    }  # fmt: skip
    if mixer.startswith("ttt"):  # TTTLayer: phi, psi, g, h, the inner encoder (W_0), the decoder LN
        block |= {
            "mixer.key.weight": "TTTLayer_0/phi/kernel", "mixer.key.bias": "TTTLayer_0/phi/bias",
            "mixer.query.weight": "TTTLayer_0/psi/kernel", "mixer.query.bias": "TTTLayer_0/psi/bias",
            "mixer.value_weight": "TTTLayer_0/g/kernel", "mixer.value_bias": "TTTLayer_0/g_bias",
            "mixer.output.weight": "TTTLayer_0/h/kernel", "mixer.output.bias": "TTTLayer_0/h_bias",
            "mixer.inner_init_0": "TTTLayer_0/inner_Dense_0/kernel",
            "mixer.inner_init_1": "TTTLayer_0/inner_Dense_0/bias",
            "mixer.inner_init_2": "TTTLayer_0/inner_Dense_1/kernel",
            "mixer.inner_init_3": "TTTLayer_0/inner_Dense_1/bias",
            "mixer.decoder_norm_weight": "TTTLayer_0/LayerNorm_0/scale",
            "mixer.decoder_norm_bias": "TTTLayer_0/LayerNorm_0/bias",
        }  # fmt: skip
    else:  # MultiHeadDotProductAttention (query, key, value, out) or LinearAttention (query, key, value, proj)
        module = "MultiHeadDotProductAttention_0" if mixer == "self_attention" else "LinearAttention_0"
        out = "out" if mixer == "self_attention" else "proj"
        for ours, theirs in (("query", "query"), ("key", "key"), ("value", "value"), ("output", out)):
            block |= {
                f"mixer.{ours}.weight": f"{module}/{theirs}/kernel",
                f"mixer.{ours}.bias": f"{module}/{theirs}/bias",
            }
    name = name.removeprefix("ttt_vit.")
    if name in top:
        return top[name]
    i, rest = re.fullmatch(r"layers\.(\d+)\.(.+)", name).groups()
    return f"Transformer/encoderblock_{i}/{block[rest]}"


@pytest.mark.parametrize(
    "overrides",
    [
        {"mixer": "ttt_mlp", "position_embedding": "learned"},
        {"mixer": "ttt_linear"},
        {"mixer": "ttt_linear", "learn_inner_init": True},
        {"mixer": "self_attention"},
        {"mixer": "linear_attention"},
    ],
    ids=["mlp-learned-pos", "linear", "linear-learned-w0", "attn", "linattn"],
)
def test_decay_parameter_names_are_the_official_kernel_mask(overrides):
    model = TTTViTForImageClassification(tiny_config(num_labels=5, **overrides))
    names = [name for name, _ in model.named_parameters()]
    expected = [name for name in names if OFFICIAL_MASK.fullmatch(official_name(name, overrides["mixer"]))]
    decay = model.decay_parameter_names()
    assert decay == expected  # in named_parameters() order
    assert set(model.ttt_vit.decay_parameter_names()) == {
        n.removeprefix("ttt_vit.") for n in expected if "ttt_vit" in n
    }
    mixer = overrides["mixer"]
    must = ["ttt_vit.embeddings.patch_embeddings.weight", "ttt_vit.pooler.weight", "classifier.weight",
            "ttt_vit.layers.1.mlp.fc1.weight", "ttt_vit.layers.1.mlp.fc2.weight",
            "ttt_vit.layers.0.mixer.key.weight", "ttt_vit.layers.0.mixer.query.weight",
            "ttt_vit.layers.0.mixer.output.weight"]  # fmt: skip
    never = ["ttt_vit.embeddings.patch_embeddings.bias", "ttt_vit.layernorm.weight", "ttt_vit.layernorm.bias",
             "ttt_vit.layers.0.norm1.weight", "ttt_vit.layers.0.norm2.weight", "ttt_vit.layers.0.mlp.fc1.bias",
             "ttt_vit.pooler.bias", "classifier.bias", "ttt_vit.layers.0.mixer.key.bias"]  # fmt: skip
    if mixer == "ttt_mlp":
        must += ["ttt_vit.layers.0.mixer.value_weight", "ttt_vit.layers.0.mixer.inner_init_0",
                 "ttt_vit.layers.0.mixer.inner_init_2"]  # fmt: skip
        never += ["ttt_vit.layers.0.mixer.value_bias", "ttt_vit.layers.0.mixer.inner_init_1",
                  "ttt_vit.layers.0.mixer.inner_init_3", "ttt_vit.layers.0.mixer.decoder_norm_weight",
                  "ttt_vit.layers.0.mixer.decoder_norm_bias", "ttt_vit.embeddings.position_embeddings"]  # fmt: skip
    elif mixer == "ttt_linear":
        must += ["ttt_vit.layers.0.mixer.value_weight"]
        if overrides.get("learn_inner_init"):  # a learned MTTT-Linear W_0 is the kernel of inner_Dense_0 (mlp_1)
            must += ["ttt_vit.layers.0.mixer.inner_init_0"]
        else:  # frozen W_0 = 0: no parameter (officially frozen by schedule=None, so never decayed either)
            assert not any("inner_init" in name for name in names)
    else:
        must += ["ttt_vit.layers.0.mixer.value.weight"]
        never += ["ttt_vit.layers.0.mixer.value.bias"]
    assert set(must) <= set(decay), set(must) - set(decay)
    assert set(never) <= set(names) and not set(never) & set(decay), set(never) & set(decay)


# ------------------------------------------------------------------------------ shuffled inner batching


def shuffled_classifier(**overrides):
    model = TTTViTForImageClassification(
        tiny_config(num_labels=5, mixer="ttt_mlp", inner_steps=4, inner_batching="shuffled", **overrides)
    ).double()
    torch.nn.init.normal_(model.classifier.weight, std=0.5)  # the head starts at zero: make logits informative
    return model


def test_shuffle_scope_default_is_the_official_one_order_per_batch():
    assert tiny_config().inner_shuffle_scope == "batch"
    with pytest.raises(ValueError, match=r"`inner_shuffle_scope` must be one of 'batch', 'image'; got 'device'"):
        tiny_config(inner_shuffle_scope="device")


@pytest.mark.parametrize("scope", ["batch", "image"])
def test_shuffle_scope_permutations(scope):
    """inner_loop.py (SGD branch): one order per head from make_rng("idx") folded with the head index, drawn
    inside the vmap over the batch, so every image of the call shares it; fresh every call. "image": one each."""
    mixer = shuffled_classifier(inner_shuffle_scope=scope).ttt_vit.layers[0].mixer.train()
    first, second = mixer._permutation(4, 16, "cpu"), mixer._permutation(4, 16, "cpu")
    assert first.shape == ((1, 3, 16) if scope == "batch" else (4, 3, 16))
    assert (first.sort(-1).values == torch.arange(16)).all()  # a permutation of the tokens per head
    assert not torch.equal(first[:, 0], first[:, 1]) and not torch.equal(first[:, 1], first[:, 2])  # per head
    assert not torch.equal(first, second)  # per call
    if scope == "image":
        assert not torch.equal(first[0], first[1])


@pytest.mark.parametrize("scope", ["batch", "image"])
def test_shuffle_scope_in_training_and_random_evaluation(scope):
    """Two identical images in one batch get the same output exactly when they share the token order."""
    model = shuffled_classifier(inner_shuffle_scope=scope).train()
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64).expand(3, -1, -1, -1)
    for mode in ("train", "random eval"):
        if mode == "random eval":
            model.eval().config.inner_shuffle_eval = "random"  # the official evaluation
        logits = model(x).logits
        assert (model(x).logits - logits).abs().max() > 1e-6  # fresh orders every call
        if scope == "batch":
            torch.testing.assert_close(logits[1:], logits[:1].expand(2, -1), rtol=1e-12, atol=1e-12)
        else:
            assert (logits[1:] - logits[:1]).abs().max() > 1e-6


# ------------------------------------------------------------------------- output_attentions / hidden states


@pytest.mark.parametrize("mixer", ["ttt_mlp", "ttt_linear", "linear_attention"])
def test_output_attentions_raises_for_mixers_without_attention_matrix(mixer):
    x = torch.randn(2, 3, 8, 8)
    match = "never forms the N x N attention matrix" if mixer == "linear_attention" else "no attention matrix"
    for model in (TTTViTModel(tiny_config(mixer=mixer)), TTTViTForImageClassification(tiny_config(mixer=mixer))):
        with pytest.raises(ValueError, match=rf"`output_attentions=True` needs mixer='self_attention'.*{match}"):
            model(x, output_attentions=True)
        assert model(x, output_attentions=False).attentions is None
    with pytest.raises(ValueError, match="`output_attentions` must be a bool, got 'yes'"):
        model(x, output_attentions="yes")


def test_self_attention_returns_its_softmax_weights():
    """Every block's softmax(q k^T / sqrt(k)) [B, H, N, N], computed from the block's own projections; asking for
    them leaves the outputs (from SDPA otherwise) unchanged."""
    model = TTTViTForImageClassification(tiny_config(mixer="self_attention", num_labels=5)).double().eval()
    torch.nn.init.normal_(model.classifier.weight, std=0.5)
    inputs = []
    for layer in model.ttt_vit.layers:
        layer.mixer.register_forward_pre_hook(lambda module, args, kwargs: inputs.append(args[0]), with_kwargs=True)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    plain = model(x).logits
    inputs.clear()
    out = model(x, output_attentions=True)
    torch.testing.assert_close(out.logits, plain, rtol=1e-12, atol=1e-12)
    assert len(out.attentions) == 2
    for layer, h, weights in zip(model.ttt_vit.layers, inputs, out.attentions, strict=True):
        split = lambda t: t.view(2, 16, 3, 4).transpose(1, 2)
        q, k = split(layer.mixer.query(h)), split(layer.mixer.key(h))
        expected = torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1)  # sqrt(head width 4) = 2
        torch.testing.assert_close(weights, expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 16, dtype=torch.float64))
    logits, attentions = model(x, output_attentions=True, return_dict=False)  # the tuple skips the Nones
    torch.testing.assert_close(logits, plain, rtol=1e-12, atol=1e-12)
    assert len(attentions) == 2
    _, _, attentions = model.ttt_vit(x, output_attentions=True, return_dict=False)
    torch.testing.assert_close(attentions[1], out.attentions[1], rtol=0, atol=0)


@pytest.mark.parametrize("mixer", ["ttt_mlp", "self_attention"])
def test_output_hidden_states_selects_like_vit(mixer):
    """As transformers' ViT: a bool, or indices into (embeddings, block 1, ..., block L); the others are None."""
    model = TTTViTForImageClassification(tiny_config(mixer=mixer, num_labels=5)).double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    every = model(x, output_hidden_states=True).hidden_states
    assert (
        len(every) == 3
        and model(x).hidden_states is None
        and model(x, output_hidden_states=False).hidden_states is None
    )
    for selection, kept in (([0, 2], {0, 2}), (-1, {2}), ((1,), {1}), ([0, -3], {0})):
        selected = model(x, output_hidden_states=selection).hidden_states
        assert len(selected) == 3
        for i, (h, reference) in enumerate(zip(selected, every, strict=True)):
            if i in kept:
                torch.testing.assert_close(h, reference, rtol=0, atol=0)
            else:
                assert h is None
    assert model(x, output_hidden_states=[]).hidden_states is None
    with pytest.raises(ValueError, match=r"indices must be in \[-3, 2\].*got \[0, 3\]"):
        model(x, output_hidden_states=[0, 3])
    for bad in ("all", 1.0, [0, True], torch.tensor([0])):
        with pytest.raises(ValueError, match="`output_hidden_states` must be a bool, or an index or list of indices"):
            model.ttt_vit(x, output_hidden_states=bad)


# --------------------------------------------------------------------------------- corrupt checkpoint


@pytest.mark.parametrize("keep", [0.5, 10], ids=["half", "ten-bytes"])
def test_truncated_checkpoint_raises_an_oserror_naming_the_file(tmp_path, keep):
    TTTViTForImageClassification(tiny_config(num_labels=3)).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: int(len(data) * keep) if keep < 1 else keep])
    for load in (TTTViTForImageClassification.from_pretrained, AutoModelForImageClassification.from_pretrained):
        with pytest.raises(OSError, match="truncated or corrupt") as caught:
            load(tmp_path)
        message = str(caught.value)
        assert str(weights) in message
        assert "download it again" in message and "save_pretrained" in message
        assert isinstance(caught.value.__cause__, SafetensorError)
