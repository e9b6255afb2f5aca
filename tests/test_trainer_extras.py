"""The stock `Trainer` options that read the model's logits: label smoothing and `compute_metrics` see the response
positions (the kept logits), equal to hand computations; and gradient checkpointing trains the same fuser."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_training import make_model, training_args, uneven_features

from c2c_hf.data import IGNORE_INDEX, C2CDataCollator
from c2c_hf.training import make_trainer

SMOOTHING = 0.1


def varied_features(n: int, seed: int) -> list[dict]:
    """Prompts of 4-7 tokens and responses of 1-3 tokens: batches pad both sides, evaluation batches differ in width."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        prompt = torch.randint(10, 90, (4 + i % 4,), generator=generator).tolist()
        response = torch.randint(10, 90, (1 + i % 3,), generator=generator).tolist()
        rows.append(
            {
                "input_ids": prompt + response,
                "labels": [IGNORE_INDEX] * len(prompt) + response,
                "fuse_length": len(prompt) - 1,
            }
        )
    return rows


def hand_smoothed_loss(labels: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Sum over supervised tokens of (1-e) * -log p(label) + e * mean over the vocabulary of -log p, and their count.
    `labels` `(B, L)` cover every input column; `logits` `(B, K, V)` the last K, column c predicting label c + 1."""
    offset = labels.shape[1] - logits.shape[1]
    total, count = torch.zeros((), dtype=torch.float64), 0
    for row, column in (labels != IGNORE_INDEX).nonzero().tolist():
        log_probs = logits[row, column - 1 - offset].double().log_softmax(-1)
        total += (1 - SMOOTHING) * -log_probs[labels[row, column]] + SMOOTHING * -log_probs.mean()
        count += 1
    return total, count


def capture_forwards(model) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(labels, logits) of every forward of `model` from now on."""
    seen = []
    model.register_forward_hook(
        lambda module, args, kwargs, output: seen.append((kwargs["labels"].detach(), output.logits.detach())),
        with_kwargs=True,
    )
    return seen


@pytest.mark.parametrize("accumulation", [1, 2])
def test_label_smoothing_trains_on_the_response_tokens(tmp_path, accumulation):
    model = make_model(fuser_hidden_size=16)
    forwards = capture_forwards(model)
    args = training_args(
        tmp_path, max_steps=1, per_device_train_batch_size=6 // accumulation, gradient_accumulation_steps=accumulation,
        label_smoothing_factor=SMOOTHING,
    )  # fmt: skip
    result = make_trainer(model, args, uneven_features(6, seed=0), C2CDataCollator(pad_token_id=0)).train()
    assert len(forwards) == accumulation
    sums = [hand_smoothed_loss(labels, logits) for labels, logits in forwards]
    expected = sum(total for total, _ in sums) / sum(count for _, count in sums)  # a mean over all response tokens
    assert result.training_loss == pytest.approx(expected.item(), abs=1e-5)


def test_label_smoothing_in_evaluation_equals_a_hand_computation(tmp_path):
    model = make_model(fuser_hidden_size=16)
    features = varied_features(5, seed=1)
    args = training_args(tmp_path, per_device_eval_batch_size=5, label_smoothing_factor=SMOOTHING)
    metrics = make_trainer(model, args, None, C2CDataCollator(pad_token_id=0), eval_dataset=features).evaluate()
    batch = C2CDataCollator(pad_token_id=0)(features)
    with torch.no_grad():
        logits = model.eval()(**batch).logits
    total, count = hand_smoothed_loss(batch["labels"], logits)
    assert metrics["eval_loss"] == pytest.approx((total / count).item(), abs=1e-5)


def test_compute_metrics_gets_predictions_aligned_with_the_response_labels(tmp_path):
    """As for any causal LM, `predictions[:, t]` predicts `labels[:, t + 1]`; across evaluation batches of different
    widths, each row's supervised labels are its response and the predictions there are a lone forward's argmax."""
    model = make_model(fuser_hidden_size=16)
    features = varied_features(7, seed=2)
    seen = {}

    def token_accuracy(prediction) -> dict:
        seen["predictions"], seen["labels"] = prediction.predictions, prediction.label_ids
        supervised = prediction.label_ids[:, 1:] != IGNORE_INDEX
        right = prediction.predictions[:, :-1] == prediction.label_ids[:, 1:]
        return {"token_accuracy": float(right[supervised].mean())}

    args = training_args(tmp_path, per_device_eval_batch_size=3)
    trainer = make_trainer(
        model, args, None, C2CDataCollator(pad_token_id=0), eval_dataset=features, compute_metrics=token_accuracy,
        preprocess_logits_for_metrics=lambda logits, labels: logits.argmax(-1),
    )  # fmt: skip
    metrics = trainer.evaluate()
    predictions, labels = seen["predictions"], seen["labels"]
    assert predictions.shape == labels.shape  # (7, widest response + 1)
    model.eval()
    right = []
    for row, feature in enumerate(features):
        response = [token for token in feature["labels"] if token != IGNORE_INDEX]
        supervised = np.flatnonzero(labels[row] != IGNORE_INDEX)
        assert labels[row, supervised].tolist() == response
        with torch.no_grad():  # the row alone: logits of the last prompt token and the response
            alone = model(**C2CDataCollator(pad_token_id=0)([feature])).logits[0].argmax(-1)
        assert predictions[row, supervised - 1].tolist() == alone[:-1].tolist()
        right += (alone[:-1] == torch.tensor(response)).tolist()
    assert metrics["eval_token_accuracy"] == pytest.approx(sum(right) / len(right))


def saved_bytes(model, batch: dict) -> tuple[int, int]:
    """Bytes of the tensors a training forward keeps for its backward (a checkpointed region keeps none): in all,
    and those kept while the fuser runs."""
    total, in_fuser, running = 0, 0, False

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total, in_fuser
        total += tensor.numel() * tensor.element_size()
        in_fuser += tensor.numel() * tensor.element_size() if running else 0
        return tensor

    def set_running(value: bool):
        def hook(*_) -> None:
            nonlocal running
            running = value

        return hook

    hooks = [
        model.fuser.register_forward_pre_hook(set_running(True)),
        model.fuser.register_forward_hook(set_running(False)),
    ]
    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(**batch)
    for hook in hooks:
        hook.remove()
    return total, in_fuser


def loss_and_grads(model, batch: dict, seed: int) -> tuple[float, dict[str, torch.Tensor]]:
    """One training forward and backward from the RNG state `seed` (the relaxed gates sample noise); the gradients
    of every trainable parameter (the fuser's, a receiver LoRA's)."""
    model.train().zero_grad()
    torch.manual_seed(seed)
    loss = model(**batch).loss
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("receiver_lora", [False, True])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(receiver_lora):
    plain, checkpointed = make_model(fuser_hidden_size=16), make_model(fuser_hidden_size=16)
    if receiver_lora:
        for model in (plain, checkpointed):
            torch.manual_seed(0)
            model.add_receiver_lora(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    with pytest.warns(FutureWarning):  # transformers 5 renamed it activation_checkpointing_enable; both work
        checkpointed.gradient_checkpointing_enable()
    assert checkpointed.is_gradient_checkpointing and not plain.is_gradient_checkpointing
    batch = C2CDataCollator(pad_token_id=0)(uneven_features(6, seed=3))
    (plain_total, plain_fuser), (checkpointed_total, checkpointed_fuser) = (
        saved_bytes(plain, batch),
        saved_bytes(checkpointed, batch),
    )
    assert plain_fuser > 0.2 * plain_total and checkpointed_fuser == 0  # the fuser's activations: recomputed, not kept
    assert checkpointed_total == plain_total - plain_fuser
    expected_loss, expected_grads = loss_and_grads(plain, batch, seed=5)
    loss, grads = loss_and_grads(checkpointed, batch, seed=5)
    assert loss == pytest.approx(expected_loss, abs=1e-5)
    assert grads.keys() == expected_grads.keys()
    assert any(".lora_" in name for name in grads) == receiver_lora and any(n.startswith("fuser.") for n in grads)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], atol=1e-5, rtol=0, msg=name)
    checkpointed.gradient_checkpointing_disable()
    assert not checkpointed.is_gradient_checkpointing
    assert saved_bytes(checkpointed, batch) == saved_bytes(plain, batch)


def test_trainer_with_gradient_checkpointing_trains_the_same_fuser(tmp_path):
    fusers = []
    for checkpointing in (False, True):
        model = make_model(fuser_hidden_size=16)
        args = training_args(tmp_path / str(checkpointing), max_steps=3, per_device_train_batch_size=4,
                             gradient_checkpointing=checkpointing)  # fmt: skip
        make_trainer(model, args, uneven_features(12, seed=4), C2CDataCollator(pad_token_id=0)).train()
        assert model.is_gradient_checkpointing == checkpointing
        fusers.append(model.fuser.state_dict())
    for name, weight in fusers[1].items():
        torch.testing.assert_close(weight, fusers[0][name], atol=1e-5, rtol=0, msg=name)


def test_reentrant_checkpointing_is_refused():
    model = make_model(fuser_hidden_size=16)
    with pytest.raises(ValueError) as error:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})
    assert str(error.value) == (
        "C2CForCausalLM checkpoints its fuser, whose inputs (the frozen bases' KV) need no gradient: with "
        "use_reentrant=True the fuser would get none. Pass use_reentrant=False (the default)."
    )
    assert not model.is_gradient_checkpointing
    # checkpoint options without use_reentrant (torch would then pick the reentrant variant) give the non-reentrant one
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"preserve_rng_state": True})
    _, grads = loss_and_grads(model, C2CDataCollator(pad_token_id=0)(uneven_features(3, seed=6)), seed=0)
    assert {name for name in grads if name.startswith("fuser.")} == {
        n for n, _ in model.fuser.named_parameters(prefix="fuser")
    }
