"""Token alignment between a receiver and a sharer with different tokenizers.

The receiver tokenization is the base: every receiver token id maps to exactly one sharer token id, so the two
sequences share length and positions. A receiver token is decoded to its string and re-encoded with the sharer
tokenizer; when that gives several sharer tokens, one is kept ("longest" decoded string, or "first"). Special/added
tokens map by exact string when the sharer has the same token (chat markers such as ``<|im_start|>``), the others by
role (bos/eos/pad/unk): SmolLM2's bos is ``<|im_start|>``, which must stay Qwen's ``<|im_start|>``, not its bos.

Byte pieces: a lone byte-fallback piece (``<0xE2>``) or a partial UTF-8 byte of a byte-level vocabulary decodes to
U+FFFD. Such a piece maps to the sharer token of the same string when that decodes identically (same byte scheme),
else the U+FFFD characters are dropped before re-encoding ("lossy"), and an empty rest falls back to unk/eos/pad.

Span alignment (`SpanAligner`, `token_alignment="span"`) instead lets the sharer read the prompt in its own
tokenization: the receiver's ids are decoded to text, the sharer tokenizes that text, and each receiver position
takes the KV of the last sharer token that ends where the receiver token ends or before (never a later character).
A name the two tokenizers split differently ("ĠK ron vo" / "ĠKron vo") then reaches the sharer as the sharer would
read it, instead of as one sharer token per receiver token.
"""

from __future__ import annotations

import codecs
import re
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache, PreTrainedTokenizerBase

STRATEGIES = ("longest", "first")  # per-token maps (`build_token_map`)
ALIGNMENTS = (*STRATEGIES, "span")  # every `token_alignment` a C2C model accepts
# How each receiver token was mapped; the first three count towards `coverage` (one-to-one).
CATEGORIES = ("role", "string", "single", "multi", "lossy", "fallback")
_COVERED = ("role", "string", "single")
_ROLES = ("bos", "eos", "pad", "unk")
_REPLACEMENT = "\ufffd"
_DECODE_AS_IS = {"skip_special_tokens": False, "clean_up_tokenization_spaces": False}
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # a byte-fallback piece, as decoders read it
# Tokens of context before each token whose decoded length span alignment measures: the start of a UTF-8 character
# still open before the token lies at most 3 single-byte tokens back; other decoders look one token back at most.
_CONTEXT_TOKENS = 4
_WINDOW_TOKENS = 24  # a window serves the tokens after it until it holds this many (fewer, longer decode calls)


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


@dataclass
class SpanAlignment:
    """The sharer's own tokenization of a left-padded receiver batch, and where each receiver position reads it."""

    sharer_input_ids: torch.LongTensor  # (B, S) left-padded sharer ids
    sharer_attention_mask: torch.LongTensor  # (B, S)
    positions: torch.LongTensor  # (B, L) per receiver position, the sharer position whose KV it takes


class SpanAligner:
    """Receiver ids -> the sharer's own tokenization of the same text, plus one sharer position per receiver token.

    Receiver token n (text ending at character e_n) takes the last sharer token ending at or before e_n; a receiver
    token ending before the first sharer token does takes that first one. Padding positions (mask 0) take their
    row's first real sharer position (their KV is masked out anyway). Both tokenizers must be fast (offsets).
    Receiver token ends are the offsets of the text's own tokenization, or for other ids (a token split in two, bytes
    spelled one by one) the lengths of the decoded prefixes, found in time linear in the row.
    """

    def __init__(self, receiver_tokenizer: PreTrainedTokenizerBase, sharer_tokenizer: PreTrainedTokenizerBase):
        for role, tokenizer in (("receiver", receiver_tokenizer), ("sharer", sharer_tokenizer)):
            if not tokenizer.is_fast:
                raise ValueError(
                    f"Span alignment needs character offsets, which the {role} tokenizer "
                    f"({type(tokenizer).__name__}) does not give: load its fast version (use_fast=True)."
                )
        self.receiver_tokenizer = receiver_tokenizer
        self.sharer_tokenizer = sharer_tokenizer
        pad_id = sharer_tokenizer.pad_token_id
        self.sharer_pad_id = pad_id if pad_id is not None else _fallback_id(sharer_tokenizer)
        self._receiver_bytes = _byte_fallback_pieces(receiver_tokenizer)  # id -> byte; empty without byte fallback

    def __call__(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None) -> SpanAlignment:
        """Align a `(B, L)` batch (left or no padding); the result is on the input's device."""
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        rows = [self.align_row(row[row_mask.bool()].tolist()) for row, row_mask in zip(input_ids, mask)]
        width = max(len(sharer_ids) for sharer_ids, _ in rows)  # S
        sharer_ids = torch.full((len(rows), width), self.sharer_pad_id, dtype=torch.long)  # (B, S)
        sharer_mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, S)
        positions = torch.zeros(input_ids.shape, dtype=torch.long)  # (B, L)
        for i, (row_ids, row_positions) in enumerate(rows):
            offset = width - len(row_ids)  # the row's left padding
            sharer_ids[i, offset:] = torch.tensor(row_ids, dtype=torch.long)
            sharer_mask[i, offset:] = 1
            positions[i] = offset
            positions[i, mask[i].bool().cpu()] = torch.tensor(row_positions, dtype=torch.long) + offset
        device = input_ids.device
        return SpanAlignment(sharer_ids.to(device), sharer_mask.to(device), positions.to(device))

    def align_row(self, receiver_ids: list[int]) -> tuple[list[int], list[int]]:
        """`(sharer_ids, positions)` for one unpadded row: positions index `sharer_ids`, one per receiver token."""
        if not receiver_ids:
            raise ValueError("Span alignment got a row without tokens: every prompt needs at least one fused token.")
        text = self.receiver_tokenizer.decode(receiver_ids, **_DECODE_AS_IS)
        encoded = self.receiver_tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if encoded["input_ids"] == receiver_ids:
            receiver_ends = [end for _, end in encoded["offset_mapping"]]
        else:  # not the text's own tokenization: a token ends where the decoded prefix up to it ends
            receiver_ends = self._decoded_prefix_lengths(receiver_ids)
        sharer = self.sharer_tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if not sharer["input_ids"]:
            raise ValueError(f"The sharer tokenizer gives no tokens for the prompt text {text!r}.")
        sharer_ends = [end for _, end in sharer["offset_mapping"]]
        positions = [max(bisect_right(sharer_ends, end) - 1, 0) for end in receiver_ends]
        return list(sharer["input_ids"]), positions

    def _decoded_prefix_lengths(self, ids: list[int]) -> list[int]:
        """`len(decode(ids[: n + 1]))` for every n, in time linear in `len(ids)` (decoding every prefix is quadratic).

        A token adds to the length before it what it adds to a window of (at least `_CONTEXT_TOKENS`) tokens before it:
        the decoders of the `tokenizers` library act on neighbouring tokens only (the first token's space dropped or
        stripped, a UTF-8 character split over byte-level tokens, WordPiece joins, a suffix on every token but the
        last, CTC's merged repeats), so the window decodes as the whole prefix does. Byte-fallback pieces are the
        exception: a run of them decodes to its UTF-8 text when the whole run is valid UTF-8, else to one U+FFFD per
        piece, so one piece can change the length of the whole run before it. Inside a run, a prefix's length is the
        run's own (characters or pieces) plus an offset that stays the same while the run stays valid (or invalid):
        measured once each, on a window from before the run. Tests hold this to decoding every prefix.
        """
        lengths: list[int] = []
        run: _ByteRun | None = None
        window: tuple[int, int] | None = None  # (start, decoded length of ids[start:n]), reused by the next token
        for n, token in enumerate(ids):
            byte = self._receiver_bytes.get(token)
            if byte is None:  # what the token adds to a window of the tokens before it
                if window is None or n - window[0] >= _WINDOW_TOKENS:
                    start = max(n - _CONTEXT_TOKENS, 0)
                    window = start, self._decoded_length(ids[start:n])
                start, before = window
                window = start, self._decoded_length(ids[start : n + 1])
                lengths.append((lengths[-1] if lengths else 0) + window[1] - before)
                run = None
                continue
            window = None
            run = run or _ByteRun(n)
            run.add(byte)
            if run.valid not in run.offsets:
                start = max(run.start - _CONTEXT_TOKENS, 0)
                before = lengths[run.start - 1] if run.start else 0
                added = self._decoded_length(ids[start : n + 1]) - self._decoded_length(ids[start : run.start])
                run.offsets[run.valid] = before + added - run.length
            lengths.append(run.offsets[run.valid] + run.length)
        return lengths

    def _decoded_length(self, ids: list[int]) -> int:
        return len(self.receiver_tokenizer.decode(ids, **_DECODE_AS_IS)) if ids else 0


def pair_alignment(
    receiver_tokenizer: PreTrainedTokenizerBase,
    sharer_tokenizer: PreTrainedTokenizerBase,
    strategy: str | None,
    receiver_vocab_size: int,
) -> TokenMap | SpanAligner | None:
    """How a receiver/sharer pair's tokens line up: `None` when the tokenizers share a vocabulary (the sharer reads
    the receiver's ids), else a `TokenMap` (`strategy` "longest" / "first") or a `SpanAligner` ("span").

    `receiver_vocab_size` (the receiver's embedding rows) guards against a tokenizer of another model; `strategy=None`
    refuses a pair whose vocabularies differ.
    """
    if receiver_tokenizer.get_vocab() == sharer_tokenizer.get_vocab():
        return None
    if len(receiver_tokenizer) > receiver_vocab_size:
        raise ValueError(
            f"The receiver tokenizer has {len(receiver_tokenizer)} tokens but the receiver's embedding only "
            f"{receiver_vocab_size}: this tokenizer does not belong to it."
        )
    if strategy == "span":
        return SpanAligner(receiver_tokenizer, sharer_tokenizer)
    if strategy is None:
        raise ValueError(
            "The receiver and sharer tokenizers differ but token alignment is off (token_alignment=None): "
            "use token_alignment='longest' or 'first' (one sharer token per receiver token) or 'span' (the "
            "sharer reads the prompt in its own tokenization)."
        )
    return build_token_map(receiver_tokenizer, sharer_tokenizer, strategy=strategy)


def check_sharer_input_ids(input_ids: torch.Tensor, sharer_input_ids: torch.Tensor | None) -> None:
    """Explicit sharer ids must give one sharer token per receiver position."""
    if sharer_input_ids is not None and sharer_input_ids.shape != input_ids.shape:
        raise ValueError(
            f"sharer_input_ids has shape {tuple(sharer_input_ids.shape)} but input_ids has "
            f"{tuple(input_ids.shape)}: the sharer needs one token per receiver position."
        )


def position_aligned_sharer_ids(
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None,
    sharer_input_ids: torch.LongTensor | None,
    sharer_attention_mask: torch.Tensor | None,
    token_map: torch.Tensor | None,
    config: Any,
) -> tuple[torch.LongTensor, torch.Tensor | None]:
    """The sharer's `(ids, mask)`, one token per receiver position: the explicit `sharer_input_ids`, else the
    receiver ids through the pair's `token_map` (a `(receiver vocab,)` table), else the receiver's own ids for a
    pair that shares a tokenizer (`config`: the `C2CConfig`). A span-aligned pair has no such ids."""
    if sharer_input_ids is not None:
        check_sharer_input_ids(input_ids, sharer_input_ids)
        return sharer_input_ids, attention_mask if sharer_attention_mask is None else sharer_attention_mask
    if token_map is not None:
        return token_map[input_ids], attention_mask  # (B, L) sharer ids, one per receiver token
    if config.token_alignment == "span":
        raise ValueError(
            "This C2C model aligns tokens by span: its sharer reads the prompt in its own tokenization, which has "
            "no one-to-one sharer token per receiver position. Use `sharer_cache_for` for the sharer's KV, or pass "
            "`sharer_input_ids`."
        )
    receiver_vocab, sharer_vocab = config.text_config.vocab_size, config.sharer_config.vocab_size
    if receiver_vocab != sharer_vocab:
        raise ValueError(
            f"The receiver (vocab {receiver_vocab}) and sharer (vocab {sharer_vocab}) do not share a "
            "tokenizer, so the sharer cannot read the receiver's input_ids: pass `sharer_input_ids` "
            "(one sharer token per receiver token) or use a token-aligned C2C model."
        )
    return input_ids, attention_mask


def position_ids_from_mask(attention_mask: torch.Tensor, length: int) -> torch.Tensor:
    """Positions of the last `length` tokens counted over real (unmasked) tokens only, as `generate` counts them."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 0)[:, -length:]


def gather_positions(cache: DynamicCache, positions: torch.LongTensor) -> DynamicCache:
    """A cache whose position n of row b holds `cache`'s KV at `positions[b, n]` (every layer, keys and values):
    a span-aligned sharer's cache, laid out on the receiver's positions."""

    def gather(states: torch.Tensor) -> torch.Tensor:  # (B, H_s, S, D_s) -> (B, H_s, L, D_s)
        batch, heads, _, dim = states.shape
        return states.gather(2, positions[:, None, :, None].expand(batch, heads, positions.shape[1], dim))

    return DynamicCache(ddp_cache_data=[(gather(layer.keys), gather(layer.values)) for layer in cache.layers])


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


def _byte_fallback_pieces(tokenizer: PreTrainedTokenizerBase) -> dict[int, int]:
    """Token id -> byte of the `<0xNN>` pieces that the tokenizer's decoder turns into bytes (byte fallback); empty
    when it has none, or decodes them as plain text."""
    pieces = {
        token_id: int(match.group(1), 16)
        for piece, token_id in tokenizer.get_vocab().items()
        if piece.startswith("<0x") and (match := _BYTE_PIECE.fullmatch(piece))
    }
    probe = next(iter(pieces), None)
    if probe is None or tokenizer.decode([probe], **_DECODE_AS_IS) == tokenizer.convert_ids_to_tokens(probe):
        return {}
    return pieces


class _ByteRun:
    """A run of byte-fallback pieces in a receiver row: where it starts, whether its bytes so far are valid UTF-8
    (a byte-fallback decoder then gives their characters, else one U+FFFD per piece), and that decoded length."""

    def __init__(self, start: int) -> None:
        self.start = start
        self.pieces = 0
        self.characters = 0  # of the bytes so far, while they hold no invalid sequence
        self.broken = False  # an invalid sequence: no later byte makes the run valid again
        self.offsets: dict[bool, int] = {}  # valid -> decoded prefix length minus `length`, measured once
        self._utf8 = codecs.getincrementaldecoder("utf-8")()

    def add(self, byte: int) -> None:
        self.pieces += 1
        if not self.broken:
            try:
                self.characters += len(self._utf8.decode(bytes((byte,))))
            except UnicodeDecodeError:
                self.broken = True

    @property
    def valid(self) -> bool:
        """The bytes so far are whole UTF-8 (no invalid sequence, no character cut off at the end)."""
        return not self.broken and not self._utf8.getstate()[0]

    @property
    def length(self) -> int:
        return self.characters if self.valid else self.pieces
