r"""The six-pathway cross-modal attention block of MAVEN.

After per-modality projections to ``embed_dim`` (``video_proj``, ``audio_proj``,
``text_proj``), six ``nn.MultiheadAttention`` pathways ``attn_x2y`` let modality
x query modality y (query from x, key and value from y), and each modality is
combined with ONE shared Dropout and ONE shared LayerNorm:

.. math::
    \tilde v = \mathrm{LN}(\mathrm{Drop}((v + \mathrm{v2a} + \mathrm{v2t}) / 3)),\quad
    \tilde a = \mathrm{LN}(\mathrm{Drop}((a + \mathrm{a2v} + \mathrm{a2t}) / 3)),\quad
    \tilde t = \mathrm{LN}(\mathrm{Drop}((t + \mathrm{t2v} + \mathrm{t2a}) / 3))

Parameter names are those of the original ``MultiHeadCrossModalAttention``, so
its checkpoints load unchanged. Everything after the three projections is
:meth:`CrossModalAttention.block`, the part a fused backend replaces.

``block`` runs the modules themselves for ``backend="eager"`` (the reference)
and the fused op :func:`maven_fast.ops.cross_modal.cross_modal_block` on the
same parameters for every other backend.

Key padding: with key lengths, padded keys get no attention weight. A query
whose keys are ALL padding (key length 0) has an empty attention sum: its
context vector is zero, so the pathway outputs ``out_proj(0) = out_proj.bias``
(never NaN, which ``nn.MultiheadAttention`` gives there on some paths).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from maven_fast.backends import BACKEND_CHOICES, BackendUnavailable, backend_problems
from maven_fast.nn import Linear
from maven_fast.ops.cross_modal import cross_modal_block

PATHWAYS: tuple[str, ...] = ("v2a", "v2t", "a2v", "a2t", "t2v", "t2a")


_NATURAL_DEVICE = {"eager": "cpu", "cpu": "cpu", "cuda": "cuda", "triton": "cuda"}


def check_cross_modal_backend(backend: str) -> None:
    """Raises BackendUnavailable naming every reason ``backend`` can never run here
    (unknown name, extension or CUDA kernels not built, Triton missing).

    Whether the tensors are on the right device is checked when the block runs
    (a model is often built on the CPU and moved afterwards); ``auto`` is
    resolved then too.
    """
    if backend not in BACKEND_CHOICES:
        raise BackendUnavailable(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    if backend == "auto":
        return
    device = _NATURAL_DEVICE[backend]
    problems = backend_problems(backend, device)
    if problems:
        raise BackendUnavailable(
            f"cross-modal attention: backend {backend!r} cannot run on {device}:\n  - " + "\n  - ".join(problems)
            + "\n(backend='eager' runs the pure-PyTorch reference everywhere)"
        )


def key_padding_mask(lengths: Tensor, steps: int) -> Tensor:
    """``[B, steps]`` bool, True at padded positions (``>= length``), as nn.MultiheadAttention wants."""
    return torch.arange(steps, device=lengths.device).unsqueeze(0) >= lengths.unsqueeze(1)


class CrossModalAttention(nn.Module):
    """Projections + six attention pathways + shared Dropout/LayerNorm (module docstring)."""

    def __init__(
        self,
        video_dim: int,
        audio_dim: int,
        text_dim: int,
        embed_dim: int = 512,
        num_heads: int = 2,
        dropout: float = 0.1,
        backend: str = "eager",
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.video_proj = Linear(video_dim, embed_dim, backend=backend)
        self.audio_proj = Linear(audio_dim, embed_dim, backend=backend)
        self.text_proj = Linear(text_dim, embed_dim, backend=backend)
        for pathway in PATHWAYS:
            self.add_module(
                f"attn_{pathway}", nn.MultiheadAttention(embed_dim, num_heads, dropout=dropout, batch_first=True)
            )
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(embed_dim)
        self.backend = backend

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        check_cross_modal_backend(value)
        for projection in (self.video_proj, self.audio_proj, self.text_proj):
            projection.backend = value
        self._backend = value

    def pathway(self, name: str) -> nn.MultiheadAttention:
        return getattr(self, f"attn_{name}")

    def project(self, video: Tensor, audio: Tensor, text: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Project to ``embed_dim``; a pooled ``[B, D]`` input becomes a length-1 sequence ``[B, 1, E]``."""
        x_v = self.video_proj(video)
        x_a = self.audio_proj(audio)
        x_t = self.text_proj(text)
        if x_a.ndim == 2:
            x_a = x_a.unsqueeze(1)
        if x_t.ndim == 2:
            x_t = x_t.unsqueeze(1)
        return x_v, x_a, x_t

    def block(
        self,
        x_v: Tensor,
        x_a: Tensor,
        x_t: Tensor,
        v_len: Tensor | None = None,
        a_len: Tensor | None = None,
        t_len: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The six pathways and their combination on projected sequences.

        ``x_v [B, Tv, E]``, ``x_a [B, Ta, E]``, ``x_t [B, Tt, E]``; lengths ``[B]``
        int (None: all positions valid) mask the KEYS of every pathway reading
        that modality. Returns ``(video_enh, audio_enh, text_enh)`` with the input
        shapes; values at padded query positions are computed but meaningless.
        """
        if self._backend == "eager":
            return self._eager_block(x_v, x_a, x_t, v_len, a_len, t_len)
        attns = {name: self.pathway(name) for name in PATHWAYS}
        return cross_modal_block(
            x_v, x_a, x_t, v_len, a_len, t_len, params=(attns, self.layer_norm), dropout_p=self.dropout.p,
            training=self.training, backend=self._backend,
        )

    def _eager_block(self, x_v, x_a, x_t, v_len, a_len, t_len):
        v2a = self._attend("v2a", x_v, x_a, a_len)
        v2t = self._attend("v2t", x_v, x_t, t_len)
        a2v = self._attend("a2v", x_a, x_v, v_len)
        a2t = self._attend("a2t", x_a, x_t, t_len)
        t2v = self._attend("t2v", x_t, x_v, v_len)
        t2a = self._attend("t2a", x_t, x_a, a_len)
        video_enh = self.layer_norm(self.dropout((x_v + v2a + v2t) / 3))
        audio_enh = self.layer_norm(self.dropout((x_a + a2v + a2t) / 3))
        text_enh = self.layer_norm(self.dropout((x_t + t2v + t2a) / 3))
        return video_enh, audio_enh, text_enh

    def _attend(self, name: str, query: Tensor, keys: Tensor, key_lengths: Tensor | None) -> Tensor:
        attention = self.pathway(name)
        if key_lengths is None:
            return attention(query, keys, keys, need_weights=False)[0]
        padding = key_padding_mask(key_lengths, keys.shape[1])
        no_keys = key_lengths == 0
        # A row with every key masked is NaN on some attention paths (need_weights=True, some
        # fused CUDA kernels); let those rows see all keys, then overwrite them with out_proj(0).
        padding = padding & ~no_keys.unsqueeze(1)
        out = attention(query, keys, keys, key_padding_mask=padding, need_weights=False)[0]
        bias = attention.out_proj.bias
        empty = out.new_zeros(out.shape[-1]) if bias is None else bias.to(out.dtype)
        return torch.where(no_keys.view(-1, 1, 1), empty, out)

    def forward(
        self,
        video: Tensor,
        audio: Tensor,
        text: Tensor,
        video_lengths: Tensor | None = None,
        audio_lengths: Tensor | None = None,
        text_lengths: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        x_v, x_a, x_t = self.project(video, audio, text)
        return self.block(x_v, x_a, x_t, video_lengths, audio_lengths, text_lengths)
