"""Benchmark runner (issue 9): C2C's cost against what its arithmetic requires, measured side by side in one run.

    python -m benchmarks.run                                      # every section; shape sets small, paper, real
    python -m benchmarks.run --shapes small --fuser small --repeats 3 --output /tmp/perf
    python -m benchmarks.run --shapes tiny --fuser tiny --sections train --train-batch-size 4 \\
        --prompt-tokens 192 --response-tokens 64 --repeats 10 --warmup 2   # one training step (fwd + bwd + AdamW)
    bash benchmarks/gpu.sh OUT_DIR                                # bf16 on a CUDA GPU, under 5 minutes

Sections (`--sections`), run for each shape set (`--shapes`, see `benchmarks/shapes.py`) with one C2C model per
fuser size (`--fuser`). The timed calls of a section are interleaved round-robin, so that load changes on a shared
machine hit them alike; each figure is the median of `--repeats` calls after `--warmup` calls.

- ttft: time to first token at batch 1 (one prefill forward): the receiver alone; both plain prefills (receiver over
  the prompt, sharer over the positions C2C fuses); the fuser alone on random KV of exactly the shapes C2C fuses
  (every receiver layer); C2C.
- decode: time of one decode step at batch 1 (one token on the prompt's cache): receiver alone vs C2C on its fused
  cache, the models' steps alternating one by one.
- e2e: one multiple-choice answer at batch 1 through `c2c_hf.evaluation` (prompts, chat templates, greedy answer of
  exactly `--answer-tokens` tokens): text-to-text with a sharer hint of exactly each `--hint-tokens` size, and C2C.
- batch: C2C greedy throughput at batch 1, 4 and 8 (left-padded prompts of different lengths), of whole `generate`
  calls and of their decode steps (the target's: a prefill is compute-bound, batching cannot speed it up), and
  whether every padded row's greedy output equals the same prompt's batch-1 output.
- memory: peak working memory (above the weights) of C2C generation vs the receiver's generation and the sharer's
  prefill (see `MEMORY_METHOD`).
- train: one fuser training forward + backward vs its parts timed alone (receiver forward + backward, sharer
  forward, fuser forward + backward) and vs the two plain forwards; the AdamW step is timed apart. It runs last
  because it updates the fusers.

Writes `perf.json` and `perf.md` under `--output` after each shape set, prints each section's table, and prints
every target ratio of the issue next to its bound with met / missed.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import operator
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn
from transformers import DynamicCache, GenerationMixin, LogitsProcessor, LogitsProcessorList, PreTrainedModel

from c2c_hf import C2CForCausalLM, MCItem, SharerCacheMemo, format_prompt, kv_shape
from c2c_hf.data import left_pad
from c2c_hf.evaluation import LM, Direct, Prediction, Scoring, TextToText
from c2c_hf.modeling_c2c import C2CFuser

from .shapes import AUTHORS_TRAIN_RATIO, FUSERS, REFERENCE, SHAPE_SETS, Pair, load_pair

SECTIONS = ("ttft", "decode", "e2e", "batch", "memory", "train")  # train last: its optimizer steps move the fusers
BATCH_SIZES = (1, 4, 8)
FILLER = (
    "the river flows past the old mill where children play in summer and farmers bring their grain to the market "
    "every week before the first snow covers the hills"
).split()
CHOICES = ("north", "south", "east", "west")
MEMORY_METHOD = {
    "cpu": "Linux resident memory of this process: after gc and malloc_trim(0) (freed heap pages go back, so reusing "
    "them counts again), VmRSS is read, the peak VmHWM is reset to it (/proc/self/clear_refs = 5), the call runs, "
    "and working peak = VmHWM - VmRSS before. Weights = parameter + buffer bytes; peak = weights + working peak.",
    "cuda": "torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus memory_allocated before the call "
    "(working peak); weights = parameter + buffer bytes; peak = weights + working peak.",
}
MIB = 2**20


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """A bound the issue sets on one metric of one section, for every shape set or only those in `shapes`."""

    section: str
    metric: str
    op: str  # "<=", ">=" or "=="
    bound: float | bool
    shapes: tuple[str, ...] | None = None

    def met(self, value: float | bool) -> bool:
        return {"<=": operator.le, ">=": operator.ge, "==": operator.eq}[self.op](value, self.bound)


def issue_targets(hint_tokens: Sequence[int]) -> list[Target]:
    """The issue's targets; the text-to-text one uses the longest hint (256 tokens by default)."""
    return [
        Target("ttft", "c2c_over_plain_plus_fuser", "<=", 1.1),
        Target("decode", "c2c_over_receiver", "<=", 1.02),
        Target("e2e", f"t2t_hint{max(hint_tokens)}_over_c2c", ">=", 3.0),
        Target("batch", f"decode_{BATCH_SIZES[-1]}_over_1", ">=", 4.0),  # prefill (compute-bound) cannot batch
        Target("batch", "rows_equal", "==", True),
        Target("train", "step_over_parts", "<=", 1.2),
        Target("train", "step_over_plain_forwards", "<=", AUTHORS_TRAIN_RATIO / 2, shapes=("small",)),
    ]


def check_targets(results: dict[str, Any], targets: Sequence[Target]) -> list[dict[str, Any]]:
    """One row per (shape set, fuser, target) whose section was measured."""
    rows = []
    for shape, result in results.items():
        for target in targets:
            if target.shapes is not None and shape not in target.shapes:
                continue
            for fuser, metrics in result["sections"].get(target.section, {}).items():
                value = metrics[target.metric]
                rows.append({
                    "shape_set": shape, "fuser": fuser, "section": target.section, "metric": target.metric,
                    "value": value, "op": target.op, "bound": target.bound, "met": target.met(value),
                })  # fmt: skip
    return rows


# --------------------------------------------------------------------------- timing and memory helpers


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Runs:
    """The timed calls of one function: wall-clock seconds and return values."""

    seconds: list[float] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def discard(fn: Callable[..., Any], **kwargs) -> Callable[[], None]:
    """`fn(**kwargs)` as a call that keeps nothing (model outputs hold caches)."""

    def call() -> None:
        fn(**kwargs)

    return call


class StepTimer(LogitsProcessor):
    """A no-op logits processor that records when each generation step's logits are ready."""

    def __init__(self, device: torch.device):
        self.device = device
        self.times: list[float] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        synchronize(self.device)
        self.times.append(time.perf_counter())
        return scores


@contextmanager
def forced_length(model: GenerationMixin, tokens: int) -> Iterator[None]:
    """Make `model.generate` produce at least `tokens` tokens (end-of-sequence suppressed until then)."""
    config = model.generation_config
    previous, config.min_new_tokens = config.min_new_tokens, tokens
    try:
        yield
    finally:
        config.min_new_tokens = previous


def _status_kib(field_name: str) -> int:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field_name))
    return int(line.split()[1])


def peak_working_bytes(fn: Callable[[], Any], device: torch.device) -> int:
    """Peak memory that `fn` needs above what is held before it (`MEMORY_METHOD`)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    fn()
    return (_status_kib("VmHWM") - before) * 1024


def tensor_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def fuse_all_layers(fuser: C2CFuser, kv: Sequence[tuple[torch.Tensor, ...]]) -> list[torch.Tensor]:
    """The fuser on every receiver layer's `(sharer K, sharer V, receiver K, receiver V)`; fused K and V per layer."""
    return [fused for index, tensors in enumerate(kv) for fused in fuser(index, *tensors)]


# --------------------------------------------------------------------------- one shape set under test


@dataclass
class Bench:
    """One shape set under test: the pair, a C2C model per fuser size, and the run's settings."""

    pair: Pair
    models: dict[str, C2CForCausalLM]
    args: argparse.Namespace
    generator: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))

    @property
    def device(self) -> torch.device:
        return self.pair.receiver.device

    @property
    def any_model(self) -> C2CForCausalLM:
        return next(iter(self.models.values()))

    @cached_property
    def receiver_lm(self) -> LM:
        return LM(self.pair.receiver, self.pair.receiver_tokenizer)

    @cached_property
    def token_pool(self) -> torch.Tensor:
        """Receiver ids a random prompt draws from: the receiver tokenizer's, special tokens excluded."""
        tokenizer = self.pair.receiver_tokenizer
        pool = torch.arange(min(len(tokenizer), self.pair.receiver.config.vocab_size))
        return pool[~torch.isin(pool, torch.tensor(tokenizer.all_special_ids))]

    def time(self, fns: dict[str, Callable[[], Any]], repeats: int | None = None) -> dict[str, Runs]:
        """Call every function `warmup + repeats` (default `--repeats`) times, round-robin; keep the timed calls'
        seconds and outputs."""
        runs = {name: Runs() for name in fns}
        for repeat in range(self.args.warmup + (repeats or self.args.repeats)):
            for name, fn in fns.items():
                synchronize(self.device)
                start = time.perf_counter()
                output = fn()
                synchronize(self.device)
                if repeat >= self.args.warmup:
                    runs[name].seconds.append(time.perf_counter() - start)
                    runs[name].outputs.append(output)
        return runs

    def random_ids(self, batch: int, length: int) -> torch.Tensor:
        """`(batch, length)` random receiver token ids on the device."""
        picks = torch.randint(len(self.token_pool), (batch, length), generator=self.generator)
        return self.token_pool[picks].to(self.device)

    def sharer_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """`(B, L)` sharer ids position-aligned with receiver `ids`, as C2C feeds its sharer (token map or same ids)."""
        return self.any_model.sharer_inputs(ids)[0]

    def fuser_inputs(self, batch: int, length: int) -> list[tuple[torch.Tensor, ...]]:
        """Random `(sharer K, sharer V, receiver K, receiver V)` per receiver layer in the bases' dtype, of the shapes
        C2C fuses: `(B, H_s, N, D_s)` twice, then `(B, H_r, N, D_r)` twice."""
        config = self.any_model.config
        layers, receiver_heads, receiver_dim = config.receiver_kv_shape
        _, sharer_heads, sharer_dim = config.sharer_kv_shape

        def randn(heads: int, dim: int) -> torch.Tensor:
            tensor = torch.randn(batch, heads, length, dim, generator=self.generator)
            return tensor.to(self.device, self.pair.receiver.dtype)

        return [
            (randn(sharer_heads, sharer_dim), randn(sharer_heads, sharer_dim),
             randn(receiver_heads, receiver_dim), randn(receiver_heads, receiver_dim))
            for _ in range(layers)
        ]  # fmt: skip

    def generate(
        self,
        model: GenerationMixin,
        ids: torch.Tensor,
        mask: torch.Tensor | None = None,
        new_tokens: int | None = None,
        timer: StepTimer | None = None,
    ) -> torch.Tensor:
        """Greedy generation of exactly `new_tokens` (default `--new-tokens`) tokens: `(B, new_tokens)` ids."""
        new_tokens = new_tokens or self.args.new_tokens
        output = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids) if mask is None else mask,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=self.receiver_lm.pad_token_id,
            logits_processor=LogitsProcessorList([] if timer is None else [timer]),
        )
        return output[:, ids.shape[1] :]

    def timed_generate(
        self, model: GenerationMixin, ids: torch.Tensor, mask: torch.Tensor | None = None, new_tokens: int | None = None
    ) -> tuple[torch.Tensor, list[float]]:
        """`generate`, with the seconds between consecutive steps: the decode steps after the prefill's token."""
        timer = StepTimer(self.device)
        tokens = self.generate(model, ids, mask, new_tokens, timer)
        return tokens, [after - before for before, after in zip(timer.times, timer.times[1:])]


# --------------------------------------------------------------------------- sections: fuser -> metric -> value


def ttft(bench: Bench) -> dict[str, dict[str, Any]]:
    """Time to first token at batch 1: receiver alone, both plain prefills, fuser alone, C2C."""
    pair, prompt = bench.pair, bench.args.prompt_tokens
    ids = bench.random_ids(1, prompt)  # (1, P)
    sharer_ids = bench.sharer_ids(ids)[:, :-1]  # (1, P-1): the positions C2C fuses
    kv = bench.fuser_inputs(1, prompt - 1)

    def plain_prefills() -> None:
        pair.receiver(input_ids=ids, logits_to_keep=1)
        pair.sharer(input_ids=sharer_ids, logits_to_keep=1)

    fns = {"receiver": discard(pair.receiver, input_ids=ids, logits_to_keep=1), "plain_prefills": plain_prefills}
    for name, model in bench.models.items():
        fns[f"fuser/{name}"] = discard(fuse_all_layers, fuser=model.fuser, kv=kv)
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
    kv = bench.fuser_inputs(size, fused)
    fused_grads = [torch.randn_like(x) for *_, keys, values in kv for x in (keys, values)]  # d loss / d fused K, V
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
        torch.autograd.backward(fuse_all_layers(fuser, kv), fused_grads)
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
    "ttft": ttft, "decode": decode, "e2e": e2e, "batch": batch, "memory": memory, "train": train,
}  # fmt: skip


# --------------------------------------------------------------------------- report


def describe_machine(args: argparse.Namespace) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo")
    models = [
        line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
    ]
    return {
        "cpu": models[0] if models else platform.processor(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "load_average_at_start": os.getloadavg(),
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "torch_threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "fuser_dtype": "float32",
        "device": args.device,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def describe_models(bench: Bench) -> dict[str, Any]:
    def base(model: PreTrainedModel) -> dict[str, Any]:
        config = model.config
        layers, kv_heads, head_dim = kv_shape(config)
        return {
            "type": config.model_type, "name": model.name_or_path or None, "params_m": model.num_parameters() / 1e6,
            "layers": layers, "hidden": config.hidden_size, "kv_heads": kv_heads, "head_dim": head_dim,
            "vocab": config.vocab_size,
        }  # fmt: skip

    return {
        "receiver": base(bench.pair.receiver),
        "sharer": base(bench.pair.sharer),
        "token_map": hasattr(bench.any_model.fuser, "token_map"),
        "fusers": {
            name: {**FUSERS[name], "params_m": sum(p.numel() for p in model.fuser.parameters()) / 1e6}
            for name, model in bench.models.items()
        },
    }


def format_value(metric: str, value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(value) or "-"
    if metric.endswith("_s"):
        return f"{value * 1e3:.1f} ms"
    if metric.endswith("_mib"):
        return f"{value:.1f} MiB"
    if "_over_" in metric:
        return f"{value:.2f}x"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def section_table(section: str, by_fuser: dict[str, dict[str, Any]]) -> str:
    """Markdown table of one section: a row per metric, a column per fuser size."""
    fusers = list(by_fuser)
    lines = [f"### {section}", "", "| metric | " + " | ".join(f"fuser {f}" for f in fusers) + " |",
             "|---" * (len(fusers) + 1) + "|"]  # fmt: skip
    for metric in by_fuser[fusers[0]]:
        lines.append(f"| {metric} | " + " | ".join(format_value(metric, by_fuser[f][metric]) for f in fusers) + " |")
    return "\n".join(lines) + "\n"


def targets_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| shape set | fuser | section | ratio | value | target | |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        bound = row["bound"] if isinstance(row["bound"], bool) else f"{row['bound']:.3g}"
        lines.append(
            f"| {row['shape_set']} | {row['fuser']} | {row['section']} | {row['metric']} | "
            f"{format_value(row['metric'], row['value'])} | {row['op']} {bound} | {'met' if row['met'] else 'MISSED'} |"
        )
    return "\n".join(lines) + "\n"


def models_line(models: dict[str, Any]) -> str:
    def base(m: dict[str, Any]) -> str:
        return (f"{m['name'] or m['type']} {m['params_m']:.1f}M ({m['layers']} layers, hidden {m['hidden']}, KV "
                f"{m['kv_heads']}x{m['head_dim']}, vocab {m['vocab']})")  # fmt: skip

    fusers = ", ".join(
        f"{name} (hidden {f['fuser_hidden_size']}) {f['params_m']:.1f}M" for name, f in models["fusers"].items()
    )
    token_map = "; receiver -> sharer token map" if models["token_map"] else ""
    return f"Receiver {base(models['receiver'])}; sharer {base(models['sharer'])}; fusers {fusers}{token_map}."


def markdown_report(report: dict[str, Any]) -> str:
    machine, settings = report["machine"], report["settings"]
    device = machine["gpu"] or f"{machine['cpu']} ({machine['usable_cores']} usable cores)"
    lines = [
        "# C2C performance (issue 9)",
        "",
        f"{device}; torch {machine['torch']}, transformers {machine['transformers']}, torch threads "
        f"{machine['torch_threads']}, bases in {machine['dtype']} (fuser float32) on {machine['device']}; "
        f"load average at start {', '.join(f'{x:.2f}' for x in machine['load_average_at_start'])}.",
        "",
        f"Prompt {settings['prompt_tokens']} tokens; decode: {settings['decode_steps']} steps of each model on the "
        f"prompt's cache; batch rows generate {settings['new_tokens']} tokens; e2e answers "
        f"{settings['answer_tokens']} tokens after hints of "
        f"{' and '.join(map(str, settings['hint_tokens']))} tokens; "
        f"training batch {settings['train_batch_size']} x ({settings['prompt_tokens']} + "
        f"{settings['response_tokens']}) tokens. The timed calls of a section are interleaved; medians of "
        f"{settings['repeats']} calls after {settings['warmup']} warm-up calls. Memory: {report['memory_method']}",
        "",
        "## Targets",
        "",
        targets_table(report["targets"]),
    ]
    for shape, result in report["results"].items():
        lines += [f"## {shape}", "", models_line(result["models"]), ""]
        if shape in REFERENCE:
            lines += [f"Authors' code (issue 9, another run): {REFERENCE[shape]}", ""]
        lines += [section_table(section, by_fuser) for section, by_fuser in result["sections"].items()]
    return "\n".join(lines)


def write_report(report: dict[str, Any], output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    (output / "perf.json").write_text(json.dumps(report, indent=2) + "\n")
    (output / "perf.md").write_text(markdown_report(report))


# --------------------------------------------------------------------------- driver


def run_shape_set(shape: str, args: argparse.Namespace) -> dict[str, Any]:
    """Build the pair and one C2C model per fuser size, run the selected sections; returns models and sections."""
    started = time.perf_counter()
    pair = load_pair(shape, getattr(torch, args.dtype), torch.device(args.device), args.models)
    models = {}
    for name in args.fuser:
        torch.manual_seed(args.seed)
        models[name] = C2CForCausalLM.from_base_models(
            pair.receiver, pair.sharer, pair.receiver_tokenizer, pair.sharer_tokenizer, **FUSERS[name]
        ).eval()
    bench = Bench(pair, models, args)
    print(
        f"## {shape}: built in {time.perf_counter() - started:.0f} s. {models_line(describe_models(bench))}\n",
        flush=True,
    )
    sections = {}
    for section in (s for s in SECTIONS if s in args.sections):
        started = time.perf_counter()
        sections[section] = SECTION_FUNCTIONS[section](bench)
        print(section_table(section, sections[section]), f"({time.perf_counter() - started:.0f} s)\n", flush=True)
    return {"models": describe_models(bench), "sections": sections}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the selected sections for every selected shape set; writes the report after each shape set."""
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    report: dict[str, Any] = {
        "machine": describe_machine(args),
        "settings": settings,
        "memory_method": MEMORY_METHOD[torch.device(args.device).type],
        "results": {},
        "targets": [],
    }
    for shape in args.shapes:
        report["results"][shape] = run_shape_set(shape, args)
        report["targets"] = check_targets(report["results"], issue_targets(args.hint_tokens))
        if args.output:
            write_report(report, args.output)
    print("## Targets\n\n" + targets_table(report["targets"]), flush=True)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shapes", nargs="+", choices=SHAPE_SETS, default=["small", "paper", "real"])
    parser.add_argument(
        "--fuser",
        nargs="+",
        choices=tuple(FUSERS),
        default=["default", "small"],
        help="fuser sizes: default = the paper's (hidden 1024, 3 blocks), small = hidden 256",
    )
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument(
        "--models",
        type=Path,
        default=Path.home() / ".cache" / "c2c-real-models",
        help="folder with smollm2-135m-instruct and qwen2.5-coder-0.5b-instruct (shape set real)",
    )
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=16, help="tokens generated by each row in the batch section")
    parser.add_argument("--decode-steps", type=int, default=64, help="timed decode steps of each model (decode section)")
    parser.add_argument("--hint-tokens", type=int, nargs="+", default=[64, 256], help="text-to-text hint lengths")
    parser.add_argument("--answer-tokens", type=int, default=8, help="tokens of every e2e answer")
    parser.add_argument("--response-tokens", type=int, default=64, help="supervised tokens of the training sequence")
    parser.add_argument("--train-batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before them")
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default="float32",
        help="dtype of the bases (the fuser stays float32)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fusers' initialisation")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("docs/results/perf"),
        help="folder for perf.json and perf.md (written after each shape set)",
    )
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.prompt_tokens < 16:
        parser.error("--prompt-tokens must be at least 16 (batch prompts shrink from it by 1/16 steps)")
    counts = (args.repeats, args.decode_steps, args.answer_tokens, args.response_tokens, *args.hint_tokens)
    if min(counts) < 1 or args.new_tokens < 2:
        parser.error(
            "--repeats, --decode-steps, --answer-tokens, --response-tokens and --hint-tokens must be positive, "
            "--new-tokens >= 2"
        )
    return run(args)


if __name__ == "__main__":
    main()
