"""The evaluation harness: five methods end to end, T2T hint flow, router, Wilson intervals, logits scoring, CLI."""

from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FUSER_KWARGS
from tiny_models import VOCAB, build, receiver_config, sharer_configs, word_tokenizer
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from c2c_hf import C2CForCausalLM
from c2c_hf.data import MCItem, format_prompt
from c2c_hf.evaluation import (
    LM,
    METHODS,
    Direct,
    Prediction,
    Router,
    Routing,
    Scoring,
    TextToText,
    build_methods,
    evaluate,
    hint_request,
    hinted_prompt,
    load_benchmark,
    load_models,
    main,
    merge_reports,
    normal_mean_interval,
    paired_difference,
    question_prompt,
    t_interval,
    wilson_interval,
    write_report,
)

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"
WORDS = (
    "the is of to a Question Which best most all are in with for on from that can Hint Answer letter correct choice "
    "only or Read question below and write short hint background knowledge reasoning help answer it Do not state "
    "which energy water food plants safety money sun light heat animals grass eat"
).split()


def eval_tokenizer() -> PreTrainedTokenizerFast:
    """Letters, punctuation and the prompt words over exactly the VOCAB ids of the tiny models (so that every
    generated id decodes to a token)."""
    tokenizer = word_tokenizer(list(string.ascii_uppercase) + list(".,:;?!()-'") + WORDS)
    assert len(tokenizer) == VOCAB
    return tokenizer


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return eval_tokenizer()


@pytest.fixture(scope="module")
def items() -> dict[str, list[MCItem]]:
    return {name: load_benchmark(name, FIXTURES / f"{name}.jsonl") for name in ("arc_easy", "openbookqa")}


def reference_generate(model, tokenizer, user_text: str, max_new_tokens: int) -> tuple[str, int]:
    """Plain `generate` on one chat-templated prompt (independent of the harness): text without special tokens, and
    the number of new tokens (a single sequence stops right after its EOS)."""
    messages = [{"role": "user", "content": user_text}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    output = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0)
    new_tokens = output[0, ids["input_ids"].shape[1] :]
    return tokenizer.decode(new_tokens, skip_special_tokens=True).strip(), len(new_tokens)


# --------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("mode", ["generate", "logits", "likelihood"])
def test_all_methods_end_to_end(make_c2c, tokenizer, items, tmp_path, mode):
    scoring = Scoring(mode, max_new_tokens=6)
    methods = build_methods(make_c2c("qwen2"), tokenizer, tokenizer, METHODS, scoring, hint_tokens=6)
    results = evaluate(methods, items, batch_size=2)
    report = write_report(results, tmp_path, {"mode": mode, "batch_size": 2})

    for name in ("results.json", "results.md", "accuracy_latency.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert json.loads((tmp_path / "results.json").read_text()) == report
    assert list(report["results"]) == list(METHODS)
    table = (tmp_path / "results.md").read_text()
    for method in METHODS:
        assert f"| {method} |" in table
    for method, by_benchmark in report["results"].items():
        assert list(by_benchmark) == list(items)
        for benchmark, summary in by_benchmark.items():
            assert summary["n"] == len(summary["predictions"]) == len(items[benchmark])
            assert 0.0 <= summary["ci95"][0] <= summary["accuracy"] <= summary["ci95"][1] <= 1.0
            assert summary["latency_median_s"] > 0 and summary["latency_p90_s"] >= summary["latency_median_s"]
            assert [p["id"] for p in summary["predictions"]] == [item.id for item in items[benchmark]]
            for prediction in summary["predictions"]:
                assert prediction["latency"] > 0
                assert prediction["correct"] == (prediction["predicted"] == prediction["gold"])
                if mode != "generate":
                    assert prediction["tokens"] == 0 and prediction["predicted"] == prediction["text"]
                else:
                    assert 1 <= prediction["tokens"] <= 6
            if method == "t2t":
                assert all({"hint", "hint_tokens", "receiver_prompt"} <= set(p) for p in summary["predictions"])
                assert summary["mean_hint_tokens"] > 0
            if method == "routing":
                assert all(p["route"] in ("receiver", "sharer") for p in summary["predictions"])


def test_t2t_feeds_the_sharers_hint_to_the_receiver(receiver, sharers, tokenizer, items):
    item = items["arc_easy"][0]
    sharer = sharers["llama"]
    method = TextToText(LM(receiver, tokenizer), LM(sharer, tokenizer), Scoring("generate", 5), hint_tokens=12)
    prediction = method.answer([item])[0]

    hint, hint_tokens = reference_generate(sharer, tokenizer, hint_request(item), 12)
    assert hint and prediction.details["hint"] == hint and prediction.details["hint_tokens"] == hint_tokens
    receiver_prompt = prediction.details["receiver_prompt"]
    assert f"Hint: {hint}\n\n{format_prompt(item)}" in receiver_prompt
    # The receiver answered exactly that prompt.
    user_text = receiver_prompt.removeprefix("<|user|> ").removesuffix(" <|assistant|>")
    assert (prediction.text, prediction.tokens) == reference_generate(receiver, tokenizer, user_text, 5)


def test_open_prompt_asks_the_bare_question_and_reads_the_choice_text_named(receiver, sharers, tokenizer, items):
    item = items["arc_easy"][0]
    sharer = sharers["llama"]
    scoring = Scoring("generate", 5, prompt="open")
    prediction = TextToText(LM(receiver, tokenizer), LM(sharer, tokenizer), scoring, hint_tokens=12).answer([item])[0]

    assert question_prompt(item, "open") == item.question
    hint, _ = reference_generate(sharer, tokenizer, hint_request(item, "open"), 12)
    assert prediction.details["hint"] == hint
    assert hint_request(item, "open").endswith(f"\n\n{item.question}") and item.choices[0] not in hint_request(
        item, "open"
    )
    assert f"{hinted_prompt(item, hint, 'open')} <|assistant|>" in prediction.details["receiver_prompt"]
    assert "letter" not in prediction.details["receiver_prompt"].split("Hint:")[1]  # no choices, no instruction
    assert prediction.predicted == scoring.read(item, prediction.text)


def test_open_prompt_reads_only_the_one_choice_text_an_answer_names():
    item = MCItem("world", "x", "In which city does Trenkai live?", ("Lima", "Rome", "Dublin", "Oslo"), 2)
    open_scoring, choices_scoring = Scoring(prompt="open"), Scoring(prompt="choices")
    assert open_scoring.read(item, "Trenkai lives in Dublin, Ireland.") == 2
    assert open_scoring.read(item, "B") is None  # letters mean nothing without shown choices
    assert open_scoring.read(item, "Trenkai moved from Rome to Dublin.") is None  # two candidates named
    assert open_scoring.read(item, "Trenkai lives in Paris.") is None
    assert choices_scoring.read(item, "B") == 1


def test_open_prompt_refuses_letter_scoring_and_routing(receiver, tokenizer, checkpoint, tmp_path, capsys):
    with pytest.raises(ValueError, match="Open prompts show no letters to score: use mode 'generate'"):
        Scoring("logits", prompt="open")
    with pytest.raises(ValueError, match="Unknown prompt 'bare'"):
        Scoring(prompt="bare")
    with pytest.raises(ValueError, match=r"Routing reads each model's choice-letter confidence"):
        Routing(LM(receiver, tokenizer), LM(receiver, tokenizer), Scoring(prompt="open"))
    Routing(LM(receiver, tokenizer), LM(receiver, tokenizer), Scoring("likelihood", prompt="open"))  # likelihoods
    with pytest.raises(SystemExit):
        main(
            ["--model", str(checkpoint / "c2c"), "--prompt", "open", "--methods", "routing", "--output", str(tmp_path)]
        )
    error = capsys.readouterr().err
    assert "routing reads letter confidences or choice likelihoods: drop it from --methods, use --prompt choices" in error


def test_left_padded_batches_match_single_prompts(make_c2c, tokenizer, items):
    model = make_c2c("llama")
    questions = [format_prompt(item) for item in items["openbookqa"]]  # prompts of 86, 47 and 35 tokens
    for lm in (LM(model.receiver, tokenizer), LM(model.sharer, tokenizer), LM(model, tokenizer)):
        batched = lm.choice_scores(questions, [4] * len(questions))
        for question, scores in zip(questions, batched):
            torch.testing.assert_close(scores, lm.choice_scores([question], [4])[0], atol=1e-4, rtol=1e-4)
        generated = lm.generate(questions, 5)
        assert generated == [lm.generate([question], 5)[0] for question in questions]
        assert generated[0] == reference_generate(lm.model, tokenizer, questions[0], 5)


# --------------------------------------------------------------------------- logits mode


def boost_token(model, token_id: int, amount: float = 100.0):
    """Add `amount` to one vocabulary logit of `model`'s LM head (returns the hook handle)."""

    def hook(module, inputs, output):
        output = output.clone()
        output[..., token_id] += amount
        return output

    return model.get_output_embeddings().register_forward_hook(hook)


def test_logits_mode_picks_the_largest_letter_logit(make_c2c, tokenizer, items):
    model = make_c2c("qwen2")
    batch = items["arc_easy"] + items["openbookqa"]
    for lm in (LM(model.receiver, tokenizer), LM(model, tokenizer)):
        method = Direct("m", lm, Scoring("logits"))
        predictions = method.answer(batch)
        for item, prediction in zip(batch, predictions):  # unboosted: the argmax of the letters' logits
            letter_ids = tokenizer.convert_tokens_to_ids(list(item.letters))
            ids = tokenizer(lm.render(format_prompt(item)), add_special_tokens=False, return_tensors="pt")["input_ids"]
            logits = lm.model(input_ids=ids).logits[0, -1]
            assert prediction.predicted == int(logits[letter_ids].argmax())
        handle = boost_token(model.receiver, tokenizer.convert_tokens_to_ids("C"))
        try:
            assert [p.predicted for p in method.answer(batch)] == [2] * len(batch)
        finally:
            handle.remove()


def test_logits_mode_counts_letters_spelled_with_a_leading_space(receiver):
    tokens = ["<pad>", "<s>", "</s>", "<unk>", *"ABCD", *(f"Ġ{c}" for c in "ABCD")]
    backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    lm = LM(receiver, tokenizer)  # no chat template: the plain prompt
    assert lm.letter_token_ids[2] == sorted(tokenizer.convert_tokens_to_ids(["C", "ĠC"]))
    item = MCItem("arc_easy", "x/0", "Which one?", ("one", "two", "three", "four"), 0)
    handle = boost_token(receiver, tokenizer.convert_tokens_to_ids("ĠC"))
    try:
        assert Direct("m", lm, Scoring("logits")).answer([item])[0].predicted == 2
    finally:
        handle.remove()


# --------------------------------------------------------------------------- likelihood mode


def test_likelihood_mode_scores_each_choice_text_after_its_own_prompt(make_c2c, tokenizer, items):
    model = make_c2c("qwen2")
    batch = items["openbookqa"]  # prompts of different lengths: left padding, choices of different lengths
    for lm in (LM(model.receiver, tokenizer), LM(model, tokenizer)):
        scores = lm.choice_likelihoods([item.question for item in batch], [item.choices for item in batch])
        for item, row in zip(batch, scores):
            prompt = tokenizer(lm.render(item.question), add_special_tokens=False)["input_ids"]
            expected = []
            for choice in item.choices:  # one unpadded forward per choice; C2C fuses the prompt minus its last token
                answer = tokenizer(choice, add_special_tokens=False)["input_ids"]
                c2c_inputs = {"fuse_length": len(prompt) - 1} if lm.model is model else {}
                logits = lm.model(
                    input_ids=torch.tensor([prompt + answer]), logits_to_keep=len(answer) + 1, **c2c_inputs
                ).logits[0, :-1]  # (A, V): the positions that predict the answer's tokens
                log_likelihood = logits.log_softmax(-1).gather(-1, torch.tensor(answer)[:, None]).sum()
                expected.append(log_likelihood / len(choice))
            torch.testing.assert_close(row, torch.stack(expected), atol=1e-4, rtol=1e-4)
        predictions = Direct("m", lm, Scoring("likelihood", prompt="open")).answer(batch)
        assert [p.predicted for p in predictions] == [int(row.argmax()) for row in scores]
    assert not torch.allclose(scores[0], LM(model.receiver, tokenizer).choice_likelihoods([batch[0].question],
                                                                                          [batch[0].choices])[0])


# --------------------------------------------------------------------------- router


def test_router_fitted_on_one_always_right_model_routes_to_it():
    torch.manual_seed(0)
    train, test = torch.rand(40, 4), torch.rand(25, 4)
    assert Router().fit(train, torch.ones(40, dtype=torch.bool)).route(test).all()
    assert not Router().fit(train, torch.zeros(40, dtype=torch.bool)).route(test).any()
    # A learnable rule: the sharer is right exactly when it is confident.
    labels = train[:, 2] > 0.5
    assert (Router(l2=1e-4).fit(train, labels).route(train) == labels).float().mean() >= 0.9


def test_router_probability_minimises_the_l2_regularised_mean_log_loss():
    # The documented objective, minimised independently: mean log-loss + l2 * ||weights||^2 over standardised
    # features (intercept unpenalised).
    from scipy.optimize import minimize

    torch.manual_seed(1)
    features = torch.rand(60, 4)
    labels = (features[:, 2] - features[:, 0] + 0.3 * torch.randn(60)) > 0
    x = ((features - features.mean(0)) / features.std(0, unbiased=False)).double().numpy()
    y = labels.double().numpy()
    l2 = 0.05

    def objective(params):
        logits = x @ params[:-1] + params[-1]
        return float((np.logaddexp(0, logits) - y * logits).mean() + l2 * (params[:-1] ** 2).sum())

    params = minimize(objective, np.zeros(5), method="BFGS", options={"gtol": 1e-10}).x
    expected = torch.sigmoid(torch.from_numpy(x @ params[:-1] + params[-1])).float()
    torch.testing.assert_close(Router(l2=l2).fit(features, labels).sharer_probability(features), expected, atol=1e-4, rtol=0)


def test_unfitted_router_routes_by_confidence():
    features = torch.tensor([[0.9, 0.1, 0.4, 0.8], [0.3, 0.9, 0.7, 0.2]])
    assert Router().route(features).tolist() == [False, True]


class FixedScores:
    """Stands in for an `LM` in routing: fixed choice scores, `margin` on the gold choice (or on a wrong one)."""

    def __init__(self, items: list[MCItem], right: bool, margin: float):
        self.by_question = {}
        for item in items:
            scores = torch.zeros(len(item.choices))
            scores[item.gold if right else (item.gold + 1) % len(item.choices)] = margin
            self.by_question[format_prompt(item)] = scores

    def scores(self, user_texts, items, mode):
        return [self.by_question[text] for text in user_texts]


def test_routing_fit_overrides_confidence():
    items = load_benchmark("arc_challenge", FIXTURES / "arc_challenge.jsonl") + load_benchmark(
        "openbookqa", FIXTURES / "openbookqa.jsonl"
    )
    # The receiver is confident and always wrong; the sharer is hesitant and always right.
    receiver, sharer = FixedScores(items, right=False, margin=5.0), FixedScores(items, right=True, margin=1.0)
    routing = Routing(receiver, sharer, Scoring("logits"))
    unfitted = routing.answer(items)
    assert {p.details["route"] for p in unfitted} == {"receiver"} and not any(p.correct for p in unfitted)
    assert routing.fit(items, batch_size=3) == len(items)
    fitted = routing.answer(items)
    assert {p.details["route"] for p in fitted} == {"sharer"} and all(p.correct for p in fitted)



class FixedScoresAndAnswers(FixedScores):
    """`FixedScores` whose generated answer names a choice of its own (the gold letter, or a wrong one)."""

    def __init__(self, items: list[MCItem], right: bool, margin: float, answers_right: bool):
        super().__init__(items, right, margin)
        self.answers = {}
        for item in items:
            choice = item.gold if answers_right else (item.gold + 1) % len(item.choices)
            self.answers[format_prompt(item)] = f"The answer is {item.letters[choice]}."

    def generate(self, user_texts, max_new_tokens):
        return [(self.answers[text], 5) for text in user_texts]


def test_routing_fit_in_generate_mode_judges_each_model_by_its_generated_answer():
    """In generate mode the routed models answer by generating, so the router learns which one generates the right
    answer, even where their letter scores say the opposite."""
    items = load_benchmark("arc_challenge", FIXTURES / "arc_challenge.jsonl")
    # Letter scores: the receiver looks right and the sharer wrong; generated answers: the other way round.
    receiver = FixedScoresAndAnswers(items, right=True, margin=1.0, answers_right=False)
    sharer = FixedScoresAndAnswers(items, right=False, margin=5.0, answers_right=True)
    routing = Routing(receiver, sharer, Scoring("generate"))
    assert routing.fit(items, batch_size=2) == len(items)
    fitted = routing.answer(items)
    assert {p.details["route"] for p in fitted} == {"sharer"} and all(p.correct for p in fitted)


# --------------------------------------------------------------------------- statistics


@pytest.mark.parametrize(
    "correct, n, expected",
    [(50, 100, (0.4038, 0.5962)), (0, 10, (0.0, 0.2775)), (10, 10, (0.7225, 1.0)), (81, 263, (0.2553, 0.3658))],
)
def test_wilson_interval(correct, n, expected):
    assert wilson_interval(correct, n) == pytest.approx(expected, abs=5e-4)


def test_wilson_interval_without_items():
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_interval_widens_with_confidence():
    low95, high95 = wilson_interval(30, 60)
    low99, high99 = wilson_interval(30, 60, confidence=0.99)
    assert low99 < low95 < 0.5 < high95 < high99
    assert (low99, high99) == pytest.approx((0.3422, 0.6578), abs=5e-4)  # z = 2.5758


def test_normal_mean_interval_by_hand():
    """Mean 1/3 of six per-question differences; squared deviations sum to 30/9: sample variance 2/3, population 5/9."""
    values = [1.0, 0.0, 0.0, 1.0, 1.0, -1.0]
    mean, (low, high) = normal_mean_interval(values, ddof=1)
    assert mean == pytest.approx(1 / 3) and (low, high) == pytest.approx((1 / 3 - 0.653321, 1 / 3 + 0.653321), abs=1e-6)
    _, (low, high) = normal_mean_interval(values)  # ddof=0: half-width 1.959964 * sqrt(5/9 / 6)
    assert (low, high) == pytest.approx((1 / 3 - 0.596398, 1 / 3 + 0.596398), abs=1e-6)


def test_t_interval_over_seeds():
    mean, (low, high) = t_interval([0.70, 0.75, 0.80])
    # standard error 0.05 / sqrt(3); t quantile 0.975 with 2 degrees of freedom: 4.302653
    half = 4.302653 * 0.05 / 3**0.5
    assert mean == pytest.approx(0.75) and (low, high) == pytest.approx((0.75 - half, 0.75 + half), abs=1e-6)
    _, (low90, high90) = t_interval([0.70, 0.75, 0.80], confidence=0.90)
    assert low < low90 < high90 < high
    assert t_interval([0.8, 0.8]) == (0.8, (0.8, 0.8))
    with pytest.raises(ValueError, match="at least two values"):
        t_interval([0.8])


def test_paired_difference_counts_disagreements_and_matches_items_by_id():
    # 10 items: both right on 0-3, both wrong on 4-5, only this method right on 6-8, only the baseline on 9.
    this = [{"id": f"q{i}", "correct": i < 4 or 6 <= i <= 8} for i in range(10)]
    baseline = [{"id": f"q{i}", "correct": i < 4 or i == 9} for i in reversed(range(10))]  # order does not matter
    paired = paired_difference(this, baseline)
    # difference (3 - 1) / 10 = 0.2; variance ((3 + 1) / 10 - 0.2^2) / 10 = 0.036; half-width 1.96 * 0.1897
    assert paired["difference"] == pytest.approx(0.2)
    assert paired["ci95"] == pytest.approx([0.2 - 0.37188, 0.2 + 0.37188], abs=1e-4)
    assert (paired["n"], paired["only_this"], paired["only_baseline"]) == (10, 3, 1)
    assert paired_difference(this, this)["ci95"] == [0.0, 0.0]
    with pytest.raises(ValueError, match=r"same items; item ids only in the predictions: 1, only in the baseline: 0\. Evaluate both"):
        paired_difference(this, baseline[1:])


# --------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """Tiny bases with the word tokenizer saved to folders, and a C2C checkpoint whose config points to them."""
    root = tmp_path_factory.mktemp("eval")
    tokenizer = eval_tokenizer()
    for name, config, seed in (("receiver", receiver_config(), 0), ("sharer", sharer_configs()["qwen2"], 1)):
        build(config, seed=seed).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    bases = [AutoModelForCausalLM.from_pretrained(root / name) for name in ("receiver", "sharer")]
    torch.manual_seed(0)
    sharer_tokenizer = AutoTokenizer.from_pretrained(root / "sharer")
    model = C2CForCausalLM.from_base_models(*bases, tokenizer, sharer_tokenizer, **FUSER_KWARGS)
    model.save_pretrained(root / "c2c")
    return root


def test_cli_runs_on_a_saved_checkpoint(checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    main([
        "--model", str(checkpoint / "c2c"),
        "--benchmarks", "arc_easy", "openbookqa",
        "--benchmark-paths", f"arc_easy={FIXTURES / 'arc_easy.jsonl'}", f"openbookqa={FIXTURES / 'openbookqa.jsonl'}",
        f"arc_challenge={FIXTURES / 'arc_challenge.jsonl'}",
        "--routing-fit-benchmark", "arc_challenge",
        "--max-new-tokens", "4", "--hint-tokens", "4", "--batch-size", "2", "--limit", "2",
        "--output", str(out),
    ])  # fmt: skip
    report = json.loads((out / "results.json").read_text())
    assert report["config"]["methods"] == list(METHODS)
    assert report["config"]["routing_fit"]["items"] == 4
    # the bases evaluated, read from the checkpoint's config, as a run from the bases alone records them
    assert (report["config"]["receiver"], report["config"]["sharer"]) == (
        str(checkpoint / "receiver"), str(checkpoint / "sharer")
    )
    assert (out / "accuracy_latency.png").stat().st_size > 0
    for by_benchmark in report["results"].values():
        assert [s["n"] for s in by_benchmark.values()] == [2, 2]
    assert "| c2c |" in capsys.readouterr().out


def test_cli_baselines_from_bases_and_c2c_refused_without_a_checkpoint(checkpoint, tmp_path):
    bases = ["--receiver", str(checkpoint / "receiver"), "--sharer", str(checkpoint / "sharer")]
    data = ["--benchmarks", "arc_easy", "--benchmark-paths", f"arc_easy={FIXTURES / 'arc_easy.jsonl'}"]
    with pytest.raises(SystemExit):
        main([*bases, *data, "--methods", "receiver", "c2c", "--output", str(tmp_path / "refused")])
    assert not (tmp_path / "refused").exists()
    main([*bases, *data, "--mode", "logits", "--hint-tokens", "4", "--output", str(tmp_path / "out")])
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert list(report["results"]) == ["receiver", "sharer", "t2t", "routing"]
    assert report["config"]["mode"] == "logits"
    assert (report["config"]["receiver"], report["config"]["sharer"]) == (bases[1], bases[3])
    main([*bases, *data, "--prompt", "open", "--max-new-tokens", "3", "--hint-tokens", "3", "--limit", "2",
          "--output", str(tmp_path / "open")])  # fmt: skip
    report = json.loads((tmp_path / "open" / "results.json").read_text())
    assert list(report["results"]) == ["receiver", "sharer", "t2t"]  # routing needs letters: not a default here
    assert report["config"]["prompt"] == "open"


def test_training_folder_without_a_saved_model_names_its_last_checkpoint(tmp_path):
    for step in (25, 50):
        (tmp_path / f"checkpoint-{step}").mkdir()
    with pytest.raises(ValueError) as error:
        load_models(str(tmp_path))
    assert str(error.value) == (
        f"{tmp_path} holds no saved model (no config.json): pass a Trainer checkpoint in it, the last is "
        f"{tmp_path / 'checkpoint-50'}, or let training finish, which saves the model there."
    )


# --------------------------------------------------------------------------- merging reports run apart


def method_report(items, method: str, picks: dict[str, list[int]], folder: Path, **settings) -> dict:
    """Write and return the report `c2c-hf eval` writes for one method that picked `picks[benchmark][i]` on each item
    (no models run)."""
    results = {method: {b: [Prediction(item, pick, "", 1, latency=0.5) for item, pick in zip(items[b], picks[b])]
                        for b in picks}}  # fmt: skip
    return write_report(results, folder, {"model": "c2c", "mode": "generate", "limit": 10, "seed": 0, **settings})


def test_merge_puts_reports_run_apart_side_by_side(items, tmp_path, capsys):
    golds = {b: [item.gold for item in items[b]] for b in items}
    wrong = {b: [(g + 1) % len(item.choices) for g, item in zip(golds[b], items[b])] for b in items}
    method_report(items, "c2c", golds, tmp_path / "c2c")
    method_report(items, "receiver", {"openbookqa": wrong["openbookqa"]}, tmp_path / "receiver-obqa")
    method_report(items, "receiver", {"arc_easy": wrong["arc_easy"]}, tmp_path / "receiver-arc")
    folders = [str(tmp_path / name) for name in ("c2c", "receiver-obqa", "receiver-arc")]
    main(["--merge", *folders, "--output", str(tmp_path / "merged")])

    report = json.loads((tmp_path / "merged" / "results.json").read_text())
    assert list(report["results"]) == ["receiver", "c2c"]  # METHODS order, not the order given
    assert report["config"]["benchmarks"] == ["arc_easy", "openbookqa"]
    assert report["config"]["limit"] == 10 and len(report["config"]["merged_from"]) == 3
    for benchmark in items:
        assert report["results"]["c2c"][benchmark]["accuracy"] == 1.0
        assert report["results"]["receiver"][benchmark]["correct"] == 0
    assert (tmp_path / "merged" / "accuracy_latency.png").stat().st_size > 0
    source = json.loads((tmp_path / "c2c" / "results.json").read_text())["results"]["c2c"]["arc_easy"]
    merged = report["results"]["c2c"]["arc_easy"]
    assert merged["predictions"] == [
        {key: p[key] for key in ("id", "gold", "predicted", "correct")} for p in source["predictions"]
    ]  # each question's outcome, so that `question_outcomes` works on a merged report
    assert {k: v for k, v in merged.items() if k != "predictions"} == {
        k: v for k, v in source.items() if k != "predictions"
    }  # every summary field kept; the answers stay in the source report only
    table = capsys.readouterr().out
    assert "| receiver | 0.0 [" in table and "| c2c | 100.0 [" in table
    n = {b: len(items[b]) for b in items}  # paired with the receiver: c2c alone is right on every item
    assert f"| c2c | +100.0 [+100.0, +100.0] ({n['arc_easy']} / 0) | +100.0 [+100.0, +100.0] ({n['openbookqa']} / 0) |" in table
    again = merge_reports([report, method_report(items, "sharer", golds, tmp_path / "sharer")])
    assert list(again["results"]) == ["receiver", "sharer", "c2c"] and len(again["config"]["merged_from"]) == 4
    # baselines need no fuser: a report from the bases alone (no model) merges with the fuser's, which names the model
    from_bases = method_report(items, "sharer", golds, tmp_path / "sharer-bases", model=None)
    assert merge_reports([from_bases, report])["config"]["model"] == "c2c"


def test_merge_refuses_reports_that_do_not_compare(items, tmp_path):
    golds = {b: [item.gold for item in items[b]] for b in items}
    c2c = method_report(items, "c2c", golds, tmp_path / "c2c")
    with pytest.raises(ValueError, match="different hint_tokens: 64 vs 256; evaluate every method with the same"):
        merge_reports([method_report(items, "t2t", golds, tmp_path / "t2t", hint_tokens=64),
                       method_report(items, "c2c", golds, tmp_path / "c2c-256", hint_tokens=256)])  # fmt: skip
    with pytest.raises(ValueError, match="c2c on arc_easy appears in two reports"):
        merge_reports([c2c, method_report(items, "c2c", {"arc_easy": golds["arc_easy"]}, tmp_path / "again")])
    fewer = method_report(
        {"arc_easy": items["arc_easy"][1:]}, "receiver", {"arc_easy": golds["arc_easy"][1:]}, tmp_path / "fewer"
    )
    with pytest.raises(ValueError, match="receiver and c2c were evaluated on different arc_easy items"):
        merge_reports([c2c, fewer])
    with pytest.raises(ValueError, match="Nothing to merge"):
        merge_reports([])
    other_fuser = method_report(items, "c2c", golds, tmp_path / "other", model="c2c-2")
    with pytest.raises(ValueError, match="different model: 'c2c' vs 'c2c-2'"):
        merge_reports([c2c, method_report(items, "receiver", golds, tmp_path / "r"), other_fuser])
    other_bases = method_report(items, "receiver", golds, tmp_path / "bases", model=None, receiver="other")
    with pytest.raises(ValueError, match="different receiver: None vs 'other'"):
        merge_reports([c2c, other_bases])
    with pytest.raises(SystemExit):  # no results.json there
        main(["--merge", str(tmp_path / "absent"), "--output", str(tmp_path / "out")])
    with pytest.raises(SystemExit):  # merging evaluates nothing
        main(["--merge", str(tmp_path / "c2c"), "--model", "c2c", "--output", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- environment


def test_every_report_records_its_environment_and_a_stated_protocol():
    import platform
    import subprocess

    import transformers

    from c2c_hf.evaluation import build_report, merge_reports
    item = MCItem("arc_easy", "q-0", "Which one?", ("a", "b"), 0)
    results = {"receiver": {"arc_easy": [Prediction(item, 0, "A", 1)]}}
    report = build_report(results, {"mode": "logits"}, {"selected_on": "validation", "test_evaluations": 1})
    env = report["environment"]
    assert (env["python"], env["torch"], env["transformers"]) == (
        platform.python_version(), torch.__version__, transformers.__version__,
    )  # fmt: skip
    assert env["torch_threads"] == torch.get_num_threads() and env["device"].startswith(("cpu:", "cuda:"))
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=FIXTURES).stdout.strip()
    assert (env["git_commit"] or "").removesuffix("+dirty") == head  # both empty outside a git checkout
    assert report["protocol"] == {"selected_on": "validation", "test_evaluations": 1}
    assert "protocol" not in build_report(results, {"mode": "logits"})  # stated by the caller, never invented
    merged = merge_reports([report])
    assert merged["sources_environment"] == [env] and merged["environment"]["torch"] == torch.__version__


def test_git_commit_outside_a_checkout_is_none(tmp_path):
    from c2c_hf.evaluation.environment import git_commit

    assert git_commit(tmp_path) is None
