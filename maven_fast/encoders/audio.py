r"""Frozen audio encoder: HuBERT (transformers), a 50 Hz frame sequence per waveform.

Each waveform is first normalised as ``Wav2Vec2FeatureExtractor(do_normalize=True)``
does, over its valid samples: :math:`(x - \mu) / \sqrt{\sigma^2 + 10^{-7}}`
(when the checkpoint's preprocessor config says so; the original ran that
feature extractor).

Batching is exact: HuBERT-base's feature encoder (``feat_extract_norm="group"``)
normalises over time, so zero padding would change every frame of a shorter
clip; clips of different lengths therefore run in separate calls (clips of equal
length share one). Checkpoints with ``feat_extract_norm="layer"`` run the whole
batch at once with an attention mask.
"""
from __future__ import annotations

import warnings
from collections import defaultdict

import torch
from torch import Tensor

from maven_fast.encoders.base import FrozenEncoder, chunks, seeded, tiny_name
from maven_fast.encoders.hub import hub_offline, is_local, unavailable

DEFAULT_AUDIO_ENCODER = "facebook/hubert-base-ls960"


def hubert_base_config():
    """HuBERT-base (``facebook/hubert-base-ls960``'s architecture), written out: 12 layers of
    768 wide, 12 heads, 3072 FFN, the 7-layer conv feature encoder (512 channels, strides
    5,2,2,2,2,2,2: 320 samples per frame) with group norm, 128-tap conv position embedding."""
    from transformers import HubertConfig

    return HubertConfig(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        hidden_act="gelu", feat_extract_norm="group", feat_extract_activation="gelu",
        conv_dim=(512,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_bias=False, num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
        do_stable_layer_norm=False, layer_norm_eps=1e-5,
    )


def _set_transformers_sdpa(model) -> None:
    """Ask a transformers model for its SDPA attention implementation."""
    setter = getattr(model, "set_attn_implementation", None)
    if setter is not None:
        setter("sdpa")
    else:  # older transformers
        model.config._attn_implementation = "sdpa"


def _normalise(x: Tensor) -> Tensor:
    """Zero mean, unit variance over the last dimension (Wav2Vec2FeatureExtractor's formula)."""
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-7)


class AudioEncoder(FrozenEncoder):
    """HuBERT: ``forward(waveform [B, S] at 16 kHz, lengths [B]) -> (frames [B, Ta, dim], frame_lengths [B])``.

    :meth:`pool` gives the original's one vector per clip (mean over frames).
    """

    modality = "audio"
    sample_rate = 16000

    def __init__(self, model, name: str, normalize: bool = True, batch_size: int = 8) -> None:
        super().__init__(name, int(model.config.hidden_size))
        self.model = model
        self.normalize = normalize
        self.batch_size = batch_size
        self.freeze()

    @classmethod
    def from_pretrained(
        cls, name_or_path: str = DEFAULT_AUDIO_ENCODER, normalize: bool | None = None, batch_size: int = 8
    ) -> "AudioEncoder":
        """Hub name or local directory (``save_pretrained`` layout). ``normalize=None`` reads
        ``do_normalize`` from the checkpoint's preprocessor config (True if it has none)."""
        from transformers import HubertModel, Wav2Vec2FeatureExtractor

        local_only = hub_offline() or is_local(name_or_path)
        try:
            model = HubertModel.from_pretrained(name_or_path, local_files_only=local_only)
        except Exception as exc:  # noqa: BLE001 - transformers/hub raise many types; re-raised with advice
            raise unavailable("audio", "AudioEncoder", name_or_path, exc) from exc
        if normalize is None:
            try:
                extractor = Wav2Vec2FeatureExtractor.from_pretrained(name_or_path, local_files_only=local_only)
                normalize = bool(extractor.do_normalize)
            except Exception:  # noqa: BLE001 - a missing preprocessor config is not fatal
                warnings.warn(
                    f"{name_or_path}: no preprocessor config found; normalising waveforms (do_normalize=True)"
                )
                normalize = True
        return cls(model, name_or_path, normalize, batch_size)

    @classmethod
    def tiny(cls, seed: int = 0, batch_size: int = 8) -> "AudioEncoder":
        """HubertModel with HuBERT-base's conv strides (320 samples per frame) and tiny widths (dim 32)."""
        from transformers import HubertConfig, HubertModel

        config = HubertConfig(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
            conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        )
        with seeded(seed):
            model = HubertModel(config)
        return cls(model, tiny_name("tiny-hubert", seed), normalize=True, batch_size=batch_size)

    @classmethod
    def base_random(cls, seed: int = 0, device: str | torch.device | None = None,
                    batch_size: int = 8) -> "AudioEncoder":
        """HuBERT-base at full size (the architecture of ``facebook/hubert-base-ls960``, written
        out in :func:`hubert_base_config`; 768-d, ~94 M parameters) with random weights from
        ``seed``: no hub, for benchmarks and real-size tests. Its features mean nothing.
        ``device="meta"`` builds the architecture without weights (to inspect it)."""
        from transformers import HubertModel

        with seeded(seed), torch.device(device or "cpu"):
            model = HubertModel(hubert_base_config())
        return cls(model, tiny_name("base-random-hubert", seed), normalize=True, batch_size=batch_size)

    _compile_dynamic = True  # clip lengths vary

    def _use_sdpa(self) -> None:
        _set_transformers_sdpa(self.model)

    def sdpa_enabled(self) -> bool:
        return getattr(self.model.config, "_attn_implementation", None) == "sdpa"

    def save_pretrained(self, directory: str) -> None:
        """Write the model and a matching preprocessor config (``save_pretrained`` layout)."""
        from transformers import Wav2Vec2FeatureExtractor

        self.model.save_pretrained(directory)
        Wav2Vec2FeatureExtractor(sampling_rate=self.sample_rate, do_normalize=self.normalize).save_pretrained(directory)

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """Number of HuBERT frames for waveforms of ``lengths`` samples (0 below one receptive field)."""
        return self.model._get_feat_extract_output_lengths(lengths.long()).clamp_min(0)

    @torch.no_grad()
    def forward(self, waveform: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        waveform = torch.as_tensor(waveform)
        if waveform.ndim != 2 or not waveform.is_floating_point():
            raise ValueError(
                f"waveform: expected a float tensor of shape [B, S] (mono, {self.sample_rate} Hz), "
                f"got {list(waveform.shape)} {waveform.dtype}"
            )
        batch, samples = waveform.shape
        if lengths is None:
            lengths = torch.full((batch,), samples, dtype=torch.long)
        lengths = torch.as_tensor(lengths).long().cpu()
        if lengths.shape != (batch,):
            raise ValueError(f"lengths: expected shape [B] = [{batch}], got {list(lengths.shape)}")
        if batch and (int(lengths.min()) < 0 or int(lengths.max()) > samples):
            raise ValueError(
                f"lengths: values must lie in [0, {samples}] (the waveform's length), got {lengths.tolist()}"
            )
        n_frames = self.frame_lengths(lengths)
        out = torch.zeros(batch, int(n_frames.max()) if batch else 0, self.dim, device=self.device, dtype=self.dtype)
        if self.model.config.feat_extract_norm == "layer":
            self._run_masked(waveform, lengths, n_frames, out)
        else:
            self._run_by_length(waveform, lengths, n_frames, out)
        return out, n_frames.to(self.device)

    def _prepare(self, x: Tensor) -> Tensor:
        x = x.to(self.device, self.dtype)
        return _normalise(x) if self.normalize else x

    def _run_by_length(self, waveform: Tensor, lengths: Tensor, n_frames: Tensor, out: Tensor) -> None:
        groups: dict[int, list[int]] = defaultdict(list)
        for i, (length, frames) in enumerate(zip(lengths.tolist(), n_frames.tolist())):
            if frames > 0:
                groups[length].append(i)
        for length, items in groups.items():
            for part in chunks(len(items), self.batch_size):
                idx = torch.tensor(items[part])
                hidden = self.run_model(self._prepare(waveform[idx, :length])).last_hidden_state.float()
                out[idx.to(out.device), : hidden.shape[1]] = hidden

    def _run_masked(self, waveform: Tensor, lengths: Tensor, n_frames: Tensor, out: Tensor) -> None:
        for part in chunks(waveform.shape[0], self.batch_size):
            longest = int(lengths[part].max())
            x = waveform[part, :longest].to(self.device, self.dtype)
            valid = torch.arange(longest, device=self.device) < lengths[part].to(self.device).unsqueeze(1)
            if self.normalize:
                n = valid.sum(1, keepdim=True).clamp_min(1)
                mean = (x * valid).sum(1, keepdim=True) / n
                var = (((x - mean) * valid) ** 2).sum(1, keepdim=True) / n
                x = (x - mean) / torch.sqrt(var + 1e-7)
            x = x * valid
            hidden = self.run_model(x, attention_mask=valid.long()).last_hidden_state.float()
            keep = min(hidden.shape[1], out.shape[1])
            frame_valid = torch.arange(keep, device=self.device) < n_frames[part].to(self.device).unsqueeze(1)
            out[part, :keep] = hidden[:, :keep] * frame_valid.unsqueeze(-1)

    @staticmethod
    def pool(frames: Tensor, frame_lengths: Tensor) -> Tensor:
        """Mean over each clip's valid frames, ``[B, Ta, dim] -> [B, dim]`` (zeros for a clip with none).

        The original ran each clip alone, so its mean had no batch padding in it;
        but its collator had first cut or zero-padded every clip to 16000 samples
        (1 s), so for clips shorter than 1 s its mean includes frames of that zero
        padding, and for longer ones it covers only the first second. To match it,
        cut/pad the waveform to 16000 samples before :meth:`forward`.
        """
        valid = torch.arange(frames.shape[1], device=frames.device) < frame_lengths.to(frames.device).unsqueeze(1)
        total = (frames * valid.unsqueeze(-1)).sum(1)
        return total / frame_lengths.to(frames.device).clamp_min(1).unsqueeze(1).to(frames.dtype)
