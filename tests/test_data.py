"""Data pipeline: chat / instruction / multiple-choice features, labels, overflow, the collator, file loading."""

from __future__ import annotations

import json

import datasets
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from c2c_hf.data import C2CDataCollator, FeatureStats, build_features, load_dataset_any

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France? The capital of France is Paris.",
    "You are a helpful assistant. Answer the question briefly.",
    "Which gas do plants absorb? Carbon dioxide. Oxygen. Nitrogen. Helium.",
    "Translate to French: good morning. Bonjour.",
    "Answer with the letter of the correct choice (A, B or C) only.",
] * 20
CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "The capital of Italy is Rome."},
]


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    """A tiny byte-level BPE with ChatML markers, a pad token and a ChatML chat template."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator(CORPUS, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, clean_up_tokenization_spaces=False)
    tok.add_special_tokens({"pad_token": "<|pad|>", "additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    return tok


def chat(user: str, assistant: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def features_of(tokenizer, rows: list[dict], **kwargs) -> tuple[datasets.Dataset, FeatureStats]:
    return build_features(datasets.Dataset.from_list(rows), tokenizer, **kwargs)


def split_example(tokenizer, example: dict) -> tuple[str, str]:
    """(prompt text, supervised text) of one feature, checking the label layout on the way."""
    ids, labels, fuse_length = example["input_ids"], example["labels"], example["fuse_length"]
    prompt_len = fuse_length + 1
    assert labels[:prompt_len] == [-100] * prompt_len
    assert labels[prompt_len:] == ids[prompt_len:]
    return tokenizer.decode(ids[:prompt_len]), tokenizer.decode(ids[prompt_len:])


def test_chat_labels_supervise_only_the_final_assistant_turn(tokenizer):
    features, stats = features_of(tokenizer, [{"messages": CONVERSATION, "id": 7}])
    assert features.column_names == ["input_ids", "labels", "fuse_length"]
    assert (stats.total, stats.kept, stats.dropped_too_long, stats.truncated) == (1, 1, 0, 0)
    example = features[0]
    prompt_text = tokenizer.apply_chat_template(CONVERSATION[:-1], tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    assert example["fuse_length"] == len(prompt_ids) - 1
    assert example["input_ids"][: len(prompt_ids)] == prompt_ids
    assert tokenizer.decode(prompt_ids) == prompt_text
    assert prompt_text.endswith("<|im_start|>user\nAnd of Italy?<|im_end|>\n<|im_start|>assistant\n")
    # Token by token: every position before the final response is -100, every response token is its own label.
    labels, ids = example["labels"], example["input_ids"]
    first = labels.index(next(label for label in labels if label != -100))
    assert first == len(prompt_ids) == example["fuse_length"] + 1
    assert all(label == -100 for label in labels[:first])
    assert all(labels[i] == ids[i] for i in range(first, len(ids)))
    assert tokenizer.decode([label for label in labels if label != -100]) == "The capital of Italy is Rome.<|im_end|>\n"
    # The earlier assistant turn ("Paris.") is in the prompt, unsupervised.
    assert "Paris.<|im_end|>" in tokenizer.decode(ids[:first])


def test_system_prompt_is_added_only_when_missing(tokenizer):
    rows = [{"messages": CONVERSATION}, {"messages": CONVERSATION[1:3]}]
    features, _ = features_of(tokenizer, rows, system_prompt="Be brief.")
    with_system, without_system = (split_example(tokenizer, features[i])[0] for i in range(2))
    assert with_system.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    assert "Be brief." not in with_system
    assert without_system == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


@pytest.mark.parametrize(
    ("row", "user"),
    [
        ({"instruction": "Translate to French: good morning.", "input": "", "output": "Bonjour."},
         "Translate to French: good morning."),
        ({"instruction": "Translate to French.", "input": "good morning", "output": "Bonjour."},
         "Translate to French.\n\ngood morning"),
    ],
)  # fmt: skip
def test_instruction_format(tokenizer, row, user):
    features, _ = features_of(tokenizer, [row])
    prompt, response = split_example(tokenizer, features[0])
    assert prompt == f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    assert response == "Bonjour.<|im_end|>\n"


def test_instruction_format_without_input_column(tokenizer):
    features, _ = features_of(tokenizer, [{"instruction": "Say hi.", "output": "Hi."}])
    assert split_example(tokenizer, features[0]) == (
        "<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n",
        "Hi.<|im_end|>\n",
    )


@pytest.mark.parametrize("answer", [1, "B"])
def test_multiple_choice_format(tokenizer, answer):
    choices = ["Oxygen", "Carbon dioxide", "Helium"]
    row = {"question": "Which gas do plants absorb?", "choices": choices, "answer": answer}
    features, _ = features_of(tokenizer, [row])
    prompt, response = split_example(tokenizer, features[0])
    assert prompt == (
        "<|im_start|>user\nWhich gas do plants absorb?\n\nA. Oxygen\nB. Carbon dioxide\nC. Helium\n\n"
        "Answer with the letter of the correct choice (A, B or C) only.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert response == "B<|im_end|>\n"


@pytest.mark.parametrize("answer", [3, "D", "AB", -1])
def test_multiple_choice_rejects_bad_answers(tokenizer, answer):
    row = {"question": "Q?", "choices": ["x", "y", "z"], "answer": answer}
    with pytest.raises(ValueError, match=r"Example 0: answer .* for its 3 choices"):
        features_of(tokenizer, [row])


def collate_rows(tokenizer):
    rows = [
        {"messages": chat("Hi", "Bonjour. Paris is the capital.")},
        {"messages": CONVERSATION},
        {"messages": chat("What is the capital of France?", "B")},
    ]
    features, _ = features_of(tokenizer, rows)
    return [features[i] for i in range(len(features))]


def test_collator_left_pads_prompts_and_right_pads_responses(tokenizer):
    examples = collate_rows(tokenizer)
    prompts = [e["fuse_length"] + 1 for e in examples]
    responses = [len(e["input_ids"]) - p for e, p in zip(examples, prompts)]
    assert len(set(prompts)) == 3 and len(set(responses)) == 3  # all different
    P, R = max(prompts), max(responses)
    pad = tokenizer.pad_token_id
    batch = C2CDataCollator(pad_token_id=pad)(examples)

    assert set(batch) == {"input_ids", "attention_mask", "labels", "fuse_length", "logits_to_keep"}
    for key in ("input_ids", "attention_mask", "labels"):
        assert batch[key].shape == (3, P + R) and batch[key].dtype == torch.long
    assert batch["fuse_length"].dtype == torch.long and batch["fuse_length"].tolist() == [P - 1] * 3
    assert batch["logits_to_keep"] == R + 1 and isinstance(batch["logits_to_keep"], int)
    for row, (example, p, r) in enumerate(zip(examples, prompts, responses)):
        ids, mask, labels = batch["input_ids"][row], batch["attention_mask"][row], batch["labels"][row]
        left, right = P - p, R - r
        assert mask.tolist() == [0] * left + [1] * (p + r) + [0] * right
        assert ids[:left].tolist() == [pad] * left and ids[P + r :].tolist() == [pad] * right
        assert ids[mask.bool()].tolist() == example["input_ids"]  # non-pad tokens, in order
        assert ids[P - p : P].tolist() == example["input_ids"][:p]  # prompt ends at column P-1
        assert ids[P : P + r].tolist() == example["input_ids"][p:]  # response starts exactly at column P
        assert labels[:P].tolist() == [-100] * P and labels[P + r :].tolist() == [-100] * right
        assert labels[P : P + r].tolist() == example["input_ids"][p:]
    # Logits kept = the last prompt token and the response: the first kept position predicts the first response token.
    assert (batch["labels"][:, : P + R - batch["logits_to_keep"] + 1] == -100).all()


def test_collator_accepts_tensors_and_validates(tokenizer):
    examples = collate_rows(tokenizer)
    collator = C2CDataCollator(pad_token_id=tokenizer.pad_token_id)
    as_tensors = [{k: torch.tensor(v) for k, v in e.items()} for e in examples]
    assert torch.equal(collator(as_tensors)["input_ids"], collator(examples)["input_ids"])
    missing = {k: v for k, v in examples[0].items() if k != "fuse_length"}
    with pytest.raises(ValueError, match="Feature 1 has no 'fuse_length'"):
        collator([examples[1], missing])
    with pytest.raises(ValueError, match="fuse_length=2 but the first supervised label is at position"):
        collator([{**examples[0], "fuse_length": 2}])


def test_overflow_drop_and_truncate(tokenizer):
    short = {"messages": chat("Hi", "Hi.")}
    long = {"messages": chat("Hi", "The quick brown fox. " * 10)}
    huge_prompt = {"messages": chat("The quick brown fox. " * 20, "ok")}
    rows = [short, long, huge_prompt, short]
    full, _ = features_of(tokenizer, rows, max_length=10_000)
    lengths = [len(ids) for ids in full["input_ids"]]
    prompt_lengths = [f + 1 for f in full["fuse_length"]]
    max_length = lengths[0] + 3
    assert lengths[1] > max_length > prompt_lengths[1] and prompt_lengths[2] >= max_length

    dropped, stats = features_of(tokenizer, rows, max_length=max_length)
    assert (stats.total, stats.kept, stats.dropped_too_long, stats.truncated) == (4, 2, 2, 0)
    assert dropped["input_ids"] == [full["input_ids"][0], full["input_ids"][3]]
    assert str(stats) == "2/4 examples kept (2 dropped as too long, 0 truncated)"

    truncated, stats = features_of(tokenizer, rows, max_length=max_length, overflow="truncate")
    assert (stats.total, stats.kept, stats.dropped_too_long, stats.truncated) == (4, 3, 1, 1)
    assert str(stats) == "3/4 examples kept (1 dropped as too long, 1 truncated)"
    cut = truncated[1]
    assert len(cut["input_ids"]) == max_length
    assert cut["input_ids"] == full["input_ids"][1][:max_length]  # prompt kept whole, response cut from the right
    assert cut["fuse_length"] == full["fuse_length"][1]
    assert cut["labels"] == full["labels"][1][:max_length]


def test_build_features_errors(tokenizer):
    accepted = r"columns \['prompt', 'text'\]. Accepted column sets: chat: messages; instruction: instruction, output"
    with pytest.raises(ValueError, match=accepted + "; multiple_choice: question, choices, answer"):
        features_of(tokenizer, [{"text": "a", "prompt": "b"}])
    empty = [{"messages": CONVERSATION}, {"messages": chat("Hi", "  \n")}]
    with pytest.raises(ValueError, match="Example 1: the final assistant response is empty"):
        features_of(tokenizer, empty)
    with pytest.raises(ValueError, match="Example 0: the last message must be the assistant's, got role 'user'"):
        features_of(tokenizer, [{"messages": CONVERSATION[:2]}])
    with pytest.raises(ValueError, match=r"overflow must be one of .*'drop', 'truncate'.*got 'wrap'"):
        features_of(tokenizer, [{"messages": CONVERSATION}], overflow="wrap")
    no_template = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer)
    with pytest.raises(ValueError, match=r"no chat template: set `tokenizer.chat_template`"):
        features_of(no_template, [{"messages": CONVERSATION}])
    bare = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer)
    bare.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(ValueError, match="Example 0: the prompt has 1 token"):
        features_of(bare, [{"messages": chat("a", "b")}])
    # A template that renders the history differently once the final turn is present.
    unstable = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer)
    unstable.chat_template = "{{ messages | length }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(ValueError, match="Example 0: the chat template renders"):
        features_of(unstable, [{"messages": CONVERSATION}])


@pytest.fixture
def isolated_datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    return tmp_path


def test_load_dataset_any_reads_local_files(isolated_datasets_cache, tokenizer):
    tmp_path = isolated_datasets_cache
    jsonl = tmp_path / "chat.jsonl"
    jsonl.write_text("\n".join(json.dumps({"messages": CONVERSATION, "n": i}) for i in range(3)) + "\n")
    chat = load_dataset_any(str(jsonl))
    assert isinstance(chat, datasets.Dataset) and len(chat) == 3 and chat[2]["n"] == 2
    assert chat[0]["messages"] == CONVERSATION
    features, stats = build_features(chat, tokenizer)
    assert stats.kept == 3 and features.column_names == ["input_ids", "labels", "fuse_length"]

    csv = tmp_path / "alpaca.csv"
    csv.write_text("instruction,input,output\nSay hi.,,Hi.\nTranslate.,good morning,Bonjour.\n")
    alpaca = load_dataset_any(csv)
    assert alpaca.column_names == ["instruction", "input", "output"] and alpaca[1]["output"] == "Bonjour."
    assert len(load_dataset_any([csv, csv], split="train[:3]")) == 3


def test_load_dataset_any_errors(isolated_datasets_cache):
    missing = isolated_datasets_cache / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl"):
        load_dataset_any(str(missing))
    with pytest.raises(ValueError, match="Cannot load"):
        load_dataset_any([str(missing), "other.csv"])
