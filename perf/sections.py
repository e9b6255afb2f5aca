"""The runner's sections, each a function of a `Bench` returning fuser size -> metric -> value (see `run.py`'s
docstring for what each measures)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from functools import partial
from typing import Any

import torch
from transformers import DynamicCache, GenerationMixin

from c2c_hf import C2CForCausalLM, C2CFuser, SharerCacheMemo
from c2c_hf.data import MCItem, format_prompt, left_pad
from c2c_hf.evaluation import LM, Direct, Prediction, Scoring, TextToText

from .bench import Bench, discard, forced_length, fuse_all_layers, peak_working_bytes, synchronize, tensor_bytes
from .span import span

# train last: its optimizer steps move the fusers
SECTIONS = ("ttft", "decode", "e2e", "batch", "memory", "span", "train")
BATCH_SIZES = (1, 4, 8)
FILLER = (
    "the river flows past the old mill where children play in summer and farmers bring their grain to the market "
    "every week before the first snow covers the hills"
).split()
CHOICES = ("north", "south", "east", "west")
MIB = 2**20


def ttft(bench: Bench) -> dict[str, dict[str, Any]]:
    """Time to first token at batch 1: receiver alone, both plain prefills, fuser alone, C2C."""
    pair, prompt = bench.pair, bench.args.prompt_tokens
    ids = bench.random_ids(1, prompt)  # (1, P)
    sharer_ids = bench.sharer_ids(ids)[:, :-1]  # (1, P-1): the positions C2C fuses
    receiver_kv, sharer_kv = bench.fuser_inputs(1, prompt - 1)

    def plain_prefills() -> None:
        pair.receiver(input_ids=ids, logits_to_keep=1)
        pair.sharer(input_ids=sharer_ids, logits_to_keep=1)

    fns = {"receiver": discard(pair.receiver, input_ids=ids, logits_to_keep=1), "plain_prefills": plain_prefills}
    for name, model in bench.models.items():
        fns[f"fuser/{name}"] = discard(fuse_all_layers, fuser=model.fuser, receiver_kv=receiver_kv, sharer_kv=sharer_kv)
        fns[f"c2c/{name}"] = discard(model, input_ids=ids, logits_to_keep=1)
    with torch.no_grad():
        t = {name: runs.median for name, runs in bench.time(fns).items()}
    receiver, plain = t["receiver"], t["plain_prefills"]
    return {
        name: {
            "receiver_s": receiver,
            "plain_prefills_s": plain,
            "fuser_s": t[f"fuser/{name}"],
            "c2c_s": t[f"c2c/{name}"],
            "plain_over_receiver": plain / receiver,
            "c2c_over_plain": t[f"c2c/{name}"] / plain,
            "c2c_over_plain_plus_fuser": t[f"c2c/{name}"] / (plain + t[f"fuser/{name}"]),
        }
        for name in bench.models
    }


def decode(bench: Bench) -> dict[str, dict[str, Any]]:
    """Time of one decode step at batch 1: one token on a cache of the prompt (P tokens), the receiver alone on its own
    cache vs C2C on its fused cache. Steps of the models alternate one by one (`--decode-steps` each) and every cache
    is cropped back to the prompt after its step, so a change of the machine's load hits every model alike."""
    prompt = bench.args.prompt_tokens
    ids, token = bench.random_ids(1, prompt), bench.random_ids(1, 1)  # (1, P), (1, 1)
    mask = torch.ones(1, prompt + 1, dtype=torch.long, device=bench.device)
    position = torch.full((1, 1), prompt, device=bench.device)
    models = {"receiver": bench.pair.receiver} | {f"c2c/{name}": model for name, model in bench.models.items()}

    def step(model: GenerationMixin, cache: DynamicCache) -> None:
        model(input_ids=token, attention_mask=mask, position_ids=position, cache=cache, logits_to_keep=1)
        cache.crop(-1)  # back to the prompt's P tokens

    with torch.no_grad():
        caches = {name: model(input_ids=ids, logits_to_keep=1).cache for name, model in models.items()}
        fns = {name: partial(step, model, caches[name]) for name, model in models.items()}
        per_step = {name: runs.median for name, runs in bench.time(fns, bench.args.decode_steps).items()}
    receiver = per_step["receiver"]
    return {
        name: {
            "receiver_per_token_s": receiver,
            "c2c_per_token_s": per_step[f"c2c/{name}"],
            "c2c_over_receiver": per_step[f"c2c/{name}"] / receiver,
        }
        for name in bench.models
    }


def question_items(lm: LM, prompt_tokens: int, count: int) -> list[MCItem]:
    """`count` distinct multiple-choice questions, each with the fewest filler words that make the C2C prompt (the
    receiver's rendered prompt) at least `prompt_tokens` tokens long."""
    items = []
    for index in range(count):
        words = 0
        while True:
            question = " ".join(FILLER[(index + i) % len(FILLER)] for i in range(words))
            item = MCItem("bench", str(index), question, CHOICES, gold=0)
            if lm.encode([format_prompt(item)])[0].shape[1] >= prompt_tokens:
                break
            words += 1
        items.append(item)
    return items


def e2e(bench: Bench) -> dict[str, dict[str, Any]]:
    """One multiple-choice answer at batch 1: text-to-text with a hint of exactly each `--hint-tokens` size, and C2C;
    every answer is exactly `--answer-tokens` greedy tokens."""
    pair, args = bench.pair, bench.args
    receiver, sharer = bench.receiver_lm, LM(pair.sharer, pair.sharer_tokenizer)
    scoring = Scoring("generate", max_new_tokens=args.answer_tokens)
    items = question_items(receiver, args.prompt_tokens, args.warmup + args.repeats)

    def t2t(method: TextToText, queue: Iterator[MCItem]) -> Prediction:
        with forced_length(pair.sharer, method.hint_tokens):
            return method.answer([next(queue)])[0]

    def c2c(method: Direct, queue: Iterator[MCItem]) -> Prediction:
        return method.answer([next(queue)])[0]

    fns = {
        f"t2t_hint{n}": partial(t2t, TextToText(receiver, sharer, scoring, hint_tokens=n), iter(items))
        for n in args.hint_tokens
    }
    for name, model in bench.models.items():
        fns[f"c2c/{name}"] = partial(c2c, Direct("c2c", LM(model, pair.receiver_tokenizer), scoring), iter(items))
    with ExitStack() as stack, torch.no_grad():
        for model in (pair.receiver, *bench.models.values()):
            stack.enter_context(forced_length(model, args.answer_tokens))
        runs = bench.time(fns)
    prompt_tokens = statistics.median_low(receiver.encode([format_prompt(item)])[0].shape[1] for item in items)
    results = {}
    for name in bench.models:
        c2c_seconds = runs[f"c2c/{name}"].median
        metrics: dict[str, Any] = {
            "c2c_prompt_tokens": prompt_tokens,
            "answer_tokens": statistics.median_low(p.tokens for p in runs[f"c2c/{name}"].outputs),
            "c2c_s": c2c_seconds,
        }
        for n in args.hint_tokens:
            t2t_runs = runs[f"t2t_hint{n}"]
            metrics[f"t2t_hint{n}_hint_tokens"] = statistics.median_low(
                p.details["hint_tokens"] for p in t2t_runs.outputs
            )
            metrics[f"t2t_hint{n}_s"] = t2t_runs.median
            metrics[f"t2t_hint{n}_over_c2c"] = t2t_runs.median / c2c_seconds
        results[name] = metrics
    return results


def mismatched_rows(
    bench: Bench, model: GenerationMixin, rows: Sequence[torch.Tensor], outputs: dict[int, torch.Tensor]
) -> list[str]:
    """The rows of padded-batch outputs (`{batch size: (B, D) tokens}`) that differ from their prompt's batch-1
    output (`rows`: the 1-D prompts)."""
    alone = [bench.generate(model, row[None])[0] for row in rows]  # (D,) each
    return [
        f"batch {size} row {i}"
        for size, tokens in outputs.items()
        for i, row_tokens in enumerate(tokens)
        if not torch.equal(row_tokens, alone[i])
    ]


def throughput_ratios(by_size: dict[int, Any], new_tokens: int) -> dict[str, float]:
    """Tokens per second of `generate` calls (`bench.time` results per batch size, `timed_generate` outputs): of the
    whole call and of its decode steps, and each size's throughput over batch 1's."""
    generate_s = {size: r.median for size, r in by_size.items()}
    decode_s = {size: statistics.median(sum(steps) for _, steps in r.outputs) for size, r in by_size.items()}
    metrics: dict[str, float] = {}
    for kind, seconds, tokens_per_row in (("generate", generate_s, new_tokens), ("decode", decode_s, new_tokens - 1)):
        throughput = {size: size * tokens_per_row / seconds[size] for size in BATCH_SIZES}
        metrics |= {f"{kind}_{size}_tokens_per_second": value for size, value in throughput.items()}
        metrics |= {f"{kind}_{size}_over_1": throughput[size] / throughput[1] for size in BATCH_SIZES[1:]}
    return metrics


def batch(bench: Bench) -> dict[str, dict[str, Any]]:
    """C2C greedy generation throughput at each batch size (left-padded prompts of different lengths): of the whole
    `generate` call (prefill + decode) and of its decode steps alone; whether every padded row's output equals its
    prompt's batch-1 output. The receiver alone is measured alike, as the bound (`receiver_*`: the same decode on
    the same hardware, without a sharer or fuser) and as a control (in bf16, padding alone can flip a token)."""
    prompt, new_tokens = bench.args.prompt_tokens, bench.args.new_tokens
    step = max(1, prompt // 16)
    rows = [bench.random_ids(1, prompt - i * step)[0] for i in range(max(BATCH_SIZES))]  # lengths P, P - step, ...
    pad = bench.receiver_lm.pad_token_id
    padded = {size: left_pad([row.cpu() for row in rows[:size]], pad) for size in BATCH_SIZES}  # (B, P) ids, mask
    models = {"receiver-alone": bench.pair.receiver, **{f"c2c-{name}": model for name, model in bench.models.items()}}
    fns = {
        f"{name}/{size}": partial(bench.timed_generate, model, ids.to(bench.device), mask.to(bench.device))
        for name, model in models.items()
        for size, (ids, mask) in padded.items()
    }
    runs = bench.time(fns)
    by_model = {name: {size: runs[f"{name}/{size}"] for size in BATCH_SIZES} for name in models}
    last_tokens = {
        name: {size: r.outputs[-1][0] for size, r in by_size.items()} for name, by_size in by_model.items()
    }  # (B, D) tokens of the last call of each size
    receiver = throughput_ratios(by_model["receiver-alone"], new_tokens)
    receiver_rows_equal = not mismatched_rows(bench, bench.pair.receiver, rows, last_tokens["receiver-alone"])
    results = {}
    for name, model in bench.models.items():
        mismatched = mismatched_rows(bench, model, rows, last_tokens[f"c2c-{name}"])
        results[name] = {
            **throughput_ratios(by_model[f"c2c-{name}"], new_tokens),
            **{f"receiver_{key}": value for key, value in receiver.items()},
            "rows_equal": not mismatched,
            "mismatched_rows": mismatched,
            "receiver_rows_equal": receiver_rows_equal,
        }
    return results


def memory(bench: Bench) -> dict[str, dict[str, Any]]:
    """Peak memory of C2C generation (batch 1) vs the receiver's generation and the sharer's prefill, both loaded."""
    pair = bench.pair
    ids = bench.random_ids(1, bench.args.prompt_tokens)  # (1, P)
    sharer_ids = bench.sharer_ids(ids)[:, :-1]  # (1, P-1)

    def bases() -> None:
        bench.generate(pair.receiver, ids)
        pair.sharer(input_ids=sharer_ids, logits_to_keep=1)

    fns = {"bases": bases, **{name: partial(bench.generate, model, ids) for name, model in bench.models.items()}}
    with torch.no_grad():
        for fn in fns.values():
            for _ in range(bench.args.warmup):
                fn()
        working = {name: peak_working_bytes(fn, bench.device) for name, fn in fns.items()}
    bases_weights = tensor_bytes(pair.receiver) + tensor_bytes(pair.sharer)
    bases_peak = bases_weights + working["bases"]
    results = {}
    for name, model in bench.models.items():
        weights = tensor_bytes(model)  # receiver + sharer + fuser (+ token map)
        results[name] = {
            "bases_weights_mib": bases_weights / MIB,
            "bases_working_peak_mib": working["bases"] / MIB,
            "c2c_weights_mib": weights / MIB,
            "c2c_working_peak_mib": working[name] / MIB,
            "c2c_over_bases_working_peak": working[name] / max(working["bases"], 1),
            "c2c_over_bases_peak": (weights + working[name]) / bases_peak,
        }
    return results


def train(bench: Bench) -> dict[str, dict[str, Any]]:
    """One fuser training forward + backward vs its parts timed alone and vs the two plain forwards, and vs the same
    step taking the sharer's KV from a `SharerCacheMemo` (every epoch after the first); the AdamW step is timed
    apart. Batch `--train-batch-size` x (`--prompt-tokens` + `--response-tokens`); the response is supervised, the
    prompt minus its last token fused."""
    pair, args = bench.pair, bench.args
    size, prompt, response = args.train_batch_size, args.prompt_tokens, args.response_tokens
    fused = prompt - 1
    ids = bench.random_ids(size, prompt + response)  # (B, P + R)
    labels = ids.clone()
    labels[:, :prompt] = -100
    sharer_ids = bench.sharer_ids(ids)[:, :fused]  # (B, P - 1)
    receiver_kv, sharer_kv = bench.fuser_inputs(size, fused)
    fused_grads = [torch.randn_like(x) for layer in receiver_kv for x in layer]  # d loss / d fused K, V
    c2c_batch = dict(input_ids=ids, labels=labels, fuse_length=fused, logits_to_keep=response + 1)
    mask = torch.ones_like(ids)  # (B, P + R): no padding

    def receiver_forward_backward() -> None:
        # As inside C2C: a prefill (no graph: frozen weights), then the rest on a prompt KV that needs gradients.
        cache = DynamicCache(config=pair.receiver.config)
        pair.receiver.base_model(input_ids=ids[:, :fused], cache=cache)
        for layer in cache.layers:
            layer.keys.requires_grad_()
            layer.values.requires_grad_()
        pair.receiver(input_ids=ids[:, fused:], cache=cache, labels=labels[:, fused:]).loss.backward()

    def fuser_forward_backward(fuser: C2CFuser) -> None:
        torch.autograd.backward(fuse_all_layers(fuser, receiver_kv, sharer_kv), fused_grads)
        fuser.zero_grad(set_to_none=True)

    def plain_forwards() -> None:
        with torch.no_grad():
            pair.receiver(input_ids=ids, logits_to_keep=response + 1)
            pair.sharer.base_model(input_ids=sharer_ids)

    def step(model: C2CForCausalLM, optimizer: torch.optim.Optimizer, memo: SharerCacheMemo | None = None) -> float:
        """Forward + backward (the sharer's KV from `memo`, when given), then AdamW; returns AdamW's seconds."""
        batch = c2c_batch if memo is None else {**c2c_batch, "cache": memo.batch_cache(ids, mask, fused)}
        model(**batch).loss.backward()
        synchronize(bench.device)
        start = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(bench.device)
        return time.perf_counter() - start

    fns = {
        "receiver": receiver_forward_backward,
        "sharer": discard(pair.sharer.base_model, input_ids=sharer_ids),
        "plain_forwards": plain_forwards,
    }
    for name, model in bench.models.items():
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        fns[f"fuser/{name}"] = partial(fuser_forward_backward, model.fuser)
        fns[f"step/{name}"] = partial(step, model, optimizer)
        fns[f"step_reusing_sharer_kv/{name}"] = partial(step, model, optimizer, SharerCacheMemo(model))
    try:
        for model in bench.models.values():
            model.train()  # the fuser trains; the bases stay in eval mode
        runs = bench.time(fns)
    finally:
        for model in bench.models.values():
            model.eval()
    results = {}
    for name in bench.models:
        steps, reusing = runs[f"step/{name}"], runs[f"step_reusing_sharer_kv/{name}"]
        forward_backward, reusing_forward_backward = (
            statistics.median(total - adamw for total, adamw in zip(timed.seconds, timed.outputs))
            for timed in (steps, reusing)
        )
        parts = runs["receiver"].median + runs["sharer"].median + runs[f"fuser/{name}"].median
        results[name] = {
            "receiver_fwd_bwd_s": runs["receiver"].median,
            "sharer_fwd_s": runs["sharer"].median,
            "fuser_fwd_bwd_s": runs[f"fuser/{name}"].median,
            "parts_sum_s": parts,
            "step_fwd_bwd_s": forward_backward,
            "adamw_s": statistics.median(steps.outputs),
            "step_with_adamw_s": steps.median,
            "plain_forwards_s": runs["plain_forwards"].median,
            "step_over_parts": forward_backward / parts,
            "step_over_plain_forwards": forward_backward / runs["plain_forwards"].median,
            "step_reusing_sharer_kv_fwd_bwd_s": reusing_forward_backward,
            "reusing_sharer_kv_over_step": reusing_forward_backward / forward_backward,
        }
    return results


SECTION_FUNCTIONS: dict[str, Callable[[Bench], dict[str, dict[str, Any]]]] = {
    "ttft": ttft, "decode": decode, "e2e": e2e, "batch": batch, "memory": memory, "span": span, "train": train,
}  # fmt: skip
