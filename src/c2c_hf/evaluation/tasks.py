"""Multiple-choice benchmarks: loaders and answer extraction.

Every loader returns ``list[MCItem]`` (the item type and the one prompt every method asks, ``format_prompt``, live in
:mod:`c2c_hf.data`, which training uses too). Local files are read in the exact formats of the public copies
(llm-foundry ARC/OpenBookQA jsonl, aryopg/mmlu-redux CSVs, C-Eval ``<subject>_val.csv``, a full MMLU test
jsonl); without a path, :func:`load_benchmark` reads the Hugging Face Hub with ``datasets``.

Answer extraction (:func:`extract_choice`) is a cascade; the first level that yields a letter wins.
Only letters valid for the item (``A`` .. the ``num_choices``-th letter) count, markdown ``*``/``#``/
backticks are ignored, and full-width letters are folded to ASCII.

1. Explicit answer statements: "the answer is (B)", "Answer: B", "correct option is B", "final answer:
   B", "I choose B", "Therefore, B.", ``\\boxed{B}``, "答案是B". If several occur, the last one wins
   (a reasoning chain ends with its conclusion).
2. A lone letter label: the last non-empty line is only a letter ("B", "(B)", "B."), else the output
   starts with one ("B", "B.", "(B)", "B) Paris", "B: ...").
3. "option B" / "choice B" / "选项B": one distinct letter wins; several different letters -> None.
4. Standalone capital letters anywhere (not inside words, not the article "A" before a lowercase word,
   not right after "not "): one distinct letter wins; several different letters -> None.
5. Only when ``choices`` are given: the output repeats exactly one choice's text (:func:`match_choice_text`).

A lowercase letter counts in levels 1-3 only when no word follows it on its line ("the answer is b."
yes, "the answer is a bit unclear" no).
"""

from __future__ import annotations

import ast
import csv
import io
import json
import random
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..data import MCItem, choice_letters, parse_choices

BENCHMARKS = ("arc_challenge", "arc_easy", "openbookqa", "mmlu_redux", "ceval")

_HUB = {
    "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge", "test"),
    "arc_easy": ("allenai/ai2_arc", "ARC-Easy", "test"),
    "openbookqa": ("allenai/openbookqa", "main", "test"),
    # 57 subjects x 100 questions, like the local CSVs (edinburgh-dawg/mmlu-redux holds 30 subjects).
    "mmlu_redux": ("edinburgh-dawg/mmlu-redux-2.0", None, "test"),
    "ceval": ("ceval/ceval-exam", None, "val"),
}


def normalize_question(text: str) -> str:
    """Matching key for question text: lowercase ASCII letter/digit runs joined by single spaces.

    Punctuation, quotes and any non-ASCII character act as separators, so "sister’s" and a
    mis-decoded "sisterÕs" give the same key.
    """
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


# --------------------------------------------------------------------------- ARC / OpenBookQA


def load_query_jsonl(path: str | Path, benchmark: str) -> list[MCItem]:
    """Read an llm-foundry style jsonl (``{"query", "choices", "gold"}``), e.g. ARC or OpenBookQA.

    A leading "Question:" and a trailing "Answer:" are stripped from ``query``; rows may have any
    number of choices.
    """
    items = []
    for i, row in _jsonl_rows(path):
        question = re.sub(r"^\s*Question:\s*", "", row["query"])
        question = re.sub(r"\s*Answer:\s*$", "", question).strip()
        choices, _ = parse_choices(row["choices"], f"{path} row {i}")  # a string or mapping is refused, not split
        items.append(MCItem(benchmark, f"{benchmark}/{i}", question, choices, int(row["gold"])))
    return items


def _jsonl_rows(path: str | Path) -> Iterator[tuple[int, dict]]:
    """`(line number, row)` for every non-blank line of a jsonl file."""
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if line.strip():
                yield i, json.loads(line)


# --------------------------------------------------------------------------- MMLU-Redux


def _read_text(path: Path) -> str:
    """Decode UTF-8 (BOM tolerated), falling back to latin-1; newlines normalised to "\\n"."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a ','- or ';'-delimited CSV as dicts keyed by lowercased, stripped header names.

    The delimiter is the one whose split of the header line contains every ``required`` column
    (``csv.Sniffer`` picks ',' for several real ';' files, whose quoted fields contain commas).
    """
    text = _read_text(path)
    header = text.split("\n", 1)[0]
    for delimiter in (",", ";", "\t"):
        names = [n.strip().lower() for n in next(csv.reader([header], delimiter=delimiter))]
        if all(c in names for c in required):
            break
    else:
        raise ValueError(f"{path}: header {header!r} lacks columns {list(required)}")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    next(reader)
    return [dict(zip(names, row)) for row in reader if any(cell.strip() for cell in row)]


def _normalize_error_type(value: str | None) -> str:
    """"OK " / "Wrong Groundtruth" / "no_correct_answer" -> "ok" / "wrong_groundtruth" / ..."""
    return re.sub(r"[\s_\-]+", "_", (value or "").strip().lower()) or "ok"


def _resolve_answer(value: Any, choices: Sequence[str]) -> int | None:
    """Index named by a Redux ``correct_answer``: a letter, a 0-based index, or a choice's exact text.

    The real files use "A".."D" and "0".."3" (a digit never equals the labelled answer and "4" never
    occurs, so digits are 0-based indices).
    """
    if value is None:
        return None
    text = str(value).strip()
    if len(text) == 1 and text.upper() in choice_letters(len(choices)):
        return ord(text.upper()) - ord("A")
    if text.isdigit():
        return int(text) if int(text) < len(choices) else None
    key = normalize_question(text)
    matches = [i for i, c in enumerate(choices) if key and normalize_question(c) == key]
    return matches[0] if len(matches) == 1 else None


def _redux_item(row: dict[str, Any], subject: str, index: int) -> MCItem | None:
    """Convert one MMLU-Redux row (CSV or Hub); None for rows dropped by the rule in :func:`load_mmlu_redux`."""
    question = str(row["question"]).strip()
    if re.fullmatch(r"https?://\S+", question):
        return None
    choices = row["choices"]
    if isinstance(choices, str):
        choices = ast.literal_eval(choices)
    choices = tuple(str(c) for c in choices)
    error_type = _normalize_error_type(row.get("error_type"))
    if error_type in ("no_correct_answer", "expert"):
        return None
    if error_type == "wrong_groundtruth":
        gold = _resolve_answer(row.get("correct_answer"), choices)
        if gold is None:
            return None
    else:
        gold = int(row["answer"])
    return MCItem("mmlu_redux", f"mmlu_redux/{subject}/{index}", question, choices, gold, subject)


def load_mmlu_redux(path: str | Path) -> list[MCItem]:
    """Read MMLU-Redux ``mmlu_<subject>.csv`` files (a folder of them, or one file).

    Columns are found by header name (any order; ',' or ';' delimited; UTF-8 or latin-1). ``choices``
    is a Python list literal (parsed with ``ast.literal_eval``), ``answer`` a 0-based index.
    ``error_type`` is compared case- and separator-insensitively (empty counts as ok). Rule, as in the
    C2C authors' evaluator:

    - ``wrong_groundtruth``: gold is ``correct_answer`` (letter, 0-based index or a choice's text);
      dropped when that does not name exactly one choice;
    - ``no_correct_answer`` and ``expert``: dropped;
    - ``ok`` and the remaining types (``bad_question_clarity``, ``bad_options_clarity``,
      ``multiple_correct_answers``, whose labelled answer is still a correct one): gold is ``answer``;
      any ``correct_answer`` note on these rows is ignored;
    - a row whose question is a bare URL (one real row) is dropped.
    """
    root = Path(path)
    files = sorted(root.glob("mmlu_*.csv")) if root.is_dir() else [root]
    items = []
    for file in files:
        subject = file.stem.removeprefix("mmlu_")
        for i, row in enumerate(_read_csv(file, ("question", "choices", "answer", "error_type"))):
            try:
                item = _redux_item(row, subject, i)
            except (ValueError, SyntaxError, KeyError) as e:
                raise ValueError(f"{file}: row {i}: {e}") from e
            if item is not None:
                items.append(item)
    return items


# --------------------------------------------------------------------------- C-Eval


def load_ceval(path: str | Path) -> list[MCItem]:
    """Read C-Eval ``<subject>_val.csv`` files (a folder of them, or one file).

    Columns id, question, A, B, C, D, answer (a letter); an ``explanation`` column may be present.
    """
    root = Path(path)
    files = sorted(root.glob("*.csv")) if root.is_dir() else [root]
    items = []
    for file in files:
        subject = re.sub(r"_(val|dev|test)$", "", file.stem)
        for row in _read_csv(file, ("id", "question", "a", "b", "c", "d", "answer")):
            items.append(_ceval_item(row, subject))
    return items


def _ceval_item(row: dict[str, Any], subject: str) -> MCItem:
    choices = tuple(str(row[k]) for k in ("a", "b", "c", "d"))
    gold = ord(str(row["answer"]).strip().upper()) - ord("A")
    return MCItem("ceval", f"ceval/{subject}/{row['id']}", str(row["question"]).strip(), choices, gold, subject)


# --------------------------------------------------------------------------- full MMLU (training pools)


def load_mmlu_jsonl(path: str | Path, exclude_questions: Iterable[str] | None = None) -> list[MCItem]:
    """Read a full MMLU test jsonl (question, answer_a..answer_d, correct_answer letter, topic).

    Rows whose ``correct_answer`` is not A-D (stray header rows) are skipped. Rows whose question
    matches one of ``exclude_questions`` under :func:`normalize_question` are removed, e.g. the
    MMLU-Redux questions when building a training pool.
    """
    excluded = {normalize_question(q) for q in exclude_questions or ()}
    items = []
    for i, row in _jsonl_rows(path):
        answer = str(row.get("correct_answer", "")).strip()
        if answer not in ("A", "B", "C", "D") or normalize_question(row["question"]) in excluded:
            continue
        choices = tuple(str(row[f"answer_{k}"]) for k in "abcd")
        question = row["question"].strip()
        items.append(MCItem("mmlu", f"mmlu/{i}", question, choices, "ABCD".index(answer), row.get("topic")))
    return items


# --------------------------------------------------------------------------- dispatcher


def load_benchmark(
    name: str, path: str | Path | None = None, split: str | None = None, limit: int | None = None, seed: int = 0
) -> list[MCItem]:
    """Load benchmark ``name`` (one of :data:`BENCHMARKS`) from ``path`` or, without one, from the Hub.

    ``path``: the jsonl file (ARC, OpenBookQA) or the CSV folder/file (MMLU-Redux, C-Eval). ``split``
    applies to the Hub only (default: "val" for C-Eval, whose test labels are hidden, else "test").
    ``limit``: a deterministic subset - the first ``limit`` indices of a ``random.Random(seed)``
    shuffle, returned in their original order (the same for every run, and nested as ``limit`` grows).
    """
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose from {BENCHMARKS}")
    if path is None:
        items = _load_hub(name, split)
    elif name == "mmlu_redux":
        items = load_mmlu_redux(path)
    elif name == "ceval":
        items = load_ceval(path)
    else:
        items = load_query_jsonl(path, name)
    if limit is not None and limit < len(items):
        order = list(range(len(items)))
        random.Random(seed).shuffle(order)
        items = [items[i] for i in sorted(order[:limit])]
    return items


def _load_hub(name: str, split: str | None) -> list[MCItem]:
    """Load from the Hugging Face Hub and convert its schema to MCItem."""
    import datasets

    repo, config, default_split = _HUB[name]
    split = split or default_split
    if name in ("mmlu_redux", "ceval"):
        items = []
        for subject in datasets.get_dataset_config_names(repo):
            rows = datasets.load_dataset(repo, subject, split=split)
            if name == "ceval":
                items += [_ceval_item({k.lower(): v for k, v in row.items()}, subject) for row in rows]
            else:
                items += [item for i, row in enumerate(rows) if (item := _redux_item(row, subject, i))]
        return items
    items = []
    for row in datasets.load_dataset(repo, config, split=split):
        # ARC/OpenBookQA: choices = {"text": [...], "label": [...]}, answerKey is one of the labels
        # (ARC labels are "A".."E" or "1".."5").
        question = row["question"] if name.startswith("arc") else row["question_stem"]
        gold = list(row["choices"]["label"]).index(row["answerKey"])
        items.append(MCItem(name, f"{name}/{row['id']}", question.strip(), tuple(row["choices"]["text"]), gold))
    return items


# --------------------------------------------------------------------------- answer extraction

_LABEL = r"[\(\[\{]?\s*(?P<letter>[A-Za-z])\s*(?P<close>[\)\]\}])?(?![A-Za-z0-9])"
_EXPLICIT = [
    re.compile(p + _LABEL, re.IGNORECASE)
    for p in (
        r"\b(?:answer|option|choice)\s*(?:(?:is|would\s+be|should\s+be|will\s+be|must\s+be)\s*[:：]?|[:：=])\s*"
        r"(?:option\s+|choice\s+)?",
        r"\b(?:choose|pick|select|go\s+with)\s+(?:option\s+|choice\s+)?",
        r"\\boxed\{\s*(?:\\text(?:bf)?\{\s*)?",
        r"答案\s*(?:应该是|应为|是|为)?\s*[:：]?\s*",
    )
]
# "Therefore, B." - only when nothing but punctuation follows the letter on its line.
_CONCLUSION = re.compile(r"\b(?:therefore|thus|hence|so)\s*,?\s+" + _LABEL + r"(?=\s*[.!]?\s*(?:\n|$))", re.IGNORECASE)
_LAST_LINE = re.compile(r"[\(\[]?\s*(?P<letter>[A-Za-z])\s*[\)\]]?\s*[.:]?")
_START = re.compile(r"\s*[\(\[]?(?P<letter>[A-Za-z])(?:[\)\]]|[.:,](?=\s|$)|\s+[-–—]\s|\s*(?:\n|$))")
_OPTION = re.compile(r"(?:\b(?:option|choice)(?![A-Za-z])|选项)\s*" + _LABEL, re.IGNORECASE)
_STANDALONE = re.compile(
    r"(?<![A-Za-z0-9'’\-])(?<![Nn]ot )(?<![Nn]ot \()\(?(?P<letter>[A-Z])\)?(?![A-Za-z0-9'’\-])"
)
_ARTICLE = re.compile(r"\s+(?!(?:is|was|would|seems|looks|appears|and|or)\b)[a-z]")


def _accept(match: re.Match[str], text: str) -> bool:
    """Uppercase letters always count; lowercase ones only when no word follows on the same line."""
    if match.group("letter").isupper() or match.group("close"):
        return True
    return re.match(r"[ \t]*(?:$|\n|[^\w\s])", text[match.end() :]) is not None


def _clean(text: str) -> str:
    return re.sub(r"[*#`]", "", unicodedata.normalize("NFKC", text)).strip()


def extract_choice(text: str, num_choices: int, choices: Sequence[str] | None = None) -> int | None:
    """Index of the choice a generated answer names, or None; the cascade is in the module docstring."""
    valid = set(choice_letters(num_choices))
    text = _clean(text)

    def index(letter: str) -> int | None:
        letter = letter.upper()
        return ord(letter) - ord("A") if letter in valid else None

    explicit = [
        (m.start("letter"), m.group("letter"))
        for pattern in (*_EXPLICIT, _CONCLUSION)
        for m in pattern.finditer(text)
        if _accept(m, text) and m.group("letter").upper() in valid
    ]
    if explicit:
        return index(max(explicit)[1])

    lines = [line for line in text.split("\n") if line.strip()]
    if lines and (m := _LAST_LINE.fullmatch(lines[-1].strip())) and index(m.group("letter")) is not None:
        return index(m.group("letter"))
    if (m := _START.match(text)) and index(m.group("letter")) is not None:
        return index(m.group("letter"))

    for pattern in (_OPTION, _STANDALONE):
        found = set()
        for m in pattern.finditer(text):
            letter = m.group("letter")
            if pattern is _OPTION and not _accept(m, text):
                continue
            if pattern is _STANDALONE and letter == "A" and _ARTICLE.match(text, m.end()):
                continue
            if letter.upper() in valid:
                found.add(letter.upper())
        if len(found) == 1:
            return index(found.pop())
        if found:
            return None

    return match_choice_text(text, choices) if choices is not None else None


def match_choice_text(text: str, choices: Sequence[str]) -> int | None:
    """Index of the one choice whose text the output repeats, or None.

    First an exact match after :func:`normalize_question`; otherwise the choices whose normalised
    text occurs in the output as whole words, minus those contained in another such choice
    ("Wrong" inside "Not wrong"), must leave exactly one.
    """
    out = normalize_question(text)
    keys = [normalize_question(c) for c in choices]
    exact = [i for i, k in enumerate(keys) if k and k == out]
    if len(exact) == 1:
        return exact[0]
    found = [i for i, k in enumerate(keys) if k and re.search(rf"(?<![a-z0-9]){re.escape(k)}(?![a-z0-9])", out)]
    found = [i for i in found if not any(j != i and keys[i] != keys[j] and keys[i] in keys[j] for j in found)]
    return found[0] if len(found) == 1 else None
