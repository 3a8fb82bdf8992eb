r"""Triton attention of the six-pathway cross-modal block: every general and
weight-absorbed pathway, batch item, head and query block in ONE launch
(forward), and two launches for the backward (dQ; dK/dV).

Per pathway p = x2y, batch item b, head h, query row i, keys j < len_y[b]:

    s_ij  = scale <q_i, k_j>
    p_ij  = exp(s_ij - lse_i),  lse_i = log sum_j exp(s_ij)          (online, fp32)
    p~_ij = p_ij z_ij / (1 - p_drop)                      z: Philox keep flag
    o_i   = sum_j p~_ij v_j,    psum_i = sum_j p~_ij      (psum: absorbed pathways
                                                           under attention dropout)
    len_y[b] = 0:  o_i = 0, lse_i = +inf, psum_i = 0

Backward (FlashAttention-2 form; P from lse, masks regenerated):

    dP~_ij = <do_i, v_j> + dpsum_i,   dp_ij = dP~_ij z_ij / (1 - p_drop)
    D_i    = <do_i, o_i> + dpsum_i psum_i
    ds_ij  = p_ij (dp_ij - D_i)
    dq_i   = scale sum_j ds_ij k_j,   dk_j = scale sum_i ds_ij q_i,   dv_j = sum_i p~_ij do_i

Problems and addressing. A pathway is a problem unless its mode is key length 1.
Its layout is a function of the plan (see ``Plan`` in kernels/cross_modal.py),
which the kernels receive as compile-time bit fields (MODES, slot numbers QS/KS/VS/OS
and slot counts NIN/NOUT) plus the run-time sizes T_v, T_a, T_t, D, H:

    general (head size d = D/H):  Q = Y_x[:, qslot*D + h d + c]   K, V = Y_y[:, k/vslot*D + h d + c]
                                  O = O_x[:, oslot*D + h d + c]   (Y_m [B*T_m, NIN_m D], O_m [B*T_m, NOUT_m D])
    absorbed (head size D):       Q = qt[:, h D + c]   K = V = x_y[:, c] (shared by heads)   O = z[:, h D + c]

Each role (Q, K/V, O, lse, ...) has one base-pointer argument per pathway
(``q0 .. q5`` etc.); a program picks its pathway's with a select, so no
pointer table or host-side address arithmetic is needed (the ops trace under
torch.compile). lse/psum/dpsum are [B, H, T_x] fp32.

Grids: forward and dQ: (b * H + h, query block x column chunk, problem); dK/dV:
(b * H + h, key block x column chunk, unit), where units are the general
pathways and the key modalities with absorbed pathways: B * H on axis 0 (up to
2^31 - 1 programs; axes 1 and 2 allow 65535). Axis 1 is sized for the largest
problem/unit; programs past theirs do nothing. Key lengths are clamped to
[0, T] where they are read (the forward checks them: device-side error). For a key modality with
absorbed pathways ONE program (h = 0) per key block sums dK + dV over both
absorbed pathways and all heads, reads the modality's incoming gradient and
writes gradient + dK + dV to a new buffer: the shared-K accumulation is
race-free, deterministic and idempotent (autotuning may rerun it). Head sizes
above BLOCK_D are processed in column chunks: the contractions loop over
chunks, each program owns one chunk of the output columns. Per-element offsets
are 32-bit; batch offsets 64-bit.
"""
from __future__ import annotations

import os

import triton
import triton.language as tl

from .cross_modal_dropout import keep_block, load_rng
from .device_checks import key_length
from .launch_config import launch_config

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)
LN2: tl.constexpr = tl.constexpr(0.6931471805599453)
# Key modality of each pathway (v2a, v2t, a2v, a2t, t2v, t2a -> 1, 2, 0, 2, 0, 1), 2 bits each.
KEY_BITS: tl.constexpr = tl.constexpr(1 | 2 << 2 | 0 << 4 | 2 << 6 | 0 << 8 | 1 << 10)


SHORT, LONG = 0, 1  # t_key: the longest sequence is <= 128, or longer


def t_key(max_t: int) -> int:
    return SHORT if max_t <= 128 else LONG


# What the autotuner may choose, per element size (4: fp32; 2: fp16, bf16): the
# largest column chunk BLOCK_D, and the (BLOCK_M, BLOCK_N, num_warps, num_stages)
# per kernel kind (fwd, dq, dkv) and sequence class. Every entry compiles for sm_80
# and sm_90 within a block's shared memory and registers and WITHOUT spills (ptxas
# of Triton 3.8, with the register limit of launch_config.py; tests/test_triton_aot.py
# checks it in every test run, the table is bench/results/triton-aot.md). fp32 dots
# are ieee FMA loops whose operands sit in registers: BLOCK_D 256 (the former cap)
# spilled up to ~70 KB and needed 192 KB of shared memory (over sm_80's 163 KB), and
# 64-row fp32 tiles still spill at BLOCK_D 32; the 16-bit tensor-core dots spilled
# from BLOCK_D 256 and, at BLOCK_D 128, from 64-row tiles (dQ: 32-row) on 4 warps.
# Shorter sequences get the smaller tiles (more programs).
_MAX_BLOCK_D = {4: 32, 2: 128}
_SHAPES = {
    ("fwd", SHORT, 2): [(32, 32, 4, 2), (64, 32, 8, 2)],
    ("fwd", LONG, 2): [(64, 32, 8, 2), (64, 64, 8, 2)],
    ("dq", SHORT, 2): [(16, 32, 8, 1), (32, 32, 8, 2)],
    ("dq", LONG, 2): [(32, 32, 8, 1), (32, 32, 8, 2)],
    ("dkv", SHORT, 2): [(16, 32, 4, 1), (32, 32, 8, 2)],
    ("dkv", LONG, 2): [(32, 32, 8, 2), (64, 32, 8, 2)],
    ("fwd", SHORT, 4): [(16, 32, 4, 1), (32, 32, 8, 2)],
    ("fwd", LONG, 4): [(16, 32, 4, 1), (32, 32, 8, 2)],
    ("dq", SHORT, 4): [(16, 32, 8, 1), (32, 32, 4, 1)],
    ("dq", LONG, 4): [(16, 32, 8, 1), (32, 32, 4, 1)],
    ("dkv", SHORT, 4): [(16, 16, 4, 1), (32, 32, 4, 1)],
    ("dkv", LONG, 4): [(16, 16, 4, 1), (32, 32, 4, 1)],
}
INTERPRET_BLOCK_D = 32  # the interpreter's column chunk (small: it is slow)


def block_d_cap(dtype, interpret: bool = INTERPRET) -> int:
    """The largest column chunk BLOCK_D of the attention kernels for elements of
    ``dtype`` (a torch dtype); the launches take min(this, head size rounded up)."""
    return INTERPRET_BLOCK_D if interpret else _MAX_BLOCK_D[dtype.itemsize]


def config_shape(config: triton.Config) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) of an autotune config."""
    return config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"], config.num_warps, config.num_stages


def gpu_configs(kind: str) -> list[triton.Config]:
    """Every config the autotuner of a ``kind`` ("fwd", "dq" or "dkv") kernel holds on
    a GPU (all sequence classes and dtypes; :func:`selectable_shapes` says which a
    call may use). Independent of TRITON_INTERPRET, so the ahead-of-time check sees it."""
    shapes = dict.fromkeys(s for (k, _, _), ss in _SHAPES.items() if k == kind for s in ss)
    return [launch_config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=st) for m, n, w, st in shapes]


def _configs(kind: str):
    if INTERPRET:  # the interpreter is slow: one small config
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16}, num_warps=1, num_stages=1)]
    return gpu_configs(kind)


def selectable_shapes(kind: str, seq_class: int, block_d: int, dtype) -> list[tuple[int, int, int, int]]:
    """The (BLOCK_M, BLOCK_N, num_warps, num_stages) the autotuner may choose for a
    call of sequence class ``seq_class`` (:func:`t_key`), column chunk ``block_d``
    and element dtype ``dtype`` (a torch dtype). The one rule used by the pruner
    and by the ahead-of-time check (maven_fast/triton_aot.py), which compiles
    every shape this returns for sm_80 and sm_90 and fails on any over the limits.
    None for a BLOCK_D above :func:`block_d_cap` (never launched)."""
    if block_d > _MAX_BLOCK_D[dtype.itemsize]:
        return []
    return list(_SHAPES[(kind, seq_class, dtype.itemsize)])


def _pruner(kind: str):
    """The autotuner times only the configs :func:`selectable_shapes` allows for the call."""
    def prune(configs, named_args, **kwargs):
        shapes = selectable_shapes(kind, named_args["t_key"], kwargs["BLOCK_D"], named_args["q0"].dtype)
        keep = [c for c in configs if config_shape(c) in shapes]
        if INTERPRET:  # the interpreter's one config is not a GPU shape
            return keep or configs
        if not keep:
            raise ValueError(f"attention {kind}: no autotune config fits t_key={named_args['t_key']}, "
                             f"BLOCK_D={kwargs['BLOCK_D']}, dtype={named_args['q0'].dtype}")
        return keep

    return prune


# --------------------------------------------------------------------------- helpers
@triton.jit
def _pick3(i, a0, a1, a2):
    return tl.where(i == 0, a0, tl.where(i == 1, a1, a2))


@triton.jit
def _pick6(i, a0, a1, a2, a3, a4, a5):
    return tl.where(i == 0, a0, tl.where(i == 1, a1, tl.where(i == 2, a2, tl.where(
        i == 3, a3, tl.where(i == 4, a4, a5)))))


@triton.jit
def _layout(p, T0, T1, T2, D, H, MODES: tl.constexpr, QS: tl.constexpr, KS: tl.constexpr,
            VS: tl.constexpr, OS: tl.constexpr, NIN: tl.constexpr, NOUT: tl.constexpr, ALIGN: tl.constexpr):
    """Mode and addressing of pathway p: element (b, t, h, c) of a role is at
    col + b*sb + t*st + h*sh + c. K and V share sb, st, sh. The batch strides sb
    are int64, the rest int32 (per-element offsets stay 32-bit). Every offset and
    stride is a multiple of ALIGN elements (D and D/H are), which lets loads vectorise."""
    zero = p * 0
    x = p // 2
    y = (KEY_BITS >> (2 * p)) & 3
    mode = (MODES >> (2 * p)) & 3
    absorbed = mode == 2
    d = tl.multiple_of(zero + D, ALIGN)
    tq = zero + tl.where(x == 0, T0, tl.where(x == 1, T1, T2))
    tk = zero + tl.where(y == 0, T0, tl.where(y == 1, T1, T2))
    hd = tl.multiple_of(tl.where(absorbed, d, d // H), ALIGN)
    q_st = tl.where(absorbed, H * d, ((NIN >> (4 * x)) & 15) * d)
    q_col = tl.where(absorbed, 0, ((QS >> (4 * p)) & 15) * d)
    k_st = tl.where(absorbed, d, ((NIN >> (4 * y)) & 15) * d)
    k_col = tl.where(absorbed, 0, ((KS >> (4 * p)) & 15) * d)
    k_sh = tl.where(absorbed, 0, hd)
    v_col = tl.where(absorbed, 0, ((VS >> (4 * p)) & 15) * d)
    o_st = tl.where(absorbed, H * d, ((NOUT >> (4 * x)) & 15) * d)
    o_col = tl.where(absorbed, 0, ((OS >> (4 * p)) & 15) * d)
    q_st = tl.multiple_of(q_st, ALIGN)
    q_col = tl.multiple_of(q_col, ALIGN)
    k_st = tl.multiple_of(k_st, ALIGN)
    k_col = tl.multiple_of(k_col, ALIGN)
    k_sh = tl.multiple_of(k_sh, ALIGN)
    v_col = tl.multiple_of(v_col, ALIGN)
    o_st = tl.multiple_of(o_st, ALIGN)
    o_col = tl.multiple_of(o_col, ALIGN)
    return (mode, y, tq, tk, hd, q_col, tq.to(tl.int64) * q_st, q_st, k_col, v_col, tk.to(tl.int64) * k_st,
            k_st, k_sh, o_col, tq.to(tl.int64) * o_st, o_st)


@triton.jit
def _scores(q_base, q_st, k_base, k_st, rows, row_ok, cols, col_ok, hd,
            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PREC: tl.constexpr,
            EVEN_D: tl.constexpr):
    """Q K^T of a [BLOCK_M, BLOCK_N] block (fp32), contracting over hd in chunks."""
    s = tl.full([BLOCK_M, BLOCK_N], 0.0, tl.float32)
    for d0 in range(0, hd, BLOCK_D):
        dd = tl.multiple_of(d0, BLOCK_D) + tl.arange(0, BLOCK_D)
        d_ok = (dd < hd) | EVEN_D  # constant mask when no head size needs one: loads vectorise
        q = tl.load(q_base + rows[:, None] * q_st + dd[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0.0)
        k = tl.load(k_base + cols[:, None] * k_st + dd[None, :], mask=col_ok[:, None] & d_ok[None, :], other=0.0)
        s = tl.dot(q, tl.trans(k), s, input_precision=PREC)
    return s


@triton.jit
def _row_dot(a_base, b_base, st, rows, row_ok, hd, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
             EVEN_D: tl.constexpr):
    """<a_i, b_i> over hd (fp32) for rows i of two sequences with the same layout."""
    acc = tl.full([BLOCK_M], 0.0, tl.float32)
    for d0 in range(0, hd, BLOCK_D):
        dd = tl.multiple_of(d0, BLOCK_D) + tl.arange(0, BLOCK_D)
        m = row_ok[:, None] & ((dd < hd) | EVEN_D)[None, :]
        a = tl.load(a_base + rows[:, None] * st + dd[None, :], mask=m, other=0.0).to(tl.float32)
        c = tl.load(b_base + rows[:, None] * st + dd[None, :], mask=m, other=0.0).to(tl.float32)
        acc += tl.sum(a * c, axis=1)
    return acc


# --------------------------------------------------------------------------- forward
@triton.autotune(configs=_configs("fwd"), key=["t_key", "BLOCK_D", "DROPOUT", "PSUM"],
                 prune_configs_by={"early_config_prune": _pruner("fwd")})
@triton.jit(do_not_specialize=["threshold"])
def attention_fwd_kernel(
    q0, q1, q2, q3, q4, q5,
    kv0, kv1, kv2, kv3, kv4, kv5,
    o0, o1, o2, o3, o4, o5,
    lse0, lse1, lse2, lse3, lse4, lse5,
    ps0, ps1, ps2, ps3, ps4, ps5,
    len0, len1, len2, rng_ptr,
    threshold, inv_keep, sm_scale, T0, T1, T2, D, H, t_key,
    PROBS: tl.constexpr, UNITS: tl.constexpr, MODES: tl.constexpr,
    QS: tl.constexpr, KS: tl.constexpr, VS: tl.constexpr, OS: tl.constexpr,
    NIN: tl.constexpr, NOUT: tl.constexpr, ALIGN: tl.constexpr, EVEN_D: tl.constexpr,
    DROPOUT: tl.constexpr, PSUM: tl.constexpr, PREC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Online-softmax attention forward of one (pathway, b, h, query block, column chunk)."""
    bh = tl.program_id(0)
    b = (bh // H).to(tl.int64)
    h = bh % H
    p = (PROBS >> (3 * tl.program_id(2))) & 7
    local = tl.program_id(1)
    (mode, y, tq, tk, hd, q_col, q_sb, q_st, k_col, v_col, k_sb, k_st, k_sh,
     o_col, o_sb, o_st) = _layout(p, T0, T1, T2, D, H, MODES, QS, KS, VS, OS, NIN, NOUT, ALIGN)
    absorbed = mode == 2
    n_chunks = (hd + BLOCK_D - 1) // BLOCK_D
    chunk = local % n_chunks
    row0 = (local // n_chunks) * BLOCK_M
    rows = row0 + tl.arange(0, BLOCK_M)
    row_ok = rows < tq
    klen = key_length(_pick3(y, len0, len1, len2), b, tk, True)
    klen = tl.where(row0 < tq, klen, 0)  # programs past this pathway's query blocks do nothing
    q_base = _pick6(p, q0, q1, q2, q3, q4, q5) + q_col + b * q_sb + h * hd
    kv = _pick6(p, kv0, kv1, kv2, kv3, kv4, kv5)
    k_base = kv + k_col + b * k_sb + h * k_sh
    v_base = kv + v_col + b * k_sb + h * k_sh
    dcol = chunk * BLOCK_D + tl.arange(0, BLOCK_D)
    dcol_ok = (dcol < hd) | EVEN_D
    scale = sm_scale * LOG2E  # base-2 exponent units
    if DROPOUT:
        k0, k1, offset = load_rng(rng_ptr)
        stream = 16 * h + p

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.full([BLOCK_M], 0.0, tl.float32)
    ps = tl.full([BLOCK_M], 0.0, tl.float32)
    acc = tl.full([BLOCK_M, BLOCK_D], 0.0, tl.float32)
    for j0 in range(0, klen, BLOCK_N):
        cols = j0 + tl.arange(0, BLOCK_N)
        col_ok = cols < klen
        s = _scores(q_base, q_st, k_base, k_st, rows, row_ok, cols, col_ok, hd,
                    BLOCK_M, BLOCK_N, BLOCK_D, PREC, EVEN_D) * scale
        s = tl.where(col_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))  # finite: every block has a valid key
        alpha = tl.exp2(m_i - m_new)
        pr = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(pr, axis=1)
        acc = acc * alpha[:, None]
        m_i = m_new
        if DROPOUT:
            keep = keep_block(k0, k1, offset, stream, b, rows, j0, threshold, BLOCK_M, BLOCK_N)
            pr = tl.where(keep, pr * inv_keep, 0.0)
        if PSUM:
            ps = ps * alpha + tl.sum(pr, axis=1)
        v = tl.load(v_base + cols[:, None] * k_st + dcol[None, :], mask=col_ok[:, None] & dcol_ok[None, :],
                    other=0.0)
        acc = tl.dot(pr.to(v.dtype), v, acc, input_precision=PREC)

    has_keys = l_i > 0.0
    inv_l = tl.where(has_keys, 1.0 / tl.where(has_keys, l_i, 1.0), 0.0)
    o_ptr = _pick6(p, o0, o1, o2, o3, o4, o5) + o_col + b * o_sb + h * hd
    tl.store(o_ptr + rows[:, None] * o_st + dcol[None, :], (acc * inv_l[:, None]).to(o0.dtype.element_ty),
             mask=row_ok[:, None] & dcol_ok[None, :])
    stat_ok = row_ok & (chunk == 0)
    stat = (b * H + h) * tq
    lse = tl.where(has_keys, (m_i + tl.log2(tl.where(has_keys, l_i, 1.0))) * LN2, float("inf"))
    tl.store(_pick6(p, lse0, lse1, lse2, lse3, lse4, lse5) + stat + rows, lse, mask=stat_ok)
    if PSUM:
        psum_ok = stat_ok & absorbed
        tl.store(_pick6(p, ps0, ps1, ps2, ps3, ps4, ps5) + stat + rows, ps * inv_l, mask=psum_ok)


# --------------------------------------------------------------------------- backward: dQ
@triton.autotune(configs=_configs("dq"), key=["t_key", "BLOCK_D", "DROPOUT", "PSUM"],
                 prune_configs_by={"early_config_prune": _pruner("dq")})
@triton.jit(do_not_specialize=["threshold"])
def attention_bwd_dq_kernel(
    q0, q1, q2, q3, q4, q5,
    kv0, kv1, kv2, kv3, kv4, kv5,
    o0, o1, o2, o3, o4, o5,
    do0, do1, do2, do3, do4, do5,
    lse0, lse1, lse2, lse3, lse4, lse5,
    ps0, ps1, ps2, ps3, ps4, ps5,
    dps0, dps1, dps2, dps3, dps4, dps5,
    dq0, dq1, dq2, dq3, dq4, dq5,
    len0, len1, len2, rng_ptr,
    threshold, inv_keep, sm_scale, T0, T1, T2, D, H, t_key,
    PROBS: tl.constexpr, UNITS: tl.constexpr, MODES: tl.constexpr,
    QS: tl.constexpr, KS: tl.constexpr, VS: tl.constexpr, OS: tl.constexpr,
    NIN: tl.constexpr, NOUT: tl.constexpr, ALIGN: tl.constexpr, EVEN_D: tl.constexpr,
    DROPOUT: tl.constexpr, PSUM: tl.constexpr, PREC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """dq_i = scale sum_j ds_ij k_j for one (pathway, b, h, query block, column chunk).

    dQ has the layout of Q, dO that of O. Rows of items without keys get 0."""
    bh = tl.program_id(0)
    b = (bh // H).to(tl.int64)
    h = bh % H
    p = (PROBS >> (3 * tl.program_id(2))) & 7
    local = tl.program_id(1)
    (mode, y, tq, tk, hd, q_col, q_sb, q_st, k_col, v_col, k_sb, k_st, k_sh,
     o_col, o_sb, o_st) = _layout(p, T0, T1, T2, D, H, MODES, QS, KS, VS, OS, NIN, NOUT, ALIGN)
    absorbed = mode == 2
    n_chunks = (hd + BLOCK_D - 1) // BLOCK_D
    chunk = local % n_chunks
    row0 = (local // n_chunks) * BLOCK_M
    rows = row0 + tl.arange(0, BLOCK_M)
    row_ok = rows < tq
    klen = key_length(_pick3(y, len0, len1, len2), b, tk, False)
    klen = tl.where(row0 < tq, klen, 0)  # programs past this pathway's query blocks do nothing
    q_off = q_col + b * q_sb + h * hd
    q_base = _pick6(p, q0, q1, q2, q3, q4, q5) + q_off
    kv = _pick6(p, kv0, kv1, kv2, kv3, kv4, kv5)
    k_base = kv + k_col + b * k_sb + h * k_sh
    v_base = kv + v_col + b * k_sb + h * k_sh
    o_off = o_col + b * o_sb + h * hd
    o_base = _pick6(p, o0, o1, o2, o3, o4, o5) + o_off
    do_base = _pick6(p, do0, do1, do2, do3, do4, do5) + o_off
    dcol = chunk * BLOCK_D + tl.arange(0, BLOCK_D)
    dcol_ok = (dcol < hd) | EVEN_D
    scale = sm_scale
    stat = (b * H + h) * tq
    lse = tl.load(_pick6(p, lse0, lse1, lse2, lse3, lse4, lse5) + stat + rows, mask=row_ok, other=0.0) * LOG2E
    delta = _row_dot(do_base, o_base, o_st, rows, row_ok, hd, BLOCK_M, BLOCK_D, EVEN_D)
    extra = tl.full([BLOCK_M], 0.0, tl.float32)
    if PSUM:
        psum_ok = row_ok & absorbed
        extra = tl.load(_pick6(p, dps0, dps1, dps2, dps3, dps4, dps5) + stat + rows, mask=psum_ok, other=0.0)
        delta += extra * tl.load(_pick6(p, ps0, ps1, ps2, ps3, ps4, ps5) + stat + rows, mask=psum_ok,
                                 other=0.0)
    if DROPOUT:
        k0, k1, offset = load_rng(rng_ptr)
        stream = 16 * h + p

    dq = tl.full([BLOCK_M, BLOCK_D], 0.0, tl.float32)
    for j0 in range(0, klen, BLOCK_N):
        cols = j0 + tl.arange(0, BLOCK_N)
        col_ok = cols < klen
        s = _scores(q_base, q_st, k_base, k_st, rows, row_ok, cols, col_ok, hd,
                    BLOCK_M, BLOCK_N, BLOCK_D, PREC, EVEN_D)
        pr = tl.exp2(s * (scale * LOG2E) - lse[:, None])
        pr = tl.where(row_ok[:, None] & col_ok[None, :], pr, 0.0)
        dp = _scores(do_base, o_st, v_base, k_st, rows, row_ok, cols, col_ok, hd,
                     BLOCK_M, BLOCK_N, BLOCK_D, PREC, EVEN_D) + extra[:, None]
        if DROPOUT:
            keep = keep_block(k0, k1, offset, stream, b, rows, j0, threshold, BLOCK_M, BLOCK_N)
            dp = tl.where(keep, dp * inv_keep, 0.0)
        ds = pr * (dp - delta[:, None])
        k = tl.load(k_base + cols[:, None] * k_st + dcol[None, :], mask=col_ok[:, None] & dcol_ok[None, :],
                    other=0.0)
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=PREC)
    dq_ptr = _pick6(p, dq0, dq1, dq2, dq3, dq4, dq5) + q_off
    tl.store(dq_ptr + rows[:, None] * q_st + dcol[None, :], (dq * scale).to(dq0.dtype.element_ty),
             mask=row_ok[:, None] & dcol_ok[None, :])


# --------------------------------------------------------------------------- backward: dK, dV
@triton.autotune(configs=_configs("dkv"), key=["t_key", "BLOCK_D", "DROPOUT", "PSUM"],
                 prune_configs_by={"early_config_prune": _pruner("dkv")})
@triton.jit(do_not_specialize=["threshold"])
def attention_bwd_dkv_kernel(
    q0, q1, q2, q3, q4, q5,
    kv0, kv1, kv2, kv3, kv4, kv5,
    o0, o1, o2, o3, o4, o5,
    do0, do1, do2, do3, do4, do5,
    lse0, lse1, lse2, lse3, lse4, lse5,
    ps0, ps1, ps2, ps3, ps4, ps5,
    dps0, dps1, dps2, dps3, dps4, dps5,
    dkv0, dkv1, dkv2, dkv3, dkv4, dkv5,
    gin0, gin1, gin2, gout0, gout1, gout2,
    len0, len1, len2, rng_ptr,
    threshold, inv_keep, sm_scale, T0, T1, T2, D, H, t_key,
    PROBS: tl.constexpr, UNITS: tl.constexpr, MODES: tl.constexpr,
    QS: tl.constexpr, KS: tl.constexpr, VS: tl.constexpr, OS: tl.constexpr,
    NIN: tl.constexpr, NOUT: tl.constexpr, ALIGN: tl.constexpr, EVEN_D: tl.constexpr,
    DROPOUT: tl.constexpr, PSUM: tl.constexpr, PREC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """dk_j = scale sum_i ds_ij q_i and dv_j = sum_i p~_ij do_i for one key block and
    column chunk of a general pathway's (b, h) (written to dkv_p in the layout of K
    and V; keys j >= len get 0), or, for a key modality m with absorbed pathways,
    gout_m[b, j] = gin_m[b, j] + sum over those pathways and heads of dk_j + dv_j."""
    bh = tl.program_id(0)
    b = (bh // H).to(tl.int64)
    h = bh % H
    unit = (UNITS >> (4 * tl.program_id(2))) & 15
    local = tl.program_id(1)
    shared = unit >= 6
    m = unit - 6
    # members: the general pathway itself, or the (up to two) absorbed pathways keyed on m
    mem_a = tl.where(shared, tl.where(m == 0, 2, tl.where(m == 1, 0, 1)), unit)
    mem_b = tl.where(shared, tl.where(m == 0, 4, tl.where(m == 1, 5, 3)), -1)
    y = tl.where(shared, m, (KEY_BITS >> (2 * unit)) & 3)
    d32 = tl.multiple_of(local * 0 + D, ALIGN)
    tk = local * 0 + _pick3(y, T0, T1, T2)
    hd = tl.multiple_of(tl.where(shared, d32, d32 // H), ALIGN)
    n_chunks = (hd + BLOCK_D - 1) // BLOCK_D
    chunk = local % n_chunks
    col0 = (local // n_chunks) * BLOCK_N
    cols = col0 + tl.arange(0, BLOCK_N)
    klen = key_length(_pick3(y, len0, len1, len2), b, tk, False)
    col_ok = cols < klen
    dcol = chunk * BLOCK_D + tl.arange(0, BLOCK_D)
    dcol_ok = (dcol < hd) | EVEN_D
    active = (h == 0) | (unit < 6)  # one program per (b, key block) for shared keys
    if DROPOUT:
        k0, k1, offset = load_rng(rng_ptr)

    acc_k = tl.full([BLOCK_N, BLOCK_D], 0.0, tl.float32)
    acc_v = tl.full([BLOCK_N, BLOCK_D], 0.0, tl.float32)
    for which in range(0, 2):
        p = tl.where(which == 0, mem_a, mem_b)
        pm = tl.maximum(p, 0)
        (mode, _y, tq, _tk, _hd, q_col, q_sb, q_st, k_col, v_col, k_sb, k_st, k_sh,
         o_col, o_sb, o_st) = _layout(pm, T0, T1, T2, D, H, MODES, QS, KS, VS, OS, NIN, NOUT, ALIGN)
        member = (p >= 0) & active & tl.where(shared, mode == 2, mode == 0) & (col0 < klen)
        n_rows = tl.where(member, tq, 0)
        h_lo = tl.where(shared, 0, h)
        h_hi = tl.where(shared, H, h + 1)
        scale = sm_scale
        q_p = _pick6(pm, q0, q1, q2, q3, q4, q5)
        kv = _pick6(pm, kv0, kv1, kv2, kv3, kv4, kv5)
        o_p = _pick6(pm, o0, o1, o2, o3, o4, o5)
        do_p = _pick6(pm, do0, do1, do2, do3, do4, do5)
        lse_p = _pick6(pm, lse0, lse1, lse2, lse3, lse4, lse5)
        for hh in range(h_lo, h_hi):
            q_base = q_p + q_col + b * q_sb + hh * hd
            k_base = kv + k_col + b * k_sb + hh * k_sh
            v_base = kv + v_col + b * k_sb + hh * k_sh
            o_off = o_col + b * o_sb + hh * hd
            if DROPOUT:
                stream = 16 * hh + pm
            for i0 in range(0, n_rows, BLOCK_M):
                rows = i0 + tl.arange(0, BLOCK_M)
                row_ok = rows < tq
                stat = (b * H + hh) * tq
                lse = tl.load(lse_p + stat + rows, mask=row_ok, other=0.0) * LOG2E
                delta = _row_dot(do_p + o_off, o_p + o_off, o_st, rows, row_ok, hd, BLOCK_M, BLOCK_D, EVEN_D)
                extra = tl.full([BLOCK_M], 0.0, tl.float32)
                if PSUM:
                    psum_ok = row_ok & (mode == 2)
                    extra = tl.load(_pick6(pm, dps0, dps1, dps2, dps3, dps4, dps5) + stat + rows,
                                    mask=psum_ok, other=0.0)
                    delta += extra * tl.load(_pick6(pm, ps0, ps1, ps2, ps3, ps4, ps5) + stat + rows,
                                             mask=psum_ok, other=0.0)
                s = _scores(q_base, q_st, k_base, k_st, rows, row_ok, cols, col_ok, hd,
                            BLOCK_M, BLOCK_N, BLOCK_D, PREC, EVEN_D)
                pr = tl.exp2(s * (scale * LOG2E) - lse[:, None])
                pr = tl.where(row_ok[:, None] & col_ok[None, :], pr, 0.0)
                dp = _scores(do_p + o_off, o_st, v_base, k_st, rows, row_ok, cols, col_ok, hd,
                             BLOCK_M, BLOCK_N, BLOCK_D, PREC, EVEN_D) + extra[:, None]
                if DROPOUT:
                    keep = keep_block(k0, k1, offset, stream, b, rows, col0, threshold, BLOCK_M, BLOCK_N)
                    dp = tl.where(keep, dp * inv_keep, 0.0)
                    pd = tl.where(keep, pr * inv_keep, 0.0)
                else:
                    pd = pr
                ds = pr * (dp - delta[:, None]) * scale
                do = tl.load(do_p + o_off + rows[:, None] * o_st + dcol[None, :],
                             mask=row_ok[:, None] & dcol_ok[None, :], other=0.0)
                q = tl.load(q_base + rows[:, None] * q_st + dcol[None, :],
                            mask=row_ok[:, None] & dcol_ok[None, :], other=0.0)
                acc_v = tl.dot(tl.trans(pd.to(do.dtype)), do, acc_v, input_precision=PREC)
                acc_k = tl.dot(tl.trans(ds.to(q.dtype)), q, acc_k, input_precision=PREC)

    out_ok = (cols < tk)[:, None] & dcol_ok[None, :] & active
    if unit < 6:
        pm = tl.maximum(mem_a, 0)
        (mode, _y, tq, _tk, _hd, q_col, q_sb, q_st, k_col, v_col, k_sb, k_st, k_sh,
         o_col, o_sb, o_st) = _layout(pm, T0, T1, T2, D, H, MODES, QS, KS, VS, OS, NIN, NOUT, ALIGN)
        dkv = _pick6(pm, dkv0, dkv1, dkv2, dkv3, dkv4, dkv5)
        base = b * k_sb + h * k_sh
        at = cols[:, None] * k_st + dcol[None, :]
        tl.store(dkv + (base + k_col) + at, acc_k.to(dkv0.dtype.element_ty), mask=out_ok)
        tl.store(dkv + (base + v_col) + at, acc_v.to(dkv0.dtype.element_ty), mask=out_ok)
    else:
        base = b * tk * d32
        at = cols[:, None] * d32 + dcol[None, :]
        g = tl.load(_pick3(m, gin0, gin1, gin2) + base + at, mask=out_ok, other=0.0).to(tl.float32)
        tl.store(_pick3(m, gout0, gout1, gout2) + base + at, (g + acc_k + acc_v).to(gout0.dtype.element_ty),
                 mask=out_ok)
