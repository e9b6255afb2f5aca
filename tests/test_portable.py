"""What a saved C2C folder holds and where its bases come from: tokenizers in every save (AutoTokenizer, pipeline,
Trainer checkpoints), loading options that reach the bases, base references that survive moving the folders."""

from __future__ import annotations

import copy
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from conftest import FUSER_KWARGS
from datasets import Dataset
from tiny_models import VOCAB, build, receiver_config, sharer_configs, word_tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments, pipeline

from c2c_hf import C2CDataCollator, C2CForCausalLM
from c2c_hf.training import make_trainer

WORDS = [f"w{i}" for i in range(VOCAB - 6)]  # with the 6 specials and roles: every id the models emit decodes
PROMPT = "w3 w14 w15 w9 w26 w5"


def save_base(model, tokenizer, folder) -> str:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Bases with tokenizers saved beside a C2C folder (`parent/{receiver, sharer, c2c}`), the model and its logits."""
    parent = tmp_path_factory.mktemp("portable") / "parent"
    tokenizer = word_tokenizer(WORDS)
    save_base(build(receiver_config(), seed=0), tokenizer, parent / "receiver")
    save_base(build(sharer_configs()["qwen2"], seed=1), tokenizer, parent / "sharer")
    receiver = AutoModelForCausalLM.from_pretrained(parent / "receiver")
    sharer = AutoModelForCausalLM.from_pretrained(parent / "sharer")
    torch.manual_seed(0)
    model = C2CForCausalLM.from_base_models(
        receiver, sharer, AutoTokenizer.from_pretrained(parent / "receiver"),
        AutoTokenizer.from_pretrained(parent / "sharer"), **FUSER_KWARGS,
    ).eval()  # fmt: skip
    with torch.no_grad():
        for parameter in model.fuser.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    model.save_pretrained(parent / "c2c")
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    return parent, model, ids, logits


def test_save_writes_the_receiver_tokenizer_and_pipeline_generates_as_the_model(pair):
    parent, model, ids, _ = pair
    folder = parent / "c2c"
    assert (folder / "tokenizer_config.json").is_file() and (folder / "generation_config.json").is_file()
    assert not (folder / "sharer_tokenizer").exists()  # same vocabulary as the receiver's: one tokenizer
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.get_vocab() == model.receiver_tokenizer.get_vocab()
    assert tokenizer(PROMPT).input_ids == ids[0].tolist()

    generator = pipeline("text-generation", model=str(folder))
    assert isinstance(generator.model, C2CForCausalLM)
    text = generator(PROMPT, max_new_tokens=6, do_sample=False, return_full_text=False)[0]["generated_text"]
    expected = model.generate(ids, max_new_tokens=6, do_sample=False)[0, ids.shape[1] :]
    assert text.strip() == tokenizer.decode(expected, skip_special_tokens=True).strip()
    assert text.strip()  # something was generated


def test_loaded_model_knows_its_tokenizers_and_survives_copy_and_pickle(pair):
    parent, model, ids, logits = pair
    loaded = C2CForCausalLM.from_pretrained(parent / "c2c")
    assert loaded.receiver_tokenizer.get_vocab() == model.receiver_tokenizer.get_vocab()
    assert loaded.sharer_tokenizer is loaded.receiver_tokenizer  # no sharer_tokenizer/ folder: the same vocabulary
    for clone in (copy.deepcopy(loaded), pickle.loads(pickle.dumps(loaded))):
        assert clone.receiver_tokenizer(PROMPT).input_ids == ids[0].tolist()
        with torch.no_grad():
            torch.testing.assert_close(clone(ids).logits, logits)


def test_a_sharer_with_another_vocabulary_is_saved_in_its_folder(receiver, sharers, tmp_path):
    receiver_tokenizer, sharer_tokenizer = word_tokenizer(WORDS), word_tokenizer(WORDS[::-1])
    model = C2CForCausalLM.from_base_models(
        receiver, sharers["qwen2"], receiver_tokenizer, sharer_tokenizer, token_alignment="span", **FUSER_KWARGS
    )
    model.save_pretrained(tmp_path / "c2c")
    assert AutoTokenizer.from_pretrained(tmp_path / "c2c").get_vocab() == receiver_tokenizer.get_vocab()
    assert AutoTokenizer.from_pretrained(tmp_path / "c2c" / "sharer_tokenizer").get_vocab() == sharer_tokenizer.get_vocab()
    # The span aligner of the loaded model reads both saved tokenizers (the bases are given: they have no folders).
    loaded = C2CForCausalLM.from_pretrained(tmp_path / "c2c", receiver=receiver, sharer=sharers["qwen2"])
    assert loaded.sharer_tokenizer.get_vocab() == sharer_tokenizer.get_vocab()
    assert loaded.span_aligner is not None


def test_trainer_checkpoints_hold_the_tokenizer(pair, tmp_path):
    _, model, _, _ = pair
    features = Dataset.from_list([{"input_ids": [7, 8, 9, 10, 11], "labels": [-100, -100, -100, -100, 11], "fuse_length": 3}] * 2)
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=1, save_steps=1, per_device_train_batch_size=2, report_to=[],
        use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    trainer = make_trainer(copy.deepcopy(model), args, features, C2CDataCollator(pad_token_id=0))
    assert trainer.processing_class is trainer.model.receiver_tokenizer
    trainer.train()
    checkpoint = tmp_path / "checkpoint-1"
    assert AutoTokenizer.from_pretrained(checkpoint).get_vocab() == model.receiver_tokenizer.get_vocab()
    assert C2CForCausalLM.from_pretrained(checkpoint).receiver_tokenizer is not None


def test_loading_options_reach_the_bases(pair):
    parent, _, _, _ = pair
    for auto_class in (AutoModelForCausalLM, C2CForCausalLM):
        loaded = auto_class.from_pretrained(
            parent / "c2c", attn_implementation="eager", dtype=torch.bfloat16, device_map="cpu", local_files_only=True
        )
        for base in (loaded.receiver, loaded.sharer):
            assert base.config._attn_implementation == "eager", auto_class
            assert base.dtype == torch.bfloat16 and base.device.type == "cpu"
        assert {p.dtype for p in loaded.fuser.parameters()} == {torch.float32}  # the fuser keeps its precision


def test_bases_beside_the_folder_are_saved_relative_and_move_with_it(pair, tmp_path):
    parent, _, ids, logits = pair
    config = json.loads((parent / "c2c" / "config.json").read_text())
    assert (config["receiver_name_or_path"], config["sharer_name_or_path"]) == ("../receiver", "../sharer")

    moved = shutil.copytree(parent, tmp_path / "elsewhere" / "moved")
    loaded = C2CForCausalLM.from_pretrained(moved / "c2c")
    assert loaded.config.receiver_name_or_path == str((moved / "receiver").resolve())
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, logits)

    alone = shutil.copytree(parent / "c2c", tmp_path / "alone" / "c2c")
    with pytest.raises(FileNotFoundError) as error:
        C2CForCausalLM.from_pretrained(alone)
    message = str(error.value)
    assert f"The C2C receiver '{(tmp_path / 'alone' / 'receiver').resolve()}'" in message
    assert "receiver=AutoModelForCausalLM.from_pretrained(" in message
    # the override the message shows works
    loaded = C2CForCausalLM.from_pretrained(
        alone, receiver=AutoModelForCausalLM.from_pretrained(moved / "receiver"),
        sharer=AutoModelForCausalLM.from_pretrained(moved / "sharer"),
    )  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, logits)


def test_bases_inside_the_folder_and_elsewhere(pair, tmp_path):
    parent, model, ids, logits = pair
    inside = tmp_path / "c2c"
    shutil.copytree(parent / "receiver", inside / "bases" / "receiver")
    model.config.receiver_name_or_path = str(inside / "bases" / "receiver")
    try:
        model.save_pretrained(inside)
    finally:
        model.config.receiver_name_or_path = str(parent / "receiver")
    config = json.loads((inside / "config.json").read_text())
    assert config["receiver_name_or_path"] == "./bases/receiver"
    assert config["sharer_name_or_path"] == str(parent / "sharer")  # not beside this folder: kept absolute
    (tmp_path / "other").mkdir()
    moved = Path(shutil.move(inside, tmp_path / "other" / "c2c"))
    with torch.no_grad():
        torch.testing.assert_close(C2CForCausalLM.from_pretrained(moved)(ids).logits, logits)
