"""The experiments' cross-model comparison (`experiments/real_cpu/paired.py`): reports of different models, paired
on the same items, one comparison or several named ones in one file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from c2c_hf.data import MCItem
from c2c_hf.evaluation import Prediction, build_report

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments" / "real_cpu"))

import paired  # the experiment script


def write_report(folder: Path, method: str, picks: list[int]) -> str:
    """A one-benchmark report of `method` whose answer to item i is choice `picks[i]` (gold: choice 0); returns the
    script's REPORT_DIR:METHOD for it."""
    items = [MCItem("arc_easy", str(i), f"question {i}", ("a", "b", "c", "d"), gold=0) for i in range(len(picks))]
    predictions = [Prediction(item, pick, "", 1) for item, pick in zip(items, picks)]
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(build_report({method: {"arc_easy": predictions}}, {})))
    return f"{folder}:{method}"


def run(monkeypatch: pytest.MonkeyPatch, *argv: str) -> None:
    monkeypatch.setattr(sys, "argv", ["paired.py", *argv])
    paired.main()


def test_named_comparisons_are_written_to_one_file(tmp_path, monkeypatch):
    first = write_report(tmp_path / "fuser", "c2c", [0, 0, 1, 0])  # right on 3 of 4
    second = write_report(tmp_path / "control", "receiver", [0, 1, 1, 2])  # right on 1 of 4
    output = tmp_path / "paired.json"
    run(monkeypatch, "--compare", "fuser-vs-control", first, second, "--compare", "control-vs-fuser", second, first,
        "--output", str(output))  # fmt: skip
    comparisons = json.loads(output.read_text())["comparisons"]
    assert [(c["name"], c["first"], c["second"]) for c in comparisons] == [
        ("fuser-vs-control", first, second),
        ("control-vs-fuser", second, first),
    ]
    row = comparisons[0]["rows"][0]
    assert (row["benchmark"], row["first"], row["second"], row["n"]) == ("arc_easy", 0.75, 0.25, 4)
    assert (row["only_this"], row["only_baseline"], row["same_choice"]) == (2, 0, 2)  # items 1 and 3; items 0 and 2
    assert row["difference"] == pytest.approx(0.5)
    assert comparisons[1]["rows"][0]["difference"] == pytest.approx(-0.5)
    markdown = output.with_suffix(".md").read_text()
    assert markdown.index("## fuser-vs-control") < markdown.index("## control-vs-fuser")
    assert markdown.count("| arc_easy | 75.0 | 25.0 |") == 1 and "2 of 4 |" in markdown


def test_one_comparison_prints_its_table_without_a_name(tmp_path, monkeypatch, capsys):
    first = write_report(tmp_path / "a", "c2c", [0, 1])
    second = write_report(tmp_path / "b", "c2c", [1, 1])
    run(monkeypatch, first, second)
    printed = capsys.readouterr().out
    assert "##" not in printed and "| arc_easy | 50.0 | 0.0 |" in printed and "1 of 2 |" in printed
    with pytest.raises(SystemExit):
        run(monkeypatch, first)  # one side alone is no comparison


def test_every_committed_results_json_starts_with_environment_and_protocol():
    """Every results file in docs/results says where it was measured and under what protocol (a file written
    before results recorded them says so in its environment block)."""
    results = Path(__file__).resolve().parents[1] / "docs" / "results"
    lacking = []
    for path in sorted(results.rglob("*.json")):
        content = json.loads(path.read_text(encoding="utf-8"))
        if not (isinstance(content, dict) and isinstance(content.get("environment"), dict) and "protocol" in content):
            lacking.append(str(path.relative_to(results)))
    assert not lacking, lacking


# --------------------------------------------------------------------------- the knowledge experiment's splits


def knowledge_args(**overrides):
    import argparse

    import knowledge_setup

    parser = argparse.ArgumentParser()
    knowledge_setup.add_world_arguments(parser)
    knowledge_setup.add_location_arguments(parser)
    args = parser.parse_args(["--fuser-people", "20", "--heldout-people", "6", "--validation-people", "4"])
    for name, value in overrides.items():
        setattr(args, name, value)
    return args


def test_knowledge_validation_questions_ask_only_about_the_validation_people():
    """Validation: two questions per fact of the fuser group's last 4 people (never a fuser-training or test person);
    test: the held-out people's questions, unchanged."""
    import knowledge_setup

    args = knowledge_args()
    world = knowledge_setup.load_world(args)
    training, validation = knowledge_setup.split_fuser_people(world, args.validation_people)
    items = knowledge_setup.split_items(world, "validation", args.seed, args.validation_people)
    names = {item.id.split("/")[0] for item in items}
    assert names == {person.name for person in validation} and len(items) == 4 * len(world.attributes) * 2
    assert not names & {p.name for p in training} and not names & set(world.names("test"))
    assert knowledge_setup.split_items(world, "test", args.seed, 4) == knowledge_setup.heldout_items(world, args.seed)
    with pytest.raises(ValueError, match=r"The validation split is empty: pass --validation-people N"):
        knowledge_setup.split_items(world, "validation", args.seed, 0)


def test_knowledge_world_seed_gets_its_own_folders_and_people():
    import knowledge_setup

    first, second = knowledge_args(), knowledge_args(seed=1)
    assert knowledge_setup.experiment_dirs(second)[1] == knowledge_setup.experiment_dirs(first)[1].parent / "seed-1" / (
        knowledge_setup.experiment_dirs(first)[1].name
    )
    assert not set(knowledge_setup.load_world(first).names("test")) & set(
        knowledge_setup.load_world(second).names("test")
    )


def test_test_scorings_are_logged_and_counted_per_configuration_and_method(tmp_path):
    import knowledge_setup
    import sealed

    log = tmp_path / "test-scorings.jsonl"
    entry = {"world_seed": 1, "world": {"fuser": 208, "test": 32}, "config": "open/baselines", "methods": ["receiver"]}
    def record(**changes) -> dict[str, int]:
        return sealed.record_test_scoring(log, {**entry, **changes}, knowledge_setup.WORLD_IDENTITY)

    assert record() == {"receiver": 1}
    assert record(config="open/gated") == {"receiver": 1}
    assert record(world_seed=2) == {"receiver": 1}
    assert record(methods=["t2t"]) == {"receiver": 1, "t2t": 1}
    assert record() == {"receiver": 2, "t2t": 1}
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(rows) == 5 and all(row["date"] for row in rows)


def test_a_report_s_protocol_counts_its_most_scored_method(tmp_path):
    import knowledge_setup
    import sealed

    args = knowledge_args(results=tmp_path, split="test", selected_on="validation")
    world = knowledge_setup.load_world(args)
    first = knowledge_setup.test_protocol(args, world, "open/baselines", ["receiver", "t2t"])
    assert first["test_evaluations"] == 1 and first["selected_on"] == "validation"
    again = knowledge_setup.test_protocol(args, world, "open/baselines", ["t2t"], reported=["receiver", "t2t"])
    assert again["test_evaluations"] == 2 and again["test_evaluations_per_method"] == {"receiver": 1, "t2t": 2}
    args.split = "validation"
    assert knowledge_setup.test_protocol(args, world, "open/baselines", ["t2t"]) == {
        "scored_split": "validation", "selected_on": "validation"}
    assert len((tmp_path / "test-scorings.jsonl").read_text().splitlines()) == 2
    report = sealed.with_protocol({"results": {}, "environment": {"python": "3"}}, first)
    assert list(report) == ["environment", "protocol", "results"]


def test_a_test_summary_s_intervals_are_the_textbook_ones_and_recompute_from_its_outcomes():
    import sealed
    from scipy import stats

    from c2c_hf.evaluation import question_outcomes

    ids = [f"q{i}" for i in range(8)]

    def rows(bits: list[int]) -> list[dict]:
        return [{"id": i, "gold": "A", "predicted": "A" if b else "B", "correct": bool(b)} for i, b in zip(ids, bits)]

    bits = {"receiver": [0, 0, 0, 0, 1, 0, 0, 0], "sharer": [1, 1, 1, 1, 1, 0, 1, 0], "s0": [1, 1, 0, 0, 1, 0, 0, 0],
            "s1": [1, 0, 1, 0, 1, 1, 0, 0], "s2": [1, 1, 1, 0, 1, 0, 0, 1]}
    predictions = {label: question_outcomes(rows(b)) for label, b in bits.items()}
    summary = sealed.test_summary(predictions, {"c2c": ["s0", "s1", "s2"]}, ["receiver", "sharer"], {"s0": 0.5},
                                  {"protocol": {"test_evaluations": 1}}, gap=("receiver", "sharer"))  # fmt: skip
    assert summary["accuracy"]["s1"]["accuracy"] == 0.5 and summary["accuracy"]["receiver"]["n"] == 8
    over_receiver = summary["seeds"]["c2c"]["minus"]["receiver"]
    per_seed = [2 / 8, 3 / 8, 4 / 8]  # 3, 4 and 5 of 8 right, the receiver 1
    half = stats.t.ppf(0.975, 2) * stats.sem(per_seed)
    assert over_receiver["per_seed"] == pytest.approx(per_seed)
    assert over_receiver["seed_t95"] == pytest.approx([3 / 8 - half, 3 / 8 + half])
    by_question = [1, 2 / 3, 2 / 3, 0, 0, 1 / 3, 0, 1 / 3]  # the seeds' mean outcome minus the receiver's
    half = stats.norm.ppf(0.975) * stats.tstd(by_question) / 8**0.5
    assert over_receiver["question_paired95"] == pytest.approx([3 / 8 - half, 3 / 8 + half])
    closed = summary["seeds"]["c2c"]["gap_closed"]  # (run - 1/8) / (6/8 - 1/8)
    assert closed["per_seed"] == pytest.approx([0.4, 0.6, 0.8]) and closed["mean"] == pytest.approx(0.6)
    stored = json.loads(json.dumps(summary))
    again = sealed.recompute_summary(stored["outcomes"], stored["configs"], stored["baselines"], stored["gap"])
    assert again == {"accuracy": stored["accuracy"], "seeds": stored["seeds"], "contrasts": {}}
    paired = sealed.test_summary(predictions, {"c2c": ["s1", "s2"], "control": ["s0", "s1"]}, ["receiver"], {}, {},
                                 contrasts=[("c2c", "control")])["contrasts"]["c2c - control"]  # fmt: skip
    assert paired["per_seed"] == pytest.approx([1 / 8, 1 / 8])  # s1 - s0, s2 - s1
    by_question = [0, 0, 1 / 2, 0, 0, 0, 0, 1 / 2]  # (s1 + s2) / 2 - (s0 + s1) / 2
    half = stats.norm.ppf(0.975) * stats.tstd(by_question) / 8**0.5
    assert paired["question_paired95"] == pytest.approx([1 / 8 - half, 1 / 8 + half])
    with pytest.raises(ValueError, match="compare with one baseline or one run a seed"):
        sealed.test_summary(predictions, {"c2c": ["s0", "s1", "s2"], "control": ["s0", "s1"]}, [], {}, {},
                            contrasts=[("c2c", "control")])  # fmt: skip
    one = sealed.test_summary(predictions, {"c2c": ["s1"]}, ["receiver"], {}, {}, gap=("receiver", "sharer"))["seeds"]
    assert one["c2c"]["minus"]["receiver"]["seed_t95"] is None and one["c2c"]["accuracy_seed_t95"] is None
    assert one["c2c"]["minus"]["receiver"]["mean"] == 3 / 8 and one["c2c"]["gap_closed"]["mean"] == pytest.approx(0.6)
    predictions["s2"] = question_outcomes(rows(bits["s2"])[:7])
    with pytest.raises(ValueError, match="scored on different questions"):
        sealed.test_summary(predictions, {"c2c": ["s0", "s2"]}, ["receiver"], {}, {})


def test_the_validation_choice_takes_the_best_first_on_a_tie_and_is_frozen_once_written(tmp_path):
    import sealed

    def candidate(name: str, right: int) -> Path:
        rows = [{"id": f"q{i}", "gold": "A", "predicted": "A", "correct": i < right} for i in range(4)]
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
        report = {"results": {"c2c": {"snippets": {"accuracy": right / 4, "predictions": rows}}}}
        (folder / "results.json").write_text(json.dumps(report))
        return folder

    candidates = {"projection": candidate("projection", 3), "gated": candidate("gated", 3), "weak": candidate("w", 1)}
    out = tmp_path / "choice.json"
    assert sealed.choose_on_validation(candidates, "snippets", out) == "projection"  # the first of two at 75%
    written = json.loads(out.read_text())
    assert written["validation_accuracy"] == {"projection": 0.75, "gated": 0.75, "weak": 0.25}
    assert written["protocol"] == {"selected_on": "validation"} and "git_commit" in written["environment"]
    candidate("gated", 4)  # rescored after the choice
    with pytest.raises(RuntimeError, match="a frozen choice cannot change"):
        sealed.choose_on_validation(candidates, "snippets", out)
    candidate("gated", 3)
    assert sealed.choose_on_validation(candidates, "snippets", out) == "projection"


def test_a_split_summary_reads_extra_baseline_folders_and_carries_labels_whose_reports_are_elsewhere(tmp_path):
    """A baseline comes from the first baseline folder that scored it; a label whose report is not on this machine
    is read from the earlier summary's outcomes, with the commit it was scored at; one found nowhere is an error."""
    import sealed

    def report(name: str, bits: dict[str, list[int]], evaluations: int, latency: float = 0.5) -> None:
        def rows(b: list[int]) -> list[dict]:
            return [{"id": f"q{i}", "gold": "A", "predicted": "A" if x else "B", "correct": bool(x)}
                    for i, x in enumerate(b)]  # fmt: skip

        results = {m: {"snippets": {"predictions": rows(b), "latency_median_s": latency}} for m, b in bits.items()}
        (tmp_path / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / name / "results.json").write_text(
            json.dumps({"protocol": {"test_evaluations": evaluations}, "results": results}))

    report("baselines", {"receiver": [0, 0, 1, 0], "sharer": [1, 1, 1, 0]}, 1)
    report("s0", {"c2c": [1, 0, 1, 0]}, 1)
    report("s1", {"c2c": [1, 1, 1, 0]}, 2)
    stem = tmp_path / "test-likelihood"

    def write(baselines: list[str], reports: tuple[str, ...] = ("baselines",)) -> dict:
        return sealed.write_split_summary(tmp_path, "snippets", baselines, {"c2c": ["s0", "s1"]},
                                          {"selected_on": "validation", "scored_split": "test"}, {}, stem, {}, "t",
                                          gap=("receiver", "sharer"), baseline_reports=reports)  # fmt: skip

    first = write(["receiver", "sharer"])
    assert first["protocol"]["test_evaluations"] == 2 and "carried" not in first
    for name in ("baselines", "s1"):  # scored on another machine: only the summary came back
        (tmp_path / name / "results.json").unlink()
    report("reader", {"t2t_trained": [1, 1, 0, 1]}, 1, latency=0.7)
    second = write(["receiver", "sharer", "t2t_trained"], ("baselines", "reader"))
    commit = first["environment"]["git_commit"]
    assert second["carried"] == {"receiver": commit, "sharer": commit, "s1": commit}
    assert second["outcomes"]["s1"] == first["outcomes"]["s1"] and second["latency_median_s"]["t2t_trained"] == 0.7
    assert second["seeds"]["c2c"]["minus"]["receiver"] == first["seeds"]["c2c"]["minus"]["receiver"]
    assert second["seeds"]["c2c"]["minus"]["t2t_trained"]["per_seed"] == [-1 / 4, 0.0]
    assert second["protocol"]["test_evaluations"] == 2  # the earlier summary's count stands for its labels
    assert json.loads(stem.with_suffix(".json").read_text())["carried"]["s1"] == commit
    with pytest.raises(FileNotFoundError, match=r"'routing': no report under .* scored it and .* does not hold it"):
        write(["receiver", "routing"])


def test_every_committed_split_summary_recomputes_from_its_outcomes():
    """Each committed sealed summary (a JSON with per-question `outcomes`) gives, recomputed from those outcomes
    alone, the accuracies, Wilson intervals, seed t-intervals, paired intervals and gap shares it reports."""
    import sealed

    results = Path(__file__).resolve().parents[1] / "docs" / "results" / "real-cpu"
    summaries = [p for p in sorted(results.rglob("*.json")) if "outcomes" in json.loads(p.read_text(encoding="utf-8"))]
    assert summaries, "no committed summary with per-question outcomes"
    for path in summaries:
        stored = json.loads(path.read_text(encoding="utf-8"))
        again = sealed.recompute_summary(stored["outcomes"], stored["configs"], stored["baselines"], stored["gap"],
                                         stored["contrast_pairs"])  # fmt: skip
        assert again == {key: stored[key] for key in ("accuracy", "seeds", "contrasts")}, path


def test_accuracy_by_fact_is_each_kind_s_share_with_seeds_averaged_and_recomputes_for_the_committed_files():
    """A kind of fact is a question id's second field; a configuration's accuracy on it is the mean of its seeds';
    every committed `<split>-by-fact.json` is what its summary's outcomes give."""
    import knowledge_reports

    ids = ["A/city/0#0", "A/color/0#0", "B/city/1#0", "B/color/2#1"]
    summary = {"baselines": ["sharer"], "configs": {"projection": ["seed1", "seed2"]},
               "outcomes": {"sharer": {"ids": ids, "correct": "1101"}, "seed1": {"ids": ids, "correct": "1000"},
                            "seed2": {"ids": ids, "correct": "1111"}}}  # fmt: skip
    assert knowledge_reports.accuracy_by_fact(summary) == {
        "sharer": {"city": 0.5, "color": 1.0}, "projection": {"city": 0.75, "color": 0.5}
    }
    results = Path(__file__).resolve().parents[1] / "docs" / "results" / "real-cpu"
    for path in sorted(results.rglob("*-by-fact.json")):
        split_summary = path.with_name(path.name.replace("-by-fact", "-summary"))
        again = knowledge_reports.accuracy_by_fact(json.loads(split_summary.read_text(encoding="utf-8")))
        assert json.loads(path.read_text(encoding="utf-8"))["accuracy_by_fact"] == again, path


def test_the_real_model_readme_holds_the_committed_results_tables_and_stays_one_page():
    """Each generated block of docs/results/real-cpu/README.md is what `readme_tables.py` writes from the committed
    summaries (rerun the script after a summary changes), and the page stays under 200 lines."""
    import readme_tables

    text = readme_tables.README.read_text(encoding="utf-8")
    assert readme_tables.blocks_in(text), "the README has no generated block"
    assert readme_tables.rewrite(text) == text, "stale tables: run python experiments/real_cpu/readme_tables.py"
    assert len(text.splitlines()) < 200


def test_a_stored_sharer_adapter_rebuilds_the_trained_sharer_exactly_and_keeps_the_adapters_over_it(tmp_path):
    """`store_adapter` rounds the LoRA to float16 in place and writes it: the sharer merged in the training session
    and the one a fresh session rebuilds from the file are the same model; storing again replaces the files and
    leaves the adapters trained over it (sub-folders) in place."""
    from knowledge_sharer import store_adapter
    from peft import LoraConfig, PeftModel, get_peft_model
    from safetensors.torch import load_file
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1)  # fmt: skip
    torch.manual_seed(0)
    base_weights = Qwen2ForCausalLM(config).state_dict()
    trained = Qwen2ForCausalLM(config)
    trained.load_state_dict(base_weights)
    trained = get_peft_model(trained, LoraConfig(r=4, target_modules=["q_proj", "down_proj"]))
    with torch.no_grad():
        for parameter in trained.parameters():
            if parameter.requires_grad:
                parameter.normal_(0, 0.05)  # a trained adapter: weights float16 does not hold exactly
    folder = tmp_path / "dense-sharer"
    (folder / "recall-sharer").mkdir(parents=True)
    (folder / "recall-sharer" / "adapter_model.safetensors").write_text("the adapter trained over this one")
    store_adapter(trained, folder, {"losses": [2.0, 1.0]})
    store_adapter(trained, folder, {"losses": [2.0, 1.0]})  # again: the files are replaced, the sub-folder stays
    assert sorted(p.name for p in folder.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "recall-sharer", "training-log.json"
    ]  # fmt: skip
    assert (folder / "recall-sharer" / "adapter_model.safetensors").read_text() == "the adapter trained over this one"
    assert {t.dtype for t in load_file(folder / "adapter_model.safetensors").values()} == {torch.float16}
    assert json.loads((folder / "training-log.json").read_text()) == {"losses": [2.0, 1.0]}
    rebuilt = Qwen2ForCausalLM(config)
    rebuilt.load_state_dict(base_weights)
    rebuilt = PeftModel.from_pretrained(rebuilt, folder).merge_and_unload()
    tokens = torch.randint(0, config.vocab_size, (2, 7))
    assert torch.equal(rebuilt(tokens).logits, trained.merge_and_unload()(tokens).logits)
