"""reference_mlp against an independent re-statement of the original Train_MLP.py model,
and the loading of original checkpoints."""
import pytest
import torch

from maven_fast.backends import BackendUnavailable
from maven_fast.checkpoint import CheckpointMismatch, load_model, load_original_checkpoint, save_weights
from maven_fast.config import MavenConfig
from maven_fast.metrics import masked_mse
from maven_fast.model import MAVEN

from original_maven import OriginalMLPModel, OriginalRegressor, inputs, polar_to_va, randomise_


# --------------------------------------------------------------------------- parity
def test_state_dict_keys_and_shapes_equal_the_original():
    ours = MAVEN(MavenConfig.reference_mlp()).state_dict()
    original = OriginalMLPModel().state_dict()
    assert list(ours) == list(original)
    assert all(ours[k].shape == original[k].shape for k in original)


def test_same_weights_give_the_original_outputs():
    original = randomise_(OriginalMLPModel()).eval()
    model = MAVEN(MavenConfig.reference_mlp())
    model.load_state_dict(original.state_dict(), strict=True)
    model.eval()
    video, audio, text = inputs()
    with torch.no_grad():
        expected = original(video, audio, text)
        out = model(video, audio, text)
    torch.testing.assert_close(out.theta_intensity, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.valence_arousal, polar_to_va(expected), rtol=1e-5, atol=1e-6)


def test_video_lengths_do_not_change_the_original_math():
    """The original attends over zero-padded frames; reference_mlp keeps that (key_padding_masks False)."""
    original = randomise_(OriginalMLPModel()).eval()
    model = MAVEN(MavenConfig.reference_mlp()).eval()
    model.load_state_dict(original.state_dict())
    video, audio, text = inputs()
    video[1, 4:] = 0
    with torch.no_grad():
        out = model(video, audio, text, video_lengths=torch.tensor([7, 4, 7]))
        torch.testing.assert_close(out.theta_intensity, original(video, audio, text), rtol=1e-5, atol=1e-6)


def test_key_padding_masks_option_ignores_padded_frames():
    config = MavenConfig.reference_mlp()
    config.cross_modal.key_padding_masks = True
    model = randomise_(MAVEN(config)).eval()
    video, audio, text = inputs(batch=2, frames=6)
    with torch.no_grad():
        short = model(video[:1, :4], audio[:1], text[:1]).valence_arousal
        video[0, 4:] = 1e3  # garbage in the padding
        padded = model(video, audio, text, video_lengths=torch.tensor([4, 6])).valence_arousal
    torch.testing.assert_close(padded[0, :4], short[0], rtol=1e-5, atol=1e-5)


def test_smaller_dims_build_the_same_tree():
    config = MavenConfig.reference_mlp()
    config.encoders.video_dim, config.encoders.audio_dim, config.encoders.text_dim = 24, 16, 12
    config.cross_modal.embed_dim = 8
    config.regressor.hidden_sizes = (16, 8)
    original = randomise_(OriginalMLPModel((24, 16, 12), 8, (16, 8))).eval()
    model = MAVEN(config).eval()
    model.load_state_dict(original.state_dict())
    video, audio, text = inputs(2, 5, (24, 16, 12))
    with torch.no_grad():
        torch.testing.assert_close(model(video, audio, text).theta_intensity, original(video, audio, text))


# --------------------------------------------------------------------------- loss, backends, weights
def test_loss_is_masked_mse_of_valence_arousal_and_has_gradients():
    model = MAVEN(MavenConfig.reference_mlp()).eval()
    video, audio, text = inputs()
    targets = torch.rand(3, 7, 2) * 2 - 1
    mask = torch.rand(3, 7) > 0.3
    lengths = torch.tensor([7, 5, 2])
    out = model(video, audio, text, video_lengths=lengths, targets=targets, mask=mask)
    valid = mask & (torch.arange(7) < lengths.unsqueeze(1))
    torch.testing.assert_close(out.loss, masked_mse(out.valence_arousal, targets, valid))
    torch.testing.assert_close(out.loss, model.loss(out, targets, valid))
    assert out.n_valid.item() == valid.sum().item()
    out.loss.backward()
    assert model.regressor.fc[0].weight.grad.abs().sum() > 0
    assert model.multihead_attention.video_proj.weight.grad.abs().sum() > 0


def test_ccc_weight_adds_the_ccc_loss():
    config = MavenConfig.reference_mlp()
    config.loss.ccc_weight = 0.5
    model = MAVEN(config).eval()
    video, audio, text = inputs()
    targets = torch.rand(3, 7, 2)
    out = model(video, audio, text, targets=targets)
    assert out.ccc_loss is not None
    torch.testing.assert_close(out.loss, out.mse + 0.5 * out.ccc_loss)
    torch.testing.assert_close(model.loss(out, targets), out.loss)


def test_unknown_backend_and_set_backend_eager():
    with pytest.raises(BackendUnavailable, match="unknown backend 'fast'"):
        MAVEN(MavenConfig.reference_mlp(), backend="fast")
    model = MAVEN(MavenConfig.reference_mlp())
    assert model.set_backend("eager") is model
    assert model.backend == "eager"


def test_safetensors_round_trip(tmp_path):
    model = randomise_(MAVEN(MavenConfig.reference_mlp())).eval()
    path = tmp_path / "weights.safetensors"
    save_weights(model, path)
    loaded = load_model(path).eval()
    assert loaded.config == model.config
    video, audio, text = inputs()
    with torch.no_grad():
        expected = model(video, audio, text).valence_arousal
        torch.testing.assert_close(loaded(video, audio, text).valence_arousal, expected, rtol=0, atol=0)


# --------------------------------------------------------------------------- original checkpoints
def test_load_original_checkpoint_detects_the_mlp_variant(tmp_path):
    original = randomise_(OriginalMLPModel()).eval()
    path = tmp_path / "best_model.pth"
    torch.save(original.state_dict(), path)
    model = load_original_checkpoint(path)
    assert model.config.variant == "reference_mlp" and not model.training
    video, audio, text = inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(video, audio, text).theta_intensity, original(video, audio, text),
                                   rtol=1e-5, atol=1e-6)


def test_load_original_checkpoint_sizes_the_model_from_the_weights(tmp_path):
    original = randomise_(OriginalMLPModel((24, 16, 12), 8, (16, 8))).eval()
    path = tmp_path / "small.pth"
    torch.save({f"module.{k}": v for k, v in original.state_dict().items()}, path)  # nn.DataParallel prefix
    model = load_original_checkpoint(path)
    assert model.config.encoders.video_dim == 24 and model.config.cross_modal.embed_dim == 8
    assert model.config.regressor.hidden_sizes == (16, 8)
    video, audio, text = inputs(2, 3, (24, 16, 12))
    with torch.no_grad():
        torch.testing.assert_close(model(video, audio, text).theta_intensity, original(video, audio, text))


def test_a_checkpoint_of_neither_variant_lists_the_key_differences(tmp_path):
    state = OriginalMLPModel().state_dict()
    del state["regressor.fc.3.bias"]
    state["regressor.fc.9.weight"] = torch.zeros(2, 2)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointMismatch) as info:
        load_original_checkpoint(path)
    message = str(info.value)
    assert "closest variant is reference_mlp" in message
    assert "missing keys (1):\n    regressor.fc.3.bias" in message
    assert "unexpected keys (1):\n    regressor.fc.9.weight" in message


def test_a_pickled_object_is_refused(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"model": OriginalRegressor(4)}, path)
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        load_original_checkpoint(path)
