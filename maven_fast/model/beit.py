r"""BEiT-style pre-LN self-attention layers with layer scale and drop path.

One layer (the BEiT v1 block, as ``transformers.BeitLayer`` computes it):

.. math::
    h = x + \mathrm{DropPath}(\lambda_1 \odot \mathrm{Drop}(\mathrm{Attn}(\mathrm{LN}_1(x))))

    y = h + \mathrm{DropPath}(\lambda_2 \odot \mathrm{Drop}(W_2\,\mathrm{act}(W_1 \mathrm{LN}_2(h))))

with softmax attention :math:`\mathrm{softmax}(QK^\top/\sqrt{d_h} + M)V` over the
keys allowed by the key padding mask ``M``. Parameter names follow the BEiT
layer of transformers 4.x (``attention.attention.query`` ...,
``intermediate.dense``, ``output.dense``, ``lambda_1``), which is what the
original ``Train_BEiT.py`` checkpoints contain, so they load unchanged; pretrained
BEiT weights of the current transformers layout are renamed on load
(:func:`load_pretrained_beit_layers`).
"""
from __future__ import annotations

import os
import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maven_fast.config import BeitConfig
from maven_fast.nn import Dropout, Linear

_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "gelu_new": lambda: nn.GELU(approximate="tanh")}


def masked_attention(q: Tensor, k: Tensor, v: Tensor, key_valid: Tensor | None, dropout_p: float) -> Tensor:
    """``softmax(q k^T / sqrt(d)) v`` over valid keys; ``q, k, v [B, H, T, d]``, ``key_valid [B, Tk]``.

    A row with no valid key returns zeros (an empty weighted sum), never NaN.
    """
    if key_valid is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    has_keys = key_valid.any(dim=1)
    allowed = (key_valid | ~has_keys.unsqueeze(1))[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p)
    return out * has_keys.view(-1, 1, 1, 1).to(out.dtype)


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability ``p`` (training only)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x * torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep) / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class _SelfAttentionProjections(nn.Module):
    def __init__(self, hidden: int, heads: int, attention_dropout: float) -> None:
        super().__init__()
        self.num_heads = heads
        self.attention_dropout = attention_dropout
        self.query = Linear(hidden, hidden, backend="eager")
        self.key = Linear(hidden, hidden, bias=False, backend="eager")  # BEiT has no key bias
        self.value = Linear(hidden, hidden, backend="eager")

    def forward(self, x: Tensor, key_valid: Tensor | None) -> Tensor:
        b, t, c = x.shape
        split = lambda y: y.view(b, t, self.num_heads, c // self.num_heads).transpose(1, 2)  # noqa: E731
        p = self.attention_dropout if self.training else 0.0
        out = masked_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)), key_valid, p)
        return out.transpose(1, 2).reshape(b, t, c)


class _DenseDropout(nn.Module):
    def __init__(self, n_in: int, n_out: int, dropout: float) -> None:
        super().__init__()
        self.dense = Linear(n_in, n_out, backend="eager")
        self.dropout = Dropout(dropout, backend="eager")

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.dense(x))


class _SelfAttention(nn.Module):
    def __init__(self, cfg: BeitConfig) -> None:
        super().__init__()
        self.attention = _SelfAttentionProjections(
            cfg.hidden_size, cfg.num_attention_heads, cfg.attention_probs_dropout_prob
        )
        self.output = _DenseDropout(cfg.hidden_size, cfg.hidden_size, cfg.hidden_dropout_prob)

    def forward(self, x: Tensor, key_valid: Tensor | None) -> Tensor:
        return self.output(self.attention(x, key_valid))


class _Intermediate(nn.Module):
    def __init__(self, cfg: BeitConfig) -> None:
        super().__init__()
        if cfg.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"beit.hidden_act: expected one of {', '.join(_ACTIVATIONS)}, got {cfg.hidden_act!r}")
        self.dense = Linear(cfg.hidden_size, cfg.intermediate_size, backend="eager")
        self.act = _ACTIVATIONS[cfg.hidden_act]()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.dense(x))


class BeitStyleLayer(nn.Module):
    """One pre-LN BEiT block (module docstring); ``forward(x [B, T, C], key_valid [B, T] | None)``."""

    def __init__(self, cfg: BeitConfig, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.attention = _SelfAttention(cfg)
        self.intermediate = _Intermediate(cfg)
        self.output = _DenseDropout(cfg.intermediate_size, cfg.hidden_size, cfg.hidden_dropout_prob)
        self.layernorm_before = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.layernorm_after = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.drop_path = DropPath(drop_path_rate)
        if cfg.layer_scale_init_value > 0:
            self.lambda_1 = nn.Parameter(torch.full((cfg.hidden_size,), float(cfg.layer_scale_init_value)))
            self.lambda_2 = nn.Parameter(torch.full((cfg.hidden_size,), float(cfg.layer_scale_init_value)))
        else:
            self.lambda_1 = self.lambda_2 = None

    def forward(self, x: Tensor, key_valid: Tensor | None = None) -> Tensor:
        branch = self.attention(self.layernorm_before(x), key_valid)
        if self.lambda_1 is not None:
            branch = self.lambda_1 * branch
        h = self.drop_path(branch) + x
        branch = self.output(self.intermediate(self.layernorm_after(h)))
        if self.lambda_2 is not None:
            branch = self.lambda_2 * branch
        return self.drop_path(branch) + h


class BeitEncoderStack(nn.Module):
    """``layer``: a ModuleList of :class:`BeitStyleLayer` with drop path rising linearly
    from 0 to ``drop_path_rate`` (the BEiT encoder's schedule)."""

    def __init__(self, cfg: BeitConfig) -> None:
        super().__init__()
        n = cfg.num_hidden_layers
        rates = [cfg.drop_path_rate * i / max(n - 1, 1) for i in range(n)]
        self.layer = nn.ModuleList(BeitStyleLayer(cfg, r) for r in rates)
        self.reset_parameters(cfg.initializer_range, cfg.layer_scale_init_value)

    def reset_parameters(self, std: float, layer_scale: float) -> None:
        """BEiT's initialisation: Linear ~ N(0, std) with zero bias, LayerNorm (1, 0), lambdas = layer_scale."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, BeitStyleLayer) and module.lambda_1 is not None:
                nn.init.constant_(module.lambda_1, layer_scale)
                nn.init.constant_(module.lambda_2, layer_scale)

    def forward(self, x: Tensor, key_valid: Tensor | None = None) -> Tensor:
        for layer in self.layer:
            x = layer(x, key_valid)
        return x


# ---------------------------------------------------------------------- pretrained BEiT weights
# transformers >= 5 BeitLayer names -> the 4.x names used here (4.x names map to themselves).
_RENAMES = (
    (r"^attention\.q_proj\.", "attention.attention.query."),
    (r"^attention\.k_proj\.", "attention.attention.key."),
    (r"^attention\.v_proj\.", "attention.attention.value."),
    (r"^attention\.o_proj\.", "attention.output.dense."),
    (r"^mlp\.fc1\.", "intermediate.dense."),
    (r"^mlp\.fc2\.", "output.dense."),
)


def beit_layer_key(name: str) -> str:
    """A transformers BeitLayer state_dict key (either layout) as this module names it."""
    for pattern, replacement in _RENAMES:
        name, n = re.subn(pattern, replacement, name)
        if n:
            break
    return name


def _hub_offline() -> bool:
    from maven_fast.encoders.hub import hub_offline

    return hub_offline()


def load_pretrained_beit_layers(name_or_path: str, stacks: list[BeitEncoderStack], cfg: BeitConfig) -> None:
    """Copy the first layers of a pretrained BEiT (hub name or local directory) into each stack.

    The checkpoint's width, heads, MLP size, activation and layer-scale use must
    equal ``cfg``'s, and it must hold at least ``cfg.num_hidden_layers`` layers.
    """
    from transformers import BeitModel

    try:
        pretrained = BeitModel.from_pretrained(
            name_or_path, add_pooling_layer=False, local_files_only=_hub_offline() or os.path.isdir(name_or_path)
        )
    except Exception as exc:  # transformers raises OSError/ValueError/HTTP errors
        raise OSError(
            f"could not load the BEiT checkpoint {name_or_path!r} ({type(exc).__name__}: {exc}). "
            "Point beit.init_from at a local directory holding config.json and the weights "
            "(BeitModel.save_pretrained layout), or set beit.init_from: null for random initialisation."
        ) from exc
    hf = pretrained.config
    checks = {
        "hidden_size": hf.hidden_size, "num_attention_heads": hf.num_attention_heads,
        "intermediate_size": hf.intermediate_size, "hidden_act": hf.hidden_act,
    }
    mismatched = [f"beit.{k}={getattr(cfg, k)!r} but the checkpoint has {v!r}" for k, v in checks.items()
                  if getattr(cfg, k) != v]
    if (hf.layer_scale_init_value > 0) != (cfg.layer_scale_init_value > 0):
        mismatched.append("beit.layer_scale_init_value: layer scale is used by one and not the other")
    if getattr(hf, "use_relative_position_bias", False):
        mismatched.append("the checkpoint uses per-layer relative position bias, which MAVEN's layers do not have")
    layers = pretrained.layers if hasattr(pretrained, "layers") else pretrained.encoder.layer
    if len(layers) < cfg.num_hidden_layers:
        mismatched.append(f"beit.num_hidden_layers={cfg.num_hidden_layers} but the checkpoint has {len(layers)}")
    if mismatched:
        raise ValueError(f"BEiT checkpoint {name_or_path!r} does not fit this config: " + "; ".join(mismatched))
    for stack in stacks:
        for ours, theirs in zip(stack.layer, layers):
            state = {beit_layer_key(k): v for k, v in theirs.state_dict().items()
                     if "relative_position" not in k}
            ours.load_state_dict(state, strict=True)
