"""The performance runner (`python -m perf.run`) end to end on the tiny shape set, every section, in seconds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, which holds `perf/`

from perf import run

TINY_RUN = [
    "--shapes", "tiny", "--fuser", "tiny", "--prompt-tokens", "16", "--new-tokens", "3", "--decode-steps", "3", "--hint-tokens", "4", "8",
    "--answer-tokens", "2", "--response-tokens", "4", "--repeats", "1", "--warmup", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[dict, str]:
    """`perf.json` (parsed) and `perf.md` of one run of every section."""
    output = tmp_path_factory.mktemp("perf")
    run.main([*TINY_RUN, "--output", str(output)])
    return json.loads((output / "perf.json").read_text()), (output / "perf.md").read_text()


def test_report_has_every_section_target_and_positive_figures(written):
    report, markdown = written
    sections = report["results"]["tiny"]["sections"]
    assert list(sections) == list(run.SECTIONS)
    assert report["machine"]["cpu"] and report["machine"]["torch"] and report["machine"]["transformers"]
    assert report["environment"]["torch"] == torch.__version__ and report["protocol"]["selected_on"] is None

    # Every target that applies to this shape set is checked and printed with its bound and verdict.
    expected = {(t.section, t.metric) for t in run.performance_targets([4, 8]) if t.shapes is None}
    assert {(row["section"], row["metric"]) for row in report["targets"]} == expected
    for row in report["targets"]:
        assert row["met"] == run.Target(row["section"], row["metric"], row["op"], row["bound"]).met(row["value"])
        verdict = "met" if row["met"] else "MISSED"
        assert any(f"| {row['metric']} |" in line and line.endswith(f"| {verdict} |") for line in markdown.splitlines())

    figures = {
        f"{section}.{metric}": value
        for section, by_fuser in sections.items()
        for metric, value in by_fuser["tiny"].items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    assert figures and all(value > 0 for value in figures.values()), figures
    # Text-to-text hints and every answer have exactly the forced lengths.
    assert (
        figures["e2e.t2t_hint4_hint_tokens"],
        figures["e2e.t2t_hint8_hint_tokens"],
        figures["e2e.answer_tokens"],
    ) == (4, 8, 2)


def test_left_padded_rows_equal_their_batch_one_output(written):
    batch = written[0]["results"]["tiny"]["sections"]["batch"]["tiny"]
    assert batch["rows_equal"] is True and batch["mismatched_rows"] == []
    assert batch["receiver_rows_equal"] is True
    # The receiver alone is timed beside C2C: the bound of C2C's batch scaling on the same machine.
    assert batch["receiver_decode_8_over_1"] > 0 and batch["receiver_decode_8_tokens_per_second"] > 0
