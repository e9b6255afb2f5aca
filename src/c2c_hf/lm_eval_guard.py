"""Refuse lm-evaluation-harness's stock `hf` scoring of a C2C model where its scores would be silently wrong.

lm-eval's `hf` model (`HFLM._loglikelihood_tokens`) calls `model(context + continuation[:-1])`, rows right-padded to
one length and no attention mask, and reads each continuation token's log-probability at the position before it.
A C2C `forward` given no `fuse_length` fuses every position but the last, so only the last position holds C2C's
prediction: the score is C2C's exactly when every continuation is one token and no row is padded (batch size 1, or
rows of one length). Any other request would fuse part of the continuation and score it (or a padded row) with the
receiver alone, so it is refused with a pointer to the `c2c` model type (`c2c_hf.integrations.lm_eval`), which
passes the context boundary as `fuse_length`.

The boundary is not in the model's inputs: the check reads the batch lm-eval is scoring from its
`_loglikelihood_tokens` frame on the call stack. Where that batch cannot be read (another lm-eval version, or a
batch-size probe), the call is refused too: refused, never silently wrong. This is a core module (standard library
and torch only) so that checkpoints loaded as remote code carry the check.
"""

from __future__ import annotations

import sys
from types import FrameType

import torch

# lm-eval's scoring method that calls the model without a context boundary, and the local naming its current batch
# of `(cache_key, context_ids, continuation_ids)` requests.
SCORING_FUNCTION, SCORING_BATCH = "_loglikelihood_tokens", "chunk"
USE_C2C_MODEL_TYPE = (
    "Use the `c2c` model type, which passes the boundary: `c2c-hf lm-eval --model c2c --model_args pretrained=<dir "
    "or id> ...` on the command line, or `import c2c_hf.integrations.lm_eval` and "
    '`lm_eval.simple_evaluate(model="c2c", ...)` in Python.'
)


def lm_eval_scoring_frame() -> FrameType | None:
    """The innermost frame of lm-eval's own `_loglikelihood_tokens` on the call stack, or None."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == SCORING_FUNCTION and frame.f_globals.get("__name__", "").startswith("lm_eval."):
            return frame
        frame = frame.f_back
    return None


def refuse_stock_lm_eval_scoring(input_ids: torch.Tensor) -> None:
    """Raise a `ValueError` when lm-eval's stock `hf` scoring calls the model on `input_ids` `(B, L)` with requests
    whose scores would not be C2C's (a continuation longer than one token, or a right-padded row)."""
    frame = lm_eval_scoring_frame()
    if frame is None:
        return
    batch, length = input_ids.shape
    requests = frame.f_locals.get(SCORING_BATCH)
    del frame
    readable = isinstance(requests, (list, tuple)) and len(requests) == batch
    readable = readable and all(isinstance(r, (list, tuple)) and len(r) == 3 for r in requests)
    if readable and all(len(continuation) == 1 and len(context) >= length for _, context, continuation in requests):
        return  # each row is a whole context: its last position is C2C's prediction of the one continuation token
    seen = (
        f"continuations of {sorted({len(r[2]) for r in requests})} tokens, contexts of "
        f"{sorted({len(r[1]) for r in requests})} tokens, a model input of {length} tokens"
        if readable
        else f"a batch of shape {(batch, length)} whose requests could not be read"
    )
    raise ValueError(
        f"lm-eval's `hf` model is scoring a C2C model ({seen}): it passes context + continuation with no boundary, "
        "so the model would fuse part of the continuation and score it (and right-padded rows) with the receiver "
        "alone. `hf` gives C2C's scores only for one-token continuations in unpadded batches (batch size 1). "
        + USE_C2C_MODEL_TYPE
    )


__all__ = ["USE_C2C_MODEL_TYPE", "lm_eval_scoring_frame", "refuse_stock_lm_eval_scoring"]
