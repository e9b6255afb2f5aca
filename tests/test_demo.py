"""`c2c-hf demo`: the knowledge world (fast unit tests) and the quick demo end to end (C2C beats the receiver)."""

from __future__ import annotations

import copy
import json
import math
import random
from types import SimpleNamespace

import pytest
import torch

from c2c_hf.demo import (
    DemoConfig,
    main,
    receiver_examples,
    run_demo,
    sharer_examples,
    train_tokenizers,
)
from c2c_hf.demo.bases import (
    Example,
    WeightedLMCollator,
    WeightedLMLoss,
    build_receiver,
    length_buckets,
    pretrain,
)
from c2c_hf.demo.world import ATTRIBUTES, ROLES, World

SIZES = {"fuser": 12, "heldout": 6, "context": 10}
# Measured with `c2c-hf demo --quick` (seed 0, 1 thread): C2C 51.6% vs receiver alone 23.4% on the 64 held-out
# questions (a 28-point gap); the assertion keeps 13 points of slack for other CPUs' floating-point differences.
QUICK_MARGIN = 0.15


# --------------------------------------------------------------------------- the world


def test_roles_are_disjoint_and_sized():
    world = World.generate(0, SIZES)
    names = {role: set(world.names(role)) for role in ROLES}
    assert {role: len(n) for role, n in names.items()} == SIZES
    for a in ROLES:
        for b in ROLES:
            if a < b:
                assert not names[a] & names[b], (a, b)
    values = {v for vs in ATTRIBUTES.values() for v in vs}
    assert not values & set().union(*names.values())


def test_world_is_deterministic_per_seed():
    first, again, other = World.generate(3, SIZES), World.generate(3, SIZES), World.generate(4, SIZES)
    assert first.entities == again.entities
    assert first.entities != other.entities
    questions = [w.questions("heldout", random.Random("q")) for w in (first, again)]
    assert questions[0] == questions[1]


def test_questions_are_four_way_with_the_right_answer():
    world = World.generate(0, SIZES)
    items = world.questions("heldout", random.Random(0), per_fact=2)
    assert len(items) == SIZES["heldout"] * len(ATTRIBUTES) * 2
    assert len({item.id for item in items}) == len(items)
    golds = set()
    for item in items:
        name, attribute, _ = item.id.split("/")
        assert len(item.choices) == len(set(item.choices)) == 4
        assert item.choices[item.gold] == world.entity(name).value(attribute)
        assert set(item.choices) <= set(ATTRIBUTES[attribute]) and name in item.question
        assert world.entity(name).value(attribute) in world.fact_hint(item)
        golds.add(item.gold)
    assert golds == {0, 1, 2, 3}  # shuffled options


def test_training_data_respects_who_knows_what():
    world = World.generate(0, SIZES)
    receiver_tokenizer, sharer_tokenizer = train_tokenizers(world, 2000)
    receiver_text = " ".join(receiver_tokenizer.decode(e.ids) for e in receiver_examples(world, receiver_tokenizer, 300, 0))
    sharer_text = " ".join(sharer_tokenizer.decode(e.ids) for e in sharer_examples(world, sharer_tokenizer, 300, 0))
    receiver_words, sharer_words = set(receiver_text.split()), set(sharer_text.split())
    assert not receiver_words & set(world.names("fuser", "heldout"))  # the receiver never sees these people
    assert set(world.names("heldout")) <= sharer_words  # the sharer learns the held-out people...
    assert not sharer_words & set(world.names("context"))  # ...but not the context-only names
    assert "Hint" in receiver_words


def test_tokenizers_differ_but_align_one_to_one():
    from c2c_hf.alignment import build_token_map

    world = World.generate(0, SIZES)
    receiver_tokenizer, sharer_tokenizer = train_tokenizers(world, 2000)
    assert len(receiver_tokenizer) != len(sharer_tokenizer)
    assert receiver_tokenizer.get_vocab() != sharer_tokenizer.get_vocab()
    token_map = build_token_map(receiver_tokenizer, sharer_tokenizer)
    assert not token_map.is_identity and token_map.coverage == 1.0
    item = world.questions("heldout", random.Random(0))[0]
    text = receiver_tokenizer.apply_chat_template(
        [{"role": "user", "content": item.question}], tokenize=False, add_generation_prompt=True
    )
    receiver_ids = torch.tensor(receiver_tokenizer(text, add_special_tokens=False)["input_ids"])
    assert token_map.apply(receiver_ids).tolist() == sharer_tokenizer(text, add_special_tokens=False)["input_ids"]


def test_quick_config_is_smaller():
    quick, full = DemoConfig.quick_config(), DemoConfig.full()
    assert quick.quick and not full.quick
    assert quick.sharer_steps < full.sharer_steps and sum(quick.world_sizes().values()) < sum(full.world_sizes().values())


# --------------------------------------------------------------------------- base-model pretraining


def test_weighted_loss_weighs_each_predicted_token_and_ignores_padding():
    examples = [Example([3, 5, 7, 2], [1.0, 0.2, 5.0, 1.0]), Example([4, 6], [1.0, 0.5])]
    batch = WeightedLMCollator(pad_token_id=0)(examples)
    assert batch["input_ids"].tolist() == [[3, 5, 7, 2], [4, 6, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    logits = torch.randn(2, 4, 9, generator=torch.Generator().manual_seed(0))  # (B, L, V)
    loss_function = WeightedLMLoss()
    loss = loss_function(SimpleNamespace(logits=logits), batch["labels"])
    log_probs = logits.log_softmax(-1)
    # every predicted token: (row, position that predicts it, token id, its weight); padding predicts nothing
    terms = [(0, 0, 5, 0.2), (0, 1, 7, 5.0), (0, 2, 2, 1.0), (1, 0, 6, 0.5)]
    expected = sum(-weight * log_probs[row, position, token] for row, position, token, weight in terms)
    assert torch.allclose(loss, expected / sum(weight for *_, weight in terms))
    assert loss_function.step_losses == [loss.item()]


def test_trainer_pretraining_takes_the_steps_of_a_plain_loop(tmp_path):
    """`pretrain` (the stock Trainer) equals a plain loop: one pass in `length_buckets` order, AdamW with weight decay
    on every parameter, learning rate warm-up times cosine, gradients clipped at norm 1, the weighted loss."""
    world = World.generate(0, SIZES)
    tokenizer, _ = train_tokenizers(world, 2000)
    steps, batch_size, lr = 6, 4, 3e-3
    examples = receiver_examples(world, tokenizer, steps * batch_size, 0)
    model = build_receiver(tokenizer, 1)
    reference = copy.deepcopy(model)
    losses = pretrain(
        model, examples, steps=steps, batch_size=batch_size, lr=lr, pad_token_id=tokenizer.pad_token_id, seed=0,
        workdir=str(tmp_path),
    )  # fmt: skip

    optimizer = torch.optim.AdamW(reference.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)
    collate, loss_function = WeightedLMCollator(tokenizer.pad_token_id), WeightedLMLoss()
    reference.train()
    batches = length_buckets(len(examples), [len(e.ids) for e in examples], batch_size, 0)
    for step, indices in enumerate(batches):
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))
        batch = collate([examples[i] for i in indices])
        outputs = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        loss_function(outputs, batch["labels"]).backward()
        torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
    assert len(losses) == steps
    assert losses == pytest.approx(loss_function.step_losses, rel=1e-5)
    for trained, expected in zip(model.parameters(), reference.parameters()):
        assert torch.allclose(trained, expected, atol=1e-6)


# --------------------------------------------------------------------------- the quick demo end to end


@pytest.mark.slow
def test_quick_demo_transfers_knowledge(tmp_path, capsys):
    main(["--quick", "--output", str(tmp_path)])
    for name in ("results.md", "results.json", "accuracy_latency.png", "gates.png", "demo.md"):
        assert (tmp_path / name).is_file(), name
    for folder in ("c2c", "receiver", "sharer"):
        assert (tmp_path / folder / "config.json").is_file(), folder
    assert (tmp_path / "c2c" / "tokenizer.json").is_file()

    report = json.loads((tmp_path / "results.json").read_text())
    accuracy = {method: by["heldout"]["accuracy"] for method, by in report["results"].items()}
    assert set(accuracy) == {"receiver", "sharer", "t2t", "routing", "c2c", "oracle"}
    assert accuracy["c2c"] >= accuracy["receiver"] + QUICK_MARGIN, accuracy
    assert all(example["reloaded_matches_trained"] for example in report["config"]["examples"])
    assert "| c2c |" in capsys.readouterr().out


@pytest.mark.slow
def test_same_seed_gives_the_same_table(tmp_path):
    """Two runs with one seed agree on every prediction, generated text and loss (a shortened quick config)."""
    config = DemoConfig.quick_config(seed=5)
    config.sharer_steps, config.receiver_steps, config.fuser_steps, config.routing_fit_items = 40, 30, 20, 8
    config.fuser_entities, config.heldout_entities, config.context_entities = 8, 4, 8
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        first, again = (run_demo(config, tmp_path / name) for name in ("first", "again"))
    finally:
        torch.set_num_threads(threads)

    def table(report: dict) -> dict:
        return {
            method: [(p["id"], p["predicted"], p["text"]) for p in by["heldout"]["predictions"]]
            for method, by in report["results"].items()
        }

    assert table(first) == table(again)
    assert first["config"]["losses"] == again["config"]["losses"]
    assert first["config"]["models"]["fuser"]["gate_logits_kv"] == again["config"]["models"]["fuser"]["gate_logits_kv"]


def seed_report(accuracy: dict[str, float], latency: dict[str, float]) -> dict:
    return {"config": {"demo": {}}, "results": {
        m: {"heldout": {"accuracy": a, "latency_median_s": latency[m]}} for m, a in accuracy.items()}}  # fmt: skip


def test_summary_over_seeds_uses_t_intervals_of_per_seed_figures(tmp_path):
    """Three worlds: C2C 0.8 / 0.7 / 0.9 (mean 0.8, SD 0.1, half-width t(0.975, 2) * 0.1 / sqrt(3) = 0.248414)."""
    from c2c_hf.demo.seeds import write_seed_summary

    latency = {"receiver": 0.01, "t2t": 0.05, "c2c": 0.02}
    reports = {
        seed: seed_report({"receiver": 0.2, "t2t": t2t, "c2c": c2c}, latency)
        for seed, (c2c, t2t) in {0: (0.8, 0.6), 1: (0.7, 0.75), 2: (0.9, 0.6)}.items()
    }
    content = write_seed_summary(reports, tmp_path)
    c2c = content["summary"]["accuracy"]["c2c"]
    assert c2c["mean"] == pytest.approx(0.8) and c2c["sd"] == pytest.approx(0.1)
    assert c2c["t95"] == pytest.approx([0.8 - 0.248414, 0.8 + 0.248414], abs=1e-6)
    versus_t2t = content["summary"]["differences"]["c2c - t2t"]
    assert versus_t2t["per_seed"] == pytest.approx([0.2, -0.05, 0.3])
    assert content["targets"] == {
        "c2c_ge_receiver_plus_50pts": True, "c2c_above_t2t_interval_above_0": False,
        "c2c_above_t2t_every_seed": False, "c2c_sd_le_4pts": False, "c2c_latency_le_half_t2t": True,
    }  # fmt: skip
    assert {p.name for p in tmp_path.iterdir()} == {"seeds.json", "seeds.md", "seeds.png"}
    assert "| c2c | 80.0 | 70.0 | 90.0 | 80.0 [55.2, 104.8] | 10.0 |" in (tmp_path / "seeds.md").read_text()
    with pytest.raises(ValueError, match=r"needs at least two seeds, got \[0\]"):
        write_seed_summary({0: reports[0]}, tmp_path)
