"""Frozen text encoder: RoBERTa (transformers), one vector per token."""
from __future__ import annotations

import torch
from torch import Tensor

from maven_fast.encoders.base import FrozenEncoder, chunks, seeded, tiny_name
from maven_fast.encoders.hub import hub_offline, is_local, unavailable

DEFAULT_TEXT_ENCODER = "roberta-base"
_SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")


def byte_level_tokenizer(max_length: int = 128):
    """A RoBERTa-compatible byte-level BPE tokenizer built offline: the 256 byte
    symbols plus RoBERTa's special tokens (``<s>``=0, ``<pad>``=1, ``</s>``=2,
    ``<unk>``=3, ``<mask>`` last) and no merges, so every UTF-8 byte is a token."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import RobertaTokenizer

    vocab = {token: i for i, token in enumerate(_SPECIAL_TOKENS)}
    for symbol in sorted(ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    vocab["<mask>"] = len(vocab)
    return RobertaTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def roberta_base_config(tokenizer):
    """RoBERTa-base (``roberta-base``'s architecture), written out: 12 layers of 768 wide,
    12 heads, 3072 FFN, 50265-token vocabulary, 514 positions (512 tokens), layer norm eps 1e-5;
    the special token ids are ``tokenizer``'s (RoBERTa's: <s>=0, <pad>=1, </s>=2)."""
    from transformers import RobertaConfig

    return RobertaConfig(
        vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, hidden_act="gelu", max_position_embeddings=514, type_vocab_size=1,
        layer_norm_eps=1e-5, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


class TextEncoder(FrozenEncoder):
    """RoBERTa: ``forward(texts: list[str]) -> (tokens [B, Tt, dim], lengths [B])``.

    All texts of one call are tokenized together (padding to the longest,
    truncation to the model's maximum, ``<s>``/``</s>`` included in the length)
    and run in chunks of ``batch_size`` with the attention mask. Positions past
    an item's length hold RoBERTa's outputs at ``<pad>`` tokens, which
    :meth:`pool` ignores unless ``masked=False``.
    """

    modality = "text"

    def __init__(self, model, tokenizer, name: str, batch_size: int = 32) -> None:
        super().__init__(name, int(model.config.hidden_size))
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = min(int(tokenizer.model_max_length), int(model.config.max_position_embeddings) - 2)
        self.freeze()

    @classmethod
    def from_pretrained(cls, name_or_path: str = DEFAULT_TEXT_ENCODER, batch_size: int = 32) -> "TextEncoder":
        """Hub name or local directory holding the model and its tokenizer (``save_pretrained`` layout)."""
        from transformers import AutoTokenizer, RobertaModel

        local_only = hub_offline() or is_local(name_or_path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(name_or_path, local_files_only=local_only)
            model = RobertaModel.from_pretrained(name_or_path, add_pooling_layer=False, local_files_only=local_only)
        except Exception as exc:  # noqa: BLE001 - transformers/hub raise many types; re-raised with advice
            raise unavailable("text", "TextEncoder", name_or_path, exc) from exc
        return cls(model, tokenizer, name_or_path, batch_size)

    @classmethod
    def tiny(cls, seed: int = 0, batch_size: int = 32) -> "TextEncoder":
        """RobertaModel with tiny widths (dim 32) and the offline :func:`byte_level_tokenizer`."""
        from transformers import RobertaConfig, RobertaModel

        tokenizer = byte_level_tokenizer(max_length=128)
        config = RobertaConfig(
            vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=130, pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        )
        with seeded(seed):
            model = RobertaModel(config, add_pooling_layer=False)
        return cls(model, tokenizer, tiny_name("tiny-roberta", seed), batch_size)

    @classmethod
    def base_random(cls, seed: int = 0, device: str | torch.device | None = None,
                    batch_size: int = 32) -> "TextEncoder":
        """RoBERTa-base at full size (``roberta-base``'s architecture, written out in
        :func:`roberta_base_config`; 768-d, ~124 M parameters with its 50265-token embedding)
        with random weights from ``seed`` and the offline :func:`byte_level_tokenizer` (the
        real BPE vocabulary needs the hub): for benchmarks. Its features mean nothing.
        ``device="meta"`` builds the architecture without weights (to inspect it)."""
        from transformers import RobertaModel

        tokenizer = byte_level_tokenizer(max_length=512)
        with seeded(seed), torch.device(device or "cpu"):
            model = RobertaModel(roberta_base_config(tokenizer), add_pooling_layer=False)
        return cls(model, tokenizer, tiny_name("base-random-roberta", seed), batch_size)

    _compile_dynamic = True  # token counts vary

    def _use_sdpa(self) -> None:
        from maven_fast.encoders.audio import _set_transformers_sdpa

        _set_transformers_sdpa(self.model)

    def sdpa_enabled(self) -> bool:
        return getattr(self.model.config, "_attn_implementation", None) == "sdpa"

    def save_pretrained(self, directory: str) -> None:
        """Write the model and its tokenizer (``save_pretrained`` layout)."""
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValueError("texts: expected a list of strings (one transcript segment per item)")
        return self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )

    @torch.no_grad()
    def forward(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        encoded = self.tokenize(texts)
        ids, mask = encoded["input_ids"].to(self.device), encoded["attention_mask"].to(self.device)
        outputs = [
            self.run_model(input_ids=ids[part], attention_mask=mask[part]).last_hidden_state.float()
            for part in chunks(ids.shape[0], self.batch_size)
        ]
        tokens = torch.cat(outputs) if outputs else torch.zeros(0, ids.shape[1], self.dim, device=self.device)
        return tokens, mask.sum(1)

    @staticmethod
    def pool(tokens: Tensor, lengths: Tensor, masked: bool = True) -> Tensor:
        """``[B, Tt, dim] -> [B, dim]``: mean over each item's tokens.

        ``masked=False`` averages over ALL positions, pad tokens included, as the
        original's ``last_hidden_state.mean(dim=1)`` did (a parity option: it
        depends on the longest text in the batch).
        """
        if not masked:
            return tokens.mean(dim=1)
        valid = torch.arange(tokens.shape[1], device=tokens.device) < lengths.to(tokens.device).unsqueeze(1)
        total = (tokens * valid.unsqueeze(-1)).sum(1)
        return total / lengths.to(tokens.device).clamp_min(1).unsqueeze(1).to(tokens.dtype)
