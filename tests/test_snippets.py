"""The printed-output task of the real-model capability study (`experiments/real_cpu/snippets.py`): the generator's
interpreter agrees with CPython, splits are disjoint and deterministic, and each item's choices are distinct."""

from __future__ import annotations

import contextlib
import io
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments" / "real_cpu"))

import snippets  # the experiment's task generator


def cpython_output(code: str) -> str:
    """What CPython prints for `code`: our own generated program, run here only to check the interpreter."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        exec(compile(code, "<snippet>", "exec"), {})
    return buffer.getvalue().removesuffix("\n")


@pytest.mark.parametrize("difficulty", sorted(snippets.DIFFICULTIES))
def test_interpreter_matches_cpython(difficulty):
    for seed in range(150):
        program = snippets.Generator(random.Random(seed), snippets.DIFFICULTIES[difficulty]).program()
        code = snippets.render_program(program)
        assert snippets.run_program(program) == cpython_output(code), code


def test_rendering_respects_precedence():
    a, b, c = snippets.Name("a"), snippets.Name("b"), snippets.Name("c")
    nested = snippets.BinOp("-", a, snippets.BinOp("-", b, c))
    assert snippets.render_expr(nested) == "a - (b - c)"
    assert snippets.render_expr(snippets.BinOp("*", snippets.BinOp("+", a, b), c)) == "(a + b) * c"
    assert snippets.render_expr(snippets.BinOp("+", snippets.BinOp("*", a, b), c)) == "a * b + c"
    assert snippets.render_expr(snippets.Index(snippets.BinOp("+", a, b), -1)) == "(a + b)[-1]"
    env = {"a": 7, "b": 5, "c": 2}
    assert snippets.evaluate(nested, env) == 7 - (5 - 2)


def test_splits_are_disjoint_and_deterministic():
    programs = {}
    for split in snippets.SPLITS:
        items = snippets.snippet_items(3, split, 40, "medium")
        assert items == snippets.snippet_items(3, split, 40, "medium")  # same seed, same items
        assert [item.id for item in items] == [f"medium/{split}/{i}" for i in range(40)]
        codes = [snippets.item_program(item) for item in items]
        assert len(set(codes)) == len(codes)
        assert all(snippets.split_of(code) == split for code in codes)
        programs[split] = set(codes)
    assert not programs["train"] & programs["validation"]
    assert not programs["train"] & programs["test"]
    assert not programs["validation"] & programs["test"]
    assert (
        snippets.snippet_items(3, "validation", 10, "medium")
        == snippets.snippet_items(3, "validation", 40, "medium")[:10]
    )
    assert snippets.snippet_items(4, "validation", 10, "medium") != snippets.snippet_items(
        3, "validation", 10, "medium"
    )


@pytest.mark.parametrize("difficulty", sorted(snippets.DIFFICULTIES))
def test_items_have_the_printed_output_and_three_distinct_near_misses(difficulty):
    items = snippets.snippet_items(0, "validation", 60, difficulty)
    golds = set()
    for item in items:
        assert len(item.choices) == 4 and len(set(item.choices)) == 4
        assert all(choice and choice.strip() == choice for choice in item.choices)
        assert item.choices[item.gold] == cpython_output(snippets.item_program(item))
        assert item.subject == difficulty
        golds.add(item.gold)
    assert golds == {0, 1, 2, 3}  # the right answer's position is drawn, not fixed


def test_near_misses_are_of_the_answers_kind():
    assert snippets.near_misses(12, [3, "cat"])[:3] == ["13", "11", "3"]
    assert snippets.near_misses("dog", [])[:2] == ["god", "DOG"]
    assert snippets.near_misses((1, 2, 3), [])[:2] == ["[3, 2, 1]", "[1, 2]"]  # sorted is the answer itself
    with pytest.raises(ValueError, match="split"):
        snippets.snippet_items(0, "heldout", 1)


def test_fuser_rows_are_training_programs_answered_with_their_output(tmp_path):
    """The fuser's rows: training-split programs only, each answered with the interpreter's printed output."""
    import json

    import snippet_rows

    output = tmp_path / "rows.jsonl"
    snippet_rows.main(["--difficulty", "basic", "--size", "12", "--output", str(output)])
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    items = snippets.snippet_items(0, "train", 12, "basic")
    assert len(rows) == 12
    for row, item in zip(rows, items):
        user, reply = row["messages"]
        code = snippets.item_program(item)
        assert user == {"role": "user", "content": item.question} and snippets.split_of(code) == "train"
        assert reply == {"role": "assistant", "content": cpython_output(code).strip()}
