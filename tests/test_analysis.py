"""The paper's analyses (`c2c_hf.analysis`): contracts of each function, exact endpoints, and the CLI."""

from __future__ import annotations

import json
import math
import string
from pathlib import Path

import pytest
import torch
from conftest import FUSER_KWARGS, set_gates
from tiny_models import VOCAB, build, receiver_config, sharer_configs, word_tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from c2c_hf import C2CForCausalLM, build_layer_map
from c2c_hf.analysis import (
    Example,
    cache_effective_rank,
    cache_enrichment_oracle,
    cache_transfer_oracle,
    effective_rank,
    fused_positions,
    gate_map,
    kv_of,
    main,
    prefill,
    progressive_fusion,
)
from c2c_hf.cli import main as c2c_hf
from c2c_hf.data import format_prompt
from c2c_hf.evaluation import LM, load_benchmark

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"
WORDS = "the sun is a star water boils at hundred degrees Paris capital of France what which answer letter"


def random_examples(
    count: int, prompt_len: int = 10, answer_len: int = 3, context_len: int = 0, seed: int = 0
) -> list[Example]:
    generator = torch.Generator().manual_seed(seed)

    def ids(n: int) -> torch.Tensor:
        return torch.randint(3, VOCAB, (n,), generator=generator)

    return [Example(ids(prompt_len), ids(answer_len), ids(context_len) if context_len else None) for _ in range(count)]


def answer_loss(model, example: Example, **kwargs) -> float:
    """Reference: one forward over prompt + answer, loss on the answer tokens only."""
    ids = torch.cat([example.prompt_ids, example.answer_ids])[None]
    labels = torch.cat([torch.full_like(example.prompt_ids, -100), example.answer_ids])[None]
    with torch.no_grad():
        return float(model(input_ids=ids, labels=labels, **kwargs).loss)


def tokenizer_for_tests():
    return word_tokenizer(list(string.ascii_uppercase) + list(".,:;?!()-'") + WORDS.split())


# --------------------------------------------------------------------------- effective rank


def test_effective_rank_of_known_matrices():
    u, v = torch.randn(7, 1, dtype=torch.float64), torch.randn(1, 5, dtype=torch.float64)
    assert effective_rank(u @ v) == pytest.approx(1.0, abs=1e-9)
    assert effective_rank((u @ v).float()) == pytest.approx(1.0, abs=1e-5)  # fp32 rounding: tiny extra values
    assert effective_rank(torch.eye(6)) == pytest.approx(6.0, abs=1e-9)
    assert effective_rank(3.5 * torch.eye(4)) == pytest.approx(4.0, abs=1e-9)  # scale invariant
    spectrum = torch.tensor([4.0, 2.0, 1.0, 1.0], dtype=torch.float64)  # p = 1/2, 1/4, 1/8, 1/8
    expected = 2**1.75  # exp(H), H = (1/2 + 2/4 + 2 * 3/8) ln 2
    rotation = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))[0]
    assert effective_rank(torch.diag(spectrum)) == pytest.approx(expected, rel=1e-9)
    assert effective_rank(rotation @ torch.diag(spectrum) @ rotation.T) == pytest.approx(expected, rel=1e-9)
    for shape in ((9, 4), (3, 8)):
        value = effective_rank(torch.randn(*shape))
        assert 1.0 <= value <= min(shape)
    assert effective_rank(torch.zeros(3, 3)) == 0.0


# --------------------------------------------------------------------------- enrichment oracle


@pytest.mark.parametrize("name", ["qwen3", "gemma3"])  # gemma3: sliding-window layers keep only their tail
def test_enrichment_with_empty_context_is_the_plain_run_exactly(receiver, sharers, name):
    lm = receiver if name == "qwen3" else sharers["gemma3"]
    examples = random_examples(3)
    result = cache_enrichment_oracle(lm, None, examples)
    assert result["n"] == 3 and result["loss_delta"] == 0 and result["accuracy_delta"] == 0
    for record, example in zip(result["examples"], examples):
        assert record["context_tokens"] == 0
        assert record["plain"] == record["enriched"]
        # The plain run (cache [0, L-1), then the rest) is the receiver's one-pass answer loss.
        assert record["plain"]["loss"] == pytest.approx(answer_loss(lm, example), abs=1e-5)


def test_enrichment_with_context_keeps_the_length_and_changes_the_cache(receiver):
    examples = random_examples(4, context_len=5, seed=1)
    result = cache_enrichment_oracle(receiver, None, examples)
    assert set(result) >= {"n", "plain", "enriched", "loss_delta", "accuracy_delta", "improved_fraction", "examples"}
    assert [r["context_tokens"] for r in result["examples"]] == [5] * 4
    for summary in (result["plain"], result["enriched"]):
        assert 0 <= summary["accuracy"] <= 1 and math.isfinite(summary["loss"]) and summary["n"] == 4
    assert all(r["plain"]["loss"] != r["enriched"]["loss"] for r in result["examples"])
    # Context at negative positions is the natural run of context + prompt up to RoPE: values carry no rotation,
    # so the prompt positions' values equal those of the run at positions 0..C+L-2.
    example = examples[0]
    ids = torch.cat([example.context_ids, example.prompt_ids[:-1]])[None]
    with torch.no_grad():
        natural = kv_of(prefill(receiver, ids, cache=DynamicCache()))
        shifted = kv_of(
            prefill(receiver, ids, position_ids=torch.arange(-5, ids.shape[1] - 5)[None], cache=DynamicCache())
        )
    for (_, natural_values), (_, shifted_values) in zip(natural, shifted):
        torch.testing.assert_close(shifted_values, natural_values, atol=1e-5, rtol=1e-4)


def test_enrichment_reads_text_rows_with_a_tokenizer(receiver):
    tokenizer = tokenizer_for_tests()
    rows = [
        {"prompt": "what is the capital of France", "answer": "Paris", "context": "Paris is the capital of France"},
        {"prompt": "water boils at what degrees", "answer": "hundred"},
    ]
    result = cache_enrichment_oracle(receiver, tokenizer, rows)
    assert [r["context_tokens"] for r in result["examples"]] == [6, 0]
    assert result["examples"][1]["plain"] == result["examples"][1]["enriched"]
    with pytest.raises(ValueError, match="tokenizer"):
        cache_enrichment_oracle(receiver, None, rows)


# --------------------------------------------------------------------------- transfer oracle


def test_transfer_oracle_learns_a_map_better_than_zero(receiver, sharers):
    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, VOCAB, (16,), generator=generator) for _ in range(40)]
    result = cache_transfer_oracle(sharers["qwen2"], receiver, prompts, hidden_size=64, steps=200, batch_tokens=256)
    assert result["layer_map"] == build_layer_map("terminal", 4, 3)
    assert (result["train_prompts"], result["heldout_prompts"]) == (30, 10)
    for branch in ("key", "value"):
        r = result["reconstruction"][branch]
        assert len(r["relative_mse"]) == len(r["cosine"]) == len(r["mean_baseline_relative_mse"]) == 4
        assert all(math.isfinite(x) and x >= 0 for x in r["relative_mse"])
        assert all(-1 <= c <= 1 for c in r["cosine"])
        assert r["zero_baseline_relative_mse"] == 1.0
        assert r["relative_mse_mean"] < 1.0  # below the zero map
        assert r["relative_mse"][0] < r["mean_baseline_relative_mse"][0]  # and below the training mean
    assert set(result["decoding"]) == {"own", "mapped", "zero", "empty"}
    for summary in result["decoding"].values():
        assert summary["n"] == 10 and math.isfinite(summary["loss"]) and 0 <= summary["accuracy"] <= 1


def test_transfer_oracle_refuses_unusable_inputs(receiver, sharers):
    prompts = [torch.arange(3, 11)]
    with pytest.raises(ValueError, match="at least 2 prompts"):
        cache_transfer_oracle(sharers["qwen2"], receiver, prompts)
    with pytest.raises(ValueError, match="one source token"):
        cache_transfer_oracle(sharers["qwen2"], receiver, prompts * 2, [torch.arange(3, 9)] * 2)


# --------------------------------------------------------------------------- cache effective rank


def test_cache_effective_rank_own_vs_fused(make_c2c):
    model = make_c2c()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, VOCAB, (3, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # row 0: an 8-token prompt, left-padded
    result = cache_effective_rank(model, ids, mask, batch_size=2)
    heads_dim = 2 * 16
    assert result["sequences"] == 3
    for branch in ("key", "value"):
        for name in ("original", "fused"):
            values = result[branch][name]
            assert len(values) == 4 and all(1 <= v <= min(11, heads_dim) for v in values)
            assert result[branch][f"{name}_mean"] == pytest.approx(sum(values) / 4)
        assert result[branch]["original"] != result[branch]["fused"]
    # Padding is excluded: the padded row alone, unpadded, gives the same ranks.
    alone = cache_effective_rank(model, ids[:1, 4:])
    padded = cache_effective_rank(model, ids[:1], mask[:1])
    for branch in ("key", "value"):
        for name in ("original", "fused"):
            assert padded[branch][name] == pytest.approx(alone[branch][name], abs=1e-4)
    set_gates(model, -1.0)  # every gate closed: the fused cache is the receiver's own
    closed = cache_effective_rank(model, ids, mask)
    assert (
        closed["key"]["original"] == closed["key"]["fused"] and closed["value"]["original"] == closed["value"]["fused"]
    )


# --------------------------------------------------------------------------- progressive fusion


def test_fused_positions():
    assert fused_positions(8, 0.25, "last").tolist() == [False] * 6 + [True] * 2
    assert fused_positions(8, 0.25, "first").tolist() == [True] * 2 + [False] * 6
    assert not fused_positions(5, 0.0, "last").any() and fused_positions(5, 1.0, "first").all()
    assert int(fused_positions(7, 0.5, "last").sum()) == 4  # round half up
    with pytest.raises(ValueError, match="side"):
        fused_positions(4, 0.5, "middle")


def c2c_over(receiver, sharer, seed: int = 0) -> C2CForCausalLM:
    """A C2C model with a visible seeded fuser (as `make_c2c`), for any pair of bases."""
    torch.manual_seed(seed)
    model = C2CForCausalLM.from_base_models(receiver, sharer, **FUSER_KWARGS)
    with torch.no_grad():
        for layer in model.fuser.layers:
            for branch in (layer.key, layer.value):
                branch.out_proj.weight.normal_(std=0.5)
    return model.eval()


@pytest.mark.parametrize("receiver_name", ["qwen3", "gemma3"])  # gemma3: fusion of the sliding layers' tail
def test_progressive_fusion_endpoints_are_receiver_and_c2c(receiver, sharers, receiver_name):
    base = receiver if receiver_name == "qwen3" else sharers["gemma3"]
    model = c2c_over(base, sharers["qwen2"])
    examples = random_examples(3, prompt_len=11, answer_len=3, seed=2)
    fractions = (0.0, 0.3, 0.6, 1.0)
    result = progressive_fusion(model, examples, fractions, side="both")
    assert result["fractions"] == list(fractions) and result["n"] == 3 and set(result["curves"]) == {"last", "first"}
    alone = [answer_loss(base, e) for e in examples]
    c2c = [answer_loss(model, e, fuse_length=len(e.prompt_ids) - 1) for e in examples]
    assert alone != pytest.approx(c2c, abs=1e-3)  # the fuser is visible
    for curve in result["curves"].values():
        assert [point["fraction"] for point in curve] == list(fractions)
        for point in curve:
            assert 0 <= point["accuracy"] <= 1 and math.isfinite(point["loss"]) and point["n"] == 3
        assert [s["loss"] for s in curve[0]["examples"]] == pytest.approx(alone, abs=1e-5)
        assert [s["loss"] for s in curve[-1]["examples"]] == pytest.approx(c2c, abs=1e-5)
        assert curve[1]["loss"] != pytest.approx(curve[0]["loss"], abs=1e-7)  # partial fusion is in between
    with pytest.raises(ValueError, match="side"):
        progressive_fusion(model, examples, side="middle")


def test_progressive_fusion_on_multiple_choice_items(make_c2c):
    model = make_c2c()
    tokenizer = tokenizer_for_tests()
    items = load_benchmark("arc_easy", FIXTURES / "arc_easy.jsonl")[:2]
    result = progressive_fusion(model, items, (0.0, 1.0), side="last", tokenizer=tokenizer)
    assert result["metric"] == "choice accuracy"
    curve = result["curves"]["last"]
    texts, counts = [format_prompt(item) for item in items], [len(item.choices) for item in items]
    with torch.no_grad():
        references = [LM(m, tokenizer).choice_scores(texts, counts) for m in (model.receiver, model)]
    for point, reference in zip(curve, references):  # fraction 0: the receiver's letter logits; 1.0: C2C's
        assert "loss" not in point
        for score, item, expected in zip(point["examples"], items, reference):
            assert score["scores"] == pytest.approx(expected.tolist(), abs=1e-5)
            assert score["correct"] == float(score["prediction"] == item.gold)


# --------------------------------------------------------------------------- gate map


def test_gate_map_reports_open_gates_and_dynamic_weights(make_c2c):
    model = make_c2c()
    with torch.no_grad():
        model.fuser.layers[1].key.gate_logit.fill_(-0.5)
        model.fuser.layers[2].value.gate_logit.fill_(-2.0)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, VOCAB, (3, 9), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    result = gate_map(model, ids, mask)
    open_gates = model.fuser.open_gates()
    assert (result["layers"], result["heads"]) == (4, 2)
    assert result["open"]["key"] == open_gates[:, 0].tolist() and result["open"]["value"] == open_gates[:, 1].tolist()
    assert result["open_fraction"] == pytest.approx(6 / 8)
    assert result["gate_logits"]["key"][1] == pytest.approx(-0.5)
    assert result["tokens"] == 3 * 8 - 3  # real prompt-cache tokens
    for b, branch in enumerate(("key", "value")):
        for layer, weights in enumerate(result["dynamic_weight"][branch]):
            if not open_gates[layer, b]:
                assert weights is None and result["dynamic_weight_mean"][branch][layer] is None
            else:
                assert len(weights) == 2 and all(0 < w < 1 for w in weights)

    # One unpadded prompt: the weights are the fuser branch's sigmoid(weight_head(...)) averaged over tokens.
    one = gate_map(model, ids[:1])
    with torch.no_grad():
        prompt = ids[:1, :-1]
        sharer_cache = model.sharer_prefill(prompt, None)
        own = model.receiver(input_ids=prompt, use_cache=True).cache
        branch, layer, sharer_layer = model.fuser.layers[3].value, 3, model.fuser.layer_map[3]
        features = torch.cat(
            [
                sharer_cache.layers[sharer_layer].values.transpose(1, 2).flatten(2),
                own.layers[layer].values.transpose(1, 2).flatten(2),
            ],
            -1,
        )
        expected = torch.sigmoid(branch.weight_head(branch.weight_block(branch.shared_block(branch.in_proj(features)))))
    assert one["dynamic_weight"]["value"][3] == pytest.approx(expected[0].mean(0).tolist(), abs=1e-6)


def test_gate_map_refuses_a_projection_fuser(make_c2c):
    model = make_c2c(fusion="projection")
    with pytest.raises(ValueError, match="this fuser's fusion is 'projection'"):
        gate_map(model, torch.randint(3, VOCAB, (1, 6)))


def test_gate_map_reads_the_dynamic_weights_of_a_fuser_without_gates(make_c2c):
    model = make_c2c(fusion="weighted")
    assert not model.fuser.has_gates
    result = gate_map(model, torch.randint(3, VOCAB, (2, 7), generator=torch.Generator().manual_seed(0)))
    assert result["open_fraction"] == 1.0 and result["tokens"] == 2 * 6
    assert all(logit == math.inf for logit in result["gate_logits"]["key"] + result["gate_logits"]["value"])
    for branch in ("key", "value"):
        for weights in result["dynamic_weight"][branch]:
            assert len(weights) == 2 and all(0 < w < 1 for w in weights)


def test_analyses_refuse_a_model_in_training_mode(make_c2c):
    model = make_c2c().train()
    with pytest.raises(ValueError, match="eval"):
        gate_map(model, torch.randint(3, VOCAB, (1, 6)))


# --------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """Tiny bases with a word tokenizer saved to folders, a C2C checkpoint naming them, and a jsonl of examples."""
    root = tmp_path_factory.mktemp("analysis")
    tokenizer = tokenizer_for_tests()
    for name, config, seed in (("receiver", receiver_config(), 0), ("sharer", sharer_configs()["qwen2"], 1)):
        build(config, seed=seed).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    bases = [AutoModelForCausalLM.from_pretrained(root / name) for name in ("receiver", "sharer")]
    torch.manual_seed(0)
    model = C2CForCausalLM.from_base_models(
        *bases, tokenizer, AutoTokenizer.from_pretrained(root / "sharer"), **FUSER_KWARGS
    )
    model.save_pretrained(root / "c2c")
    rows = [
        {"prompt": "what is the capital of France", "answer": "Paris", "context": "Paris is the capital of France"},
        {"prompt": "water boils at what degrees", "answer": "hundred", "context": "water boils at hundred degrees"},
        {"prompt": "the sun is a what", "answer": "star", "context": "the sun is a star"},
        {"prompt": "which is the capital of France", "answer": "Paris"},
    ]
    (root / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return root


@pytest.mark.parametrize(
    "analysis, extra",
    [
        ("enrichment", []),
        ("gates", ["--batch-size", "2"]),
        ("rank", []),
        ("transfer", ["--steps", "5", "--hidden-size", "8", "--train-fraction", "0.5"]),
        ("progressive", ["--benchmark", "arc_easy", "--fractions", "0", "0.5", "1", "--limit", "2"]),
    ],
)
def test_cli_writes_json_and_png(checkpoint, tmp_path, analysis, extra):
    data = str(FIXTURES / "arc_easy.jsonl") if "--benchmark" in extra else str(checkpoint / "data.jsonl")
    main([analysis, "--model", str(checkpoint / "c2c"), "--data", data, "--output", str(tmp_path), *extra])
    report = json.loads((tmp_path / f"{analysis}.json").read_text())
    assert report["analysis"] == analysis and report["config"]["analysis"] == analysis
    assert (tmp_path / f"{analysis}.png").stat().st_size > 0
    if analysis == "progressive":
        assert set(report["result"]["curves"]) == {"last", "first"} and report["result"]["n"] == 2
    if analysis == "enrichment":
        assert report["result"]["n"] == 4


def test_c2c_hf_analyze_runs_the_analysis_command(checkpoint, tmp_path):
    c2c_hf(["analyze", "gates", "--model", str(checkpoint / "c2c"), "--data", str(checkpoint / "data.jsonl"),
            "--output", str(tmp_path)])  # fmt: skip
    written = json.loads((tmp_path / "gates.json").read_text())
    assert written["analysis"] == "gates"
    assert written["protocol"]["selected_on"] is None and written["environment"]["torch"] == torch.__version__


def test_cli_needs_data(checkpoint, tmp_path):
    with pytest.raises(SystemExit):
        main(["rank", "--model", str(checkpoint / "c2c"), "--output", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["enrichment", "--model", str(checkpoint / "c2c"), "--benchmark", "arc_easy", "--output", str(tmp_path)])
    assert not list(tmp_path.iterdir())
