"""The answering model of every method: a causal LM (a base, or the C2C model) with the tokenizer its prompts are
written in.

`LM.render` is the one prompt builder (the user text as a user message in the model's chat template); on top of it
`LM` generates greedy answers and scores choices by their letter logits or by their text's likelihood as the reply.
The C2C model is just another LM: its forward prefills the sharer, fuses, and answers from the receiver's prompt.
"""

from __future__ import annotations

import functools
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..alignment import position_ids_from_mask
from ..data import MCItem, left_pad

# Extra chat-template variables: answer directly (Qwen3-style templates otherwise open a thinking block;
# templates that do not know the variable ignore it).
CHAT_TEMPLATE_KWARGS = {"enable_thinking": False}


@dataclass
class LM:
    """A model that answers (a base LM, or the C2C model) with the tokenizer its prompts are written in."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase

    def render(self, user_text: str) -> str:
        """The prompt: `user_text` as a user message in the chat template with generation prompt, or as is."""
        if not self.templated:
            return user_text
        messages = [{"role": "user", "content": user_text}]
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, **CHAT_TEMPLATE_KWARGS
        )

    @property
    def templated(self) -> bool:
        """Whether prompts go through the chat template, which writes its own special tokens and ends with the
        generation prompt (so a reply starts without a leading space)."""
        return bool(self.tokenizer.chat_template)

    def prompt_token_ids(self, user_texts: Sequence[str]) -> list[list[int]]:
        """The token ids of each rendered prompt (special tokens added only where no chat template writes them)."""
        prompts = [self.render(text) for text in user_texts]
        return self.tokenizer(prompts, add_special_tokens=not self.templated)["input_ids"]

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @functools.cached_property
    def pad_token_id(self) -> int:
        tokenizer = self.tokenizer
        return next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)

    @functools.cached_property
    def eos_token_ids(self) -> list[int]:
        """End-of-sequence ids: the generation config's and the tokenizer's."""
        configured = self.model.generation_config.eos_token_id if self.model.generation_config else None
        ids = set(configured if isinstance(configured, list) else [configured]) | {self.tokenizer.eos_token_id}
        return sorted(i for i in ids if i is not None)

    @functools.cached_property
    def letter_token_ids(self) -> list[list[int]]:
        """For each letter A..Z, the tokens that spell it as the next token: the letter alone or after a space."""
        candidates = []
        for letter in string.ascii_uppercase:
            spellings = [self.tokenizer.encode(text, add_special_tokens=False) for text in (letter, " " + letter)]
            single = sorted({ids[0] for ids in spellings if len(ids) == 1})
            candidates.append(single or [spellings[0][0]])
        return candidates

    def encode(self, user_texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded `(input_ids, attention_mask)`, each `(B, L)`, of the rendered prompts."""
        ids, mask = left_pad(self.prompt_token_ids(user_texts), self.pad_token_id)
        return ids.to(self.device), mask.to(self.device)

    def generate(self, user_texts: Sequence[str], max_new_tokens: int) -> list[tuple[str, int]]:
        """Greedy continuations: `(text, generated tokens including the end-of-sequence token)` per prompt."""
        ids, mask = self.encode(user_texts)
        output = self.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=self.pad_token_id,
            eos_token_id=self.eos_token_ids,
        )
        results = []
        for row in output[:, ids.shape[1] :].tolist():
            length = next((i + 1 for i, token in enumerate(row) if token in self.eos_token_ids), len(row))
            results.append((self.tokenizer.decode(row[:length], skip_special_tokens=True).strip(), length))
        return results

    def prompt_pass(self, user_texts: Sequence[str], use_cache: bool = False) -> tuple[Any, torch.Tensor]:
        """One forward over the left-padded rendered prompts (C2C: prefill and fuse), logits kept for the last
        position only: the model's output and the prompts' `(B, P)` attention mask."""
        ids, mask = self.encode(user_texts)
        output = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids_from_mask(mask, ids.shape[1]),
            logits_to_keep=1,
            use_cache=use_cache,
        )
        return output, mask

    def choice_scores(self, user_texts: Sequence[str], num_choices: Sequence[int]) -> list[torch.Tensor]:
        """Per prompt, the `(num_choices,)` logits of the choice letters at the answer position (the last prompt
        token); a letter's logit is the largest over its spellings (`letter_token_ids`)."""
        logits = self.prompt_pass(user_texts)[0].logits[:, -1].float().cpu()  # (B, V)
        return [
            torch.stack([logits[row, candidates].max() for candidates in self.letter_token_ids[:n]])
            for row, n in enumerate(num_choices)
        ]

    def choice_likelihoods(self, user_texts: Sequence[str], choices: Sequence[Sequence[str]]) -> list[torch.Tensor]:
        """Per prompt, the `(num_choices,)` log-likelihoods of each choice's text as the reply to the rendered prompt,
        per character of the choice (lm-eval's `acc_norm`). Each prompt runs once (C2C: prefills and fuses once);
        every choice then continues from a copy of its prompt's cache, all choices in one batch."""
        prompt, mask = self.prompt_pass(user_texts, use_cache=True)  # mask (B, P), left-padded
        first_log_probs = prompt.logits[:, -1].float().log_softmax(-1)  # (B, V): the reply's first token
        answers = [
            self.tokenizer(text if self.templated else " " + text, add_special_tokens=False)["input_ids"]
            for options in choices
            for text in options
        ]
        owners = torch.tensor([row for row, options in enumerate(choices) for _ in options], device=self.device)
        cache = prompt.cache
        cache.batch_select_indices(owners)  # one copy of its prompt's cache per choice: R rows
        width = max(len(answer) for answer in answers)
        answer_ids = torch.full((len(answers), width), self.pad_token_id, dtype=torch.long)  # (R, A), right-padded
        answer_mask = torch.zeros((len(answers), width), dtype=torch.long)
        for row, answer in enumerate(answers):
            answer_ids[row, : len(answer)], answer_mask[row, : len(answer)] = torch.tensor(answer), 1
        answer_ids, answer_mask = answer_ids.to(self.device), answer_mask.to(self.device)
        full_mask = torch.cat([mask[owners], answer_mask], dim=1)  # (R, P + A)
        logits = self.model(
            input_ids=answer_ids,
            attention_mask=full_mask,
            position_ids=position_ids_from_mask(full_mask, width),
            cache=cache,
            use_cache=True,
        ).logits.float()  # (R, A, V): position j predicts answer token j + 1
        log_probs = torch.cat([first_log_probs[owners, None], logits[:, :-1].log_softmax(-1)], dim=1)  # (R, A, V)
        token_log_probs = log_probs.gather(-1, answer_ids.unsqueeze(-1)).squeeze(-1) * answer_mask  # (R, A)
        characters = torch.tensor([len(text) for options in choices for text in options], device=self.device)
        per_character = (token_log_probs.sum(-1) / characters).cpu()  # (R,)
        return list(per_character.split([len(options) for options in choices]))

    def scores(self, user_texts: Sequence[str], items: Sequence[MCItem], mode: str) -> list[torch.Tensor]:
        """Per prompt, a `(num_choices,)` score per choice: choice-text likelihoods (`"likelihood"`) or letter logits
        (any other mode)."""
        if mode == "likelihood":
            return self.choice_likelihoods(user_texts, [item.choices for item in items])
        return self.choice_scores(user_texts, [len(item.choices) for item in items])
