"""Training mix for the real-model general fusers: Alpaca demo + full MMLU test minus MMLU-Redux, as chat jsonl.

    python experiments/real_cpu/prepare_data.py --data ../shared/data --output data/real-cpu/train.jsonl

Every row is `{"messages": [...]}` (the `chat` format of `c2c-hf train`): instruction rows keep their response;
multiple-choice rows are asked as `c2c-hf eval` asks them, in one of two forms (`--mc-form`):
- `letter`: the lettered prompt (`c2c_hf.data.format_prompt`) answered with the letter (`--prompt choices`);
- `open`: the bare question answered with the right choice's text, what `--mode likelihood --prompt open` scores.
MMLU questions that appear in MMLU-Redux are removed (matched on normalised question text), ARC is not
used (ARC-Easy/Challenge are evaluation-only). The rows are shuffled with `--seed`; the output stays out of git
(the Alpaca demo is CC BY-NC).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from c2c_hf.data import format_prompt
from c2c_hf.evaluation.tasks import load_mmlu_jsonl, load_mmlu_redux


def instruction_rows(path: Path) -> list[dict]:
    rows = []
    for row in json.loads(path.read_text()):
        user = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
        rows.append({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]})
    return rows


def multiple_choice_rows(mmlu_path: Path, redux_path: Path, form: str) -> list[dict]:
    redux_questions = [item.question for item in load_mmlu_redux(redux_path)]
    items = load_mmlu_jsonl(mmlu_path, exclude_questions=redux_questions)
    if form == "open":
        pairs = [(item.question, item.choices[item.gold]) for item in items]
    else:
        pairs = [(format_prompt(item), item.letters[item.gold]) for item in items]
    return [
        {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}
        for question, answer in pairs
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the shared data folder (benchmarks/, instructions/)")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--mc-rows", type=int, default=None, help="keep this many multiple-choice rows (default: all)")
    parser.add_argument("--mc-form", choices=("letter", "open"), default="letter",
                        help="lettered prompt -> letter, or bare question -> the right choice's text")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    instructions = instruction_rows(args.data / "instructions" / "alpaca_en_demo.json")
    benchmarks = args.data / "benchmarks"
    choices = multiple_choice_rows(benchmarks / "mmlu_test_full.jsonl", benchmarks / "mmlu_redux", args.mc_form)
    rng.shuffle(choices)
    choices = choices[: args.mc_rows]
    rows = instructions + choices
    rng.shuffle(rows)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("w") as file:
        for row in rows:
            file.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(rows)} rows ({len(instructions)} instruction, {len(choices)} multiple-choice) -> {args.output}")


if __name__ == "__main__":
    main()
