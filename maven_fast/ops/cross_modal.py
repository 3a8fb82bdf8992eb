r"""The six-pathway cross-modal block of MAVEN (SPEC 3.1) as one op.

Inputs are the *projected* modality sequences ``x_v [B, Tv, D]``,
``x_a [B, Ta, D]``, ``x_t [B, Tt, D]`` with integer lengths ``[B]`` (keys at
positions ``>= length`` are masked; queries are never masked, as in
``nn.MultiheadAttention``). Pathway ``x2y`` = ``nn.MultiheadAttention(D, H)``
with queries from x and keys/values from y:

.. math::
    \mathrm{x2y} = \mathrm{MHA}(x, y, y), \qquad
    \text{video\_enh} = \mathrm{LN}(\mathrm{Dropout}((x_v + \mathrm{v2a} + \mathrm{v2t}) / 3))

and likewise ``audio_enh`` (a2v, a2t) and ``text_enh`` (t2v, t2a), with ONE
shared LayerNorm and ONE shared Dropout. A pathway whose keys are all masked
for an item (length 0) attends to nothing: its attention output is zero, so
the pathway gives ``out_proj.bias`` (``nn.MultiheadAttention`` gives NaN).

Implementations: ``eager`` (:func:`cross_modal_reference`, built on
``F.multi_head_attention_forward``); ``cpu`` and ``cuda``
(``torch.ops.maven_fast.cross_modal_block``, C++ with per-device kernels:
grouped projections, one attention launch for all six pathways, one fused
residual/dropout/LayerNorm pass, and the backward); ``triton``
(``torch.ops.maven_fast.cross_modal_block_triton``, the same op contract and
``saved`` layout with Triton kernels, :mod:`maven_fast.kernels.cross_modal`).

Structural shortcuts (``shortcuts=True``, exact up to rounding), chosen per
pathway from the padded shapes by :func:`plan_pathways`:

* key length 1 (pooled audio/text of the reference presets): softmax over one
  key is 1, so the output is ``out_proj(V)`` once per item; no Q, no K;
* weight absorption (few queries, many keys): scores ``(q_h W_{k,h}) y_j`` and
  the weighted sum ``sum_j p_j y_j`` are taken on the raw keys ``y`` and
  ``W_{v,h}`` is applied afterwards, so the long side is never projected.

Dropout (when ``training``) uses a Philox counter-based generator whose seed
and offset each op call takes from the default generator of the inputs'
device: on the CPU a seed drawn from torch's CPU generator; on CUDA the C++
op reserves Philox offsets of the CUDA generator as PyTorch's fused dropout
does (``philox_cuda_state``: inside a captured CUDA graph every replay draws
new masks) and the Triton op draws its seed on the device. So results are
reproducible under ``torch.manual_seed``, no call reads the GPU from the host,
and the backward regenerates the forward's masks from the (seed, offset) the
forward saved (the last entry of ``saved``). The masks differ from eager
PyTorch's, not their distribution.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maven_fast._extension import extension
from maven_fast.backends import resolve_backend

PATHWAYS = ("v2a", "v2t", "a2v", "a2t", "t2v", "t2a")
# (query modality, key modality) per pathway; modalities 0 = video, 1 = audio, 2 = text.
QUERY = (0, 0, 1, 1, 2, 2)
KEY = (1, 2, 0, 2, 0, 1)

GENERAL, KEY_LEN_1, ABSORBED = 0, 1, 2

SUPPORTED_DTYPES = {
    "cpu": (torch.float32, torch.float64, torch.bfloat16, torch.float16),
    "cuda": (torch.float32, torch.bfloat16, torch.float16),
    "triton": (torch.float32, torch.bfloat16, torch.float16),
}

# Cost of one attention FLOP relative to one GEMM FLOP, (general, absorbed), used
# by plan_pathways to decide when weight absorption pays. CPU: the attention
# kernel runs near the GEMM rate (measured). GPU, estimates (no GPU has measured
# them yet): the projections are cuBLAS GEMMs on tensor cores; attention on the
# fp32 SIMT kernels (and Triton's, as tuned today) costs ~16 GEMM FLOPs, so
# absorption (projection FLOPs traded for H times the attention FLOPs) pays only
# for very long keys. The CUDA backend in bf16/fp16 runs general pathways on its
# tensor-core kernels, FlashAttention-2 style at an estimated ~half the GEMM
# rate (w = 2), while absorbed pathways (K = V shared by the heads, width D)
# stay on the SIMT kernels (w = 16): absorption then pays only for very short
# query sequences against long keys.
_ATTENTION_FLOP_WEIGHT = {"cpu": (1.5, 1.5), "cuda": (16.0, 16.0)}
_TENSOR_CORE_WEIGHT = (2.0, 16.0)


def attention_flop_weights(device_type: str, backend: str | None = None,
                           dtype: torch.dtype | None = None) -> tuple[float, float]:
    """(general, absorbed) cost of an attention FLOP in GEMM FLOPs for plan_pathways."""
    if device_type == "cuda" and backend == "cuda" and dtype in (torch.bfloat16, torch.float16):
        return _TENSOR_CORE_WEIGHT
    return _ATTENTION_FLOP_WEIGHT.get(device_type, _ATTENTION_FLOP_WEIGHT["cuda"])


@dataclass
class CrossModalParams:
    """The parameters of the block, in pathway order (v2a, v2t, a2v, a2t, t2v, t2a).

    Tensors are the modules' own parameters (no copies), so gradients reach them.
    """

    in_proj_weight: list[Tensor]   # 6 x [3D, D]
    in_proj_bias: list[Tensor]     # 6 x [3D]
    out_proj_weight: list[Tensor]  # 6 x [D, D]
    out_proj_bias: list[Tensor]    # 6 x [D]
    ln_weight: Tensor              # [D]
    ln_bias: Tensor                # [D]
    ln_eps: float
    num_heads: int
    attn_dropout_p: float

    @classmethod
    def from_modules(cls, attns: Mapping[str, nn.MultiheadAttention], layer_norm: nn.LayerNorm) -> "CrossModalParams":
        """From ``{"v2a": nn.MultiheadAttention, ...}`` and the shared ``nn.LayerNorm``."""
        missing = [p for p in PATHWAYS if p not in attns]
        if missing:
            raise ValueError(f"cross_modal_block: attns is missing pathways {missing}; need {list(PATHWAYS)}")
        mods = [attns[p] for p in PATHWAYS]
        first = mods[0]
        for name, m in zip(PATHWAYS, mods):
            if not isinstance(m, nn.MultiheadAttention):
                raise TypeError(f"cross_modal_block: attns[{name!r}] must be nn.MultiheadAttention, got {type(m).__name__}")
            problems = []
            if not m._qkv_same_embed_dim:
                problems.append("separate q/k/v projection weights (kdim/vdim != embed_dim)")
            if m.in_proj_bias is None or m.out_proj.bias is None:
                problems.append("bias=False")
            if m.bias_k is not None or m.add_zero_attn:
                problems.append("add_bias_kv/add_zero_attn")
            if (m.embed_dim, m.num_heads, m.dropout) != (first.embed_dim, first.num_heads, first.dropout):
                problems.append(
                    f"(embed_dim, num_heads, dropout) = {(m.embed_dim, m.num_heads, m.dropout)} differs from "
                    f"v2a's {(first.embed_dim, first.num_heads, first.dropout)}"
                )
            if problems:
                raise ValueError(f"cross_modal_block: attns[{name!r}] is not supported: {'; '.join(problems)}")
        if layer_norm.weight is None or layer_norm.bias is None or tuple(layer_norm.normalized_shape) != (first.embed_dim,):
            raise ValueError(
                f"cross_modal_block: layer_norm must be nn.LayerNorm({first.embed_dim}) with affine weight and bias"
            )
        return cls(
            [m.in_proj_weight for m in mods],
            [m.in_proj_bias for m in mods],
            [m.out_proj.weight for m in mods],
            [m.out_proj.bias for m in mods],
            layer_norm.weight,
            layer_norm.bias,
            float(layer_norm.eps),
            int(first.num_heads),
            float(first.dropout),
        )

    def cast(self, dtype: torch.dtype) -> "CrossModalParams":
        c = lambda ts: [t.to(dtype) for t in ts]  # noqa: E731
        return CrossModalParams(
            c(self.in_proj_weight), c(self.in_proj_bias), c(self.out_proj_weight), c(self.out_proj_bias),
            self.ln_weight.to(dtype), self.ln_bias.to(dtype), self.ln_eps, self.num_heads, self.attn_dropout_p,
        )


def _as_params(params) -> CrossModalParams:
    if isinstance(params, CrossModalParams):
        return params
    if isinstance(params, tuple) and len(params) == 2:
        return CrossModalParams.from_modules(*params)
    raise TypeError(
        "cross_modal_block: `params` must be a CrossModalParams or (attns: dict[str, nn.MultiheadAttention], "
        f"layer_norm: nn.LayerNorm), got {type(params).__name__}"
    )


# --------------------------------------------------------------------------- CUDA attention kernels
CUDA_ATTENTION_KERNELS = ("auto", "simt")


@contextlib.contextmanager
def cuda_attention_kernels(kind: str) -> Iterator[None]:
    """Within the ``with`` block, the CUDA backend's attention runs on ``kind``:
    ``"auto"`` (the default: tensor-core kernels for bf16/fp16 general pathways
    with head sizes <= 256, a multiple of 8; SIMT kernels for the rest) or
    ``"simt"`` (the fp32-arithmetic SIMT kernels for everything; for benchmarks and
    comparisons). Process-wide, not per thread; restored on exit."""
    if kind not in CUDA_ATTENTION_KERNELS:
        raise ValueError(f"cuda_attention_kernels: kind must be one of {CUDA_ATTENTION_KERNELS}, got {kind!r}")
    ext = extension()
    if ext is None or not hasattr(ext, "set_cuda_attention_kernels"):
        raise RuntimeError("cuda_attention_kernels: maven_fast._C was built without CUDA kernels "
                           "(maven-fast info says why); rebuild with a CUDA toolkit")
    before = ext.cuda_attention_kernels()
    ext.set_cuda_attention_kernels(kind)
    try:
        yield
    finally:
        ext.set_cuda_attention_kernels(before)


# --------------------------------------------------------------------------- plan
def plan_pathways(t_v: int, t_a: int, t_t: int, d: int, num_heads: int, shortcuts: bool = True,
                  device_type: str = "cpu", backend: str | None = None,
                  dtype: torch.dtype | None = None) -> list[int]:
    """The mode of each pathway (0 general, 1 key length 1, 2 weight absorption).

    Key length 1 whenever the key modality has one (padded) step. Weight
    absorption when it does fewer (weighted) FLOPs than the general path; per
    pathway x2y, besides the common out_proj:
      general:   2 Tx D^2 (Q) + 4 Ty D^2 (K, V) + w_g 4 Tx Ty D   (attention)
      absorbed:  6 Tx D^2 (Q, W_k fold, W_v)     + w_a 4 H Tx Ty D
    with (w_g, w_a) = :func:`attention_flop_weights` of the device, backend and dtype.
    """
    t = (t_v, t_a, t_t)
    w_g, w_a = attention_flop_weights(device_type, backend, dtype)
    modes = []
    for p in range(6):
        tx, ty = t[QUERY[p]], t[KEY[p]]
        if not shortcuts:
            modes.append(GENERAL)
        elif ty == 1:
            modes.append(KEY_LEN_1)
        else:
            general = 2 * tx * d * d + 4 * ty * d * d + w_g * 4 * tx * ty * d
            absorbed = 6 * tx * d * d + w_a * 4 * num_heads * tx * ty * d
            modes.append(ABSORBED if absorbed < general else GENERAL)
    return modes


@dataclass
class SlotPlan:
    """Where each pathway's projections live, for pathway ``modes`` (the Plan of
    csrc/cross_modal/cross_modal_common.h). Modality m's grouped input projection
    has ``n_in[m]`` slots of D columns, assigned for m in order, then pathways in
    order: Q (general, absorbed) where m queries; K, V (general) or V (key length
    1) where m is attended. Its row-wise attention outputs have ``n_out[m]``
    slots (general and absorbed pathways where m queries). -1: no slot."""

    n_in: list[int]
    n_out: list[int]
    q_slot: list[int]
    k_slot: list[int]
    v_slot: list[int]
    o_slot: list[int]

    @classmethod
    def from_modes(cls, modes: Sequence[int]) -> "SlotPlan":
        s = cls([0, 0, 0], [0, 0, 0], [-1] * 6, [-1] * 6, [-1] * 6, [-1] * 6)
        for m in range(3):
            for p in range(6):
                if QUERY[p] == m and modes[p] != KEY_LEN_1:
                    s.q_slot[p], s.n_in[m] = s.n_in[m], s.n_in[m] + 1
                if KEY[p] == m and modes[p] == GENERAL:
                    s.k_slot[p], s.v_slot[p], s.n_in[m] = s.n_in[m], s.n_in[m] + 1, s.n_in[m] + 2
                if KEY[p] == m and modes[p] == KEY_LEN_1:
                    s.v_slot[p], s.n_in[m] = s.n_in[m], s.n_in[m] + 1
            for p in range(6):
                if QUERY[p] == m and modes[p] != KEY_LEN_1:
                    s.o_slot[p], s.n_out[m] = s.n_out[m], s.n_out[m] + 1
        return s

    def slots(self, m: int) -> list[tuple[int, int]]:
        """(pathway, part) of modality m's input-projection slots, in slot order (part 0 Q, 1 K, 2 V)."""
        out: list = [None] * self.n_in[m]
        for p in range(6):
            if QUERY[p] == m and self.q_slot[p] >= 0:
                out[self.q_slot[p]] = (p, 0)
            if KEY[p] == m and self.k_slot[p] >= 0:
                out[self.k_slot[p]] = (p, 1)
            if KEY[p] == m and self.v_slot[p] >= 0:
                out[self.v_slot[p]] = (p, 2)
        return out


# --------------------------------------------------------------------------- reference
def _lengths(length: Tensor | None, x: Tensor) -> Tensor:
    if length is None:
        return torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
    return length


def _mha(query: Tensor, key: Tensor, key_len: Tensor, p: int, prm: CrossModalParams, attn_p: float,
         training: bool) -> Tensor:
    """nn.MultiheadAttention(query, key, key, key_padding_mask) (batch first), with
    items whose keys are all masked giving out_proj.bias instead of NaN."""
    t_k = key.shape[1]
    empty = key_len == 0
    mask = torch.arange(t_k, device=key.device)[None, :] >= key_len[:, None]
    mask = mask & ~empty[:, None]  # unmask fully masked items; their output is replaced below
    out, _ = F.multi_head_attention_forward(
        query.transpose(0, 1), key.transpose(0, 1), key.transpose(0, 1), query.shape[-1], prm.num_heads,
        prm.in_proj_weight[p], prm.in_proj_bias[p], None, None, False, attn_p,
        prm.out_proj_weight[p], prm.out_proj_bias[p], training=training, key_padding_mask=mask,
        need_weights=False,
    )
    out = out.transpose(0, 1)
    return torch.where(empty[:, None, None], prm.out_proj_bias[p].to(out.dtype).expand_as(out), out)


def cross_modal_reference(
    x_v: Tensor, x_a: Tensor, x_t: Tensor,
    v_len: Tensor | None, a_len: Tensor | None, t_len: Tensor | None,
    params, dropout_p: float = 0.0, training: bool = False, attn_dropout_p: float | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The eager definition every backend is tested against (nn.MultiheadAttention semantics)."""
    prm = _as_params(params)
    attn_p = prm.attn_dropout_p if attn_dropout_p is None else attn_dropout_p
    xs = (x_v, x_a, x_t)
    lens = [_lengths(l, x) for l, x in zip((v_len, a_len, t_len), xs)]
    outs = [_mha(xs[QUERY[p]], xs[KEY[p]], lens[KEY[p]], p, prm, attn_p, training) for p in range(6)]
    result = []
    for m in range(3):
        s = (xs[m] + outs[2 * m] + outs[2 * m + 1]) / 3
        s = F.dropout(s, dropout_p, training)
        result.append(F.layer_norm(s, (s.shape[-1],), prm.ln_weight, prm.ln_bias, prm.ln_eps))
    return tuple(result)


# --------------------------------------------------------------------------- fake + autograd
def saved_names(modes: Sequence[int], attention_dropout: bool, output_dropout: bool = False) -> list[str]:
    """Names of the entries of the op's ``saved`` output, in order (the layout of
    csrc/cross_modal/cross_modal.cpp): Y_m (grouped input projections), O_m
    (row-pathway attention outputs), u_m (LayerNorm input), stats_m (mean,
    rstd), lse_p, for absorbed pathways qt_p, z_p, psum_p, and with any dropout
    (effective: training and p > 0) ``rng``, the (seed, offset) of the masks."""
    slots = SlotPlan.from_modes(modes)
    mods, names = "vat", []
    names += [f"Y_{mods[m]}" for m in range(3) if slots.n_in[m]]
    names += [f"O_{mods[m]}" for m in range(3) if slots.n_out[m]]
    names += [f"u_{mods[m]}" for m in range(3)] + [f"stats_{mods[m]}" for m in range(3)]
    names += [f"lse_{PATHWAYS[p]}" for p in range(6) if modes[p] != KEY_LEN_1]
    names += [f"qt_{PATHWAYS[p]}" for p in range(6) if modes[p] == ABSORBED]
    names += [f"z_{PATHWAYS[p]}" for p in range(6) if modes[p] == ABSORBED]
    names += [f"psum_{PATHWAYS[p]}" for p in range(6) if modes[p] == ABSORBED and attention_dropout]
    names += ["rng"] if attention_dropout or output_dropout else []
    return names


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _fake_forward(x_v, x_a, x_t, len_v, len_a, len_t, in_w, in_b, out_w, out_b, ln_w, ln_b, ln_eps,
                  num_heads, modes, attn_dropout_p, dropout_p, training, rng):
    xs = (x_v, x_a, x_t)
    b, d = x_v.shape[0], x_v.shape[2]
    t = [x.shape[1] for x in xs]
    h = num_heads
    acc = _acc(x_v.dtype)
    slots = SlotPlan.from_modes(modes)
    n_in, n_out = slots.n_in, slots.n_out
    attn_on = training and attn_dropout_p > 0
    dropout_on = attn_on or (training and dropout_p > 0)
    new = lambda *shape, dtype=None: x_v.new_empty(shape, dtype=dtype or x_v.dtype)  # noqa: E731
    # The layout of csrc/cross_modal/cross_modal.cpp (saved_present): only what the plan needs.
    saved = (
        [new(b * t[m], n_in[m] * d) for m in range(3) if n_in[m]]
        + [new(b * t[m], n_out[m] * d) for m in range(3) if n_out[m]]
        + [new(b, t[m], d) for m in range(3)]
        + [new(b * t[m], 2, dtype=acc) for m in range(3)]
        + [new(b, h, t[QUERY[p]], dtype=acc) for p in range(6) if modes[p] != KEY_LEN_1]
        + [new(b * t[QUERY[p]], h * d) for p in range(6) if modes[p] == ABSORBED]
        + [new(b * t[QUERY[p]], h * d) for p in range(6) if modes[p] == ABSORBED]
        + [new(b, h, t[QUERY[p]], dtype=acc) for p in range(6) if modes[p] == ABSORBED and attn_on]
        + ([new(2, dtype=torch.long)] if dropout_on else [])
    )
    return new(*x_v.shape), new(*x_a.shape), new(*x_t.shape), saved


def _fake_backward(grad_v, grad_a, grad_t, x_v, x_a, x_t, len_v, len_a, len_t, in_w, in_b, out_w, out_b,
                   ln_w, ln_b, ln_eps, num_heads, modes, attn_dropout_p, dropout_p, training, saved):
    like = lambda t: t.new_empty(t.shape)  # noqa: E731
    return ([like(x_v), like(x_a), like(x_t)] + [like(w) for w in in_w] + [like(w) for w in in_b]
            + [like(w) for w in out_w] + [like(w) for w in out_b] + [like(ln_w), like(ln_b)])


def _setup_context(ctx, inputs, output):
    (x_v, x_a, x_t, len_v, len_a, len_t, in_w, in_b, out_w, out_b, ln_w, ln_b,
     ln_eps, num_heads, modes, attn_p, out_p, training, rng) = inputs
    ctx.scalars = (ln_eps, num_heads, list(modes), attn_p, out_p, training)
    saved = list(output[3])  # with dropout, its last entry is the rng the masks used
    tensors = [x_v, x_a, x_t, len_v, len_a, len_t, *in_w, *in_b, *out_w, *out_b, ln_w, ln_b]
    ctx.save_for_backward(*tensors, *saved)
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(*saved)


def make_backward(backward_op):
    """The autograd formula of a cross-modal block op whose backward op is ``backward_op``
    (the C++ op and the Triton op share the argument list and the ``saved`` layout)."""

    def _backward(ctx, grad_v, grad_a, grad_t, _grad_saved):
        ts = ctx.saved_tensors
        x_v, x_a, x_t, len_v, len_a, len_t = ts[:6]
        in_w, in_b, out_w, out_b = (list(ts[6 + 6 * i: 12 + 6 * i]) for i in range(4))
        ln_w, ln_b = ts[30], ts[31]
        saved = list(ts[32:])
        ln_eps, num_heads, modes, attn_p, out_p, training = ctx.scalars
        grads = [g if g is not None else torch.zeros_like(x) for g, x in zip((grad_v, grad_a, grad_t), (x_v, x_a, x_t))]
        g = backward_op(
            *grads, x_v, x_a, x_t, len_v, len_a, len_t, in_w, in_b, out_w, out_b, ln_w, ln_b, ln_eps,
            num_heads, modes, attn_p, out_p, training, saved,
        )
        return (g[0], g[1], g[2], None, None, None, list(g[3:9]), list(g[9:15]), list(g[15:21]), list(g[21:27]),
                g[27], g[28], None, None, None, None, None, None, None)

    return _backward


class _CppBlockFunction(torch.autograd.Function):
    """Eager-mode autograd of the C++ op without torch.library's Python wrapper.

    ``register_autograd`` (below) is what torch.compile and direct calls of
    ``torch.ops.maven_fast.cross_modal_block`` use; in eager mode its wrapper
    flattens and unflattens the op's four lists of parameters with pytree on
    every call, forward and backward (about a quarter of the Python time around
    the op at small shapes). This Function calls the same forward and backward
    ops below the Autograd key, with the same ``saved`` layout."""

    @staticmethod
    def forward(ctx, scalars, lens, rng, *tensors):
        ln_eps, num_heads, modes, attn_p, out_p, training = scalars
        x_v, x_a, x_t = tensors[:3]
        p = [list(tensors[3 + 6 * i: 9 + 6 * i]) for i in range(4)]
        with torch._C._AutoDispatchBelowAutograd():
            v, a, t, saved = torch.ops.maven_fast.cross_modal_block(
                x_v, x_a, x_t, *lens, *p, tensors[27], tensors[28], ln_eps, num_heads, modes, attn_p, out_p,
                training, rng)
        ctx.scalars = scalars
        ctx.n_saved = len(saved)
        ctx.save_for_backward(*tensors, *lens, *saved)
        ctx.set_materialize_grads(False)
        return v, a, t

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_v, grad_a, grad_t):
        ts = ctx.saved_tensors
        tensors, lens, saved = ts[:29], ts[29:32], list(ts[32:])
        x_v, x_a, x_t = tensors[:3]
        p = [list(tensors[3 + 6 * i: 9 + 6 * i]) for i in range(4)]
        grads = [g if g is not None else torch.zeros_like(x) for g, x in zip((grad_v, grad_a, grad_t), (x_v, x_a, x_t))]
        with torch._C._AutoDispatchBelowAutograd():
            g = torch.ops.maven_fast.cross_modal_block_backward(
                *grads, x_v, x_a, x_t, *lens, *p, tensors[27], tensors[28], *ctx.scalars, saved)
        return (None, None, None, *g)


def _register_cpp_op() -> None:
    torch.library.register_fake("maven_fast::cross_modal_block")(_fake_forward)
    torch.library.register_fake("maven_fast::cross_modal_block_backward")(_fake_backward)
    torch.library.register_autograd(
        "maven_fast::cross_modal_block", make_backward(torch.ops.maven_fast.cross_modal_block_backward),
        setup_context=_setup_context,
    )


if extension() is not None:
    _register_cpp_op()


def _triton_op():
    from maven_fast.kernels import cross_modal as triton_cross_modal  # imports triton lazily

    return triton_cross_modal.ensure_registered(_fake_forward, _fake_backward, _setup_context, make_backward)


# --------------------------------------------------------------------------- public entry
def cross_modal_block(
    x_v: Tensor, x_a: Tensor, x_t: Tensor,
    v_len: Tensor | None = None, a_len: Tensor | None = None, t_len: Tensor | None = None,
    *,
    params,
    dropout_p: float = 0.0,
    training: bool = False,
    attn_dropout_p: float | None = None,
    backend: str = "auto",
    shortcuts: bool | Sequence[int] = True,
    rng: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The cross-modal block on projected sequences; returns (video_enh, audio_enh, text_enh).

    ``params``: a :class:`CrossModalParams`, or ``(attns, layer_norm)`` with
    ``attns = {"v2a": nn.MultiheadAttention, ...}``. Lengths ``[B]`` (None: all
    steps valid). ``dropout_p`` is the shared output Dropout, ``attn_dropout_p``
    the MHAs' attention dropout (default: theirs); both apply only when
    ``training``. ``shortcuts``: True (automatic, :func:`plan_pathways`), False
    (general path everywhere) or six explicit pathway modes. ``backend``:
    ``auto | eager | cpu | cuda | triton``. ``rng``: int64 ``[2]`` (seed, offset)
    of the dropout masks, on the CPU or the inputs' device (the same ``rng``
    gives the same masks on every fused backend); None (default) draws them from
    the default generator of the inputs' device (graph-safe). Eager ignores it.
    """
    prm = _as_params(params)
    attn_p = prm.attn_dropout_p if attn_dropout_p is None else float(attn_dropout_p)
    name = resolve_backend(backend, x_v.device, x_v.dtype, SUPPORTED_DTYPES, op="cross_modal_block")
    if name == "eager":
        return cross_modal_reference(x_v, x_a, x_t, v_len, a_len, t_len, prm, dropout_p, training, attn_p)
    if torch.is_autocast_enabled(x_v.device.type):
        dt = torch.get_autocast_dtype(x_v.device.type)
        x_v, x_a, x_t = x_v.to(dt), x_a.to(dt), x_t.to(dt)
    if prm.in_proj_weight[0].dtype != x_v.dtype:
        prm = prm.cast(x_v.dtype) if torch.is_autocast_enabled(x_v.device.type) else prm
    xs = (x_v, x_a, x_t)
    lens = [_lengths(l, x) for l, x in zip((v_len, a_len, t_len), xs)]
    d = x_v.shape[-1]
    if isinstance(shortcuts, bool):
        modes = plan_pathways(x_v.shape[1], x_a.shape[1], x_t.shape[1], d, prm.num_heads, shortcuts,
                              x_v.device.type, name, x_v.dtype)
    else:
        modes = [int(m) for m in shortcuts]
    if name != "triton" and not torch.compiler.is_compiling():
        # cpu, cuda in eager mode: the C++ op through its lean autograd Function
        scalars = (prm.ln_eps, prm.num_heads, modes, attn_p, float(dropout_p), bool(training))
        return _CppBlockFunction.apply(
            scalars, lens, rng, x_v, x_a, x_t, *prm.in_proj_weight, *prm.in_proj_bias, *prm.out_proj_weight,
            *prm.out_proj_bias, prm.ln_weight, prm.ln_bias)
    if name == "triton":
        op = _triton_op()
    else:  # cpu, cuda under torch.compile: the C++ op with its registered autograd
        op = torch.ops.maven_fast.cross_modal_block
    v, a, t, _ = op(
        x_v, x_a, x_t, lens[0], lens[1], lens[2],
        prm.in_proj_weight, prm.in_proj_bias, prm.out_proj_weight, prm.out_proj_bias,
        prm.ln_weight, prm.ln_bias, prm.ln_eps, prm.num_heads, modes, attn_p, float(dropout_p), bool(training), rng,
    )
    return v, a, t
