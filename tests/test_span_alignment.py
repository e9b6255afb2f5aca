"""Span alignment in the model: the sharer reads the prompt in its own tokenization (a character-level sharer
tokenizer under a word-level receiver), in forward, generate, the sharer-cache memo and save / load."""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import FUSER_KWARGS
from tiny_models import CHAT_TEMPLATE, ROLES, SPECIALS, build, receiver_config, sharer_configs, word_tokenizer
from transformers import AutoModelForCausalLM

from c2c_hf import C2CForCausalLM, SpanAligner
from c2c_hf.data import C2CDataCollator, left_pad
from c2c_hf.training import SharerCacheMemo

WORDS = "where does kronvo live the old cat sleeps near river ?".split()
QUESTIONS = ["where does kronvo live ?", "the old cat sleeps near the river ?", "where does the cat sleeps ?"]
TOL = 1e-5


def char_tokenizer():
    """One token per character (chat markers whole), decoding without separators."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokens = SPECIALS + ROLES + list("abcdefghijklmnopqrstuvwxyz ?")
    backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(SPECIALS)
    backend.add_tokens(ROLES)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        chat_template=CHAT_TEMPLATE,
    )


@pytest.fixture(scope="module")
def span_setup():
    receiver_tokenizer, sharer_tokenizer = word_tokenizer(WORDS), char_tokenizer()
    receiver, sharer = build(receiver_config(), seed=0), build(sharer_configs()["qwen2"], seed=1)
    torch.manual_seed(0)
    model = C2CForCausalLM.from_base_models(
        receiver, sharer, receiver_tokenizer, sharer_tokenizer, token_alignment="span", **FUSER_KWARGS
    ).eval()
    with torch.no_grad():
        for parameter in model.fuser.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.2)
    prompts = [
        receiver_tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, return_dict=False
        )
        for q in QUESTIONS
    ]
    return model, receiver_tokenizer, sharer_tokenizer, prompts


def test_config_and_aligner(span_setup):
    model, _, _, prompts = span_setup
    assert model.config.token_alignment == "span" and model.config.token_alignment_coverage is None
    assert isinstance(model.span_aligner, SpanAligner) and not hasattr(model.fuser, "token_map")
    with pytest.raises(ValueError, match="This C2C model aligns tokens by span: its sharer reads the prompt in its own"):
        model.sharer_inputs(torch.tensor([prompts[0]]))


def test_fused_sharer_kv_is_the_sharers_own_prefill_at_each_words_last_character(span_setup):
    model, receiver_tokenizer, sharer_tokenizer, prompts = span_setup
    ids, mask = left_pad(prompts, receiver_tokenizer.pad_token_id)
    num_fused = ids.shape[1] - 1
    with torch.no_grad():
        fused = model.sharer_cache_for(ids, mask, num_fused)  # per layer (B, H_s, F, D_s)
        for row, prompt in enumerate(prompts):
            real = list(prompt[:-1])  # the fused tokens
            text = receiver_tokenizer.decode(real)
            own = sharer_tokenizer(text, add_special_tokens=False)["input_ids"]
            assert len(own) > len(real)  # characters: the sharer reads more tokens than the receiver
            alone = model.sharer.model(input_ids=torch.tensor([own]), use_cache=True).cache
            # receiver token n ends where the sharer's prefix of the same decoded length ends
            sharer_ends = [len(sharer_tokenizer.decode(own[: j + 1])) for j in range(len(own))]
            expected = [sharer_ends.index(len(receiver_tokenizer.decode(real[: n + 1]))) for n in range(len(real))]
            for layer, reference in zip(fused.layers, alone.layers):
                got = layer.values[row, :, num_fused - len(real) :]  # the row's real positions
                torch.testing.assert_close(got, reference.values[0][:, expected], atol=TOL, rtol=0)
                torch.testing.assert_close(
                    layer.keys[row, :, num_fused - len(real) :], reference.keys[0][:, expected], atol=TOL, rtol=0
                )


def test_batch_and_generate_agree_with_single_prompts(span_setup):
    model, receiver_tokenizer, _, prompts = span_setup
    ids, mask = left_pad(prompts, receiver_tokenizer.pad_token_id)
    with torch.no_grad():
        batched = model(ids, attention_mask=mask).logits[:, -1]
        for row, prompt in enumerate(prompts):
            single = model(torch.tensor([prompt])).logits[0, -1]
            torch.testing.assert_close(batched[row], single, atol=1e-4, rtol=0)
        receiver_only = model.receiver(ids, attention_mask=mask).logits[:, -1]
    assert (batched - receiver_only).abs().max() > 1e-2  # the sharer's cache changes the answer
    generated = model.generate(ids, attention_mask=mask, max_new_tokens=1, do_sample=False)
    assert torch.equal(generated[:, -1], batched.argmax(-1))


def test_span_alignment_equals_the_token_map_when_segmentations_agree():
    """A sharer tokenizer with the same words under other ids: span and per-token alignment read the same tokens."""
    receiver_tokenizer, sharer_tokenizer = word_tokenizer(WORDS), word_tokenizer(WORDS[::-1])
    receiver, sharer = build(receiver_config(), seed=0), build(sharer_configs()["llama"], seed=2)
    models = {}
    for alignment in ("span", "longest"):
        torch.manual_seed(0)
        models[alignment] = C2CForCausalLM.from_base_models(
            receiver, sharer, receiver_tokenizer, sharer_tokenizer, token_alignment=alignment, **FUSER_KWARGS
        ).eval()
    assert models["span"].span_aligner is not None and models["longest"].span_aligner is None
    prompts = [receiver_tokenizer(q, add_special_tokens=False)["input_ids"] for q in QUESTIONS]
    ids, mask = left_pad(prompts, receiver_tokenizer.pad_token_id)
    with torch.no_grad():
        span, per_token = (models[a](ids, attention_mask=mask).logits for a in ("span", "longest"))
    torch.testing.assert_close(span, per_token, atol=TOL, rtol=0)


def test_sharer_cache_memo_equals_running_the_span_aligned_sharer(span_setup):
    model, receiver_tokenizer, _, prompts = span_setup
    features = [
        {"input_ids": [*prompt, 7, 2], "labels": [-100] * len(prompt) + [7, 2], "fuse_length": len(prompt) - 1}
        for prompt in prompts
    ]
    plain = C2CDataCollator.for_tokenizer(receiver_tokenizer)
    memoized = C2CDataCollator.for_tokenizer(receiver_tokenizer, SharerCacheMemo(model))
    for rows in ([0, 1], [1, 2], [2, 0, 1]):
        batch = [features[row] for row in rows]
        with torch.no_grad():
            memo_out, plain_out = model(**memoized(batch)), model(**plain(batch))
        torch.testing.assert_close(memo_out.logits, plain_out.logits, atol=TOL, rtol=0)
    assert len(memoized.sharer_caches) == 3


def test_save_and_load_rebuilds_the_aligner_from_the_bases_tokenizers(span_setup, tmp_path):
    """The receiver's tokenizer is loaded from its base folder; the sharer's is given (saved beside a Qwen2 config,
    AutoTokenizer would load this custom character tokenizer as Qwen2's)."""
    model, receiver_tokenizer, sharer_tokenizer, prompts = span_setup
    model.receiver.save_pretrained(tmp_path / "receiver")
    receiver_tokenizer.save_pretrained(tmp_path / "receiver")
    model.sharer.save_pretrained(tmp_path / "sharer")
    receiver = AutoModelForCausalLM.from_pretrained(tmp_path / "receiver")
    sharer = AutoModelForCausalLM.from_pretrained(tmp_path / "sharer")
    model.config.receiver_name_or_path, model.config.sharer_name_or_path = (
        str(tmp_path / "receiver"),
        str(tmp_path / "sharer"),
    )
    model.save_pretrained(tmp_path / "c2c")
    # The checkpoint carries both tokenizers (the sharer's in sharer_tokenizer/): the aligner is rebuilt from them.
    carried = C2CForCausalLM.from_pretrained(tmp_path / "c2c", receiver=receiver, sharer=sharer)
    assert carried.span_aligner.sharer_tokenizer.get_vocab() == sharer_tokenizer.get_vocab()
    # Without them, the sharer's tokenizer is looked for in its base folder, which holds none: a clear error.
    shutil.rmtree(tmp_path / "c2c" / "sharer_tokenizer")
    with pytest.raises(OSError, match="Could not load the C2C sharer's tokenizer"):
        C2CForCausalLM.from_pretrained(tmp_path / "c2c", receiver=receiver, sharer=sharer)
    loaded = C2CForCausalLM.from_pretrained(
        tmp_path / "c2c", receiver=receiver, sharer=sharer, sharer_tokenizer=sharer_tokenizer
    )
    assert isinstance(loaded.span_aligner, SpanAligner) and loaded.span_aligner.sharer_tokenizer is sharer_tokenizer
    assert loaded.span_aligner.receiver_tokenizer.get_vocab() == receiver_tokenizer.get_vocab()
    loaded.eval()
    ids = torch.tensor([prompts[0]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=TOL, rtol=0)
    loaded.span_aligner = None
    with pytest.raises(ValueError, match=r"aligns tokens by span \(token_alignment='span'\) but holds no SpanAligner"):
        loaded(ids)
