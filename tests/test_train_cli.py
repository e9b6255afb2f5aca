"""`c2c-hf train` end to end (one process and two gloo processes) and pairs with different tokenizers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from tiny_models import build, receiver_config, sharer_configs, word_tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from c2c_hf import C2CForCausalLM
from c2c_hf.commands.train import cpu_processes_launched
from c2c_hf.commands.train import main as train_main

COLORS, CITIES = "red blue green yellow black white".split(), "paris rome oslo lima cairo quito".split()
WORDS = ["what", "is", "the", "color", "of", *COLORS, *CITIES]


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory):
    """Tiny receiver and sharer folders (with one tokenizer) and a small chat dataset."""
    root = tmp_path_factory.mktemp("pair")
    tokenizer = word_tokenizer(WORDS)
    for name, config, seed in (("receiver", receiver_config(), 0), ("sharer", sharer_configs()["llama"], 1)):
        build(config, seed).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    with open(root / "data.jsonl", "w") as file:
        for i in range(48):
            messages = [
                {"role": "user", "content": f"what is the color of {CITIES[i % 6]}"},
                {"role": "assistant", "content": COLORS[i * 7 % 6]},
            ]
            file.write(json.dumps({"messages": messages}) + "\n")
    return root


def cli_args(root, output, *extra, use_cpu: bool = True) -> list[str]:
    return [
        "--receiver", str(root / "receiver"), "--sharer", str(root / "sharer"), "--dataset", str(root / "data.jsonl"),
        "--output_dir", str(output), "--per_device_train_batch_size", "2", "--fuser_hidden_size", "16",
        "--report_to", "none", *(["--use_cpu"] if use_cpu else []), "--disable_tqdm", "true", "--learning_rate", "1e-2",
        *extra,
    ]  # fmt: skip


def test_train_command_writes_a_loadable_fuser_only_checkpoint(pair_dir, tmp_path):
    train_main(cli_args(pair_dir, tmp_path / "run", "--max_steps", "4", "--save_steps", "2"))
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "run")
    assert isinstance(model, C2CForCausalLM)
    assert AutoTokenizer.from_pretrained(tmp_path / "run").get_vocab() == word_tokenizer(WORDS).get_vocab()
    with torch.no_grad():
        assert model.generate(torch.tensor([[4, 6, 7, 8]]), max_new_tokens=2).shape == (1, 6)
    # resume from the last checkpoint continues to max_steps
    train_main(cli_args(pair_dir, tmp_path / "run", "--max_steps", "6", "--save_steps", "2", "--resume_from_checkpoint", "True"))
    state = json.loads((tmp_path / "run" / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6


def test_train_command_reuses_the_sharer_kv_across_epochs(pair_dir, tmp_path):
    """48 chats of 6 distinct prompts, 2 epochs: with --reuse_sharer_kv the sharer prefills each prompt once."""
    sharer_rows = []
    original = C2CForCausalLM.sharer_prefill

    def counted(self, ids, mask):
        sharer_rows.append(ids.shape[0])
        return original(self, ids, mask)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(C2CForCausalLM, "sharer_prefill", counted)
        train_main(cli_args(pair_dir, tmp_path / "plain", "--max_steps", "48", "--save_strategy", "no"))
        plain_rows = sum(sharer_rows)
        sharer_rows.clear()
        train_main(cli_args(pair_dir, tmp_path / "memo", "--max_steps", "48", "--save_strategy", "no", "--reuse_sharer_kv"))
    assert (plain_rows, sum(sharer_rows)) == (96, 6)


@pytest.mark.slow
def test_two_process_training_with_torchrun(pair_dir, tmp_path):
    """The README's line, `torchrun --nproc_per_node 2 -m c2c_hf.cli train ...` without `--use-cpu`, on a machine with
    no accelerator (CUDA hidden): the two processes form one gloo run (global batch 2 x 2), one checkpoint, loadable."""
    output = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29577",
        "-m", "c2c_hf.cli", "train", *cli_args(pair_dir, output, "--max_steps", "3", "--save_steps", "3", use_cpu=False),
    ]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stderr.count("2 processes and no accelerator: one data-parallel run on CPU (gloo)") == 2
    assert "parallel_mode != ParallelMode.DISTRIBUTED" not in result.stderr
    assert sorted(p.name for p in output.glob("checkpoint-*")) == ["checkpoint-3"]
    state = json.loads((output / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and state["train_batch_size"] == 2
    assert state["epoch"] == 0.25  # 3 steps x 2 processes x 2 rows of 48 (one process alone would be at 0.125)
    assert result.stderr.count("Training data: 48/48 examples kept") == 2  # both ranks ran
    model = C2CForCausalLM.from_pretrained(output)
    assert {p.dtype for p in model.fuser.parameters()} == {torch.float32}


def test_cpu_processes_default_to_use_cpu_only_when_launched_without_an_accelerator(monkeypatch):
    """`c2c-hf train` turns `--use-cpu` on by default for several launched processes on a machine with no
    accelerator, and only there (one process, or an accelerator present, keep the stock default)."""
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not cpu_processes_launched()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not cpu_processes_launched()
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cpu_processes_launched()
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    assert not cpu_processes_launched()


def test_pair_with_different_tokenizers_uses_a_stored_token_map(tmp_path):
    receiver, sharer = build(receiver_config(), 0), build(sharer_configs()["qwen2"], 2)
    receiver_tokenizer, sharer_tokenizer = word_tokenizer(WORDS), word_tokenizer(WORDS[::-1])  # other ids
    with pytest.raises(ValueError, match="tokenizers differ but token alignment is off"):
        C2CForCausalLM.from_base_models(receiver, sharer, receiver_tokenizer, sharer_tokenizer, token_alignment=None)
    model = C2CForCausalLM.from_base_models(receiver, sharer, receiver_tokenizer, sharer_tokenizer, fuser_hidden_size=16)
    assert model.config.token_alignment == "longest" and model.config.token_alignment_coverage == 1.0
    text = "what is the color of paris"
    ids = receiver_tokenizer(text, return_tensors="pt").input_ids
    seen = []
    model.sharer.base_model.register_forward_hook(lambda m, a, kw, o: seen.append(kw["input_ids"]), with_kwargs=True)
    with torch.no_grad():
        model.eval()(ids)
    assert seen[0].tolist() == sharer_tokenizer(text, return_tensors="pt").input_ids[:, :-1].tolist()
    model.save_pretrained(tmp_path / "c2c")
    # the map travels in the checkpoint: the reloaded model maps the same way
    reloaded = C2CForCausalLM.from_pretrained(tmp_path / "c2c", receiver=receiver, sharer=sharer)
    assert torch.equal(reloaded.fuser.token_map, model.fuser.token_map)
