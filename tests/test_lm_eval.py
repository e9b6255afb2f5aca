"""A saved C2C model under lm-evaluation-harness's stock `hf` model type, on two local tasks over the same docs.

- `c2c_tiny_mc` scores one-token continuations (the answer letter) with batch size 1: lm-eval then runs
  `model(context)` and reads the last position's logits, which is exactly C2C's "prefill, then fuse" prediction of the
  answer token. lm-eval's per-choice log-likelihoods are checked against that computation done here directly.
  (Multi-token continuations, or batches that right-pad shorter rows, would not be scored with C2C semantics by the
  stock `hf` model: it refuses them, see the last test.)
- `c2c_tiny_gen` answers by greedy generation, through `C2CForCausalLM.generate`.
- `c2c_tiny_mc_words` scores three-token answers ("A . mars"): `c2c-hf lm-eval --model c2c` scores them as the Python
  API's `model="c2c"` does, and the stock `hf` model refuses them (and padded batches) instead of mis-scoring them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import FUSER_KWARGS
from tiny_models import saved_bases, word_tokenizer
from transformers import AutoModelForCausalLM

from c2c_hf import C2CForCausalLM

lm_eval = pytest.importorskip("lm_eval")

FIXTURES = Path(__file__).parent / "fixtures" / "lm_eval"
TASK, GEN_TASK, WORDS_TASK = "c2c_tiny_mc", "c2c_tiny_gen", "c2c_tiny_mc_words"
LETTERS = ["A", "B", "C", "D"]


def prompt(doc: dict) -> str:
    """The task's doc_to_text, rendered here independently of lm-eval."""
    options = "".join(f"\n{letter}. {choice}" for letter, choice in zip(LETTERS, doc["choices"], strict=True))
    return f"Question: {doc['question']}{options}\nAnswer:"


@pytest.fixture(scope="module")
def saved_c2c(tmp_path_factory):
    """A C2C checkpoint (with the receiver's tokenizer) over tiny bases saved to local folders."""
    root = tmp_path_factory.mktemp("lm_eval")
    docs = [json.loads(line) for line in (FIXTURES / "tiny_mc.jsonl").read_text().splitlines() if line.strip()]
    words = sorted({w for doc in docs for w in re.findall(r"\w+|[^\w\s]+", prompt(doc))})
    tokenizer = word_tokenizer(words)
    receiver, sharer = saved_bases(root, "qwen2")
    torch.manual_seed(0)
    model = C2CForCausalLM.from_base_models(receiver, sharer, **FUSER_KWARGS).eval()
    with torch.no_grad():
        for layer in model.fuser.layers:
            for branch in (layer.key, layer.value):
                branch.out_proj.weight.normal_(std=0.5)
    model.save_pretrained(root / "c2c")
    tokenizer.save_pretrained(root / "c2c")
    return root / "c2c", docs, tokenizer


@pytest.fixture(scope="module")
def task_manager():
    """lm-eval's task index with this folder's tasks (built once: indexing lm-eval's tasks takes seconds)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(FIXTURES))


@pytest.mark.slow
def test_lm_eval_hf_model_scores_a_saved_c2c_model(saved_c2c, task_manager):
    directory, docs, tokenizer = saved_c2c
    results = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={directory},tokenizer={directory},dtype=float32",
        tasks=[TASK, GEN_TASK],
        task_manager=task_manager,
        batch_size=1,
        device="cpu",
        log_samples=True,
    )
    assert results["n-samples"][TASK]["effective"] == len(docs) == 8
    samples = sorted(results["samples"][TASK], key=lambda s: s["doc_id"])
    scored = torch.tensor([[ll for ll, _ in sample["filtered_resps"]] for sample in samples])  # (docs, choices)

    model = AutoModelForCausalLM.from_pretrained(directory)
    letter_ids = tokenizer.convert_tokens_to_ids(LETTERS)
    fused, alone = [], []
    with torch.no_grad():
        for doc in docs:
            ids = torch.tensor([tokenizer(prompt(doc))["input_ids"]])
            fused.append(model(ids).logits[0, -1].log_softmax(-1)[letter_ids])  # prefill [0, L-1), fuse, run L-1
            alone.append(model.receiver(ids).logits[0, -1].log_softmax(-1)[letter_ids])
    fused, alone = torch.stack(fused), torch.stack(alone)
    torch.testing.assert_close(scored, fused, rtol=0, atol=1e-4)
    assert not torch.allclose(scored, alone, atol=1e-3)  # the scores are C2C's, not the receiver's alone

    accuracy = results["results"][TASK]["acc,none"]
    labels = torch.tensor([doc["label"] for doc in docs])
    assert accuracy == pytest.approx((fused.argmax(-1) == labels).float().mean().item())
    assert 0.0 <= accuracy <= 1.0 and isinstance(results["results"][TASK]["acc_stderr,none"], float)

    generated = [s["resps"][0][0] for s in sorted(results["samples"][GEN_TASK], key=lambda s: s["doc_id"])]
    expected = []
    with torch.no_grad():
        for doc in docs:
            inputs = tokenizer(prompt(doc), return_tensors="pt")
            output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
            text = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
            expected.append(text.split("\n")[0])
    assert generated == expected and any(generated)
    assert 0.0 <= results["results"][GEN_TASK]["exact_match,none"] <= 1.0


@pytest.mark.slow
def test_c2c_model_type_scores_multi_token_continuations_after_fusion(saved_c2c, task_manager):
    """`model="c2c"` (c2c_hf.integrations.lm_eval): every continuation token is scored on the fused context, at batch size 4."""
    from c2c_hf.integrations.lm_eval import C2CLM

    directory, docs, tokenizer = saved_c2c
    lm = C2CLM(pretrained=str(directory), tokenizer=str(directory), dtype="float32", batch_size=4, device="cpu")
    context = tokenizer(prompt(docs[0]))["input_ids"]
    continuation = tokenizer(" A . B")["input_ids"]
    assert len(continuation) == 3 and all(i != tokenizer.unk_token_id for i in continuation)
    (score, _), = lm._loglikelihood_tokens([(None, context, continuation)])
    model = AutoModelForCausalLM.from_pretrained(directory)
    ids = torch.tensor([context + continuation])
    with torch.no_grad():
        logprobs = model(ids[:, :-1], fuse_length=len(context) - 1).logits[0, len(context) - 1 :].log_softmax(-1)
    assert score == pytest.approx(logprobs.gather(-1, torch.tensor(continuation)[:, None]).sum().item(), abs=1e-4)

    results = lm_eval.simple_evaluate(model=lm, tasks=[TASK], task_manager=task_manager, log_samples=True)
    samples = sorted(results["samples"][TASK], key=lambda s: s["doc_id"])
    with torch.no_grad():
        expected = [
            model(torch.tensor([tokenizer(prompt(doc))["input_ids"]])).logits[0, -1].log_softmax(-1)[
                tokenizer.convert_tokens_to_ids(LETTERS)
            ]
            for doc in docs
        ]
    scored = torch.tensor([[ll for ll, _ in sample["filtered_resps"]] for sample in samples])
    torch.testing.assert_close(scored, torch.stack(expected), rtol=0, atol=1e-4)


def model_args(directory: Path) -> str:
    return f"pretrained={directory},tokenizer={directory},dtype=float32"


def sample_scores(samples: list[dict]) -> list[list[float]]:
    """Per doc (in doc order), the log-likelihood of each choice."""
    return [[float(ll) for ll, _ in s["filtered_resps"]] for s in sorted(samples, key=lambda s: s["doc_id"])]


@pytest.mark.slow
def test_c2c_hf_lm_eval_command_scores_as_the_python_api(saved_c2c, task_manager, tmp_path):
    """`c2c-hf lm-eval --model c2c ...` is lm-eval's command line with `c2c` registered: same scores as
    `simple_evaluate(model="c2c")`, and the multi-token answers are scored after fusing the context only."""
    from c2c_hf.cli import main

    directory, docs, tokenizer = saved_c2c
    main([
        "lm-eval", "--model", "c2c", "--model_args", model_args(directory), "--tasks", f"{WORDS_TASK},{TASK}",
        "--include_path", str(FIXTURES), "--batch_size", "4", "--device", "cpu",
        "--output_path", str(tmp_path), "--log_samples",
    ])  # fmt: skip
    (results_file,) = tmp_path.rglob("results_*.json")
    from_command = json.loads(results_file.read_text())
    assert from_command["config"]["model"] == "c2c"
    sample_files = {
        task: [f for f in tmp_path.rglob("samples_*.jsonl") if re.fullmatch(rf"samples_{task}_\d{{4}}-.+\.jsonl", f.name)]
        for task in (WORDS_TASK, TASK)
    }  # samples_<task>_<date>.jsonl, where one task's name starts the other's
    command_samples = {
        task: [json.loads(line) for line in only_file.read_text().splitlines()]
        for task, (only_file,) in sample_files.items()
    }

    from_python = lm_eval.simple_evaluate(
        model="c2c", model_args=model_args(directory), tasks=[WORDS_TASK, TASK], task_manager=task_manager,
        batch_size=4, device="cpu", log_samples=True,
    )  # fmt: skip
    for task in (WORDS_TASK, TASK):
        assert len(command_samples[task]) == len(docs)
        assert sample_scores(command_samples[task]) == sample_scores(from_python["samples"][task])
        assert from_command["results"][task]["acc,none"] == from_python["results"][task]["acc,none"]

    model = AutoModelForCausalLM.from_pretrained(directory)
    context = tokenizer(prompt(docs[0]))["input_ids"]
    expected = []
    for letter, choice in zip(LETTERS, docs[0]["choices"], strict=True):
        continuation = tokenizer(f" {letter} . {choice}")["input_ids"]
        assert len(continuation) == 3 and tokenizer.unk_token_id not in continuation
        with torch.no_grad():
            logits = model(torch.tensor([context + continuation[:-1]]), fuse_length=len(context) - 1).logits
        logprobs = logits[0, len(context) - 1 :].log_softmax(-1)
        expected.append(logprobs.gather(-1, torch.tensor(continuation)[:, None]).sum().item())
    assert sample_scores(command_samples[WORDS_TASK])[0] == pytest.approx(expected, abs=1e-4)


@pytest.mark.slow
def test_hf_model_type_refuses_what_it_would_score_wrong_on_a_c2c_model(saved_c2c, task_manager):
    """lm-eval's stock `hf` passes no context boundary: multi-token answers and right-padded batches raise an error
    that points to `--model c2c` (one-token answers at batch size 1 stay scored: the first test of this file)."""
    directory, _, _ = saved_c2c
    refused = [
        (WORDS_TASK, 1, r"continuations of \[3\] tokens"),  # fuses the answer's first tokens
        (TASK, 4, r"continuations of \[1\] tokens, contexts of \[\d+(, \d+)+\] tokens, a model input of \d+ tokens"),  # padded rows
        (TASK, "auto", r"a batch of shape \(\d+, \d+\) whose requests could not be read"),  # batch-size probe
    ]
    for task, batch_size, what in refused:
        with pytest.raises(ValueError, match=r"`hf` model is scoring a C2C model \(" + what) as error:
            lm_eval.simple_evaluate(
                model="hf", model_args=model_args(directory), tasks=[task], task_manager=task_manager,
                batch_size=batch_size, max_batch_size=4, device="cpu",
            )  # fmt: skip
        assert "c2c-hf lm-eval --model c2c" in str(error.value) and 'simple_evaluate(model="c2c"' in str(error.value)
