"""Encoder runtime: compute precision (auto / bf16 / fp16), SDPA, channels_last, torch.compile,
the real-size ``base-random`` encoders, and the precision recorded in caches and checkpoints."""
from __future__ import annotations

import json

import pytest
import torch

from maven_fast._extension import extension
from maven_fast.config import ConfigError, EncoderConfig, MavenConfig
from maven_fast.encoders import AudioEncoder, TextEncoder, VideoEncoder, load_encoders, precision
from maven_fast.encoders.precision import ComputeDtypeMismatch, resolve_compute_dtype
from maven_fast.nn import Linear
from maven_fast.predict.encoders import RandomEncoders, encoders_for
from maven_fast.predict.predictor import predict_compute_dtype
from maven_fast.train.api import check_cache_precision


def inputs(encoders):
    torch.manual_seed(3)
    frames = torch.randint(0, 256, (3, 224, 224, 3), dtype=torch.uint8)
    wave = torch.randn(2, 8000) * 0.1
    texts = ["hello there", "a somewhat longer sentence to encode"]
    return encoders.video.preprocess(frames), wave, texts


def run_all(encoders, pixels, wave, texts):
    video = encoders.video(pixels)
    audio, _ = encoders.audio(wave, torch.tensor([8000, 6000]))
    text, lengths = encoders.text(texts)
    return video, audio, text, lengths


def cosine(a, b):
    """Per output vector; padding rows (all zero in fp32) are left out."""
    a, b = a.reshape(-1, a.shape[-1]).double(), b.reshape(-1, b.shape[-1]).double()
    keep = a.norm(dim=1) > 0
    return torch.nn.functional.cosine_similarity(a[keep], b[keep], dim=-1)


# ------------------------------------------------------------------------------------ auto
def test_auto_is_bf16_only_where_the_hardware_is_fast_at_it(monkeypatch):
    monkeypatch.delenv(precision.CPU_BF16_ENV)  # the suite's pin to fp32 (conftest)
    monkeypatch.setattr(precision, "cpu_bf16_features", lambda: [])
    dtype, why = resolve_compute_dtype("auto", "cpu")
    assert dtype == "float32" and "neither AVX512-BF16 nor AMX" in why
    monkeypatch.setattr(precision, "cpu_bf16_features", lambda: ["avx512_bf16"])
    assert resolve_compute_dtype("auto", "cpu") == ("bfloat16", "auto: the CPU has avx512_bf16")
    assert resolve_compute_dtype("float16", "cpu") == ("float16", "given explicitly")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: "T4")
    assert resolve_compute_dtype("auto", "cuda:0")[0] == "float32"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=None: (9, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: "H200")
    assert resolve_compute_dtype("auto", "cuda:0") == ("bfloat16", "auto: H200 (sm_90) has bf16 tensor cores")
    with pytest.raises(ValueError, match="compute_dtype: expected one of auto, float32, bfloat16, float16, got 'fp8'"):
        resolve_compute_dtype("fp8", "cpu")


def test_encoder_set_configure_resolves_auto(monkeypatch):
    encoders = load_encoders("tiny")
    monkeypatch.setattr(precision, "cpu_bf16_features", lambda: ["amx_bf16"])
    assert encoders.configure("auto") == "auto: the CPU has amx_bf16"
    assert encoders.compute_dtype == "bfloat16"
    assert all(r["compute_dtype"] == "bfloat16" for r in encoders.runtime().values())
    with pytest.raises(ValueError, match="resolve 'auto'"):
        encoders.video.configure("auto")


# ------------------------------------------------------------------------------------ precision
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_reduced_precision_is_applied_and_close_to_fp32(dtype):
    encoders = load_encoders("tiny")
    pixels, wave, texts = inputs(encoders)
    encoders.configure("float32")
    ref = run_all(encoders, pixels, wave, texts)
    seen: dict[str, set] = {"video": set(), "audio": set(), "text": set()}
    hooks = []
    for modality in seen:
        linears = [m for m in getattr(encoders, modality).model.modules() if isinstance(m, torch.nn.Linear)]
        hooks += [m.register_forward_hook(lambda mod, i, o, k=modality: seen[k].add(o.dtype)) for m in linears]
    try:
        run_all(encoders, pixels, wave, texts)
        assert seen == {m: {torch.float32} for m in seen}
        for s in seen.values():
            s.clear()
        encoders.configure(dtype)
        low = run_all(encoders, pixels, wave, texts)
    finally:
        for h in hooks:
            h.remove()
    want = getattr(torch, dtype)
    assert seen == {m: {want} for m in seen}, "the encoders' matrix products did not run in the compute dtype"
    for name, a, b in zip(("video", "audio", "text"), ref, low):
        assert b.dtype == torch.float32, f"{name}: outputs are returned as float32"
        assert not torch.equal(a, b), f"{name}: reduced precision changed nothing"
        assert cosine(a, b).min() > 0.99, f"{name}: cosine to fp32 {cosine(a, b).min():.4f}"
    assert torch.equal(ref[3], low[3])


def test_sdpa_and_channels_last_are_switched_on_and_keep_fp32_results():
    encoders = load_encoders("tiny")
    pixels, wave, texts = inputs(encoders)
    encoders.configure("float32", sdpa=False, channels_last=False)
    assert not encoders.video.sdpa_enabled()
    plain = run_all(encoders, pixels, wave, texts)
    encoders.configure("float32")
    runtime = encoders.runtime()
    assert all(r["sdpa"] for r in runtime.values()), runtime
    assert runtime["video"]["channels_last"]
    conv = encoders.video.model.patch_embed.proj.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    for a, b in zip(plain, run_all(encoders, pixels, wave, texts)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(extension() is None, reason="maven_fast._C is not built")
def test_linear_layers_run_on_maven_fast_and_keep_fp32_results():
    encoders = load_encoders("tiny")
    pixels, wave, texts = inputs(encoders)
    models = [e.model for e in (encoders.video, encoders.audio, encoders.text)]
    weights = {id(m.weight) for model in models for m in model.modules() if isinstance(m, torch.nn.Linear)}
    encoders.configure("float32", maven_linear=False)
    assert not any(r["maven_linear"] for r in encoders.runtime().values())
    plain = run_all(encoders, pixels, wave, texts)
    encoders.configure("float32")
    assert all(r["maven_linear"] for r in encoders.runtime().values()), encoders.runtime()
    layers = [m for model in models for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert layers and all(isinstance(m, Linear) and m.backend == "auto" for m in layers)
    assert {id(m.weight) for m in layers} == weights  # the same parameters, not copies
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fused = run_all(encoders, pixels, wave, texts)
    assert sum(e.name == "maven_fast::linear" for e in prof.events()) >= len(layers)
    for a, b in zip(plain, fused):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_compile_option_runs_the_compiled_model():
    encoders = load_encoders("tiny")
    pixels = inputs(encoders)[0][:2]
    encoders.video.configure("float32")
    ref = encoders.video(pixels)
    calls = []
    encoders.video.configure("float32", compile="eager")
    compiled = encoders.video.__dict__["_compiled"]
    original = compiled.forward
    compiled.forward = lambda *a, **k: (calls.append(1), original(*a, **k))[1]
    torch.testing.assert_close(encoders.video(pixels), ref, rtol=1e-5, atol=1e-5)
    assert calls and encoders.video.runtime()["compiled"]
    assert all(not k.startswith("_compiled") for k in encoders.video.state_dict())


# ------------------------------------------------------------------------------------ base-random
def test_base_random_encoders_have_the_real_architectures():
    # built on the meta device: the architecture without weights (real-size runs are benchmarks)
    built = {"video": VideoEncoder.base_random(device="meta"), "audio": AudioEncoder.base_random(device="meta"),
             "text": TextEncoder.base_random(device="meta")}
    counts = {m: sum(p.numel() for p in e.model.parameters()) for m, e in built.items()}
    # Swin-B without its head, HuBERT-base, RoBERTa-base without its pooler
    assert counts == {"video": 86_743_224, "audio": 94_371_712, "text": 124_055_040}, counts
    assert {m: e.signature() for m, e in built.items()} == {
        "video": {"name": "base-random-swin", "dim": 1024}, "audio": {"name": "base-random-hubert", "dim": 768},
        "text": {"name": "base-random-roberta", "dim": 768}}
    swin = built["video"].model
    assert [len(layer.blocks) for layer in swin.layers] == [2, 2, 18, 2]
    assert swin.layers[0].blocks[0].attn.num_heads == 4 and swin.layers[3].blocks[0].attn.num_heads == 32
    assert built["audio"].frame_lengths(torch.tensor([16000])).tolist() == [49]  # 320 samples per frame
    assert built["text"].max_length == 512
    assert VideoEncoder.base_random(seed=2, device="meta").name == "base-random-swin-seed2"


def test_predict_refuses_base_random_encoders_unless_benchmarking(monkeypatch):
    expected = EncoderConfig("base-random-swin", 1024, "base-random-hubert", 768, "base-random-roberta", 768)
    with pytest.raises(RandomEncoders, match=r"'base-random-swin'.*RANDOM weights.*--benchmark-random-encoders"):
        encoders_for(expected)
    built = []
    for cls in (VideoEncoder, AudioEncoder, TextEncoder):  # building the real sizes is tested above
        monkeypatch.setattr(cls, "base_random", classmethod(lambda c, seed=0: built.append((c, seed)) or
                                                            _fake(c, expected)))
    encoders_for(expected, allow_random=True)
    assert built == [(VideoEncoder, 0), (AudioEncoder, 0), (TextEncoder, 0)]


def _fake(cls, expected):
    encoder = cls.tiny()
    encoder.dim = expected.signature()[cls.modality]["dim"]
    return encoder


# ------------------------------------------------------------------------------------ recorded precision
def test_training_takes_the_cache_precision_into_the_checkpoint_config():
    cfg = MavenConfig.preset("paper")
    assert cfg.encoders.compute_dtype == "cache"
    check_cache_precision({"compute_dtype": "bfloat16"}, cfg, "CACHE")
    assert cfg.encoders.compute_dtype == "bfloat16"
    check_cache_precision({"compute_dtype": "bfloat16"}, cfg, "CACHE")
    with pytest.raises(ConfigError, match=r"says 'bfloat16' but the feature cache OTHER was made with the "
                                          r"encoders computing in 'float32'.*compute_dtype=float32"):
        check_cache_precision({}, cfg, "OTHER")  # a cache older than the option: fp32
    with pytest.raises(ConfigError, match="encoders.compute_dtype: expected one of cache, float32"):
        MavenConfig.from_dict({**cfg.to_dict(), "encoders": {**cfg.to_dict()["encoders"], "compute_dtype": "auto"}})


def test_predict_precision_follows_the_checkpoint_and_refuses_another():
    assert predict_compute_dtype("bfloat16", "auto", "CKPT")[0] == "bfloat16"
    assert predict_compute_dtype("cache", "auto", "CKPT")[0] == "float32"  # predates the option
    assert predict_compute_dtype("float32", "float32", "CKPT") == ("float32", "given explicitly")
    with pytest.raises(ComputeDtypeMismatch, match=r"CKPT was made with the encoders computing in bfloat16, "
                                                   r"but --compute-dtype float32 computes in float32.*"
                                                   r"--compute-dtype bfloat16.*--allow-compute-dtype-mismatch"):
        predict_compute_dtype("bfloat16", "float32", "CKPT")
    with pytest.warns(UserWarning, match="trained on features computed in bfloat16"):
        assert predict_compute_dtype("bfloat16", "float32", "CKPT", allow_mismatch=True)[0] == "float32"


def test_extract_records_the_precision_and_refuses_to_resume_at_another(tmp_path):
    from _data_helpers import make_mp4
    from maven_fast.data import extract_features
    from maven_fast.data.annotations import write_va_annotations
    import numpy as np

    root = tmp_path / "data"
    make_mp4(root / "videos" / "v.mp4", n=12, fps=30, size=32, audio_rate=16000)
    (root / "transcripts").mkdir()
    (root / "transcripts" / "v.txt").write_text("[0.0s - 0.3s]: hi\n", encoding="utf-8")
    ann = root / "annotations" / "VA_Estimation_Challenge" / "Train_Set"
    ann.mkdir(parents=True)
    write_va_annotations(ann / "v.txt", np.zeros((12, 2)))
    encoders = load_encoders("tiny")
    cache = tmp_path / "cache"
    kw = dict(splits=("train",), frames_source="video", progress=False, tail=True)
    result = extract_features(root, cache, encoders, compute_dtype="bfloat16", **kw)
    assert result.written == ["train/v"] and result.compute_dtype == "bfloat16"
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["settings"]["compute_dtype"] == "bfloat16"
    index = json.loads((cache / "index.json").read_text())
    assert index["settings"]["compute_dtype"] == "bfloat16"
    assert extract_features(root, cache, encoders, compute_dtype="bfloat16", **kw).skipped == ["train/v"]
    with pytest.raises(ComputeDtypeMismatch, match=rf"the cache {cache} was made with the encoders computing in "
                                                   r"bfloat16, but this extract run computes in float32.*--overwrite"):
        extract_features(root, cache, encoders, compute_dtype="auto", **kw)  # auto = fp32 here (conftest)
    redo = extract_features(root, cache, encoders, compute_dtype="float32", overwrite=True, **kw)
    assert redo.written == ["train/v"]
    assert json.loads((cache / "meta.json").read_text())["settings"]["compute_dtype"] == "float32"
