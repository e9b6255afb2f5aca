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
with the `c2c` model type registered (lm-eval 0.4 reads no plugin entry points for models); as in every `c2c-hf`
command, its flags are shown with dashes and parse with underscores too (lm-eval's own spelling):

    c2c-hf lm-eval --model c2c --model-args pretrained=<c2c dir or id>,dtype=float32 --tasks arc_easy \
        --batch-size 8 --device cuda --output-path results/ --log-samples

The stock `hf` model on a C2C repo scores C2C's numbers only for one-token continuations at batch size 1; anything
else is refused with an error pointing here (`c2c_hf.lm_eval_guard`), never scored silently wrong.
"""

from __future__ import annotations

import sys

import torch
from lm_eval._cli import HarnessCLI
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from lm_eval.utils import setup_logging
from tqdm import tqdm

from ..cli_flags import accept_both_spellings


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


def build_parser() -> HarnessCLI:
    """lm-eval's command line (`lm_eval.__main__.cli_evaluate`'s `HarnessCLI`), each of its sub-commands' long flags
    accepted with dashes as well as with lm-eval's underscores (`accept_both_spellings`)."""
    cli = HarnessCLI()
    for parser in cli._subparsers.choices.values():  # lm-eval exposes its sub-command parsers nowhere else
        accept_both_spellings(parser)
    return cli


def main(argv: list[str] | None = None) -> None:
    """`c2c-hf lm-eval ARGS`: run lm-eval's command line (`lm_eval ARGS`) with the `c2c` model type registered."""
    command_line = sys.argv
    sys.argv = ["c2c-hf lm-eval", *(sys.argv[1:] if argv is None else argv)]  # lm-eval's parser reads sys.argv
    try:
        setup_logging()
        cli = build_parser()
        cli.execute(cli.parse_args())
    finally:
        sys.argv = command_line


__all__ = ["C2CLM", "build_parser", "main"]
