"""The attention baselines of TTT-ViT: softmax self-attention and linear attention, behind the same block interface as
the TTT mixers (tokens `x` [B, N, d] in, tokens [B, N, d] and no inner losses out), and the head split they share.

In the paper's view (Sun et al., arXiv 2310.13807, section 3.2) both are inner loops too: self-attention is kernel
regression on the tokens (`nadaraya_watson`), linear attention a linear learner fitted in one step.
"""

import torch
import torch.nn.functional as F
from torch import nn


def _split_heads(x, heads):
    batch, tokens, width = x.shape
    return x.view(batch, tokens, heads, width // heads).transpose(1, 2)  # [B, N, d] -> [B, H, N, k]


def _merge_heads(x):
    batch, heads, tokens, k = x.shape
    return x.transpose(1, 2).reshape(batch, tokens, heads * k)  # [B, H, N, k] -> [B, N, d]


def nadaraya_watson(queries, keys, values, scale):
    """Kernel regression with kernel exp(scale * q . k): the learner that softmax attention "trains".

    Fitting it is free (it stores the training pairs (k_i, v_i)); predicting at q_j is the kernel-weighted
    mean of the v_i. This is the paper's view of self-attention as an inner loop (section 3.2).
    """
    logits = scale * queries @ keys.transpose(-1, -2)  # [B, H, N, N]
    kernel = torch.exp(logits - logits.amax(-1, keepdim=True))
    return (kernel @ values) / kernel.sum(-1, keepdim=True)


class _QKVMixer(nn.Module):
    """Query, key, value and output projections over all heads: the attention baselines' parameters."""

    def __init__(self, config, layer_idx: int = 0):
        super().__init__()
        d = config.hidden_size
        self.config, self.num_heads = config, config.num_attention_heads
        self.query, self.key, self.value, self.output = (nn.Linear(d, d) for _ in range(4))

    def _qkv(self, x):
        return (_split_heads(proj(x), self.num_heads) for proj in (self.query, self.key, self.value))  # [B, H, N, k]


def attention_probs(queries, keys, scale):
    """Softmax attention weights softmax(scale * q . k) over the keys, [B, H, N, N] (softmax in float32 at least)."""
    logits = scale * queries @ keys.transpose(-1, -2)  # [B, H, N, N]
    return logits.softmax(-1, dtype=torch.promote_types(logits.dtype, torch.float32)).to(logits.dtype)


class SelfAttentionMixer(_QKVMixer):
    """Softmax self-attention (SDPA by default; `attn_implementation="eager"` runs the explicit kernel form).

    `return_attentions=True` computes the weights explicitly (whatever the implementation) and returns them,
    [B, H, N, N], in place of the inner losses this mixer never has."""

    def forward(self, x, return_inner_losses: bool = False, return_attentions: bool = False):
        q, k, v = self._qkv(x)
        if return_attentions:
            probs = attention_probs(q, k, q.shape[-1] ** -0.5)
            return self.output(_merge_heads(probs @ v)), probs
        if getattr(self.config, "_attn_implementation", None) == "eager":
            out = nadaraya_watson(q, k, v, q.shape[-1] ** -0.5)
        else:
            out = F.scaled_dot_product_attention(q, k, v)  # [B, H, N, k]
        return self.output(_merge_heads(out)), None


class LinearAttentionMixer(_QKVMixer):
    """Linear attention y_j = sum_i (q_j . k_i) v_i / Z_j, computed keys-first (cost linear in N).

    Z_j = N k (constant, the official MTTT code's normaliser) or q_j . sum_i k_i (adaptive); the feature map
    on q and k is the identity or elu + 1 (Katharopoulos et al., 2020).
    """

    def forward(self, x, return_inner_losses: bool = False):
        q, k, v = self._qkv(x)
        if self.config.linear_attention_feature_map == "elu_plus_one":
            q, k = F.elu(q) + 1, F.elu(k) + 1
        kv = k.transpose(-1, -2) @ v  # [B, H, k, k]
        out = q @ kv  # [B, H, N, k]
        if self.config.linear_attention_normalizer == "constant":
            out = out / (q.shape[-2] * q.shape[-1])
        else:
            out = out / (q @ k.sum(-2, keepdim=True).transpose(-1, -2)).clamp_min(1e-6)
        return self.output(_merge_heads(out)), None


__all__ = ["LinearAttentionMixer", "SelfAttentionMixer", "attention_probs", "nadaraya_watson"]
