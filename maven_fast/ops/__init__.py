"""Fused MAVEN ops. Each op module holds its eager reference, the registration
of its compiled/Triton implementations (fake kernels, autograd) and the public
function that dispatches through :mod:`maven_fast.backends`."""
from maven_fast.ops.polar_head import PolarHeadOutput, polar_head, polar_head_reference

__all__ = ["PolarHeadOutput", "polar_head", "polar_head_reference"]
