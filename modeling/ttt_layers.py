"""Token mixers of TTT-ViT: the MTTT inner loop (MLP and linear learners); the attention baselines are in
attention_layers.py, and `MIXER_CLASSES` maps every `config.mixer` to its module.

Every mixer maps the block's normalised tokens `x` [B, N, d] to new tokens [B, N, d]. Shapes use B batch,
H heads, N tokens, d width, k = d / H head width, m = hidden width of the MLP learner.

The MTTT layer (Sun et al., arXiv 2310.13807, section 4) trains, per image and per head, a learner
f(.; W) on the reconstruction loss

    loss_h(W) = 1 / (2 n k) * || DecLN(f(phi_h(x); W) g_h + g_bias) - x ||^2        (n tokens in the step)

by `inner_steps` gradient steps from a shared W_0, then outputs sum_h f(psi_h(x); W_T) h_h + h_bias.
phi, psi and g are the paper's theta_K, theta_Q and theta_V, so they are called key, query and value here.
The inner gradient is written out by hand (`reconstruction_grad`) as ordinary differentiable tensor ops,
batched over B x H: the outer loop's autograd differentiates through it (second order) without the cost
of `create_graph=True`, and a float64 test proves it equal to `torch.autograd.grad`.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint
from transformers import initialization as init  # skips tensors a checkpoint loaded

from .attention_layers import LinearAttentionMixer, SelfAttentionMixer, _merge_heads, _split_heads
from .fused_mlp import fused_mlp_available, mlp_forward, mlp_param_grad

_GELU_C, _GELU_K = math.sqrt(2 / math.pi), 0.044715  # gelu_tanh(a) = a/2 (1 + tanh(C (a + K a^3)))


class _GeluTanhGrad(torch.autograd.Function):
    """grad * gelu_tanh'(a): aten's fused `gelu_backward` forward, and a hand-written backward (the outer loop's
    second derivative) written as in-place passes, 3x faster on a CPU than autograd's composite formula for
    gelu_backward's backward. Eager only: compiled graphs keep aten's formula, which inductor fuses anyway."""

    @staticmethod
    def forward(ctx, grad, a):
        ctx.save_for_backward(grad, a)
        return torch.ops.aten.gelu_backward(grad, a, approximate="tanh")

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        grad, a = ctx.saved_tensors
        c = a.new_tensor(_GELU_C)
        t = torch.addcmul(c, a, a, value=_GELU_C * _GELU_K).mul_(a).tanh_()  # tanh(u), u = C (a + K a^3)
        du = torch.addcmul(c, a, a, value=3 * _GELU_C * _GELU_K)  # u' = C (1 + 3 K a^2)
        # gelu''(a) = (1 - t^2) (2 u' - C - a t u'^2)
        second = (t * du).mul_(du).mul_(a).neg_().add_(du, alpha=2).sub_(_GELU_C)
        second.mul_(torch.addcmul(a.new_ones(()), t, t, value=-1))  # 1 - t^2
        return torch.ops.aten.gelu_backward(dout, a, approximate="tanh"), (dout * grad).mul_(second)


def gelu_tanh_grad(grad, a):
    """grad * gelu_tanh'(a), differentiable once more (the outer loop's second order)."""
    if torch.compiler.is_compiling() or not (grad.requires_grad or a.requires_grad):
        return torch.ops.aten.gelu_backward(grad, a, approximate="tanh")  # it has a double-backward formula
    return _GeluTanhGrad.apply(grad, a)


class Learner:
    """The learner f(z; W) that an inner loop trains, per image and head: its parameter shapes for head width k,
    their init, the forward and the backward (d loss / d W from d loss / d f, summed over tokens).

    `starts_at_zero`: W_0 = 0 and frozen (MTTT-Linear in the paper). W_0 is then structural: no tensor, and the
    inner loop passes params=None, which `forward` and `backward` read as W = 0 (f(z; 0) = 0 costs nothing)."""

    starts_at_zero = False

    def __init__(self, k: int):
        self.k = k

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        raise NotImplementedError

    def zeros(self, like: torch.Tensor) -> list[torch.Tensor]:
        """W = 0 as tensors [1, H, ...] for keys `like` [B, H, n, k]."""
        return [like.new_zeros(1, like.shape[1], *shape) for shape in self.shapes]

    def init_(self, params) -> None:
        """Initialise a learned W_0 (each tensor [H, ...]) in place."""
        for param in params:
            init.zeros_(param)

    def lean(self, z) -> bool:
        """Whether to recompute, not store, the [B, H, n, k] intermediates of the decoder-LN gradient."""
        return False

    def causal_forward(self, q, z, cache, grad_out, params, lr):
        """The dual form of one mini-batch (Sun et al. 2024, arXiv 2407.04620): f(q_t; W_t) for every t, where
        W_t = W - lr * (the gradient of the tokens i <= t only), from keys z [B, H, b, k], the forward's
        `cache` and the per-token d loss / d f `grad_out` at W; with triangular masks, no loop over tokens."""
        raise NotImplementedError


class LinearLearner(Learner):
    """MTTT-Linear's learner f(z; W) = z W with W [.., H, k, k]; W_0 = 0 and frozen in the paper."""

    def __init__(self, k: int, learned_init: bool = False):
        super().__init__(k)
        self.starts_at_zero = not learned_init

    @property
    def shapes(self):
        return [(self.k, self.k)]

    def forward(self, z, params):
        if params is None:  # W = 0: f = 0, not computed (the task reads f = None so)
            return None, None
        (w,) = params
        return z @ w, None  # [B, H, n, k]

    def backward(self, grad_out, z, cache, params):
        return (z.transpose(-1, -2) @ grad_out,)  # [B, H, k, k]

    def causal_forward(self, q, z, cache, grad_out, params, lr):
        # q_t (W - lr sum_{i<=t} z_i^T g_i) = q_t W - lr sum_{i<=t} (q_t . z_i) g_i
        update = _causal(q @ z.transpose(-1, -2)) @ grad_out  # [B, H, b, k]
        return -lr * update if params is None else q @ params[0] - lr * update


class MLPLearner(Learner):
    """MTTT-MLP's learner f(z; W) = gelu(z W1 + b1) W2 + b2, widths k -> m -> k, no residual, no norm."""

    def __init__(self, k: int, m: int):
        super().__init__(k)
        self.m = m

    @property
    def shapes(self):
        return [(self.k, self.m), (self.m,), (self.m, self.k), (self.k,)]

    def init_(self, params):
        """The official init: xavier-uniform per head for the matrices, zero biases."""
        for param in params:
            if param.ndim == 3:  # [H, a, b]
                bound = (6.0 / (param.shape[1] + param.shape[2])) ** 0.5
                init.uniform_(param, -bound, bound)
            else:
                init.zeros_(param)

    def forward(self, z, params):
        w1, b1, w2, b2 = params
        a = z @ w1 + b1.unsqueeze(-2)  # [B, H, n, m]
        u = F.gelu(a, approximate="tanh")
        return u @ w2 + b2.unsqueeze(-2), (a, u)  # [B, H, n, k]

    def backward(self, grad_out, z, cache, params):
        _, _, w2, _ = params
        a, u = cache
        grad_a = gelu_tanh_grad(grad_out @ w2.transpose(-1, -2), a)  # [B, H, n, m]
        return (
            z.transpose(-1, -2) @ grad_a,  # [B, H, k, m]
            grad_a.sum(-2),  # [B, H, m]
            u.transpose(-1, -2) @ grad_out,  # [B, H, m, k]
            grad_out.sum(-2),  # [B, H, k]
        )

    def causal_forward(self, q, z, cache, grad_out, params, lr):
        # each layer's W_t = W - lr sum_{i<=t} (input_i^T grad_i) and b_t = b - lr sum_{i<=t} grad_i, so its output
        # at t is input_t W + b - lr sum_{i<=t} (input_t . input_i + 1) grad_i: once for a, once for f
        w1, b1, w2, b2 = params
        a, u = cache
        grad_a = gelu_tanh_grad(grad_out @ w2.transpose(-1, -2), a)  # [B, H, b, m]
        a_q = q @ w1 + b1.unsqueeze(-2) - lr * (_causal(q @ z.transpose(-1, -2) + 1) @ grad_a)  # [B, H, b, m]
        u_q = F.gelu(a_q, approximate="tanh")
        return u_q @ w2 + b2.unsqueeze(-2) - lr * (_causal(u_q @ u.transpose(-1, -2) + 1) @ grad_out)  # [B, H, b, k]


def _causal(scores):
    """Zero the entries of scores [.., b, b] above the diagonal: row t keeps the tokens i <= t."""
    return scores.tril()


class FusedMLPLearner(MLPLearner):
    """MLPLearner on the fused Triton kernels of fused_mlp.py (`inner_kernel="triton"`): the [B, H, N, m]
    hidden activations are recomputed on chip, never stored. Falls back to MLPLearner's tensor ops wherever
    `fused_mlp_available` says the kernels cannot run (the same answer in forward and backward: same z).

    `lean`: where the kernels run, the decoder-LN gradient's [B, H, N, k] intermediates are recomputed in the
    backward too (about a dozen fewer tensors of that size saved; the PyTorch path keeps them, for speed)."""

    def lean(self, z):
        return fused_mlp_available(z)

    def forward(self, z, params):
        if fused_mlp_available(z):
            return mlp_forward(z, params), None
        return super().forward(z, params)

    def backward(self, grad_out, z, cache, params):
        if fused_mlp_available(z):
            return mlp_param_grad(z, grad_out, params)
        return super().backward(grad_out, z, cache, params)

    def causal_forward(self, q, z, cache, grad_out, params, lr):
        if cache is None:  # the forward ran fused and kept no hidden activations: recompute them
            cache = MLPLearner.forward(self, z, params)[1]
        return super().causal_forward(q, z, cache, grad_out, params, lr)


def make_learner(config) -> Learner:
    """The learner of a TTT mixer from its config: mixer, head width, hidden ratio, learned W_0, kernel."""
    k = config.hidden_size // config.num_attention_heads
    if config.mixer == "ttt_linear":
        return LinearLearner(k, learned_init=config.learn_inner_init)
    mlp = FusedMLPLearner if getattr(config, "inner_kernel", "torch") == "triton" else MLPLearner
    return mlp(k, config.inner_hidden_ratio * k)


class ReconstructionTask:
    """The inner loop's self-supervised task for one layer: decode f's output back to the input tokens.

    value_weight [H, k, d] and value_bias [d] are g_h and g_bias; ln_weight/ln_bias [H, d] are the decoder
    LayerNorm of every head (None: no decoder LN). Nothing here is trained by the inner loop.

    The inner gradient never decodes to the full width d. Without decoder LN the loss is quadratic in f and
    d loss / d f = (f g_h g_h^T - (x - g_bias) g_h^T) / (n k), so `targets` precomputes the values
    v = (x - g_bias) g_h^T [B, H, N, k] once and a step costs O(n k^2) per head instead of O(n k d) (with
    W_0 = 0 and T = 1 exactly linear attention's cost). With decoder LN the same holds (`_ln_grad_f`): the
    LayerNorm's mean and variance of r = f g_h + g_bias and every product of its backward with g_h are
    quadratic forms in f, so only x's projection (x * gamma_h) g_c^T [B, H, N, k] (g_c: g_h with its mean over
    d removed) and one number per token are needed — the [B, H, N, d] reconstruction is never built.
    """

    def __init__(self, learner, value_weight, value_bias, ln_weight=None, ln_bias=None, eps=1e-6):
        self.learner, self.value_weight, self.value_bias = learner, value_weight, value_bias
        self.ln_weight, self.ln_bias, self.eps = ln_weight, ln_bias, eps
        with _full_precision(value_weight):  # the k x k forms below stay in float32 (or float64) under autocast
            if ln_weight is None:
                self.gram = value_weight @ value_weight.transpose(-1, -2)  # g_h g_h^T [H, k, k]
            else:
                self._ln_forms()

    def _ln_forms(self):
        """The parameters' part of the decoder-LN quadratic forms (d = width, k = head width)."""
        g, gamma, beta = self.value_weight, self.ln_weight, self.ln_bias
        g_c = g - g.mean(-1, keepdim=True)  # [H, k, d]: r - mean_d(r) = f g_c + b_c
        b_c = self.value_bias - self.value_bias.mean()  # [d]
        gamma2 = gamma.square()  # [H, d]
        vectors = g_c @ torch.stack([b_c.expand_as(gamma), gamma2 * b_c, gamma * beta], -1)  # [H, k, 3]
        # f @ forms -> f g_c g_c^T | f g_c diag(gamma^2) g_c^T | f.(g_c b_c) | f.(g_c gamma^2 b_c) | f.(g_c gamma beta)
        # [H, k, 2k + 3], zero-padded to a multiple of 8 columns: cuBLAS has only slow kernels for float32 products
        # with an odd row stride (2k + 3 cost 0.6 ms per product at 50,176 tokens on an H200)
        forms = [g_c @ g_c.transpose(-1, -2), (g_c * gamma2.unsqueeze(-2)) @ g_c.transpose(-1, -2), vectors]
        pad = -(2 * g.shape[-2] + 3) % 8
        self.forms = torch.cat([*forms, vectors.new_zeros(*vectors.shape[:-1], pad)], -1)  # [H, k, 2k + 3 + pad]
        self.vectors = vectors.transpose(-1, -2).unsqueeze(
            -2
        )  # g_c b_c, g_c gamma^2 b_c, g_c gamma beta: [H, 3, 1, k]
        self.constants = torch.stack([b_c.square().sum().expand(gamma.shape[0]), (gamma2 * b_c.square()).sum(-1),
                                      (gamma * beta * b_c).sum(-1)], -1)[:, None]  # [H, 1, 3]  # fmt: skip
        self.target_weight = torch.cat([g_c * gamma.unsqueeze(-2), (gamma * b_c).unsqueeze(-2)], -2)  # [H, k+1, d]

    def targets(self, x):
        """What `grad` compares against, from the layer input x [B, N, d], per head: without decoder LN the
        values (x - g_bias) g_h^T [B, H, N, k]; with it (x * gamma_h) g_c^T and x . (gamma_h * b_c) [B, H, N, k+1]."""
        if self.ln_weight is None:
            return (x.unsqueeze(1) - self.value_bias) @ self.value_weight.transpose(-1, -2)
        heads, k1, d = self.target_weight.shape
        return _split_heads(x @ self.target_weight.reshape(heads * k1, d).T, heads)  # [B, N, H(k+1)] -> [B, H, N, k+1]

    def _decode(self, f):
        r = f @ self.value_weight + self.value_bias  # [B, H, n, k] @ [H, k, d] -> [B, H, n, d]
        if self.ln_weight is None:
            return r
        return F.layer_norm(r, r.shape[-1:], eps=self.eps) * self.ln_weight.unsqueeze(-2) + self.ln_bias.unsqueeze(-2)

    def loss(self, params, z, tokens):
        """Per-head loss [B, H] of the learner `params` on keys z [B, H, n, k] against tokens [B, 1 or H, n, d]
        (decodes to full width: the definition, used for reporting and as the autograd reference)."""
        f, _ = self.learner.forward(z, params)  # params None: W = 0, f None = 0
        y = self._decode(torch.zeros_like(z) if f is None else f)
        return 0.5 * (y - tokens).pow(2).sum((-2, -1)) / (z.shape[-2] * z.shape[-1])

    def _ln_grad_f(self, f, target, scale):
        """d loss / d f [B, H, n, k] through the decoder LN, from quadratic forms (class docstring).

        With c = f g_c + b_c, rstd = 1 / sqrt(mean_d(c^2) + eps), xhat = c rstd, e = gamma xhat + beta - x and
        h = scale gamma e, the LN backward gives d loss / d f = rstd (h g_c^T - mean_d(h xhat) xhat g_c^T)."""
        with _full_precision(self.forms):
            f = f.to(self.forms.dtype)
            d, k = self.value_weight.shape[-1], f.shape[-1]
            proj, x_b = target[..., :k].to(f.dtype), target[..., k].to(f.dtype)  # (x gamma) g_c^T, x.(gamma b_c)
            fm = f @ self.forms  # [B, H, n, 2k + 3 + pad]
            f_gram, f_a, f_vec = fm[..., :k], fm[..., k : 2 * k], fm[..., 2 * k : 2 * k + 3]
            c_b, c_gb, c_bb = self.constants.unbind(-1)  # |b_c|^2, sum gamma^2 b_c^2, sum gamma beta b_c: [H, 1]
            var = ((f_gram * f).sum(-1) + 2 * f_vec[..., 0] + c_b) / d  # [B, H, n]
            rstd = (var.clamp_min(0) + self.eps).rsqrt().unsqueeze(-1)  # [B, H, n, 1]
            v_b, v_gb, v_bb = self.vectors.unbind(-3)  # [H, 1, k] each
            h_g = rstd * (f_a + v_gb) + v_bb - proj  # (h / scale) g_c^T
            h_xhat = (
                rstd.square().squeeze(-1) * ((f_a * f).sum(-1) + 2 * f_vec[..., 1] + c_gb)
                + rstd.squeeze(-1) * (f_vec[..., 2] + c_bb - (f * proj).sum(-1) - x_b)
            ) / d  # mean_d(h xhat)/scale
            return scale * rstd * (h_g - h_xhat.unsqueeze(-1) * rstd * (f_gram + v_b))

    def output_grad(self, f, z, target, tokens: int | None = None):
        """d loss / d f [B, H, n, k] per token, for the learner's output f on keys z [B, H, n, k] and targets from
        `targets` (f None: f = 0, whose products are skipped: MTTT-Linear's first step is linear attention's work).
        The loss is a mean over `tokens` tokens (default n): a causal layer keeps its mini-batch size b there even
        for a shorter last mini-batch, so that a token's output never depends on how many tokens follow."""
        scale = 1.0 / ((z.shape[-2] if tokens is None else tokens) * z.shape[-1])
        if self.ln_weight is None:
            return (-target if f is None else f @ self.gram - target) * scale
        f = torch.zeros_like(z) if f is None else f
        if torch.is_grad_enabled() and self.learner.lean(z):  # recompute it in the backward
            grad_f = checkpoint(self._ln_grad_f, f, target, scale, use_reentrant=False, preserve_rng_state=False)
            return grad_f.to(z.dtype)
        return self._ln_grad_f(f, target, scale).to(z.dtype)

    def grad(self, params, z, target):
        """d loss / d params for targets from `targets` (the sum over B x H of `loss`, per image and head);
        params None: the learner's structural W = 0."""
        f, cache = self.learner.forward(z, params)
        return self.learner.backward(self.output_grad(f, z, target), z, cache, params)


def _full_precision(reference: torch.Tensor):
    """Autocast off (the tensors' own float32 / float64): for the small k x k forms whose rounding matters."""
    return torch.autocast(reference.device.type, enabled=False)


def descend(params, grads, lr):
    """W - lr * grad for every tensor; params None (the structural W = 0): -lr * grad."""
    return [-lr * g for g in grads] if params is None else [p - lr * g for p, g in zip(params, grads)]


def analytic_step(task, params, z, target, lr):
    return descend(params, task.grad(params, z, target), lr)


def autograd_step(task, params, z, tokens, lr):
    """The reference: autograd.grad of the loss (create_graph=True when the outer loop needs it)."""
    outer = torch.is_grad_enabled()
    params = task.learner.zeros(z) if params is None else params
    with torch.enable_grad():
        params = [p.expand(z.shape[0], *p.shape[1:]) for p in params]  # [B, H, ...]: a gradient per image
        params = [p if p.requires_grad and outer else p.detach().requires_grad_() for p in params]
        grads = torch.autograd.grad(task.loss(params, z, tokens).sum(), params, create_graph=outer)
    return [p - lr * g for p, g in zip(params, grads)]


def inner_loop(task, init_params, keys, x, lrs, perm=None, return_losses=False, gradient="analytic"):
    """Train the learner from `init_params` ([1 or B, H, ...] each; None: the learner's structural W_0 = 0) on keys
    [B, H, N, k] to reconstruct x [B, N, d].

    perm [1 or B, H, N] (token order per head) switches on shuffled mini-batches: step t of T uses tokens
    perm[..., t*n:(t+1)*n] with n = N // T. Without it every step uses all N tokens. `gradient="autograd"`
    takes each step with `autograd_step` instead of the analytic gradient (slower; the reference).
    Returns the final params and, if asked, the full-batch loss [B, H, T + 1] at W_0 .. W_T (no grad).
    """
    tokens = x.unsqueeze(1)  # [B, 1, N, d]
    targets = tokens if gradient == "autograd" else task.targets(x)
    step = autograd_step if gradient == "autograd" else analytic_step
    num_steps = len(lrs)
    if perm is not None:
        n = keys.shape[2] // num_steps
        batch, heads = keys.shape[:2]
        idx = perm.expand(batch, heads, -1)[..., : n * num_steps].unsqueeze(-1)  # [B, H, T*n, 1]
        keys_s = keys.gather(2, idx.expand(-1, -1, -1, keys.shape[-1]))  # [B, H, T*n, k]
        targets_s = targets.expand(-1, heads, -1, -1).gather(2, idx.expand(-1, -1, -1, targets.shape[-1]))
    params, losses = init_params, []
    for t, lr in enumerate(lrs):
        if return_losses:
            with torch.no_grad():
                losses.append(task.loss(params, keys, tokens))
        if perm is None:
            params = step(task, params, keys, targets, lr)
        else:
            window = slice(t * n, (t + 1) * n)
            params = step(task, params, keys_s[:, :, window], targets_s[:, :, window], lr)
    if return_losses:
        with torch.no_grad():
            losses.append(task.loss(params, keys, tokens))
        return params, torch.stack(losses, -1)
    return params, None


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A stateless integer hash (int64 in, values < 2^32 out) made of tensor ops, so a "random" order can be
    derived from a seed inside a compiled graph (a torch.Generator would break it). Products stay < 2^60."""
    x = x & 0xFFFFFFFF
    for _ in range(2):
        x = (((x >> 16) ^ x) * 0x45D9F3B) & 0xFFFFFFFF
    return (x >> 16) ^ x


class TTTMixer(nn.Module):
    """MTTT-MLP or MTTT-Linear: one inner loop, the learner chosen by `config.mixer`."""

    def __init__(self, config, layer_idx: int = 0):
        super().__init__()
        d, heads = config.hidden_size, config.num_attention_heads
        k = d // heads
        self.config, self.layer_idx, self.num_heads = config, layer_idx, heads
        self.learner = make_learner(config)
        self.key = nn.Linear(d, d)  # phi_h for all heads
        self.query = nn.Linear(d, d)  # psi_h for all heads
        self.value_weight = nn.Parameter(torch.empty(heads, k, d))  # g_h
        self.value_bias = nn.Parameter(torch.zeros(d))  # g_bias, shared by the heads
        self.output = nn.Linear(d, d)  # [h_1 .. h_H] on the concatenated heads, bias h_bias
        if config.decoder_layer_norm:
            self.decoder_norm_weight = nn.Parameter(torch.ones(heads, d))
            self.decoder_norm_bias = nn.Parameter(torch.zeros(heads, d))
        # W_0 of every head: trained parameters, or frozen buffers saved with the weights; MTTT-Linear's frozen
        # W_0 = 0 is structural (no tensor), which lets its first step skip computing f(z; 0) = 0.
        self.inner_init_names = []
        for i, shape in enumerate([] if self.learner.starts_at_zero else self.learner.shapes):
            name = f"inner_init_{i}"
            tensor = torch.zeros(heads, *shape)
            if config.learn_inner_init:
                self.register_parameter(name, nn.Parameter(tensor))
            else:
                self.register_buffer(name, tensor)
            self.inner_init_names.append(name)

    def inner_init_params(self):
        return [getattr(self, name) for name in self.inner_init_names]

    def init_inner_weights(self) -> None:
        """The official init of this mixer's own tensors (inner_loop.py): g is variance_scaling(1, fan_out,
        uniform), bound sqrt(3 / d); g_bias 0; decoder LN 1 and 0; W_0 as its learner says."""
        d = self.value_weight.shape[-1]  # [H, k, d]: fan_out = d (the head axis is a batch axis)
        init.uniform_(self.value_weight, -((3.0 / d) ** 0.5), (3.0 / d) ** 0.5)
        init.zeros_(self.value_bias)
        if self.config.decoder_layer_norm:
            init.ones_(self.decoder_norm_weight)
            init.zeros_(self.decoder_norm_bias)
        self.learner.init_(self.inner_init_params())

    def kernel_names(self) -> list[str]:
        """This module's own parameters that the official code calls kernels: g_h (`g/kernel`) and the learned
        W_0's matrices (`inner_Dense_*/kernel`, [H, a, b]); W_0's biases ([H, a]) are not. phi, psi and h
        are the nn.Linear weights of `key`, `query`, `output`."""
        learned = [name for name, _ in self.named_parameters(recurse=False)]
        return ["value_weight"] + [n for n in self.inner_init_names if n in learned and getattr(self, n).ndim == 3]

    def reconstruction_task(self) -> ReconstructionTask:
        ln = self.config.decoder_layer_norm
        return ReconstructionTask(
            self.learner,
            self.value_weight,
            self.value_bias,
            self.decoder_norm_weight if ln else None,
            self.decoder_norm_bias if ln else None,
            self.config.layer_norm_eps,
        )

    def _permutation(self, batch, tokens, device):
        """Token order per head for shuffled batching, [B or 1, H, N].

        Training (and eval with `inner_shuffle_eval="random"`): fresh every call, one order per head shared by
        the batch (`inner_shuffle_scope="batch"`, the official code) or one per image (`"image"`). Otherwise one
        fixed order per (seed, layer, head) shared by every image."""
        if self.training or self.config.inner_shuffle_eval == "random":
            rows = batch if self.config.inner_shuffle_scope == "image" else 1
            return torch.rand(rows, self.num_heads, tokens, device=device).argsort(-1)
        salt = (self.config.inner_shuffle_seed * 1_000_003 + self.layer_idx) * self.num_heads
        heads = _hash32(salt + torch.arange(self.num_heads, device=device))[:, None]  # [H, 1]
        keys = _hash32((_hash32(torch.arange(tokens, device=device))[None] + heads) & 0xFFFFFFFF)  # [H, N]
        return keys.argsort(dim=-1, stable=True).unsqueeze(0)  # [1, H, N]

    def keys_queries_w0(self, x):
        """phi(x) and psi(x) per head [B, H, N, k], and W_0 ([1, H, ...] each; None: the structural zero)."""
        keys = _split_heads(self.key(x), self.num_heads)
        queries = _split_heads(self.query(x), self.num_heads)
        return (
            keys,
            queries,
            None if self.learner.starts_at_zero else [p.unsqueeze(0) for p in self.inner_init_params()],
        )

    def forward(self, x, return_inner_losses: bool = False):
        batch, tokens, _ = x.shape
        keys, queries, w0 = self.keys_queries_w0(x)  # [B, H, N, k] each
        perm = None
        if self.config.inner_batching == "shuffled":
            if self.config.inner_steps > tokens:
                raise ValueError(
                    f"`inner_batching='shuffled'` needs at least `inner_steps` ({self.config.inner_steps}) "
                    f"tokens per image, got {tokens}."
                )
            perm = self._permutation(batch, tokens, x.device)
        params, losses = inner_loop(
            self.reconstruction_task(),
            w0,
            keys,
            x,
            self.config.inner_lrs(),
            perm,
            return_inner_losses,
            gradient=self.config.inner_gradient,
        )
        out, _ = self.learner.forward(queries, params)  # [B, H, N, k]
        return self.output(_merge_heads(out)), losses


MIXER_CLASSES = {  # config.mixer -> the module of one block's token mixer
    "ttt_mlp": TTTMixer,
    "ttt_linear": TTTMixer,
    "self_attention": SelfAttentionMixer,
    "linear_attention": LinearAttentionMixer,
}
