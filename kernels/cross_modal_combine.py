r"""Triton combination of the cross-modal block: residual + /3 + output dropout +
LayerNorm of all three modalities in ONE launch, and its backward in ONE launch.

Row r (item b, step i) of modality m:

    sum_r = x_r + rows_r + sum_items [ bias_p + (len_b > 0) sum_h k_rh c_bh ]
    u_r   = (sum_r / 3) z_r / (1 - p_out)                  z: Philox keep flags (stream 6 + m)
    y_r   = (u_r - mean(u_r)) rstd_r gamma + beta,  rstd_r = 1 / sqrt(var(u_r) + eps)

rows_r: the out_proj output of the row pathways (general, absorbed) where m
queries; items: its key-length-1 pathways p (c [B, heads, D], heads = H under
attention dropout, else 1 with the heads summed; k_rh = the attention keep flag
of key column 0, stream 16 h + p, scaled by 1 / (1 - p_attn); 1 without
attention dropout). Backward, g_r = dL/dy_r, xhat = (u - mean) rstd:

    dgamma = sum_r g_r xhat_r,   dbeta = sum_r g_r
    du_r   = rstd_r (g_r gamma - mean(g_r gamma) - xhat_r mean(g_r gamma xhat_r))
    dsum_r = du_r z_r / (3 (1 - p_out))          (= dL/dx_r = dL/drows_r)
    dc_bh  = (len_b > 0) sum_{r in b} k_rh dsum_r,   dbias_rows_m = sum_{r in m} dsum_r

Forward grid: row tiles [BLOCK_R, BLOCK_D] of the three modalities, flattened.
Backward grid: one program per (modality, item), looping over the item's rows
(it owns that item's dc). dgamma, dbeta and dbias_rows are deterministic:
every program stores its partial sums, takes a ticket (atomic add), and the
program that takes the last ticket sums the partials in a fixed order, writes
the results and resets the ticket counter.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .cross_modal_dropout import keep_block, keep_column0, load_rng
from .device_checks import check_item_lengths
from .launch_config import launch_config


@triton.jit
def _pick3(i, a0, a1, a2):
    return tl.where(i == 0, a0, tl.where(i == 1, a1, a2))


@triton.jit
def _pick6(i, a0, a1, a2, a3, a4, a5):
    return tl.where(i < 3, _pick3(i, a0, a1, a2), _pick3(i - 3, a3, a4, a5))


@triton.autotune(configs=[launch_config({})], key=[])  # one config: the launch options
@triton.jit(do_not_specialize=["attn_threshold", "out_threshold"])
def combine_fwd_kernel(
    x0, x1, x2, rows0, rows1, rows2, u0, u1, u2, st0, st1, st2, y0, y1, y2,
    c0, c1, c2, c3, c4, c5, ob0, ob1, ob2, ob3, ob4, ob5,
    il0, il1, il2, il3, il4, il5,
    ln_w, ln_b, rng_ptr,
    attn_threshold, attn_inv_keep, out_threshold, out_inv_keep, eps,
    B, T0, T1, T2, D, item_heads,
    ITEMS: tl.constexpr, ROWS: tl.constexpr, ATTN_DROP: tl.constexpr, OUT_DROP: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """u, stats (mean, rstd) and y of one tile of BLOCK_R rows of one modality."""
    pid = tl.program_id(0)
    n0 = (B * T0 + BLOCK_R - 1) // BLOCK_R
    n1 = (B * T1 + BLOCK_R - 1) // BLOCK_R
    m = tl.where(pid < n0, 0, tl.where(pid < n0 + n1, 1, 2))
    t = _pick3(m, T0, T1, T2).to(tl.int64)
    r = (pid - _pick3(m, 0, n0, n0 + n1)).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    r_ok = r < B * t
    b = r // t
    i = r % t
    cols = tl.arange(0, BLOCK_D)
    c_ok = cols < D
    mask = r_ok[:, None] & c_ok[None, :]
    at = r[:, None] * D + cols[None, :]
    s = tl.load(_pick3(m, x0, x1, x2) + at, mask=mask, other=0.0).to(tl.float32)
    s += tl.load(_pick3(m, rows0, rows1, rows2) + at, mask=mask & (((ROWS >> m) & 1) == 1),
                 other=0.0).to(tl.float32)
    if ATTN_DROP:
        k0, k1, offset = load_rng(rng_ptr)
    for k in tl.static_range(2):
        p = 2 * m + k
        is_item = ((ITEMS >> p) & 1) == 1
        s += tl.load(_pick6(p, ob0, ob1, ob2, ob3, ob4, ob5) + cols, mask=c_ok & is_item,
                     other=0.0).to(tl.float32)[None, :]
        ilen = tl.load(_pick6(p, il0, il1, il2, il3, il4, il5) + b, mask=r_ok & is_item, other=0)
        check_item_lengths(ilen, r_ok & is_item)
        has = r_ok & is_item & (ilen > 0)
        c_ptr = _pick6(p, c0, c1, c2, c3, c4, c5)
        for hh in range(0, item_heads):
            coef = has.to(tl.float32)
            if ATTN_DROP:
                keep = keep_column0(k0, k1, offset, 16 * hh + p, b, i, attn_threshold)
                coef = tl.where(keep, coef * attn_inv_keep, 0.0)
            c = tl.load(c_ptr + (b * item_heads + hh)[:, None] * D + cols[None, :],
                        mask=has[:, None] & c_ok[None, :], other=0.0).to(tl.float32)
            s += coef[:, None] * c
    if OUT_DROP:
        ko0, ko1, offset_o = load_rng(rng_ptr)
        keep = keep_block(ko0, ko1, offset_o, 6 + m, b[:, None], i, 0, out_threshold, BLOCK_R, BLOCK_D)
        s = tl.where(keep, s * ((1.0 / 3.0) * out_inv_keep), 0.0)
    else:
        s = s * (1.0 / 3.0)
    s = tl.where(mask, s, 0.0)
    mean = tl.sum(s, axis=1) / D
    diff = tl.where(mask, s - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(diff * diff, axis=1) / D + eps)
    tl.store(_pick3(m, u0, u1, u2) + at, s.to(u0.dtype.element_ty), mask=mask)
    st = _pick3(m, st0, st1, st2)
    tl.store(st + 2 * r, mean, mask=r_ok)
    tl.store(st + 2 * r + 1, rstd, mask=r_ok)
    gamma = tl.load(ln_w + cols, mask=c_ok, other=0.0).to(tl.float32)
    beta = tl.load(ln_b + cols, mask=c_ok, other=0.0).to(tl.float32)
    out = diff * rstd[:, None] * gamma[None, :] + beta[None, :]
    tl.store(_pick3(m, y0, y1, y2) + at, out.to(y0.dtype.element_ty), mask=mask)


@triton.jit
def _grad_rows(u_ptr, st_ptr, gy_ptr, gamma, b, i0, t, m, D, k0, k1, offset, out_threshold, out_inv_keep,
               OUT_DROP: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    """g, xhat and dsum of rows i0 .. i0 + BLOCK_R of item b (zero outside the rows/columns)."""
    i = i0 + tl.arange(0, BLOCK_R)
    r = b * t + i
    r_ok = i < t
    cols = tl.arange(0, BLOCK_D)
    mask = r_ok[:, None] & (cols < D)[None, :]
    at = r[:, None] * D + cols[None, :]
    g = tl.load(gy_ptr + at, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + at, mask=mask, other=0.0).to(tl.float32)
    mean = tl.load(st_ptr + 2 * r, mask=r_ok, other=0.0)
    rstd = tl.load(st_ptr + 2 * r + 1, mask=r_ok, other=0.0)
    xhat = tl.where(mask, (u - mean[:, None]) * rstd[:, None], 0.0)
    dx = g * gamma[None, :]
    mean_dx = tl.sum(dx, axis=1) / D
    mean_dx_xhat = tl.sum(dx * xhat, axis=1) / D
    du = (rstd * (1.0 / 3.0))[:, None] * (dx - mean_dx[:, None] - xhat * mean_dx_xhat[:, None])
    if OUT_DROP:
        keep = keep_block(k0, k1, offset, 6 + m, b, i, 0, out_threshold, BLOCK_R, BLOCK_D)
        du = tl.where(keep, du * out_inv_keep, 0.0)
    return g, xhat, tl.where(mask, du, 0.0), at, mask, i


@triton.autotune(configs=[launch_config({})], key=[])  # one config: the launch options
@triton.jit(do_not_specialize=["attn_threshold", "out_threshold"])
def combine_bwd_kernel(
    u0, u1, u2, st0, st1, st2, gy0, gy1, gy2, gs0, gs1, gs2,
    gc0, gc1, gc2, gc3, gc4, gc5, il0, il1, il2, il3, il4, il5,
    ln_w, rng_ptr, partial_ptr, counter_ptr, g_ln_w, g_ln_b, gbr0, gbr1, gbr2,
    attn_threshold, attn_inv_keep, out_threshold, out_inv_keep,
    B, T0, T1, T2, D, item_heads,
    ITEMS: tl.constexpr, ATTN_DROP: tl.constexpr, OUT_DROP: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """dsum (and dc) of one (modality, item); the last program reduces dgamma, dbeta, dbias_rows."""
    pid = tl.program_id(0)
    m = pid // B
    b = (pid % B).to(tl.int64)
    t = _pick3(m, T0, T1, T2).to(tl.int64)
    u_ptr = _pick3(m, u0, u1, u2)
    st_ptr = _pick3(m, st0, st1, st2)
    gy_ptr = _pick3(m, gy0, gy1, gy2)
    gs_ptr = _pick3(m, gs0, gs1, gs2)
    cols = tl.arange(0, BLOCK_D)
    c_ok = cols < D
    gamma = tl.load(ln_w + cols, mask=c_ok, other=0.0).to(tl.float32)
    k0 = tl.full([], 0, tl.uint32)
    k1 = k0
    offset = k0
    if OUT_DROP:
        k0, k1, offset = load_rng(rng_ptr)
    acc_g = tl.full([BLOCK_D], 0.0, tl.float32)
    acc_b = tl.full([BLOCK_D], 0.0, tl.float32)
    acc_d = tl.full([BLOCK_D], 0.0, tl.float32)
    for i0 in range(0, t, BLOCK_R):
        g, xhat, du, at, mask, i = _grad_rows(u_ptr, st_ptr, gy_ptr, gamma, b, i0, t, m, D, k0, k1, offset,
                                              out_threshold, out_inv_keep, OUT_DROP, BLOCK_R, BLOCK_D)
        acc_g += tl.sum(g * xhat, axis=0)
        acc_b += tl.sum(g, axis=0)
        acc_d += tl.sum(du, axis=0)
        tl.store(gs_ptr + at, du.to(gs0.dtype.element_ty), mask=mask)

    # Item terms: dc_bh = (len_b > 0) sum_r k_rh dsum_r (dsum recomputed, in fp32).
    if ATTN_DROP:
        ka0, ka1, offset_a = load_rng(rng_ptr)
    for k in tl.static_range(2):
        p = 2 * m + k
        is_item = ((ITEMS >> p) & 1) == 1
        has = is_item & (tl.load(_pick6(p, il0, il1, il2, il3, il4, il5) + b, mask=is_item, other=0) > 0)
        gc_ptr = _pick6(p, gc0, gc1, gc2, gc3, gc4, gc5)
        for hh in range(0, tl.where(is_item, item_heads, 0)):
            dc = tl.full([BLOCK_D], 0.0, tl.float32)
            for i0 in range(0, tl.where(has, t, 0), BLOCK_R):
                g, xhat, du, at, mask, i = _grad_rows(u_ptr, st_ptr, gy_ptr, gamma, b, i0, t, m, D, k0, k1,
                                                      offset, out_threshold, out_inv_keep, OUT_DROP,
                                                      BLOCK_R, BLOCK_D)
                if ATTN_DROP:
                    keep = keep_column0(ka0, ka1, offset_a, 16 * hh + p, b, i, attn_threshold)
                    du = tl.where(keep[:, None], du * attn_inv_keep, 0.0)
                dc += tl.sum(du, axis=0)
            tl.store(gc_ptr + (b * item_heads + hh) * D + cols, dc.to(gc0.dtype.element_ty), mask=c_ok)

    # Deterministic reduction of dgamma, dbeta, dbias_rows over the 3 B programs.
    n = 3 * B
    base = partial_ptr + pid * 3 * D
    tl.store(base + cols, acc_g, mask=c_ok)
    tl.store(base + D + cols, acc_b, mask=c_ok)
    tl.store(base + 2 * D + cols, acc_d, mask=c_ok)
    tl.debug_barrier()
    ticket = tl.atomic_add(counter_ptr, 1, sem="acq_rel")
    if ticket == n - 1:
        tot_g = tl.full([BLOCK_D], 0.0, tl.float32)
        tot_b = tl.full([BLOCK_D], 0.0, tl.float32)
        for mm in tl.static_range(3):
            tot_d = tl.full([BLOCK_D], 0.0, tl.float32)
            for p0 in range(mm * B, (mm + 1) * B, BLOCK_P):
                prog = p0 + tl.arange(0, BLOCK_P)
                pm = (prog < (mm + 1) * B)[:, None] & c_ok[None, :]
                at = prog[:, None] * 3 * D + cols[None, :]
                tot_g += tl.sum(tl.load(partial_ptr + at, mask=pm, other=0.0, cache_modifier=".cg"), axis=0)
                tot_b += tl.sum(tl.load(partial_ptr + D + at, mask=pm, other=0.0, cache_modifier=".cg"), axis=0)
                tot_d += tl.sum(tl.load(partial_ptr + 2 * D + at, mask=pm, other=0.0, cache_modifier=".cg"),
                                axis=0)
            tl.store(_pick3(mm, gbr0, gbr1, gbr2) + cols, tot_d, mask=c_ok)
        tl.store(g_ln_w + cols, tot_g, mask=c_ok)
        tl.store(g_ln_b + cols, tot_b, mask=c_ok)
        tl.atomic_xchg(counter_ptr, 0)
