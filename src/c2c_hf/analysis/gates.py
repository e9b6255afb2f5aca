"""The gate map: which receiver layers' K / V gates are open, and the fuser's dynamic weights per layer and head."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..modeling_c2c import C2CForCausalLM
from .caches import BRANCHES, model_device, require_eval, row_batches


@torch.no_grad()
def gate_map(
    model: C2CForCausalLM,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Which receiver layers' K / V gates are open, and the mean dynamic weight per layer and KV head.

    The dynamic weight is the fuser's `sigmoid(weight_head(...))`, read with forward hooks while the model fuses
    the prompt caches of `input_ids` `(B, L)` (`model.fuse_prompt`), averaged over the real prompt-cache tokens. A
    closed gate skips its branch at inference (its weight has no effect and is not computed): its weights are
    `None`. A fuser without gates reports every gate open.
    """
    require_eval(model)
    if not hasattr(model.fuser.layers[0].key, "weight_head"):
        raise ValueError(
            f"gate_map needs dynamic weights: this fuser's fusion is {model.config.fusion!r}, whose branches compute "
            "none (no weight head, no gate). Map a fuser with dynamic weights, such as C2C's gated fusion."
        )
    device = model_device(model)
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
        for ids, mask in row_batches(input_ids, attention_mask, batch_size):
            ids, mask = ids.to(device), mask.to(device)
            real = mask[:, :-1].bool()
            model.fuse_prompt(ids[:, :-1], mask[:, :-1])
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


__all__ = ["gate_map"]
