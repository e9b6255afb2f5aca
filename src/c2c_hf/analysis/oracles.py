"""The paper's two oracles: does a richer prompt cache help a receiver, and can one model's cache be mapped into
another's?

- `cache_enrichment_oracle`: does a receiver answer better from a prompt cache computed with extra context in front
  (same length, no extra tokens attended)?
- `cache_transfer_oracle`: can a 3-layer MLP (`KVMapper`) map one model's cache into another's?

Examples run one at a time (batch 1, no padding), without gradients, on eval-mode models.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from ..cache import KV
from ..configuration_c2c import build_layer_map
from .caches import (
    BRANCHES,
    answer_logits,
    causal_lm,
    kv_of,
    model_device,
    prefill,
    require_eval,
    token_features,
    with_kv,
)
from .examples import Example, as_examples, summarize


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
    require_eval(lm)
    device = model_device(lm)
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
    require_eval(source)
    require_eval(target)
    device = model_device(target)
    source_prompts = prompts if source_prompts is None else source_prompts
    if len(source_prompts) != len(prompts) or any(len(s) != len(t) for s, t in zip(source_prompts, prompts)):
        raise ValueError("source_prompts must hold one source token per target token of every prompt.")
    num_train = min(max(round(train_fraction * len(prompts)), 1), len(prompts) - 1)
    if num_train < 1:
        raise ValueError(f"The transfer oracle needs at least 2 prompts (training and held-out), got {len(prompts)}.")
    pairs = [(t.to(device), s.to(model_device(source))) for t, s in zip(prompts, source_prompts)]

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


__all__ = ["KVMapper", "cache_enrichment_oracle", "cache_transfer_oracle"]
