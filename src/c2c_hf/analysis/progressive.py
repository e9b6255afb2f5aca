"""Progressive fusion: accuracy and answer loss as a growing fraction of the prompt cache takes the fused KV."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from ..cache import KV
from ..data import MCItem
from ..modeling_c2c import C2CForCausalLM
from .caches import answer_logits, kv_of, model_device, require_eval, with_kv
from .examples import Example, as_examples, summarize

SIDES = ("last", "first")  # which end of the prompt cache is fused first


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

    Each prompt is prefilled and fused once (`model.fuse_prompt`, keeping the receiver's own KV); for every fraction
    the last (`side="last"`) or first (`"first"`) fraction of the prompt-cache positions takes the fused KV and the
    rest keeps the receiver's own, then the last prompt token and the answer run on that cache. Fraction 0 is the
    receiver alone and 1.0 full C2C. `side="both"` runs both sides on the same prefills. Multiple-choice items
    (`MCItem`, need `tokenizer`) are scored by the largest choice-letter logit, free-form examples by answer loss
    and first-token accuracy. Examples run one at a time (batch 1, no padding).
    """
    require_eval(model)
    if side not in (*SIDES, "both") or not all(0 <= f <= 1 for f in fractions):
        raise ValueError(
            f"side must be one of {(*SIDES, 'both')} and fractions lie in [0, 1]; got {side!r}, {fractions}."
        )
    sides = SIDES if side == "both" else (side,)
    device = model_device(model)
    scores = {s: [[] for _ in fractions] for s in sides}  # side -> fraction -> per-example scores
    examples = as_examples(items_or_examples, tokenizer)
    metric = "choice accuracy" if examples and examples[0].is_choice else "first answer token accuracy, answer loss"
    for example in examples:
        example = example.to(device)
        prompt = model.fuse_prompt(example.prompt_ids[None, :-1], keep_receiver_kv=True)  # fuses [0, L-1)
        fused = kv_of(prompt.cache)
        for s in sides:
            for i, fraction in enumerate(fractions):
                chosen = fused_positions(len(example.prompt_ids) - 1, fraction, s)
                cache = with_kv(prompt.cache, mix_kv(prompt.receiver_kv, fused, chosen))
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


__all__ = ["SIDES", "fused_positions", "mix_kv", "progressive_fusion"]
