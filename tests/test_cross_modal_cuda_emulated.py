"""The CUDA kernels of the cross-modal block, run on the CPU by an emulator
(tests/cuda_emulation), against the CPU op: values, every ``saved`` tensor and
every gradient, with dropout on (the Philox masks must be the same), in fp32,
fp16 and bf16, across the pathway modes, head sizes and length edges.

This checks the device code (indexing, tiling, barriers, shuffles, masks,
the dK accumulation and the reductions) without a GPU; it does not replace the
GPU tests (tests/test_cross_modal_cuda.py). The fast subset runs in every test
run: both kernels (attention, combine), forward and backward, fp32 and bf16,
dropout on, items whose lengths end inside a key tile of several, general,
absorbed and key-length-1 pathways, the generator's graph-capture form of the
dropout seed, and the device-side length check. The full matrix is slow
(minutes): opt in with MAVEN_FAST_CUDA_EMULATION=1.
"""
from __future__ import annotations

import os

import pytest
import torch

from maven_fast.ops.cross_modal import ABSORBED, GENERAL, KEY_LEN_1, plan_pathways, saved_names
from cross_modal_cases import all_modes, check_padding_never_read, inputs, make_params

full = pytest.mark.skipif(os.environ.get("MAVEN_FAST_CUDA_EMULATION") != "1",
                          reason="the full emulated matrix: set MAVEN_FAST_CUDA_EMULATION=1")


@pytest.fixture(scope="module")
def emu(cuda_emulator):
    return cuda_emulator


def _rel(a, r):
    a, r = a.double(), r.double()
    fin = torch.isfinite(r)
    assert torch.equal(torch.isfinite(a), fin), "finite/infinite entries differ"
    if not fin.any():
        return 0.0
    return ((a - r)[fin].abs().max() / r[fin].abs().max().clamp_min(1e-6)).item()


def op_args(t, shortcuts, d, h, b, dtype, attn_p, out_p, lengths, rng):
    """The op's arguments (tensors detached); ``rng="explicit"``: a fixed one."""
    prm = make_params(d, h, dtype)
    xs, lens = inputs(t, b, d, dtype=dtype, lengths=lengths)
    modes = all_modes(t, shortcuts)
    if isinstance(modes, bool):
        modes = plan_pathways(*t, d, h, shortcuts=modes)
    training = attn_p > 0 or out_p > 0
    if isinstance(rng, str):
        rng = torch.tensor([123456789012345, 7], dtype=torch.long) if training else None
    return (*[x.detach() for x in xs], *lens, [w.detach() for w in prm.in_proj_weight],
            [w.detach() for w in prm.in_proj_bias], [w.detach() for w in prm.out_proj_weight],
            [w.detach() for w in prm.out_proj_bias], prm.ln_weight.detach(), prm.ln_bias.detach(), prm.ln_eps,
            h, modes, attn_p, out_p, training, rng)


def compare(emu, t, shortcuts, d=16, h=2, b=3, dtype=torch.float32, attn_p=0.0, out_p=0.0, lengths=None,
            rng="explicit"):
    """Emulated CUDA op == CPU op: outputs, saved tensors, gradients. With ``rng=None``
    the emulated op draws from the emulator's generator (the pointer form a CUDA
    graph capture gives) and the CPU op is given the rng the emulated one saved."""
    args = op_args(t, shortcuts, d, h, b, dtype, attn_p, out_p, lengths, rng)
    modes, training = args[14], args[17]
    tol = 2e-5 if dtype == torch.float32 else 2e-2
    with torch.no_grad():
        out = emu.forward(*args)
        if args[-1] is None and (attn_p > 0 or out_p > 0):
            args = (*args[:-1], out[3][-1].clone())
        ref = torch.ops.maven_fast.cross_modal_block(*args)
        for i in range(3):
            assert _rel(out[i], ref[i]) < tol, f"output {i}"
        names = saved_names(modes, training and attn_p > 0, training and out_p > 0)
        assert len(out[3]) == len(ref[3]) == len(names)
        for n, a, r in zip(names, out[3], ref[3]):
            assert _rel(a, r) < tol, n
        gs = [torch.randn_like(o) for o in ref[:3]]
        g_ref = torch.ops.maven_fast.cross_modal_block_backward(*gs, *args[:-1], ref[3])
        g_out = emu.backward(*gs, *args[:-1], list(out[3]))
    for i, (a, r) in enumerate(zip(g_out, g_ref)):
        assert _rel(a, r) < tol, f"gradient {i}"


@full
@pytest.mark.parametrize("t", [(17, 3, 1), (1, 17, 3), (3, 1, 64), (5, 7, 9), (1, 1, 1)])
@pytest.mark.parametrize("shortcuts", [False, True, "absorb"])
def test_emulated_matches_cpu(emu, t, shortcuts):
    compare(emu, t, shortcuts)


@full
@pytest.mark.parametrize("t,shortcuts", [((3, 4, 2), False), ((3, 1, 1), True), ((2, 5, 3), "absorb"),
                                         ((33, 40, 5), "absorb"), ((33, 40, 5), False)])
@pytest.mark.parametrize("attn_p,out_p", [(0.3, 0.25), (0.0, 0.25), (0.2, 0.0)])
def test_emulated_dropout_masks_equal_cpu(emu, t, shortcuts, attn_p, out_p):
    compare(emu, t, shortcuts, attn_p=attn_p, out_p=out_p)


@full
@pytest.mark.parametrize("shortcuts", [False, True, "absorb"])
def test_emulated_length_edges(emu, shortcuts):
    t = (5, 4, 3)
    lens = [torch.tensor([0, 1, ti - 1, ti]) for ti in t]
    compare(emu, t, shortcuts, b=4, lengths=lens, attn_p=0.2, out_p=0.1)


@full
@pytest.mark.parametrize("d,h", [(128, 2), (512, 2), (24, 3), (24, 2), (96, 8)])
@pytest.mark.parametrize("shortcuts", [False, "absorb"])
def test_emulated_head_sizes(emu, d, h, shortcuts):
    compare(emu, (9, 6, 1), shortcuts, d=d, h=h, b=2)


@full
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("t,shortcuts", [((17, 3, 1), True), ((5, 7, 9), False), ((5, 7, 9), "absorb")])
def test_emulated_reduced_precision(emu, t, shortcuts, dtype):
    compare(emu, t, shortcuts, dtype=dtype, attn_p=0.2, out_p=0.2)


@full
def test_emulated_several_blocks_and_wide_absorbed(emu):
    compare(emu, (3, 70, 40), [GENERAL] * 6, b=2)    # several key tiles and query blocks
    compare(emu, (40, 70, 3), "absorb", b=2)          # shared-K dK accumulation, several tiles
    compare(emu, (4, 40, 3), "absorb", d=1024, h=1, b=1)  # absorbed dk = dv = 1024: 8 column chunks


# --------------------------------------------------------------------------- fast subset (every run)
# Key tiles of the CUDA kernels are 32 keys: lengths 70 and 45 span three and
# two tiles, 45 ending inside its second one (padded keys in a partial tile).
MIXED = [GENERAL, KEY_LEN_1, ABSORBED, KEY_LEN_1, GENERAL, ABSORBED]


def test_fast_fp32_all_pathway_modes_with_dropout(emu):
    # v2a, t2v general over 3 key tiles; a2v absorbed over 3 query blocks; t2a absorbed
    # (shared-K dK/dV over 3 key tiles); v2t, a2t key length 1 (combine item terms).
    lens = [torch.tensor([6, 4]), torch.tensor([70, 45]), torch.tensor([1, 0])]
    compare(emu, (6, 70, 1), MIXED, b=2, lengths=lens, attn_p=0.2, out_p=0.25)


def test_fast_bf16_general_and_absorbed_with_dropout(emu):
    lens = [torch.tensor([40, 23]), torch.tensor([37, 33]), torch.tensor([6, 0])]
    modes = [GENERAL, ABSORBED, ABSORBED, GENERAL, GENERAL, ABSORBED]
    compare(emu, (40, 37, 6), modes, b=2, dtype=torch.bfloat16, lengths=lens, attn_p=0.2, out_p=0.2)


def test_fast_generator_seed_read_by_the_kernels(emu):
    # rng=None: seed and offset live in (emulated) device memory plus an
    # intragraph offset, as under CUDA graph capture; the forward stores what it
    # used, and the CPU op given that rng draws the same masks.
    lens = [torch.tensor([5, 3]), torch.tensor([9, 4]), torch.tensor([1, 1])]
    compare(emu, (5, 9, 1), MIXED, b=2, lengths=lens, attn_p=0.3, out_p=0.2, rng=None)
    args = op_args((5, 9, 1), MIXED, 16, 2, 2, torch.float32, 0.3, 0.2, lens, None)
    with torch.no_grad():
        first, second = emu.forward(*args)[3][-1], emu.forward(*args)[3][-1]
    assert first[0] == second[0] and second[1] > first[1]  # same seed, the offset moved on


def test_fast_padded_steps_are_never_read_and_get_zero_gradient(emu):
    # NaN at every padded step (cross_modal_cases.check_padding_never_read): item 1
    # has 36 of 37 audio keys (padding inside the second 32-key tile) under v2a
    # (general) and t2a (absorbed), 4 of 5 video keys under t2v, no text (key
    # length 1), item 2 no keys at all; dropout on.
    check_padding_never_read(emu.forward, emu.backward, (5, 37, 1), MIXED, b=3, attn_p=0.2, out_p=0.2)


@pytest.mark.parametrize("bad", ["too long", "negative", "item"])
def test_fast_out_of_range_length_is_a_device_side_error(emu, bad):
    lens = [torch.tensor([5, 3]), torch.tensor([9, 4]), torch.tensor([1, 1])]
    if bad == "too long":
        lens[1] = torch.tensor([9, 10])  # audio keys of v2a, t2v... T_a = 9
    elif bad == "negative":
        lens[0] = torch.tensor([-1, 5])
    else:
        lens[2] = torch.tensor([1, 2])  # key-length-1 text: 0 or 1
    args = op_args((5, 9, 1), MIXED, 16, 2, 2, torch.float32, 0.0, 0.0, lens, None)
    with torch.no_grad(), pytest.raises(RuntimeError, match=r"emu: .*kernel failed"):
        emu.forward(*args)
