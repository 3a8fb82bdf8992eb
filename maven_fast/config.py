"""MAVEN model configuration: one dataclass, three named presets, exact YAML round-trip.

``MavenConfig.reference_mlp()``  the original ``Train_MLP.py`` model, key for key.
``MavenConfig.reference_beit()`` the original ``Train_BEiT.py`` model, key for key.
``MavenConfig.paper()``          what the paper describes, the original's defects fixed
                                 (the default).

YAML files hold the same nested sections as the dataclasses. Unknown keys and
values of the wrong type raise :class:`ConfigError` naming the dotted key and the
expected type; a key left out takes the value of the preset named by ``variant``.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import yaml

Variant = Literal["reference_mlp", "reference_beit", "paper"]
VARIANTS: tuple[str, ...] = typing.get_args(Variant)

#: The BEiT checkpoint the original ``Train_BEiT.py`` initialises its encoders from.
ORIGINAL_BEIT_CHECKPOINT = "microsoft/beit-base-patch16-224-pt22k"


#: Upper bounds of the sizes a config may name (checked by :meth:`MavenConfig.validate`).
MAX_SIZE = 1 << 20
MAX_LAYERS = 1024
#: float32's largest finite value: the bound of config numbers built into float32 tensors.
FLOAT32_MAX = 3.4028234663852886e38
#: ``model.encoders.compute_dtype`` values: the cache's (filled in by training), or a precision.
ENCODER_COMPUTE_DTYPES = ("cache", "float32", "bfloat16", "float16")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type.

    ``key`` is the dotted key at fault (``optim.lr``, ``regressor.hidden_sizes[0]``) when
    there is one: :meth:`TrainConfig.load <maven_fast.train.config.TrainConfig.load>` uses it
    to name the file, line and column of that key. The message is one line.
    """

    def __init__(self, message: str, *, key: str | None = None):
        super().__init__(message)
        self.key = key


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr`` bounded in length and depth (for messages about values read from files)."""
    import reprlib

    r = reprlib.Repr()
    r.maxstring = r.maxother = r.maxlong = limit
    r.maxlevel, r.maxdict, r.maxlist, r.maxtuple = 3, 4, 4, 4
    return r.repr(value)


@dataclass
class EncoderConfig:
    """Which frozen encoders produced the features, and their output widths.

    The widths size the modality projections; the names are recorded so that a
    feature cache can be checked against a model (see :meth:`signature`).
    ``compute_dtype``: the precision the encoders computed the features in
    (``float32``, ``bfloat16``, ``float16``), or ``cache`` (default): whatever
    the training cache records, filled in when training opens it, so a
    checkpoint always names it and ``maven-fast predict`` encodes at the same
    precision. A value that differs from the cache's is an error.
    """

    video: str = "swin_base_patch4_window7_224"
    video_dim: int = 1024
    audio: str = "facebook/hubert-base-ls960"
    audio_dim: int = 768
    text: str = "roberta-base"
    text_dim: int = 768
    compute_dtype: str = "cache"

    def signature(self) -> dict[str, dict[str, Any]]:
        """Same layout as :meth:`maven_fast.encoders.EncoderSet.signature` (names and dims)."""
        return {
            "video": {"name": self.video, "dim": self.video_dim},
            "audio": {"name": self.audio, "dim": self.audio_dim},
            "text": {"name": self.text, "dim": self.text_dim},
        }

    @classmethod
    def from_signature(cls, signature: dict[str, dict[str, Any]]) -> "EncoderConfig":
        return cls(
            video=signature["video"]["name"], video_dim=int(signature["video"]["dim"]),
            audio=signature["audio"]["name"], audio_dim=int(signature["audio"]["dim"]),
            text=signature["text"]["name"], text_dim=int(signature["text"]["dim"]),
        )


@dataclass
class CrossModalConfig:
    """The six-pathway cross-modal attention block.

    ``key_padding_masks``: mask padded keys from the lengths in every pathway.
    The original has no masks (its a2v and t2v pathways attend over the
    zero-padded video frames of a batch), so the reference presets set it False;
    ``paper`` sets it True.
    """

    embed_dim: int = 512
    num_heads: int = 2
    dropout: float = 0.1
    key_padding_masks: bool = True


@dataclass
class BeitConfig:
    """BEiT-style pre-LN self-attention layers (field names follow ``transformers.BeitConfig``).

    ``reference_beit``: ``num_branches`` (2) parallel stacks of ``num_hidden_layers``
    (12) layers, as the original's two deep copies of the BEiT-base encoder.
    ``paper``: one stack of ``num_hidden_layers`` (= ``beit_layers``, 2) layers.
    ``init_from``: a BEiT checkpoint (hub name or local directory) to copy the
    first layers from, or None for random initialisation. The original always
    started from :data:`ORIGINAL_BEIT_CHECKPOINT`; set it to reproduce that.
    """

    hidden_size: int = 768
    num_hidden_layers: int = 2
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    layer_scale_init_value: float = 0.1
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    drop_path_rate: float = 0.1
    initializer_range: float = 0.02
    num_branches: int = 1
    init_from: str | None = None

    _TRANSFORMERS_FIELDS = (
        "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
        "layer_norm_eps", "layer_scale_init_value", "hidden_dropout_prob",
        "attention_probs_dropout_prob", "drop_path_rate", "initializer_range",
    )

    def to_transformers(self):
        """The equivalent ``transformers.BeitConfig`` (no relative position bias: the
        original calls the layers without one)."""
        from transformers import BeitConfig as HFBeitConfig

        return HFBeitConfig(
            **{k: getattr(self, k) for k in self._TRANSFORMERS_FIELDS},
            use_relative_position_bias=False, use_shared_relative_position_bias=False,
        )

    @classmethod
    def from_transformers(cls, hf_config, num_branches: int = 1, init_from: str | None = None) -> "BeitConfig":
        values = {k: getattr(hf_config, k) for k in cls._TRANSFORMERS_FIELDS}
        return cls(**values, num_branches=num_branches, init_from=init_from)


@dataclass
class TemporalConfig:
    """``paper`` only: the video timeline the fused features are refined on."""

    max_video_len: int = 4096


@dataclass
class RegressorConfig:
    """The 3-layer FFN head: Linear-ReLU-Dropout x2, then Linear(-> 2).

    ``output``: ``polar`` reads the last layer as (theta, intensity) through
    :class:`maven_fast.nn.PolarHead` (``bounded``: theta = pi*tanh, intensity =
    sqrt(2)*sigmoid); ``valence_arousal`` reads it as (valence, arousal) directly
    (the original BEiT variant).
    """

    hidden_sizes: tuple[int, int] = (512, 256)
    dropouts: tuple[float, float] = (0.5, 0.3)
    output: Literal["polar", "valence_arousal"] = "polar"
    bounded: bool = True


@dataclass
class LossConfig:
    """loss = mse_weight * MSE(valence, arousal over valid frames)
    + ccc_weight * (1 - (CCC_v + CCC_a) / 2)."""

    mse_weight: float = 1.0
    ccc_weight: float = 0.0


@dataclass
class MavenConfig:
    """Everything that defines a MAVEN model. Build one with a preset and adjust.

    >>> cfg = MavenConfig.paper()
    >>> cfg.beit.num_hidden_layers
    2
    >>> MavenConfig.from_yaml(cfg.to_yaml()) == cfg
    True
    """

    variant: Variant = "paper"
    encoders: EncoderConfig = field(default_factory=EncoderConfig)
    cross_modal: CrossModalConfig = field(default_factory=CrossModalConfig)
    beit: BeitConfig = field(default_factory=BeitConfig)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    regressor: RegressorConfig = field(default_factory=RegressorConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ presets
    @classmethod
    def reference_mlp(cls) -> "MavenConfig":
        """``Train_MLP.py``: pooled audio/text, unbounded polar head, no masks."""
        return cls(
            variant="reference_mlp",
            cross_modal=CrossModalConfig(key_padding_masks=False),
            regressor=RegressorConfig(output="polar", bounded=False),
        )

    @classmethod
    def reference_beit(cls) -> "MavenConfig":
        """``Train_BEiT.py``: two parallel 12-layer BEiT-base encoders, valence/arousal head."""
        return cls(
            variant="reference_beit",
            cross_modal=CrossModalConfig(key_padding_masks=False),
            beit=BeitConfig(num_hidden_layers=12, num_branches=2),
            regressor=RegressorConfig(output="valence_arousal", bounded=False),
        )

    @classmethod
    def paper(cls) -> "MavenConfig":
        """Sequences with masks, timeline alignment, 2 BEiT layers, bounded polar head."""
        return cls()

    @classmethod
    def preset(cls, name: str) -> "MavenConfig":
        if name not in VARIANTS:
            raise ConfigError(f"unknown preset {short_repr(name)}; choose one of {', '.join(VARIANTS)}",
                              key="preset")
        return getattr(cls, name)()

    @property
    def beit_layers(self) -> int:
        return self.beit.num_hidden_layers

    @property
    def pooled_inputs(self) -> bool:
        """True when audio and text arrive as one pooled vector per item."""
        return self.variant != "paper"

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Cross-field checks the types alone cannot express."""
        cm = self.cross_modal
        if self.variant not in VARIANTS:
            raise ConfigError(f"variant: expected one of {', '.join(VARIANTS)}, got {short_repr(self.variant)}",
                              key="variant")
        if self.encoders.compute_dtype not in ENCODER_COMPUTE_DTYPES:
            raise ConfigError(f"encoders.compute_dtype: expected one of {', '.join(ENCODER_COMPUTE_DTYPES)}, "
                              f"got {short_repr(self.encoders.compute_dtype)}", key="encoders.compute_dtype")
        positive = {
            "encoders.video_dim": self.encoders.video_dim, "encoders.audio_dim": self.encoders.audio_dim,
            "encoders.text_dim": self.encoders.text_dim, "cross_modal.embed_dim": cm.embed_dim,
            "cross_modal.num_heads": cm.num_heads, "beit.hidden_size": self.beit.hidden_size,
            "beit.num_attention_heads": self.beit.num_attention_heads,
            "beit.intermediate_size": self.beit.intermediate_size, "beit.num_branches": self.beit.num_branches,
            "temporal.max_video_len": self.temporal.max_video_len,
            "regressor.hidden_sizes[0]": self.regressor.hidden_sizes[0],
            "regressor.hidden_sizes[1]": self.regressor.hidden_sizes[1],
        }
        for key, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{key} must be positive, got {value}", key=key)
            if value > MAX_SIZE:  # a typo, or a config edited by hand: no model would fit in memory
                raise ConfigError(f"{key} must be at most {MAX_SIZE}, got {value}", key=key)
        # after the sizes are known positive (a zero head count is "must be positive", not a crash)
        if cm.embed_dim % cm.num_heads:
            raise ConfigError(
                f"cross_modal.embed_dim ({cm.embed_dim}) must be divisible by cross_modal.num_heads ({cm.num_heads})",
                key="cross_modal.num_heads")
        if self.variant != "reference_mlp" and self.beit.hidden_size % self.beit.num_attention_heads:
            raise ConfigError(
                f"beit.hidden_size ({self.beit.hidden_size}) must be divisible by "
                f"beit.num_attention_heads ({self.beit.num_attention_heads})", key="beit.num_attention_heads")
        if not 0 <= self.beit.num_hidden_layers <= MAX_LAYERS:
            raise ConfigError(f"beit.num_hidden_layers must be in [0, {MAX_LAYERS}], got "
                              f"{self.beit.num_hidden_layers}", key="beit.num_hidden_layers")
        if self.variant == "paper" and self.beit.num_branches != 1:
            raise ConfigError("beit.num_branches must be 1 for the paper variant (one temporal stack)",
                              key="beit.num_branches")
        if self.variant == "reference_beit" and self.regressor.output != "valence_arousal":
            raise ConfigError("regressor.output must be 'valence_arousal' for reference_beit (as the original)",
                              key="regressor.output")
        if self.variant != "reference_beit" and self.regressor.output != "polar":
            raise ConfigError(f"regressor.output must be 'polar' for {self.variant}", key="regressor.output")
        probabilities = {
            "cross_modal.dropout": cm.dropout, "beit.hidden_dropout_prob": self.beit.hidden_dropout_prob,
            "beit.attention_probs_dropout_prob": self.beit.attention_probs_dropout_prob,
            "beit.drop_path_rate": self.beit.drop_path_rate,
            "regressor.dropouts[0]": self.regressor.dropouts[0], "regressor.dropouts[1]": self.regressor.dropouts[1],
        }
        for key, value in probabilities.items():
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{key} must be in [0, 1), got {value}", key=key)
        # Built into float32 parameters and kernels: a value past float32's range (3.4e38)
        # overflowed in torch.full (a fuzz find, 2026-12-04) or turned the weights to inf.
        b = self.beit
        ranges = {"beit.layer_norm_eps": (b.layer_norm_eps, 0.0), "beit.initializer_range": (b.initializer_range, 0.0),
                  "beit.layer_scale_init_value": (b.layer_scale_init_value, -FLOAT32_MAX),
                  "loss.mse_weight": (self.loss.mse_weight, 0.0), "loss.ccc_weight": (self.loss.ccc_weight, 0.0)}
        for key, (value, low) in ranges.items():
            if not low <= value <= FLOAT32_MAX:
                want = "a number in [0, 3.4e38]" if low == 0.0 else "a finite number within float32's range (3.4e38)"
                raise ConfigError(f"{key} must be {want}, got {value}", key=key)
        # The std of the truncated-normal initialisation, which divides by it (a fuzz find,
        # 2026-12-05: 0 raised ZeroDivisionError building the model from a checkpoint).
        if not b.initializer_range > 0.0:
            raise ConfigError(f"beit.initializer_range must be positive (the std of the initial weights), "
                              f"got {b.initializer_range}", key="beit.initializer_range")

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MavenConfig":
        """Build from nested dicts; keys left out take the values of the preset named by
        ``variant`` (``paper`` when there is none)."""
        variant = data.get("variant", "paper")
        if variant in VARIANTS:
            data = _overlay(cls.preset(variant).to_dict(), data)
        return build_dataclass(cls, data, path="")

    def to_yaml(self, path: str | os.PathLike | None = None) -> str:
        """The YAML text; also written to ``path`` when given."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        return text

    @classmethod
    def from_yaml(cls, source: str | os.PathLike) -> "MavenConfig":
        """Parse YAML text, or read a ``.yaml``/``.yml`` file when ``source`` is a path."""
        text, name = str(source), "YAML text"
        if isinstance(source, os.PathLike) or (
            "\n" not in text and text.endswith((".yaml", ".yml")) and os.path.exists(text)
        ):
            text, name = read_text(source), str(source)
        data, _ = load_yaml(text, name)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{name}: a MAVEN config must be a YAML mapping, got {type(data).__name__}")
        try:
            return cls.from_dict(data)
        except RecursionError:
            raise ConfigError(f"{name}: nested too deeply") from None


# ---------------------------------------------------------------------- typed building
def to_plain(value: Any) -> Any:
    """A (nested) dataclass as plain dicts and lists, ready for YAML or JSON (tuples become lists)."""
    if dataclasses.is_dataclass(value):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [to_plain(v) for v in value]
    return value


def _overlay(base: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """``data`` on top of ``base``, merging nested mappings key by key."""
    merged = dict(base)
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _overlay(merged[key], value)
        else:
            merged[key] = value
    return merged


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        return f"a list of {len(args)} {_type_name(args[0])}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, path: str) -> Any:
    def fail() -> ConfigError:
        return ConfigError(f"{path}: expected {_type_name(tp)}, got {type(value).__name__} "
                           f"{short_repr(value)}", key=path)

    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise fail()
        return build_dataclass(tp, value, path)
    if origin is Literal:
        if value not in typing.get_args(tp) or isinstance(value, bool):
            raise fail()
        return value
    if origin in (Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _convert(option, value, path)
            except ConfigError:
                continue
        raise fail()
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise fail()
        return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if tp is type(None):
        if value is not None:
            raise fail()
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise fail()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail()
        return value
    if tp is float:
        if isinstance(value, str):
            # PyYAML (YAML 1.1) reads `1e-4` as a string; accept any string Python parses as a float.
            try:
                return float(value.strip())
            except ValueError:
                raise fail() from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail()
        try:
            return float(value)
        except OverflowError:  # an int past float's range
            raise ConfigError(f"{path}: expected float, got an integer too large for a float "
                              f"(over 1.8e308)", key=path) from None
    if tp is str:
        if not isinstance(value, str):
            raise fail()
        return value
    raise ConfigError(f"{path}: unsupported field type {tp!r}")  # a programming error in this file


def build_dataclass(cls: type, data: dict[str, Any], path: str = "") -> Any:
    """An instance of dataclass ``cls`` from the mapping ``data``, converting every value to its
    field's type (nested dataclasses, tuples, Literals, unions; a string such as ``"1e-4"`` is
    accepted for a float field). Unknown keys and values of the wrong type raise
    :class:`ConfigError` naming the dotted key (``path`` prefixes it) and the expected type;
    keys left out take the dataclass defaults."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        where = path or "config"
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(short_repr(k) for k in unknown[:5])}; known keys: {', '.join(names)}",
            key=f"{path}.{unknown[0]}" if path else str(unknown[0]))
    kwargs = {k: _convert(hints[k], v, f"{path}.{k}" if path else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc),
                          key=(f"{path}.{exc.key}" if path else exc.key) if exc.key else path or None) from None


# ---------------------------------------------------------------------- YAML with locations
def read_text(path: str | os.PathLike) -> str:
    """A config file's text (UTF-8, BOM allowed); unreadable or undecodable: :class:`ConfigError`
    naming the file (and the line of the first bad byte)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                          "save the config as UTF-8") from None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


#: The deepest ``[``/``{`` nesting a YAML text may have (configs nest four levels). PyYAML's
#: scanner keeps one candidate key per open flow collection and re-checks them all at each
#: token, so ``[[[[...`` costs time quadratic in the depth: 2,000 levels took 0.9 s here.
MAX_YAML_FLOW_DEPTH = 64


class FlowDepthBoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that stops at :data:`MAX_YAML_FLOW_DEPTH` nested flow collections
    with a located syntax error, before the quadratic scan of deep nesting starts."""

    def fetch_flow_collection_start(self, TokenClass):
        if self.flow_level >= MAX_YAML_FLOW_DEPTH:
            raise yaml.scanner.ScannerError(
                None, None, f"more than {MAX_YAML_FLOW_DEPTH} nested '[' or '{{' "
                f"(a config nests a few levels; is a bracket unclosed?)", self.get_mark())
        super().fetch_flow_collection_start(TokenClass)


def load_yaml(text: str, source: str) -> tuple[Any, Any]:
    """Parse YAML ``text`` (safe tags only) into ``(data, node)``: the plain value and the
    composed node tree, whose marks locate each key (see :func:`yaml_location`). Any error
    is a one-line :class:`ConfigError` ``SOURCE:LINE:COLUMN: ...`` (1-based)."""
    loader = None
    try:
        loader = FlowDepthBoundedLoader(text)  # checks the characters
        try:
            node = loader.get_single_node()
        except (ValueError, OverflowError) as exc:  # a "\U" escape past U+10FFFF: chr() fails
            mark = loader.get_mark()
            raise ConfigError(f"{source}:{mark.line + 1}:{mark.column + 1}: YAML syntax error: a "
                              f"character escape past U+10FFFF ({_one_line(exc)})") from None
        if node is None:
            return None, None
        try:
            return loader.construct_document(node), node
        except (ValueError, TypeError, OverflowError) as exc:  # e.g. a timestamp 2024-13-01
            bad = _bad_scalar(loader, node)
            where = f"{source}:{bad.start_mark.line + 1}:{bad.start_mark.column + 1}" if bad else source
            raise ConfigError(f"{where}: YAML value {short_repr(bad.value) if bad else ''} cannot be "
                              f"read: {_one_line(exc)}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = _one_line("; ".join(x for x in (exc.context, exc.problem) if x)) or "syntax error"
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        raise ConfigError(f"{where}: YAML syntax error: {what}") from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        before = text[: max(0, exc.position)]
        line, column = before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1
        raise ConfigError(f"{source}:{line}:{column}: YAML cannot contain the character "
                          f"{exc.character!r} ({_one_line(exc.reason)})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: YAML error: {_one_line(exc)}") from None
    except RecursionError:
        raise ConfigError(f"{source}: YAML nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def _bad_scalar(loader, root):
    """The first scalar node (in document order) that the safe constructor cannot build."""
    stack, seen = [root], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            constructor = loader.yaml_constructors.get(node.tag)
            try:
                if constructor is not None:
                    constructor(loader, node)
            except Exception:  # noqa: BLE001 - looking for the node that fails
                return node
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(reversed(node.value))
        elif isinstance(node, yaml.MappingNode):
            stack.extend(x for pair in reversed(node.value) for x in reversed(pair))
    return None


def yaml_location(node, key: str) -> tuple[int, int] | None:
    """1-based ``(line, column)`` of dotted ``key`` (``a.b[0].c``) in a composed YAML node:
    of the key itself in a mapping, of the item in a sequence; the deepest part of ``key``
    that the file holds when it does not hold all of it; None when it holds none."""
    import re

    found = None
    for part, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", key):
        if isinstance(node, yaml.MappingNode) and part:
            hit = next(((k, v) for k, v in node.value
                        if isinstance(k, yaml.ScalarNode) and k.value == part), None)
            if hit is None:
                break
            found, node = hit[0].start_mark, hit[1]
        elif isinstance(node, yaml.SequenceNode) and index and int(index) < len(node.value):
            node = node.value[int(index)]
            found = node.start_mark
        else:
            break
    return (found.line + 1, found.column + 1) if found is not None else None
