"""The switch between the CUDA backend's attention kernel families
(maven_fast.ops.cross_modal.cuda_attention_kernels) and the benchmark variant
that uses it to time the SIMT kernels against the tensor-core ones."""
from __future__ import annotations

import pytest
import torch

import maven_fast
from maven_fast._extension import extension
from maven_fast.benchmark import cross_modal_suite
from maven_fast.ops.cross_modal import cuda_attention_kernels

pytestmark = pytest.mark.skipif(extension() is None or not maven_fast.build_info().get("cuda_kernels"),
                                reason="maven_fast._C was built without CUDA kernels")


def test_switch_sets_and_restores_even_on_error():
    ext = extension()
    assert ext.cuda_attention_kernels() == "auto"
    with cuda_attention_kernels("simt"):
        assert ext.cuda_attention_kernels() == "simt"
    assert ext.cuda_attention_kernels() == "auto"
    with pytest.raises(KeyError), cuda_attention_kernels("simt"):
        raise KeyError("boom")
    assert ext.cuda_attention_kernels() == "auto"
    with pytest.raises(ValueError, match="'auto', 'simt'"):
        with cuda_attention_kernels("tensor_core"):
            pass
    with pytest.raises(ValueError, match="'auto' .* or 'simt'"):
        ext.set_cuda_attention_kernels("fast")


def test_benchmark_times_the_simt_kernels_in_reduced_precision(monkeypatch):
    monkeypatch.setattr(cross_modal_suite, "fused_backends", lambda device: (["cuda"], []))
    module = cross_modal_suite.make_block_module(64, 2, 0).to(torch.bfloat16)
    variants, _ = cross_modal_suite.block_variants(module, torch.device("cuda"), include_compile=False)
    v = variants["maven_fast cuda SIMT attention"]
    with v.context():
        assert extension().cuda_attention_kernels() == "simt"
    assert extension().cuda_attention_kernels() == "auto"
    fp32, _ = cross_modal_suite.block_variants(module.float(), torch.device("cuda"), include_compile=False)
    assert "maven_fast cuda SIMT attention" not in fp32  # fp32 runs on the SIMT kernels anyway
