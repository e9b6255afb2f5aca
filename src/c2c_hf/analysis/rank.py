"""Effective rank of the receiver's prompt cache, its own vs fused: does fusion enrich the cache's
representation space?"""

from __future__ import annotations

import itertools
from typing import Any

import torch

from ..modeling_c2c import C2CForCausalLM
from .caches import BRANCHES, kv_of, model_device, require_eval, row_batches, token_features


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
    sequences, then over layers. `input_ids` / `attention_mask`: a left-padded batch `(B, L)`. The model fuses
    each batch itself (`model.fuse_prompt`), which also returns the receiver's own KV before fusion.
    """
    require_eval(model)
    device = model_device(model)
    caches = ("original", "fused")
    # branch -> cache -> layer -> per-sequence effective ranks
    ranks = {branch: {name: [[] for _ in model.fuser.layers] for name in caches} for branch in BRANCHES}
    for ids, mask in row_batches(input_ids, attention_mask, batch_size):
        ids, mask = ids.to(device), mask.to(device)
        prompt = model.fuse_prompt(ids[:, :-1], mask[:, :-1], keep_receiver_kv=True)
        real = mask[:, :-1].bool()  # (B, L-1) real prompt-cache positions
        for name, kv in zip(caches, (prompt.receiver_kv, kv_of(prompt.cache))):
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


__all__ = ["cache_effective_rank", "effective_rank"]
