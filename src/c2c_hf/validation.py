"""Checks of what users hand to `C2CForCausalLM`: token ids, masks, labels, the fuse split and the models themselves.

Each check fails early, before any model runs, with an error that names the argument, the value received and what
would be valid, instead of an `IndexError` deep in an embedding or a broadcast error inside attention, and refuses
inputs that would run but give a silently wrong result (a right-padded prompt, an empty mask row, a training loss the
fuser cannot move).
"""

from __future__ import annotations

import difflib
import math
import numbers
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .alignment import check_sharer_input_ids
from .cache import C2CCache
from .lm_eval_guard import refuse_stock_lm_eval_scoring

IGNORE_INDEX = -100  # label of a position the loss skips
TOKEN_ID_DTYPES = (torch.int64, torch.int32)  # what an embedding accepts


def describe(value: Any) -> str:
    """A short description of a received value: a tensor's dtype and shape, else its type and (shortened) repr."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def is_integer(value: Any) -> bool:
    """An int (numpy ints included), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """A finite real number (int or float, not a bool, nan or inf)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def embedding_rows(model: Any) -> int:
    """The number of token ids a causal LM can embed (ids must lie in `[0, rows)`)."""
    return model.get_input_embeddings().weight.shape[0]


def check_token_ids(name: str, ids: Any, vocab_size: int, *, allow_empty: bool = False) -> None:
    """`ids` must be a 2-D `(batch, length)` integer tensor of ids in `[0, vocab_size)`, with at least one row and
    (unless `allow_empty`) one token per row."""
    if not isinstance(ids, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.LongTensor of shape (batch, length), got {describe(ids)}: build it with "
            "tokenizer(..., return_tensors='pt')."
        )
    if ids.dtype not in TOKEN_ID_DTYPES:
        raise TypeError(
            f"{name} must hold integer token ids (torch.long or torch.int32), got dtype {ids.dtype}: token ids come "
            "from a tokenizer; a float tensor here is usually embeddings or a mask passed in the wrong place."
        )
    if ids.dim() != 2:
        fix = f"add the batch dimension: {name}.unsqueeze(0)" if ids.dim() == 1 else "give one row of ids per sequence"
        raise ValueError(f"{name} must be 2-D (batch, length), got shape {tuple(ids.shape)}: {fix}.")
    if ids.shape[0] == 0 or (ids.shape[1] == 0 and not allow_empty):
        raise ValueError(f"{name} is empty (shape {tuple(ids.shape)}): give at least one row of at least one token.")
    outside = (ids < 0) | (ids >= vocab_size)
    if outside.any():
        row, position = (int(i) for i in outside.nonzero()[0])
        raise ValueError(
            f"{name} holds token id {int(ids[row, position])} (row {row}, position {position}), outside the "
            f"vocabulary [0, {vocab_size}): encode the text with this model's own tokenizer (ids of another "
            "tokenizer, or a -100 label copied into the ids, do not fit)."
        )


def check_attention_mask(
    name: str, mask: Any, shape: tuple[int, int], *, what: str = "input_ids", allow_empty_rows: bool = False
) -> None:
    """`mask` must be a `shape` tensor of 0 (padding) and 1 (token) with at least one token in every row (unless
    `allow_empty_rows`: the fused part of a batch may hold a row whose prompt has only its last token)."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a tensor of shape {shape}, got {describe(mask)}.")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(
            f"{name} has shape {tuple(mask.shape)} but must have shape {tuple(shape)}: one entry (1 token, 0 padding) "
            f"per position of {what}."
        )
    binary = (mask == 0) | (mask == 1)
    if mask.is_complex() or not binary.all():
        values = sorted(set(mask[~binary].flatten()[:1000].tolist()), key=str)[:5]
        raise ValueError(
            f"{name} must hold only 0 (padding) and 1 (token), got values {values} (dtype {mask.dtype}): give the "
            "tokenizer's 0/1 attention_mask, not an additive (0 / -inf) mask or weights."
        )
    empty = (mask == 0).all(dim=-1).nonzero()
    if len(empty) and not allow_empty_rows:
        raise ValueError(
            f"{name} row {int(empty[0])} is all zeros: that row has no token to attend to. Drop empty rows from the "
            "batch."
        )


def check_left_padded(name: str, mask: torch.Tensor, prompt_end: int | None = None) -> None:
    """The prompt part of a `(B, L)` 0/1 `mask` must be left-padded: within columns `[0, prompt_end]` no padding
    follows a token, and (when `prompt_end` is given) every row's token at column `prompt_end` (its last prompt
    token, which runs after fusion) is real."""
    prompt = mask if prompt_end is None else mask[:, : prompt_end + 1]
    if prompt.shape[1] == 0:
        return
    holes = (prompt[:, 1:].long() < prompt[:, :-1].long()).any(dim=-1).nonzero()
    if len(holes):
        raise ValueError(
            f"{name} row {int(holes[0])} has padding after a token within the prompt (columns 0..{prompt.shape[1] - 1}): "
            "C2C fuses the prompt's leading positions, so prompts must be left-padded. Set tokenizer.padding_side = "
            "'left' (C2CDataCollator left-pads prompts and right-pads responses)."
        )
    if prompt_end is not None and not prompt[:, -1].bool().all():
        row = int((~prompt[:, -1].bool()).nonzero()[0])
        raise ValueError(
            f"{name} row {row} is padding at column {prompt_end}, the last prompt token (fuse_length = {prompt_end}): "
            "every row's last prompt token must be real. Left-pad the prompts so that they end in the same column."
        )


def resolve_fuse_length(fuse_length: Any, length: int, batch: int | None = None) -> int:
    """The number of leading positions to fuse in a sequence of `length` tokens (default: all but the last).

    `fuse_length` is an int, or an integer tensor of shape `()` or `(batch,)` holding one value.
    """
    if fuse_length is None:
        return length - 1
    if isinstance(fuse_length, torch.Tensor):
        if fuse_length.is_floating_point() or fuse_length.is_complex() or fuse_length.dtype == torch.bool:
            raise TypeError(f"fuse_length must hold integers, got {describe(fuse_length)}.")
        if fuse_length.dim() > 1 or (fuse_length.dim() == 1 and batch is not None and len(fuse_length) != batch):
            raise ValueError(
                f"fuse_length must be an int or a tensor of shape () or ({batch},) (one value per row), got shape "
                f"{tuple(fuse_length.shape)}."
            )
        values = fuse_length.flatten().unique()
        if values.numel() != 1:
            raise ValueError(
                f"fuse_length differs between rows ({values.tolist()}): left-pad the prompts of a batch to one "
                "length so that one split serves every row."
            )
        fuse_length = int(values.item())
    elif not is_integer(fuse_length):
        raise TypeError(f"fuse_length must be an int (the number of prompt positions to fuse), got {describe(fuse_length)}.")
    if not 0 <= fuse_length < length:
        raise ValueError(
            f"fuse_length={fuse_length} is out of range for a sequence of {length} tokens: at least the last "
            "prompt token must run after fusion (0 <= fuse_length < sequence length)."
        )
    return int(fuse_length)


def check_labels(labels: Any, shape: tuple[int, int], vocab_size: int) -> None:
    """`labels` must be an integer tensor of `shape` (that of `input_ids`) holding ids in `[0, vocab_size)` or -100."""
    if not isinstance(labels, torch.Tensor) or labels.dtype not in TOKEN_ID_DTYPES:
        raise TypeError(f"labels must be an integer (torch.long) tensor shaped like input_ids {shape}, got {describe(labels)}.")
    if tuple(labels.shape) != tuple(shape):
        raise ValueError(
            f"labels has shape {tuple(labels.shape)} but input_ids has {tuple(shape)}: give one label per input "
            "position (-100 where nothing is supervised)."
        )
    outside = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= vocab_size))
    if outside.any():
        row, position = (int(i) for i in outside.nonzero()[0])
        raise ValueError(
            f"labels holds {int(labels[row, position])} (row {row}, position {position}): a label is a token id in "
            f"[0, {vocab_size}) or -100 (ignored)."
        )


def supervised_positions(labels: torch.Tensor) -> torch.Tensor:
    """`(B, L - 1)` booleans: which of positions 1.. a label supervises (label j is predicted by the logit at j - 1,
    so position 0 never is); refuses labels that supervise nothing (the loss would be nan)."""
    supervised = labels[:, 1:] != IGNORE_INDEX
    if not supervised.any():
        raise ValueError("labels supervise no position (every label after the first is -100): there is no loss to compute.")
    return supervised


def fuse_length_from_labels(labels: torch.Tensor) -> int:
    """The fuse length a batch of labels implies: the position before the first supervised label, so that the logits
    predicting every supervised token are computed after fusion. Every row must start its supervision in the same
    column (prompts left-padded, responses right-padded, as `C2CDataCollator` builds them)."""
    supervised = supervised_positions(labels)
    rows = supervised.any(dim=-1)
    firsts = (supervised[rows].int().argmax(dim=-1) + 1).unique().tolist()  # first supervised column per row
    if len(firsts) > 1:
        raise ValueError(
            f"fuse_length is not given and the rows' first supervised labels are in different columns {firsts}: "
            "left-pad the prompts so that every response starts in one column (C2CDataCollator does), or pass "
            "fuse_length."
        )
    if firsts[0] == 1:
        raise ValueError(
            "labels supervise position 1 (labels equal to input_ids?) and fuse_length is not given: C2C fuses a prompt "
            "and supervises the response after it. Set the prompt's labels to -100 (the fuse length is then inferred: "
            "the position before the first supervised label) or pass fuse_length."
        )
    return firsts[0] - 1


def check_labels_reach_fuser(labels: torch.Tensor, num_fused: int) -> None:
    """Refuse a loss the fuser cannot change (its gradient would be exactly zero): nothing fused, or every supervised
    label predicted by a logit computed before fusion (positions `<= num_fused`)."""
    if num_fused == 0:
        raise ValueError(
            "labels are given with fuse_length=0: nothing is fused, so the loss does not depend on the fuser (its "
            "gradient is exactly zero). Pass fuse_length = prompt tokens - 1, or omit it to infer it from the labels."
        )
    if not supervised_positions(labels)[:, num_fused:].any():
        raise ValueError(
            f"labels supervise only positions up to {num_fused} (fuse_length={num_fused}), whose logits are computed "
            "before fusion: the loss does not depend on the fuser and its gradient would be exactly zero. Supervise the "
            "response after the prompt: fuse_length = prompt tokens - 1, or omit fuse_length to infer it from labels."
        )


def check_forward_inputs(
    model: Any,
    input_ids: Any,
    *,
    inputs_embeds: Any,
    attention_mask: Any,
    position_ids: Any,
    cache: Any,
    labels: Any,
    logits_to_keep: Any,
    fuse_length: Any,
    sharer_input_ids: Any,
    sharer_attention_mask: Any,
    output_attentions: Any,
) -> int | None:
    """Check `C2CForCausalLM.forward`'s inputs; returns the number of positions to fuse (`None` when `cache` already
    holds a fused prompt: the receiver runs alone)."""
    if input_ids is None or inputs_embeds is not None:
        raise ValueError("C2CForCausalLM needs `input_ids` (the sharer reads tokens); `inputs_embeds` is not supported.")
    if output_attentions:
        raise ValueError("output_attentions is not supported by C2CForCausalLM: the prompt runs in two passes.")
    if not isinstance(logits_to_keep, int) or isinstance(logits_to_keep, bool) or logits_to_keep < 0:
        raise ValueError(
            f"logits_to_keep must be an int for C2CForCausalLM (>= 0; 0 keeps all), got {describe(logits_to_keep)}."
        )
    check_token_ids("input_ids", input_ids, embedding_rows(model.receiver))
    batch, length = input_ids.shape
    decoding = isinstance(cache, C2CCache) and cache.is_fused
    past = 0 if cache is None else cache.get_seq_length()  # a non-empty unfused cache is refused by fuse_prompt
    if attention_mask is not None:
        what = f"the {past} cached tokens followed by input_ids" if past else "input_ids"
        check_attention_mask("attention_mask", attention_mask, (batch, past + length), what=what)
    if position_ids is not None and (
        not isinstance(position_ids, torch.Tensor) or position_ids.dim() != 2 or position_ids.shape[1] != length
        or position_ids.shape[0] not in (1, batch)
    ):  # fmt: skip
        raise ValueError(f"position_ids must have shape ({batch}, {length}) or (1, {length}), got {describe(position_ids)}.")
    if labels is not None:
        check_labels(labels, (batch, length), model.config.text_config.vocab_size)
        kept = length if logits_to_keep == 0 else min(logits_to_keep, length)
        if (labels[:, 1 : length - kept + 1] != IGNORE_INDEX).any():
            raise ValueError(
                f"labels supervise positions whose logits are not computed (logits_to_keep={logits_to_keep}): "
                "raise logits_to_keep or set those labels to -100."
            )
    if decoding:
        return None
    if fuse_length is None and labels is not None:
        num_fused = fuse_length_from_labels(labels)
    else:
        if fuse_length is None:  # all but the last token fused: what lm-eval's stock `hf` scoring cannot rely on
            refuse_stock_lm_eval_scoring(input_ids)
        num_fused = resolve_fuse_length(fuse_length, length, batch)
    if labels is not None:
        check_labels_reach_fuser(labels, num_fused)
    check_prompt_inputs(model, input_ids, attention_mask, sharer_input_ids, sharer_attention_mask, prompt_end=num_fused)
    return num_fused


def check_prompt_inputs(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: Any,
    sharer_input_ids: Any,
    sharer_attention_mask: Any,
    *,
    prompt_end: int | None = None,
) -> None:
    """Check a prompt before the sharer and receiver prefill it: left padding (up to the last prompt token at column
    `prompt_end`, when given), and explicit sharer ids and mask shaped like `input_ids`, in the sharer's vocabulary.
    `input_ids` itself is checked by the caller."""
    if attention_mask is not None:
        check_left_padded("attention_mask", attention_mask, prompt_end)
    if sharer_input_ids is not None:
        check_token_ids("sharer_input_ids", sharer_input_ids, embedding_rows(model.sharer), allow_empty=True)
        check_sharer_input_ids(input_ids, sharer_input_ids)
    if sharer_attention_mask is not None:
        shape = tuple(input_ids.shape)
        check_attention_mask("sharer_attention_mask", sharer_attention_mask, shape, what="input_ids", allow_empty_rows=True)
        check_left_padded("sharer_attention_mask", sharer_attention_mask, prompt_end)


def check_fuse_prompt_inputs(
    model: Any, input_ids: Any, attention_mask: Any, sharer_input_ids: Any, sharer_attention_mask: Any
) -> None:
    """Check `C2CForCausalLM.fuse_prompt`'s inputs: every position is fused (`forward` passes the prompt minus its
    last token, possibly none), so rows may be all padding but no padding may follow a token."""
    check_token_ids("input_ids", input_ids, embedding_rows(model.receiver), allow_empty=True)
    if attention_mask is not None:
        check_attention_mask("attention_mask", attention_mask, tuple(input_ids.shape), allow_empty_rows=True)
    check_prompt_inputs(model, input_ids, attention_mask, sharer_input_ids, sharer_attention_mask)


def check_generate_inputs(model: Any, input_ids: Any, kwargs: dict[str, Any]) -> None:
    """Check `C2CForCausalLM.generate`'s prompt before the sharer runs: ids, a left-padded 0/1 mask, sharer ids."""
    if input_ids is None or kwargs.get("inputs_embeds") is not None:
        raise ValueError("C2CForCausalLM.generate needs `input_ids` (the sharer reads the prompt's tokens).")
    check_token_ids("input_ids", input_ids, embedding_rows(model.receiver))
    mask = kwargs.get("attention_mask")
    if mask is not None:
        check_attention_mask("attention_mask", mask, tuple(input_ids.shape))
    prompt_end = input_ids.shape[1] - 1  # the last prompt token runs after fusion and must be real in every row
    sharer_ids, sharer_mask = kwargs.get("sharer_input_ids"), kwargs.get("sharer_attention_mask")
    check_prompt_inputs(model, input_ids, mask, sharer_ids, sharer_mask, prompt_end=prompt_end)


def check_base_models(
    receiver: Any, sharer: Any, receiver_tokenizer: Any, sharer_tokenizer: Any, token_alignment: Any,
    config_kwargs: dict[str, Any], config_fields: set[str], alignments: tuple[str, ...],
) -> None:  # fmt: skip
    """Check `C2CForCausalLM.from_base_models`'s arguments: two loaded models (the receiver with an LM head), both
    tokenizers or neither, a known `token_alignment`, and only `C2CConfig` fields (`config_fields`) as settings."""
    for role, model in (("receiver", receiver), ("sharer", sharer)):
        if not isinstance(model, PreTrainedModel):
            raise TypeError(
                f"{role} must be a loaded transformers model, got {describe(model)}: load it with "
                "AutoModelForCausalLM.from_pretrained(...) (a C2C checkpoint loads with C2CForCausalLM.from_pretrained)."
            )
    if receiver.get_output_embeddings() is None:
        raise TypeError(
            f"The receiver ({type(receiver).__name__}) has no language-model head, so it cannot answer: load it with "
            "AutoModelForCausalLM, not AutoModel."
        )
    for role, tokenizer in (("receiver_tokenizer", receiver_tokenizer), ("sharer_tokenizer", sharer_tokenizer)):
        if tokenizer is not None and not isinstance(tokenizer, PreTrainedTokenizerBase):
            raise TypeError(f"{role} must be a transformers tokenizer, got {describe(tokenizer)}.")
    if (receiver_tokenizer is None) != (sharer_tokenizer is None):
        given = "receiver_tokenizer" if sharer_tokenizer is None else "sharer_tokenizer"
        raise ValueError(
            f"Only {given} was given: pass both tokenizers (to align a pair whose tokenizers differ) or neither (a pair "
            "that shares a tokenizer)."
        )
    if token_alignment is not None and token_alignment not in alignments:
        raise ValueError(f"Unknown token_alignment {token_alignment!r}: use one of {alignments}, or None.")
    unknown = sorted(set(config_kwargs) - config_fields)
    if unknown:
        hints = {name: difflib.get_close_matches(name, sorted(config_fields), n=1) for name in unknown}
        named = ", ".join(f"{name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "") for name, hint in hints.items())
        raise TypeError(f"from_base_models got settings that are not C2CConfig fields: {named}.")


__all__ = [
    "IGNORE_INDEX",
    "check_attention_mask",
    "check_base_models",
    "check_forward_inputs",
    "check_fuse_prompt_inputs",
    "check_generate_inputs",
    "check_labels",
    "check_labels_reach_fuser",
    "check_left_padded",
    "check_prompt_inputs",
    "check_token_ids",
    "describe",
    "embedding_rows",
    "fuse_length_from_labels",
    "is_finite_number",
    "is_integer",
    "resolve_fuse_length",
    "supervised_positions",
]
