"""Training data for C2C: chat / instruction / multiple-choice datasets -> prompt + response features, and a collator.

A training example is a prompt (everything before the final assistant turn, rendered with the receiver's chat
template including the generation prompt) followed by the response (the final assistant turn). The model fuses the
KV of prompt positions `[0, P-1)`, then runs the last prompt token and the response on the fused cache; only the
response is supervised. `build_features` writes `input_ids`, `labels` and `fuse_length` (= prompt tokens - 1);
`C2CDataCollator` left-pads prompts and right-pads responses so one split (`fuse_length`) serves a whole batch.
Multiple-choice examples are `MCItem`s asked with `format_prompt`, the prompt the evaluation asks with too.
"""

from __future__ import annotations

import ast
import functools
import os
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import torch
from datasets.exceptions import DatasetGenerationError
from transformers import PreTrainedTokenizerBase

from .validation import IGNORE_INDEX, describe, is_integer

if TYPE_CHECKING:
    from .cache import C2CCache
    from .training import SharerCacheMemo

OVERFLOW_MODES = ("drop", "truncate")
# Accepted column sets, by format name (a dataset may carry other columns too; they are removed).
FORMATS = {
    "chat": ("messages",),
    "instruction": ("instruction", "output"),
    "multiple_choice": ("question", "choices", "answer"),
}
LOCAL_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
_KEPT, _TRUNCATED, _DROPPED = 0, 1, 2  # per-example status written by the tokenizing map
_FEATURES = datasets.Features(
    {
        "input_ids": datasets.List(datasets.Value("int32")),
        "labels": datasets.List(datasets.Value("int32")),
        "fuse_length": datasets.Value("int32"),
        "_status": datasets.Value("int8"),
    }
)


def choice_letters(num_choices: int) -> tuple[str, ...]:
    """The labels of `num_choices` choices: "A", "B", ..."""
    return tuple(string.ascii_uppercase[:num_choices])


@dataclass(frozen=True)
class MCItem:
    """One multiple-choice question; `gold` indexes `choices`."""

    benchmark: str
    id: str
    question: str
    choices: tuple[str, ...]
    gold: int
    subject: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.choices, tuple) or not all(isinstance(choice, str) for choice in self.choices):
            raise TypeError(f"{self.id}: choices must be a tuple of strings, got {describe(self.choices)}.")
        if not is_integer(self.gold):
            raise TypeError(f"{self.id}: gold must be the int index of the right choice, got {describe(self.gold)}.")
        if not 2 <= len(self.choices) <= len(string.ascii_uppercase):
            raise ValueError(f"{self.id}: {len(self.choices)} choices (need 2..26)")
        if not 0 <= self.gold < len(self.choices):
            raise ValueError(f"{self.id}: gold {self.gold} out of range for {len(self.choices)} choices")

    @property
    def letters(self) -> tuple[str, ...]:
        """The choice labels, "A", "B", ... one per choice."""
        return choice_letters(len(self.choices))


def format_prompt(item: MCItem) -> str:
    """The one plain multiple-choice prompt that training and every evaluated method use: question, lettered choices,
    instruction."""
    letters = item.letters
    options = "\n".join(f"{letter}. {choice}" for letter, choice in zip(letters, item.choices))
    valid = ", ".join(letters[:-1]) + f" or {letters[-1]}"
    return f"{item.question}\n\n{options}\n\nAnswer with the letter of the correct choice ({valid}) only."


@dataclass
class FeatureStats:
    """What `build_features` did: examples in, examples kept, dropped for length, truncated to fit."""

    total: int
    kept: int
    dropped_too_long: int
    truncated: int

    def __str__(self) -> str:
        return (
            f"{self.kept}/{self.total} examples kept ({self.dropped_too_long} dropped as too long, "
            f"{self.truncated} truncated)"
        )


def detect_format(column_names: Sequence[str]) -> str:
    """The format name (a key of `FORMATS`) whose columns the dataset has; `ValueError` if none matches."""
    for name, required in FORMATS.items():
        if all(column in column_names for column in required):
            return name
    accepted = "; ".join(f"{name}: {', '.join(columns)}" for name, columns in FORMATS.items())
    raise ValueError(
        f"Cannot tell the dataset format from its columns {sorted(column_names)}. Accepted column sets: {accepted} "
        "(instruction datasets may add an optional 'input' column)."
    )


def parse_choices(value: Any, where: str) -> tuple[tuple[str, ...], list[str] | None]:
    """A multiple-choice row's `(choices, labels)`: the choices as non-empty strings (numbers are written out), from a
    list, the text of a list (a CSV cell: "['Paris', 'Rome']") or a `{"text": [...], "label": [...]}` mapping (ARC and
    OpenBookQA on the Hub; `labels` then names the choices an answer may refer to, else None). A bare string or another
    mapping is refused, not split into one choice per character or key. `where` names the row in errors."""
    if isinstance(value, str):
        try:
            parsed = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            parsed = None
        if not isinstance(parsed, (list, tuple)):
            raise ValueError(
                f"{where}: choices is the string {value!r}, not a list of choices: give a list such as ['Paris', "
                "'Rome'] (a CSV cell may hold that list's text)."
            )
        value = parsed
    labels = None
    if isinstance(value, Mapping):
        if not isinstance(value.get("text"), (list, tuple)):
            raise ValueError(
                f"{where}: choices is a mapping with keys {sorted(value)}: give a list of choices, or "
                "{'text': [choices...], 'label': [their labels...]}."
            )
        raw_labels = value.get("label")
        labels = [str(label).strip() for label in raw_labels] if isinstance(raw_labels, (list, tuple)) else None
        value = value["text"]
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{where}: choices must be a list of strings, got {describe(value)}.")
    bad = [c for c in value if isinstance(c, bool) or not isinstance(c, (str, int, float)) or not str(c).strip()]
    if bad:
        raise ValueError(f"{where}: every choice must be a non-empty string, got {bad[:3]!r} in {list(value)!r}.")
    if labels is not None and len(labels) != len(value):
        raise ValueError(f"{where}: choices has {len(value)} texts but {len(labels)} labels.")
    return tuple(str(choice) for choice in value), labels


def _answer_index(answer: Any, num_choices: int, index: int, labels: list[str] | None = None) -> int:
    if labels is not None and isinstance(answer, str) and answer.strip() in labels:
        return labels.index(answer.strip())
    letters = choice_letters(num_choices)
    if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < num_choices:
        return answer
    if isinstance(answer, str) and answer.strip() in set(letters):
        return letters.index(answer.strip())
    raise ValueError(
        f"Example {index}: answer {answer!r} is neither an index in [0, {num_choices}) nor a letter in "
        f"{letters[0]}..{letters[-1]} for its {num_choices} choices."
    )


def conversation_messages(row: Mapping[str, Any], fmt: str, index: int, system_prompt: str | None) -> list[dict[str, Any]]:
    """The example as chat messages whose last message is the (non-empty) assistant response."""
    if fmt == "chat":
        messages = [dict(message) for message in row["messages"] or []]
        if not messages or messages[-1].get("role") != "assistant":
            last = messages[-1].get("role") if messages else None
            raise ValueError(f"Example {index}: the last message must be the assistant's, got role {last!r}.")
    elif fmt == "instruction":
        user = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]
    else:
        choices, labels = parse_choices(row["choices"], f"Example {index}")
        if not 2 <= len(choices) <= len(string.ascii_uppercase):
            raise ValueError(f"Example {index}: a multiple-choice example needs 2 to 26 choices, got {len(choices)}.")
        if not isinstance(row["question"], str) or not row["question"].strip():
            raise ValueError(f"Example {index}: the question must be a non-empty string, got {row['question']!r}.")
        gold = _answer_index(row["answer"], len(choices), index, labels)
        item = MCItem("train", str(index), row["question"], choices, gold)
        messages = [
            {"role": "user", "content": format_prompt(item)},  # the prompt the evaluation harness asks with
            {"role": "assistant", "content": item.letters[item.gold]},
        ]
    response = messages[-1].get("content")
    if not isinstance(response, str) or not response.strip():
        raise ValueError(f"Example {index}: the final assistant response is empty ({response!r}).")
    if system_prompt is not None and not any(message.get("role") == "system" for message in messages):
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]], index: int) -> tuple[str, str]:
    """`(prompt_text, response_text)`: the history with the generation prompt, and what the final turn adds to it."""
    prompt_text = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full_text.startswith(prompt_text):
        raise ValueError(
            f"Example {index}: the chat template renders the conversation without its final assistant turn "
            "(with the generation prompt) differently from the start of the full conversation, so the prompt / "
            f"response boundary is undefined.\nprompt: {prompt_text!r}\nfull:   {full_text!r}"
        )
    return prompt_text, full_text[len(prompt_text) :]


def _tokenize_batch(
    batch: dict[str, list[Any]],
    indices: list[int],
    *,
    tokenizer: PreTrainedTokenizerBase,
    fmt: str,
    system_prompt: str | None,
    max_length: int,
    overflow: str,
) -> dict[str, list[Any]]:
    rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
    texts = [_render(tokenizer, conversation_messages(row, fmt, i, system_prompt), i) for row, i in zip(rows, indices)]
    prompt_ids = tokenizer([prompt for prompt, _ in texts], add_special_tokens=False)["input_ids"]
    response_ids = tokenizer([response for _, response in texts], add_special_tokens=False)["input_ids"]
    out: dict[str, list[Any]] = {"input_ids": [], "labels": [], "fuse_length": [], "_status": []}
    for index, prompt, response in zip(indices, prompt_ids, response_ids):
        if len(prompt) < 2:
            raise ValueError(
                f"Example {index}: the prompt has {len(prompt)} token(s); C2C needs at least 2 (the fused prefix and "
                "the last prompt token)."
            )
        status = _KEPT
        if len(prompt) + len(response) > max_length:
            room = max_length - len(prompt)
            if overflow == "truncate" and room >= 1:
                response, status = response[:room], _TRUNCATED
            else:
                prompt, response, status = [], [], _DROPPED
        out["input_ids"].append(prompt + response)
        out["labels"].append([IGNORE_INDEX] * len(prompt) + response)
        out["fuse_length"].append(len(prompt) - 1)
        out["_status"].append(status)
    return out


def build_features(
    dataset: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int = 2048,
    overflow: str = "drop",
    system_prompt: str | None = None,
    num_proc: int | None = None,
) -> tuple[datasets.Dataset, FeatureStats]:
    """Tokenize a chat, instruction or multiple-choice dataset into C2C training features.

    Returns a dataset with exactly `input_ids` (prompt + response ids), `labels` (-100 on the prompt, the response
    ids on the response: only the final assistant turn is supervised) and `fuse_length` (prompt tokens - 1), and
    the `FeatureStats`. Examples longer than `max_length` are dropped (`overflow="drop"`) or have their response
    cut from the right (`"truncate"`; dropped when not even one response token fits). `system_prompt` is
    prepended to conversations that have no system message.
    """
    if overflow not in OVERFLOW_MODES:
        raise ValueError(f"overflow must be one of {OVERFLOW_MODES}, got {overflow!r}.")
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 (a fused token and the last prompt token), got {max_length}.")
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"The tokenizer ({getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__}) has no chat "
            "template: set `tokenizer.chat_template` (for example, the receiver's) before building features."
        )
    if len(dataset) == 0:
        raise ValueError(
            "The dataset is empty (0 rows): check the data files and the split (a slice such as train[:0] selects "
            "nothing)."
        )
    fmt = detect_format(dataset.column_names)
    tokenized = dataset.map(
        functools.partial(
            _tokenize_batch,
            tokenizer=tokenizer,
            fmt=fmt,
            system_prompt=system_prompt,
            max_length=max_length,
            overflow=overflow,
        ),
        batched=True,
        with_indices=True,
        remove_columns=dataset.column_names,
        features=_FEATURES,
        num_proc=num_proc,
        desc="Tokenizing for C2C",
    )
    counts = Counter(tokenized["_status"])
    stats = FeatureStats(
        total=len(dataset),
        kept=len(dataset) - counts[_DROPPED],
        dropped_too_long=counts[_DROPPED],
        truncated=counts[_TRUNCATED],
    )
    if stats.kept == 0:
        raise ValueError(
            f"No usable example: all {stats.total} examples are longer than max_length={max_length} tokens. Raise "
            "max_length, or use overflow='truncate' to cut responses to fit."
        )
    if counts[_DROPPED]:
        tokenized = tokenized.filter(
            lambda statuses: [status != _DROPPED for status in statuses],
            batched=True,
            input_columns="_status",
            num_proc=num_proc,
            desc="Dropping too-long examples",
        )
    return tokenized.remove_columns("_status"), stats


def left_pad(rows: Sequence[Sequence[int] | torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad 1-D token id rows into `(input_ids, attention_mask)`, each `(B, longest row)` long tensors."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.as_tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids, mask


def _token_list(feature: Mapping[str, Any], key: str, row: int) -> torch.Tensor:
    """A feature's `key` ("input_ids" / "labels") as a non-empty 1-D long tensor, refusing anything else."""
    value = feature[key]
    try:
        tensor = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"Feature {row}: {key} must be a list of integers, got {describe(value)}.") from error
    if tensor.dim() != 1 or tensor.numel() == 0:
        raise ValueError(f"Feature {row}: {key} must be one non-empty flat list of integers, got shape {tuple(tensor.shape)}.")
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"Feature {row}: {key} must hold integers, got {tensor.dtype} values such as {tensor[:3].tolist()}.")
    return tensor.long()


def collator_example(feature: Any, row: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One `build_features` feature, checked, as `(input_ids (L,), labels (L,), prompt length)`: ids >= 0, labels -100
    on the prompt, the response supervised from position `fuse_length + 1` on."""
    if not isinstance(feature, Mapping):
        raise TypeError(
            f"Feature {row} must be a mapping with input_ids, labels and fuse_length (a build_features row), got "
            f"{describe(feature)}."
        )
    for key in ("input_ids", "labels", "fuse_length"):
        if key not in feature:
            raise ValueError(f"Feature {row} has no {key!r} (keys: {sorted(feature)}): build features with build_features.")
    ids, labels = _token_list(feature, "input_ids", row), _token_list(feature, "labels", row)
    fuse_length = feature["fuse_length"]
    if isinstance(fuse_length, torch.Tensor) and fuse_length.numel() == 1 and not fuse_length.is_floating_point():
        fuse_length = int(fuse_length.item())
    if not is_integer(fuse_length) or fuse_length < 1:
        raise ValueError(
            f"Feature {row}: fuse_length must be an int >= 1 (the prompt's tokens minus its last), got {describe(fuse_length)}."
        )
    if labels.shape != ids.shape:
        raise ValueError(f"Feature {row}: labels {tuple(labels.shape)} and input_ids {tuple(ids.shape)} differ in shape.")
    if (ids < 0).any() or ((labels < 0) & (labels != IGNORE_INDEX)).any():
        raise ValueError(f"Feature {row}: token ids must be >= 0 (labels: >= 0 or {IGNORE_INDEX}), got {ids.tolist()[:8]}...")
    supervised = (labels != IGNORE_INDEX).nonzero()
    if not len(supervised):
        raise ValueError(f"Feature {row} supervises no token (every label is {IGNORE_INDEX}): it has no response to train on.")
    first = int(supervised[0])
    if first != fuse_length + 1:
        raise ValueError(
            f"Feature {row}: fuse_length={fuse_length} but the first supervised label is at position {first}; "
            "the response must start right after the prompt (fuse_length + 1)."
        )
    return ids, labels, int(fuse_length) + 1


@dataclass
class C2CDataCollator:
    """Batches `build_features` examples for prefill-then-fuse: prompts left-padded, responses right-padded.

    With P the longest prompt and R the longest response, every row's response starts at column P, so
    `fuse_length` is P-1 for all rows and `logits_to_keep = R+1` keeps logits for the last prompt token and the
    response only. With `sharer_caches` (a `SharerCacheMemo`), each batch also carries a `cache` holding the sharer's
    KV of its prompts, so the sharer runs once per distinct prompt rather than once per step.
    """

    pad_token_id: int
    sharer_caches: SharerCacheMemo | None = None

    def __post_init__(self) -> None:
        if not is_integer(self.pad_token_id) or self.pad_token_id < 0:
            raise ValueError(
                f"pad_token_id must be a token id (an int >= 0), got {describe(self.pad_token_id)}: use "
                "C2CDataCollator.for_tokenizer(tokenizer), which takes the tokenizer's pad (or eos) token."
            )

    @classmethod
    def for_tokenizer(
        cls, tokenizer: PreTrainedTokenizerBase, sharer_caches: SharerCacheMemo | None = None
    ) -> C2CDataCollator:
        """A collator padding with the tokenizer's pad token, or its eos token when it has none."""
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad_id is None:
            raise ValueError("The tokenizer has neither a pad nor an eos token: set tokenizer.pad_token.")
        return cls(pad_token_id=pad_id, sharer_caches=sharer_caches)

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor | int | C2CCache]:
        if not features:
            raise ValueError("C2CDataCollator got an empty batch.")
        examples = [collator_example(feature, row) for row, feature in enumerate(features)]
        prompt_width = max(prompt for _, _, prompt in examples)  # P
        response_width = max(len(ids) - prompt for ids, _, prompt in examples)  # R
        shape = (len(examples), prompt_width + response_width)
        input_ids = torch.full(shape, self.pad_token_id, dtype=torch.long)  # (B, P+R)
        attention_mask = torch.zeros(shape, dtype=torch.long)  # (B, P+R)
        labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)  # (B, P+R)
        for row, (ids, row_labels, prompt) in enumerate(examples):
            span = slice(prompt_width - prompt, prompt_width - prompt + len(ids))
            input_ids[row, span] = ids
            attention_mask[row, span] = 1
            labels[row, span] = row_labels
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "fuse_length": torch.full((len(examples),), prompt_width - 1, dtype=torch.long),  # (B,)
            "logits_to_keep": response_width + 1,
        }
        if self.sharer_caches is not None:
            batch["cache"] = self.sharer_caches.batch_cache(input_ids, attention_mask, prompt_width - 1)
        return batch


def load_dataset_any(
    name_or_paths: str | os.PathLike | Sequence[str | os.PathLike],
    split: str = "train",
    config_name: str | None = None,
) -> datasets.Dataset:
    """Load local data files (.json, .jsonl, .csv, .parquet) or a Hub dataset (or local dataset folder) by name.

    Local files form one "train" split (`split` may slice it, e.g. "train[:1000]"); all files must share a
    builder. Anything without one of those extensions goes to `datasets.load_dataset(name, config_name, split=split)`.
    """
    paths = [name_or_paths] if isinstance(name_or_paths, (str, os.PathLike)) else list(name_or_paths)
    if not paths:
        raise ValueError("load_dataset_any got no dataset name or paths.")
    builders = {LOCAL_BUILDERS.get(Path(path).suffix.lower()) for path in paths}
    if builders == {None} and len(paths) == 1:
        name = os.fspath(paths[0])
        if Path(name).is_file():
            raise ValueError(f"Unsupported data file {name!r}: use one of {sorted(LOCAL_BUILDERS)}.")
        return datasets.load_dataset(name, config_name, split=split)
    if len(builders) != 1 or None in builders:
        raise ValueError(
            f"Cannot load {[os.fspath(p) for p in paths]} together: give either one Hub dataset name or local files "
            f"of one kind ({sorted(LOCAL_BUILDERS)})."
        )
    files = [str(Path(path).expanduser()) for path in paths]
    for file in files:
        if not Path(file).is_file():
            raise FileNotFoundError(f"Data file not found: {file}")
        if Path(file).stat().st_size == 0:
            raise ValueError(f"Data file {file} is empty: it holds no examples.")
    builder = builders.pop()
    try:
        return datasets.load_dataset(builder, data_files={"train": files}, split=split)
    except DatasetGenerationError as error:
        raise ValueError(f"Could not read {files} as {builder} data files: {error.__cause__ or error}") from error
