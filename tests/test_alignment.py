"""Token alignment between tokenizers trained here: byte-level BPE vs SentencePiece-style BPE with byte fallback."""

from __future__ import annotations

import json
import math
import random
import time
from bisect import bisect_right
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import bytes_to_unicode

from c2c_hf.alignment import SpanAligner, TokenMap, build_token_map
from c2c_hf.data import left_pad

REAL_MODELS = Path.home() / ".cache" / "c2c-real-models"
CHAT_MARKERS = ["<|im_start|>", "<|im_end|>"]


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    """English-like sentences with a few non-ASCII words, so byte-level vocabularies hold partial UTF-8 bytes."""
    rng = random.Random(seed)
    adj = "quick lazy bright dark naïve old young happy quiet busy".split()
    noun = "cat dog house garden river mountain café teacher student price morning evening city".split()
    verb = "runs jumps sleeps walks reads sings looks waits costs".split()
    prep = "over under near behind into through".split()
    lines = []
    for _ in range(n):
        line = f"The {rng.choice(adj)} {rng.choice(noun)} {rng.choice(verb)} {rng.choice(prep)} the {rng.choice(noun)}"
        if rng.random() < 0.3:
            line += f" and {rng.choice(['it', 'she', 'he'])} {rng.choice(verb)} for {rng.randint(1, 99)} €"
        lines.append(line + rng.choice(".!?"))
    return lines


def wrap(tokenizer: Tokenizer, bos: str, eos: str) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=bos, eos_token=eos, pad_token="<pad>", unk_token="<unk>",
        extra_special_tokens=CHAT_MARKERS,
    )


def byte_level(vocab_size: int) -> PreTrainedTokenizerFast:
    """GPT-2/SmolLM2-style byte-level BPE (all 256 bytes in the alphabet, 'Ġ' marks a space)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<unk>", "<s>", "</s>", "<pad>", *CHAT_MARKERS]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer)
    return wrap(tok, "<s>", "</s>")


def sentencepiece_style(vocab_size: int, llama_decoder: bool = False) -> PreTrainedTokenizerFast:
    """Gemma-style BPE with '▁' spaces and <0xNN> byte fallback; `llama_decoder` drops the first token's space."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first" if llama_decoder else "never")
    space = decoders.Metaspace(prepend_scheme="first") if llama_decoder else decoders.Replace("▁", " ")
    tok.decoder = decoders.Sequence([space, decoders.ByteFallback(), decoders.Fuse()])
    # Other special-token order and bos/eos strings than the byte-level one, so role mapping is not string mapping.
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<|im_end|>", *(f"<0x{b:02X}>" for b in range(256)), "<|im_start|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    return wrap(tok, "<bos>", "<eos>")


@pytest.fixture(scope="module")
def toks() -> SimpleNamespace:
    return SimpleNamespace(
        bl=byte_level(300),  # receiver in most tests
        sp=sentencepiece_style(500),  # sharer in most tests
        bl2=byte_level(340),  # same byte scheme as `bl`, other vocabulary
        llama=sentencepiece_style(500, llama_decoder=True),
    )


@pytest.fixture(scope="module")
def maps(toks) -> dict[str, TokenMap]:
    return {
        "bl->sp": build_token_map(toks.bl, toks.sp),
        "sp->bl": build_token_map(toks.sp, toks.bl),
        "sp->bl first": build_token_map(toks.sp, toks.bl, strategy="first"),
    }


def encode(tokenizer: PreTrainedTokenizerFast, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def test_length_and_apply_keeps_shapes(toks, maps):
    for key, (rec, sh) in {"bl->sp": (toks.bl, toks.sp), "sp->bl": (toks.sp, toks.bl)}.items():
        tm = maps[key]
        assert len(tm.receiver_to_sharer) == len(rec) == len(tm)
        assert all(0 <= i < len(sh) for i in tm.receiver_to_sharer)
        table = tm.to_tensor()  # [receiver vocab]
        assert table.dtype == torch.long and table.shape == (len(rec),)
        gen = torch.Generator().manual_seed(0)
        for shape in [(1,), (5,), (3, 1), (4, 17), (2, 64)]:
            ids = torch.randint(0, len(rec), shape, generator=gen)  # [*shape]
            out = tm.apply(ids)
            assert out.shape == ids.shape and out.dtype == torch.long
            assert torch.equal(out, table[ids])
        assert torch.equal(tm.apply(ids.to(torch.int32)), tm.apply(ids))
        text_ids = torch.tensor([rec.encode("The naïve cat costs 12 € !")])  # [1, T]
        assert tm.apply(text_ids).shape == text_ids.shape


def test_deterministic(toks, maps):
    again = build_token_map(toks.bl, toks.sp)
    assert again == maps["bl->sp"]
    assert again.to_dict() == maps["bl->sp"].to_dict()


def test_identity_for_identical_vocabularies(toks):
    clone = wrap(Tokenizer.from_str(toks.bl.backend_tokenizer.to_str()), "<s>", "</s>")
    for sharer in (toks.bl, clone):
        tm = build_token_map(toks.bl, sharer)
        assert tm.is_identity and tm.coverage == 1.0
        assert tm.receiver_to_sharer == list(range(len(toks.bl)))
    assert not build_token_map(toks.bl, toks.bl2).is_identity


def test_special_tokens_by_role_and_string(toks, maps):
    rec, sh, tm = toks.bl, toks.sp, maps["bl->sp"]
    for role in ("bos", "eos", "pad", "unk"):
        rid, sid = getattr(rec, f"{role}_token_id"), getattr(sh, f"{role}_token_id")
        assert tm.receiver_to_sharer[rid] == sid, role
    assert rec.bos_token != sh.bos_token and rec.bos_token_id != sh.bos_token_id  # role, not string
    for marker in CHAT_MARKERS:
        rid, sid = rec.convert_tokens_to_ids(marker), sh.convert_tokens_to_ids(marker)
        assert rid != sid and tm.receiver_to_sharer[rid] == sid, marker
    assert tm.counts["role"] == 2 and tm.counts["string"] == len(CHAT_MARKERS) + 2  # <pad>, <unk>: same string


def test_special_token_string_beats_role(toks):
    """SmolLM2's bos is `<|im_start|>` and Qwen2.5's is `<|endoftext|>`: the chat marker keeps its own string."""
    receiver = wrap(Tokenizer.from_str(toks.bl.backend_tokenizer.to_str()), "<|im_start|>", "<|im_end|>")
    tm = build_token_map(receiver, toks.sp)
    for marker in CHAT_MARKERS:
        assert tm.receiver_to_sharer[receiver.convert_tokens_to_ids(marker)] == toks.sp.convert_tokens_to_ids(marker)
    assert toks.sp.bos_token_id != toks.sp.convert_tokens_to_ids("<|im_start|>")


def test_longest_versus_first(toks, maps):
    rec, sh = toks.sp, toks.bl
    longest, first = maps["sp->bl"].receiver_to_sharer, maps["sp->bl first"].receiver_to_sharer
    assert maps["sp->bl first"].strategy == "first"
    several = {}
    for rid in range(len(rec)):
        text = rec.convert_tokens_to_string([rec.convert_ids_to_tokens(rid)])
        pieces = encode(sh, text)
        if len(pieces) > 1 and "\ufffd" not in text and rid not in rec.all_special_ids:
            several[rid] = pieces
    assert several
    for rid, pieces in several.items():
        lengths = [len(sh.convert_tokens_to_string([sh.convert_ids_to_tokens(p)])) for p in pieces]
        assert first[rid] == pieces[0]
        assert longest[rid] == pieces[lengths.index(max(lengths))]  # longest decoded string, first on ties
    differ = [rid for rid in several if longest[rid] != first[rid]]
    assert differ
    for rid in differ[:5]:
        print(f"{rec.convert_ids_to_tokens(rid)!r}: pieces {sh.convert_ids_to_tokens(several[rid])},"
              f" longest {sh.convert_ids_to_tokens(longest[rid])!r}, first {sh.convert_ids_to_tokens(first[rid])!r}")


def independent_coverage(rec: PreTrainedTokenizerFast, sh: PreTrainedTokenizerFast) -> float:
    """Share of receiver ids mapped by role/string or whose decoded text re-encodes to exactly one sharer token."""
    special = {
        getattr(rec, f"{r}_token_id") for r in ("bos", "eos", "pad", "unk")
        if getattr(rec, f"{r}_token_id") is not None and getattr(sh, f"{r}_token_id") is not None
    }
    special |= {i for i in rec.added_tokens_decoder if rec.convert_ids_to_tokens(i) in sh.get_vocab()}
    single = sum(
        len(encode(sh, rec.convert_tokens_to_string([rec.convert_ids_to_tokens(i)]))) == 1
        for i in range(len(rec)) if i not in special
    )
    return (len(special) + single) / len(rec)


@pytest.mark.parametrize("key", ["bl->sp", "sp->bl"])
def test_coverage_matches_independent_count(toks, maps, key):
    rec, sh = (toks.bl, toks.sp) if key == "bl->sp" else (toks.sp, toks.bl)
    tm = maps[key]
    print(f"{key}: {tm.summary()}")
    assert 0 < tm.coverage <= 1
    assert math.isclose(tm.coverage, independent_coverage(rec, sh))
    assert sum(tm.counts.values()) == len(rec)


def test_byte_pieces(toks, maps):
    # A lone byte-fallback piece decodes to U+FFFD: nothing to re-encode, so it falls back to the sharer's unk.
    byte_id = toks.sp.convert_tokens_to_ids("<0xC3>")
    assert toks.sp.convert_tokens_to_string(["<0xC3>"]) == "\ufffd"
    assert maps["sp->bl"].receiver_to_sharer[byte_id] == toks.bl.unk_token_id
    assert byte_id in maps["sp->bl"].fallback_ids
    # The same for a partial UTF-8 byte of a byte-level vocabulary ('Ã' is byte 0xC3) ...
    partial = toks.bl.convert_tokens_to_ids("Ã")
    assert maps["bl->sp"].receiver_to_sharer[partial] == toks.sp.unk_token_id
    assert maps["bl->sp"].counts["lossy"] > 0  # merges such as 'fÃ' keep their decodable part
    # ... unless the sharer has the same byte piece (same byte-level scheme).
    tm = build_token_map(toks.bl, toks.bl2)
    assert toks.bl2.convert_ids_to_tokens(tm.receiver_to_sharer[partial]) == "Ã"
    assert tm.counts["string"] > 128 and not tm.fallback_ids
    print(f"bl->bl2: {tm.summary()}")


def test_leading_space_survives_first_token_decoders(toks):
    rec, sh = toks.llama, toks.bl
    assert rec.convert_tokens_to_string(["▁the"]) == "the"  # Metaspace decoder drops the first token's space
    tm = build_token_map(rec, sh)
    assert encode(sh, "the") != encode(sh, " the")  # so a lost space would pick another sharer token
    for piece, expected in [("▁the", "Ġthe"), ("▁", "Ġ")]:
        assert sh.convert_ids_to_tokens(tm.receiver_to_sharer[rec.convert_tokens_to_ids(piece)]) == expected


def test_dict_round_trip_and_errors(toks, maps):
    tm = maps["bl->sp"]
    back = TokenMap.from_dict(json.loads(json.dumps(tm.to_dict())))
    assert back == tm and back.summary() == tm.summary()
    ids = torch.arange(len(toks.bl)).view(2, -1)
    assert torch.equal(back.apply(ids), tm.apply(ids))
    n = len(tm)
    with pytest.raises(ValueError, match=f"token id {n} "):
        tm.apply(torch.tensor([[0, 1, n]]))
    with pytest.raises(ValueError, match="token id -1 "):
        tm.apply(torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match="strategy"):
        build_token_map(toks.bl, toks.sp, strategy="shortest")


@pytest.mark.parametrize("sharer", ["qwen2.5-coder-0.5b-instruct", "gemma-3-270m"])
def test_real_tokenizers(sharer):
    folders = [REAL_MODELS / "smollm2-135m-instruct", REAL_MODELS / sharer]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        pytest.skip(f"missing {', '.join(missing)}: these folders are built by ../shared/tools/get-real-models")
    rec, sh = (AutoTokenizer.from_pretrained(f) for f in folders)
    start = time.perf_counter()
    tm = build_token_map(rec, sh)
    elapsed = time.perf_counter() - start
    print(f"smollm2 -> {sharer}: {tm.summary()} in {elapsed:.1f} s")
    assert len(tm) == len(rec) and all(0 <= i < len(sh) for i in tm.receiver_to_sharer)
    assert 0.3 < tm.coverage <= 1 and elapsed < 60
    shared_strings = {rid for rid in rec.all_special_ids if rec.convert_ids_to_tokens(rid) in sh.get_vocab()}
    for rid in shared_strings:  # ChatML markers, also SmolLM2's bos <|im_start|>: by string
        assert tm.receiver_to_sharer[rid] == sh.convert_tokens_to_ids(rec.convert_ids_to_tokens(rid))
    role_ids = {}  # the others by role, the first role wins (SmolLM2's pad is its eos)
    for role in ("bos", "eos", "pad", "unk"):
        rid, sid = getattr(rec, f"{role}_token_id"), getattr(sh, f"{role}_token_id")
        if rid is not None and sid is not None and rid not in shared_strings:
            role_ids.setdefault(rid, sid)
    assert all(tm.receiver_to_sharer[rid] == sid for rid, sid in role_ids.items())
    if sharer.startswith("qwen"):  # both ChatML: a chat turn's markers read the same
        turn = "<|im_start|>user<|im_end|>"
        assert tm.apply(torch.tensor(encode(rec, turn))).tolist() == encode(sh, turn)


# --------------------------------------------------------------------------- span alignment


def check_span_row(receiver, sharer, receiver_ids: list[int], sharer_ids: list[int], positions: list[int]) -> None:
    """Against decoded lengths: receiver token n takes the last sharer token whose text ends with or before its own
    (or the first sharer token, when that ends later)."""
    text = receiver.decode(receiver_ids)
    assert sharer_ids == encode(sharer, text)
    assert len(positions) == len(receiver_ids)
    for n, position in enumerate(positions):
        receiver_end = len(receiver.decode(receiver_ids[: n + 1]))
        if position > 0 or len(sharer.decode(sharer_ids[:1])) <= receiver_end:
            assert len(sharer.decode(sharer_ids[: position + 1])) <= receiver_end
        if position + 1 < len(sharer_ids):
            assert len(sharer.decode(sharer_ids[: position + 2])) > receiver_end


def test_span_aligner_reads_the_sharers_own_tokenization(toks):
    aligner = SpanAligner(toks.bl, toks.sp)
    texts = [line for line in corpus(60, seed=3) if line.isascii()][:30]
    texts = [f"<|im_start|>{line}<|im_end|>" for line in texts]
    rows = [encode(toks.bl, text) for text in texts]
    differ = 0
    for ids in rows:
        sharer_ids, positions = aligner.align_row(ids)
        check_span_row(toks.bl, toks.sp, ids, sharer_ids, positions)
        differ += positions != list(range(len(ids)))
    assert differ >= len(rows) // 2  # the two tokenizers split most of these sentences differently

    ids, mask = left_pad(rows[:4], toks.bl.pad_token_id)
    aligned = aligner(ids, mask)
    width = aligned.sharer_input_ids.shape[1]
    for i, row in enumerate(rows[:4]):
        sharer_ids, positions = aligner.align_row(row)
        pad = width - len(sharer_ids)
        assert aligned.sharer_input_ids[i, pad:].tolist() == sharer_ids
        assert aligned.sharer_attention_mask[i].tolist() == [0] * pad + [1] * len(sharer_ids)
        assert (aligned.sharer_input_ids[i, :pad] == toks.sp.pad_token_id).all()
        receiver_pad = ids.shape[1] - len(row)
        assert aligned.positions[i, receiver_pad:].tolist() == [p + pad for p in positions]
        assert (aligned.positions[i, :receiver_pad] == pad).all()  # padding reads the row's first sharer token


def test_span_aligner_on_ids_that_are_not_the_texts_own_tokenization(toks):
    """Ids against the tokenizer's own merges (" garden" one character at a time) measure token ends by decoding."""
    ids = encode(toks.bl, "The") + [i for c in " garden" for i in encode(toks.bl, c)] + encode(toks.bl, " sleeps.")
    assert ids != encode(toks.bl, toks.bl.decode(ids))
    sharer_ids, positions = SpanAligner(toks.bl, toks.sp).align_row(ids)
    check_span_row(toks.bl, toks.sp, ids, sharer_ids, positions)


def test_span_aligner_identity_and_errors(toks):
    ids = encode(toks.bl, "<|im_start|>The old dog reads near the river.<|im_end|>")
    assert SpanAligner(toks.bl, toks.bl).align_row(ids) == (ids, list(range(len(ids))))
    with pytest.raises(ValueError, match="Span alignment needs character offsets, which the sharer tokenizer"):
        SpanAligner(toks.bl, SimpleNamespace(is_fast=False))
    with pytest.raises(ValueError, match="Span alignment got a row without tokens"):
        SpanAligner(toks.bl, toks.sp)(torch.tensor([[5, 6]]), torch.tensor([[0, 0]]))


# --------------------------------------------------------------------------- span alignment of any ids, in linear time

SPELLED = "naïve café: 12 € in 東京 😀 ok"  # 1-, 2-, 3- and 4-byte UTF-8 characters
AS_IS = dict(skip_special_tokens=False, clean_up_tokenization_spaces=False)


def prefix_decoding_row(aligner: SpanAligner, ids: list[int]) -> tuple[list[int], list[int]]:
    """Span alignment by its definition: on ids that are not the text's own tokenization, receiver token n ends
    where the decoded prefix `ids[: n + 1]` ends (every prefix decoded: quadratic)."""
    receiver, sharer = aligner.receiver_tokenizer, aligner.sharer_tokenizer
    text = receiver.decode(ids, **AS_IS)
    encoded = receiver(text, add_special_tokens=False, return_offsets_mapping=True)
    if encoded["input_ids"] == ids:
        ends = [end for _, end in encoded["offset_mapping"]]
    else:
        ends = [len(receiver.decode(ids[: n + 1], **AS_IS)) for n in range(len(ids))]
    read = sharer(text, add_special_tokens=False, return_offsets_mapping=True)
    sharer_ends = [end for _, end in read["offset_mapping"]]
    return read["input_ids"], [max(bisect_right(sharer_ends, end) - 1, 0) for end in ends]


def decoder_zoo() -> dict[str, PreTrainedTokenizerFast]:
    """Receivers whose decoders act across tokens in the ways the `toks` ones do not: a space stripped from the whole
    text's start after byte fallback (Llama-2 style), WordPiece '##' joins and clean-up, a word suffix on every token
    but the last, CTC's merging of repeats."""
    specials = ["<unk>", "<s>", "</s>", "<pad>", *CHAT_MARKERS]
    legacy = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    legacy.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    legacy.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    legacy_specials = [*specials, *(f"<0x{b:02X}>" for b in range(256))]
    legacy.train_from_iterator(
        corpus(), trainers.BpeTrainer(vocab_size=500, special_tokens=legacy_specials, show_progress=False)
    )
    wordpiece = Tokenizer(models.WordPiece(unk_token="<unk>"))
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.decoder = decoders.WordPiece(cleanup=True)
    wordpiece.train_from_iterator(
        corpus(), trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials, show_progress=False)
    )
    suffix = Tokenizer(models.BPE(unk_token="<unk>", end_of_word_suffix="</w>"))
    suffix.pre_tokenizer = pre_tokenizers.Whitespace()
    suffix.decoder = decoders.BPEDecoder(suffix="</w>")
    suffix.train_from_iterator(
        corpus(),
        trainers.BpeTrainer(vocab_size=200, end_of_word_suffix="</w>", special_tokens=specials, show_progress=False),
    )
    ctc = Tokenizer(models.WordLevel({t: i for i, t in enumerate([*specials, "|", *"abcdeé€ "])}, unk_token="<unk>"))
    ctc.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    ctc.decoder = decoders.CTC(pad_token="<pad>", word_delimiter_token="|")
    zoo = {"strip": legacy, "wordpiece": wordpiece, "suffix": suffix, "ctc": ctc}
    return {name: wrap(tokenizer, "<s>", "</s>") for name, tokenizer in zoo.items()}


def single_byte_ids(tokenizer: PreTrainedTokenizerFast) -> dict[int, int]:
    """Byte -> id of the token that is that one byte: a `<0xNN>` fallback piece or a byte-level alphabet token."""
    vocab = tokenizer.get_vocab()
    pieces = {b: vocab.get(f"<0x{b:02X}>") for b in range(256)}
    if all(token_id is None for token_id in pieces.values()):
        pieces = {b: vocab.get(char) for b, char in bytes_to_unicode().items()}
    return {b: token_id for b, token_id in pieces.items() if token_id is not None}


def awkward_rows(tokenizer: PreTrainedTokenizerFast, count: int, seed: int) -> list[list[int]]:
    """Ids no tokenizer would give for their text: random ids (over the whole vocabulary, and over single bytes and
    special tokens), and a text spelled byte by byte (from each of its characters on, after other text), character
    by character or canonically, with a space byte first, an invalid byte (0xFF) or a special token among the bytes,
    a cut character, a run of bytes longer than any window."""
    rng = random.Random(seed)
    byte_ids = single_byte_ids(tokenizer)
    small = [*byte_ids.values(), *tokenizer.all_special_ids]
    rows = [[rng.randrange(len(tokenizer)) for _ in range(rng.randint(1, 48))] for _ in range(count)]
    rows += [[rng.choice(small) for _ in range(rng.randint(1, 48))] for _ in range(count)]
    for start in range(len(SPELLED)):
        rows.append(encode(tokenizer, "The price") + [byte_ids[b] for b in SPELLED[start:].encode() if b in byte_ids])
    spelled = [byte_ids[b] for b in SPELLED.encode() if b in byte_ids]
    by_character = [i for c in SPELLED for i in encode(tokenizer, c)]
    marker = tokenizer.convert_tokens_to_ids(CHAT_MARKERS[0])
    invalid = [byte_ids[0xFF]] if 0xFF in byte_ids else []
    space = [byte_ids[0x20]] if 0x20 in byte_ids else []
    for cut in (len(spelled), 5, 13, len(spelled) - 2):
        start = spelled[:cut]
        rows += [start, space + start, encode(tokenizer, "The price") + start, start + invalid + spelled]
        rows += [invalid + start, [*start[:3], marker, *start[3:]], by_character[:cut] + start, start + by_character]
    return [row for row in rows if row]


@pytest.fixture(scope="module")
def fine_sharer() -> PreTrainedTokenizerFast:
    """A byte-level sharer without merges: a token per byte, so positions resolve every receiver token's end."""
    return byte_level(256 + 6)


@pytest.fixture(scope="module")
def zoo() -> dict[str, PreTrainedTokenizerFast]:
    return decoder_zoo()


@pytest.mark.parametrize("receiver_name", ["bl", "sp", "llama", "strip", "wordpiece", "suffix", "ctc"])
def test_span_alignment_of_any_ids_equals_decoding_every_prefix(toks, zoo, fine_sharer, receiver_name):
    """Token ends found in linear time give the positions that decoding every prefix gives, whatever the ids."""
    receiver = getattr(toks, receiver_name, None) or zoo[receiver_name]
    rows = awkward_rows(receiver, count=60, seed=len(receiver_name))
    non_canonical = [row for row in rows if encode(receiver, receiver.decode(row, **AS_IS)) != row]
    assert len(non_canonical) >= 40, len(non_canonical)
    # The decoders at work: decoding a row is not the concatenation of its tokens decoded one by one.
    assert any(len(receiver.decode(row, **AS_IS)) != sum(len(receiver.decode([i], **AS_IS)) for i in row)
               for row in non_canonical)  # fmt: skip
    for sharer in (fine_sharer, toks.sp if receiver_name != "sp" else toks.bl):
        aligner = SpanAligner(receiver, sharer)
        for row in rows:
            assert aligner.align_row(row) == prefix_decoding_row(aligner, row), receiver.convert_ids_to_tokens(row)


@pytest.mark.parametrize("receiver_name", ["bl", "sp"])
def test_span_alignment_of_a_long_mixed_row_equals_decoding_every_prefix(toks, fine_sharer, receiver_name):
    """Hundreds of tokens: canonical words, words spelled character by character and byte by byte, in turn."""
    receiver = getattr(toks, receiver_name)
    byte_ids = single_byte_ids(receiver)
    words = " ".join(corpus(40, seed=7)).split(" ")
    row = []
    for n, word in enumerate(words):
        piece = (" " if n else "") + word
        spellings = (
            encode(receiver, piece),
            [i for c in piece for i in encode(receiver, c)],
            [byte_ids[b] for b in piece.encode()],
        )
        row += spellings[n % 3]
    assert len(row) > 600 and encode(receiver, receiver.decode(row, **AS_IS)) != row
    aligner = SpanAligner(receiver, fine_sharer)
    assert aligner.align_row(row) == prefix_decoding_row(aligner, row)


@pytest.mark.parametrize("receiver", ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "gemma-3-270m"])
def test_span_alignment_of_any_ids_with_real_tokenizers(fine_sharer, receiver):
    """SmolLM2's and Qwen2.5's byte-level BPE, Gemma 3's SentencePiece BPE with byte fallback."""
    folder = REAL_MODELS / receiver
    if not folder.is_dir():
        pytest.skip(f"missing {folder}: these folders are built by ../shared/tools/get-real-models")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    aligner = SpanAligner(tokenizer, fine_sharer)
    rows = awkward_rows(tokenizer, count=40, seed=0)
    assert sum(encode(tokenizer, tokenizer.decode(row, **AS_IS)) != row for row in rows) >= 40
    for row in rows:
        assert aligner.align_row(row) == prefix_decoding_row(aligner, row), tokenizer.convert_ids_to_tokens(row)
