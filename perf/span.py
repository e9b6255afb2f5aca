"""The runner's span section: `SpanAligner.align_row` on rows of several lengths, each as the text's own tokenization
(canonical ids) and as ids that are not (non-canonical: every other word spelled one character at a time, so the
aligner measures each token's end by decoding), in both directions of a tokenizer pair.

The pair is the shape set's receiver and sharer tokenizers when they differ (`real`: SmolLM2's byte-level BPE and
Qwen2.5's), else two stand-ins trained here on the same words: a byte-level BPE (GPT-2 / SmolLM2 style) and a
SentencePiece-style BPE with '▁' spaces and byte fallback (Llama / Gemma style), whose non-canonical rows hold runs of
`<0xNN>` pieces (the non-ASCII words).
"""

from __future__ import annotations

import random
from functools import partial
from typing import Any

from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from c2c_hf import SpanAligner
from c2c_hf.alignment import pair_alignment

from .bench import Bench

SPAN_LENGTHS = (1000, 2000, 4000, 8000)  # receiver tokens per row
TRAINING_WORDS = (
    "a quick brown fox jumps over the lazy dog while seven old sailors sing songs of the sea the wind and the long "
    "road home"
).split()
WORDS = (*TRAINING_WORDS, *"naïve café déjà 12 € 東京 😀".split())  # the stand-ins spell non-ASCII ones as bytes


def stand_in_tokenizers() -> tuple[PreTrainedTokenizerFast, PreTrainedTokenizerFast]:
    """A byte-level BPE and a SentencePiece-style BPE with byte fallback, each of 600 tokens, trained on
    `TRAINING_WORDS`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    rng = random.Random(0)
    lines = [" ".join(rng.choice(TRAINING_WORDS) for _ in range(12)) for _ in range(400)]
    byte_level = Tokenizer(models.BPE(unk_token="<unk>"))
    byte_level.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    byte_level.decoder = decoders.ByteLevel()
    byte_level.train_from_iterator(
        lines,
        trainers.BpeTrainer(
            vocab_size=600, special_tokens=["<unk>", "<pad>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )  # fmt: skip
    fallback = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    fallback.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")
    fallback.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    byte_pieces = [f"<0x{b:02X}>" for b in range(256)]
    fallback.train_from_iterator(
        lines, trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<pad>", *byte_pieces], show_progress=False)
    )
    return tuple(
        PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>")
        for backend in (byte_level, fallback)
    )


def span_rows(tokenizer: PreTrainedTokenizerBase, length: int, seed: int = 0) -> dict[str, list[int]]:
    """`{"canonical": ids, "noncanonical": ids}`, `length` tokens each, of one random text of `WORDS`: the text's own
    tokenization, and every other word spelled one character at a time (a character the vocabulary lacks as a
    token is spelled as its bytes)."""
    rng = random.Random(seed)
    words: list[str] = []
    canonical: list[int] = []
    noncanonical: list[int] = []
    while min(len(canonical), len(noncanonical)) < length:
        for word in (rng.choice(WORDS) for _ in range(200)):
            piece = f" {word}" if words else word
            parts = list(piece) if len(words) % 2 else [piece]
            noncanonical += [i for part in parts for i in tokenizer.encode(part, add_special_tokens=False)]
            words.append(word)
        canonical = tokenizer.encode(" ".join(words), add_special_tokens=False)
    return {"canonical": canonical[:length], "noncanonical": noncanonical[:length]}


def span(bench: Bench) -> dict[str, dict[str, Any]]:
    """Seconds of `align_row` per row length, canonical and non-canonical ids side by side, in both directions of
    the pair (`reverse_*`: the sharer's tokenizer as the receiver's); `noncanonical_<longest>_over_<shortest>`: 8
    where the time grows linearly with the row (64 where quadratically). The same for every fuser: no model runs."""
    receiver, sharer = bench.pair.receiver_tokenizer, bench.pair.sharer_tokenizer
    forward = pair_alignment(receiver, sharer, "span", len(receiver))
    tokenizers = "the shape set's"
    if forward is None:  # one tokenizer for both: nothing to align
        receiver, sharer = stand_in_tokenizers()
        forward, tokenizers = SpanAligner(receiver, sharer), "stand-ins: byte-level BPE, BPE with byte fallback"
    aligners = {"": forward, "reverse_": SpanAligner(sharer, receiver)}
    fns = {
        f"{direction}{kind}_{length}_s": partial(aligner.align_row, ids)
        for direction, aligner in aligners.items()
        for length in SPAN_LENGTHS
        for kind, ids in span_rows(aligner.receiver_tokenizer, length).items()
    }
    seconds = {name: runs.median for name, runs in bench.time(fns).items()}
    shortest, longest = SPAN_LENGTHS[0], SPAN_LENGTHS[-1]
    ratios = {
        f"{direction}noncanonical_{longest}_over_{shortest}": seconds[f"{direction}noncanonical_{longest}_s"]
        / seconds[f"{direction}noncanonical_{shortest}_s"]
        for direction in aligners
    }
    return {name: {"tokenizers": tokenizers, **seconds, **ratios} for name in bench.models}
