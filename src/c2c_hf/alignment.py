"""Token alignment between a receiver and a sharer with different tokenizers.

The receiver tokenization is the base: every receiver token id maps to exactly one sharer token id, so the two
sequences share length and positions. A receiver token is decoded to its string and re-encoded with the sharer
tokenizer; when that gives several sharer tokens, one is kept ("longest" decoded string, or "first"). Special/added
tokens map by exact string when the sharer has the same token (chat markers such as ``<|im_start|>``), the others by
role (bos/eos/pad/unk): SmolLM2's bos is ``<|im_start|>``, which must stay Qwen's ``<|im_start|>``, not its bos.

Byte pieces: a lone byte-fallback piece (``<0xE2>``) or a partial UTF-8 byte of a byte-level vocabulary decodes to
U+FFFD. Such a piece maps to the sharer token of the same string when that decodes identically (same byte scheme),
else the U+FFFD characters are dropped before re-encoding ("lossy"), and an empty rest falls back to unk/eos/pad.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

STRATEGIES = ("longest", "first")
# How each receiver token was mapped; the first three count towards `coverage` (one-to-one).
CATEGORIES = ("role", "string", "single", "multi", "lossy", "fallback")
_COVERED = ("role", "string", "single")
_ROLES = ("bos", "eos", "pad", "unk")
_REPLACEMENT = "\ufffd"


@dataclass
class TokenMap:
    """Receiver-token-id -> sharer-token-id map; `apply` turns receiver input ids into same-shape sharer ids."""

    receiver_to_sharer: list[int]  # [receiver vocab incl. added tokens]
    strategy: str = "longest"
    is_identity: bool = False
    coverage: float = 1.0  # share of receiver tokens mapped one-to-one (categories in _COVERED)
    counts: dict[str, int] = field(default_factory=dict)  # category -> number of receiver tokens
    fallback_ids: list[int] = field(default_factory=list)  # receiver ids that fell back to unk/eos/pad
    _tensors: dict[torch.device, torch.Tensor] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.receiver_to_sharer)

    def to_tensor(self) -> torch.Tensor:
        """The map as a LongTensor [receiver vocab]."""
        return torch.tensor(self.receiver_to_sharer, dtype=torch.long)

    def apply(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Map receiver ids (any shape) to sharer ids of the same shape, on the input's device."""
        if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
            raise TypeError(f"input_ids must be an integer tensor, got {input_ids.dtype}")
        bad = input_ids[(input_ids < 0) | (input_ids >= len(self))]
        if bad.numel():
            raise ValueError(f"token id {int(bad[0])} is outside the receiver vocabulary [0, {len(self)})")
        table = self._tensors.get(input_ids.device)
        if table is None:
            table = self._tensors[input_ids.device] = self.to_tensor().to(input_ids.device)
        return table[input_ids.long()]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (e.g. to store inside a model config)."""
        return {
            "receiver_to_sharer": list(self.receiver_to_sharer),
            "strategy": self.strategy,
            "is_identity": self.is_identity,
            "coverage": self.coverage,
            "counts": dict(self.counts),
            "fallback_ids": list(self.fallback_ids),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenMap:
        """Inverse of `to_dict`."""
        return cls(
            receiver_to_sharer=[int(i) for i in data["receiver_to_sharer"]],
            strategy=str(data.get("strategy", "longest")),
            is_identity=bool(data.get("is_identity", False)),
            coverage=float(data.get("coverage", 1.0)),
            counts={str(k): int(v) for k, v in data.get("counts", {}).items()},
            fallback_ids=[int(i) for i in data.get("fallback_ids", [])],
        )

    def summary(self) -> str:
        """One line: size, strategy, coverage and per-category counts."""
        kind = "identity" if self.is_identity else self.strategy
        counts = ", ".join(f"{c} {self.counts.get(c, 0)}" for c in CATEGORIES)
        return f"TokenMap[{kind}]: {len(self)} receiver tokens, coverage {self.coverage:.2%} ({counts})"


def build_token_map(
    receiver_tokenizer: PreTrainedTokenizerBase,
    sharer_tokenizer: PreTrainedTokenizerBase,
    strategy: str = "longest",
) -> TokenMap:
    """Map every receiver token id (incl. added tokens) to one sharer token id."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    n = len(receiver_tokenizer)
    if receiver_tokenizer.get_vocab() == sharer_tokenizer.get_vocab():
        return TokenMap(list(range(n)), strategy, is_identity=True, coverage=1.0, counts={"single": n})

    sharer_vocab = sharer_tokenizer.get_vocab()
    mapping: dict[int, tuple[int, str]] = _special_matches(receiver_tokenizer, sharer_tokenizer, sharer_vocab)
    pieces = [piece or "" for piece in receiver_tokenizer.convert_ids_to_tokens(list(range(n)))]
    texts = list(map(_PieceDecoder(receiver_tokenizer), pieces))
    decode_sharer = _PieceDecoder(sharer_tokenizer)
    sharer_texts: dict[int, str] = {}  # sharer id -> decoded string, filled lazily

    def sharer_text(sharer_id: int) -> str:
        if sharer_id not in sharer_texts:
            sharer_texts[sharer_id] = decode_sharer(sharer_tokenizer.convert_ids_to_tokens(sharer_id) or "")
        return sharer_texts[sharer_id]

    to_encode: dict[int, str] = {}  # receiver id -> text to re-encode
    lossy: set[int] = set()
    for rid in range(n):
        if rid in mapping:
            continue
        text = texts[rid]
        if _REPLACEMENT in text:  # byte piece: same-scheme exact match, else drop the undecodable bytes
            sid = sharer_vocab.get(pieces[rid])
            if sid is not None and sharer_text(sid) == text:
                mapping[rid] = (sid, "string")
                continue
            text = text.replace(_REPLACEMENT, "")
            lossy.add(rid)
        to_encode[rid] = text

    rids = list(to_encode)
    encoded = sharer_tokenizer([to_encode[r] for r in rids], add_special_tokens=False)["input_ids"]
    fallback_id: int | None = None
    fallback_ids: list[int] = []
    for rid, ids in zip(rids, encoded):
        if not ids:
            if fallback_id is None:
                fallback_id = _fallback_id(sharer_tokenizer)
            mapping[rid] = (fallback_id, "fallback")
            fallback_ids.append(rid)
        elif strategy == "first" or len(ids) == 1:
            mapping[rid] = (ids[0], "lossy" if rid in lossy else "single" if len(ids) == 1 else "multi")
        else:  # longest decoded string; max() keeps the first on ties
            mapping[rid] = (max(ids, key=lambda i: len(sharer_text(i))), "lossy" if rid in lossy else "multi")

    counts = {c: 0 for c in CATEGORIES}
    for _, category in mapping.values():
        counts[category] += 1
    coverage = sum(counts[c] for c in _COVERED) / n if n else 1.0
    return TokenMap(
        receiver_to_sharer=[mapping[rid][0] for rid in range(n)],
        strategy=strategy,
        is_identity=False,
        coverage=coverage,
        counts=counts,
        fallback_ids=fallback_ids,
    )


def _special_matches(
    receiver: PreTrainedTokenizerBase, sharer: PreTrainedTokenizerBase, sharer_vocab: dict[str, int]
) -> dict[int, tuple[int, str]]:
    """Receiver special/added token ids mapped by exact string in the sharer vocab, then by role (bos/eos/pad/unk)."""
    matches: dict[int, tuple[int, str]] = {}
    for rid in sorted(set(receiver.all_special_ids) | set(receiver.added_tokens_decoder)):
        sid = sharer_vocab.get(receiver.convert_ids_to_tokens(rid) or "")
        if sid is not None:
            matches[rid] = (sid, "string")
    for role in _ROLES:
        rid, sid = getattr(receiver, f"{role}_token_id"), getattr(sharer, f"{role}_token_id")
        if rid is not None and sid is not None and rid not in matches:
            matches[rid] = (sid, "role")
    return matches


class _PieceDecoder:
    """Decodes single vocabulary pieces to text, keeping a leading space that decoders drop at sequence start.

    Metaspace ("first") and SentencePiece-style Strip decoders remove the space of the first token, so a piece is
    decoded after a plain ASCII anchor token and the anchor's text is cut off; any other difference keeps the plain
    decode. A lone byte piece decodes to U+FFFD.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.anchor = next(
            (t for t in map(tokenizer.convert_ids_to_tokens, range(len(tokenizer)))
             if t and t.isascii() and t.isalnum() and tokenizer.convert_tokens_to_string([t]) == t),
            None,
        )

    def __call__(self, piece: str) -> str:
        plain = self.tokenizer.convert_tokens_to_string([piece])
        if self.anchor is None:
            return plain
        anchored = self.tokenizer.convert_tokens_to_string([self.anchor, piece])
        rest = anchored[len(self.anchor):]
        lead = rest[: len(rest) - len(plain)]
        return rest if anchored.startswith(self.anchor) and rest.endswith(plain) and not lead.strip() else plain


def _fallback_id(sharer: PreTrainedTokenizerBase) -> int:
    """The sharer's unk token id, else eos, else pad."""
    for role in ("unk", "eos", "pad"):
        token_id = getattr(sharer, f"{role}_token_id")
        if token_id is not None:
            return token_id
    raise ValueError("the sharer tokenizer has no unk, eos or pad token to map untranslatable receiver tokens to")
