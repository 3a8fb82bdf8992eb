"""Fused MAVEN ops. Each op module holds its eager reference, the registration
of its compiled/Triton implementations (fake kernels, autograd) and the public
function that dispatches through :mod:`maven_fast.backends`."""
from maven_fast.ops.cross_modal import (
    PATHWAYS,
    CrossModalParams,
    cross_modal_block,
    cross_modal_reference,
    plan_pathways,
)
from maven_fast.ops import cpu_gemm  # noqa: F401  (registers the fake of maven_fast::_cpu_gemm)
from maven_fast.ops.dropout import dropout
from maven_fast.ops.frame_concat_linear import frame_concat_linear
from maven_fast.ops.linear import linear, linear_reference
from maven_fast.ops.polar_head import PolarHeadOutput, polar_head, polar_head_reference

__all__ = [
    "PATHWAYS",
    "CrossModalParams",
    "PolarHeadOutput",
    "cross_modal_block",
    "cross_modal_reference",
    "dropout",
    "frame_concat_linear",
    "linear",
    "linear_reference",
    "plan_pathways",
    "polar_head",
    "polar_head_reference",
]
