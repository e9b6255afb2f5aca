"""lm-evaluation-harness model type `c2c`: continuations scored after their context is fused.

lm-eval's stock `hf` model scores `model(context + continuation[:-1])` with no context boundary, so a C2C model
would fuse part of the continuation and score only its last token after fusion (and right-padded batch rows as the
receiver alone). This model type passes the boundary as `fuse_length`: the context minus its last token is
fused, and every continuation token is scored attending to the fused cache, at any batch size (one request per
forward). Generation tasks are inherited from `hf` (`C2CForCausalLM.generate`).

From Python:

    import c2c_hf.integrations.lm_eval  # registers the model type
    lm_eval.simple_evaluate(model="c2c", model_args="pretrained=<c2c dir or id>", tasks=[...])

From the command line, `c2c-hf lm-eval` is lm-eval's own command line (every option and sub-command of `lm_eval`)
with the `c2c` model type registered (lm-eval 0.4 reads no plugin entry points for models):

    c2c-hf lm-eval --model c2c --model_args pretrained=<c2c dir or id>,dtype=float32 --tasks arc_easy \
        --batch_size 8 --device cuda --output_path results/ --log_samples

The stock `hf` model on a C2C repo scores C2C's numbers only for one-token continuations at batch size 1; anything
else is refused with an error pointing here (`c2c_hf.lm_eval_guard`), never scored silently wrong.
"""

from __future__ import annotations

import sys

import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from tqdm import tqdm


@register_model("c2c")
class C2CLM(HFLM):
    """`HFLM` whose log-likelihoods follow C2C's "prefill, then fuse" semantics."""

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
        results = []
        for cache_key, context_ids, continuation_ids in tqdm(requests, disable=disable_tqdm or self.rank != 0):
            whole = (context_ids + continuation_ids)[-(self.max_length + 1) :]
            context_length = len(whole) - len(continuation_ids)
            ids = torch.tensor([whole[:-1]], device=self.device)  # (1, L)
            with torch.no_grad():
                logits = self.model(ids, fuse_length=context_length - 1).logits[0, context_length - 1 :]
            logprobs = logits.float().log_softmax(-1)  # (len(continuation), V)
            target = torch.tensor(continuation_ids, device=logprobs.device)
            answer = (logprobs.gather(-1, target[:, None]).sum().item(), bool((logprobs.argmax(-1) == target).all()))
            results.append(answer)
            if cache_key is not None:
                self.cache_hook.add_partial("loglikelihood", cache_key, answer)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("C2C fuses a prompt; rolling (perplexity) scoring has none: evaluate the receiver.")


def main(argv: list[str] | None = None) -> None:
    """`c2c-hf lm-eval ARGS`: run lm-eval's command line (`lm_eval ARGS`) with the `c2c` model type registered."""
    from lm_eval.__main__ import cli_evaluate

    command_line = sys.argv
    sys.argv = ["c2c-hf lm-eval", *(sys.argv[1:] if argv is None else argv)]  # lm-eval's parser reads sys.argv
    try:
        cli_evaluate()
    finally:
        sys.argv = command_line


__all__ = ["C2CLM", "main"]
