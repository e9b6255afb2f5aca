"""`c2c-hf demo`: the knowledge world (fast unit tests) and the quick demo end to end (C2C beats the receiver)."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import random
from types import SimpleNamespace
from typing import ClassVar

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
from c2c_hf.demo.run import fuser_items
from c2c_hf.demo.schedule import DecayWhenLearnt
from c2c_hf.demo.world import ATTRIBUTES, COUNTRIES, ROLES, World

SIZES = {"fuser": 12, "validation": 6, "test": 6, "context": 10}
# What the quick demo shows at seed 0 with slack for other CPUs: C2C 87.5% vs receiver 31.2% of 32 test questions
# (+56.2 points, measured in docs/results/demo/quick/, where every world of five is at +56.2 or more); the target of
# +30 on every world is reported there.
QUICK_MARGIN = 0.25


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
    questions = [w.questions("test", random.Random("q")) for w in (first, again)]
    assert questions[0] == questions[1]


def test_questions_are_four_way_with_the_right_answer():
    world = World.generate(0, SIZES)
    items = world.questions("test", random.Random(0), per_fact=2)
    assert len(items) == SIZES["test"] * len(ATTRIBUTES) * 2
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
    assert not receiver_words & set(world.names("fuser", "validation", "test"))  # the receiver never sees these
    assert set(world.names("validation", "test")) <= sharer_words  # the sharer learns the evaluated people...
    assert not sharer_words & set(world.names("context"))  # ...but not the context-only names
    assert "Hint" in receiver_words


def test_country_questions_need_one_fact_of_each_model():
    """The person's city is the sharer's fact; the city's country is the receiver's (taught, consistently with the
    world's one-to-one map); the sharer never reads a country."""
    world = World.generate(0, SIZES)
    assert sorted(world.country_of.values()) == sorted(COUNTRIES)  # one country per city
    assert World.generate(1, SIZES).country_of != world.country_of  # seeded per world
    items = world.country_questions("test", random.Random(0), per_person=2)
    assert len(items) == 2 * SIZES["test"] and len({i.id for i in items}) == len(items)
    for item in items:
        person = world.entity(item.id.split("/")[0])
        assert item.choices[item.gold] == world.country_of[person.value("city")]
        assert len(set(item.choices)) == 4 and set(item.choices) <= set(COUNTRIES)
        assert world.fact_hint(item) == world.statement(person, "city")
    receiver_tokenizer, sharer_tokenizer = train_tokenizers(world, 2000)
    receiver_texts = [receiver_tokenizer.decode(e.ids) for e in receiver_examples(world, receiver_tokenizer, 400, 0)]
    sharer_text = " ".join(sharer_tokenizer.decode(e.ids) for e in sharer_examples(world, sharer_tokenizer, 300, 0))
    assert not set(sharer_text.replace(".", " ").split()) & set(COUNTRIES)
    taught = [text for text in receiver_texts if "Hint" not in text and any(c in text for c in COUNTRIES)]
    two_hop = [text for text in receiver_texts if "Hint" in text and "country" in text]
    assert taught and two_hop
    for text in taught:  # every country the receiver learns for a city is that city's
        city = next(c for c in ATTRIBUTES["city"] if c in text)
        assert world.country_of[city] in text


def test_fuser_items_add_the_configured_share_of_country_questions():
    world = World.generate(0, SIZES)
    plain = fuser_items(world, DemoConfig(fuser_questions_per_fact=2, fuser_country_share=0.0))
    assert len(plain) == SIZES["fuser"] * len(ATTRIBUTES) * 2 and not any(i.subject == "country" for i in plain)
    mixed = fuser_items(world, DemoConfig(fuser_questions_per_fact=2, fuser_country_share=0.2))
    countries = [i for i in mixed if i.subject == "country"]
    assert len(countries) == round(len(plain) * 0.25) and len(mixed) == len(plain) + len(countries)
    assert {i.id.split("/")[0] for i in mixed} <= set(world.names("fuser"))


def test_config_rejects_unknown_splits():
    with pytest.raises(ValueError, match=r"DemoConfig.splits must name one or more of \('validation', 'test'\), got \('heldout',\)"):
        DemoConfig(splits=("heldout",))
    assert DemoConfig().splits == ("test",)


def test_tokenizers_differ_but_align_one_to_one():
    from c2c_hf.alignment import build_token_map

    world = World.generate(0, SIZES)
    receiver_tokenizer, sharer_tokenizer = train_tokenizers(world, 2000)
    assert len(receiver_tokenizer) != len(sharer_tokenizer)
    assert receiver_tokenizer.get_vocab() != sharer_tokenizer.get_vocab()
    token_map = build_token_map(receiver_tokenizer, sharer_tokenizer)
    assert not token_map.is_identity and token_map.coverage == 1.0
    item = world.questions("test", random.Random(0))[0]
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

    warmup = max(1, steps // 20)
    expected_losses = plain_training_loop(
        reference, examples, tokenizer.pad_token_id, batch_size, steps,
        lambda step: lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps)),
    )  # fmt: skip
    assert len(losses) == steps
    assert losses == pytest.approx(expected_losses, rel=1e-5)
    for trained, expected in zip(model.parameters(), reference.parameters()):
        assert torch.allclose(trained, expected, atol=1e-6)


def plain_training_loop(
    model: torch.nn.Module, examples: list, pad_token_id: int, batch_size: int, steps: int, lr_at
) -> list[float]:
    """What `pretrain` should do, written out: `steps` batches in `length_buckets` order, AdamW (weight decay on every
    parameter) at learning rate `lr_at(step)`, gradients clipped at norm 1, the weighted loss; returns the losses."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr_at(0), weight_decay=0.01, betas=(0.9, 0.98))
    collate, loss_function = WeightedLMCollator(pad_token_id), WeightedLMLoss()
    model.train()
    batches = length_buckets(len(examples), [len(e.ids) for e in examples], batch_size, 0)
    for step, indices in enumerate(batches[:steps]):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        batch = collate([examples[i] for i in indices])
        outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        loss_function(outputs, batch["labels"]).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
    return loss_function.step_losses


# --------------------------------------------------------------------------- the quick demo end to end


@pytest.mark.slow
def test_quick_demo_transfers_knowledge(tmp_path, capsys):
    """The quick demo end to end: its outputs, protocol, and C2C clearly above the receiver alone on test people."""
    main(["--quick", "--output", str(tmp_path)])
    for name in ("results.md", "results.json", "accuracy_latency.png", "gates.png", "demo.md", ".c2c-demo-output"):
        assert (tmp_path / name).is_file(), name
    for folder in ("c2c", "receiver", "sharer"):
        assert (tmp_path / folder / "config.json").is_file(), folder
    assert (tmp_path / "c2c" / "tokenizer.json").is_file()

    report = json.loads((tmp_path / "results.json").read_text())
    accuracy = {method: by["transfer-test"]["accuracy"] for method, by in report["results"].items()}
    assert set(report["results"]["c2c"]) == {"transfer-test", "complementary-test"}
    assert report["protocol"] == {"selected_on": "validation", "test_evaluations": 1, "scored_splits": ["test"],
                                  "seed": 0, "splits": {"fuser": 48, "validation": 16, "test": 16, "context": 48}}  # fmt: skip
    assert report["environment"]["torch"] == torch.__version__
    assert set(accuracy) == {"receiver", "sharer", "t2t", "routing", "c2c", "fact_in_prompt"}
    assert accuracy["c2c"] >= accuracy["receiver"] + QUICK_MARGIN, accuracy
    assert "transfer_c2c_ge_receiver_plus_30pts" in report["config"]["targets"]
    assert all(example["reloaded_matches_trained"] for example in report["config"]["examples"])
    assert "| c2c |" in capsys.readouterr().out


@pytest.mark.slow
def test_same_seed_gives_the_same_table_in_one_process_or_two(tmp_path):
    """Two runs with one seed agree on every prediction, generated text, loss and schedule probe (a shortened quick
    config with the trained text-to-text and every "until learnt" schedule), whether the receiver and the hint reader
    train in a second process or in this one."""
    config = dataclasses.replace(
        DemoConfig.quick_config(seed=5), sharer_steps=40, sharer_schedule="until_learnt", sharer_max_steps=60,
        receiver_steps=30, receiver_min_steps=10,
        receiver_give_up_step=15, receiver_max_steps=40, fuser_steps=20, fuser_schedule="until_learnt",
        fuser_max_steps=30, probe_every=5, probe_questions=8, routing_fit_items=8, fuser_entities=8,
        validation_entities=4, test_entities=4, context_entities=8, trained_t2t=True, fuser_country_share=0.2,
    )  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        first = run_demo(config, tmp_path / "first")
        again = run_demo(dataclasses.replace(config, workers=1), tmp_path / "again")
    finally:
        torch.set_num_threads(threads)

    def table(report: dict) -> dict:
        return {
            method: [(p["id"], p["predicted"], p["text"]) for name in sorted(by) for p in by[name]["predictions"]]
            for method, by in report["results"].items()
        }

    assert set(first["results"]) == {"receiver", "sharer", "t2t", "routing", "c2c", "t2t_trained", "fact_in_prompt"}
    assert set(first["results"]["c2c"]) == {"transfer-test", "complementary-test"}
    assert table(first) == table(again)
    assert first["config"]["losses"] == again["config"]["losses"]
    assert {"sharer_schedule", "receiver_attempts", "fuser_schedule"} <= set(first["config"]["losses"])
    assert first["config"]["models"]["fuser"]["gate_logits_kv"] == again["config"]["models"]["fuser"]["gate_logits_kv"]
    assert (tmp_path / "first" / "t2t_receiver" / "config.json").is_file()


def seed_report(transfer: dict[str, float], complementary: dict[str, float], latency: dict[str, float]) -> dict:
    def cells(accuracy: dict[str, float]) -> dict:
        return {m: {"accuracy": a, "latency_median_s": latency[m]} for m, a in accuracy.items()}

    return {"config": {"demo": {}}, "results": {
        m: {"transfer-test": cells(transfer)[m], "complementary-test": cells(complementary)[m]} for m in transfer}}  # fmt: skip


def test_summary_over_seeds_uses_t_intervals_of_per_seed_figures(tmp_path):
    """Three worlds: transfer C2C 0.8 / 0.7 / 0.9 (mean 0.8, SD 0.1, half-width t(0.975, 2) * 0.1 / sqrt(3) =
    0.248414); complementary: C2C against the best of receiver, sharer and routing, per seed."""
    from c2c_hf.demo.seeds import readme_summary, write_seed_summary

    latency = {"receiver": 0.01, "sharer": 0.01, "routing": 0.02, "t2t": 0.05, "c2c": 0.02}
    reports = {
        seed: seed_report(
            {"receiver": 0.2, "sharer": 0.99, "routing": 0.99, "t2t": t2t, "c2c": c2c},
            {"receiver": 0.25, "sharer": best, "routing": 0.2, "t2t": 0.5, "c2c": 0.7}, latency,
        )
        for seed, (c2c, t2t, best) in {0: (0.8, 0.6, 0.3), 1: (0.7, 0.75, 0.4), 2: (0.9, 0.6, 0.2)}.items()
    }  # fmt: skip
    content = write_seed_summary(reports, tmp_path)
    transfer = content["summary"]["transfer"]
    c2c = transfer["accuracy"]["c2c"]
    assert c2c["mean"] == pytest.approx(0.8) and c2c["sd"] == pytest.approx(0.1)
    assert c2c["t95"] == pytest.approx([0.8 - 0.248414, 0.8 + 0.248414], abs=1e-6)
    assert transfer["differences"]["c2c - t2t"]["per_seed"] == pytest.approx([0.2, -0.05, 0.3])
    best_single = content["summary"]["complementary"]["differences"]["c2c - best_single"]
    assert best_single["per_seed"] == pytest.approx([0.7 - 0.3, 0.7 - 0.4, 0.7 - 0.25])
    assert content["targets"] == {
        "transfer_c2c_ge_receiver_plus_50pts": True, "transfer_c2c_above_t2t_interval_above_0": False,
        "transfer_c2c_above_t2t_every_seed": False, "transfer_c2c_sd_le_4pts": False,
        "transfer_c2c_latency_le_half_t2t": True, "complementary_c2c_ge_best_single_plus_30pts": True,
        "complementary_c2c_ge_t2t": True,
    }  # fmt: skip
    assert {p.name for p in tmp_path.iterdir()} == {"seeds.json", "seeds.md", "seeds.png"}
    markdown = (tmp_path / "seeds.md").read_text()
    assert "| c2c | 80.0 | 70.0 | 90.0 | 80.0 [55.2, 104.8] | 10.0 |" in markdown
    assert "## complementary (complementary-test questions)" in markdown
    assert "C2C 80.0% [55.2, 104.8] (SD 10.0)" in readme_summary(json.loads((tmp_path / "seeds.json").read_text()))
    with pytest.raises(ValueError, match=r"needs at least two seeds, got \[0\]"):
        write_seed_summary({0: reports[0]}, tmp_path)


def test_a_summary_of_validation_runs_is_over_the_validation_people(tmp_path):
    """`c2c-hf demo --seeds ... --splits validation` (for choosing) summarises the validation questions."""
    from c2c_hf.demo.seeds import write_seed_summary

    latency = {"receiver": 0.01, "sharer": 0.01, "routing": 0.02, "t2t": 0.05, "c2c": 0.02}
    reports = {}
    for seed, c2c in {0: 0.8, 1: 0.6}.items():
        report = seed_report({"receiver": 0.2, "sharer": 1.0, "routing": 1.0, "t2t": 0.5, "c2c": c2c},
                             {"receiver": 0.1, "sharer": 0.0, "routing": 0.0, "t2t": 0.5, "c2c": 0.7}, latency)  # fmt: skip
        report["results"] = {m: {k.replace("-test", "-validation"): v for k, v in by.items()}
                             for m, by in report["results"].items()}  # fmt: skip
        report["config"]["demo"] = {"splits": ["validation"]}
        reports[seed] = report
    content = write_seed_summary(reports, tmp_path)
    assert content["summary"]["transfer"]["benchmark"] == "transfer-validation"
    assert content["summary"]["transfer"]["accuracy"]["c2c"]["per_seed"] == [0.8, 0.6]
    reports[1]["config"]["demo"] = {"splits": ["test"]}
    with pytest.raises(ValueError, match=r"The worlds scored no split in common"):
        write_seed_summary(reports, tmp_path)


# --------------------------------------------------------------------------- trained text-to-text, targets


@pytest.mark.parametrize("prompt", ["choices", "open"])
def test_hint_reader_trains_a_merged_copy_on_one_hint_per_fact_or_per_hint_key(tmp_path, monkeypatch, prompt):
    """One sharer hint per fact, asked in the fuser's prompt style; the reader trains on `answer`'s replies."""
    from c2c_hf.demo import bases, hint_reader
    from c2c_hf.demo.bases import build_sharer
    from c2c_hf.demo.hint_reader import train_hint_reader
    from c2c_hf.evaluation import LM, hint_request

    world = World.generate(0, SIZES)
    receiver_tokenizer, sharer_tokenizer = train_tokenizers(world, 2000)
    receiver = build_receiver(receiver_tokenizer, 1)
    before = copy.deepcopy(receiver.state_dict())

    class CountingLM(LM):
        prompts: ClassVar[list[str]] = []

        def generate(self, user_texts, max_new_tokens):
            CountingLM.prompts += list(user_texts)
            return super().generate(user_texts, max_new_tokens)

    CountingLM.prompts = []
    sharer = CountingLM(build_sharer(sharer_tokenizer, 2).eval(), sharer_tokenizer)
    items = world.questions("fuser", random.Random(0), per_fact=3)
    replies = []

    def encode_chat(tokenizer, user, answer, prompt_weight, heavy=None):
        replies.append((user, answer))
        return bases.encode_chat(tokenizer, user, answer, prompt_weight, heavy)

    monkeypatch.setattr(hint_reader, "encode_chat", encode_chat)
    tuned = train_hint_reader(receiver, receiver_tokenizer, sharer, items, steps=3, batch_size=4, lr=1e-2, rank=4,
                              hint_tokens=6, seed=0, workdir=str(tmp_path), prompt=prompt,
                              answer=lambda item: f"reply {item.id}")  # fmt: skip
    assert len(CountingLM.prompts) == SIZES["fuser"] * len(ATTRIBUTES)  # one hint per fact, not per question
    requests = {hint_request(item, prompt) for item in items}
    assert set(CountingLM.prompts) <= requests and len(replies) == 3 * 4
    assert all(answer.startswith("reply ") and (("\n\nA. " in user) == (prompt == "choices")) for user, answer in replies)
    assert type(tuned) is type(receiver)  # LoRA merged: a plain receiver, loadable and savable as one
    assert all(torch.equal(before[k], v) for k, v in receiver.state_dict().items())  # the receiver itself untouched
    changed = [k for k, v in tuned.state_dict().items() if not torch.equal(before[k], v)]
    assert changed and all(any(t in k for t in ("proj",)) for k in changed)
    CountingLM.prompts = []
    train_hint_reader(receiver, receiver_tokenizer, sharer, items, steps=1, batch_size=4, lr=1e-2, rank=4,
                      hint_tokens=6, seed=0, workdir=str(tmp_path), prompt=prompt, hint_key=lambda item: item.id)
    assert sorted(CountingLM.prompts) == sorted(hint_request(item, prompt) for item in items)  # one per question


def synthetic_report(quick: bool, transfer: dict[str, float], complementary: dict[str, float], latency: dict) -> dict:
    def split(accuracy: dict[str, float]) -> dict:
        return {m: {"accuracy": a, "latency_median_s": latency[m]} for m, a in accuracy.items()}

    results = {m: {"transfer-test": split(transfer)[m], "complementary-test": split(complementary)[m]} for m in transfer}
    return {"config": {"demo": {"quick": quick, "splits": ["test"]}}, "results": results}


def test_run_targets_follow_the_issue_thresholds():
    from c2c_hf.demo.report import demo_targets

    latency = {"receiver": 0.01, "sharer": 0.01, "routing": 0.02, "t2t": 0.08, "c2c": 0.02}
    transfer = {"receiver": 0.25, "sharer": 0.99, "routing": 0.99, "t2t": 0.70, "c2c": 0.74}
    complementary = {"receiver": 0.25, "sharer": 0.20, "routing": 0.30, "t2t": 0.55, "c2c": 0.60}
    full = demo_targets(synthetic_report(False, transfer, complementary, latency))
    assert full == {
        "transfer_c2c_ge_receiver_plus_50pts": False, "transfer_c2c_above_t2t": True,
        "transfer_c2c_latency_le_half_t2t": True, "complementary_c2c_ge_best_single_plus_30pts": True,
        "complementary_c2c_ge_t2t": True,
    }  # fmt: skip
    quick = demo_targets(synthetic_report(True, transfer, {**complementary, "c2c": 0.59}, latency))
    assert quick["transfer_c2c_ge_receiver_plus_30pts"] and not quick["complementary_c2c_ge_best_single_plus_30pts"]


def test_readme_states_the_committed_demo_results():
    """The README's demo figures are `readme_summary` of the committed multi-world results, word for word."""
    from pathlib import Path

    from c2c_hf.demo.seeds import readme_summary

    root = Path(__file__).resolve().parent.parent
    readme = " ".join((root / "README.md").read_text(encoding="utf-8").split())
    for path in ("docs/results/demo/seeds.json", "docs/results/demo/quick/seeds.json"):
        content = json.loads((root / path).read_text(encoding="utf-8"))
        assert content["environment"]["torch"] and content["protocol"]["selected_on"] == "validation", path
        assert content["protocol"]["test_evaluations"] == 1, path
        assert readme_summary(content) in readme, path


@pytest.mark.parametrize("folder", ["docs/results/demo", "docs/results/demo/quick"])
def test_committed_demo_figures_recompute_from_the_per_question_files(folder):
    """Every per-world accuracy in `seeds.json`, and the t-interval over worlds, recomputes from the committed
    per-question outcomes (`seed-N/questions.json`)."""
    from pathlib import Path

    from c2c_hf.evaluation import t_interval

    root = Path(__file__).resolve().parent.parent / folder
    content = json.loads((root / "seeds.json").read_text(encoding="utf-8"))
    for task, summary in content["summary"].items():
        for method, figures in summary["accuracy"].items():
            per_seed = []
            for seed in summary["seeds"]:
                world = json.loads((root / f"seed-{seed}" / "questions.json").read_text(encoding="utf-8"))
                assert world["protocol"]["test_evaluations"] == 1 and world["environment"]["torch"]
                flags = world["outcomes"][method][summary["benchmark"]]["correct"]
                per_seed.append(flags.count("1") / len(flags))
            assert per_seed == pytest.approx(figures["per_seed"], abs=1e-9), (task, method)
            mean, interval = t_interval(per_seed)
            assert [mean, *interval] == pytest.approx([figures["mean"], *figures["t95"]], abs=1e-9), (task, method)


# --------------------------------------------------------------------------- the schedule that decays once learnt


def step_through(schedule: DecayWhenLearnt, steps: int) -> int:
    """Drive the callback as the Trainer does (global_step after each optimiser step); returns the steps taken."""
    state, control = SimpleNamespace(global_step=0), SimpleNamespace(should_training_stop=False)
    while state.global_step < steps and not control.should_training_stop:
        state.global_step += 1
        schedule.on_step_end(None, state, control)
    return state.global_step


def test_decay_starts_at_the_first_passing_probe_after_min_steps():
    """Probes every 5 steps from step 20 on; the probe passes from step 35: constant rate (after warm-up) until 35,
    a cosine to 0 over 10 steps, stop at 45; nothing is probed before `min_steps`."""
    calls = []

    def probe() -> float:
        calls.append(len(calls))
        return 0.95 if len(calls) >= 4 else 0.5  # checks at 20, 25, 30 fail; 35 passes

    schedule = DecayWhenLearnt(probe, threshold=0.9, warmup_steps=4, min_steps=20, decay_steps=10, max_steps=100,
                               check_every=5, log=None)  # fmt: skip
    assert step_through(schedule, 100) == 45
    assert schedule.summary() == {"learnt": True, "gave_up": False, "decay_start": 35, "steps": 45,
                                  "probes": [(20, 0.5), (25, 0.5), (30, 0.5), (35, 0.95)]}  # fmt: skip
    assert [schedule.factor(s) for s in (0, 1, 3, 34, 35)] == [0.25, 0.5, 1.0, 1.0, 1.0]
    assert schedule.factor(40) == pytest.approx(0.5)
    assert schedule.factor(45) == pytest.approx(0.0, abs=1e-12) and schedule.factor(60) == pytest.approx(0.0, abs=1e-12)


def test_decay_starts_by_max_steps_when_the_probe_never_passes():
    schedule = DecayWhenLearnt(lambda: 0.1, threshold=0.9, warmup_steps=2, min_steps=10, decay_steps=8, max_steps=40,
                               check_every=5, log=None)  # fmt: skip
    assert step_through(schedule, 1000) == 40
    assert schedule.summary()["learnt"] is False and schedule.decay_start == 32
    assert [step for step, _ in schedule.probes] == [10, 15, 20, 25, 30]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [({"warmup_steps": 0}, "warmup_steps=0"), ({"min_steps": 95}, "min_steps=95"), ({"decay_steps": 0}, "decay_steps=0")],
)
def test_decay_when_learnt_rejects_steps_that_do_not_fit(kwargs, fragment):
    arguments = {"threshold": 0.9, "warmup_steps": 5, "min_steps": 50, "decay_steps": 10, "max_steps": 100, **kwargs}
    with pytest.raises(ValueError, match=f"0 < warmup_steps <= min_steps <= max_steps - decay_steps.*{fragment}"):
        DecayWhenLearnt(lambda: 1.0, **arguments)


def test_decay_when_learnt_gives_up_only_a_run_stuck_below_its_bar():
    """At `give_up_step` a run probed below `give_up_below` stops; one above it (slow, not stuck) trains on."""
    arguments = {"threshold": 0.9, "warmup_steps": 2, "min_steps": 10, "decay_steps": 8, "max_steps": 40,
                 "check_every": 5, "give_up_step": 20, "give_up_below": 0.5, "log": None}  # fmt: skip
    stuck = DecayWhenLearnt(lambda: 0.3, **arguments)
    assert step_through(stuck, 1000) == 20
    assert stuck.summary() == {"learnt": False, "gave_up": True, "decay_start": None, "steps": 20,
                               "probes": [(10, 0.3), (15, 0.3), (20, 0.3)]}  # fmt: skip
    slow = DecayWhenLearnt(lambda: 0.6, **arguments)
    assert step_through(slow, 1000) == 40 and not slow.gave_up and slow.decay_start == 32
    with pytest.raises(ValueError, match=r"give_up_step \(35\) must be a probed step \(a multiple of check_every, "
                                         r"5\) between min_steps \(10\) and max_steps - decay_steps \(32\)"):  # fmt: skip
        DecayWhenLearnt(lambda: 0.5, **{**arguments, "give_up_step": 35})


def test_config_rejects_an_until_learnt_cap_below_the_steps():
    with pytest.raises(ValueError, match=r"DemoConfig's fuser steps do not fit its 'until_learnt' schedule \(.*"
                                         r"min_steps=400, decay_steps=100, max_steps=400.*set fuser_steps"):  # fmt: skip
        dataclasses.replace(DemoConfig.quick_config(), fuser_schedule="until_learnt", fuser_max_steps=400)
    with pytest.raises(ValueError, match=r"DemoConfig.receiver_schedule must be one of \('cosine', 'until_learnt'\)"):
        dataclasses.replace(DemoConfig.quick_config(), receiver_schedule="step")


def test_pretraining_until_learnt_follows_the_schedule_and_stops_after_its_decay(tmp_path):
    """`pretrain` with `until_learnt` equals a plain loop with `factor`'s rates, and stops at the decay's end."""
    world = World.generate(0, SIZES)
    tokenizer, _ = train_tokenizers(world, 2000)
    batch_size, lr = 4, 3e-3
    examples = receiver_examples(world, tokenizer, 30 * batch_size, 0)
    model = build_receiver(tokenizer, 1)
    reference = copy.deepcopy(model)
    schedule = DecayWhenLearnt(lambda: 1.0, threshold=0.9, warmup_steps=2, min_steps=6, decay_steps=4, max_steps=30,
                               check_every=3, log=None)  # fmt: skip
    losses = pretrain(model, examples, steps=30, batch_size=batch_size, lr=lr, pad_token_id=tokenizer.pad_token_id,
                      seed=0, workdir=str(tmp_path), progress=False, until_learnt=schedule)  # fmt: skip
    assert len(losses) == 10 and schedule.summary()["steps"] == 10

    expected_losses = plain_training_loop(
        reference, examples, tokenizer.pad_token_id, batch_size, 10, lambda step: lr * schedule.factor(step)
    )
    assert losses == pytest.approx(expected_losses, rel=1e-5)
    for trained, expected in zip(model.parameters(), reference.parameters()):
        assert torch.allclose(trained, expected, atol=1e-6)
