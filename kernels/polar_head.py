r"""Triton polar head: one launch forward, one launch backward.

Per row n:  r = x_n W^T + b;  theta = pi tanh(r0), I = sqrt(2) sigmoid(r1)
(bounded) or theta = r0, I = r1 (unbounded);  v = I cos theta, a = I sin theta;
optional masked MSE  L = sum_n m_n |va_n - target_n|^2 / (2 sum_n m_n).
Backward: see csrc/polar_head/polar_head_math.h (same formulas).

Each program walks row tiles [BLOCK_N, BLOCK_D] in a grid-stride loop. The
reductions (loss; dW, db) are deterministic: every program stores a partial,
takes a ticket with an atomic add, and the program that finishes last sums the
partials in program order and resets the ticket counter.

Registered as ``torch.ops.maven_fast.polar_head_triton`` (+ ``_backward``) with
``torch.library.triton_op``, so torch.compile sees through it on GPU.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from ._torch_compat import wrap_triton

from .launch_config import launch_config
from .launch_device import on_inputs_device

PI = math.pi
SQRT2 = math.sqrt(2.0)
MAX_D = 4096


@triton.jit
def _tanh(x):
    # 1 - 2 / (exp(2x) + 1): saturates to +-1 without inf/inf.
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _row_tile(x_ptr, ldx, w_ptr, b_ptr, rows, cols, n, d, BOUNDED: tl.constexpr):
    """Loads a row tile and returns x, the raw outputs and the polar quantities (fp32)."""
    row_ok = rows < n
    col_ok = cols < d
    x = tl.load(x_ptr + rows[:, None] * ldx + cols[None, :],
                mask=row_ok[:, None] & col_ok[None, :], other=0.0).to(tl.float32)
    w0 = tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    w1 = tl.load(w_ptr + d + cols, mask=col_ok, other=0.0).to(tl.float32)
    r0 = tl.sum(x * w0[None, :], axis=1) + tl.load(b_ptr).to(tl.float32)
    r1 = tl.sum(x * w1[None, :], axis=1) + tl.load(b_ptr + 1).to(tl.float32)
    if BOUNDED:
        theta = 3.141592653589793 * _tanh(r0)
        inten = 1.4142135623730951 * _sigmoid(r1)
    else:
        theta = r0
        inten = r1
    cos_t = tl.cos(theta)
    sin_t = tl.sin(theta)
    return x, w0, w1, r0, r1, theta, inten, cos_t, sin_t, row_ok


@triton.jit
def _last_program(counter_ptr, num_programs):
    """True in the program that takes the last ticket (after all partials are stored).

    The barrier first: every warp of this program has stored its part of the
    partials before the ticket (one thread's release) publishes them."""
    tl.debug_barrier()
    ticket = tl.atomic_add(counter_ptr, 1, sem="acq_rel")
    return ticket == num_programs - 1


@triton.autotune(configs=[launch_config({})], key=[])  # one config: the launch options
@triton.jit
def polar_head_fwd_kernel(
    x_ptr, ldx, w_ptr, b_ptr, target_ptr, mask_ptr,
    va_ptr, ti_ptr, loss_ptr, nvalid_ptr, partial_ptr, counter_ptr,
    n, d,
    BOUNDED: tl.constexpr, HAS_TARGET: tl.constexpr, HAS_MASK: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_P: tl.constexpr,
):
    pid = tl.program_id(0)
    num_programs = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_D)
    sse = tl.zeros([BLOCK_N], dtype=tl.float32)
    cnt = tl.zeros([BLOCK_N], dtype=tl.float32)
    for tile in range(pid, tl.cdiv(n, BLOCK_N), num_programs):
        rows = tile * BLOCK_N + tl.arange(0, BLOCK_N)
        x, w0, w1, r0, r1, theta, inten, cos_t, sin_t, row_ok = _row_tile(
            x_ptr, ldx, w_ptr, b_ptr, rows, cols, n, d, BOUNDED)
        v = (inten * cos_t).to(va_ptr.dtype.element_ty)
        a = (inten * sin_t).to(va_ptr.dtype.element_ty)
        tl.store(va_ptr + 2 * rows, v, mask=row_ok)
        tl.store(va_ptr + 2 * rows + 1, a, mask=row_ok)
        tl.store(ti_ptr + 2 * rows, theta.to(ti_ptr.dtype.element_ty), mask=row_ok)
        tl.store(ti_ptr + 2 * rows + 1, inten.to(ti_ptr.dtype.element_ty), mask=row_ok)
        if HAS_TARGET:
            valid = row_ok
            if HAS_MASK:
                valid = valid & (tl.load(mask_ptr + rows, mask=row_ok, other=0) != 0)
            tv = tl.load(target_ptr + 2 * rows, mask=valid, other=0.0)
            ta = tl.load(target_ptr + 2 * rows + 1, mask=valid, other=0.0)
            ev = v.to(tl.float32) - tv
            ea = a.to(tl.float32) - ta
            sse += tl.where(valid, ev * ev + ea * ea, 0.0)
            cnt += tl.where(valid, 1.0, 0.0)
    if HAS_TARGET:
        tl.store(partial_ptr + 2 * pid, tl.sum(sse, axis=0))
        tl.store(partial_ptr + 2 * pid + 1, tl.sum(cnt, axis=0))
        if _last_program(counter_ptr, num_programs):
            p = tl.arange(0, BLOCK_P)
            p_ok = p < num_programs
            total = tl.sum(tl.load(partial_ptr + 2 * p, mask=p_ok, other=0.0, cache_modifier=".cg"), axis=0)
            count = tl.sum(tl.load(partial_ptr + 2 * p + 1, mask=p_ok, other=0.0, cache_modifier=".cg"), axis=0)
            tl.store(loss_ptr, tl.where(count > 0, total / tl.maximum(2.0 * count, 1.0), 0.0))
            tl.store(nvalid_ptr, count)
            tl.atomic_xchg(counter_ptr, 0)
    else:
        if pid == 0:
            tl.store(loss_ptr, 0.0)
            tl.store(nvalid_ptr, 0.0)


@triton.autotune(configs=[launch_config({})], key=[])  # one config: the launch options
@triton.jit
def polar_head_bwd_kernel(
    gva_ptr, gti_ptr, gloss_ptr, x_ptr, ldx, w_ptr, b_ptr, target_ptr, mask_ptr, nvalid_ptr,
    gx_ptr, gw_ptr, gb_ptr, partial_ptr, counter_ptr,
    n, d,
    BOUNDED: tl.constexpr, HAS_GVA: tl.constexpr, HAS_GTI: tl.constexpr,
    HAS_LOSS: tl.constexpr, HAS_MASK: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    num_programs = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_D)
    col_ok = cols < d
    acc0 = tl.zeros([BLOCK_D], dtype=tl.float32)
    acc1 = tl.zeros([BLOCK_D], dtype=tl.float32)
    db0 = tl.zeros([BLOCK_N], dtype=tl.float32)
    db1 = tl.zeros([BLOCK_N], dtype=tl.float32)
    loss_scale = 0.0
    if HAS_LOSS:
        nv = tl.load(nvalid_ptr)
        loss_scale = tl.where(nv > 0, tl.load(gloss_ptr) / tl.maximum(nv, 1.0), 0.0)
    for tile in range(pid, tl.cdiv(n, BLOCK_N), num_programs):
        rows = tile * BLOCK_N + tl.arange(0, BLOCK_N)
        x, w0, w1, r0, r1, theta, inten, cos_t, sin_t, row_ok = _row_tile(
            x_ptr, ldx, w_ptr, b_ptr, rows, cols, n, d, BOUNDED)
        v = inten * cos_t
        a = inten * sin_t
        gv = tl.zeros([BLOCK_N], dtype=tl.float32)
        ga = tl.zeros([BLOCK_N], dtype=tl.float32)
        gth = tl.zeros([BLOCK_N], dtype=tl.float32)
        gin = tl.zeros([BLOCK_N], dtype=tl.float32)
        if HAS_GVA:
            gv = tl.load(gva_ptr + 2 * rows, mask=row_ok, other=0.0).to(tl.float32)
            ga = tl.load(gva_ptr + 2 * rows + 1, mask=row_ok, other=0.0).to(tl.float32)
        if HAS_GTI:
            gth = tl.load(gti_ptr + 2 * rows, mask=row_ok, other=0.0).to(tl.float32)
            gin = tl.load(gti_ptr + 2 * rows + 1, mask=row_ok, other=0.0).to(tl.float32)
        if HAS_LOSS:
            valid = row_ok
            if HAS_MASK:
                valid = valid & (tl.load(mask_ptr + rows, mask=row_ok, other=0) != 0)
            tv = tl.load(target_ptr + 2 * rows, mask=valid, other=0.0)
            ta = tl.load(target_ptr + 2 * rows + 1, mask=valid, other=0.0)
            # The loss saw the outputs rounded to the output dtype.
            v_out = v.to(gx_ptr.dtype.element_ty).to(tl.float32)
            a_out = a.to(gx_ptr.dtype.element_ty).to(tl.float32)
            gv += tl.where(valid, loss_scale * (v_out - tv), 0.0)
            ga += tl.where(valid, loss_scale * (a_out - ta), 0.0)
        d_theta = gth - gv * a + ga * v
        d_inten = gin + gv * cos_t + ga * sin_t
        if BOUNDED:
            t = _tanh(r0)
            s = _sigmoid(r1)
            d0 = d_theta * 3.141592653589793 * (1.0 - t * t)
            d1 = d_inten * 1.4142135623730951 * s * (1.0 - s)
        else:
            d0 = d_theta
            d1 = d_inten
        d0 = tl.where(row_ok, d0, 0.0)
        d1 = tl.where(row_ok, d1, 0.0)
        gx = d0[:, None] * w0[None, :] + d1[:, None] * w1[None, :]
        tl.store(gx_ptr + rows[:, None] * d + cols[None, :], gx.to(gx_ptr.dtype.element_ty),
                 mask=row_ok[:, None] & col_ok[None, :])
        acc0 += tl.sum(d0[:, None] * x, axis=0)
        acc1 += tl.sum(d1[:, None] * x, axis=0)
        db0 += d0
        db1 += d1
    stride = 2 * d + 2
    base = partial_ptr + pid * stride
    tl.store(base + cols, acc0, mask=col_ok)
    tl.store(base + d + cols, acc1, mask=col_ok)
    tl.store(base + 2 * d, tl.sum(db0, axis=0))
    tl.store(base + 2 * d + 1, tl.sum(db1, axis=0))
    if _last_program(counter_ptr, num_programs):
        t0 = tl.zeros([BLOCK_D], dtype=tl.float32)
        t1 = tl.zeros([BLOCK_D], dtype=tl.float32)
        tb0 = 0.0
        tb1 = 0.0
        for p in range(0, num_programs):
            pb = partial_ptr + p * stride
            t0 += tl.load(pb + cols, mask=col_ok, other=0.0, cache_modifier=".cg")
            t1 += tl.load(pb + d + cols, mask=col_ok, other=0.0, cache_modifier=".cg")
            tb0 += tl.load(pb + 2 * d, cache_modifier=".cg")
            tb1 += tl.load(pb + 2 * d + 1, cache_modifier=".cg")
        tl.store(gw_ptr + cols, t0.to(gw_ptr.dtype.element_ty), mask=col_ok)
        tl.store(gw_ptr + d + cols, t1.to(gw_ptr.dtype.element_ty), mask=col_ok)
        tl.store(gb_ptr, tb0.to(gb_ptr.dtype.element_ty))
        tl.store(gb_ptr + 1, tb1.to(gb_ptr.dtype.element_ty))
        tl.atomic_xchg(counter_ptr, 0)


# --------------------------------------------------------------------------- launch
def launch_shape(n: int, d: int, max_programs: int) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_D, programs) for n rows of d features: tiles of ~4K
    elements, at most ``max_programs`` programs. No tensors: the launches and the
    ahead-of-time check (maven_fast/triton_aot.py) call this."""
    block_d = triton.next_power_of_2(max(d, 16))
    block_n = max(1, min(64, 4096 // block_d))
    tiles = triton.cdiv(max(n, 1), block_n)
    return block_n, block_d, max(1, min(tiles, max_programs))


def max_programs(sm_count: int | None) -> int:
    """At most 4 programs per SM; ``None`` (interpreter): 4, so the cross-program
    reduction is exercised."""
    return 4 if sm_count is None else 4 * sm_count


def forward_constexprs(block_n: int, block_d: int, programs: int, bounded: bool, has_target: bool,
                       has_mask: bool) -> dict:
    """The compile-time arguments of polar_head_fwd_kernel (BLOCK_P: the loss
    reduction's width, the programs rounded up to a power of two)."""
    return dict(BOUNDED=bounded, HAS_TARGET=has_target, HAS_MASK=has_mask, BLOCK_N=block_n,
                BLOCK_D=block_d, BLOCK_P=triton.next_power_of_2(programs))


def backward_constexprs(block_n: int, block_d: int, bounded: bool, has_gva: bool, has_gti: bool,
                        has_loss: bool, has_mask: bool) -> dict:
    """The compile-time arguments of polar_head_bwd_kernel."""
    return dict(BOUNDED=bounded, HAS_GVA=has_gva, HAS_GTI=has_gti, HAS_LOSS=has_loss, HAS_MASK=has_mask,
                BLOCK_N=block_n, BLOCK_D=block_d)


def _launch_shape(n: int, d: int, device: torch.device) -> tuple[int, int, int]:
    """:func:`launch_shape` with the SM count of ``device`` (CUDA) or the interpreter's cap."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else None
    return launch_shape(n, d, max_programs(sms))


def _check(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, op: str) -> None:
    if x.dim() != 2 or weight.shape != (2, x.shape[1]) or bias.shape != (2,):
        raise ValueError(
            f"{op}: expected x [N, D], weight [2, D], bias [2]; got x {tuple(x.shape)}, "
            f"weight {tuple(weight.shape)}, bias {tuple(bias.shape)}"
        )
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"{op}: the Triton kernels support float32, float16 and bfloat16, got {x.dtype}")
    if weight.dtype != x.dtype or bias.dtype != x.dtype:
        raise TypeError(f"{op}: weight/bias dtype ({weight.dtype}/{bias.dtype}) must equal x's ({x.dtype})")
    if x.shape[1] > MAX_D:
        raise ValueError(f"{op}: the Triton kernel supports D <= {MAX_D}, got {x.shape[1]}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t.device != x.device:
            raise ValueError(f"{op}: `{name}` is on {t.device} but `x` is on {x.device}")


def _dense_rows(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(1) == 1 or x.shape[1] == 1 else x.contiguous()


@triton_op("maven_fast::polar_head_triton", mutates_args=())
def polar_head_triton(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
    target: torch.Tensor | None, mask: torch.Tensor | None, bounded: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    _check(x, weight, bias, "maven_fast::polar_head_triton")
    x = _dense_rows(x)
    n, d = x.shape
    va = x.new_empty((n, 2))
    ti = x.new_empty((n, 2))
    loss = x.new_zeros((), dtype=torch.float32)
    n_valid = x.new_zeros((), dtype=torch.float32)
    if n == 0:
        return va, ti, loss, n_valid
    block_n, block_d, programs = _launch_shape(n, d, x.device)
    tgt = None if target is None else target.to(torch.float32).contiguous()
    msk = None if mask is None else mask.contiguous()
    partial = x.new_empty((2 * programs,), dtype=torch.float32)
    counter = x.new_zeros((1,), dtype=torch.int32)
    with on_inputs_device(x):
        wrap_triton(polar_head_fwd_kernel)[(programs,)](
            x, x.stride(0), weight.contiguous(), bias.contiguous(),
            tgt if tgt is not None else partial, msk if msk is not None else counter,
            va, ti, loss, n_valid, partial, counter, n, d,
            **forward_constexprs(block_n, block_d, programs, bounded, tgt is not None, msk is not None),
        )
    return va, ti, loss, n_valid


@triton_op("maven_fast::polar_head_triton_backward", mutates_args=())
def polar_head_triton_backward(
    grad_va: torch.Tensor | None, grad_ti: torch.Tensor | None, grad_loss: torch.Tensor | None,
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
    target: torch.Tensor | None, mask: torch.Tensor | None, n_valid: torch.Tensor, bounded: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _check(x, weight, bias, "maven_fast::polar_head_triton_backward")
    x = _dense_rows(x)
    n, d = x.shape
    grad_x = x.new_empty((n, d))
    grad_w = torch.zeros_like(weight)
    grad_b = torch.zeros_like(bias)
    if n == 0:
        return grad_x, grad_w, grad_b
    block_n, block_d, programs = _launch_shape(n, d, x.device)
    has_loss = grad_loss is not None and target is not None
    gva = None if grad_va is None else grad_va.to(x.dtype).contiguous()
    gti = None if grad_ti is None else grad_ti.to(x.dtype).contiguous()
    tgt = None if target is None else target.to(torch.float32).contiguous()
    msk = None if mask is None else mask.contiguous()
    gl = None if grad_loss is None else grad_loss.to(torch.float32)
    partial = x.new_empty((programs * (2 * d + 2),), dtype=torch.float32)
    counter = x.new_zeros((1,), dtype=torch.int32)
    with on_inputs_device(x):
        wrap_triton(polar_head_bwd_kernel)[(programs,)](
            gva if gva is not None else x, gti if gti is not None else x, gl if gl is not None else partial,
            x, x.stride(0), weight.contiguous(), bias.contiguous(),
            tgt if tgt is not None else partial, msk if msk is not None else counter,
            n_valid.to(torch.float32),
            grad_x, grad_w, grad_b, partial, counter, n, d,
            **backward_constexprs(block_n, block_d, bounded, gva is not None, gti is not None, has_loss,
                                  msk is not None),
        )
    return grad_x, grad_w, grad_b


_registered = False


def ensure_registered(fake_forward, setup_context, make_backward):
    """Attach autograd to the Triton op (once); returns the forward op."""
    global _registered
    if not _registered:
        polar_head_triton.register_autograd(
            make_backward(polar_head_triton_backward), setup_context=setup_context
        )
        _registered = True
    return polar_head_triton
