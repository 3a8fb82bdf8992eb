"""The CUDA kernels of the cross-modal block, run on the CPU by an emulator
(tests/cuda_emulation), against the CPU op: values, every ``saved`` tensor and
every gradient, with dropout on (the Philox masks must be the same), in fp32,
fp16 and bf16, across the pathway modes, head sizes and length edges.

This checks the device code (indexing, tiling, barriers, shuffles, masks,
the dK accumulation and the reductions) without a GPU; it does not replace the
GPU tests (tests/test_cross_modal_cuda.py). Slow (about a minute to build and
a few to run): opt in with MAVEN_FAST_CUDA_EMULATION=1.
"""
from __future__ import annotations

import os

import pytest
import torch

from maven_fast._extension import extension
from maven_fast.ops.cross_modal import GENERAL, plan_pathways, saved_names
from cross_modal_cases import all_modes, inputs, make_params

pytestmark = [
    pytest.mark.skipif(extension() is None, reason="maven_fast._C is not built"),
    pytest.mark.skipif(os.environ.get("MAVEN_FAST_CUDA_EMULATION") != "1",
                       reason="set MAVEN_FAST_CUDA_EMULATION=1 to run the emulated CUDA kernels"),
]


@pytest.fixture(scope="module")
def emu():
    from cuda_emulation.build import load

    return load()


def _rel(a, r):
    a, r = a.double(), r.double()
    fin = torch.isfinite(r)
    assert torch.equal(torch.isfinite(a), fin), "finite/infinite entries differ"
    if not fin.any():
        return 0.0
    return ((a - r)[fin].abs().max() / r[fin].abs().max().clamp_min(1e-6)).item()


def compare(emu, t, shortcuts, d=16, h=2, b=3, dtype=torch.float32, attn_p=0.0, out_p=0.0, lengths=None):
    prm = make_params(d, h, dtype)
    xs, lens = inputs(t, b, d, dtype=dtype, lengths=lengths)
    modes = all_modes(t, shortcuts)
    if isinstance(modes, bool):
        modes = plan_pathways(*t, d, h, shortcuts=modes)
    training = attn_p > 0 or out_p > 0
    rng = torch.tensor([123456789012345, 7], dtype=torch.long) if training else None
    args = (*[x.detach() for x in xs], *lens, [w.detach() for w in prm.in_proj_weight],
            [w.detach() for w in prm.in_proj_bias], [w.detach() for w in prm.out_proj_weight],
            [w.detach() for w in prm.out_proj_bias], prm.ln_weight.detach(), prm.ln_bias.detach(), prm.ln_eps,
            h, modes, attn_p, out_p, training, rng)
    tol = 2e-5 if dtype == torch.float32 else 2e-2
    with torch.no_grad():
        ref = torch.ops.maven_fast.cross_modal_block(*args)
        out = emu.forward(*args)
        for i in range(3):
            assert _rel(out[i], ref[i]) < tol, f"output {i}"
        names = saved_names(modes, training and attn_p > 0)
        assert len(out[3]) == len(ref[3]) == len(names)
        for n, a, r in zip(names, out[3], ref[3]):
            assert _rel(a, r) < tol, n
        gs = [torch.randn_like(o) for o in ref[:3]]
        g_ref = torch.ops.maven_fast.cross_modal_block_backward(*gs, *args, ref[3])
        g_out = emu.backward(*gs, *args, list(out[3]))
    for i, (a, r) in enumerate(zip(g_out, g_ref)):
        assert _rel(a, r) < tol, f"gradient {i}"


@pytest.mark.parametrize("t", [(17, 3, 1), (1, 17, 3), (3, 1, 64), (5, 7, 9), (1, 1, 1)])
@pytest.mark.parametrize("shortcuts", [False, True, "absorb"])
def test_emulated_matches_cpu(emu, t, shortcuts):
    compare(emu, t, shortcuts)


@pytest.mark.parametrize("t,shortcuts", [((3, 4, 2), False), ((3, 1, 1), True), ((2, 5, 3), "absorb"),
                                         ((33, 40, 5), "absorb"), ((33, 40, 5), False)])
@pytest.mark.parametrize("attn_p,out_p", [(0.3, 0.25), (0.0, 0.25), (0.2, 0.0)])
def test_emulated_dropout_masks_equal_cpu(emu, t, shortcuts, attn_p, out_p):
    compare(emu, t, shortcuts, attn_p=attn_p, out_p=out_p)


@pytest.mark.parametrize("shortcuts", [False, True, "absorb"])
def test_emulated_length_edges(emu, shortcuts):
    t = (5, 4, 3)
    lens = [torch.tensor([0, 1, ti - 1, ti]) for ti in t]
    compare(emu, t, shortcuts, b=4, lengths=lens, attn_p=0.2, out_p=0.1)


@pytest.mark.parametrize("d,h", [(128, 2), (512, 2), (24, 3), (24, 2), (96, 8)])
@pytest.mark.parametrize("shortcuts", [False, "absorb"])
def test_emulated_head_sizes(emu, d, h, shortcuts):
    compare(emu, (9, 6, 1), shortcuts, d=d, h=h, b=2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("t,shortcuts", [((17, 3, 1), True), ((5, 7, 9), False), ((5, 7, 9), "absorb")])
def test_emulated_reduced_precision(emu, t, shortcuts, dtype):
    compare(emu, t, shortcuts, dtype=dtype, attn_p=0.2, out_p=0.2)


def test_emulated_several_blocks_and_wide_absorbed(emu):
    compare(emu, (3, 70, 40), [GENERAL] * 6, b=2)    # several key tiles and query blocks
    compare(emu, (40, 70, 3), "absorb", b=2)          # shared-K dK accumulation, several tiles
    compare(emu, (4, 40, 3), "absorb", d=1024, h=1, b=1)  # absorbed dk = dv = 1024: 8 column chunks
