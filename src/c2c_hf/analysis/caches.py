"""KV-cache helpers every analysis shares: read a cache's tensors, prefill one, replace its tensors, answer from it.

Every analysis follows the model's own "prefill, then fuse" split: a prompt of `L` tokens caches positions
`[0, L-1)` (the *prompt cache*, the positions C2C fuses); its last token and the answer then run on that cache, so
the first answer token is predicted by a pass that reads the (original, enriched, mapped, fused or mixed) cache.
Altering a cache is always `with_kv`: a copy of a correctly laid-out cache of the model with its tensors replaced
(sliding-window layers keep the tail they store).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from transformers import DynamicCache, PreTrainedModel

from ..cache import KV
from ..modeling_c2c import C2CForCausalLM, backbone_prefill
from .examples import Example

BRANCHES = ("key", "value")  # the two halves of a layer's cache, in `KV` order


def causal_lm(model: PreTrainedModel) -> PreTrainedModel:
    """The causal LM that answers: a C2C model's receiver, or the model itself."""
    return model.receiver if isinstance(model, C2CForCausalLM) else model


def model_device(model: PreTrainedModel) -> torch.device:
    """Where the model's input embeddings (and so its inputs) live."""
    return model.get_input_embeddings().weight.device


def require_eval(model: PreTrainedModel) -> None:
    """Refuse a model in training mode: analyses read hard gates and no dropout."""
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
    """Backbone-only prefill of `input_ids` `(B, N)` into `cache` (the model's own `backbone_prefill`).

    The default cache is laid out for `lm` (sliding-window layers store their tail, as in generation); pass
    `DynamicCache()` to keep every position of every layer.
    """
    return backbone_prefill(lm, input_ids, attention_mask, cache, position_ids)


def with_kv(cache: DynamicCache, kv: KV) -> DynamicCache:
    """A copy of `cache` whose layer `i` holds `kv[i]`, cut to the positions the layer stores (its tail)."""
    cache = copy.deepcopy(cache)
    for layer, (keys, values) in zip(cache.layers, kv, strict=True):
        stored = layer.keys.shape[-2]
        layer.keys, layer.values = keys[..., -stored:, :], values[..., -stored:, :]
    return cache


def answer_logits(lm: PreTrainedModel, cache: DynamicCache | None, example: Example) -> torch.Tensor:
    """Logits `(1 + M, V)` of `[last prompt token, answer...]` run at their own positions on `cache` (which grows);
    `cache=None` runs them with no prompt cache at all."""
    start = len(example.prompt_ids) - 1
    rest = torch.cat([example.prompt_ids[start:], example.answer_ids])[None]  # (1, 1 + M)
    positions = torch.arange(start, start + rest.shape[1], device=rest.device)[None]
    return lm(input_ids=rest, position_ids=positions, cache=cache, use_cache=cache is not None).logits[0].float()


def row_batches(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Row chunks `(ids, mask)`, each `(<= batch_size, L)`, of a batch (an all-ones mask without one)."""
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    for start in range(0, input_ids.shape[0], batch_size):
        yield input_ids[start : start + batch_size], mask[start : start + batch_size]


__all__ = [
    "BRANCHES",
    "KV",
    "answer_logits",
    "causal_lm",
    "kv_of",
    "model_device",
    "prefill",
    "require_eval",
    "row_batches",
    "token_features",
    "with_kv",
]
