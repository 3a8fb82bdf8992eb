"""The whole model on the fused backends: same state_dict, same outputs and
gradients as eager, one call to switch, clear errors for backends that cannot run."""
from __future__ import annotations

import os

import pytest
import torch

from maven_fast import MAVEN, BackendUnavailable, MavenConfig

SMALL = dict(embed_dim=32, num_heads=2)


def small_config(preset: str) -> MavenConfig:
    cfg = MavenConfig.preset(preset)
    cfg.encoders.video_dim, cfg.encoders.audio_dim, cfg.encoders.text_dim = 24, 16, 12
    cfg.cross_modal.embed_dim, cfg.cross_modal.num_heads = SMALL["embed_dim"], SMALL["num_heads"]
    cfg.cross_modal.dropout = 0.0
    cfg.regressor.hidden_sizes, cfg.regressor.dropouts = (32, 16), (0.0, 0.0)
    cfg.beit.hidden_size, cfg.beit.num_attention_heads, cfg.beit.intermediate_size = 32, 2, 64
    cfg.beit.drop_path_rate = 0.0
    if preset == "reference_beit":
        cfg.beit.num_hidden_layers = 2
    return cfg


def inputs(cfg: MavenConfig, pooled: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    b, tv, ta, tt = 3, 17, 25, 9
    video = torch.randn(b, tv, cfg.encoders.video_dim, generator=g)
    if pooled:
        audio = torch.randn(b, cfg.encoders.audio_dim, generator=g)
        text = torch.randn(b, cfg.encoders.text_dim, generator=g)
        lengths = {}
    else:
        audio = torch.randn(b, ta, cfg.encoders.audio_dim, generator=g)
        text = torch.randn(b, tt, cfg.encoders.text_dim, generator=g)
        lengths = dict(video_lengths=torch.tensor([17, 11, 1]), audio_lengths=torch.tensor([25, 0, 3]),
                       text_lengths=torch.tensor([9, 4, 1]))
    targets = torch.rand(b, tv, 2, generator=g) * 2 - 1
    mask = torch.rand(b, tv, generator=g) > 0.2
    return (video, audio, text), lengths, targets, mask


def run(model, args, lengths, targets, mask):
    model.zero_grad(set_to_none=True)
    out = model(*args, **lengths, targets=targets, mask=mask)
    out.loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return out, grads


def check_backend_equals_eager(preset: str, backend: str, device: str = "cpu", tol: float = 1e-5) -> None:
    cfg = small_config(preset)
    torch.manual_seed(0)
    model = MAVEN(cfg, backend="eager").train().to(device)
    args, lengths, targets, mask = inputs(cfg, pooled=preset != "paper")
    args = [a.to(device) for a in args]
    lengths = {k: v.to(device) for k, v in lengths.items()}
    targets, mask = targets.to(device), mask.to(device)
    ref, ref_grads = run(model, args, lengths, targets, mask)
    model.set_backend(backend)
    assert model.multihead_attention.backend == backend and model.backend == backend
    got, grads = run(model, args, lengths, targets, mask)
    torch.testing.assert_close(got.valence_arousal, ref.valence_arousal, rtol=tol, atol=tol)
    torch.testing.assert_close(got.loss, ref.loss, rtol=tol, atol=tol / 10)
    assert grads.keys() == ref_grads.keys()
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=10 * tol, atol=tol, msg=name)


@pytest.mark.parametrize("preset", ["reference_mlp", "reference_beit", "paper"])
def test_cpu_backend_equals_eager(preset):
    check_backend_equals_eager(preset, "cpu")


@pytest.mark.parametrize("preset", ["reference_mlp", "paper"])
def test_triton_backend_equals_eager(preset):
    """Under TRITON_INTERPRET=1 (no GPU) the Triton kernels run on the CPU tensors."""
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("no GPU and no Triton interpreter")
    check_backend_equals_eager(preset, "triton", "cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton", "auto"])
@pytest.mark.parametrize("preset", ["reference_mlp", "reference_beit", "paper"])
def test_gpu_backends_equal_eager(preset, backend):
    check_backend_equals_eager(preset, backend, "cuda", tol=1e-4)


def test_state_dict_moves_between_backends():
    cfg = small_config("paper")
    eager = MAVEN(cfg, backend="eager").eval()
    fused = MAVEN(cfg, backend="auto").eval()
    fused.load_state_dict(eager.state_dict())
    assert list(fused.state_dict()) == list(eager.state_dict())
    args, lengths, _, _ = inputs(cfg, pooled=False)
    with torch.no_grad():
        torch.testing.assert_close(fused(*args, **lengths).valence_arousal, eager(*args, **lengths).valence_arousal,
                                   rtol=1e-5, atol=1e-5)


def test_backend_that_cannot_run_says_why():
    cfg = small_config("paper")
    model = MAVEN(cfg, backend="eager")
    with pytest.raises(BackendUnavailable, match="unknown backend"):
        model.set_backend("fast")
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the device-mismatch case below needs CPU-only")
    args, lengths, _, _ = inputs(cfg, pooled=False)
    try:
        model.set_backend("cuda")  # allowed when the CUDA kernels were compiled (model may move to a GPU)
    except BackendUnavailable as exc:
        assert "CUDA" in str(exc)
        return
    with pytest.raises(BackendUnavailable, match="runs CUDA tensors"):
        model(*args, **lengths)


def test_torch_compile_fullgraph_cpu_model_equals_eager():
    torch._dynamo.reset()
    cfg = small_config("reference_mlp")
    model = MAVEN(cfg, backend="cpu").eval()
    args, _, _, _ = inputs(cfg, pooled=True)
    with torch.no_grad():
        got = torch.compile(model, fullgraph=True)(*args)
        model.set_backend("eager")
        ref = model(*args)
    torch.testing.assert_close(got.valence_arousal, ref.valence_arousal, rtol=1e-5, atol=1e-5)
