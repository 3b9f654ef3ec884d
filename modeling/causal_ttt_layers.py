"""The causal TTT layer for sequences: the mini-batch online form of Sun et al. 2024 ("Learning to (Learn at Test
Time): RNNs with Expressive Hidden States", arXiv 2407.04620), built on the TTT-ViT layer's learners and
reconstruction task (ttt_layers.py).

The sequence is cut into mini-batches of b tokens. Within a mini-batch starting from W, token t's output is
f(q_t; W_t) with W_t = W - lr * sum_{i <= t} grad l_i(W): every gradient is taken at the mini-batch's W, so the
b outputs come from one forward, one backward and triangular masks (`Learner.causal_forward`, the dual form).
After the mini-batch, W - lr * (the sum of all b gradients) carries over to the next one: the layer's state.
l_i is the reconstruction loss of token i, scaled 1 / (b k) like a mini-batch mean (ReconstructionTask).
"""

import torch

from .ttt_layers import TTTMixer, _merge_heads, _split_heads


class CausalTTTMixer(TTTMixer):
    """TTT-Linear or TTT-MLP over a sequence x [B, T, d]; the output at t depends on x_1 .. x_t only.

    The parameters are the TTT-ViT mixer's (key, query, g, decoder LN, output, W_0); the config supplies
    `mixer`, `inner_lr`, `ttt_mini_batch_size`, `learn_inner_init`, `inner_hidden_ratio`, `decoder_layer_norm`."""

    def forward(self, x, return_inner_losses: bool = False):
        tokens = x.shape[1]
        keys = _split_heads(self.key(x), self.num_heads)  # [B, H, T, k]
        queries = _split_heads(self.query(x), self.num_heads)  # [B, H, T, k]
        task = self.reconstruction_task()
        targets = task.targets(x)  # [B, H, T, k (+1 with decoder LN)]
        params = None if self.learner.starts_at_zero else [p.unsqueeze(0) for p in self.inner_init_params()]
        lr, size, outputs = float(self.config.inner_lr), self.config.ttt_mini_batch_size, []
        for start in range(0, tokens, size):
            window = slice(start, start + size)
            z, q, target = keys[:, :, window], queries[:, :, window], targets[:, :, window]
            f, cache = self.learner.forward(z, params)
            grad_f = task.output_grad(f, z, target)  # [B, H, b, k]: per token, at the mini-batch's W
            outputs.append(self.learner.causal_forward(q, z, cache, grad_f, params, lr))
            grads = self.learner.backward(grad_f, z, cache, params)
            params = [-lr * g for g in grads] if params is None else [p - lr * g for p, g in zip(params, grads)]
        return self.output(_merge_heads(torch.cat(outputs, dim=2))), None  # [B, H, T, k] -> [B, T, d]

    def state_size(self) -> int:
        """Floats carried from one token to the next: the learner's weights, every head (per sequence)."""
        return self.num_heads * sum(torch.Size(shape).numel() for shape in self.learner.shapes)
