"""Fuser training with the stock Trainer: learning, gate annealing, exact resume, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import set_gates
from datasets import Dataset
from tiny_models import build, receiver_config, sharer_configs
from transformers import TrainerCallback, TrainingArguments

from c2c_hf import C2CForCausalLM
from c2c_hf.data import C2CDataCollator
from c2c_hf.training import SharerCacheMemo, check_resume_checkpoint, make_trainer

SECRETS = list(range(40, 50))  # the answer is one of 10 tokens: ln(10) nats without information
MASK, QUERY, SECRET_COLUMN, PROMPT_LEN = 6, 7, 3, 8


def secret_features(n: int, seed: int) -> Dataset:
    """Prompts with a secret token at column 3; the response is that secret. Only the sharer will see it."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        prompt = torch.randint(10, 40, (PROMPT_LEN,), generator=generator)
        prompt[0], prompt[-1] = 1, QUERY
        secret = SECRETS[int(torch.randint(0, len(SECRETS), (1,), generator=generator))]
        prompt[SECRET_COLUMN] = secret
        rows.append(
            {"input_ids": [*prompt.tolist(), secret], "labels": [-100] * PROMPT_LEN + [secret], "fuse_length": PROMPT_LEN - 1}
        )
    return Dataset.from_list(rows)


class SharerSeesSecret(C2CDataCollator):
    """The receiver's copy of the prompt has the secret masked; the sharer reads the original tokens."""

    def __call__(self, features):
        batch = super().__call__(features)
        batch["sharer_input_ids"] = batch["input_ids"].clone()
        batch["input_ids"][:, SECRET_COLUMN] = MASK  # all prompts have one length: column 3 is the secret
        return batch


def training_args(tmp_path, **overrides) -> TrainingArguments:
    defaults = dict(
        output_dir=str(tmp_path), per_device_train_batch_size=16, learning_rate=3e-3, lr_scheduler_type="constant",
        max_steps=10, save_strategy="no", logging_steps=50, report_to=[], seed=0, data_seed=0, use_cpu=True,
        disable_tqdm=True, dataloader_num_workers=0, weight_decay=0.01, max_grad_norm=1.0,
    )
    return TrainingArguments(**{**defaults, **overrides})


def make_model(fuser_hidden_size: int = 64, seed: int = 0, layer_map: str | list[int] = "terminal") -> C2CForCausalLM:
    torch.manual_seed(seed)
    config = receiver_config()
    # With the default 0.02 init a random receiver's logits span ~1 nat and can never be confident (loss >= ~3.3
    # on this task whatever its cache holds); a wider init gives it the sharp output layer of a trained LM.
    config.initializer_range = 0.2
    receiver = build(config, seed=0)
    sharer = build(sharer_configs()["llama"], seed=1)
    return C2CForCausalLM.from_base_models(
        receiver, sharer, fuser_hidden_size=fuser_hidden_size, fuser_dropout=0.0, gate_temperature_end=0.05,
        layer_map=layer_map,
    )  # fmt: skip


def response_loss(model: C2CForCausalLM, features: Dataset) -> float:
    batch = SharerSeesSecret(pad_token_id=0)(list(features))
    model.eval()
    with torch.no_grad():
        return model(**batch).loss.item()


def test_trained_fuser_transfers_the_sharers_information(tmp_path):
    model = make_model()
    train, held_out = secret_features(2048, seed=0), secret_features(256, seed=1)
    args = training_args(tmp_path, max_steps=300, per_device_train_batch_size=32)
    make_trainer(model, args, train, SharerSeesSecret(pad_token_id=0)).train()

    c2c_loss = response_loss(model, held_out)
    set_gates(model, -1.0)
    closed_loss = response_loss(model, held_out)
    batch = SharerSeesSecret(pad_token_id=0)(list(held_out))
    with torch.no_grad():
        logits = model.receiver(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    receiver_loss = torch.nn.functional.cross_entropy(logits[:, PROMPT_LEN - 1], batch["labels"][:, PROMPT_LEN]).item()
    print(f"held-out response loss: receiver alone {receiver_loss:.3f}, C2C {c2c_loss:.3f}, no-information floor {math.log(10):.3f}")
    assert abs(closed_loss - receiver_loss) < 1e-5
    # Below ln(10) only with the secret, which only the sharer saw (measured: C2C 0.036, receiver alone 6.13).
    assert c2c_loss < 0.5 < math.log(10)
    assert c2c_loss < receiver_loss - 5.0


def test_gate_temperature_is_annealed_over_training(tmp_path):
    model = make_model(fuser_hidden_size=16)
    seen = []

    class Record(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            seen.append(model.fuser.gate_temperature)

    make_trainer(model, training_args(tmp_path, max_steps=4), secret_features(64, 0), SharerSeesSecret(0), callbacks=[Record()]).train()
    expected = [model.config.gate_temperature_at(step / 4) for step in range(4)]
    assert seen == pytest.approx(expected) and seen[0] == 1.0 and seen[-1] < seen[0]


class StopAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_save, control.should_training_stop = True, True


def test_resume_continues_exactly(tmp_path):
    """2N steps in one run == N steps, stop, resume for N more (fixed seeds); checkpoints hold only the fuser."""
    data = secret_features(256, seed=2)
    settings = dict(max_steps=6, gradient_accumulation_steps=2, per_device_train_batch_size=8)

    straight = make_model(fuser_hidden_size=16)
    make_trainer(straight, training_args(tmp_path / "straight", **settings), data, SharerSeesSecret(0)).train()

    first = make_model(fuser_hidden_size=16)
    make_trainer(first, training_args(tmp_path / "resumed", **settings), data, SharerSeesSecret(0), callbacks=[StopAt(3)]).train()
    checkpoint = tmp_path / "resumed" / "checkpoint-3"
    from safetensors import safe_open

    with safe_open(checkpoint / "model.safetensors", "pt") as weights:
        assert all(key.startswith("fuser.") for key in weights.keys())
    second = make_model(fuser_hidden_size=16, seed=123)  # other init: everything must come from the checkpoint
    check_resume_checkpoint(second, checkpoint)
    make_trainer(second, training_args(tmp_path / "resumed", **settings), data, SharerSeesSecret(0)).train(
        resume_from_checkpoint=str(checkpoint)
    )
    for (name, expected), actual in zip(straight.fuser.state_dict().items(), second.fuser.state_dict().values()):
        torch.testing.assert_close(actual, expected, atol=1e-6, rtol=0, msg=name)


def test_resume_from_another_pairs_checkpoint_is_refused(tmp_path):
    model = make_model(fuser_hidden_size=16)
    model.save_pretrained(tmp_path / "other")
    bigger = make_model(fuser_hidden_size=24)
    with pytest.raises(ValueError, match=r"Cannot resume from .*fuser_hidden_size: checkpoint 16 vs this model 24"):
        check_resume_checkpoint(bigger, tmp_path / "other")
    trainer = make_trainer(bigger, training_args(tmp_path / "run", max_steps=2), secret_features(32, 0), SharerSeesSecret(0))
    with pytest.raises(ValueError, match=r"This state dict does not fit this C2C model .*fuser hidden 24"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "other"))


def test_receiver_lora_trains_beside_the_fuser_and_reloads(tmp_path):
    model = make_model(fuser_hidden_size=16)
    model.receiver.save_pretrained(tmp_path / "receiver")
    model.sharer.save_pretrained(tmp_path / "sharer")
    model.config.receiver_name_or_path, model.config.sharer_name_or_path = str(tmp_path / "receiver"), str(tmp_path / "sharer")
    model.add_receiver_lora(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if n.startswith("fuser.") or ".lora_" in n}
    assert any(n.startswith("receiver.") for n in trainable)
    make_trainer(model, training_args(tmp_path / "run", max_steps=3, learning_rate=5e-2), secret_features(64, 0), SharerSeesSecret(0)).train()
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert all(p.abs().sum() > 0 for p in lora_b)  # LoRA B starts at zero: it trained

    model.save_pretrained(tmp_path / "c2c")
    from safetensors import safe_open

    with safe_open(tmp_path / "c2c" / "model.safetensors", "pt") as weights:
        keys = set(weights.keys())
    assert keys == {n for n in model.state_dict() if n.startswith("fuser.") or ".lora_" in n}
    reloaded = C2CForCausalLM.from_pretrained(tmp_path / "c2c")
    batch = SharerSeesSecret(pad_token_id=0)(list(secret_features(8, 5)))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, model(**batch).logits, atol=1e-6, rtol=0)


def test_bf16_training_keeps_the_fuser_and_gates_fp32(tmp_path):
    """bf16 bases under Trainer's bf16 autocast: the fuser trains in fp32, so gate updates far below bf16's
    resolution at 1.0 (2^-7) are kept instead of rounding away."""
    model = make_model(fuser_hidden_size=16)
    model.receiver.to(torch.bfloat16)
    model.sharer.to(torch.bfloat16)
    gate = model.fuser.layers[0].key.gate_logit
    before = gate.item()
    args = training_args(tmp_path, max_steps=3, bf16=True, learning_rate=1e-4)
    make_trainer(model, args, secret_features(64, 0), SharerSeesSecret(0)).train()
    assert {p.dtype for p in model.fuser.parameters()} == {torch.float32}
    assert model.receiver.dtype == torch.bfloat16
    assert 0 < abs(gate.item() - before) < 2**-7


def uneven_features(n: int, seed: int) -> list[dict]:
    """`secret_features` with prompts of 6-8 tokens (their first 0-2 tokens cut), so that batches are padded."""
    features = []
    for i, row in enumerate(secret_features(n, seed)):
        cut = i % 3
        features.append(
            {"input_ids": row["input_ids"][cut:], "labels": row["labels"][cut:], "fuse_length": row["fuse_length"] - cut}
        )
    return features


def count_sharer_rows(model: C2CForCausalLM) -> list[int]:
    """Rows of every sharer prefill from now on (a forward hook on the sharer's backbone)."""
    rows = []
    model.sharer.base_model.register_forward_hook(
        lambda module, args, kwargs, output: rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    return rows


@pytest.mark.parametrize("layer_map", ["terminal", [5, 5, 1, 5]])  # sharer layers 2-5 of 0-5, or only 1 and 5
def test_sharer_cache_memo_equals_running_the_sharer_and_runs_it_once_per_prompt(layer_map):
    model = make_model(fuser_hidden_size=16, layer_map=layer_map).eval()
    features = uneven_features(12, seed=3)
    memo = SharerCacheMemo(model)
    plain, memoized = C2CDataCollator(pad_token_id=0), C2CDataCollator(0, sharer_caches=memo)
    sharer_rows = count_sharer_rows(model)
    # Only new prompts are prefilled: not 4 again in the second batch, and its 5 (twice) once; the last batch is all
    # from the memo.
    for rows, new_prompts in (([0, 1, 2, 3, 4], 5), ([4, 5, 5, 6, 7, 8], 4), ([9, 10, 11], 3), ([11, 0, 6, 2], 0)):
        batch = [features[row] for row in rows]
        sharer_rows.clear()
        memo_batch = memoized(batch)
        assert sum(sharer_rows) == new_prompts and memo_batch["cache"].has_sharer_state
        with torch.no_grad():
            memo_out = model(**memo_batch)
            assert sum(sharer_rows) == new_prompts  # the forward pass fused the memo's KV without the sharer
            plain_out = model(**plain(batch))
        torch.testing.assert_close(memo_out.logits, plain_out.logits, atol=1e-5, rtol=0)
        assert abs(memo_out.loss.item() - plain_out.loss.item()) < 1e-5
    assert len(memo) == 12
    # it keeps the sharer layers the fuser reads, no others
    assert {tuple(sorted(kv)) for kv in memo.prompts.values()} == {tuple(sorted(set(model.fuser.layer_map)))}


def test_trainer_with_sharer_cache_memo_trains_the_same_fuser(tmp_path):
    """Two epochs: the same fuser as running the sharer every step, with the sharer run once per prompt."""
    features = Dataset.from_list(uneven_features(32, seed=4))
    settings = dict(max_steps=8, per_device_train_batch_size=8)
    straight = make_model(fuser_hidden_size=16)
    make_trainer(straight, training_args(tmp_path / "straight", **settings), features, C2CDataCollator(0)).train()
    memoized = make_model(fuser_hidden_size=16)
    sharer_rows = count_sharer_rows(memoized)
    collator = C2CDataCollator(0, sharer_caches=SharerCacheMemo(memoized))
    make_trainer(memoized, training_args(tmp_path / "memo", **settings), features, collator).train()
    assert sum(sharer_rows) == 32 and len(collator.sharer_caches) == 32
    for (name, expected), actual in zip(straight.fuser.state_dict().items(), memoized.fuser.state_dict().values()):
        torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0, msg=name)


def test_sharer_cache_memo_refuses_other_sharer_ids_and_worker_processes():
    model = make_model(fuser_hidden_size=16)
    memo = SharerCacheMemo(model)
    batch = SharerSeesSecret(0, sharer_caches=memo)(list(secret_features(4, seed=5)))
    with pytest.raises(ValueError, match=r"Got both sharer_input_ids and a cache that already holds the sharer's KV"):
        model(**batch)
    loader = torch.utils.data.DataLoader(uneven_features(4, 6), batch_size=2, collate_fn=C2CDataCollator(0, memo), num_workers=1)
    with pytest.raises(RuntimeError, match=r"set dataloader_num_workers=0"):
        next(iter(loader))
