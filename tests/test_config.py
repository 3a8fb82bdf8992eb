"""MavenConfig: presets, exact YAML round-trip, errors naming the key and the expected type."""
import pytest

from maven_fast.config import ConfigError, LossConfig, MavenConfig, build_dataclass, to_plain


@pytest.mark.parametrize("preset", ["reference_mlp", "reference_beit", "paper"])
def test_yaml_round_trip_is_exact(preset, tmp_path):
    config = MavenConfig.preset(preset)
    config.loss.ccc_weight = 0.25
    config.regressor.dropouts = (0.5, 0.125)
    config.beit.init_from = "/some/dir"
    text = config.to_yaml()
    assert MavenConfig.from_yaml(text) == config
    assert MavenConfig.from_yaml(text).to_yaml() == text
    path = tmp_path / "model.yaml"
    config.to_yaml(path)
    assert MavenConfig.from_yaml(path) == config
    assert MavenConfig.from_yaml(str(path)) == config


def test_presets_follow_the_spec():
    mlp, beit, paper = MavenConfig.reference_mlp(), MavenConfig.reference_beit(), MavenConfig.paper()
    for config in (mlp, beit, paper):
        assert (config.cross_modal.embed_dim, config.cross_modal.num_heads, config.cross_modal.dropout) == (512, 2, 0.1)
        assert (config.encoders.video_dim, config.encoders.audio_dim, config.encoders.text_dim) == (1024, 768, 768)
        assert config.regressor.hidden_sizes == (512, 256) and config.regressor.dropouts == (0.5, 0.3)
        assert config.loss.ccc_weight == 0.0
    assert mlp.pooled_inputs and not mlp.cross_modal.key_padding_masks
    assert (mlp.regressor.output, mlp.regressor.bounded) == ("polar", False)
    assert beit.regressor.output == "valence_arousal"
    assert (beit.beit.num_hidden_layers, beit.beit.num_branches, beit.beit.hidden_size) == (12, 2, 768)
    assert paper.variant == "paper" and MavenConfig() == paper
    assert not paper.pooled_inputs and paper.cross_modal.key_padding_masks
    assert paper.beit_layers == 2 and paper.regressor.bounded


def test_missing_keys_take_the_values_of_the_named_preset():
    config = MavenConfig.from_yaml("cross_modal:\n  num_heads: 4\n")
    assert config.variant == "paper" and config.cross_modal.num_heads == 4
    assert config.cross_modal.embed_dim == 512
    assert config.beit == MavenConfig.paper().beit
    assert MavenConfig.from_yaml("variant: reference_beit\n") == MavenConfig.reference_beit()
    mlp = MavenConfig.from_yaml("variant: reference_mlp\nloss:\n  ccc_weight: 0.5\n")
    assert mlp.regressor.bounded is False and not mlp.cross_modal.key_padding_masks and mlp.loss.ccc_weight == 0.5


@pytest.mark.parametrize(
    "text, message",
    [
        ("colour: red\n", r"config: unknown key\(s\) 'colour'"),
        ("cross_modal:\n  num_head: 2\n", r"cross_modal: unknown key\(s\) 'num_head'"),
        ("cross_modal:\n  num_heads: two\n", r"cross_modal\.num_heads: expected int, got str"),
        ("cross_modal:\n  num_heads: 2.0\n", r"cross_modal\.num_heads: expected int, got float"),
        ("cross_modal:\n  key_padding_masks: 1\n", r"cross_modal\.key_padding_masks: expected bool, got int"),
        ("loss:\n  ccc_weight: true\n", r"loss\.ccc_weight: expected float, got bool"),
        ("regressor:\n  hidden_sizes: [512]\n", r"regressor\.hidden_sizes: expected a list of 2 int"),
        ("regressor:\n  hidden_sizes: [512, x]\n", r"regressor\.hidden_sizes\[1\]: expected int"),
        ("regressor:\n  output: angles\n", r"regressor\.output: expected one of 'polar', 'valence_arousal'"),
        ("variant: big\n", r"variant: expected one of 'reference_mlp', 'reference_beit', 'paper'"),
        ("beit:\n  init_from: 3\n", r"beit\.init_from: expected str or null, got int"),
        ("encoders: 5\n", r"encoders: expected a mapping, got int"),
        ("- a\n- b\n", r"must be a YAML mapping"),
    ],
)
def test_bad_yaml_names_key_and_expected_type(text, message):
    with pytest.raises(ConfigError, match=message):
        MavenConfig.from_yaml(text)


def test_int_is_accepted_for_float_fields():
    config = MavenConfig.from_yaml("loss:\n  ccc_weight: 1\n")
    assert config.loss.ccc_weight == 1.0 and isinstance(config.loss.ccc_weight, float)


def test_yaml_strings_that_parse_as_floats_are_accepted_for_float_fields_only():
    # PyYAML (YAML 1.1) reads 1e-4 and 5e-1 as strings; float fields take them.
    config = MavenConfig.from_yaml("loss:\n  ccc_weight: 5e-1\nbeit:\n  layer_norm_eps: 1e-6\n")
    assert config.loss.ccc_weight == 0.5 and isinstance(config.loss.ccc_weight, float)
    assert config.beit.layer_norm_eps == 1e-6
    assert build_dataclass(LossConfig, {"mse_weight": " 2.5 "}).mse_weight == 2.5
    with pytest.raises(ConfigError, match=r"loss\.ccc_weight: expected float, got str 'lots'"):
        MavenConfig.from_yaml("loss:\n  ccc_weight: lots\n")
    with pytest.raises(ConfigError, match=r"cross_modal\.num_heads: expected int, got str '2'"):
        MavenConfig.from_dict({"cross_modal": {"num_heads": "2"}})
    with pytest.raises(ConfigError, match=r"cross_modal\.key_padding_masks: expected bool, got str '1'"):
        MavenConfig.from_dict({"cross_modal": {"key_padding_masks": "1"}})


def test_public_helpers_round_trip_a_config():
    config = MavenConfig.reference_beit()
    plain = to_plain(config)
    assert plain["regressor"]["hidden_sizes"] == [512, 256]  # tuples become lists
    assert build_dataclass(MavenConfig, plain) == config
    with pytest.raises(ConfigError, match=r"top\.cross_modal: unknown key\(s\) 'heads'"):
        build_dataclass(MavenConfig, {"cross_modal": {"heads": 2}}, path="top")


@pytest.mark.parametrize(
    "text, message",
    [
        ("cross_modal:\n  embed_dim: 10\n  num_heads: 3\n", "divisible by cross_modal.num_heads"),
        ("cross_modal:\n  dropout: 1.5\n", r"cross_modal\.dropout must be in \[0, 1\)"),
        ("encoders:\n  video_dim: 0\n", "encoders.video_dim must be positive"),
        # zero head counts: an error naming the key, not a ZeroDivisionError (found by the CI fuzzer)
        ("beit:\n  num_attention_heads: 0\n", "beit.num_attention_heads must be positive"),
        ("cross_modal:\n  num_heads: 0\n", "cross_modal.num_heads must be positive"),
        ("variant: reference_beit\nregressor:\n  output: polar\n", "regressor.output must be 'valence_arousal'"),
        ("beit:\n  num_branches: 2\n", "num_branches must be 1 for the paper variant"),
    ],
)
def test_inconsistent_values_are_rejected(text, message):
    with pytest.raises(ConfigError, match=message):
        MavenConfig.from_yaml(text)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'large'"):
        MavenConfig.preset("large")


def test_encoder_signature_round_trip():
    config = MavenConfig.paper()
    signature = config.encoders.signature()
    assert signature["video"] == {"name": "swin_base_patch4_window7_224", "dim": 1024}
    assert type(config.encoders).from_signature(signature) == config.encoders


def test_beit_section_matches_transformers_beit_config():
    beit = MavenConfig.reference_beit().beit
    hf = beit.to_transformers()
    assert (hf.hidden_size, hf.num_hidden_layers, hf.num_attention_heads) == (768, 12, 12)
    assert not hf.use_relative_position_bias and not hf.use_shared_relative_position_bias
    back = type(beit).from_transformers(hf, num_branches=2)
    assert back == beit
