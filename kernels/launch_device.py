"""The device a Triton launch runs on.

Triton launches on the *current* CUDA device; an op called with tensors on
another GPU must make their device current for the call, or its kernels would
run on the wrong GPU with pointers of another one.
"""
from __future__ import annotations

import contextlib

import torch


def on_inputs_device(x: torch.Tensor):
    """A context in which ``x``'s CUDA device is the current one (nothing for CPU tensors)."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()
