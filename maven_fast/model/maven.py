"""MAVEN: the eager reference model, in the three variants of :class:`~maven_fast.config.MavenConfig`.

Module tree (state_dict prefixes):

* all variants: ``multihead_attention`` (:class:`CrossModalAttention`) and
  ``regressor.fc.{0,3,6}`` (:class:`Regressor`).
* ``reference_mlp``: nothing else; audio/text enhanced vectors are repeated on
  every frame, ``[video_enh, audio_enh, text_enh]`` (3E) goes to the head,
  whose last layer is read as unbounded (theta, intensity).
* ``reference_beit``: ``projection_layer`` (3E -> C) and ``beit3_encoders.{k}``,
  ``num_branches`` BEiT stacks run on the same input, concatenated (kC) -> head
  that outputs (valence, arousal) directly.
* ``paper``: audio/text sequences with masks; enhanced audio/text interpolated
  onto the video timeline (:func:`resample_to_timeline`), concatenated,
  ``projection_layer`` (3E -> C) + ``temporal_position_embedding`` [max_video_len, C],
  ``temporal_encoder`` (``beit_layers`` pre-LN BEiT layers, keys masked by the
  video lengths), ``temporal_norm`` (final LayerNorm of the pre-LN stack), head
  with the bounded polar output.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from maven_fast.config import MavenConfig
from maven_fast.metrics import ccc_loss, masked_mse
from maven_fast.model.beit import BeitEncoderStack, load_pretrained_beit_layers
from maven_fast.model.cross_modal import CrossModalAttention, check_cross_modal_backend
from maven_fast.model.inputs import (
    MavenInputError, check_batch, check_features, check_lengths, check_targets, valid_mask,
)
from maven_fast.model.outputs import MavenOutput
from maven_fast.model.regressor import Regressor
from maven_fast.model.timeline import resample_to_timeline
from maven_fast.nn import Dropout, Linear, PolarHead
from maven_fast.ops.frame_concat_linear import frame_concat_linear


class MAVEN(nn.Module):
    """Multi-modal Attention for Valence-Arousal Emotion Network.

    ``MAVEN(config=MavenConfig.paper(), backend="eager")``. ``backend`` selects
    the implementation of the cross-modal block and the polar head (see
    :meth:`set_backend`); parameters and their names do not depend on it.

    ``forward(video, audio, text, video_lengths=None, audio_lengths=None,
    text_lengths=None, targets=None, mask=None) -> MavenOutput``:

    * ``video [B, Tv, Dv]``; reference variants: ``audio [B, Da]``, ``text [B, Dt]``
      (pooled); ``paper``: ``audio [B, Ta, Da]``, ``text [B, Tt, Dt]``.
    * lengths: int ``[B]``, None = all positions valid.
    * ``targets [B, Tv, 2]`` (valence, arousal) and optional ``mask [B, Tv]`` bool
      (frames with a valid label) add the loss over frames that are valid by
      both ``mask`` and ``video_lengths``.
    """

    def __init__(self, config: MavenConfig | None = None, backend: str = "eager") -> None:
        super().__init__()
        config = copy.deepcopy(config if config is not None else MavenConfig.paper())
        config.validate()
        check_cross_modal_backend(backend)
        self.config = config
        enc, cm, beit = config.encoders, config.cross_modal, config.beit
        self.multihead_attention = CrossModalAttention(
            enc.video_dim, enc.audio_dim, enc.text_dim, cm.embed_dim, cm.num_heads, cm.dropout, backend
        )
        fused = 3 * cm.embed_dim
        if config.variant == "reference_mlp":
            head_in = fused
        elif config.variant == "reference_beit":
            self.projection_layer = Linear(fused, beit.hidden_size)
            self.beit3_encoders = nn.ModuleList(BeitEncoderStack(beit) for _ in range(beit.num_branches))
            head_in = beit.hidden_size * beit.num_branches
        else:
            self.projection_layer = Linear(fused, beit.hidden_size)
            self.temporal_position_embedding = nn.Parameter(
                torch.empty(config.temporal.max_video_len, beit.hidden_size)
            )
            nn.init.trunc_normal_(self.temporal_position_embedding, std=beit.initializer_range)
            self.temporal_encoder = BeitEncoderStack(beit)
            self.temporal_norm = nn.LayerNorm(beit.hidden_size, eps=beit.layer_norm_eps)
            head_in = beit.hidden_size
        reg = config.regressor
        self.regressor = Regressor(head_in, reg.hidden_sizes, reg.dropouts, reg.output, reg.bounded, backend)
        self.set_backend(backend)
        if config.variant != "reference_mlp" and beit.init_from:
            self.load_beit_weights(beit.init_from)

    # ------------------------------------------------------------------ backends
    @property
    def backend(self) -> str:
        return self._backend

    def set_backend(self, backend: str) -> "MAVEN":
        """Switch the implementation of the cross-modal block, the polar head and every
        linear layer (:class:`maven_fast.nn.Linear`: on the CPU the BEiT layers',
        projections' and regressor's products run on maven_fast's GEMM dispatch) and
        dropout layer (:class:`maven_fast.nn.Dropout`: counter-based masks on the CPU).

        ``eager`` is the pure-PyTorch reference; ``cpu``, ``cuda`` and ``triton``
        run the fused ops (:mod:`maven_fast.backends`); ``auto`` picks the fused
        backend for the tensors' device at run time. A backend that cannot run
        on the model's device raises :class:`~maven_fast.BackendUnavailable`
        naming why; nothing falls back silently. Parameters are shared, so the
        state_dict is unchanged.
        """
        check_cross_modal_backend(backend)
        self.multihead_attention.backend = backend
        for module in self.modules():
            if isinstance(module, (Dropout, Linear, PolarHead)):
                module.backend = backend
        self._backend = backend
        return self

    def beit_stacks(self) -> list[BeitEncoderStack]:
        if self.config.variant == "reference_beit":
            return list(self.beit3_encoders)
        if self.config.variant == "paper":
            return [self.temporal_encoder]
        return []

    def load_beit_weights(self, name_or_path: str) -> "MAVEN":
        """Initialise every BEiT stack from a pretrained BEiT (hub name or local directory)."""
        if not self.beit_stacks():
            raise ValueError("the reference_mlp variant has no BEiT layers to initialise")
        load_pretrained_beit_layers(name_or_path, self.beit_stacks(), self.config.beit)
        return self

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        video: Tensor,
        audio: Tensor,
        text: Tensor,
        video_lengths: Tensor | None = None,
        audio_lengths: Tensor | None = None,
        text_lengths: Tensor | None = None,
        targets: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> MavenOutput:
        v_len, a_len, t_len = self._check_inputs(video, audio, text, video_lengths, audio_lengths, text_lengths)
        batch, frames = video.shape[:2]
        check_targets(targets, mask, batch, frames)
        v_valid = valid_mask(v_len, batch, frames, video.device)

        attention = self.multihead_attention
        x_v, x_a, x_t = attention.project(video, audio, text)
        use_masks = self.config.cross_modal.key_padding_masks
        v_enh, a_enh, t_enh = attention.block(
            x_v, x_a, x_t, v_len if use_masks else None, a_len if use_masks else None, t_len if use_masks else None
        )
        loss_mask = mask if v_valid is None else (v_valid if mask is None else mask & v_valid)
        head_mask = loss_mask if targets is not None else None
        if self.config.variant == "reference_mlp" and self._backend != "eager":
            # [v, a, t] per frame with a, t constant over frames: the first regressor layer's
            # audio/text products once per item, the concatenation never built (SPEC 6).
            first = self.regressor.fc[0]
            hidden = frame_concat_linear(first.weight, first.bias, v_enh, a_enh, t_enh)
            head = self.regressor(None, targets, head_mask, first_layer=hidden)
        else:
            features = self._frame_features(v_enh, a_enh, t_enh, v_len, a_len, t_len, v_valid if use_masks else None)
            head = self.regressor(features, targets, head_mask)
        output = MavenOutput(head.valence_arousal, head.theta_intensity)
        if targets is not None:
            self._add_loss(output, head.loss, head.n_valid, targets, loss_mask)
        return output

    def _frame_features(self, v_enh, a_enh, t_enh, v_len, a_len, t_len, v_valid) -> Tensor:
        batch, frames, _ = v_enh.shape
        variant = self.config.variant
        if variant == "paper":
            a_on_v = resample_to_timeline(a_enh, a_len, v_len, frames)
            t_on_v = resample_to_timeline(t_enh, t_len, v_len, frames)
        else:
            a_on_v = a_enh.expand(batch, frames, -1)
            t_on_v = t_enh.expand(batch, frames, -1)
        fused = torch.cat([v_enh, a_on_v, t_on_v], dim=-1)
        if variant == "reference_mlp":
            return fused
        projected = self.projection_layer(fused)
        if variant == "reference_beit":
            return torch.cat([stack(projected, v_valid) for stack in self.beit3_encoders], dim=-1)
        hidden = projected + self.temporal_position_embedding[:frames]
        return self.temporal_norm(self.temporal_encoder(hidden, v_valid))

    def _add_loss(self, output: MavenOutput, mse: Tensor, n_valid: Tensor, targets: Tensor, loss_mask) -> None:
        weights = self.config.loss
        output.mse, output.n_valid = mse, n_valid
        output.loss = weights.mse_weight * mse
        if weights.ccc_weight:
            output.ccc_loss = ccc_loss(output.valence_arousal, targets, loss_mask)
            output.loss = output.loss + weights.ccc_weight * output.ccc_loss

    def loss(self, output: MavenOutput, targets: Tensor, mask: Tensor | None = None) -> Tensor:
        """The configured loss of an existing output (eager; ``forward(..., targets=)`` gives the same)."""
        weights = self.config.loss
        total = weights.mse_weight * masked_mse(output.valence_arousal, targets, mask)
        if weights.ccc_weight:
            total = total + weights.ccc_weight * ccc_loss(output.valence_arousal, targets, mask)
        return total

    # ------------------------------------------------------------------ input checks
    def _check_inputs(self, video, audio, text, video_lengths, audio_lengths, text_lengths):
        enc = self.config.encoders
        check_features("video", video, f"[B, Tv, {enc.video_dim}]", 3, enc.video_dim)
        batch, frames = video.shape[:2]
        if self.config.pooled_inputs:
            check_features("audio", audio, f"[B, {enc.audio_dim}] (pooled, {self.config.variant})", 2, enc.audio_dim)
            check_features("text", text, f"[B, {enc.text_dim}] (pooled, {self.config.variant})", 2, enc.text_dim)
            for name, lengths in (("audio_lengths", audio_lengths), ("text_lengths", text_lengths)):
                if lengths is not None:
                    raise MavenInputError(
                        f"{name}: the {self.config.variant} variant takes pooled audio/text vectors; "
                        "lengths apply to sequences (the paper variant) and must be None here"
                    )
        else:
            check_features("audio", audio, f"[B, Ta, {enc.audio_dim}]", 3, enc.audio_dim)
            check_features("text", text, f"[B, Tt, {enc.text_dim}]", 3, enc.text_dim)
            if frames > self.config.temporal.max_video_len:
                raise MavenInputError(
                    f"video: {frames} frames exceed temporal.max_video_len={self.config.temporal.max_video_len} "
                    "(the length of the temporal position embedding); split the segment or raise it"
                )
        check_batch(batch, audio=audio, text=text)
        v_len = check_lengths("video_lengths", video_lengths, batch, frames, video.device)
        a_len = check_lengths("audio_lengths", audio_lengths, batch, audio.shape[1], video.device)
        t_len = check_lengths("text_lengths", text_lengths, batch, text.shape[1], video.device)
        return v_len, a_len, t_len

    def extra_repr(self) -> str:
        return f"variant={self.config.variant!r}, backend={self._backend!r}"
