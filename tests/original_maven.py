"""The original MAVEN models (Vrushank-Ahire/MAVEN_8th_ABAW, codes/Train_MLP.py and
codes/Train_BEiT.py) restated independently of maven_fast, for parity tests."""
import copy

import torch
from torch import nn


class OriginalCrossModal(nn.Module):
    """MultiHeadCrossModalAttention of Train_MLP.py: pooled audio/text, no masks."""

    def __init__(self, dims=(1024, 768, 768), embed=512, heads=2, dropout=0.1):
        super().__init__()
        self.video_proj = nn.Linear(dims[0], embed)
        self.audio_proj = nn.Linear(dims[1], embed)
        self.text_proj = nn.Linear(dims[2], embed)
        for name in ("v2a", "v2t", "a2v", "a2t", "t2v", "t2a"):
            setattr(self, f"attn_{name}", nn.MultiheadAttention(embed, heads, dropout=dropout, batch_first=True))
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(embed)

    def forward(self, video, audio, text):
        v = self.video_proj(video)
        a = self.audio_proj(audio).unsqueeze(1)
        t = self.text_proj(text).unsqueeze(1)
        attend = lambda name, q, kv: getattr(self, f"attn_{name}")(query=q, key=kv, value=kv)[0]  # noqa: E731
        v_out = self.layer_norm(self.dropout((v + attend("v2a", v, a) + attend("v2t", v, t)) / 3))
        a_out = self.layer_norm(self.dropout((a + attend("a2v", a, v) + attend("a2t", a, t)) / 3)).squeeze(1)
        t_out = self.layer_norm(self.dropout((t + attend("t2v", t, v) + attend("t2a", t, a)) / 3)).squeeze(1)
        return v_out, a_out, t_out


class OriginalRegressor(nn.Module):
    def __init__(self, n_in, hidden=(512, 256)):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(n_in, hidden[0]), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(hidden[0], hidden[1]), nn.ReLU(), nn.Dropout(0.3),
            nn.Linear(hidden[1], 2),
        )

    def forward(self, x):
        return self.fc(x)


class OriginalMLPModel(nn.Module):
    """MultiModalEmotionModel of Train_MLP.py; returns per-frame (theta, intensity)."""

    def __init__(self, dims=(1024, 768, 768), embed=512, hidden=(512, 256)):
        super().__init__()
        self.multihead_attention = OriginalCrossModal(dims, embed)
        self.regressor = OriginalRegressor(3 * embed, hidden)

    def forward(self, frames, audio, text):
        v, a, t = self.multihead_attention(frames, audio, text)
        frames_n = frames.shape[1]
        fused = torch.cat([v, a.unsqueeze(1).expand(-1, frames_n, -1), t.unsqueeze(1).expand(-1, frames_n, -1)], -1)
        return self.regressor(fused)


def randomise_(module: nn.Module) -> nn.Module:
    """Non-default weights everywhere (LayerNorm and biases included)."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    return module


def polar_to_va(theta_intensity):
    theta, intensity = theta_intensity.unbind(-1)
    return torch.stack([intensity * torch.cos(theta), intensity * torch.sin(theta)], -1)


def inputs(batch=3, frames=7, dims=(1024, 768, 768)):
    return torch.randn(batch, frames, dims[0]), torch.randn(batch, dims[1]), torch.randn(batch, dims[2])


class OriginalBeitModel(nn.Module):
    """MultiModalEmotionModel of Train_BEiT.py: projection, two deep copies of a BEiT
    encoder's layers run on the same input, concatenated, valence/arousal regressor."""

    def __init__(self, beit, dims, embed):
        super().__init__()
        self.multihead_attention = OriginalCrossModal(dims, embed)
        hidden = beit.config.hidden_size
        self.projection_layer = nn.Linear(3 * embed, hidden)
        self.beit3_encoders = nn.ModuleList(copy.deepcopy(beit.layers) for _ in range(2))
        self.regressor = OriginalRegressor(2 * hidden)

    def forward(self, frames, audio, text):
        v, a, t = self.multihead_attention(frames, audio, text)
        n = frames.shape[1]
        fused = torch.cat([v, a.unsqueeze(1).expand(-1, n, -1), t.unsqueeze(1).expand(-1, n, -1)], -1)
        projected = self.projection_layer(fused)
        branches = []
        for layers in self.beit3_encoders:
            h = projected
            for layer in layers:  # the original calls each layer with no mask and no position bias
                h = layer(h)
            branches.append(h)
        return self.regressor(torch.cat(branches, -1))
