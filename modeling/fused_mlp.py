"""Fused Triton kernels for the MTTT-MLP learner, so the [B, H, N, m] hidden activations never reach memory.

The MLP learner f(x; W) = gelu(x W1 + b1) W2 + b2 (k -> m -> k per head) is used three ways by an MTTT-MLP
layer, and each becomes one fused operation here:

  `mlp_forward`     f on the keys and on the queries      (op mlp_forward; backward: op mlp_backward with dx)
  `mlp_param_grad`  the inner gradient d loss / d W, which *is* the MLP's backward for the output gradient
                    g = d loss / d f                     (op mlp_backward without dx; backward, the outer
                                                          loop's second order: op mlp_param_grad_backward)

Every kernel works on one tile of BLOCK_N tokens and one slice of BLOCK_M hidden units of one (image, head),
recomputing a = x W1 + b1 and gelu(a) from x instead of storing them (flash-attention's trade: a few more
matrix products for no [N, m] memory traffic). Token-side results that sum over the hidden units (f, dx) are
reduced in the program (forward) or by atomic adds from the m / BLOCK_M slices (backward); weight-side results
that sum over tokens are accumulated by each program over a share of the token tiles and written as partial
sums that PyTorch adds up.

The launches are PyTorch operators (`torch.ops.ttt_hf_<hash>.*`, with their backwards registered), so eager autograd
and `torch.compile` (which keeps them as calls and fuses the PyTorch code around them) both use them.

PyTorch fallback: `MLPLearner` in ttt_layers.py computes the same thing with tensor ops; it runs wherever
`fused_mlp_available` (the one statement of the conditions) says these kernels cannot. Tests check the kernels
against it in float64 under Triton's CPU interpreter (`TRITON_INTERPRET=1`), forward and backward, eager and
compiled.
"""

import contextlib
import hashlib
import os

import torch

try:  # optional: modeling/ must import with only torch and transformers installed
    import triton
    import triton.language as tl
except ImportError:
    triton = None


# Triton versions whose compiler builds these kernels for sm_90 (scripts/fused_kernel_report.py): 3.4, 3.5, 3.6
# and 3.9 do; 3.3 fails a compiler pass on the inner gradient and 3.2 aborts on an assertion.
MIN_TRITON = (3, 4)


def _triton_version() -> tuple[int, ...]:
    return tuple(int(part) for part in triton.__version__.split(".")[:2] if part.isdigit())


_USABLE = triton is not None and _triton_version() >= MIN_TRITON
_INTERPRETED = os.environ.get("TRITON_INTERPRET", "").lower() in ("1", "true", "on")  # as Triton reads it


MAX_HEAD_WIDTH = 64  # a program keeps a whole head's width in registers; LAUNCH is sized for it


def fused_mlp_available(x: torch.Tensor) -> bool:
    """Whether the Triton kernels can run on x [.., k]: Triton >= 3.4 installed; x on a GPU of compute capability
    >= 8.0 (bfloat16 tensor cores), or Triton's CPU interpreter on (TRITON_INTERPRET=1 when this module was
    imported: the kernels below were defined for it); head width k <= 64 and B*H <= 65,535 for x [B, H, N, k];
    and no deterministic algorithms asked for (the backward's atomic adds sum in no fixed order)."""
    if not _USABLE or torch.are_deterministic_algorithms_enabled() or x.shape[-1] > MAX_HEAD_WIDTH:
        return False
    if x.dim() == 4 and x.shape[0] * x.shape[1] > 65535:  # B*H is a grid axis, at most 65,535 programs on CUDA
        return False
    if x.is_cuda:
        return torch.cuda.get_device_capability(x.device) >= (8, 0)
    return _INTERPRETED


if triton is not None:

    @triton.jit
    def _gelu_parts(a):
        """gelu_tanh(a) = a/2 (1 + tanh(u)), u = C (a + K a^3), C = sqrt(2/pi), K = 0.044715, and its first and
        second derivative, from one tanh (written with a sigmoid: tl has no tanh). The constants are literals:
        compiled kernels may read no global but a tl.constexpr, and the interpreter cannot do arithmetic
        with a tl.constexpr global."""
        du = 0.7978845608028654 * (1.0 + 0.134145 * a * a)  # u' = C (1 + 3 K a^2)
        t = 2.0 * tl.sigmoid(1.5957691216057308 * (a + 0.044715 * a * a * a)) - 1.0  # tanh(u) = 2 sigmoid(2u) - 1
        one_minus_t2 = 1.0 - t * t
        gelu = 0.5 * a * (1.0 + t)
        first = 0.5 * (1.0 + t) + 0.5 * a * one_minus_t2 * du
        second = one_minus_t2 * (2.0 * du - 0.7978845608028654 - a * t * du * du)
        return gelu, first, second

    @triton.jit
    def _tile(ptr, rows, cols, stride_r, stride_c, mask_r, mask_c):
        return tl.load(ptr + rows[:, None] * stride_r + cols[None, :] * stride_c,
                       mask=mask_r[:, None] & mask_c[None, :], other=0.0)  # fmt: skip

    @triton.jit
    def _hidden_slice(w1_ptr, b1_ptr, w2_ptr, H, s1b, s1h, s1k, s1m, sb1b, sb1h, sb1m, s2b, s2h, s2m, s2k, dtype,
                      M: tl.constexpr, K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
                      ACC: tl.constexpr):  # fmt: skip
        """A weight-side program's (image, head), its slice of hidden units W1[:, ms], b1[ms], W2[ms, :], and
        zero accumulators for its sums over tokens of dW1[:, ms], db1[ms], dW2[ms, :] (a flat tuple: Triton
        before 3.7 cannot unpack nested ones)."""
        pid_bh = tl.program_id(2).to(tl.int64)  # 64-bit offsets: B*H*N*k may pass 2^31
        b, h = pid_bh // H, pid_bh % H
        ms = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        ks = tl.arange(0, BLOCK_K)
        in_m, in_k = ms < M, ks < K
        w1 = _tile(w1_ptr + b * s1b + h * s1h, ks, ms, s1k, s1m, in_k, in_m).to(dtype)  # [BLOCK_K, BLOCK_M]
        b1 = tl.load(b1_ptr + b * sb1b + h * sb1h + ms * sb1m, mask=in_m, other=0.0).to(ACC)
        w2 = _tile(w2_ptr + b * s2b + h * s2h, ms, ks, s2m, s2k, in_m, in_k).to(dtype)  # [BLOCK_M, BLOCK_K]
        dw1, db1 = tl.zeros((BLOCK_K, BLOCK_M), dtype=ACC), tl.zeros((BLOCK_M,), dtype=ACC)
        return b, h, ms, ks, in_m, in_k, w1, b1, w2, dw1, db1, tl.zeros((BLOCK_M, BLOCK_K), dtype=ACC)

    @triton.jit
    def _store_partials(dw1_ptr, db1_ptr, dw2_ptr, dw1, db1, dw2, ms, ks, in_m, in_k, M: tl.constexpr,
                        K: tl.constexpr):  # fmt: skip
        """This program's sums over its token tiles, into the [SPLITS, B*H, ...] partial-sum buffers."""
        part = tl.program_id(1).to(tl.int64) * tl.num_programs(2) + tl.program_id(2)
        tl.store(dw1_ptr + part * K * M + ks[:, None] * M + ms[None, :], dw1, mask=in_k[:, None] & in_m[None, :])
        tl.store(db1_ptr + part * M + ms, db1, mask=in_m)
        tl.store(dw2_ptr + part * M * K + ms[:, None] * K + ks[None, :], dw2, mask=in_m[:, None] & in_k[None, :])

    @triton.jit
    def _mlp_forward_kernel(
        x_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, out_ptr,
        N, M: tl.constexpr, K: tl.constexpr, H,
        sxb, sxh, sxn, sxk, s1b, s1h, s1k, s1m, sb1b, sb1h, sb1m, s2b, s2h, s2m, s2k, sb2b, sb2h, sb2k,
        sob, soh, son, sok,
        BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, ACC: tl.constexpr,
        PRECISION: tl.constexpr,
    ):  # fmt: skip
        """out[b, h] = gelu(x W1 + b1) W2 + b2 for one tile of tokens, looping over the hidden units."""
        pid_n, pid_bh = tl.program_id(0), tl.program_id(1).to(tl.int64)  # 64-bit offsets
        b, h = pid_bh // H, pid_bh % H
        rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        ks = tl.arange(0, BLOCK_K)
        in_n, in_k = rows < N, ks < K
        x = _tile(x_ptr + b * sxb + h * sxh, rows, ks, sxn, sxk, in_n, in_k)  # [BLOCK_N, BLOCK_K]
        w1_ptr += b * s1b + h * s1h
        w2_ptr += b * s2b + h * s2h
        acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=ACC)
        for m0 in range(0, M, BLOCK_M):
            ms = m0 + tl.arange(0, BLOCK_M)
            in_m = ms < M
            w1 = _tile(w1_ptr, ks, ms, s1k, s1m, in_k, in_m).to(x.dtype)  # [BLOCK_K, BLOCK_M]
            b1 = tl.load(b1_ptr + b * sb1b + h * sb1h + ms * sb1m, mask=in_m, other=0.0).to(ACC)
            a = tl.dot(x, w1, input_precision=PRECISION) + b1[None, :]  # [BLOCK_N, BLOCK_M]
            u, _, _ = _gelu_parts(a)
            w2 = _tile(w2_ptr, ms, ks, s2m, s2k, in_m, in_k).to(x.dtype)  # [BLOCK_M, BLOCK_K]
            acc += tl.dot(u.to(x.dtype), w2, input_precision=PRECISION)
        acc += tl.load(b2_ptr + b * sb2b + h * sb2h + ks * sb2k, mask=in_k, other=0.0).to(ACC)[None, :]
        out = out_ptr + b * sob + h * soh + rows[:, None] * son + ks[None, :] * sok
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=in_n[:, None] & in_k[None, :])

    @triton.jit
    def _mlp_backward_kernel(
        x_ptr, g_ptr, w1_ptr, b1_ptr, w2_ptr, dx_ptr, dw1_ptr, db1_ptr, dw2_ptr,
        N, M: tl.constexpr, K: tl.constexpr, H, SPLITS,
        sxb, sxh, sxn, sxk, sgb, sgh, sgn, sgk, s1b, s1h, s1k, s1m, sb1b, sb1h, sb1m, s2b, s2h, s2m, s2k,
        BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, ACC: tl.constexpr,
        PRECISION: tl.constexpr, WITH_DX: tl.constexpr,
    ):  # fmt: skip
        """The MLP's backward for output gradient g: dW1 = x^T da, db1 = sum da, dW2 = u^T g (partial sums over
        this program's token tiles, one hidden slice) and, if WITH_DX, dx += da W1^T (atomic), da = g W2^T gelu'(a).
        Without dx this is the inner gradient of the reconstruction loss, with g = d loss / d f."""
        pid_s, pid_bh = tl.program_id(1), tl.program_id(2).to(tl.int64)
        b, h, ms, ks, in_m, in_k, w1, b1, w2, dw1, db1, dw2 = _hidden_slice(
            w1_ptr, b1_ptr, w2_ptr, H, s1b, s1h, s1k, s1m, sb1b, sb1h, sb1m, s2b, s2h, s2m, s2k,
            x_ptr.dtype.element_ty, M, K, BLOCK_M, BLOCK_K, ACC)  # fmt: skip
        x_ptr += b * sxb + h * sxh
        g_ptr += b * sgb + h * sgh
        for tile in range(pid_s, tl.cdiv(N, BLOCK_N), SPLITS):
            rows = tile * BLOCK_N + tl.arange(0, BLOCK_N)
            in_n = rows < N
            x = _tile(x_ptr, rows, ks, sxn, sxk, in_n, in_k)  # [BLOCK_N, BLOCK_K]
            g = _tile(g_ptr, rows, ks, sgn, sgk, in_n, in_k).to(x.dtype)
            a = tl.dot(x, w1, input_precision=PRECISION) + b1[None, :]  # [BLOCK_N, BLOCK_M]
            u, first, _ = _gelu_parts(a)  # padded rows have g = 0, so they add nothing below
            da = tl.dot(g, tl.trans(w2), input_precision=PRECISION) * first
            dw1 += tl.dot(tl.trans(x), da.to(x.dtype), input_precision=PRECISION)
            db1 += tl.sum(da, axis=0)
            dw2 += tl.dot(tl.trans(u.to(x.dtype)), g, input_precision=PRECISION)
            if WITH_DX:
                dx = tl.dot(da.to(x.dtype), tl.trans(w1), input_precision=PRECISION)
                tl.atomic_add(dx_ptr + pid_bh * N * K + rows[:, None] * K + ks[None, :], dx,
                              mask=in_n[:, None] & in_k[None, :])  # fmt: skip
        _store_partials(dw1_ptr, db1_ptr, dw2_ptr, dw1, db1, dw2, ms, ks, in_m, in_k, M, K)

    @triton.jit
    def _mlp_param_grad_backward_kernel(
        z_ptr, g_ptr, w1_ptr, b1_ptr, w2_ptr, dg1_ptr, dgb1_ptr, dg2_ptr,
        dz_ptr, dg_ptr, dw1_ptr, db1_ptr, dw2_ptr,
        N, M: tl.constexpr, K: tl.constexpr, H, SPLITS,
        szb, szh, szn, szk, sgb, sgh, sgn, sgk, s1b, s1h, s1k, s1m, sb1b, sb1h, sb1m, s2b, s2h, s2m, s2k,
        BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, ACC: tl.constexpr,
        PRECISION: tl.constexpr,
    ):  # fmt: skip
        """Backward of the inner gradient (the outer loop's second order). Forward, per token:
        a = z W1 + b1, u = gelu(a), gh = g W2^T, ga = gh gelu'(a); G1 = z^T ga, Gb1 = sum ga, G2 = u^T g.
        For cotangents dG1, dGb1, dG2 (dGb2 = sum g is PyTorch's): dga = z dG1 + dGb1, dgh = dga gelu'(a),
        du = g dG2^T, da = du gelu'(a) + dga gh gelu''(a), and
        dz = ga dG1^T + da W1^T, dg = u dG2 + dgh W2 (token side, atomic over hidden slices),
        dW1 = z^T da, db1 = sum da, dW2 = dgh^T g (weight side, partial sums over token tiles)."""
        pid_s, pid_bh = tl.program_id(1), tl.program_id(2).to(tl.int64)
        dt = z_ptr.dtype.element_ty
        b, h, ms, ks, in_m, in_k, w1, b1, w2, dw1, db1, dw2 = _hidden_slice(
            w1_ptr, b1_ptr, w2_ptr, H, s1b, s1h, s1k, s1m, sb1b, sb1h, sb1m, s2b, s2h, s2m, s2k,
            dt, M, K, BLOCK_M, BLOCK_K, ACC)  # fmt: skip
        z_ptr += b * szb + h * szh
        g_ptr += b * sgb + h * sgh
        dg1 = _tile(dg1_ptr + pid_bh * K * M, ks, ms, M, 1, in_k, in_m).to(dt)  # [BLOCK_K, BLOCK_M]
        dgb1 = tl.load(dgb1_ptr + pid_bh * M + ms, mask=in_m, other=0.0).to(ACC)
        dg2 = _tile(dg2_ptr + pid_bh * M * K, ms, ks, K, 1, in_m, in_k).to(dt)  # [BLOCK_M, BLOCK_K]
        for tile in range(pid_s, tl.cdiv(N, BLOCK_N), SPLITS):
            rows = tile * BLOCK_N + tl.arange(0, BLOCK_N)
            in_n = rows < N
            token_mask = in_n[:, None] & in_k[None, :]
            z = _tile(z_ptr, rows, ks, szn, szk, in_n, in_k)  # [BLOCK_N, BLOCK_K]
            g = _tile(g_ptr, rows, ks, sgn, sgk, in_n, in_k).to(dt)
            a = tl.dot(z, w1, input_precision=PRECISION) + b1[None, :]  # [BLOCK_N, BLOCK_M]
            u, first, second = _gelu_parts(a)
            gh = tl.dot(g, tl.trans(w2), input_precision=PRECISION)
            ga = gh * first
            # on padded rows dga = dGb1, not 0, but everything it reaches there is multiplied by g = 0 or gh = 0
            dga = tl.dot(z, dg1, input_precision=PRECISION) + dgb1[None, :]
            dgh = dga * first
            du = tl.dot(g, tl.trans(dg2), input_precision=PRECISION)
            da = du * first + dga * gh * second
            dz = tl.dot(ga.to(dt), tl.trans(dg1), input_precision=PRECISION)
            dz += tl.dot(da.to(dt), tl.trans(w1), input_precision=PRECISION)
            dg = tl.dot(u.to(dt), dg2, input_precision=PRECISION)
            dg += tl.dot(dgh.to(dt), w2, input_precision=PRECISION)
            offsets = pid_bh * N * K + rows[:, None] * K + ks[None, :]
            tl.atomic_add(dz_ptr + offsets, dz, mask=token_mask)
            tl.atomic_add(dg_ptr + offsets, dg, mask=token_mask)
            dw1 += tl.dot(tl.trans(z), da.to(dt), input_precision=PRECISION)
            db1 += tl.sum(da, axis=0)
            dw2 += tl.dot(tl.trans(dgh.to(dt)), g, input_precision=PRECISION)
        _store_partials(dw1_ptr, db1_ptr, dw2_ptr, dw1, db1, dw2, ms, ks, in_m, in_k, M, K)


# Launch settings per kernel: token tile, hidden slice, warps. The fastest of a sweep on an H200 at head width 64,
# hidden width 256, 50,176 tokens, bfloat16 (`python scripts/tune_fused_kernels.py`; docs/performance.md): 2.1-2.6x
# faster than the spill-free settings, though ptxas spills a few bytes in two of them
# (`python scripts/fused_kernel_report.py` compiles them without a GPU).
LAUNCH = {
    "forward": {"BLOCK_N": 128, "BLOCK_M": 64, "num_warps": 8},
    "backward": {"BLOCK_N": 32, "BLOCK_M": 64, "num_warps": 8},  # also the inner gradient (no dx)
    "param_grad_backward": {"BLOCK_N": 32, "BLOCK_M": 128, "num_warps": 8},
}


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    """The kernels' accumulators and outputs: float64 for float64 inputs (the tests), else float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _tf32_allowed() -> bool:
    """Whether PyTorch's own float32 matmuls may use TF32 (the new API first; the legacy flag raises once both
    APIs have been used)."""
    try:
        return torch.backends.cuda.matmul.fp32_precision == "tf32"
    except (AttributeError, RuntimeError):
        return bool(torch.backends.cuda.matmul.allow_tf32)


def _launch(kind: str, dtype: torch.dtype, k: int, m: int, cuda: bool) -> dict:
    """Launch arguments of kernel `kind` for inputs of `dtype`: block sizes (the hidden slice no wider than m,
    every block >= 16 for tl.dot) and number types: float64 in, float64 accumulators (the tests); float32 or
    bfloat16 in, float32 accumulators. float32 products use TF32 exactly when PyTorch's matmuls would.
    (scripts/fused_kernel_report.py compiles with these too.)"""
    precision = None
    if dtype == torch.float32:
        precision = "tf32" if cuda and _tf32_allowed() else "ieee"
    cfg = dict(LAUNCH[kind])
    cfg["BLOCK_M"] = min(cfg["BLOCK_M"], max(16, triton.next_power_of_2(m)))
    return {**cfg, "BLOCK_K": max(16, triton.next_power_of_2(k)), "PRECISION": precision,
            "ACC": tl.float64 if dtype == torch.float64 else tl.float32}  # fmt: skip


def _splits(x: torch.Tensor, tiles: int, programs: int) -> int:
    """Token splits of a weight-side kernel: enough programs to fill the GPU (4 per SM), at most one per tile."""
    target = 4 * torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 4
    return max(1, min(tiles, -(-target // programs)))


def _on_device(x: torch.Tensor):
    """Launch on x's GPU even when another one is current."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def _bh(w: torch.Tensor, batch: int) -> torch.Tensor:
    return w.expand(batch, *w.shape[1:])  # [1 or B, H, ...] -> [B, H, ...] (stride 0 over a shared W_0)


def _forward(x, w1, b1, w2, b2):
    batch, heads, tokens, k = x.shape
    w1, b1, w2, b2 = (_bh(w, batch) for w in (w1, b1, w2, b2))
    cfg = _launch("forward", x.dtype, k, w1.shape[-1], x.is_cuda)
    out = torch.empty(x.shape, device=x.device, dtype=_acc_dtype(x))
    grid = (triton.cdiv(tokens, cfg["BLOCK_N"]), batch * heads)
    with _on_device(x):
        _mlp_forward_kernel[grid](
            x, w1, b1, w2, b2, out, tokens, w1.shape[-1], k, heads,
            *x.stride(), *w1.stride(), *b1.stride(), *w2.stride(), *b2.stride(), *out.stride(), **cfg,
        )  # fmt: skip
    return out


def _weight_side(kind, x, g, w1, b1, w2, extra_inputs=(), token_outputs=0, **flags):
    """Launch a weight-side kernel over (hidden slices, token splits, B*H) on inputs x, g [B, H, N, k]; return
    its token outputs ([B, H, N, k] each, contiguous: the kernels index them so) and dW1 [B, H, k, m],
    db1 [B, H, m], dW2 [B, H, m, k] (the partial sums of the splits added up)."""
    batch, heads, tokens, k = x.shape
    w1, b1, w2 = (_bh(w, batch) for w in (w1, b1, w2))
    m = w1.shape[-1]
    cfg = _launch(kind, x.dtype, k, m, x.is_cuda)
    kernel = _mlp_param_grad_backward_kernel if kind == "param_grad_backward" else _mlp_backward_kernel
    m_blocks = triton.cdiv(m, cfg["BLOCK_M"])
    splits = _splits(x, triton.cdiv(tokens, cfg["BLOCK_N"]), m_blocks * batch * heads)
    outs = [x.new_zeros(batch, heads, tokens, k, dtype=_acc_dtype(x)) for _ in range(token_outputs)]
    partials = [x.new_empty(splits, *shape, dtype=_acc_dtype(x)) for shape in _weight_grad_shapes(x, m)]
    strides = [s for t in (x, g, w1, b1, w2) for s in t.stride()]
    dummy = [x] if not outs else []  # the dx pointer of a launch that computes no dx (never written)
    with _on_device(x):
        kernel[(m_blocks, splits, batch * heads)](
            x, g, w1, b1, w2, *extra_inputs, *outs, *dummy, *partials, tokens, m, k, heads, splits, *strides,
            **cfg, **flags,
        )  # fmt: skip
    return (outs, *(p.sum(0) for p in partials))


def _weight_grad_shapes(x, m):
    batch, heads, _, k = x.shape
    return (batch, heads, k, m), (batch, heads, m), (batch, heads, m, k)  # dW1, db1, dW2


def _reduce(grad, shape, dtype):
    """A [B, H, ...] gradient summed to its parameter's shape ([1 or B, H, ...]) and dtype."""
    return grad.sum_to_size(shape).to(dtype)


# The launches as PyTorch operators (torch.library.custom_op), so that torch.compile keeps them as calls in its
# graph (inductor fuses the PyTorch code around them) and autograd knows their backwards. Their namespace carries
# a hash of this file: a second, identical copy (the Hub's remote code beside the installed package) reuses the
# registered operators, and a different copy registers its own instead of silently running the other's code.
def _namespace() -> str:
    try:
        with open(__file__, "rb") as source:
            return "ttt_hf_" + hashlib.sha1(source.read()).hexdigest()[:10]
    except (OSError, TypeError):  # no readable source (a zip import, a frozen app): one fixed name
        return "ttt_hf_fused_mlp"


def _mlp_forward_op(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
                    b2: torch.Tensor) -> torch.Tensor:  # fmt: skip
    return _forward(x, w1, b1, w2, b2)


def _mlp_backward_op(x: torch.Tensor, g: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
                     with_dx: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    outs, dw1, db1, dw2 = _weight_side("backward", x, g, w1, b1, w2, token_outputs=int(with_dx), WITH_DX=with_dx)
    return (outs[0] if with_dx else x.new_empty(0, dtype=_acc_dtype(x))), dw1, db1, dw2


def _mlp_param_grad_backward_op(
    z: torch.Tensor, g: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, dg1: torch.Tensor,
    dgb1: torch.Tensor, dg2: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    (dz, dg), dw1, db1, dw2 = _weight_side("param_grad_backward", z, g, w1, b1, w2,
                                           extra_inputs=(dg1, dgb1, dg2), token_outputs=2)  # fmt: skip
    return dz, dg, dw1, db1, dw2


def _weight_grads_like(x, w1):
    return tuple(x.new_empty(shape, dtype=_acc_dtype(x)) for shape in _weight_grad_shapes(x, w1.shape[-1]))


def _mlp_forward_fake(x, w1, b1, w2, b2):
    return x.new_empty(x.shape, dtype=_acc_dtype(x))


def _mlp_backward_fake(x, g, w1, b1, w2, with_dx):
    return x.new_empty(x.shape if with_dx else (0,), dtype=_acc_dtype(x)), *_weight_grads_like(x, w1)


def _mlp_param_grad_backward_fake(z, g, w1, b1, w2, dg1, dgb1, dg2):
    return (
        z.new_empty(z.shape, dtype=_acc_dtype(z)),
        z.new_empty(z.shape, dtype=_acc_dtype(z)),
        *_weight_grads_like(z, w1),
    )


def _forward_setup(ctx, inputs, output):
    x, w1, b1, w2, b2 = inputs
    ctx.save_for_backward(x, w1, b1, w2)
    ctx.b2 = (b2.shape, b2.dtype)


def _forward_backward(ctx, grad_out):
    """f's backward: the MLP backward, with dx when x needs it (once differentiable: see `_refuse`)."""
    x, w1, b1, w2 = ctx.saved_tensors
    with_dx = ctx.needs_input_grad[0]
    dx, dw1, db1, dw2 = _ops.mlp_backward(x, grad_out.to(x.dtype), w1, b1, w2, with_dx)
    return (dx.to(x.dtype) if with_dx else None, _reduce(dw1, w1.shape, w1.dtype),
            _reduce(db1, b1.shape, b1.dtype), _reduce(dw2, w2.shape, w2.dtype),
            _reduce(grad_out.sum(-2), *ctx.b2))  # fmt: skip


def _grad_setup(ctx, inputs, output):
    x, g, w1, b1, w2, ctx.with_dx = inputs
    ctx.save_for_backward(x, g, w1, b1, w2)


def _grad_backward(ctx, _, dg1, dgb1, dg2):
    """The inner gradient's backward (the outer loop's second order), for the op without dx."""
    if ctx.with_dx:
        _refuse()
    z, g, w1, b1, w2 = ctx.saved_tensors
    shapes = _weight_grad_shapes(z, w1.shape[-1])
    cotangents = [z.new_zeros(shape, dtype=_acc_dtype(z)) if c is None else c.contiguous()
                  for c, shape in zip((dg1, dgb1, dg2), shapes)]  # fmt: skip
    dz, dg, dw1, db1, dw2 = _ops.mlp_param_grad_backward(z, g, w1, b1, w2, *cotangents)
    return (dz.to(z.dtype), dg.to(g.dtype), _reduce(dw1, w1.shape, w1.dtype), _reduce(db1, b1.shape, b1.dtype),
            _reduce(dw2, w2.shape, w2.dtype), None)  # fmt: skip


def _refuse(*_):
    raise RuntimeError("inner_kernel='triton' differentiates the learner twice, not three times: a gradient "
                       "of the outer loop's gradient needs inner_kernel='torch'")  # fmt: skip


# name: (implementation, fake for torch.compile, backward, its setup_context)
_OPS = {
    "mlp_forward": (_mlp_forward_op, _mlp_forward_fake, _forward_backward, _forward_setup),
    "mlp_backward": (_mlp_backward_op, _mlp_backward_fake, _grad_backward, _grad_setup),
    "mlp_param_grad_backward": (_mlp_param_grad_backward_op, _mlp_param_grad_backward_fake, _refuse,
                                lambda ctx, inputs, output: None),
}  # fmt: skip


def _register_ops():
    """Register `_OPS` under this file's namespace, once per process (a second identical copy reuses them)."""
    ns = getattr(torch.ops, _NAMESPACE)
    if not hasattr(ns, "mlp_forward"):
        for name, (impl, fake, backward, setup) in _OPS.items():
            op = torch.library.custom_op(f"{_NAMESPACE}::{name}", impl, mutates_args=())
            op.register_fake(fake)
            op.register_autograd(backward, setup_context=setup)
    return ns


def _output_dtype(x, w, tokens: bool):
    """The dtype of an output: without autocast the inputs' common dtype, as PyTorch's ops give (a float16 or
    bfloat16 model stays so); under autocast, token outputs [B, H, N, k] in autocast's dtype as PyTorch's ops
    (same memory), weight-shaped inner gradients in float32 (finer than autocast's products, and small)."""
    if not torch.is_autocast_enabled(x.device.type) or x.dtype == torch.float64:
        return torch.promote_types(x.dtype, w.dtype)
    return torch.get_autocast_dtype(x.device.type) if tokens else torch.float32


def mlp_forward(x, params):
    """gelu(x W1 + b1) W2 + b2 for x [B, H, N, k] and params W1 [1 or B, H, k, m], b1 [.., H, m],
    W2 [.., H, m, k], b2 [.., H, k], fused; differentiable once (the outer loop's backward)."""
    return _ops.mlp_forward(x, *params).to(_output_dtype(x, params[0], tokens=True))


def mlp_param_grad(z, g, params):
    """(dW1, db1, dW2, db2), each [B, H, ...], of sum_n g_n . f(z_n; W) (the MLP backward for output gradient g),
    fused; differentiable once more (the outer loop's second order)."""
    w1, b1, w2, _ = params
    _, dw1, db1, dw2 = _ops.mlp_backward(z, g, w1, b1, w2, False)
    dtype = _output_dtype(z, w1, tokens=False)
    return dw1.to(dtype), db1.to(dtype), dw2.to(dtype), g.sum(-2, dtype=dw1.dtype).to(dtype)


_NAMESPACE = _namespace() if triton is not None else None
_ops = _register_ops() if triton is not None else None
