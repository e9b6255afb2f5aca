"""What every section of the performance runner shares: timing and memory helpers, and `Bench`, one shape set under
test (the pair, a C2C model per fuser size, random inputs of the shapes C2C runs on)."""

from __future__ import annotations

import argparse
import ctypes
import gc
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import GenerationMixin, LogitsProcessor, LogitsProcessorList

from c2c_hf import C2CForCausalLM, C2CFuser
from c2c_hf.cache import KV
from c2c_hf.evaluation import LM

from .shapes import Pair

MEMORY_METHOD = {
    "cpu": "Linux resident memory of this process: after gc and malloc_trim(0) (freed heap pages go back, so reusing "
    "them counts again), VmRSS is read, the peak VmHWM is reset to it (/proc/self/clear_refs = 5), the call runs, "
    "and working peak = VmHWM - VmRSS before. Weights = parameter + buffer bytes; peak = weights + working peak.",
    "cuda": "torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus memory_allocated before the call "
    "(working peak); weights = parameter + buffer bytes; peak = weights + working peak.",
}


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


def fuse_all_layers(fuser: C2CFuser, receiver_kv: KV, sharer_kv: KV) -> list[torch.Tensor]:
    """The fuser on every receiver layer: the fused K and V of each layer, in one flat list."""
    return [fused for layer in fuser(receiver_kv, sharer_kv) for fused in layer]


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

    def fuser_inputs(self, batch: int, length: int) -> tuple[KV, KV]:
        """Random KV of the shapes C2C fuses, in the bases' dtype: `(receiver_kv, sharer_kv)`, a `(keys, values)`
        pair per receiver layer, `(B, H_r, N, D_r)` each, and per sharer layer, `(B, H_s, N, D_s)` each."""
        config = self.any_model.config

        def randn(heads: int, dim: int) -> torch.Tensor:
            tensor = torch.randn(batch, heads, length, dim, generator=self.generator)
            return tensor.to(self.device, self.pair.receiver.dtype)

        def layers(shape: tuple[int, int, int]) -> KV:
            count, heads, dim = shape
            return [(randn(heads, dim), randn(heads, dim)) for _ in range(count)]

        return layers(config.receiver_kv_shape), layers(config.sharer_kv_shape)

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
