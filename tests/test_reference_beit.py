"""reference_beit against an independent re-statement of the original Train_BEiT.py model
(its BEiT layers taken from transformers, as the original does), and BEiT weight loading."""
import re

import pytest
import torch
from transformers import BeitConfig as HFBeitConfig
from transformers import BeitModel

from maven_fast.checkpoint import load_original_checkpoint
from maven_fast.config import BeitConfig, MavenConfig
from maven_fast.model import MAVEN

from original_maven import OriginalBeitModel, randomise_

DIMS, EMBED = (24, 16, 12), 8


def tiny_hf_beit_config(**overrides) -> HFBeitConfig:
    values = dict(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        layer_scale_init_value=0.1, drop_path_rate=0.1, use_relative_position_bias=False,
        use_shared_relative_position_bias=False, use_mask_token=False, image_size=32, patch_size=16,
    )
    values.update(overrides)
    return HFBeitConfig(**values)


# transformers 5 BeitLayer names -> the transformers 4.x names an original checkpoint holds.
TO_4X = [(r"\.attention\.q_proj\.", ".attention.attention.query."),
         (r"\.attention\.k_proj\.", ".attention.attention.key."),
         (r"\.attention\.v_proj\.", ".attention.attention.value."),
         (r"\.attention\.o_proj\.", ".attention.output.dense."),
         (r"\.mlp\.fc1\.", ".intermediate.dense."), (r"\.mlp\.fc2\.", ".output.dense.")]


def as_original_checkpoint(state: dict) -> dict:
    """Keys as Train_BEiT.py saved them: beit3_encoders.{k}.layer.{i}.<4.x BeitLayer names>."""
    out = {}
    for key, value in state.items():
        key = re.sub(r"^beit3_encoders\.(\d+)\.", r"beit3_encoders.\1.layer.", key)
        for pattern, replacement in TO_4X:
            key = re.sub(pattern, replacement, key)
        out[key] = value
    return out


def maven_config_for(hf_config: HFBeitConfig) -> MavenConfig:
    config = MavenConfig.reference_beit()
    config.encoders.video_dim, config.encoders.audio_dim, config.encoders.text_dim = DIMS
    config.cross_modal.embed_dim = EMBED
    config.beit = BeitConfig.from_transformers(hf_config, num_branches=2)
    return config


def build_pair(**overrides):
    hf_config = tiny_hf_beit_config(**overrides)
    original = randomise_(OriginalBeitModel(BeitModel(hf_config), DIMS, EMBED)).eval()
    model = MAVEN(maven_config_for(hf_config))
    model.load_state_dict(as_original_checkpoint(original.state_dict()), strict=True)
    return original, model.eval()


def inputs(batch=2, frames=5):
    return torch.randn(batch, frames, DIMS[0]), torch.randn(batch, DIMS[1]), torch.randn(batch, DIMS[2])


@pytest.mark.parametrize("overrides", [{}, {"layer_scale_init_value": 0.0}, {"hidden_act": "relu"}])
def test_same_weights_give_the_original_outputs(overrides):
    original, model = build_pair(**overrides)
    video, audio, text = inputs()
    with torch.no_grad():
        expected = original(video, audio, text)
        out = model(video, audio, text)
    torch.testing.assert_close(out.valence_arousal, expected, rtol=1e-5, atol=1e-6)
    v, a = expected.unbind(-1)
    torch.testing.assert_close(out.theta_intensity, torch.stack([torch.atan2(a, v), torch.hypot(v, a)], -1),
                               rtol=1e-5, atol=1e-6)


def test_original_checkpoint_keys_load_unchanged(tmp_path):
    original, _ = build_pair()
    state = as_original_checkpoint(original.state_dict())
    model = MAVEN(maven_config_for(tiny_hf_beit_config()))
    assert set(model.state_dict()) == set(state)
    assert "beit3_encoders.1.layer.0.attention.attention.query.weight" in state
    path = tmp_path / "best_model.pth"
    torch.save(state, path)
    loaded = load_original_checkpoint(path, beit_num_heads=2)
    assert loaded.config.variant == "reference_beit"
    assert loaded.config.beit.num_hidden_layers == 2 and loaded.config.beit.num_branches == 2
    assert loaded.config.beit.hidden_size == 16 and loaded.config.beit.intermediate_size == 32
    video, audio, text = inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(video, audio, text).valence_arousal, original(video, audio, text),
                                   rtol=1e-5, atol=1e-6)


def test_loss_uses_valence_arousal_directly():
    _, model = build_pair()
    video, audio, text = inputs()
    targets = torch.rand(2, 5, 2)
    out = model(video, audio, text, video_lengths=torch.tensor([5, 3]), targets=targets)
    valid = torch.arange(5) < torch.tensor([5, 3]).unsqueeze(1)
    expected = ((out.valence_arousal - targets) ** 2)[valid].mean()
    torch.testing.assert_close(out.loss, expected)


def test_init_from_a_local_beit_checkpoint(tmp_path):
    hf_config = tiny_hf_beit_config(num_hidden_layers=3)
    pretrained = randomise_(BeitModel(hf_config, add_pooling_layer=False)).eval()
    pretrained.save_pretrained(tmp_path)
    config = maven_config_for(hf_config)
    config.beit.num_hidden_layers = 2  # copy the first two of three layers
    config.beit.init_from = str(tmp_path)
    model = MAVEN(config).eval()
    x = torch.randn(2, 6, 16)
    with torch.no_grad():
        for stack in model.beit3_encoders:
            for ours, theirs in zip(stack.layer, pretrained.layers):
                torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)


def test_init_from_a_checkpoint_of_another_shape_is_refused(tmp_path):
    BeitModel(tiny_hf_beit_config(hidden_size=32), add_pooling_layer=False).save_pretrained(tmp_path)
    config = maven_config_for(tiny_hf_beit_config())
    config.beit.init_from = str(tmp_path)
    with pytest.raises(ValueError, match=r"beit.hidden_size=16 but the checkpoint has 32"):
        MAVEN(config)


def test_init_from_a_missing_checkpoint_says_what_to_do(tmp_path):
    config = maven_config_for(tiny_hf_beit_config())
    config.beit.init_from = str(tmp_path / "nowhere")
    with pytest.raises(OSError, match="could not load the BEiT checkpoint .*init_from"):
        MAVEN(config)
