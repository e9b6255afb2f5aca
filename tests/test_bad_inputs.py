"""Bad and unlucky inputs at every public entry point, one table row each: the input, then either the exception type
and the words its message must hold (the argument, the value received, what would be valid), or the warning, or the
correct result that replaces a formerly silent wrong one.

Entry points: `C2CForCausalLM.forward` / `fuse_prompt` / `generate` / `to`, `from_base_models`, `from_pretrained`,
`C2CConfig`, the data pipeline (multiple-choice parsing, `build_features`, `load_dataset_any`, `C2CDataCollator`)
and the `c2c-hf train` / `c2c-hf eval` flags.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any
from unittest import mock

import datasets
import pytest
import torch
from conftest import FUSER_KWARGS
from tiny_models import VOCAB, build, receiver_config, sharer_configs, word_tokenizer
from transformers import AutoModelForCausalLM, Qwen3Config

from c2c_hf import C2CConfig, C2CDataCollator, C2CForCausalLM, MCItem, build_features, load_dataset_any
from c2c_hf.commands import train as train_command
from c2c_hf.evaluation.command import main as eval_main
from c2c_hf.evaluation.tasks import load_benchmark

WORDS = "what is the color of red blue green sky grass".split()
FEATURE = {"input_ids": [5, 6, 7, 8], "labels": [-100, -100, 7, 8], "fuse_length": 1}


@dataclass(frozen=True)
class Case:
    """One row: `call(env)` raises `raises` with every one of `words` in its message (stderr for a usage error), or
    warns `warns` with `words` in the warning, or (neither given) returns a result for which `check(result, env)`."""

    id: str
    call: Callable[[SimpleNamespace], Any]
    raises: type[BaseException] | None = None
    words: tuple[str, ...] = ()
    warns: type[Warning] | None = None
    check: Callable[[Any, SimpleNamespace], bool] | None = None


@pytest.fixture(scope="module")
def env(receiver, sharers, tmp_path_factory) -> SimpleNamespace:
    """A C2C model over the session's tiny bases, a tokenizer, saved folders (bases, a C2C checkpoint and broken
    copies of it) and small data files."""
    root = tmp_path_factory.mktemp("bad-inputs")
    torch.manual_seed(0)
    model = C2CForCausalLM.from_base_models(receiver, sharers["qwen2"], **FUSER_KWARGS).eval()
    tokenizer = word_tokenizer(WORDS)
    for name, base in (("receiver", receiver), ("sharer", sharers["qwen2"])):
        base.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    saved = C2CForCausalLM.from_base_models(
        AutoModelForCausalLM.from_pretrained(root / "receiver"), AutoModelForCausalLM.from_pretrained(root / "sharer"),
        **FUSER_KWARGS,
    )  # fmt: skip
    saved.save_pretrained(root / "c2c")
    broken = {
        "garbage": lambda folder: (folder / "model.safetensors").write_bytes(b"\x00not safetensors" * 8),
        "truncated": lambda folder: (folder / "model.safetensors").write_bytes(
            (root / "c2c" / "model.safetensors").read_bytes()[:300]
        ),
        "pickle-only": lambda folder: (
            torch.save(saved.fuser.state_dict(), folder / "pytorch_model.bin"), (folder / "model.safetensors").unlink()
        ),
        "no-text-config": lambda folder: edit_config(folder, lambda config: config.pop("text_config")),
        "nan-gate": lambda folder: edit_config(folder, lambda config: config.update(gate_init_logit=float("nan"))),
        "bad-json": lambda folder: (folder / "config.json").write_text("{not json"),
    }
    for name, damage in broken.items():
        shutil.copytree(root / "c2c", root / name)
        damage(root / name)
    (root / "empty.jsonl").write_text("")
    (root / "bad.jsonl").write_text('{"messages": [\n')
    chat = [{"role": "user", "content": "what is the color of grass"}, {"role": "assistant", "content": "green"}]
    (root / "chat.jsonl").write_text("\n".join(json.dumps({"messages": chat}) for _ in range(4)) + "\n")
    arc = [{"query": "what is the color of sky", "choices": ["red", "blue"], "gold": 1}] * 2
    (root / "arc.jsonl").write_text("\n".join(json.dumps(row) for row in arc) + "\n")
    (root / "arc-string-choices.jsonl").write_text(json.dumps({**arc[0], "choices": "red blue"}) + "\n")

    def fresh() -> C2CForCausalLM:
        torch.manual_seed(1)
        return C2CForCausalLM.from_base_models(receiver, sharers["qwen2"], **FUSER_KWARGS).eval()

    ids = torch.tensor([[5, 17, 42, 8, 77, 23, 61, 9], [44, 3, 90, 15, 7, 66, 21, 50]])
    return SimpleNamespace(model=model, fresh=fresh, ids=ids, tokenizer=tokenizer, root=root, receiver=receiver, sharers=sharers)


def edit_config(folder, change: Callable[[dict], Any]) -> None:
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))


# --------------------------------------------------------------------------- helpers the rows call


def forward(env, ids=None, **kwargs):
    with torch.no_grad():
        return env.model(env.ids if ids is None else ids, **kwargs)


def mask(*rows: list[int]) -> torch.Tensor:
    return torch.tensor(rows)


def same_logits(result, env, **reference_kwargs) -> bool:
    return torch.equal(result.logits, forward(env, **reference_kwargs).logits)


def response_labels(env, prompt_lengths=(5, 5)) -> torch.Tensor:
    """Labels supervising each row's tokens after its prompt (-100 on the prompt)."""
    labels = env.ids.clone()
    for row, prompt in enumerate(prompt_lengths):
        labels[row, :prompt] = -100
    return labels


def inferred_fuse_length_trains_the_fuser(env) -> bool:
    """`labels` without `fuse_length`: the loss equals the one with the documented split (first supervised label - 1)
    and gives the fuser a non-zero gradient."""
    model, labels = env.fresh(), response_labels(env)
    loss = model(env.ids, labels=labels).loss
    loss.backward()
    gradient = sum(p.grad.abs().sum() for p in model.fuser.parameters() if p.grad is not None)
    with torch.no_grad():
        explicit = model(env.ids, labels=labels, fuse_length=4).loss
    return bool(gradient > 0) and torch.equal(loss.detach(), explicit)


def decode_step(env, mask_length: int, token: int = 5):
    """One decoding step after the prompt was fused, with an attention mask of `mask_length` columns."""
    with torch.no_grad():
        prompt = env.model(env.ids, use_cache=True)
        step = torch.full((2, 1), token)
        return env.model(step, cache=prompt.cache, attention_mask=torch.ones(2, mask_length, dtype=torch.long))


def cast_to_bfloat16(env):
    model = C2CForCausalLM.from_base_models(
        build(receiver_config(), seed=0), build(sharer_configs()["qwen2"], seed=1), **FUSER_KWARGS
    ).eval()
    model.to(torch.bfloat16)
    with torch.no_grad():
        return model, model(env.ids).logits


def fuser_stays_float32(result, env) -> bool:
    model, logits = result
    return (
        {p.dtype for p in model.fuser.parameters()} == {torch.float32}
        and model.receiver.dtype == model.sharer.dtype == torch.bfloat16
        and logits.dtype == torch.bfloat16
        and bool(torch.isfinite(logits.float()).all())
    )


def config(**kwargs) -> C2CConfig:
    return C2CConfig(text_config=receiver_config(), sharer_config=sharer_configs()["qwen2"], **kwargs)


def base_config(name: str, **changes) -> dict:
    configs = {"text_config": receiver_config(), "sharer_config": sharer_configs()["qwen2"]}
    for key, value in changes.items():
        setattr(configs[name], key, value)
    return configs


def mc_features(env, choices, answer: Any = 0, question: Any = "what is the color of sky"):
    rows = [{"question": question, "choices": choices, "answer": answer}]
    return build_features(datasets.Dataset.from_list(rows), env.tokenizer)[0]


def same_features_as_list(result, env) -> bool:
    return result[0] == mc_features(env, ["red", "blue"], answer=1)[0]


def collate(env, **changes):
    return C2CDataCollator(pad_token_id=0)([{**FEATURE, **changes}])


def train_argv(env, *extra: str) -> list[str]:
    return [
        "--receiver", str(env.root / "receiver"), "--sharer", str(env.root / "sharer"), "--dataset",
        str(env.root / "chat.jsonl"), "--output_dir", str(env.root / "train-out"), "--fuser_hidden_size", "16",
        "--report_to", "none", "--use_cpu", *extra,
    ]  # fmt: skip


def fuser_built_by_train(env, seed: int, rng_state: int) -> dict[str, torch.Tensor]:
    """The fresh fuser `c2c-hf train --seed seed` builds (the run stops where the Trainer would start), after the
    global RNG was moved to `rng_state`."""

    class Built(Exception):
        pass

    def stop(model, *args, **kwargs):
        raise Built({k: v.clone() for k, v in model.fuser.state_dict().items()})

    torch.manual_seed(rng_state)
    with mock.patch.object(train_command, "make_trainer", stop), pytest.raises(Built) as built:
        train_command.main(train_argv(env, "--seed", str(seed)))
    return built.value.args[0]


def seed_controls_the_fuser(env) -> bool:
    first, again, other = (fuser_built_by_train(env, seed, state) for seed, state in ((3, 10), (3, 20), (4, 10)))
    same = all(torch.equal(first[k], again[k]) for k in first)
    return same and not all(torch.equal(first[k], other[k]) for k in first)


def eval_argv(env, benchmark_file: str, *extra: str) -> list[str]:
    return [
        "--receiver", str(env.root / "receiver"), "--sharer", str(env.root / "sharer"), "--benchmarks", "arc_challenge",
        "--benchmark-paths", f"arc_challenge={env.root / benchmark_file}", "--output", str(env.root / "eval-out"),
        *extra,
    ]  # fmt: skip


def from_pretrained(env, folder: str, **kwargs):
    return C2CForCausalLM.from_pretrained(env.root / folder, **kwargs)


# --------------------------------------------------------------------------- the table

V = f"[0, {VOCAB})"
CASES = [
    # ---- forward: token ids
    Case("ids-empty-length", lambda e: forward(e, torch.zeros(2, 0, dtype=torch.long)), ValueError, ("input_ids is empty", "(2, 0)")),
    Case("ids-empty-batch", lambda e: forward(e, torch.zeros(0, 8, dtype=torch.long)), ValueError, ("input_ids is empty", "(0, 8)")),
    Case("ids-1d", lambda e: forward(e, e.ids[0]), ValueError, ("input_ids must be 2-D", "(8,)", "unsqueeze(0)")),
    Case("ids-3d", lambda e: forward(e, e.ids[None]), ValueError, ("input_ids must be 2-D", "(1, 2, 8)")),
    Case("ids-float", lambda e: forward(e, e.ids.float()), TypeError, ("input_ids must hold integer token ids", "torch.float32")),
    Case("ids-list", lambda e: forward(e, e.ids.tolist()), TypeError, ("input_ids must be a torch.LongTensor", "got list")),
    Case("ids-negative", lambda e: forward(e, e.ids - 10), ValueError, ("input_ids holds token id -5", "(row 0, position 0)", V)),
    Case("ids-past-vocab", lambda e: forward(e, e.ids + 20), ValueError, ("input_ids holds token id 97", V)),
    Case("ids-ignore-index", lambda e: forward(e, e.ids.masked_fill(e.ids == 8, -100)), ValueError, ("token id -100", V)),
    Case("ids-int32", lambda e: forward(e, e.ids.int()), check=lambda r, e: same_logits(r, e)),
    # ---- forward: attention mask
    Case("mask-short", lambda e: forward(e, attention_mask=torch.ones(2, 5, dtype=torch.long)), ValueError,
         ("attention_mask has shape (2, 5) but must have shape (2, 8)",)),
    Case("mask-batch", lambda e: forward(e, attention_mask=torch.ones(3, 8, dtype=torch.long)), ValueError,
         ("attention_mask has shape (3, 8) but must have shape (2, 8)",)),
    Case("mask-additive", lambda e: forward(e, attention_mask=torch.zeros(2, 8).index_fill_(1, torch.tensor([0]), -torch.inf)),
         ValueError, ("attention_mask must hold only 0 (padding) and 1 (token)", "-inf", "additive")),
    Case("mask-twos", lambda e: forward(e, attention_mask=torch.full((2, 8), 2)), ValueError, ("got values [2]", "dtype torch.int64")),
    Case("mask-all-zero-row", lambda e: forward(e, attention_mask=mask([1] * 8, [0] * 8)), ValueError,
         ("attention_mask row 1 is all zeros", "Drop empty rows")),
    Case("mask-right-padded", lambda e: forward(e, attention_mask=mask([1] * 8, [1] * 5 + [0] * 3)), ValueError,
         ("attention_mask row 1 has padding after a token within the prompt", "padding_side = 'left'")),
    Case("mask-last-prompt-token-padding", lambda e: forward(e, attention_mask=mask([1] * 8, [0] * 3 + [1] * 2 + [0] * 3), fuse_length=6),
         ValueError, ("row 1 has padding after a token within the prompt",)),
    Case("mask-list", lambda e: forward(e, attention_mask=[[1] * 8] * 2), TypeError, ("attention_mask must be a tensor", "list")),
    Case("mask-float-01", lambda e: forward(e, attention_mask=mask([0, 0] + [1] * 6, [1] * 8).float()),
         check=lambda r, e: same_logits(r, e, attention_mask=mask([0, 0] + [1] * 6, [1] * 8))),
    Case("mask-bool", lambda e: forward(e, attention_mask=mask([0, 0] + [1] * 6, [1] * 8).bool()),
         check=lambda r, e: same_logits(r, e, attention_mask=mask([0, 0] + [1] * 6, [1] * 8))),
    Case("decode-mask-length", lambda e: decode_step(e, 8), ValueError,
         ("attention_mask has shape (2, 8) but must have shape (2, 9)", "the 8 cached tokens followed by input_ids")),
    Case("decode-ids-past-vocab", lambda e: decode_step(e, 9, token=VOCAB), ValueError, (f"input_ids holds token id {VOCAB}",)),
    # ---- forward: fuse_length
    Case("fuse-length-float", lambda e: forward(e, fuse_length=3.5), TypeError, ("fuse_length must be an int", "float 3.5")),
    Case("fuse-length-str", lambda e: forward(e, fuse_length="3"), TypeError, ("fuse_length must be an int", "str '3'")),
    Case("fuse-length-bool", lambda e: forward(e, fuse_length=True), TypeError, ("fuse_length must be an int", "bool True")),
    Case("fuse-length-negative", lambda e: forward(e, fuse_length=-1), ValueError, ("fuse_length=-1 is out of range",)),
    Case("fuse-length-past-end", lambda e: forward(e, fuse_length=9), ValueError, ("fuse_length=9 is out of range for a sequence of 8",)),
    Case("fuse-length-float-tensor", lambda e: forward(e, fuse_length=torch.tensor([3.0, 3.0])), TypeError,
         ("fuse_length must hold integers", "torch.float32")),
    Case("fuse-length-rows", lambda e: forward(e, fuse_length=torch.tensor([3, 3, 3])), ValueError,
         ("shape () or (2,)", "got shape (3,)")),
    Case("fuse-length-2d", lambda e: forward(e, fuse_length=torch.tensor([[3], [3]])), ValueError, ("got shape (2, 1)",)),
    Case("fuse-length-0d-tensor", lambda e: forward(e, fuse_length=torch.tensor(3)), check=lambda r, e: same_logits(r, e, fuse_length=3)),
    # ---- forward: labels
    Case("labels-equal-ids-no-fuse-length", lambda e: forward(e, labels=e.ids), ValueError,
         ("labels supervise position 1", "Set the prompt's labels to -100", "pass fuse_length")),
    Case("labels-infer-fuse-length", inferred_fuse_length_trains_the_fuser, check=lambda r, e: r),
    Case("labels-rows-start-apart", lambda e: forward(e, labels=response_labels(e, (4, 6))), ValueError,
         ("first supervised labels are in different columns [4, 6]", "left-pad the prompts")),
    Case("labels-all-ignored", lambda e: forward(e, labels=torch.full_like(e.ids, -100), fuse_length=3), ValueError,
         ("labels supervise no position",)),
    Case("labels-nothing-fused", lambda e: forward(e, labels=response_labels(e), fuse_length=0), ValueError,
         ("fuse_length=0", "gradient is exactly zero")),
    Case("labels-only-before-fusion", lambda e: forward(e, labels=e.ids, fuse_length=7), ValueError,
         ("labels supervise only positions up to 7", "exactly zero")),
    Case("labels-shape", lambda e: forward(e, labels=e.ids[:, :5], fuse_length=3), ValueError,
         ("labels has shape (2, 5) but input_ids has (2, 8)",)),
    Case("labels-batch", lambda e: forward(e, labels=e.ids[:1], fuse_length=3), ValueError,
         ("labels has shape (1, 8) but input_ids has (2, 8)",)),
    Case("labels-float", lambda e: forward(e, labels=e.ids.float(), fuse_length=3), TypeError,
         ("labels must be an integer", "torch.float32")),
    Case("labels-past-vocab", lambda e: forward(e, labels=e.ids + 200, fuse_length=3), ValueError,
         ("labels holds 205", "-100 (ignored)")),
    # ---- forward: other arguments
    Case("logits-to-keep-negative", lambda e: forward(e, logits_to_keep=-1), ValueError, ("logits_to_keep must be an int", "-1")),
    Case("position-ids-shape", lambda e: forward(e, position_ids=torch.arange(5)[None]), ValueError,
         ("position_ids must have shape (2, 8) or (1, 8)", "(1, 5)")),
    Case("sharer-ids-1d", lambda e: forward(e, sharer_input_ids=e.ids[0]), ValueError, ("sharer_input_ids must be 2-D",)),
    Case("sharer-ids-batch", lambda e: forward(e, sharer_input_ids=e.ids[:1]), ValueError,
         ("sharer_input_ids has shape (1, 8) but input_ids has (2, 8)",)),
    Case("sharer-ids-past-vocab", lambda e: forward(e, sharer_input_ids=e.ids + 200), ValueError,
         ("sharer_input_ids holds token id 205", V)),
    Case("sharer-ids-float", lambda e: forward(e, sharer_input_ids=e.ids.float()), TypeError, ("sharer_input_ids must hold integer",)),
    Case("sharer-mask-shape", lambda e: forward(e, sharer_input_ids=e.ids, sharer_attention_mask=torch.ones(2, 3, dtype=torch.long)),
         ValueError, ("sharer_attention_mask has shape (2, 3) but must have shape (2, 8)",)),
    # ---- fuse_prompt and generate
    Case("fuse-prompt-1d", lambda e: e.model.fuse_prompt(e.ids[0]), ValueError, ("input_ids must be 2-D", "(8,)")),
    Case("fuse-prompt-right-padded", lambda e: e.model.fuse_prompt(e.ids, mask([1] * 8, [1] * 6 + [0] * 2)), ValueError,
         ("row 1 has padding after a token",)),
    Case("fuse-prompt-past-vocab", lambda e: e.model.fuse_prompt(e.ids + 100), ValueError, ("outside the vocabulary",)),
    Case("generate-1d", lambda e: e.model.generate(e.ids[0], max_new_tokens=2), ValueError, ("input_ids must be 2-D", "unsqueeze(0)")),
    Case("generate-empty", lambda e: e.model.generate(torch.zeros(1, 0, dtype=torch.long), max_new_tokens=2), ValueError,
         ("input_ids is empty",)),
    Case("generate-float", lambda e: e.model.generate(e.ids.float(), max_new_tokens=2), TypeError, ("integer token ids",)),
    Case("generate-past-vocab", lambda e: e.model.generate(e.ids + 100, max_new_tokens=2), ValueError, ("token id 105", V)),
    Case("generate-right-padded", lambda e: e.model.generate(e.ids, attention_mask=mask([1] * 8, [1] * 5 + [0] * 3), max_new_tokens=2),
         ValueError, ("row 1 has padding after a token within the prompt", "padding_side = 'left'")),
    Case("generate-all-zero-row", lambda e: e.model.generate(e.ids, attention_mask=mask([1] * 8, [0] * 8), max_new_tokens=2),
         ValueError, ("attention_mask row 1 is all zeros",)),
    Case("generate-mask-shape", lambda e: e.model.generate(e.ids, attention_mask=torch.ones(2, 5, dtype=torch.long), max_new_tokens=2),
         ValueError, ("attention_mask has shape (2, 5) but must have shape (2, 8)",)),
    # ---- casting the model
    Case("to-bfloat16", cast_to_bfloat16, warns=UserWarning, words=("fuser stays torch.float32", "model.fuser.to(torch.bfloat16)"),
         check=fuser_stays_float32),
    # ---- from_base_models
    Case("bases-path-not-model", lambda e: C2CForCausalLM.from_base_models(str(e.root / "receiver"), e.sharers["qwen2"]), TypeError,
         ("receiver must be a loaded transformers model", "str", "AutoModelForCausalLM.from_pretrained")),
    Case("bases-no-lm-head", lambda e: C2CForCausalLM.from_base_models(e.receiver.model, e.sharers["qwen2"]), TypeError,
         ("Qwen3Model", "has no language-model head", "AutoModelForCausalLM")),
    Case("bases-setting-typo", lambda e: C2CForCausalLM.from_base_models(e.receiver, e.sharers["qwen2"], fuser_hiden_size=8), TypeError,
         ("'fuser_hiden_size'", "did you mean 'fuser_hidden_size'")),
    Case("bases-unknown-alignment", lambda e: C2CForCausalLM.from_base_models(e.receiver, e.sharers["qwen2"], token_alignment="middle"),
         ValueError, ("Unknown token_alignment 'middle'", "'longest', 'first', 'span'")),
    Case("bases-one-tokenizer", lambda e: C2CForCausalLM.from_base_models(e.receiver, e.sharers["qwen2"], receiver_tokenizer=e.tokenizer),
         ValueError, ("Only receiver_tokenizer was given", "both tokenizers")),
    Case("bases-tokenizer-type", lambda e: C2CForCausalLM.from_base_models(e.receiver, e.sharers["qwen2"], "tok", "tok"), TypeError,
         ("receiver_tokenizer must be a transformers tokenizer", "str 'tok'")),
    # ---- C2CConfig
    Case("config-gate-nan", lambda e: config(gate_init_logit=float("nan")), ValueError, ("gate_init_logit must be a finite number", "nan")),
    Case("config-gate-inf", lambda e: config(gate_init_logit=float("inf")), ValueError, ("gate_init_logit must be a finite number", "inf")),
    Case("config-gate-str", lambda e: config(gate_init_logit="1"), ValueError, ("gate_init_logit must be a finite number", "'1'")),
    Case("config-temperature-negative", lambda e: config(gate_temperature_start=-1.0), ValueError,
         ("gate_temperature_start must be positive, got -1.0",)),
    Case("config-temperature-inf", lambda e: config(gate_temperature_end=float("inf")), ValueError,
         ("gate_temperature_end must be positive, got inf",)),
    Case("config-dropout-nan", lambda e: config(fuser_dropout=float("nan")), ValueError, ("fuser_dropout must be in [0, 1), got nan",)),
    Case("config-dropout-str", lambda e: config(fuser_dropout="0.1"), ValueError, ("fuser_dropout must be in [0, 1), got '0.1'",)),
    Case("config-hidden-bool", lambda e: config(fuser_hidden_size=True), ValueError, ("fuser_hidden_size must be a positive integer, got True",)),
    Case("config-blocks-float", lambda e: config(fuser_num_blocks=2.5), ValueError, ("fuser_num_blocks must be an integer >= 2", "2.5")),
    Case("config-zero-init-str", lambda e: config(fuser_zero_init="yes"), TypeError, ("fuser_zero_init must be True or False", "'yes'")),
    Case("config-fusion-list", lambda e: config(fusion=["gated"]), ValueError, ("Unknown fusion ['gated']",)),
    Case("config-layer-map-floats", lambda e: config(layer_map=[0.5, 1, 2, 2]), ValueError,
         ("layer_map entries must be sharer layer indices (integers), got [0.5]",)),
    Case("config-layer-map-bools", lambda e: config(layer_map=[True, False, True, False]), ValueError,
         ("layer_map entries must be sharer layer indices",)),
    Case("config-layer-map-text", lambda e: config(layer_map="0,1,2,2"), ValueError, ("Unknown layer_map strategy '0,1,2,2'",)),
    Case("config-coverage", lambda e: config(token_alignment_coverage=1.5), ValueError, ("token_alignment_coverage must be a share in [0, 1]", "1.5")),
    Case("config-lora-key", lambda e: config(receiver_lora={"rank": 8}), ValueError, ("receiver_lora has unknown settings ['rank']",)),
    Case("config-lora-rank", lambda e: config(receiver_lora={"r": 0}), ValueError, ("receiver_lora['r']", "positive integer, got 0")),
    Case("config-sub-config-type", lambda e: C2CConfig(text_config=5), TypeError, ("text_config must be a config dict", "int 5")),
    Case("config-negative-layers", lambda e: C2CConfig(**base_config("text_config", num_hidden_layers=-1)), ValueError,
         ("text_config.num_hidden_layers must be a positive integer", "-1")),
    Case("config-zero-heads", lambda e: C2CConfig(**base_config("sharer_config", num_attention_heads=0)), ValueError,
         ("sharer_config.num_attention_heads must be a positive integer", "got 0")),
    Case("config-name-type", lambda e: config(receiver_name_or_path=3), TypeError, ("receiver_name_or_path must be a str", "int 3")),
    # ---- from_pretrained
    Case("load-missing-folder", lambda e: from_pretrained(e, "no-such-folder"), FileNotFoundError, ("No such folder", "no-such-folder")),
    Case("load-missing-relative", lambda e: C2CForCausalLM.from_pretrained("runs/no-such-run/checkpoint-5"), FileNotFoundError,
         ("No such folder: runs/no-such-run/checkpoint-5",)),
    Case("load-a-file", lambda e: from_pretrained(e, "c2c/config.json"), NotADirectoryError, ("config.json is a file",)),
    Case("load-folder-without-config", lambda e: from_pretrained(e, ""), FileNotFoundError, ("holds no config.json",)),
    Case("load-plain-model", lambda e: from_pretrained(e, "receiver"), ValueError, ("is not a C2C checkpoint", "model_type 'qwen3'")),
    Case("load-config-missing-key", lambda e: from_pretrained(e, "no-text-config"), ValueError, ("lacks ['text_config']",)),
    Case("load-config-nan", lambda e: from_pretrained(e, "nan-gate"), ValueError, ("gate_init_logit must be a finite number",)),
    Case("load-config-bad-json", lambda e: from_pretrained(e, "bad-json"), OSError, ("bad-json/config.json", "not a valid JSON file")),
    Case("load-corrupt-safetensors", lambda e: from_pretrained(e, "garbage"), OSError,
         ("garbage/model.safetensors", "not a valid safetensors file")),
    Case("load-truncated-safetensors", lambda e: from_pretrained(e, "truncated"), OSError,
         ("truncated/model.safetensors", "corrupt or truncated")),
    Case("load-pickle-only", lambda e: from_pretrained(e, "pickle-only"), OSError, ("model.safetensors",)),
    Case("load-config-type", lambda e: from_pretrained(e, "c2c", config=Qwen3Config()), TypeError, ("config must be a C2CConfig", "Qwen3Config")),
    Case("load-receiver-type", lambda e: from_pretrained(e, "c2c", receiver="Qwen/Qwen3-0.6B"), TypeError,
         ("receiver must be a loaded transformers model", "str")),
    # ---- data: multiple choice
    Case("mc-choices-string", lambda e: mc_features(e, "red blue"), ValueError, ("Example 0: choices is the string 'red blue'",)),
    Case("mc-choices-mapping", lambda e: mc_features(e, {"a": "red", "b": "blue"}), ValueError,
         ("choices is a mapping with keys ['a', 'b']",)),
    Case("mc-choices-arc-mapping", lambda e: mc_features(e, {"text": ["red", "blue"], "label": ["1", "2"]}, answer="2"),
         check=same_features_as_list),
    Case("mc-choices-list-text", lambda e: mc_features(e, "['red', 'blue']", answer=1), check=same_features_as_list),
    Case("mc-choice-empty", lambda e: mc_features(e, ["red", ""]), ValueError, ("every choice must be a non-empty string",)),
    Case("mc-choice-none", lambda e: mc_features(e, ["red", None]), ValueError, ("every choice must be a non-empty string", "None")),
    Case("mc-question-none", lambda e: mc_features(e, ["red", "blue"], question=None), ValueError,
         ("the question must be a non-empty string, got None",)),
    Case("mc-item-string-choices", lambda e: MCItem("x", "x/0", "q", "ABCD", 0), TypeError, ("choices must be a tuple of strings", "str 'ABCD'")),
    Case("mc-benchmark-string-choices", lambda e: load_benchmark("arc_challenge", e.root / "arc-string-choices.jsonl"), ValueError,
         ("arc-string-choices.jsonl row 0", "choices is the string 'red blue'")),
    # ---- data: datasets and files
    Case("data-all-too-long", lambda e: build_features(load_dataset_any(e.root / "chat.jsonl"), e.tokenizer, max_length=4), ValueError,
         ("No usable example", "all 4 examples are longer than max_length=4", "overflow='truncate'")),
    Case("data-empty-dataset", lambda e: build_features(datasets.Dataset.from_list([]), e.tokenizer), ValueError, ("The dataset is empty",)),
    Case("data-empty-file", lambda e: load_dataset_any(e.root / "empty.jsonl"), ValueError, ("empty.jsonl is empty",)),
    Case("data-bad-json", lambda e: load_dataset_any(e.root / "bad.jsonl"), ValueError, ("Could not read", "bad.jsonl", "json")),
    # ---- data: collator
    Case("collate-fuse-length-float", lambda e: collate(e, fuse_length=1.7), ValueError, ("fuse_length must be an int >= 1", "float 1.7")),
    Case("collate-fuse-length-negative", lambda e: collate(e, fuse_length=-1, labels=[5, 6, 7, 8]), ValueError,
         ("fuse_length must be an int >= 1", "int -1")),
    Case("collate-ids-float", lambda e: collate(e, input_ids=[5.5, 6, 7, 8]), TypeError, ("input_ids must hold integers", "5.5")),
    Case("collate-ids-nested", lambda e: collate(e, input_ids=[[5, 6, 7, 8]], labels=[[-100, -100, 7, 8]]), ValueError,
         ("one non-empty flat list", "(1, 4)")),
    Case("collate-ids-empty", lambda e: collate(e, input_ids=[], labels=[]), ValueError, ("input_ids must be one non-empty flat list",)),
    Case("collate-ids-negative", lambda e: collate(e, input_ids=[-5, 6, 7, 8]), ValueError, ("token ids must be >= 0",)),
    Case("collate-missing-key", lambda e: C2CDataCollator(pad_token_id=0)([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}]),
         ValueError, ("Feature 0 has no 'fuse_length'", "build_features")),
    Case("collate-not-a-mapping", lambda e: C2CDataCollator(pad_token_id=0)([[5, 6, 7]]), TypeError, ("Feature 0 must be a mapping",)),
    Case("collate-no-response", lambda e: collate(e, labels=[-100] * 4), ValueError, ("Feature 0 supervises no token",)),
    Case("collate-pad-none", lambda e: C2CDataCollator(pad_token_id=None), ValueError, ("pad_token_id must be a token id", "None")),
    # ---- c2c-hf train
    Case("train-layer-map-letters", lambda e: train_command.main(train_argv(e, "--layer_map", "a,b")), SystemExit,
         ("--layer_map 'a,b'", "comma-separated sharer layer indices")),
    Case("train-base-dtype", lambda e: train_command.main(train_argv(e, "--base_dtype", "float33")), SystemExit,
         ("--base_dtype", "invalid choice: 'float33'")),
    Case("train-gate-nan", lambda e: train_command.main(train_argv(e, "--gate_init_logit", "nan")), SystemExit,
         ("gate_init_logit must be a finite number",)),
    Case("train-alignment", lambda e: train_command.main(train_argv(e, "--token_alignment", "middle")), SystemExit,
         ("--token_alignment", "invalid choice: 'middle'")),
    Case("train-seed-controls-the-fuser", seed_controls_the_fuser, check=lambda r, e: r),
    # ---- c2c-hf eval
    Case("eval-limit-negative", lambda e: eval_main(eval_argv(e, "arc.jsonl", "--limit", "-1")), SystemExit,
         ("--limit", "expected a positive integer (>= 1), got -1")),
    Case("eval-limit-zero", lambda e: eval_main(eval_argv(e, "arc.jsonl", "--limit", "0")), SystemExit, ("--limit", "got 0")),
    Case("eval-batch-size-zero", lambda e: eval_main(eval_argv(e, "arc.jsonl", "--batch-size", "0")), SystemExit, ("--batch-size",)),
    Case("eval-empty-benchmark", lambda e: eval_main(eval_argv(e, "empty.jsonl")), SystemExit,
         ("benchmark arc_challenge has no items", "empty.jsonl")),
    Case("eval-missing-model", lambda e: eval_main([*eval_argv(e, "arc.jsonl")[4:], "--model", str(e.root / "no-such-c2c")]),
         FileNotFoundError, ("No such folder", "no-such-c2c")),
]  # fmt: skip


def test_the_table_is_large_and_its_ids_unique():
    assert len(CASES) >= 70
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_bad_input(case: Case, env: SimpleNamespace, capsys):
    if case.raises is not None:
        with pytest.raises(case.raises) as error:
            case.call(env)
        message = capsys.readouterr().err if isinstance(error.value, SystemExit) else str(error.value)
        if isinstance(error.value, SystemExit):
            assert error.value.code == 2  # a usage error, not a crash or a silent success
    elif case.warns is not None:
        with pytest.warns(case.warns) as record:
            result = case.call(env)
        message = " ".join(str(warning.message) for warning in record)
        assert case.check is None or case.check(result, env)
    else:
        result = case.call(env)
        assert case.check(result, env), f"{case.id}: wrong result {result!r}"
        return
    missing = [word for word in case.words if word not in message]
    assert not missing, f"{case.id}: {missing} not in the message:\n{message}"
