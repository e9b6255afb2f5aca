"""The paper's analyses of C2C (Fu et al., arXiv 2510.03215), as functions and as `c2c-hf analyze`.

- `cache_enrichment_oracle`: does a receiver answer better from a prompt cache computed with extra context in front
  (same length, no extra tokens attended)?
- `cache_transfer_oracle`: can a 3-layer MLP map one model's cache into another's?
- `effective_rank` / `cache_effective_rank`: entropy effective rank of the K and V caches, own vs fused.
- `progressive_fusion`: accuracy / answer loss as a growing fraction of the prompt positions is fused.
- `gate_map`: which layers' gates are open, and the fuser's dynamic weights per layer and head.

Every analysis follows the model's own "prefill, then fuse" split: a prompt of `L` tokens caches positions
`[0, L-1)` (the *prompt cache*, the positions C2C fuses); its last token and the answer then run on that cache, so
the first answer token is predicted by a pass that reads the (original, enriched, mapped, fused or mixed) cache.
Altering a cache is always `with_kv`: a copy of a correctly laid-out cache of the model with its tensors replaced
(sliding-window layers keep the tail they store). Examples run one at a time (batch 1, no padding); the rank and
gate analyses take left-padded batches and use real tokens only. Every analysis runs without gradients and
expects an eval-mode model (hard gates).

`c2c-hf analyze {enrichment,transfer,rank,progressive,gates} --model <c2c dir> --data FILE --output DIR` writes
`<analysis>.json` and `<analysis>.png`; `--data` is a jsonl of `{"prompt", "answer", "context"?}` texts, or
`--benchmark NAME [--data PATH]` uses multiple-choice items (`load_benchmark`) rendered as `c2c-hf eval` does.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from .benchmarks import BENCHMARKS, MCItem, format_prompt, load_benchmark
from .cache import C2CCache
from .configuration_c2c import build_layer_map
from .data import left_pad
from .evaluation import LM, load_models
from .alignment import position_ids_from_mask
from .modeling_c2c import C2CForCausalLM

ANALYSES = ("enrichment", "transfer", "rank", "progressive", "gates")
SIDES = ("last", "first")
BRANCHES = ("key", "value")
KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values), each (B, H, N, D)


# --------------------------------------------------------------------------- examples


@dataclass
class Example:
    """One analysed prompt, in receiver token ids.

    Free-form answers are scored by answer loss and first-answer-token accuracy; multiple-choice items (no answer
    tokens, `choice_token_ids` and `gold` set) by the largest choice-letter logit at the answer position.
    """

    prompt_ids: torch.Tensor  # (L,), L >= 2: positions [0, L-1) form the prompt cache
    answer_ids: torch.Tensor  # (M,); empty for multiple choice
    context_ids: torch.Tensor | None = None  # (C,): the richer context of the enrichment oracle
    choice_token_ids: list[list[int]] | None = None  # per choice letter, the token ids that spell it
    gold: int | None = None

    def __post_init__(self) -> None:
        if self.prompt_ids.dim() != 1 or len(self.prompt_ids) < 2:
            raise ValueError(
                f"An example needs a 1-D prompt of at least 2 tokens, got shape {tuple(self.prompt_ids.shape)}."
            )
        if len(self.answer_ids) == 0 and self.choice_token_ids is None:
            raise ValueError("An example needs answer tokens, or choice_token_ids and gold (multiple choice).")

    @property
    def is_choice(self) -> bool:
        return self.choice_token_ids is not None

    def to(self, device: torch.device) -> Example:
        context = None if self.context_ids is None else self.context_ids.to(device)
        return replace(
            self, prompt_ids=self.prompt_ids.to(device), answer_ids=self.answer_ids.to(device), context_ids=context
        )

    def score(self, logits: torch.Tensor) -> dict[str, Any]:
        """Score the logits `(1 + M, V)` of `[last prompt token, answer...]`: `correct` (0/1) and `loss` or `scores`."""
        if self.is_choice:
            scores = torch.stack([logits[0, ids].max() for ids in self.choice_token_ids])  # (num_choices,)
            prediction = int(scores.argmax())
            return {"correct": float(prediction == self.gold), "prediction": prediction, "scores": scores.tolist()}
        answer_logits = logits[: len(self.answer_ids)].float()  # (M, V): position j predicts answer token j
        return {
            "correct": float(answer_logits[0].argmax() == self.answer_ids[0]),
            "loss": float(F.cross_entropy(answer_logits, self.answer_ids)),
        }


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> torch.Tensor:
    return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)


def example_from_texts(row: dict[str, str], tokenizer: PreTrainedTokenizerBase, chat_template: bool = False) -> Example:
    """An `Example` from `{"prompt", "answer", "context"?}` texts, tokenized as written (no special tokens added).

    `chat_template=True` renders the prompt as a user message in the tokenizer's chat template (as `c2c-hf eval`
    does); the context, if any, still goes in front of the whole rendered prompt.
    """
    prompt = LM(None, tokenizer).render(row["prompt"]) if chat_template else row["prompt"]
    context = row.get("context")
    return Example(
        _encode(tokenizer, prompt),
        _encode(tokenizer, row["answer"]),
        None if not context else _encode(tokenizer, context),
    )


def example_from_item(item: MCItem, tokenizer: PreTrainedTokenizerBase) -> Example:
    """A multiple-choice `Example`: the item's prompt in the chat template, scored by choice-letter logits."""
    lm = LM(None, tokenizer)  # LM's prompt rendering and letter tokens need only the tokenizer
    ids = torch.tensor(lm.prompt_token_ids([format_prompt(item)])[0], dtype=torch.long)
    return Example(ids, ids.new_empty(0), choice_token_ids=lm.letter_token_ids[: len(item.choices)], gold=item.gold)


def load_examples(path: str | Path, tokenizer: PreTrainedTokenizerBase, chat_template: bool = False) -> list[Example]:
    """Examples from a jsonl file of `{"prompt", "answer", "context"?}` rows."""
    with open(path, encoding="utf-8") as f:
        return [example_from_texts(json.loads(line), tokenizer, chat_template) for line in f if line.strip()]


def as_examples(
    rows: Iterable[Example | MCItem | dict], tokenizer: PreTrainedTokenizerBase | None = None
) -> list[Example]:
    """`Example`s from examples, multiple-choice items or text rows (the last two need the receiver's tokenizer)."""
    examples = []
    for row in rows:
        if isinstance(row, Example):
            examples.append(row)
            continue
        if tokenizer is None:
            raise ValueError(
                f"A tokenizer is needed to analyse {type(row).__name__} rows; pass Example objects otherwise."
            )
        examples.append(
            example_from_item(row, tokenizer) if isinstance(row, MCItem) else example_from_texts(row, tokenizer)
        )
    return examples


# --------------------------------------------------------------------------- caches


def causal_lm(model: PreTrainedModel) -> PreTrainedModel:
    """The causal LM that answers: a C2C model's receiver, or the model itself."""
    return model.receiver if isinstance(model, C2CForCausalLM) else model


def _device(model: PreTrainedModel) -> torch.device:
    return model.get_input_embeddings().weight.device


def _require_eval(model: PreTrainedModel) -> None:
    if model.training:
        raise ValueError("Analyses need an eval-mode model (hard gates, no dropout): call model.eval() first.")


def kv_of(cache: DynamicCache) -> KV:
    """The cache's per-layer `(keys, values)`, each `(B, H, N, D)` (N: the positions the layer stores)."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def token_features(states: torch.Tensor) -> torch.Tensor:
    """Per-token features: `(..., H, N, D)` -> `(..., N, H*D)`."""
    return states.transpose(-3, -2).flatten(-2)


def prefill(
    lm: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    cache: DynamicCache | None = None,
) -> DynamicCache:
    """Backbone-only prefill of `input_ids` `(B, N)` into `cache`.

    The default cache is laid out for `lm` (sliding-window layers store their tail, as in generation); pass
    `DynamicCache()` to keep every position of every layer.
    """
    cache = DynamicCache(config=lm.config) if cache is None else cache
    lm.base_model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache, use_cache=True
    )
    return cache


def with_kv(cache: DynamicCache, kv: KV) -> DynamicCache:
    """A copy of `cache` whose layer `i` holds `kv[i]`, cut to the positions the layer stores (its tail)."""
    cache = copy.deepcopy(cache)
    for layer, (keys, values) in zip(cache.layers, kv, strict=True):
        stored = layer.keys.shape[-2]
        layer.keys, layer.values = keys[..., -stored:, :], values[..., -stored:, :]
    return cache


def fuse_prompt(
    model: C2CForCausalLM, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> tuple[C2CCache, KV]:
    """C2C's prompt cache for `input_ids` `(B, L)`: the fused `C2CCache` over positions `[0, L-1)`, as
    `C2CForCausalLM.forward` builds it, and the receiver's own KV of the same positions before fusion."""
    num_fused = input_ids.shape[1] - 1
    prefix_mask = None if attention_mask is None else attention_mask[:, :num_fused]
    sharer_cache = model.sharer_cache_for(input_ids, attention_mask, num_fused)
    positions = None if prefix_mask is None else position_ids_from_mask(prefix_mask, num_fused)
    cache = prefill(
        model.receiver, input_ids[:, :num_fused], prefix_mask, positions, C2CCache(model.receiver.config, sharer_cache)
    )
    original = kv_of(cache)  # `fuse` assigns new tensors, so these stay the receiver's own KV
    cache.fuse(model.fuser)
    return cache, original


def answer_logits(lm: PreTrainedModel, cache: DynamicCache | None, example: Example) -> torch.Tensor:
    """Logits `(1 + M, V)` of `[last prompt token, answer...]` run at their own positions on `cache` (which grows);
    `cache=None` runs them with no prompt cache at all."""
    start = len(example.prompt_ids) - 1
    rest = torch.cat([example.prompt_ids[start:], example.answer_ids])[None]  # (1, 1 + M)
    positions = torch.arange(start, start + rest.shape[1], device=rest.device)[None]
    return lm(input_ids=rest, position_ids=positions, cache=cache, use_cache=cache is not None).logits[0].float()


def summarize(scores: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean accuracy (and answer loss, for free-form answers) of per-example scores."""
    summary: dict[str, Any] = {"n": len(scores), "accuracy": sum(s["correct"] for s in scores) / max(len(scores), 1)}
    if scores and "loss" in scores[0]:
        summary["loss"] = sum(s["loss"] for s in scores) / len(scores)
    return summary


def _batches(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, batch_size: int):
    """Row chunks `(ids, mask)`, each `(<= batch_size, L)`, of a batch (an all-ones mask without one)."""
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    for start in range(0, input_ids.shape[0], batch_size):
        yield input_ids[start : start + batch_size], mask[start : start + batch_size]


# --------------------------------------------------------------------------- 1. cache enrichment oracle


@torch.no_grad()
def cache_enrichment_oracle(
    receiver: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None,
    examples: Iterable[Example | dict],
) -> dict[str, Any]:
    """Receiver answers from its own prompt cache vs from the same positions' KV computed with a context in front.

    Enriched cache: one prefill of `context + prompt[:-1]` (every position kept), of which only the prompt
    positions' KV is kept, so the cache has the plain run's length and no context token is attended afterwards.
    Positions: the context runs at positions `-C..-1` and the prompt at `0..L-2`, exactly as in the plain run.
    RoPE attention depends on relative positions only, so this is the natural run of `context + prompt` with the
    prompt keys rotated back to the plain run's positions; the last prompt token and the answer then run at the
    plain run's positions too, and the only difference between the two runs is the content of the prompt KV.
    (This needs rotary position embeddings, as every C2C base has; an empty context gives the plain run exactly.)

    `receiver`: a causal LM or a C2C model (its receiver is used); `tokenizer` reads text rows (None for `Example`s).
    """
    lm = causal_lm(receiver)
    _require_eval(lm)
    device = _device(lm)
    records = []
    for example in as_examples(examples, tokenizer):
        example = example.to(device)
        num_cached = len(example.prompt_ids) - 1
        context = example.context_ids if example.context_ids is not None else example.prompt_ids.new_empty(0)
        plain = prefill(lm, example.prompt_ids[None, :num_cached])  # (1, L-1) prompt cache, laid out for lm
        rich_ids = torch.cat([context, example.prompt_ids[:num_cached]])[None]  # (1, C + L-1)
        rich_positions = torch.arange(-len(context), num_cached, device=device)[None]
        rich = prefill(lm, rich_ids, position_ids=rich_positions, cache=DynamicCache())
        enriched = with_kv(plain, kv_of(rich))  # keeps the last L-1 positions: the prompt's
        records.append({
            "context_tokens": len(context),
            "plain": example.score(answer_logits(lm, plain, example)),
            "enriched": example.score(answer_logits(lm, enriched, example)),
        })  # fmt: skip
    own, rich = summarize([r["plain"] for r in records]), summarize([r["enriched"] for r in records])
    result: dict[str, Any] = {
        "n": len(records),
        "plain": own,
        "enriched": rich,
        "accuracy_delta": rich["accuracy"] - own["accuracy"],
        "positions": "context at -C..-1, prompt at 0..L-2 (the plain run's positions)",
        "examples": records,
    }
    if "loss" in own:
        result["loss_delta"] = rich["loss"] - own["loss"]
        result["improved_fraction"] = sum(r["enriched"]["loss"] < r["plain"]["loss"] for r in records) / len(records)
    return result


# --------------------------------------------------------------------------- 2. cache transfer oracle


class KVMapper(nn.Module):
    """A 3-layer MLP from one model's per-token keys (or values), flattened over heads, to another model's.

    Inputs and targets are standardised per feature with training statistics; the MLP predicts the standardised
    target: `Linear(in -> h) -> GELU -> Linear(h -> h) -> GELU -> Linear(h -> out)`.
    """

    def __init__(self, in_features: int, out_features: int, hidden_size: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_features, hidden_size), nn.GELU(),
            nn.Linear(hidden_size, hidden_size), nn.GELU(),
            nn.Linear(hidden_size, out_features),
        )  # fmt: skip
        for name, size in (
            ("in_mean", in_features),
            ("in_std", in_features),
            ("out_mean", out_features),
            ("out_std", out_features),
        ):
            self.register_buffer(name, torch.zeros(size) if "mean" in name else torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (..., in_features) -> (..., out_features)
        return self.mlp((x - self.in_mean) / self.in_std) * self.out_std + self.out_mean

    @classmethod
    def fit(
        cls,
        x: torch.Tensor,
        y: torch.Tensor,
        hidden_size: int = 256,
        steps: int = 300,
        learning_rate: float = 1e-3,
        batch_tokens: int = 1024,
        seed: int = 0,
    ) -> tuple[KVMapper, float]:
        """Train on token pairs `x: (N, in)`, `y: (N, out)` (Adam, MSE on standardised targets, random minibatches);
        returns the mapper in eval mode and its final training loss."""
        generator = torch.Generator().manual_seed(seed)
        x, y = x.float(), y.float()
        torch.manual_seed(seed)
        mapper = cls(x.shape[1], y.shape[1], hidden_size).to(x.device)
        mapper.in_mean.copy_(x.mean(0))
        mapper.in_std.copy_(x.std(0, unbiased=False).clamp_min(1e-6))
        mapper.out_mean.copy_(y.mean(0))
        mapper.out_std.copy_(y.std(0, unbiased=False).clamp_min(1e-6))
        target = (y - mapper.out_mean) / mapper.out_std
        optimizer = torch.optim.Adam(mapper.mlp.parameters(), lr=learning_rate)
        loss = torch.tensor(float("nan"))
        with torch.enable_grad():
            for _ in range(steps):
                rows = torch.randint(len(x), (min(batch_tokens, len(x)),), generator=generator).to(x.device)
                normalised = (x[rows] - mapper.in_mean) / mapper.in_std
                loss = F.mse_loss(mapper.mlp(normalised), target[rows])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        return mapper.eval(), float(loss)


def _apply_mapper(mapper: KVMapper, source_states: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Map source keys or values `(1, H_s, N, D_s)` into the layout and dtype of `like` `(1, H_t, N, D_t)`."""
    mapped = mapper(token_features(source_states).to(like.device).float())  # (1, N, H_t*D_t)
    return mapped.unflatten(-1, (like.shape[1], like.shape[3])).transpose(1, 2).to(like.dtype)


def _full_kv(lm: PreTrainedModel, ids: torch.Tensor) -> KV:
    """Every position's KV of `ids` `(N,)`, each `(1, H, N, D)`."""
    return kv_of(prefill(lm, ids[None], cache=DynamicCache()))


@torch.no_grad()
def cache_transfer_oracle(
    source_model: PreTrainedModel,
    target_model: PreTrainedModel,
    prompts: Sequence[torch.Tensor],
    source_prompts: Sequence[torch.Tensor] | None = None,
    *,
    train_fraction: float = 0.75,
    prefix_fraction: float = 0.5,
    layer_map: str | list[int] = "terminal",
    hidden_size: int = 256,
    steps: int = 300,
    learning_rate: float = 1e-3,
    batch_tokens: int = 1024,
    seed: int = 0,
) -> dict[str, Any]:
    """Train MLPs that map the source model's cache into the target's, and test them on held-out prompts.

    - Mappers: one `KVMapper` (3-layer MLP) per target layer for keys and one for values (separate, like the
      fuser's K and V branches), from the paired source layer (`build_layer_map(layer_map, T, S)`, terminal by
      default), per token; trained on every position of the first `train_fraction` of the prompts.
    - Held-out prompts: the first `prefix_fraction` of each is the cache; reconstruction error of the mapped cache
      (relative MSE `sum |pred - true|^2 / sum |true|^2`, whose zero-map baseline is 1, and mean per-token
      cosine), with the predict-the-training-mean baseline for scale; and the target's loss on the rest of the
      prompt decoded from its own cache, the mapped cache, an all-zero cache and no cache (same positions).

    `prompts` are target token ids `(N,)`; `source_prompts` the source's, one per target position (default: the
    same ids, for models sharing a tokenizer).
    """
    source, target = causal_lm(source_model), causal_lm(target_model)
    _require_eval(source)
    _require_eval(target)
    device = _device(target)
    source_prompts = prompts if source_prompts is None else source_prompts
    if len(source_prompts) != len(prompts) or any(len(s) != len(t) for s, t in zip(source_prompts, prompts)):
        raise ValueError("source_prompts must hold one source token per target token of every prompt.")
    num_train = min(max(round(train_fraction * len(prompts)), 1), len(prompts) - 1)
    if num_train < 1:
        raise ValueError(f"The transfer oracle needs at least 2 prompts (training and held-out), got {len(prompts)}.")
    pairs = [(t.to(device), s.to(_device(source))) for t, s in zip(prompts, source_prompts)]

    # Training pairs: every position of the training prompts, per (target layer, branch).
    train = [(_full_kv(source, s), _full_kv(target, t)) for t, s in pairs[:num_train]]
    target_layers = len(train[0][1])
    pairing = build_layer_map(layer_map, target_layers, len(train[0][0]))
    mappers: list[list[KVMapper]] = []
    train_losses = []
    for layer, source_layer in enumerate(pairing):
        branch_mappers = []
        for b in range(2):
            x = torch.cat([token_features(src[source_layer][b][0]) for src, _ in train]).to(device)  # (N, H_s*D_s)
            y = torch.cat([token_features(tgt[layer][b][0]) for _, tgt in train])  # (N, H_t*D_t)
            mapper, loss = KVMapper.fit(x, y, hidden_size, steps, learning_rate, batch_tokens, seed + 2 * layer + b)
            branch_mappers.append(mapper)
            train_losses.append(loss)
        mappers.append(branch_mappers)

    # Held-out: reconstruction of the prefix cache, and decoding the rest from it.
    sums = {key: torch.zeros(target_layers, 2, dtype=torch.float64) for key in ("err", "mean_err", "true", "cos", "n")}
    scores: dict[str, list] = {"own": [], "mapped": [], "zero": [], "empty": []}
    for target_ids, source_ids in pairs[num_train:]:
        split = min(max(round(prefix_fraction * len(target_ids)), 1), len(target_ids) - 2)
        if split < 1:
            raise ValueError("Held-out prompts need at least 3 tokens (a cached prefix and a continuation).")
        example = Example(target_ids[: split + 1], target_ids[split + 1 :])  # caches [0, split)
        own = _full_kv(target, target_ids[:split])
        source_kv = _full_kv(source, source_ids[:split])
        mapped = [
            tuple(_apply_mapper(mappers[layer][b], source_kv[source_layer][b], own[layer][b]) for b in range(2))
            for layer, source_layer in enumerate(pairing)
        ]
        for layer, b in itertools.product(range(target_layers), range(2)):
            true = token_features(own[layer][b])[0].double()  # (split, H_t*D_t)
            pred = token_features(mapped[layer][b])[0].double()
            sums["err"][layer, b] += float((pred - true).pow(2).sum())
            sums["mean_err"][layer, b] += float((mappers[layer][b].out_mean.double() - true).pow(2).sum())
            sums["true"][layer, b] += float(true.pow(2).sum())
            sums["cos"][layer, b] += float(F.cosine_similarity(pred, true, dim=-1).sum())
            sums["n"][layer, b] += split
        layout = prefill(target, target_ids[None, :split])  # the target's own prompt cache, laid out for it
        zero = [(torch.zeros_like(k), torch.zeros_like(v)) for k, v in own]
        for name, kv in (("own", own), ("mapped", mapped), ("zero", zero)):
            scores[name].append(example.score(answer_logits(target, with_kv(layout, kv), example)))
        scores["empty"].append(example.score(answer_logits(target, None, example)))

    relative = sums["err"] / sums["true"].clamp_min(1e-30)
    reconstruction = {
        branch: {
            "relative_mse": relative[:, b].tolist(),
            "relative_mse_mean": float(relative[:, b].mean()),
            "cosine": (sums["cos"][:, b] / sums["n"][:, b]).tolist(),
            "cosine_mean": float((sums["cos"][:, b] / sums["n"][:, b]).mean()),
            "mean_baseline_relative_mse": (sums["mean_err"][:, b] / sums["true"][:, b].clamp_min(1e-30)).tolist(),
            "zero_baseline_relative_mse": 1.0,
        }
        for b, branch in enumerate(BRANCHES)
    }
    return {
        "layer_map": pairing,
        "mapper": f"3-layer MLP (hidden {hidden_size}) per target layer, separate K and V, standardised features",
        "train_prompts": num_train,
        "heldout_prompts": len(pairs) - num_train,
        "prefix_fraction": prefix_fraction,
        "train_loss": {branch: train_losses[b::2] for b, branch in enumerate(BRANCHES)},
        "reconstruction": reconstruction,
        "decoding": {name: summarize(values) for name, values in scores.items()},
    }


# --------------------------------------------------------------------------- 3. effective rank


def effective_rank(matrix: torch.Tensor) -> float:
    """Entropy effective rank (Roy & Vetterli 2007): `exp(-sum p_i log p_i)`, `p = singular values / their sum`.

    In `[1, min(n, d)]` for a non-zero `(n, d)` matrix: 1 for rank one, `k` for `k` equal singular values; 0.0 for a
    matrix without a non-zero singular value (empty or all zeros).
    """
    singular = torch.linalg.svdvals(matrix.detach().double())
    total = singular.sum()
    if not total > 0:
        return 0.0
    p = singular[singular > 0] / total
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def cache_effective_rank(
    model: C2CForCausalLM,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Effective rank of the receiver's prompt cache, own vs fused, for K and V per layer.

    Per sequence and layer the matrix is `tokens x (heads * head_dim)` over the real tokens of the prompt cache
    (positions `[0, L-1)`, the ones C2C fuses; a sliding-window layer's stored tail); values are averaged over
    sequences, then over layers. `input_ids` / `attention_mask`: a left-padded batch `(B, L)`.
    """
    _require_eval(model)
    device = _device(model)
    caches = ("original", "fused")
    # branch -> cache -> layer -> per-sequence effective ranks
    ranks = {branch: {name: [[] for _ in model.fuser.layers] for name in caches} for branch in BRANCHES}
    for ids, mask in _batches(input_ids, attention_mask, batch_size):
        ids, mask = ids.to(device), mask.to(device)
        fused_cache, original = fuse_prompt(model, ids, mask)
        real = mask[:, : ids.shape[1] - 1].bool()  # (B, L-1) real prompt-cache positions
        for name, kv in zip(caches, (original, kv_of(fused_cache))):
            for (layer, states), (b, branch) in itertools.product(enumerate(kv), enumerate(BRANCHES)):
                keep = real[:, -states[b].shape[-2] :]  # (B, N) for the positions this layer stores
                for row in range(ids.shape[0]):
                    if keep[row].any():  # (real tokens, H*D) matrix
                        matrix = token_features(states[b][row])[keep[row]]
                        ranks[branch][name][layer].append(effective_rank(matrix))
    result: dict[str, Any] = {"sequences": int(input_ids.shape[0])}
    for branch, by_cache in ranks.items():
        result[branch] = {}
        for name, per_layer in by_cache.items():
            means = [sum(v) / len(v) if v else float("nan") for v in per_layer]
            result[branch][name] = means
            result[branch][f"{name}_mean"] = sum(means) / len(means)
    return result


# --------------------------------------------------------------------------- 4. progressive fusion


def fused_positions(num_positions: int, fraction: float, side: str) -> torch.Tensor:
    """`(num_positions,)` booleans: the `round(fraction * num_positions)` last (or first) prompt-cache positions."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}.")
    if not 0 <= fraction <= 1:
        raise ValueError(f"fractions must lie in [0, 1], got {fraction}.")
    count = math.floor(fraction * num_positions + 0.5)
    chosen = torch.zeros(num_positions, dtype=torch.bool)
    if side == "last":
        chosen[num_positions - count :] = True
    else:
        chosen[:count] = True
    return chosen


def mix_kv(original: KV, fused: KV, chosen: torch.Tensor) -> KV:
    """Fused KV at the `chosen` positions `(N,)`, the receiver's own elsewhere (per layer, on its stored tail)."""
    mixed = []
    for own_layer, fused_layer in zip(original, fused, strict=True):
        select = chosen[-own_layer[0].shape[-2] :].view(1, 1, -1, 1).to(own_layer[0].device)  # (1, 1, N, 1)
        mixed.append(tuple(torch.where(select, f, o) for o, f in zip(own_layer, fused_layer)))
    return mixed


@torch.no_grad()
def progressive_fusion(
    model: C2CForCausalLM,
    items_or_examples: Iterable[Example | MCItem | dict],
    fractions: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    side: str = "last",
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> dict[str, Any]:
    """Accuracy (and answer loss) as the fused fraction of the prompt cache grows.

    Each prompt is prefilled and fused once (`fuse_prompt`); for every fraction the last (`side="last"`) or first
    (`"first"`) fraction of the prompt-cache positions takes the fused KV and the rest keeps the receiver's own,
    then the last prompt token and the answer run on that cache. Fraction 0 is the receiver alone and 1.0 full
    C2C. `side="both"` runs both sides on the same prefills. Multiple-choice items (`MCItem`, need `tokenizer`)
    are scored by the largest choice-letter logit, free-form examples by answer loss and first-token accuracy.
    """
    _require_eval(model)
    if side not in (*SIDES, "both") or not all(0 <= f <= 1 for f in fractions):
        raise ValueError(
            f"side must be one of {(*SIDES, 'both')} and fractions lie in [0, 1]; got {side!r}, {fractions}."
        )
    sides = SIDES if side == "both" else (side,)
    device = _device(model)
    scores = {s: [[] for _ in fractions] for s in sides}  # side -> fraction -> per-example scores
    examples = as_examples(items_or_examples, tokenizer)
    metric = "choice accuracy" if examples and examples[0].is_choice else "first answer token accuracy, answer loss"
    for example in examples:
        example = example.to(device)
        fused_cache, original = fuse_prompt(model, example.prompt_ids[None])
        fused = kv_of(fused_cache)
        for s in sides:
            for i, fraction in enumerate(fractions):
                chosen = fused_positions(len(example.prompt_ids) - 1, fraction, s)
                cache = with_kv(fused_cache, mix_kv(original, fused, chosen))
                scores[s][i].append(example.score(answer_logits(model.receiver, cache, example)))
    return {
        "fractions": list(fractions),
        "n": len(examples),
        "metric": metric,
        "curves": {
            s: [{"fraction": f, **summarize(per), "examples": per} for f, per in zip(fractions, scores[s])]
            for s in sides
        },
    }


# --------------------------------------------------------------------------- 5. gate map


@torch.no_grad()
def gate_map(
    model: C2CForCausalLM,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Which receiver layers' K / V gates are open, and the mean dynamic weight per layer and KV head.

    The dynamic weight is the fuser's `sigmoid(weight_head(...))`, read with forward hooks while the model fuses
    the prompt caches of `input_ids` `(B, L)`, averaged over the real prompt-cache tokens. A closed gate skips its
    branch at inference (its weight has no effect and is not computed): its weights are `None`.
    """
    _require_eval(model)
    if model.config.fusion == "projection":
        raise ValueError(
            "gate_map needs dynamic weights: this fuser's fusion is 'projection' (its projection replaces the "
            "receiver's KV, with no weight and no gate). Map a 'gated' or 'weighted' fuser."
        )
    device = _device(model)
    num_layers, num_heads = len(model.fuser.layers), model.fuser.layers[0].key.receiver_heads
    totals = torch.zeros(num_layers, 2, num_heads, dtype=torch.float64)  # sum of weights over real tokens
    counts = torch.zeros(num_layers, 2, dtype=torch.float64)
    real: torch.Tensor | None = None  # (B, L-1) of the batch being fused, read by the hooks

    def hook(layer: int, b: int) -> Callable:
        def record(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            weight = torch.sigmoid(output.double())  # (B, N, H_r)
            keep = real[:, -weight.shape[1] :].unsqueeze(-1).to(weight.dtype)  # (B, N, 1)
            totals[layer, b] += (weight * keep).sum((0, 1)).cpu()
            counts[layer, b] += keep.sum().cpu()

        return record

    handles = [
        getattr(fuser_layer, branch).weight_head.register_forward_hook(hook(layer, b))
        for layer, fuser_layer in enumerate(model.fuser.layers)
        for b, branch in enumerate(BRANCHES)
    ]
    try:
        for ids, mask in _batches(input_ids, attention_mask, batch_size):
            ids, mask = ids.to(device), mask.to(device)
            real = mask[:, : ids.shape[1] - 1].bool()
            fuse_prompt(model, ids, mask)
    finally:
        for handle in handles:
            handle.remove()
    logits, is_open = model.fuser.gate_logits().cpu(), model.fuser.open_gates().cpu()  # (T, 2) each
    weights = totals / counts.clamp_min(1).unsqueeze(-1)  # (T, 2, H_r)
    computed = counts > 0
    return {
        "layers": num_layers,
        "heads": num_heads,
        "tokens": int(counts.max()),
        "open": {branch: is_open[:, b].tolist() for b, branch in enumerate(BRANCHES)},
        "open_fraction": float(is_open.double().mean()),
        "gate_logits": {branch: logits[:, b].tolist() for b, branch in enumerate(BRANCHES)},
        "dynamic_weight": {
            branch: [weights[t, b].tolist() if computed[t, b] else None for t in range(num_layers)]
            for b, branch in enumerate(BRANCHES)
        },
        "dynamic_weight_mean": {
            branch: [float(weights[t, b].mean()) if computed[t, b] else None for t in range(num_layers)]
            for b, branch in enumerate(BRANCHES)
        },
    }


# --------------------------------------------------------------------------- plots


def _figure(panels: int, integer_x: bool = False):
    from matplotlib.figure import Figure  # a bare Figure renders with Agg; no pyplot state
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(5.5 * panels, 4.2), layout="constrained")
    axes = [figure.add_subplot(1, panels, i + 1) for i in range(panels)]
    if integer_x:  # layer indices
        axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    return figure, axes


def plot_enrichment(result: dict[str, Any], path: str | Path) -> None:
    figure, (losses, bars) = _figure(2)
    records = result["examples"]
    if "loss_delta" in result:
        plain, enriched = [r["plain"]["loss"] for r in records], [r["enriched"]["loss"] for r in records]
        losses.scatter(plain, enriched, s=12)
        low, high = min(plain + enriched), max(plain + enriched)
        losses.plot([low, high], [low, high], color="grey", lw=1, ls="--")
        losses.set_xlabel("answer loss, own prompt cache")
        losses.set_ylabel("answer loss, enriched prompt cache")
        losses.set_title(f"loss {result['plain']['loss']:.3f} -> {result['enriched']['loss']:.3f}")
    bars.bar(["own cache", "enriched cache"], [100 * result["plain"]["accuracy"], 100 * result["enriched"]["accuracy"]])
    bars.set_ylabel("accuracy (%)")
    bars.set_ylim(0, 100)
    bars.set_title(f"Cache enrichment oracle (n={result['n']})")
    figure.savefig(path, dpi=120)


def plot_transfer(result: dict[str, Any], path: str | Path) -> None:
    figure, (errors, decoding) = _figure(2, integer_x=True)
    for branch, style in zip(BRANCHES, ("-", "--")):
        r = result["reconstruction"][branch]
        layers = range(len(r["relative_mse"]))
        errors.plot(layers, r["relative_mse"], style, marker="o", label=f"{branch}: MLP")
        errors.plot(layers, r["mean_baseline_relative_mse"], style, color="grey", label=f"{branch}: training mean")
    errors.axhline(1.0, color="black", lw=1, label="zero map")
    errors.set_xlabel("target layer")
    errors.set_ylabel("held-out relative MSE")
    errors.legend(fontsize=8)
    names = list(result["decoding"])
    values = [result["decoding"][n].get("loss", 1 - result["decoding"][n]["accuracy"]) for n in names]
    decoding.bar_label(decoding.bar(names, values), fmt="%.3f")
    decoding.set_ylabel("target loss on the continuation")
    decoding.set_title("Cache transfer oracle: decoding from each cache")
    figure.savefig(path, dpi=120)


def plot_rank(result: dict[str, Any], path: str | Path) -> None:
    figure, (axes,) = _figure(1, integer_x=True)
    for branch, color in zip(BRANCHES, ("C0", "C1")):
        r = result[branch]
        axes.plot(r["original"], color=color, ls="--", marker="o", label=f"{branch} own ({r['original_mean']:.1f})")
        axes.plot(r["fused"], color=color, marker="s", label=f"{branch} fused ({r['fused_mean']:.1f})")
    axes.set_xlabel("receiver layer")
    axes.set_ylabel("effective rank")
    axes.set_title(f"Effective rank of the prompt cache ({result['sequences']} sequences)")
    axes.legend(fontsize=8)
    figure.savefig(path, dpi=120)


def plot_progressive(result: dict[str, Any], path: str | Path) -> None:
    has_loss = any("loss" in point for curve in result["curves"].values() for point in curve)
    figure, panels = _figure(2 if has_loss else 1)
    for side, curve in result["curves"].items():
        fractions = [100 * p["fraction"] for p in curve]
        panels[0].plot(fractions, [100 * p["accuracy"] for p in curve], marker="o", label=f"fuse the {side} positions")
        if has_loss:
            panels[1].plot(fractions, [p["loss"] for p in curve], marker="o", label=f"fuse the {side} positions")
    panels[0].set_ylabel("accuracy (%)")
    panels[0].set_ylim(0, 100)
    if has_loss:
        panels[1].set_ylabel("answer loss")
    for axes in panels:
        axes.set_xlabel("fused prompt positions (%)")
        axes.legend(fontsize=8)
    panels[0].set_title(f"Progressive fusion (n={result['n']})")
    figure.savefig(path, dpi=120)


def plot_gates(result: dict[str, Any], path: str | Path) -> None:
    import numpy as np

    figure, panels = _figure(2)
    for axes, branch in zip(panels, BRANCHES):
        rows = result["dynamic_weight"][branch]
        grid = np.array([[np.nan] * result["heads"] if r is None else r for r in rows], dtype=float)  # (T, H_r)
        image = axes.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        labels = [f"{t} {'open' if o else 'closed'}" for t, o in enumerate(result["open"][branch])]
        axes.set_yticks(range(len(labels)), labels, fontsize=7)
        axes.set_xticks(range(result["heads"]))
        axes.set_xlabel("receiver KV head")
        axes.set_ylabel("receiver layer (gate)")
        open_count = sum(result["open"][branch])
        axes.set_title(f"{branch}: dynamic weight, {open_count}/{len(labels)} gates open")
        figure.colorbar(image, ax=axes, fraction=0.05)
    figure.savefig(path, dpi=120)


PLOTS: dict[str, Callable[[dict[str, Any], str | Path], None]] = {
    "enrichment": plot_enrichment,
    "transfer": plot_transfer,
    "rank": plot_rank,
    "progressive": plot_progressive,
    "gates": plot_gates,
}


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="c2c-hf analyze",
        description="The C2C paper's analyses on a C2C checkpoint; writes <analysis>.json and <analysis>.png.",
    )
    parser.add_argument("analysis", choices=ANALYSES)
    parser.add_argument("--model", required=True, help="C2C checkpoint directory or Hub id")
    parser.add_argument("--data", help='jsonl of {"prompt", "answer", "context"?} texts, or the --benchmark path')
    parser.add_argument("--benchmark", choices=BENCHMARKS, help="use multiple-choice items (--data: local path)")
    parser.add_argument("--chat-template", action="store_true", help="render jsonl prompts in the chat template")
    parser.add_argument("--limit", type=int, help="analyse at most this many examples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16", "auto"))
    parser.add_argument("--device", help="default: cuda if available, else cpu")
    parser.add_argument("--batch-size", type=int, default=8, help="rank / gates: prompts per batch")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--side", choices=(*SIDES, "both"), default="both", help="progressive: positions fused first")
    parser.add_argument("--train-fraction", type=float, default=0.75, help="transfer: prompts used for training")
    parser.add_argument("--prefix-fraction", type=float, default=0.5, help="transfer: cached part of a held-out prompt")
    parser.add_argument("--hidden-size", type=int, default=256, help="transfer: MLP width")
    parser.add_argument("--steps", type=int, default=300, help="transfer: training steps per mapper")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    return parser


def run_analysis(
    name: str,
    model: C2CForCausalLM,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Example],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Run analysis `name` on examples with the CLI's settings."""
    if name == "enrichment":
        return cache_enrichment_oracle(model.receiver, tokenizer, examples)
    if name == "progressive":
        return progressive_fusion(model, examples, args.fractions, args.side)
    prompts = [torch.cat([e.prompt_ids, e.answer_ids]) if name == "transfer" else e.prompt_ids for e in examples]
    if name == "transfer":
        source_prompts = [model.sharer_inputs(p[None])[0][0] for p in prompts]
        return cache_transfer_oracle(
            model.sharer, model.receiver, prompts, source_prompts, train_fraction=args.train_fraction,
            prefix_fraction=args.prefix_fraction, hidden_size=args.hidden_size, steps=args.steps,
            learning_rate=args.learning_rate, seed=args.seed,
        )  # fmt: skip
    pad_id = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)
    ids, mask = left_pad(prompts, pad_id)
    analyse = cache_effective_rank if name == "rank" else gate_map
    return analyse(model, ids, mask, args.batch_size)


def main(argv: list[str] | None = None) -> None:
    """`c2c-hf analyze ANALYSIS --model M --data FILE --output DIR`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.benchmark is None and args.data is None:
        parser.error("give --data (a jsonl of prompt/answer texts) or --benchmark")
    if args.analysis == "enrichment" and args.benchmark is not None:
        parser.error("enrichment needs a jsonl --data with 'context' texts, not --benchmark items")
    model, tokenizer, _ = load_models(args.model, dtype=args.dtype, device=args.device)
    if args.benchmark is not None:
        items = load_benchmark(args.benchmark, args.data, limit=args.limit, seed=args.seed)
        examples = [example_from_item(item, tokenizer) for item in items]
    else:
        examples = load_examples(args.data, tokenizer, args.chat_template)[: args.limit]
    torch.manual_seed(args.seed)
    result = run_analysis(args.analysis, model, tokenizer, examples, args)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    report = {"analysis": args.analysis, "config": vars(args), "result": result}
    (output / f"{args.analysis}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    PLOTS[args.analysis](result, output / f"{args.analysis}.png")
    print(f"c2c-hf analyze {args.analysis}: wrote {output / args.analysis}.json and .png")


__all__ = [
    "ANALYSES",
    "Example",
    "KVMapper",
    "answer_logits",
    "as_examples",
    "cache_effective_rank",
    "cache_enrichment_oracle",
    "cache_transfer_oracle",
    "effective_rank",
    "example_from_item",
    "example_from_texts",
    "fuse_prompt",
    "fused_positions",
    "gate_map",
    "load_examples",
    "main",
    "mix_kv",
    "prefill",
    "progressive_fusion",
    "with_kv",
]
