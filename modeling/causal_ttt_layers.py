"""The causal TTT layer for sequences: the mini-batch online form of Sun et al. 2024 ("Learning to (Learn at Test
Time): RNNs with Expressive Hidden States", arXiv 2407.04620), built on the TTT-ViT layer's learners and
reconstruction task (ttt_layers.py).

The sequence is cut into mini-batches of b tokens. Within a mini-batch starting from W, token t's output is
f(q_t; W_t) with W_t = W - lr * sum_{i <= t} grad l_i(W): every gradient is taken at the mini-batch's W, so the
b outputs come from one forward, one backward and triangular masks (`Learner.causal_forward`, the dual form).
After the mini-batch, W - lr * (the sum of all b gradients) carries over to the next one: the layer's state.
l_i is the reconstruction loss of token i, scaled 1 / (b k) like a mini-batch mean (ReconstructionTask), also in a
shorter last mini-batch: a token's output never depends on the tokens after it, nor on how many there are.
"""

import torch
from torch import nn

from .attention_layers import _merge_heads
from .ttt_layers import TTTMixer, descend


class CausalConv(nn.Module):
    """A causal depthwise convolution over the sequence, [B, T, d] -> [B, T, d]: position t mixes x_{t-c+1} .. x_t
    per channel (Sun et al. 2024 put one before the TTT layer's keys and queries in their Mamba backbone)."""

    def __init__(self, width: int, size: int):
        super().__init__()
        self.conv = nn.Conv1d(width, width, size, groups=width, padding=size - 1)

    def forward(self, x):
        return self.conv(x.transpose(1, 2))[..., : x.shape[1]].transpose(1, 2)  # keep the causal outputs


def conv_history(conv: "CausalConv | None") -> int:
    """Floats a causal convolution of width c keeps between positions: its last c - 1 inputs (0 without one)."""
    return 0 if conv is None else (conv.conv.kernel_size[0] - 1) * conv.conv.in_channels


class CausalTTTMixer(TTTMixer):
    """TTT-Linear or TTT-MLP over a sequence x [B, T, d]; the output at t depends on x_1 .. x_t only.

    The parameters are the TTT-ViT mixer's (key, query, g, decoder LN, output, W_0) and, with
    `ttt_conv_size` c > 0, a causal convolution of width c before the keys and one before the queries: the keys can
    then hold an earlier token than the reconstruction target, so the inner loop can fit a map from one token to the
    next. The config supplies `mixer`, `inner_lr`, `ttt_mini_batch_size`, `ttt_conv_size`, `learn_inner_init`,
    `inner_hidden_ratio`, `decoder_layer_norm`."""

    def __init__(self, config, layer_idx: int = 0):
        super().__init__(config, layer_idx)
        size = getattr(config, "ttt_conv_size", 0)
        self.key_conv = CausalConv(config.hidden_size, size) if size else None
        self.query_conv = CausalConv(config.hidden_size, size) if size else None

    def keys_queries_w0(self, x):
        if self.key_conv is None:
            return super().keys_queries_w0(x)
        keys, _, w0 = super().keys_queries_w0(self.key_conv(x))
        _, queries, _ = super().keys_queries_w0(self.query_conv(x))
        return keys, queries, w0

    def forward(self, x, return_inner_losses: bool = False):
        if return_inner_losses:
            raise ValueError("the causal TTT layer reports no inner losses (only TTT-ViT's bidirectional layer does).")
        keys, queries, params = self.keys_queries_w0(x)  # [B, H, T, k], [B, H, T, k], W_0
        task = self.reconstruction_task()
        targets = task.targets(x)  # [B, H, T, k (+1 with decoder LN)]
        lr, size, outputs = float(self.config.inner_lr), self.config.ttt_mini_batch_size, []
        for start in range(0, x.shape[1], size):
            window = slice(start, start + size)
            z, q, target = keys[:, :, window], queries[:, :, window], targets[:, :, window]
            f, cache = self.learner.forward(z, params)
            grad_f = task.output_grad(f, z, target, tokens=size)  # [B, H, b, k]: per token, at the mini-batch's W
            outputs.append(self.learner.causal_forward(q, z, cache, grad_f, params, lr))
            params = descend(params, self.learner.backward(grad_f, z, cache, params), lr)
        return self.output(_merge_heads(torch.cat(outputs, dim=2))), None  # [B, H, T, k] -> [B, T, d]

    def state_size(self) -> int:
        """Floats a token-by-token implementation carries from one position to the next, per sequence: every head's
        learner weights twice (the mini-batch's starting W, where all its gradients are taken, and the running W,
        as the official TTT cache keeps them), and the last c - 1 inputs of the causal convolutions (one history
        serves the key and the query convolution, which read the same input)."""
        weights = self.num_heads * sum(torch.Size(shape).numel() for shape in self.learner.shapes)
        return 2 * weights + conv_history(self.key_conv)
