"""The tensor-core attention kernels (csrc/cross_modal/cross_modal_attention_tc_kernel.cu:
mma.sync, ldmatrix, cp.async) run by the CPU emulator inside the whole CUDA op.

In bf16/fp16 the CUDA op sends every general pathway with a head size <= 256
(a multiple of 8) to these kernels and the rest (absorbed pathways) to the
SIMT kernels. Checked here, against the CPU op (same Philox masks) for values,
every saved tensor and every gradient, and against the fp64 eager reference
with the SPEC 5 rule (error at most twice eager PyTorch's in the same dtype):
head sizes 64, 128 and 256 (and one padded up to 64), several key tiles and
query blocks, items whose lengths end inside a tile, fully masked items,
dropout, general and absorbed pathways in one call. The fast subset runs in
every test run; MAVEN_FAST_CUDA_EMULATION=1 adds the length sweep and the rest.
"""
from __future__ import annotations

import os

import pytest
import torch

from maven_fast._extension import extension
from maven_fast.ops.cross_modal import ABSORBED, GENERAL, cross_modal_reference
from cross_modal_cases import assert_within_twice_eager, inputs, make_params, param_list, values_and_grads
from test_cross_modal_cuda_emulated import compare, op_args

pytestmark = pytest.mark.skipif(extension() is None, reason="maven_fast._C is not built")
full = pytest.mark.skipif(os.environ.get("MAVEN_FAST_CUDA_EMULATION") != "1",
                          reason="the full emulated matrix: set MAVEN_FAST_CUDA_EMULATION=1")

# SPEC 5 floors, as tests/test_cross_modal_cuda.py (relative to max|exact|).
FLOOR = {torch.float16: 1e-3, torch.bfloat16: 2.0**-7}


@pytest.fixture(scope="module")
def emu(cuda_emulator):
    cuda_emulator.set_attention_kernels("auto")
    yield cuda_emulator
    cuda_emulator.set_attention_kernels("auto")


def lengths(b_lens):
    return [torch.tensor(x) for x in b_lens]


def check_spec5(emu, t, d, h, dtype, lens, modes=None):
    """Emulated op vs the fp64 eager reference: values and the gradients of every
    input and parameter within twice eager PyTorch's error in ``dtype`` (no dropout)."""
    modes = modes or [GENERAL] * 6
    prm = make_params(d, h)
    xs, lens = inputs(t, len(lens[0]), d, lengths=lens)
    upstream = [torch.randn(len(lens[0]), ti, d, dtype=torch.float64) for ti in t]

    def ref(x, p):
        return cross_modal_reference(*x, *lens, p)

    exact = values_and_grads(ref, xs, prm, upstream, torch.float64, "cpu")
    eager = values_and_grads(ref, xs, prm, upstream, dtype, "cpu")
    x = [v.detach().to(dtype) for v in xs]
    p = [v.detach().to(dtype) for v in param_list(prm)]
    args = (*x, *lens, p[0:6], p[6:12], p[12:18], p[18:24], p[24], p[25], prm.ln_eps, h, modes, 0.0, 0.0,
            False, None)
    with torch.no_grad():
        out = emu.forward(*args)
        grads = emu.backward(*[u.to(dtype) for u in upstream], *args[:-1], list(out[3]))
    flat = [*grads[:3], *[g for group in grads[3:7] for g in group], *grads[7:]] if isinstance(grads[3], list) \
        else list(grads)
    assert len(flat) == len(exact[1]), (len(flat), len(exact[1]))
    assert_within_twice_eager(list(out[:3]), eager[0], exact[0], dtype, FLOOR[dtype], 1e-3, "value")
    assert_within_twice_eager(flat, eager[1], exact[1], dtype, FLOOR[dtype], 1e-3, "gradient")


# --------------------------------------------------------------------------- fast subset (every run)
# Forward and dQ tiles hold 64 queries / 64 keys at head sizes 64 and 128 (32
# keys at 256); the dK/dV kernel 64 keys. Lengths 70 and 45 span two tiles, 45
# ending inside one; an item of length 0 is fully masked.
def test_fast_bf16_head64_several_tiles_with_dropout(emu):
    lens = lengths([[70, 45], [66, 0], [9, 3]])
    compare(emu, (70, 66, 9), [GENERAL] * 6, d=64, h=1, b=2, dtype=torch.bfloat16, lengths=lens,
            attn_p=0.2, out_p=0.1)


def test_fast_fp16_head128_spec5_rule(emu):
    check_spec5(emu, (20, 9, 5), 128, 1, torch.float16, lengths([[20, 7], [9, 4], [5, 0]]))


def test_fast_bf16_head256_general_and_absorbed_in_one_call(emu):
    # Absorbed pathways (K = V shared by the heads) run on the SIMT kernels in a
    # second launch; their D rows follow the tensor-core ones' in the workspace.
    modes = [GENERAL, ABSORBED, GENERAL, ABSORBED, GENERAL, GENERAL]
    lens = lengths([[12, 5], [40, 33], [7, 1]])
    compare(emu, (12, 40, 7), modes, d=256, h=1, b=2, dtype=torch.bfloat16, lengths=lens, attn_p=0.25)


def test_fast_simt_switch_routes_to_the_other_kernels(emu):
    # "simt" sends bf16 general pathways to the SIMT kernels (equal to the CPU op
    # too); the two families are not the same computation (the tensor-core path
    # rounds P to bf16 for P V), so their outputs differ in the last bits.
    lens = lengths([[9, 4], [7, 7], [3, 2]])
    a = op_args((9, 7, 3), [GENERAL] * 6, 64, 1, 2, torch.bfloat16, 0.0, 0.0, lens, "explicit")
    outs = {}
    try:
        emu.set_attention_kernels("simt")
        compare(emu, (9, 7, 3), [GENERAL] * 6, d=64, h=1, b=2, dtype=torch.bfloat16, lengths=lens)
        with torch.no_grad():
            outs["simt"] = emu.forward(*a)[0]
    finally:
        emu.set_attention_kernels("auto")
    with torch.no_grad():
        outs["auto"] = emu.forward(*a)[0]
    assert not torch.equal(outs["simt"], outs["auto"])
    with pytest.raises(RuntimeError, match="'auto' or 'simt'"):
        emu.set_attention_kernels("tensor")


# --------------------------------------------------------------------------- full matrix (opt-in)
@full
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("d,h", [(128, 2), (256, 2), (256, 1), (96, 2)])  # head 64, 128, 256, 48 (padded)
def test_emulated_tc_head_sizes_spec5(emu, d, h, dtype):
    check_spec5(emu, (33, 17, 5), d, h, dtype, lengths([[33, 20], [17, 0], [5, 5]]))


@full
@pytest.mark.parametrize("tk", [1, 2, 31, 63, 64, 65, 127, 129, 257])
def test_emulated_tc_length_sweep(emu, tk):
    # Keys of lengths 1..257, items ending inside a tile, with dropout.
    lens = lengths([[5, 3], [tk, max(tk // 2, 1)], [2, 1]])
    compare(emu, (5, tk, 2), [GENERAL] * 6, d=128, h=2, b=2, dtype=torch.bfloat16, lengths=lens,
            attn_p=0.2, out_p=0.1)


@full
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_emulated_tc_long_queries_head256_dropout(emu, dtype):
    lens = lengths([[130, 77], [40, 21], [3, 0]])
    compare(emu, (130, 40, 3), [GENERAL] * 6, d=256, h=1, b=2, dtype=dtype, lengths=lens, attn_p=0.3,
            out_p=0.1)
