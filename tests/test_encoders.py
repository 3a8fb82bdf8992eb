"""Frozen encoders: tiny variants on real-shaped inputs, batching, local loading, clear errors."""
import pytest
import torch

from maven_fast.config import MavenConfig
from maven_fast.encoders import (
    AudioEncoder, EncoderUnavailable, TextEncoder, VideoEncoder, byte_level_tokenizer, load_encoders,
)
from maven_fast.model import MAVEN


@pytest.fixture(scope="module")
def encoders():
    return load_encoders("tiny")


def assert_frozen(encoder):
    encoder.train()
    assert not encoder.training and not encoder.model.training
    assert all(not p.requires_grad for p in encoder.parameters())


# --------------------------------------------------------------------------- video
def test_video_preprocess_resizes_and_normalises(encoders):
    frames = torch.full((2, 360, 480, 3), 128, dtype=torch.uint8)
    pixels = encoders.video.preprocess(frames)
    assert pixels.shape == (2, 3, 224, 224) and pixels.dtype == torch.float32
    for c, (mean, std) in enumerate(zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))):
        torch.testing.assert_close(pixels[:, c], torch.full((2, 224, 224), (128 / 255 - mean) / std))


def test_video_tiny_runs_on_224_frames_batched_and_frozen(encoders):
    video = encoders.video
    frames = torch.randint(0, 256, (5, 224, 224, 3), dtype=torch.uint8)
    pixels = video.preprocess(frames).requires_grad_()
    features = video(pixels)
    assert features.shape == (5, video.dim) and video.dim == 128
    assert not features.requires_grad
    video.batch_size = 2
    try:
        torch.testing.assert_close(video(pixels), features, rtol=1e-5, atol=1e-5)
    finally:
        video.batch_size = 64
    assert_frozen(video)


def test_video_bad_inputs(encoders):
    with pytest.raises(ValueError, match=r"frames: expected a uint8 tensor of shape \[N, H, W, 3\]"):
        encoders.video.preprocess(torch.zeros(2, 3, 224, 224, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"pixels: expected a float tensor of shape \[N, 3, 224, 224\]"):
        encoders.video(torch.zeros(2, 3, 112, 112))


# --------------------------------------------------------------------------- audio
def test_audio_tiny_runs_on_16khz_and_batches_exactly(encoders):
    audio = encoders.audio
    waveform = torch.randn(3, 16000) * 0.1
    lengths = torch.tensor([16000, 8000, 300])  # 1 s, 0.5 s, shorter than one HuBERT frame
    frames, frame_lengths = audio(waveform, lengths)
    assert audio.sample_rate == 16000 and audio.dim == 32
    assert frames.shape == (3, 49, 32) and frame_lengths.tolist() == [49, 24, 0]
    alone, _ = audio(waveform[1:2, :8000])
    torch.testing.assert_close(frames[1, :24], alone[0], rtol=1e-5, atol=1e-5)
    assert (frames[1, 24:] == 0).all() and (frames[2] == 0).all()
    pooled = audio.pool(frames, frame_lengths)
    torch.testing.assert_close(pooled[1], alone[0].mean(0))
    assert (pooled[2] == 0).all()
    assert_frozen(audio)


def test_audio_normalises_each_clip(encoders):
    audio = encoders.audio
    waveform = torch.randn(1, 8000)
    loud, _ = audio(waveform * 7 + 0.5)
    quiet, _ = audio(waveform)
    torch.testing.assert_close(loud, quiet, rtol=1e-4, atol=1e-4)


def test_audio_bad_inputs(encoders):
    with pytest.raises(ValueError, match=r"waveform: expected a float tensor of shape \[B, S\]"):
        encoders.audio(torch.randn(2, 1, 16000))
    with pytest.raises(ValueError, match=r"lengths: values must lie in \[0, 16000\]"):
        encoders.audio(torch.randn(2, 16000), torch.tensor([16000, 16001]))


# --------------------------------------------------------------------------- text
def test_byte_level_tokenizer_round_trips_any_text():
    tokenizer = byte_level_tokenizer()
    for text in ["I was really surprised", "naïve café ☕", ""]:
        ids = tokenizer(text)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
        assert len(ids) == len(text.encode("utf-8")) + 2
        assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_text_tiny_runs_on_tokenized_text_batched_and_frozen(encoders):
    text = encoders.text
    texts = ["[10.5s - 15.2s]: I was really surprised", "ok", ""]
    tokens, lengths = text(texts)
    assert tokens.shape == (3, len(texts[0]) + 2, 32) and lengths.tolist() == [len(t) + 2 for t in texts]
    alone, _ = text(["ok"])
    torch.testing.assert_close(tokens[1, :4], alone[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(text.pool(tokens, lengths)[1], alone[0].mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(text.pool(tokens, lengths, masked=False), tokens.mean(1))
    assert_frozen(text)
    with pytest.raises(ValueError, match="texts: expected a list of strings"):
        text("not a list")


# --------------------------------------------------------------------------- sets, local copies, errors
def test_encoder_set_signature_configures_a_model(encoders):
    signature = encoders.signature()
    assert signature == {
        "video": {"name": "tiny-swin", "dim": 128},
        "audio": {"name": "tiny-hubert", "dim": 32},
        "text": {"name": "tiny-roberta", "dim": 32},
    }
    config = MavenConfig.paper()
    config.encoders = encoders.encoder_config()
    assert config.encoders.signature() == signature
    config.cross_modal.embed_dim = 8
    config.beit.hidden_size, config.beit.num_attention_heads, config.beit.intermediate_size = 16, 2, 32
    model = MAVEN(config).eval()
    video = encoders.video(encoders.video.preprocess(torch.randint(0, 256, (4, 224, 224, 3), dtype=torch.uint8)))
    audio, audio_lengths = encoders.audio(torch.randn(1, 16000))
    tokens, token_lengths = encoders.text(["hello there"])
    out = model(video.unsqueeze(0), audio, tokens, torch.tensor([4]), audio_lengths, token_lengths)
    assert out.valence_arousal.shape == (1, 4, 2) and torch.isfinite(out.valence_arousal).all()


def test_tiny_encoders_are_reproducible_and_leave_the_global_rng_alone():
    state = torch.get_rng_state()
    a, b = AudioEncoder.tiny(), AudioEncoder.tiny()
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert AudioEncoder.tiny(seed=1).name == "tiny-hubert-seed1"


PIXELS, WAVEFORM = torch.randn(2, 3, 224, 224), torch.randn(2, 4000)


@pytest.mark.parametrize("cls, probe", [
    (VideoEncoder, lambda e: e(PIXELS)),
    (AudioEncoder, lambda e: e(WAVEFORM)[0]),
    (TextEncoder, lambda e: e(["a local copy", "b"])[0]),
])
def test_loading_from_a_local_directory(cls, probe, tmp_path):
    encoder = cls.tiny(seed=3)
    encoder.save_pretrained(str(tmp_path))
    loaded = cls.from_pretrained(str(tmp_path))
    assert loaded.dim == encoder.dim and loaded.name == str(tmp_path)
    torch.testing.assert_close(probe(loaded), probe(encoder), rtol=0, atol=0)
    assert_frozen(loaded)


def test_load_encoders_takes_a_local_directory_per_modality(tmp_path):
    TextEncoder.tiny(seed=5).save_pretrained(str(tmp_path))
    encoders = load_encoders("tiny", text=str(tmp_path))
    assert encoders.signature()["text"]["name"] == str(tmp_path)
    assert encoders.signature()["video"]["name"] == "tiny-swin"


def test_a_missing_local_directory_says_how_to_point_at_one(tmp_path):
    missing = str(tmp_path / "no-such-dir")
    with pytest.raises(EncoderUnavailable, match="the local path .*no-such-dir' does not exist") as info:
        load_encoders("base", video=missing)
    assert "video='/path/to/dir'" in str(info.value)


@pytest.mark.parametrize("cls, name, modality", [
    (VideoEncoder, "swin_base_patch4_window7_224", "video"),
    (AudioEncoder, "facebook/hubert-base-ls960", "audio"),
    (TextEncoder, "roberta-base", "text"),
])
def test_hub_names_offline_fail_with_the_name_and_advice(cls, name, modality, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache: nothing can be found, nothing is fetched
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(EncoderUnavailable) as info:
        cls.from_pretrained(name)
    message = str(info.value)
    assert f"could not load the {modality} encoder: '{name}'" in message and "HF_HUB_OFFLINE is set" in message
    assert f"{modality}='/path/to/dir'" in message


def test_unknown_kind():
    with pytest.raises(ValueError, match="kind: expected one of 'tiny', 'base', 'base-random', got 'large'"):
        load_encoders("large")
