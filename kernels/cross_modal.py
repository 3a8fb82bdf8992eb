r"""Triton backend of the six-pathway cross-modal block (SPEC 3.1).

``torch.ops.maven_fast.cross_modal_block_triton`` and ``..._backward`` have the
argument lists, results and ``saved`` layout of the C++ ops
``maven_fast::cross_modal_block`` / ``_backward`` (csrc/registration.cpp), so
the fake kernels and the autograd formula of maven_fast/ops/cross_modal.py
serve both. The orchestration mirrors csrc/cross_modal/cross_modal.cpp:

    Y_m  = x_m W_m^T + b_m             grouped input projection (slot GEMMs into one buffer)
    attention of every general and absorbed pathway      ONE launch (cross_modal_attention.py)
    absorbed: O_h = z_h W_v,h^T + psum_h b_v,h
    rows_m = [O_p1 | O_p2] [W_o,p1 | W_o,p2]^T + b_o,p1 + b_o,p2
    key length 1: c_p = V_p W_o,p^T per item (per head under attention dropout)
    y_m  = LN(Dropout((x_m + rows_m + items_m) / 3))     ONE launch (cross_modal_combine.py)

and the backward in reverse (combine: one launch; attention: dQ and dK/dV
launches). Dropout masks are Philox-4x32-10 with the counters of
csrc/cross_modal/cross_modal_math.h, so with the same ``rng`` the Triton and
CPU backends drop the same elements.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import triton
from torch import Tensor
from torch.library import triton_op

from maven_fast.ops.cross_modal import ABSORBED, GENERAL, KEY, KEY_LEN_1, QUERY, SlotPlan
from maven_fast.ops.cross_modal import PATHWAYS as PATHWAY_NAMES

from ._torch_compat import wrap_triton
from .cross_modal_attention import (
    INTERPRET,
    attention_bwd_dkv_kernel,
    attention_bwd_dq_kernel,
    attention_fwd_kernel,
    block_d_cap,
    t_key,
)
from .cross_modal_combine import combine_bwd_kernel, combine_fwd_kernel
from .cross_modal_dropout import dropout_threshold
from .launch_device import on_inputs_device

X_NAMES = ("x_v", "x_a", "x_t")
LEN_NAMES = ("len_v", "len_a", "len_t")
MODALITY_NAMES = ("video", "audio", "text")
DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# The full `saved` layout (csrc/cross_modal/cross_modal.cpp); the op returns the present entries.
N_SAVED = 37
S_Y, S_O, S_U, S_STATS, S_LSE, S_QT, S_Z, S_PSUM, S_RNG = 0, 3, 6, 9, 12, 18, 24, 30, 36



class Plan(SlotPlan):
    """The slots of :class:`~maven_fast.ops.cross_modal.SlotPlan` with the call's sizes,
    effective dropout probabilities and the views the launches need."""

    def __init__(self, batch: int, d: int, heads: int, t: Sequence[int], modes: Sequence[int],
                 attn_p: float, out_p: float):
        slots = SlotPlan.from_modes(modes)
        super().__init__(slots.n_in, slots.n_out, slots.q_slot, slots.k_slot, slots.v_slot, slots.o_slot)
        self.batch, self.d, self.heads, self.head_dim = batch, d, heads, d // heads
        self.t = tuple(t)
        self.mode = tuple(modes)
        self.attn_p, self.out_p = attn_p, out_p

    def problems(self) -> list[int]:
        return [p for p in range(6) if self.mode[p] != KEY_LEN_1]

    def row_pathways(self, m: int) -> list[int]:
        return [p for p in (2 * m, 2 * m + 1) if self.o_slot[p] >= 0]

    def saved_present(self) -> list[bool]:
        on = [False] * N_SAVED
        for m in range(3):
            on[S_Y + m] = self.n_in[m] > 0
            on[S_O + m] = self.n_out[m] > 0
            on[S_U + m] = on[S_STATS + m] = True
        for p in range(6):
            on[S_LSE + p] = self.mode[p] != KEY_LEN_1
            on[S_QT + p] = on[S_Z + p] = self.mode[p] == ABSORBED
            on[S_PSUM + p] = self.mode[p] == ABSORBED and self.attn_p > 0
        on[S_RNG] = self.attn_p > 0 or self.out_p > 0
        return on

    def kernel_plan(self) -> dict[str, int]:
        """The plan as the attention kernels' compile-time bit fields."""
        pack = lambda vals, bits: sum((v & ((1 << bits) - 1)) << (bits * i) for i, v in enumerate(vals))  # noqa: E731
        return dict(MODES=pack(self.mode, 2), QS=pack(self.q_slot, 4), KS=pack(self.k_slot, 4),
                    VS=pack(self.v_slot, 4), OS=pack(self.o_slot, 4), NIN=pack(self.n_in, 4),
                    NOUT=pack(self.n_out, 4))

    def item_pathways(self) -> list[int]:
        return [p for p in range(6) if self.mode[p] == KEY_LEN_1]


# --------------------------------------------------------------------------- checks
def _fail(op: str, msg: str):
    raise RuntimeError(f"{op}: {msg}")


def _is_traced(*ts: Tensor) -> bool:
    from torch._subclasses.fake_tensor import is_fake

    return torch.compiler.is_compiling() or any(is_fake(t) for t in ts)


def _check_and_plan(op, x, lens, in_w, in_b, out_w, out_b, ln_w, ln_b, ln_eps, heads, modes,
                    attn_p, out_p, training, rng):
    """Validates the arguments as cross_modal.cpp does; returns normalised (x, lens,
    params) and the plan."""
    x = list(x)
    for m in range(3):
        if x[m] is None or x[m].dim() != 3:
            _fail(op, f"`{X_NAMES[m]}` must have 3 dimensions [B, T, D] (batch, time, features), got "
                      f"{None if x[m] is None else tuple(x[m].shape)}")
        if x[m].dtype != x[0].dtype:
            _fail(op, f"`{X_NAMES[m]}` has dtype {x[m].dtype} but `x_v` has dtype {x[0].dtype}")
        if x[m].device != x[0].device:
            _fail(op, f"`{X_NAMES[m]}` is on {x[m].device} but `x_v` is on {x[0].device}")
    if x[0].dtype not in DTYPES:
        _fail(op, f"the Triton kernels support float32, float16 and bfloat16, got {x[0].dtype}")
    B, D = x[0].shape[0], x[0].shape[2]
    for m in (1, 2):
        if x[m].shape[0] != B or x[m].shape[2] != D:
            _fail(op, f"`{X_NAMES[m]}` must have shape [B, T, D] = [{B}, T, {D}] to match x_v "
                      f"{list(x[0].shape)}, got {list(x[m].shape)}")
    if D <= 0:
        _fail(op, "the model size D (last dimension of x_v) must be positive")
    if heads < 1 or D % heads != 0:
        _fail(op, f"num_heads = {heads} must be >= 1 and divide the model size D = {D}")
    lens = list(lens)
    for m in range(3):
        if x[m].shape[1] < 1:
            _fail(op, f"`{X_NAMES[m]}` has no time steps (T = 0); pass at least one (padded) step with length 0")
        length = lens[m]
        if length.dtype.is_floating_point or length.dtype.is_complex or length.dtype == torch.bool:
            _fail(op, f"`{LEN_NAMES[m]}` must be an integer tensor, got {length.dtype}")
        if length.dim() != 1 or length.shape[0] != B:
            _fail(op, f"`{LEN_NAMES[m]}` must have shape [B] = [{B}], got {list(length.shape)}")
        if length.device != x[0].device:
            _fail(op, f"`{LEN_NAMES[m]}` is on {length.device} but `x_v` is on {x[0].device}")
        lens[m] = length.to(torch.long).contiguous()
        x[m] = x[m].contiguous()
    # Lengths on the host (the interpreter) are checked here; on a GPU the kernels
    # check the ones they read (no host round trip) and clamp all of them.
    if B > 0 and not x[0].is_cuda and not _is_traced(*lens):
        bounds = torch.stack([f(length) for length in lens for f in (torch.min, torch.max)]).tolist()
        for m in range(3):
            lo, hi = bounds[2 * m], bounds[2 * m + 1]
            if lo < 0 or hi > x[m].shape[1]:
                _fail(op, f"`{LEN_NAMES[m]}` values must be in [0, T] = [0, {x[m].shape[1]}] (T = "
                          f"{X_NAMES[m]}.size(1)), got values in [{lo}, {hi}]")
    if not (len(in_w) == len(in_b) == len(out_w) == len(out_b) == 6):
        _fail(op, "in_proj_weight, in_proj_bias, out_proj_weight and out_proj_bias must each list the 6 "
                  f"pathways v2a, v2t, a2v, a2t, t2v, t2a; got {len(in_w)}, {len(in_b)}, {len(out_w)}, "
                  f"{len(out_b)} tensors")

    def param(t, name, shape):
        if tuple(t.shape) != tuple(shape):
            _fail(op, f"`{name}` must have shape {list(shape)}, got {list(t.shape)}")
        if t.dtype != x[0].dtype:
            _fail(op, f"`{name}` has dtype {t.dtype} but `x_v` has dtype {x[0].dtype}")
        if t.device != x[0].device:
            _fail(op, f"`{name}` is on {t.device} but `x_v` is on {x[0].device}")
        return t.contiguous()

    in_w = [param(w, f"attn_{PATHWAY_NAMES[p]}.in_proj_weight", (3 * D, D)) for p, w in enumerate(in_w)]
    in_b = [param(w, f"attn_{PATHWAY_NAMES[p]}.in_proj_bias", (3 * D,)) for p, w in enumerate(in_b)]
    out_w = [param(w, f"attn_{PATHWAY_NAMES[p]}.out_proj.weight", (D, D)) for p, w in enumerate(out_w)]
    out_b = [param(w, f"attn_{PATHWAY_NAMES[p]}.out_proj.bias", (D,)) for p, w in enumerate(out_b)]
    ln_w = param(ln_w, "ln_weight", (D,))
    ln_b = param(ln_b, "ln_bias", (D,))
    if not ln_eps > 0:
        _fail(op, f"ln_eps must be positive, got {ln_eps}")
    if not 0.0 <= attn_p < 1.0:
        _fail(op, f"attn_dropout_p must be in [0, 1), got {attn_p}")
    if not 0.0 <= out_p < 1.0:
        _fail(op, f"dropout_p must be in [0, 1), got {out_p}")
    if len(modes) != 6:
        _fail(op, f"modes must list 6 pathway modes, got {len(modes)}")
    t = [x[m].shape[1] for m in range(3)]
    eff_attn, eff_out = (attn_p, out_p) if training else (0.0, 0.0)
    if rng is not None:
        if rng.numel() != 2 or rng.dtype != torch.long:
            _fail(op, f"`rng` must be an int64 tensor [2] (seed, offset), got {rng.dtype} {list(rng.shape)}")
        if rng.device.type != "cpu" and rng.device != x[0].device:
            _fail(op, f"`rng` is on {rng.device}; pass it on the CPU or on the inputs' device {x[0].device}")
    for p, mode in enumerate(modes):
        if mode not in (GENERAL, KEY_LEN_1, ABSORBED):
            _fail(op, f"modes[{p}] ({PATHWAY_NAMES[p]}) = {mode} is not a pathway mode (0 general, 1 key "
                      "length 1, 2 weight absorption)")
        if mode == KEY_LEN_1 and t[KEY[p]] != 1:
            _fail(op, f"modes[{p}] ({PATHWAY_NAMES[p]}) = 1 (key length 1) needs {X_NAMES[KEY[p]]}.size(1) "
                      f"== 1, got {t[KEY[p]]}")
    plan = Plan(B, D, heads, t, [int(m) for m in modes], eff_attn, eff_out)
    return x, lens, (in_w, in_b, out_w, out_b, ln_w, ln_b), plan


# --------------------------------------------------------------------------- launches
class _Dropout:
    """Launch arguments of one dropout (rng on the device, threshold, 1 / (1 - p))."""

    def __init__(self, p: float, rng_dev: Tensor):
        self.on = p > 0
        self.threshold = dropout_threshold(p) if self.on else 0
        self.inv_keep = 1.0 / (1.0 - p) if self.on else 1.0
        self.rng = rng_dev


def _rng_state(rng: Tensor | None, like: Tensor) -> Tensor:
    """The (seed, offset) of a call's masks on the inputs' device, which the kernels
    read: the given ``rng`` (a CPU one is copied there: fine eagerly, fixed in a
    captured CUDA graph), or else drawn ON the device from its default generator
    (graph-safe: a captured graph draws new values on every replay; no host sync)."""
    if rng is None:
        return torch.randint(0, 2**62, (2,), dtype=torch.long, device=like.device)
    return rng.to(device=like.device, copy=True)  # never an alias of an input (saved is an output)


def _attention_launch(plan: Plan, lens, drop: _Dropout, dtype: torch.dtype):
    """Arguments after the pointers, constexprs and grids of the three attention kernels.

    Grids: (B * H, tiles of the largest problem, problems) for the forward and dQ,
    (B * H, key tiles of the largest unit, units) for dK/dV; programs past their
    problem's tiles do nothing."""
    probs = plan.problems()
    hds = _head_dims(plan)
    kwargs = attention_constexprs(plan, drop.on, dtype)
    bd = kwargs["BLOCK_D"]
    units = _dkv_units(plan)
    unit_t = [plan.t[KEY[u]] if u < 6 else plan.t[u - 6] for u in units]
    unit_hd = [plan.head_dim if u < 6 else plan.d for u in units]
    bh = plan.batch * plan.heads

    def query_grid(meta):
        tiles = max(triton.cdiv(plan.t[QUERY[p]], meta["BLOCK_M"]) * triton.cdiv(hds[p], bd) for p in probs)
        return _grid(bh, tiles, len(probs))

    def key_grid(meta):
        tiles = max(triton.cdiv(t, meta["BLOCK_N"]) * triton.cdiv(hd, bd) for t, hd in zip(unit_t, unit_hd))
        return _grid(bh, tiles, len(units))

    args = [*lens, drop.rng, drop.threshold, drop.inv_keep, 1.0 / math.sqrt(plan.head_dim),
            *plan.t, plan.d, plan.heads, t_key(max(plan.t))]
    return args, kwargs, query_grid, key_grid if units else None


def _grid(bh: int, tiles: int, n: int) -> tuple[int, int, int]:
    """(B * H, tiles, problems or units), within CUDA's grid limits (2^31 - 1, 65535, 65535)."""
    if bh > 2**31 - 1 or tiles > 65535:
        raise RuntimeError(
            f"maven_fast::cross_modal_block_triton: {bh} batch-head pairs and {tiles} tiles per pair exceed "
            "the CUDA grid (at most 2^31 - 1 and 65535); split the batch or shorten the sequences")
    return bh, tiles, n


def _head_dims(plan: Plan) -> list[int]:
    """Head size of each pathway's attention: D for absorbed pathways, D / H otherwise."""
    return [plan.d if plan.mode[p] == ABSORBED else plan.head_dim for p in range(6)]


def _dkv_units(plan: Plan) -> list[int]:
    """dK/dV units: general pathways p (0..5), then key modalities m with absorbed pathways (6 + m)."""
    units = [p for p in plan.problems() if plan.mode[p] == GENERAL]
    return units + [6 + m for m in range(3) if any(plan.mode[p] == ABSORBED and KEY[p] == m for p in range(6))]


def attention_constexprs(plan: Plan, dropout: bool, dtype: torch.dtype, interpret: bool = INTERPRET) -> dict:
    """The compile-time arguments of the three attention kernels for a plan with at
    least one problem and elements of ``dtype``, except BLOCK_M and BLOCK_N (the
    autotuner's). ``dropout``: attention dropout is on; ``interpret``: for Triton's
    interpreter (else a GPU). The launches and the ahead-of-time check
    (maven_fast/triton_aot.py) call this. BLOCK_D: the head size rounded up to a
    power of two, at most :func:`block_d_cap` (column chunks above it)."""
    probs = plan.problems()
    hds = _head_dims(plan)
    cap = block_d_cap(dtype, interpret)
    bd = min(cap, max(16, triton.next_power_of_2(max(hds[p] for p in probs))))
    return dict(plan.kernel_plan(), PROBS=sum(p << (3 * i) for i, p in enumerate(probs)),
                UNITS=sum(u << (4 * i) for i, u in enumerate(_dkv_units(plan))), DROPOUT=dropout,
                PSUM=dropout and any(m == ABSORBED for m in plan.mode), PREC="ieee", BLOCK_D=bd,
                ALIGN=math.gcd(plan.head_dim, 16), EVEN_D=all(hds[p] % bd == 0 for p in probs))


def _per_pathway(ts: Sequence[Tensor | None], dummy: Tensor) -> list[Tensor]:
    """The per-pathway (or per-modality) pointer arguments; absent ones get a dummy."""
    return [dummy if t is None else t for t in ts]


def _combine_blocks(d: int, interpret: bool = INTERPRET) -> tuple[int, int]:
    """(BLOCK_R, BLOCK_D) of the combine kernels for model size d."""
    block_d = triton.next_power_of_2(max(d, 16))
    block_r = 4 if interpret else max(1, min(16, 4096 // block_d))
    return block_r, block_d


def combine_constexprs(plan: Plan, backward: bool, interpret: bool = INTERPRET) -> dict:
    """The compile-time arguments of combine_fwd_kernel (or, ``backward``,
    combine_bwd_kernel) for a plan with batch size >= 1 (the backward's grid has
    3 B programs). The launches and the ahead-of-time check call this."""
    block_r, block_d = _combine_blocks(plan.d, interpret)
    meta = dict(ITEMS=sum(1 << p for p in plan.item_pathways()), ATTN_DROP=plan.attn_p > 0,
                OUT_DROP=plan.out_p > 0, BLOCK_R=block_r, BLOCK_D=block_d)
    if backward:
        meta["BLOCK_P"] = max(1, min(triton.next_power_of_2(3 * plan.batch), 4096 // block_d))
    else:
        meta["ROWS"] = sum(1 << m for m in range(3) if plan.row_pathways(m))
    return meta


# --------------------------------------------------------------------------- forward
def _block_forward(op, x_v, x_a, x_t, len_v, len_a, len_t, in_proj_weight, in_proj_bias, out_proj_weight,
                   out_proj_bias, ln_weight, ln_bias, ln_eps, num_heads, modes, attn_dropout_p, dropout_p,
                   training, rng):
    xs, lens, prm, P = _check_and_plan(
        op, (x_v, x_a, x_t), (len_v, len_a, len_t), in_proj_weight, in_proj_bias, out_proj_weight,
        out_proj_bias, ln_weight, ln_bias, ln_eps, num_heads, modes, attn_dropout_p, dropout_p, training, rng)
    in_w, in_b, out_w, out_b, ln_w, ln_b = prm
    B, D, H, hd, T = P.batch, P.d, P.heads, P.head_dim, P.t
    x0 = xs[0]
    acc = torch.float32
    dummy = x0.new_empty((1,))
    dummy32 = x0.new_empty((1,), dtype=acc)
    dropout = P.attn_p > 0 or P.out_p > 0
    rng_dev = _rng_state(rng, x0) if dropout else lens[0]  # (not read without dropout)
    attn_drop, out_drop = _Dropout(P.attn_p, rng_dev), _Dropout(P.out_p, rng_dev)
    saved: list[Tensor | None] = [None] * N_SAVED
    saved[S_RNG] = rng_dev if dropout else None

    # 1. Grouped input projections.
    xf = [xs[m].view(B * T[m], D) for m in range(3)]
    Y = []
    for m in range(3):
        Ym = x0.new_empty((B * T[m], P.n_in[m] * D))
        for s, (p, part) in enumerate(P.slots(m)):
            torch.addmm(in_b[p][part * D:(part + 1) * D], xf[m], in_w[p][part * D:(part + 1) * D].t(),
                        out=Ym[:, s * D:(s + 1) * D])
        Y.append(Ym)
        if P.n_in[m]:
            saved[S_Y + m] = Ym

    # 2. Attention of every general and absorbed pathway, one launch.
    O = [x0.new_empty((B * T[m], P.n_out[m] * D)) for m in range(3)]
    lse, qt, z, psum = ([None] * 6 for _ in range(4))
    q_src, kv_src, o_dst = ([None] * 6 for _ in range(3))
    for p in P.problems():
        x, y = QUERY[p], KEY[p]
        lse[p] = x0.new_empty((B, H, T[x]), dtype=acc)
        if P.mode[p] == GENERAL:
            q_src[p], kv_src[p], o_dst[p] = Y[x], Y[y], O[x]
        else:  # absorbed: qt_h = Q_h W_k,h (the kernel scales by 1 / sqrt(d_h)); K = V = x_y shared by the heads
            qt[p] = x0.new_empty((B * T[x], H * D))
            for h in range(H):
                out = qt[p][:, h * D:(h + 1) * D]
                qh = Y[x][:, P.q_slot[p] * D + h * hd:P.q_slot[p] * D + (h + 1) * hd]
                torch.mm(qh, in_w[p][D + h * hd:D + (h + 1) * hd], out=out)
            z[p] = x0.new_empty((B * T[x], H * D))
            if P.attn_p > 0:
                psum[p] = x0.new_empty((B, H, T[x]), dtype=acc)
            q_src[p], kv_src[p], o_dst[p] = qt[p], xf[y], z[p]
        saved[S_LSE + p] = lse[p]
        if P.mode[p] == ABSORBED:
            saved[S_QT + p], saved[S_Z + p], saved[S_PSUM + p] = qt[p], z[p], psum[p]
    if P.problems() and B > 0:
        args, kwargs, query_grid, _ = _attention_launch(P, lens, attn_drop, x0.dtype)
        wrap_triton(attention_fwd_kernel)[query_grid](
            *_per_pathway(q_src, dummy), *_per_pathway(kv_src, dummy), *_per_pathway(o_dst, dummy),
            *_per_pathway(lse, dummy32), *_per_pathway(psum, dummy32), *args, **kwargs)

    # Absorbed pathways: O_h = z_h W_v,h^T + coef b_v,h.
    for p in range(6):
        if P.mode[p] != ABSORBED:
            continue
        x, y = QUERY[p], KEY[p]
        for h in range(H):
            col = P.o_slot[p] * D + h * hd
            out = O[x][:, col:col + hd]
            torch.mm(z[p][:, h * D:(h + 1) * D], in_w[p][2 * D + h * hd:2 * D + (h + 1) * hd].t(), out=out)
            out.addmm_(_bias_coef(P, psum[p], lens[y], T[x], h, x0.dtype),
                       in_b[p][2 * D + h * hd:2 * D + (h + 1) * hd].view(1, hd))

    # 3. Grouped output projections of the row pathways, and key-length-1 items.
    rows: list[Tensor | None] = [None] * 3
    for m in range(3):
        ps = P.row_pathways(m)
        if not ps:
            continue
        bsum = out_b[ps[0]] if len(ps) == 1 else out_b[ps[0]] + out_b[ps[1]]
        for p in ps:
            o = O[m][:, P.o_slot[p] * D:(P.o_slot[p] + 1) * D]
            rows[m] = torch.addmm(bsum, o, out_w[p].t()) if rows[m] is None else rows[m].addmm_(o, out_w[p].t())
        saved[S_O + m] = O[m]
    items: list[Tensor | None] = [None] * 6
    item_heads = H if P.attn_p > 0 else 1
    for p in P.item_pathways():
        v = Y[KEY[p]][:, P.v_slot[p] * D:(P.v_slot[p] + 1) * D]  # [B, D]
        if item_heads > 1:
            c = x0.new_empty((B, H, D))
            for h in range(H):
                torch.mm(v[:, h * hd:(h + 1) * hd], out_w[p][:, h * hd:(h + 1) * hd].t(), out=c[:, h])
        else:
            c = torch.mm(v, out_w[p].t())
        items[p] = c

    # 4. Residual + /3 + dropout + LayerNorm of the three modalities, one launch.
    u = [x0.new_empty((B, T[m], D)) for m in range(3)]
    stats = [x0.new_empty((B * T[m], 2), dtype=acc) for m in range(3)]
    y_out = [x0.new_empty((B, T[m], D)) for m in range(3)]
    item_len = [lens[KEY[p]] for p in range(6)]
    if B > 0:
        meta = combine_constexprs(P, backward=False)
        n_tiles = sum(triton.cdiv(B * T[m], meta["BLOCK_R"]) for m in range(3))
        wrap_triton(combine_fwd_kernel)[(n_tiles,)](
            *xs, *_per_pathway(rows, dummy), *u, *stats, *y_out,
            *_per_pathway(items, dummy), *out_b, *item_len, ln_w, ln_b, rng_dev,
            attn_drop.threshold, attn_drop.inv_keep, out_drop.threshold, out_drop.inv_keep, float(ln_eps),
            B, *T, D, item_heads, **meta,
        )
    for m in range(3):
        saved[S_U + m], saved[S_STATS + m] = u[m], stats[m]
    present = P.saved_present()
    compact = [t for t, on in zip(saved, present) if on]
    assert all(t is not None for t in compact)
    return y_out[0], y_out[1], y_out[2], compact


def _bias_coef(P: Plan, psum: Tensor | None, key_len: Tensor, tx: int, h: int, dtype) -> Tensor:
    """Coefficient of b_v in an absorbed pathway's rows: psum of head h (attention
    dropout), else 1 where the item has keys and 0 where it has none."""
    if psum is not None:
        return psum[:, h].reshape(-1, 1).to(dtype)
    return (key_len > 0).to(dtype).view(P.batch, 1).expand(P.batch, tx).reshape(-1, 1)


# --------------------------------------------------------------------------- backward
def _block_backward(op, grad_v, grad_a, grad_t, x_v, x_a, x_t, len_v, len_a, len_t, in_proj_weight,
                    in_proj_bias, out_proj_weight, out_proj_bias, ln_weight, ln_bias, ln_eps, num_heads, modes,
                    attn_dropout_p, dropout_p, training, saved_list):
    xs, lens, prm, P = _check_and_plan(
        op, (x_v, x_a, x_t), (len_v, len_a, len_t), in_proj_weight, in_proj_bias, out_proj_weight,
        out_proj_bias, ln_weight, ln_bias, ln_eps, num_heads, modes, attn_dropout_p, dropout_p, training, None)
    in_w, in_b, out_w, out_b, ln_w, ln_b = prm
    B, D, H, hd, T = P.batch, P.d, P.heads, P.head_dim, P.t
    x0 = xs[0]
    dt, acc = x0.dtype, torch.float32
    present = P.saved_present()
    if len(saved_list) != sum(present):
        _fail(op, f"`saved` must be the list returned by maven_fast::cross_modal_block_triton for the same "
                  f"arguments ({sum(present)} tensors), got {len(saved_list)}")
    saved: list[Tensor | None] = [None] * N_SAVED
    it = iter(saved_list)
    for i in range(N_SAVED):
        if present[i]:
            saved[i] = next(it)
    grads = []
    for m, g in enumerate((grad_v, grad_a, grad_t)):
        if tuple(g.shape) != tuple(xs[m].shape):
            _fail(op, f"the gradient of the {MODALITY_NAMES[m]} output must have shape {list(xs[m].shape)}, "
                      f"got {list(g.shape)}")
        grads.append(g.to(dt).contiguous())
    dummy = x0.new_empty((1,))
    dummy32 = x0.new_empty((1,), dtype=acc)
    rng_dev = saved[S_RNG]
    if rng_dev is not None and (rng_dev.dtype != torch.long or rng_dev.numel() != 2 or rng_dev.device != x0.device):
        _fail(op, "the last `saved` entry must be the forward's int64 [2] rng state on the inputs' device, got "
                  f"{rng_dev.dtype} {list(rng_dev.shape)} on {rng_dev.device}")
    if rng_dev is None:
        rng_dev = lens[0]  # not read without dropout
    attn_drop, out_drop = _Dropout(P.attn_p, rng_dev), _Dropout(P.out_p, rng_dev)
    xf = [xs[m].view(B * T[m], D) for m in range(3)]
    Y = [saved[S_Y + m] if saved[S_Y + m] is not None else x0.new_empty((B * T[m], 0)) for m in range(3)]
    g_in_w = [x0.new_empty((3 * D, D)) for _ in range(6)]
    g_in_b = [x0.new_empty((3 * D,)) for _ in range(6)]
    g_out_w = [x0.new_empty((D, D)) for _ in range(6)]

    # 1. Combine backward: gradient of the pre-/3 sum, of the item terms, of LN.
    item_heads = H if P.attn_p > 0 else 1
    gsum = [x0.new_empty((B * T[m], D)) for m in range(3)]
    g_bias_rows = [x0.new_zeros((D,), dtype=acc) for _ in range(3)]
    g_ln_w = x0.new_zeros((D,), dtype=acc)
    g_ln_b = x0.new_zeros((D,), dtype=acc)
    g_items: list[Tensor | None] = [None] * 6
    for p in P.item_pathways():
        g_items[p] = x0.new_empty((B, item_heads, D))
    if B > 0:
        n_prog = 3 * B
        partial = x0.new_empty((n_prog * 3 * D,), dtype=acc)
        counter = x0.new_zeros((1,), dtype=torch.int32)
        wrap_triton(combine_bwd_kernel)[(n_prog,)](
            *[saved[S_U + m] for m in range(3)], *[saved[S_STATS + m] for m in range(3)], *grads, *gsum,
            *_per_pathway(g_items, dummy), *[lens[KEY[p]] for p in range(6)],
            ln_w, rng_dev, partial, counter, g_ln_w, g_ln_b, *g_bias_rows,
            attn_drop.threshold, attn_drop.inv_keep, out_drop.threshold, out_drop.inv_keep,
            B, *T, D, item_heads, **combine_constexprs(P, backward=True),
        )
    g_out_b = [g_bias_rows[QUERY[p]].to(dt, copy=True) for p in range(6)]

    # Gradients of the input projections' outputs; every slot is written below.
    dY = [torch.empty_like(Y[m]) for m in range(3)]

    # 2. Key-length-1 pathways: c_h = V_h W_o,h^T per item.
    for p in P.item_pathways():
        ky = KEY[p]
        v = Y[ky][:, P.v_slot[p] * D:(P.v_slot[p] + 1) * D]
        dv = dY[ky][:, P.v_slot[p] * D:(P.v_slot[p] + 1) * D]
        gc = g_items[p]
        if item_heads == 1:
            torch.mm(gc[:, 0], out_w[p], out=dv)
            torch.mm(gc[:, 0].t(), v, out=g_out_w[p])
        else:
            for h in range(H):
                torch.mm(gc[:, h], out_w[p][:, h * hd:(h + 1) * hd], out=dv[:, h * hd:(h + 1) * hd])
                torch.mm(gc[:, h].t(), v[:, h * hd:(h + 1) * hd], out=g_out_w[p][:, h * hd:(h + 1) * hd])

    # 3. Grouped output projections of the row pathways: dO_m = dsum_m [W_o,p1 | W_o,p2].
    dO: list[Tensor | None] = [None] * 3
    for m in range(3):
        if P.n_out[m] == 0:
            continue
        dO[m] = x0.new_empty((B * T[m], P.n_out[m] * D))
        for p in P.row_pathways(m):
            cols = slice(P.o_slot[p] * D, (P.o_slot[p] + 1) * D)
            torch.mm(gsum[m], out_w[p], out=dO[m][:, cols])
            torch.mm(gsum[m].t(), saved[S_O + m][:, cols], out=g_out_w[p])

    # 4. Absorbed pathways, before the attention backward: dz_h = dO_h W_v,h,
    #    dW_v,h = dO_h^T z_h, db_v,h = coef^T dO_h, dpsum_h = dO_h b_v,h.
    dz, dqt, dpsum = ([None] * 6 for _ in range(3))
    for p in range(6):
        if P.mode[p] != ABSORBED:
            continue
        x, y = QUERY[p], KEY[p]
        z, psum = saved[S_Z + p], saved[S_PSUM + p]
        dz[p] = x0.new_empty((B * T[x], H * D))
        if psum is not None:
            dpsum[p] = x0.new_empty((B, H, T[x]), dtype=acc)
        for h in range(H):
            rows_v = slice(2 * D + h * hd, 2 * D + (h + 1) * hd)
            doh = dO[x][:, P.o_slot[p] * D + h * hd:P.o_slot[p] * D + (h + 1) * hd]
            torch.mm(doh, in_w[p][rows_v], out=dz[p][:, h * D:(h + 1) * D])
            torch.mm(doh.t(), z[:, h * D:(h + 1) * D], out=g_in_w[p][rows_v])
            coef = _bias_coef(P, psum, lens[y], T[x], h, dt)
            g_in_b[p][rows_v].copy_(torch.mm(coef.t(), doh).view(hd))
            if psum is not None:
                dpsum[p][:, h].copy_(torch.mv(doh, in_b[p][rows_v]).view(B, T[x]))
        g_in_b[p][D:2 * D].zero_()  # softmax is invariant to the per-row constant q . b_k
        dqt[p] = x0.new_empty((B * T[x], H * D))

    # 5. Attention backward of every general and absorbed pathway: dQ, then dK/dV.
    if P.problems() and B > 0:
        q_src, kv_src, o_src, do_src, dq_dst, dkv_dst = ([None] * 6 for _ in range(6))
        for p in P.problems():
            x, y = QUERY[p], KEY[p]
            if P.mode[p] == GENERAL:
                q_src[p], kv_src[p], o_src[p], do_src[p] = Y[x], Y[y], saved[S_O + x], dO[x]
                dq_dst[p], dkv_dst[p] = dY[x], dY[y]
            else:
                q_src[p], kv_src[p], o_src[p], do_src[p] = saved[S_QT + p], xf[y], saved[S_Z + p], dz[p]
                dq_dst[p] = dqt[p]
        lse = [saved[S_LSE + p] for p in range(6)]
        psum = [saved[S_PSUM + p] for p in range(6)]
        common = [*_per_pathway(q_src, dummy), *_per_pathway(kv_src, dummy), *_per_pathway(o_src, dummy),
                  *_per_pathway(do_src, dummy), *_per_pathway(lse, dummy32), *_per_pathway(psum, dummy32),
                  *_per_pathway(dpsum, dummy32)]
        args, kwargs, query_grid, key_grid = _attention_launch(P, lens, attn_drop, x0.dtype)
        wrap_triton(attention_bwd_dq_kernel)[query_grid](*common, *_per_pathway(dq_dst, dummy), *args, **kwargs)
        # dx_y of a key modality with absorbed pathways: gsum_y + dK + dV, into a new buffer.
        g_new: list[Tensor | None] = [None] * 3
        for m in range(3):
            if any(P.mode[p] == ABSORBED and KEY[p] == m for p in range(6)):
                g_new[m] = torch.empty_like(gsum[m])
        wrap_triton(attention_bwd_dkv_kernel)[key_grid](
            *common, *_per_pathway(dkv_dst, dummy), *gsum, *_per_pathway(g_new, dummy), *args, **kwargs)
        gsum = [g_new[m] if g_new[m] is not None else gsum[m] for m in range(3)]

    # 6. Absorbed pathways, after: dQ_h = dqt_h W_k,h^T, dW_k,h = Q_h^T dqt_h (dqt has the scale).
    for p in range(6):
        if P.mode[p] != ABSORBED:
            continue
        x = QUERY[p]
        for h in range(H):
            dqth = dqt[p][:, h * D:(h + 1) * D]
            qcols = slice(P.q_slot[p] * D + h * hd, P.q_slot[p] * D + (h + 1) * hd)
            dq = dY[x][:, qcols]
            torch.mm(dqth, in_w[p][D + h * hd:D + (h + 1) * hd].t(), out=dq)
            gwk = g_in_w[p][D + h * hd:D + (h + 1) * hd]
            torch.mm(Y[x][:, qcols].t(), dqth, out=gwk)

    # 7. Grouped input projections: dx_m = dsum_m + sum_slots dY_m,s W_s; weight gradients per slot.
    dx = []
    for m in range(3):
        slots = P.slots(m)
        if slots:
            db = dY[m].sum(0)
            for s, (p, part) in enumerate(slots):
                dys = dY[m][:, s * D:(s + 1) * D]
                gsum[m].addmm_(dys, in_w[p][part * D:(part + 1) * D])
                torch.mm(dys.t(), xf[m], out=g_in_w[p][part * D:(part + 1) * D])
                g_in_b[p][part * D:(part + 1) * D].copy_(db[s * D:(s + 1) * D])
        dx.append(gsum[m].view(B, T[m], D))
    # Parts of in_proj no path reads get zero gradients: Q and K of key-length-1 pathways.
    for p in P.item_pathways():
        g_in_w[p][:2 * D].zero_()
        g_in_b[p][:2 * D].zero_()
    return [*dx, *g_in_w, *g_in_b, *g_out_w, *g_out_b, g_ln_w.to(dt), g_ln_b.to(dt)]


# --------------------------------------------------------------------------- ops
# The schemas are inferred from the annotations (torch < 2.14 ignores triton_op's
# `schema=`): (Tensor x_v, ..., Tensor[] in_proj_weight, ..., float ln_eps, SymInt
# num_heads, SymInt[] modes, float attn_dropout_p, float dropout_p, bool training,
# Tensor? rng) -> (Tensor, Tensor, Tensor, Tensor[]); the backward adds the three
# gradients in front, drops `rng` (the forward saved it) and takes `Tensor[] saved`
# at the end; it returns Tensor[].
@triton_op("maven_fast::cross_modal_block_triton", mutates_args=())
def cross_modal_block_triton(
    x_v: Tensor, x_a: Tensor, x_t: Tensor, len_v: Tensor, len_a: Tensor, len_t: Tensor,
    in_proj_weight: list[Tensor], in_proj_bias: list[Tensor], out_proj_weight: list[Tensor],
    out_proj_bias: list[Tensor], ln_weight: Tensor, ln_bias: Tensor, ln_eps: float, num_heads: int,
    modes: list[int], attn_dropout_p: float, dropout_p: float, training: bool, rng: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
    with torch.autocast(x_v.device.type, enabled=False), on_inputs_device(x_v):
        return _block_forward("maven_fast::cross_modal_block_triton", x_v, x_a, x_t, len_v, len_a, len_t,
                              in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, ln_weight, ln_bias,
                              ln_eps, num_heads, modes, attn_dropout_p, dropout_p, training, rng)


@triton_op("maven_fast::cross_modal_block_triton_backward", mutates_args=())
def cross_modal_block_triton_backward(
    grad_v: Tensor, grad_a: Tensor, grad_t: Tensor, x_v: Tensor, x_a: Tensor, x_t: Tensor, len_v: Tensor,
    len_a: Tensor, len_t: Tensor, in_proj_weight: list[Tensor], in_proj_bias: list[Tensor],
    out_proj_weight: list[Tensor], out_proj_bias: list[Tensor], ln_weight: Tensor, ln_bias: Tensor,
    ln_eps: float, num_heads: int, modes: list[int], attn_dropout_p: float, dropout_p: float, training: bool,
    saved: list[Tensor],
) -> list[Tensor]:
    with torch.autocast(x_v.device.type, enabled=False), on_inputs_device(x_v):
        return _block_backward("maven_fast::cross_modal_block_triton_backward", grad_v, grad_a, grad_t, x_v, x_a,
                               x_t, len_v, len_a, len_t, in_proj_weight, in_proj_bias, out_proj_weight,
                               out_proj_bias, ln_weight, ln_bias, ln_eps, num_heads, modes, attn_dropout_p,
                               dropout_p, training, saved)


_registered = False


def ensure_registered(fake_forward, fake_backward, setup_context, make_backward):
    """Register the fake kernels and the autograd formula of the Triton ops (once);
    returns the forward op."""
    global _registered
    if not _registered:
        cross_modal_block_triton.register_fake(fake_forward)
        cross_modal_block_triton_backward.register_fake(fake_backward)
        cross_modal_block_triton.register_autograd(
            make_backward(cross_modal_block_triton_backward), setup_context=setup_context
        )
        _registered = True
    return cross_modal_block_triton
