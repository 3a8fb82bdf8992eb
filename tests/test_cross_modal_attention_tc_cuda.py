"""The tensor-core attention kernels on a GPU (marked ``gpu``: skipped without one;
bench/gpu.sh runs them): the SPEC 5 rule at head sizes 64, 128 and 256 and long
sequences, the SIMT kernels on the same call within the same rule, bitwise
run-to-run determinism (CUDA graph replays in bf16: tests/test_gpu_graph_safety.py)."""
from __future__ import annotations

import pytest
import torch

import maven_fast
from maven_fast._extension import extension
from maven_fast.ops.cross_modal import GENERAL, cross_modal_block, cross_modal_reference, cuda_attention_kernels
from cross_modal_cases import assert_within_twice_eager, inputs, make_params, values_and_grads

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(extension() is None or not maven_fast.build_info().get("cuda_kernels"),
                                 reason="maven_fast._C was built without CUDA kernels"),
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

DEV = "cuda"
FLOOR = {torch.float16: 1e-3, torch.bfloat16: 2.0**-7}  # as tests/test_cross_modal_cuda.py


def _spec5(t, d, h, dtype, kernels="auto", b=2):
    torch.manual_seed(0)
    prm = make_params(d, h)
    xs, lens = inputs(t, b, d)
    upstream = [torch.randn(b, ti, d, dtype=torch.float64) for ti in t]
    lens_dev = [v.to(DEV) for v in lens]

    def ref(x, p):
        return cross_modal_reference(*x, *[v.to(x[0].device) for v in lens], p)

    def fused(x, p):
        with cuda_attention_kernels(kernels):
            out = cross_modal_block(*x, *lens_dev, params=p, backend="cuda", shortcuts=[GENERAL] * 6)
        return out

    exact = values_and_grads(ref, xs, prm, upstream, torch.float64, "cpu")
    eager = values_and_grads(ref, xs, prm, upstream, dtype, DEV)
    with cuda_attention_kernels(kernels):  # the backward too
        out = values_and_grads(fused, xs, prm, upstream, dtype, DEV)
    assert_within_twice_eager(out[0], eager[0], exact[0], dtype, FLOOR[dtype], 1e-3, f"{kernels} value")
    assert_within_twice_eager(out[1], eager[1], exact[1], dtype, FLOOR[dtype], 1e-3, f"{kernels} gradient")
    return out


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("d,h", [(128, 2), (256, 2), (256, 1)])  # head sizes 64, 128, 256
@pytest.mark.parametrize("t", [(130, 257, 65), (256, 400, 64)])
def test_tc_spec5_rule_long_sequences(t, d, h, dtype):
    _spec5(t, d, h, dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_tc_and_simt_both_meet_the_rule_and_differ(dtype):
    tc = _spec5((70, 129, 9), 256, 2, dtype, "auto")
    simt = _spec5((70, 129, 9), 256, 2, dtype, "simt")
    assert not all(torch.equal(a, b) for a, b in zip(tc[0], simt[0])), "the switch did not change the kernels"


def test_tc_backward_is_bitwise_deterministic():
    t, d = (300, 200, 70), 256
    prm = make_params(d, 2)
    xs, lens = inputs(t, 4, d)
    up = [torch.randn(4, ti, d, dtype=torch.float64) for ti in t]
    lens = [v.to(DEV) for v in lens]
    runs = [values_and_grads(lambda x, p: cross_modal_block(*x, *lens, params=p, backend="cuda",
                                                            shortcuts=[GENERAL] * 6),
                             xs, prm, up, torch.bfloat16, DEV) for _ in range(3)]
    for other in runs[1:]:
        for a, b in zip(runs[0][0] + runs[0][1], other[0] + other[1]):
            assert torch.equal(a, b)
