"""``torch.nn`` modules of maven_fast."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from maven_fast.backends import BACKEND_CHOICES
from maven_fast.ops.cross_modal import PATHWAYS, CrossModalParams, cross_modal_block
from maven_fast.ops.dropout import dropout
from maven_fast.ops.linear import linear
from maven_fast.ops.polar_head import PolarHeadOutput, polar_head


def autocast_linear_inputs(
    who: str, x: Tensor, weight: Tensor, bias: Tensor | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(x, weight, bias)`` in the dtype ``F.linear`` would compute in: what autocast does
    for ``nn.Linear`` (every floating input but float64 in the autocast dtype, fp32
    activations included), for ops autocast does not know. Outside autocast the dtypes
    must already agree; a TypeError names both."""
    autocast = torch.is_autocast_enabled(x.device.type)
    if autocast and x.dtype != torch.float64:
        x = x.to(torch.get_autocast_dtype(x.device.type))
    if autocast and weight.dtype != x.dtype:
        weight = weight.to(x.dtype)
        bias = None if bias is None else bias.to(x.dtype)
    elif weight.dtype != x.dtype:
        raise TypeError(
            f"{who}: x has dtype {x.dtype} but the layer's parameters are {weight.dtype}; "
            "cast one to the other or run under torch.autocast"
        )
    return x, weight, bias


class _BackendAttribute:
    """``module.backend``: one of :data:`~maven_fast.backends.BACKEND_CHOICES`, checked on assignment."""

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        if value not in BACKEND_CHOICES:
            raise ValueError(f"{type(self).__name__}: unknown backend {value!r}; choose one of {BACKEND_CHOICES}")
        self._backend = value


class Linear(_BackendAttribute, nn.Linear):
    """``nn.Linear`` whose products run through :func:`maven_fast.ops.linear`.

    It *is* an ``nn.Linear`` (same parameters, ``state_dict`` and initialisation),
    so it replaces one anywhere. ``backend="eager"`` is ``nn.Linear`` itself; ``auto``
    and ``cpu`` run CPU tensors on maven_fast's GEMM dispatch (its own GEMM kernels
    where they beat the library on this CPU), and CUDA tensors on torch's (cuBLAS).
    Under ``torch.autocast`` the inputs are cast as autocast casts them for
    ``nn.Linear``. Assign ``layer.backend`` at any time.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, backend: str = "auto",
                 device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.backend = backend

    @classmethod
    def sharing(cls, module: nn.Linear, backend: str = "auto") -> "Linear":
        """A Linear holding ``module``'s own parameter objects (no copy): a drop-in
        replacement for an ``nn.Linear`` inside a model built elsewhere (timm, transformers)."""
        layer = cls(module.in_features, module.out_features, bias=module.bias is not None, backend=backend,
                    device="meta")
        layer.weight, layer.bias = module.weight, module.bias
        layer.train(module.training)
        return layer

    def forward(self, x: Tensor) -> Tensor:
        if self._backend == "eager" or x.device.type != "cpu":
            # torch's F.linear, autocast included (a CPU-only backend refuses other devices here)
            return linear(x, self.weight, self.bias, backend=self._backend)
        x, weight, bias = autocast_linear_inputs("Linear", x, self.weight, self.bias)
        return linear(x, weight, bias, backend=self._backend)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, backend={self._backend!r}"


class Dropout(_BackendAttribute, nn.Dropout):
    """``nn.Dropout`` whose masks come from :func:`maven_fast.ops.dropout` (the ``cpu`` backend:
    a counter-based mask built on all threads, several times faster than torch's CPU
    ``bernoulli_``). ``backend="eager"`` is ``nn.Dropout`` itself; off the CPU, ``F.dropout``."""

    def __init__(self, p: float = 0.5, backend: str = "auto") -> None:
        super().__init__(p)
        self.backend = backend

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training, backend=self._backend)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, backend={self._backend!r}"


class PolarHead(_BackendAttribute, nn.Linear):
    """The MAVEN output layer: ``Linear(in_features, 2)`` read as polar (theta, intensity).

    It *is* an ``nn.Linear`` (parameters ``weight [2, in_features]`` and
    ``bias [2]``), so it sits where the original model's last Linear sat and an
    eager and a fused head share one ``state_dict``. ``bounded=True`` gives
    theta = pi*tanh(r0), intensity = sqrt(2)*sigmoid(r1) (the ``paper`` preset);
    ``bounded=False`` reads the raw outputs as theta and intensity, as the
    original code does. The backend can be changed at any time by assigning
    ``head.backend``.

    ``forward(x [..., in_features], target=None [..., 2], mask=None [...])``
    returns a :class:`~maven_fast.ops.PolarHeadOutput` with the leading
    dimensions of ``x`` restored.
    """

    def __init__(
        self,
        in_features: int = 256,
        bounded: bool = True,
        backend: str = "auto",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(in_features, 2, bias=True, device=device, dtype=dtype)
        self.bounded = bounded
        self.backend = backend

    def forward(self, x: Tensor, target: Tensor | None = None, mask: Tensor | None = None) -> PolarHeadOutput:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"PolarHead: x must have {self.in_features} features in its last dimension, got shape {tuple(x.shape)}"
            )
        lead = x.shape[:-1]
        x, weight, bias = autocast_linear_inputs("PolarHead", x, self.weight, self.bias)
        flat_target = None if target is None else target.reshape(-1, 2)
        flat_mask = None if mask is None else mask.reshape(-1)
        out = polar_head(
            x.reshape(-1, self.in_features), weight, bias, flat_target, flat_mask,
            bounded=self.bounded, backend=self._backend,
        )
        return PolarHeadOutput(
            out.valence_arousal.reshape(*lead, 2),
            out.theta_intensity.reshape(*lead, 2),
            out.loss,
            out.n_valid,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bounded={self.bounded}, backend={self._backend!r}"


class CrossModalBlock(_BackendAttribute, nn.Module):
    """MAVEN's six-pathway cross-modal block on projected sequences (SPEC 3.1).

    Holds ``attn_{v2a,v2t,a2v,a2t,t2v,t2a}`` (``nn.MultiheadAttention(embed_dim,
    num_heads, dropout=attn_dropout, batch_first=True)``), the shared
    ``layer_norm`` and ``dropout`` under the original MAVEN names, so a model's
    cross-modal module can inherit from it (adding ``video_proj`` etc.) and keep
    its ``state_dict`` keys. ``block(x_v, x_a, x_t, v_len, a_len, t_len)``
    returns ``(video_enh, audio_enh, text_enh)``; ``backend`` is ``auto | eager |
    cpu | cuda | triton`` and can be reassigned at any time (``module.backend = "eager"``); parameters are the same in every backend.
    """

    def __init__(
        self,
        embed_dim: int = 512,
        num_heads: int = 2,
        attn_dropout: float = 0.1,
        dropout: float = 0.1,
        backend: str = "auto",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        for p in PATHWAYS:
            setattr(self, f"attn_{p}", nn.MultiheadAttention(embed_dim, num_heads, dropout=attn_dropout,
                                                             batch_first=True, **kw))
        self.layer_norm = nn.LayerNorm(embed_dim, **kw)
        self.dropout = nn.Dropout(dropout)
        self.backend = backend

    def params(self) -> CrossModalParams:
        return CrossModalParams.from_modules({p: getattr(self, f"attn_{p}") for p in PATHWAYS}, self.layer_norm)

    def block(
        self, x_v: Tensor, x_a: Tensor, x_t: Tensor,
        v_len: Tensor | None = None, a_len: Tensor | None = None, t_len: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        return cross_modal_block(
            x_v, x_a, x_t, v_len, a_len, t_len, params=self.params(), dropout_p=self.dropout.p,
            training=self.training, backend=self._backend,
        )

    forward = block

    def extra_repr(self) -> str:
        return f"backend={self._backend!r}"
