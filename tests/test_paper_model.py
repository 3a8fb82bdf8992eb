"""The paper variant: masks in every pathway, timeline alignment, BEiT layers, bounded head,
and the errors bad inputs raise."""
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import BeitConfig as HFBeitConfig
from transformers.models.beit.modeling_beit import BeitLayer

from maven_fast.checkpoint import load_model, save_weights
from maven_fast.config import BeitConfig, MavenConfig
from maven_fast.model import MAVEN, MavenInputError
from maven_fast.model.beit import BeitStyleLayer, beit_layer_key
from maven_fast.model.cross_modal import CrossModalAttention
from maven_fast.model.timeline import resample_to_timeline

from original_maven import randomise_

DV, DA, DT = 24, 16, 12


def tiny_paper_config() -> MavenConfig:
    config = MavenConfig.paper()
    config.encoders.video_dim, config.encoders.audio_dim, config.encoders.text_dim = DV, DA, DT
    config.cross_modal.embed_dim = 8
    config.beit = BeitConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    config.temporal.max_video_len = 64
    config.regressor.hidden_sizes = (16, 8)
    return config


@pytest.fixture
def model():
    return randomise_(MAVEN(tiny_paper_config())).eval()


def batch(lengths_v=(9, 5, 1), lengths_a=(11, 4, 0), lengths_t=(3, 6, 2)):
    """A padded batch whose padded positions hold large garbage."""
    b = len(lengths_v)
    tv, ta, tt = max(lengths_v), max(lengths_a), max(lengths_t)
    video, audio, text = torch.randn(b, tv, DV), torch.randn(b, ta, DA), torch.randn(b, tt, DT)
    lengths = [torch.tensor(x) for x in (lengths_v, lengths_a, lengths_t)]
    for x, n in zip((video, audio, text), lengths):
        pad = torch.arange(x.shape[1]).unsqueeze(0) >= n.unsqueeze(1)
        x[pad] = 1e4 * torch.randn(int(pad.sum()), x.shape[2])
    return (video, audio, text), lengths


def test_outputs_are_bounded_polar_per_frame(model):
    (video, audio, text), lengths = batch()
    with torch.no_grad():
        out = model(video, audio, text, *lengths)
    assert out.valence_arousal.shape == (3, 9, 2) and out.theta_intensity.shape == (3, 9, 2)
    theta, intensity = out.theta_intensity.unbind(-1)
    assert theta.abs().max() <= math.pi and intensity.min() >= 0 and intensity.max() <= math.sqrt(2)
    expected = torch.stack([intensity * torch.cos(theta), intensity * torch.sin(theta)], -1)
    torch.testing.assert_close(out.valence_arousal, expected)
    assert torch.isfinite(out.valence_arousal).all()


def test_valid_outputs_equal_each_item_run_alone(model):
    """Padding appended to every modality (filled with garbage) changes no valid output."""
    (video, audio, text), (lv, la, lt) = batch()
    with torch.no_grad():
        padded = model(video, audio, text, lv, la, lt).valence_arousal
        for i in range(3):
            ta = max(int(la[i]), 1)  # an item without audio still needs a length-1 tensor
            alone = model(video[i:i + 1, :lv[i]], audio[i:i + 1, :ta], text[i:i + 1, :lt[i]],
                          lv[i:i + 1], la[i:i + 1], lt[i:i + 1]).valence_arousal
            torch.testing.assert_close(padded[i, :lv[i]], alone[0], rtol=1e-4, atol=1e-5)


def test_garbage_in_padded_positions_changes_nothing(model):
    (video, audio, text), lengths = batch()
    with torch.no_grad():
        first = model(video, audio, text, *lengths).valence_arousal
        for x, n in zip((video, audio, text), lengths):
            pad = torch.arange(x.shape[1]).unsqueeze(0) >= n.unsqueeze(1)
            x[pad] = -3e3 * torch.rand(int(pad.sum()), x.shape[2])
        second = model(video, audio, text, *lengths).valence_arousal
    valid = torch.arange(9).unsqueeze(0) < lengths[0].unsqueeze(1)
    torch.testing.assert_close(first[valid], second[valid], rtol=1e-5, atol=1e-6)


def test_an_item_without_audio_is_finite_and_ignores_its_audio_tensor(model):
    (video, audio, text), lengths = batch()
    with torch.no_grad():
        first = model(video, audio, text, *lengths).valence_arousal
        audio[2] = torch.randn_like(audio[2])
        second = model(video, audio, text, *lengths).valence_arousal
    assert torch.isfinite(first).all()
    torch.testing.assert_close(first[2, :1], second[2, :1], rtol=0, atol=0)


def test_training_step_with_empty_sequences_has_finite_gradients_everywhere(model):
    model.train()
    (video, audio, text), (lv, la, lt) = batch(lengths_a=(11, 0, 0), lengths_t=(3, 0, 2))
    targets = torch.rand(3, 9, 2) * 2 - 1
    out = model(video, audio, text, lv, la, lt, targets=targets)
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.temporal_position_embedding.grad[:9].abs().sum() > 0
    assert model.temporal_position_embedding.grad[9:].abs().sum() == 0


def test_loss_from_forward_equals_model_loss(model):
    (video, audio, text), (lv, la, lt) = batch()
    targets = torch.rand(3, 9, 2)
    mask = torch.rand(3, 9) > 0.2
    out = model(video, audio, text, lv, la, lt, targets=targets, mask=mask)
    valid = mask & (torch.arange(9) < lv.unsqueeze(1))
    torch.testing.assert_close(out.loss, model.loss(out, targets, valid))
    assert out.n_valid.item() == valid.sum().item()


def test_safetensors_round_trip(model, tmp_path):
    save_weights(model, tmp_path / "paper.safetensors")
    loaded = load_model(tmp_path / "paper.safetensors").eval()
    (video, audio, text), lengths = batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded(video, audio, text, *lengths).valence_arousal,
                                   model(video, audio, text, *lengths).valence_arousal, rtol=0, atol=0)


# --------------------------------------------------------------------------- building blocks
def test_a_pathway_with_no_keys_outputs_its_out_proj_bias():
    block = randomise_(CrossModalAttention(DV, DA, DT, embed_dim=8, num_heads=2)).eval()
    x_v, x_a, x_t = torch.randn(2, 5, 8), torch.randn(2, 4, 8), torch.randn(2, 3, 8)
    a_len, t_len = torch.tensor([4, 0]), torch.tensor([3, 3])
    with torch.no_grad():
        v_enh, _, _ = block.block(x_v, x_a, x_t, None, a_len, t_len)
        v2t = block.attn_v2t(x_v[1:], x_t[1:], x_t[1:])[0]
        expected = block.layer_norm((x_v[1:] + block.attn_v2a.out_proj.bias + v2t) / 3)
    torch.testing.assert_close(v_enh[1:], expected, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(v_enh).all()


def test_timeline_resampling_is_linear_interpolation_of_the_valid_part():
    x = torch.randn(3, 7, 4)
    src, dst = torch.tensor([7, 3, 1]), torch.tensor([10, 2, 5])
    out = resample_to_timeline(x, src, dst, 10)
    for i in range(3):
        part = x[i:i + 1, :src[i]].transpose(1, 2)
        expected = F.interpolate(part, size=int(dst[i]), mode="linear", align_corners=False).transpose(1, 2)[0]
        torch.testing.assert_close(out[i, :dst[i]], expected)
    torch.testing.assert_close(resample_to_timeline(x, None, None, 7), x)
    assert (resample_to_timeline(x, torch.tensor([0, 7, 7]), None, 5)[0] == 0).all()


def test_beit_layer_with_mask_equals_transformers_on_the_unpadded_item():
    hf_config = HFBeitConfig(hidden_size=16, num_attention_heads=2, intermediate_size=32, layer_scale_init_value=0.1)
    reference = randomise_(BeitLayer(hf_config)).eval()
    ours = BeitStyleLayer(BeitConfig.from_transformers(hf_config)).eval()
    ours.load_state_dict({beit_layer_key(k): v for k, v in reference.state_dict().items()})
    x = torch.randn(2, 6, 16)
    valid = torch.arange(6).unsqueeze(0) < torch.tensor([[6], [4]])
    with torch.no_grad():
        out = ours(x, valid)
        torch.testing.assert_close(out[0], reference(x[:1])[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out[1, :4], reference(x[1:, :4])[0], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- bad inputs
def good():
    return [torch.randn(2, 5, DV), torch.randn(2, 4, DA), torch.randn(2, 3, DT)], {}


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t, k: t.__setitem__(1, torch.randn(3, 4, DA)),
         r"audio: batch size 3 does not match video's batch size 2"),
        (lambda t, k: t.__setitem__(0, torch.randn(2, 5, DV + 1)),
         r"video: expected shape \[B, Tv, 24\] .*got \[2, 5, 25\]"),
        (lambda t, k: t.__setitem__(2, torch.randn(2, 3, 5)), r"text: expected shape \[B, Tt, 12\] .*got \[2, 3, 5\]"),
        (lambda t, k: t.__setitem__(1, torch.randn(2, DA)), r"audio: expected shape \[B, Ta, 16\], got \[2, 16\]"),
        (lambda t, k: t.__setitem__(1, torch.randn(2, 0, DA)),
         r"audio: expected shape \[B, Ta, 16\] with at least one"),
        (lambda t, k: t.__setitem__(0, torch.randn(2, 0, DV)), r"video: .*an empty sequence"),
        (lambda t, k: k.update(video_lengths=torch.tensor([5, 6])), r"video_lengths: length 6 is longer than .* is 5"),
        (lambda t, k: k.update(audio_lengths=torch.tensor([-1, 2])), r"audio_lengths: lengths must be >= 0"),
        (lambda t, k: k.update(text_lengths=torch.tensor([1, 2, 3])), r"text_lengths: expected shape \[B\] = \[2\]"),
        (lambda t, k: k.update(text_lengths=torch.tensor([1.0, 2.0])), r"text_lengths: expected an integer tensor"),
        (lambda t, k: k.update(targets=torch.randn(2, 4, 2)), r"targets: expected shape \[B, Tv, 2\] = \[2, 5, 2\]"),
        (lambda t, k: k.update(targets=torch.randn(2, 5, 2), mask=torch.ones(2, 5)), r"mask: expected a bool tensor"),
        (lambda t, k: t.__setitem__(0, torch.randn(2, 65, DV)), r"video: 65 frames exceed temporal.max_video_len=64"),
        (lambda t, k: t.__setitem__(0, torch.randint(0, 9, (2, 5, DV))), r"video: expected a floating-point tensor"),
    ],
)
def test_bad_inputs_name_the_tensor_and_the_expected_shape(model, change, message):
    tensors, kwargs = good()
    change(tensors, kwargs)
    with pytest.raises(MavenInputError, match=message):
        model(*tensors, **kwargs)


def test_reference_variants_want_pooled_audio_and_text():
    config = tiny_paper_config()
    config.variant, config.beit.num_branches = "reference_mlp", 1
    config.cross_modal.key_padding_masks = False
    config.regressor.bounded = False
    model = MAVEN(config)
    with pytest.raises(MavenInputError, match=r"audio: expected shape \[B, 16\] \(pooled, reference_mlp\)"):
        model(torch.randn(2, 5, DV), torch.randn(2, 4, DA), torch.randn(2, DT))
    with pytest.raises(MavenInputError, match="audio_lengths: the reference_mlp variant takes pooled"):
        model(torch.randn(2, 5, DV), torch.randn(2, DA), torch.randn(2, DT), audio_lengths=torch.tensor([1, 1]))
