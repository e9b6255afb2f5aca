"""Paired differences between evaluation reports of different models on the same items.

`c2c-hf eval --merge` puts methods of one model side by side; this compares rows across models, e.g. two fusers:

    python experiments/real_cpu/paired.py \
        docs/results/real-cpu/general-open-zero-gemma-3-270m/likelihood-open:c2c \
        docs/results/real-cpu/general-open-zero-smollm2-135m-instruct/likelihood-open:c2c
    python experiments/real_cpu/paired.py --compare NAME FIRST SECOND --compare NAME2 FIRST2 SECOND2 ... \
        --output docs/results/real-cpu/general-paired.json      # several comparisons in one file

Each side is REPORT_DIR:METHOD, where REPORT_DIR holds a `results.json` (a merged report, or one method's report);
the per-method reports below a merged one (`<benchmark>/<METHOD>/`) are read first, as they hold every answer.
Prints, per comparison and benchmark both sides have, each side's accuracy, the first minus the second, paired on
the same items (95% interval; items only the first / only the second gets right), and how often both pick the same
choice; with --output, writes every comparison as JSON (`{"comparisons": [{"name", "first", "second", "rows"}]}`)
and their tables, one section each, in a markdown file beside it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from c2c_hf.evaluation import (
    BENCHMARKS,
    UNSEALED_PROTOCOL,
    format_paired,
    load_report,
    paired_difference,
    result_metadata,
)


def method_results(side: str) -> dict[str, dict]:
    """Per benchmark, the summary of METHOD in REPORT_DIR (any <benchmark>/<METHOD>/ below, then its results.json)."""
    folder, _, method = side.rpartition(":")
    if not folder:
        raise SystemExit(f"{side!r}: give REPORT_DIR:METHOD, e.g. docs/results/.../likelihood-open:c2c")
    results = {}
    for path in [*sorted(Path(folder).glob(f"*/{method}")), Path(folder)]:
        if (path / "results.json").exists():
            for benchmark, summary in load_report(path)["results"].get(method, {}).items():
                results.setdefault(benchmark, summary)
    if not results:
        raise SystemExit(f"No {method} results under {folder}.")
    return results


def compare(first: str, second: str) -> list[dict]:
    """One row per benchmark both sides have, in the canonical benchmark order."""
    a, b = method_results(first), method_results(second)
    rows = []
    for benchmark in [name for name in BENCHMARKS if name in a and name in b]:
        first_predictions, second_predictions = a[benchmark]["predictions"], b[benchmark]["predictions"]
        paired = paired_difference(first_predictions, second_predictions)
        picks = {p["id"]: p.get("predicted") for p in second_predictions}
        same = sum(p.get("predicted") is not None and p.get("predicted") == picks[p["id"]] for p in first_predictions)
        rows.append({"benchmark": benchmark, "first": a[benchmark]["accuracy"], "second": b[benchmark]["accuracy"],
                     **paired, "same_choice": same})  # fmt: skip
    return rows


def markdown(comparison: dict) -> str:
    """One comparison's table, under its name as a heading when it has one."""
    lines = [f"## {comparison['name']}", ""] if comparison.get("name") else []
    lines += [
        f"First: `{comparison['first']}`; second: `{comparison['second']}`. Accuracy %; first minus second, points "
        "[paired 95% interval] (items only the first / only the second gets right).",
        "",
        "| benchmark | first | second | first - second | same choice |",
        "|---|---|---|---|---|",
    ]
    for row in comparison["rows"]:
        lines.append(
            f"| {row['benchmark']} | {100 * row['first']:.1f} | {100 * row['second']:.1f} | {format_paired(row)} | "
            f"{row['same_choice']} of {row['n']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sides", nargs="*", metavar="REPORT_DIR:METHOD", help="FIRST SECOND: one comparison")
    parser.add_argument(
        "--compare", nargs=3, action="append", default=[], metavar=("NAME", "FIRST", "SECOND"),
        help="a named comparison; repeat it for several",
    )  # fmt: skip
    parser.add_argument("--output", type=Path, help="write the comparisons here (.json), their tables beside it (.md)")
    args = parser.parse_args()
    if len(args.sides) not in (0, 2) or not (args.sides or args.compare):
        parser.error("give FIRST SECOND, or one or more --compare NAME FIRST SECOND")
    named = [(None, *args.sides)] if args.sides else []
    comparisons = [
        {"name": name, "first": first, "second": second, "rows": compare(first, second)}
        for name, first, second in named + [tuple(c) for c in args.compare]
    ]
    tables = "\n".join(markdown(comparison) for comparison in comparisons)
    print(tables)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({**result_metadata(UNSEALED_PROTOCOL), "comparisons": comparisons}, indent=2) + "\n")
        args.output.with_suffix(".md").write_text(tables)


if __name__ == "__main__":
    main()
