"""Frozen video encoder: a timm Swin Transformer, one pooled vector per frame."""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maven_fast.encoders.base import FrozenEncoder, chunks, seeded, tiny_name
from maven_fast.encoders.hub import hub_offline, unavailable

DEFAULT_VIDEO_ENCODER = "swin_base_patch4_window7_224"
#: Swin-B (``swin_base_patch4_window7_224``) written out: the architecture ``base_random`` builds.
SWIN_BASE_ARGS = {"img_size": 224, "patch_size": 4, "window_size": 7, "embed_dim": 128,
                  "depths": (2, 2, 18, 2), "num_heads": (4, 8, 16, 32), "mlp_ratio": 4.0}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _create_timm_model(name_or_path: str) -> nn.Module:
    import timm

    path = os.path.expanduser(name_or_path)
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "config.json")):
            return timm.create_model(f"local-dir:{path}", pretrained=True, num_classes=0)
        files = [os.path.join(path, f) for f in _WEIGHT_FILES if os.path.isfile(os.path.join(path, f))]
        if not files:
            raise FileNotFoundError(f"{path} holds neither config.json nor {' / '.join(_WEIGHT_FILES)}")
        path = files[0]
    if os.path.isfile(path):
        return timm.create_model(
            DEFAULT_VIDEO_ENCODER, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": path}
        )
    if os.path.isabs(path) or name_or_path.startswith((".", "~")):
        raise FileNotFoundError(f"no such file or directory: {name_or_path}")
    if hub_offline():
        # timm reads HF_HUB_OFFLINE only at import; resolve the cached file ourselves.
        from huggingface_hub import hf_hub_download

        hub_id = timm.models.get_pretrained_cfg(name_or_path).hf_hub_id
        last_error: Exception | None = None
        for filename in _WEIGHT_FILES:
            try:
                cached = hf_hub_download(hub_id, filename, local_files_only=True)
            except Exception as exc:  # noqa: BLE001 - try the next file name
                last_error = exc
                continue
            return timm.create_model(
                name_or_path, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": cached}
            )
        raise OSError(f"{hub_id} is not in the local Hugging Face cache") from last_error
    return timm.create_model(name_or_path, pretrained=True, num_classes=0)


class VideoEncoder(FrozenEncoder):
    """Swin (timm, ``num_classes=0``): ``forward(pixels [N, 3, 224, 224]) -> [N, dim]``.

    :meth:`preprocess` turns uint8 frames ``[N, H, W, 3]`` into normalised
    pixels, as the original (bilinear resize to 224x224, /255, ImageNet mean/std).
    """

    modality = "video"
    image_size = 224

    def __init__(self, model: nn.Module, name: str, batch_size: int = 64, model_args: dict | None = None) -> None:
        super().__init__(name, int(model.num_features))
        self.model = model
        self.batch_size = batch_size
        self.model_args = dict(model_args or {})  # architecture overrides, kept for save_pretrained
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.freeze()

    @classmethod
    def from_pretrained(cls, name_or_path: str = DEFAULT_VIDEO_ENCODER, batch_size: int = 64) -> "VideoEncoder":
        """A timm model name (hub weights), a timm model directory (config.json + weights)
        or a weights file for ``swin_base_patch4_window7_224``."""
        try:
            model = _create_timm_model(name_or_path)
        except Exception as exc:  # noqa: BLE001 - timm/hub raise many types; re-raised with advice
            raise unavailable("video", "VideoEncoder", name_or_path, exc) from exc
        return cls(model, name_or_path, batch_size)

    @classmethod
    def tiny(cls, seed: int = 0, batch_size: int = 64) -> "VideoEncoder":
        """The same timm Swin class with tiny widths (dim 128), random init from ``seed``."""
        import timm

        model_args = {"img_size": 224, "embed_dim": 16, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 2, 2)}
        with seeded(seed):
            model = timm.create_model(DEFAULT_VIDEO_ENCODER, pretrained=False, num_classes=0, **model_args)
        return cls(model, tiny_name("tiny-swin", seed), batch_size, model_args)

    @classmethod
    def base_random(cls, seed: int = 0, device: str | torch.device | None = None,
                    batch_size: int = 64) -> "VideoEncoder":
        """Swin-B at full size (:data:`SWIN_BASE_ARGS`, 1024-d, ~87 M parameters) with random
        weights from ``seed``: no hub, for benchmarks and real-size tests. Its features mean nothing.
        ``device="meta"`` builds the architecture without weights (to inspect it)."""
        import timm
        from timm.models.swin_transformer import SwinTransformer

        with seeded(seed), torch.device(device or "cpu"):
            model = SwinTransformer(num_classes=0, **SWIN_BASE_ARGS)
        if not isinstance(model, timm.models.swin_transformer.SwinTransformer):  # pragma: no cover
            raise TypeError("timm's SwinTransformer is not the expected class")
        return cls(model, tiny_name("base-random-swin", seed), batch_size, dict(SWIN_BASE_ARGS))

    def _set_channels_last(self, enabled: bool) -> None:
        # Swin's patch embedding is a 4x4/stride-4 convolution over the image: channels_last
        # lets oneDNN/cuDNN run it without layout conversions.
        self.channels_last = bool(enabled)
        self.model.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)

    def _window_attentions(self):
        return [m for m in self.model.modules() if hasattr(m, "fused_attn") and hasattr(m, "qkv")]

    def _use_sdpa(self) -> None:
        # timm's WindowAttention computes softmax(qk^T + bias)v by hand unless fused_attn is
        # set (it is opt-in there): switch every block to F.scaled_dot_product_attention.
        for module in self._window_attentions():
            module.fused_attn = True

    def sdpa_enabled(self) -> bool:
        blocks = self._window_attentions()
        return bool(blocks) and all(bool(m.fused_attn) for m in blocks)

    def save_pretrained(self, directory: str) -> None:
        """Write a timm model directory (config.json + model.safetensors) that
        :meth:`from_pretrained` reads back."""
        from timm.models import save_for_hf

        save_for_hf(self.model, directory, model_args=self.model_args, safe_serialization=True)

    @torch.no_grad()
    def preprocess(self, frames: Tensor) -> Tensor:
        """uint8 ``[N, H, W, 3]`` RGB -> float ``[N, 3, 224, 224]`` on the encoder's device."""
        frames = torch.as_tensor(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
            raise ValueError(
                f"frames: expected a uint8 tensor of shape [N, H, W, 3] (RGB), got {list(frames.shape)} {frames.dtype}"
            )
        out = torch.empty(frames.shape[0], 3, self.image_size, self.image_size, device=self.device)
        for part in chunks(frames.shape[0], self.batch_size):
            x = frames[part].to(self.device).permute(0, 3, 1, 2).float().div_(255)
            if x.shape[-2:] != (self.image_size, self.image_size):
                x = F.interpolate(
                    x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True
                ).clamp_(0, 1)
            out[part] = (x - self.mean) / self.std
        return out

    @torch.no_grad()
    def forward(self, pixels: Tensor) -> Tensor:
        """``pixels [N, 3, 224, 224]`` (from :meth:`preprocess`) -> ``[N, dim]``, in chunks of ``batch_size``."""
        size = self.image_size
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, size, size) or not pixels.is_floating_point():
            raise ValueError(
                f"pixels: expected a float tensor of shape [N, 3, {size}, {size}], "
                f"got {list(pixels.shape)} {pixels.dtype}"
            )
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        outputs = [
            self.run_model(pixels[part].to(self.device, self.dtype).contiguous(memory_format=memory_format)).float()
            for part in chunks(pixels.shape[0], self.batch_size)
        ]
        if not outputs:
            return pixels.new_zeros(0, self.dim)
        return torch.cat(outputs)
