"""Benchmark loaders (on small real-format fixtures), the shared prompt, and answer extraction."""

from __future__ import annotations

from pathlib import Path

import pytest

from c2c_hf.data import MCItem, format_prompt
from c2c_hf.evaluation.tasks import (
    extract_choice,
    load_benchmark,
    load_ceval,
    load_mmlu_jsonl,
    load_mmlu_redux,
    load_query_jsonl,
    match_choice_text,
    normalize_question,
)

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"
REDUX = FIXTURES / "mmlu_redux"
STATEMENTS = ("True, True", "False, False", "True, False", "False, True")
MORAL = ("Wrong, Wrong", "Wrong, Not wrong", "Not wrong, Wrong", "Not wrong, Not wrong")


@pytest.fixture(scope="module")
def redux() -> dict[str, MCItem]:
    return {item.id.removeprefix("mmlu_redux/"): item for item in load_mmlu_redux(REDUX)}


# --------------------------------------------------------------------------- ARC / OpenBookQA


def test_arc_challenge_rows_with_3_4_and_5_choices():
    items = load_benchmark("arc_challenge", FIXTURES / "arc_challenge.jsonl")
    assert [len(i.choices) for i in items] == [4, 4, 3, 5]
    assert items[0] == MCItem(
        "arc_challenge",
        "arc_challenge/0",
        "An astronomer observes that a planet rotates faster after a meteorite impact. "
        "Which is the most likely effect of this increase in rotation?",
        (
            "Planetary density will decrease.",
            "Planetary years will become longer.",
            "Planetary days will become shorter.",
            "Planetary gravity will become stronger.",
        ),
        2,
    )
    assert items[2].question == "Which state of matter has a definite shape?"
    assert items[2].choices == ("solid", "liquid", "gas") and items[2].gold == 0
    assert items[2].letters == ("A", "B", "C")
    assert items[3].question == "Which planet is the largest in our solar system?"  # "Question:" and "Answer:" gone
    assert items[3].gold == 4 and items[3].choices[4] == "Jupiter"
    assert items[3].letters == ("A", "B", "C", "D", "E")


def test_arc_easy_and_openbookqa():
    easy = load_benchmark("arc_easy", FIXTURES / "arc_easy.jsonl")
    assert [(i.id, i.gold) for i in easy] == [("arc_easy/0", 0), ("arc_easy/1", 1)]
    assert easy[1].question == (
        "Which piece of safety equipment is used to keep mold spores from entering the respiratory system?"
    )
    assert easy[1].choices == ("safety goggles", "breathing mask", "rubber gloves", "lead apron")

    obqa = load_query_jsonl(FIXTURES / "openbookqa.jsonl", "openbookqa")  # no "Question:" prefix in this file
    assert [i.question for i in obqa] == [
        "A person wants to start saving money so that they can afford a nice vacation at the end of the year. "
        "After looking over their budget and expenses, they decide the best way to save money is to",
        "There is most likely going to be fog around:",
        "Predators eat",
    ]
    assert obqa[2].choices == ("lions", "humans", "bunnies", "grass") and obqa[2].gold == 2
    assert all(i.benchmark == "openbookqa" and i.subject is None for i in obqa)


# --------------------------------------------------------------------------- MMLU-Redux


def test_redux_keeps_and_drops_by_error_type(redux):
    assert sorted(redux) == [
        "abstract_algebra/0",  # Bad Question Clarity: labelled answer kept
        "abstract_algebra/1",  # Wrong Groundtruth, correct_answer "2"
        "abstract_algebra/2",  # Ok
        # abstract_algebra/3 No Correct Answer, /4 Wrong Groundtruth without correct_answer, /5 Expert
        "econometrics/0",
        "econometrics/1",
        "global_facts/0",  # ok (a stray correct_answer note is ignored)
        "global_facts/1",  # OK, correct_answer "Pneumonia" ignored
        "global_facts/2",  # OK
        # global_facts/3 No Correct Answer
        "global_facts/4",  # Wrong Groundtruth, correct_answer "C"
        "global_facts/5",  # "OK " with a trailing space
        "high_school_microeconomics/0",
        "high_school_microeconomics/1",
        # high_school_microeconomics/2: the question is a URL
        "machine_learning/0",
        "machine_learning/1",
        "management/0",
        "management/1",
        # management/2 Expert
        "moral_scenarios/0",
        "moral_scenarios/1",
        # professional_psychology/0 no_correct_answer
        "professional_psychology/1",
        "professional_psychology/2",  # wrong_groundtruth
        "professional_psychology/3",  # bad_question_clarity
        "virology/0",
        "virology/1",
        "virology/2",
    ]


def test_redux_wrong_groundtruth_uses_correct_answer(redux):
    # (labelled answer in the file, correct_answer) -> gold
    assert redux["abstract_algebra/1"].gold == 2  # answer 3, correct_answer "2" (0-based index)
    assert redux["high_school_microeconomics/1"].gold == 1  # answer 0, "1"
    assert redux["machine_learning/0"].gold == 1  # answer 3, "1"
    assert redux["professional_psychology/2"].gold == 2  # answer 0, "2"
    assert redux["virology/1"].gold == 0  # answer 1, "A"
    assert redux["virology/2"].gold == 2  # answer 1, "C"
    assert redux["global_facts/4"].gold == 2  # answer 2, "C"
    # ok rows keep the labelled answer whatever correct_answer says
    assert redux["global_facts/0"].gold == 2  # answer 2, correct_answer "3"
    assert redux["global_facts/1"].gold == 0  # answer 0, "Pneumonia"
    assert redux["abstract_algebra/0"].gold == 0 and redux["abstract_algebra/2"].gold == 1


def test_redux_comma_file_with_trailing_header_columns_and_multiline_question(redux):
    assert (REDUX / "mmlu_econometrics.csv").read_bytes().startswith(b"question,choices,answer,error_type,")
    item = redux["econometrics/0"]
    assert item.question == "Consider the following AR(2) process:\n\nyt = 1.5 yt-1 - 0.5 yt-2 + ut\n\nThis is a"
    assert item.choices == (
        "Stationary process",
        "Unit root process",
        "Explosive process",
        "Stationary and unit root process",
    )
    assert item.gold == 1 and item.subject == "econometrics" and item.benchmark == "mmlu_redux"
    abstract = redux["abstract_algebra/1"]
    assert abstract.question == (
        "Statement 1 | A ring homomorphism is one to one if and only if the kernel is {0}. "
        "Statement 2 | Q is an ideal in R."
    )
    assert abstract.choices == STATEMENTS


def test_redux_semicolon_files(redux):
    assert (REDUX / "mmlu_management.csv").read_bytes().startswith(b"question;choices;answer;")
    item = redux["management/0"]
    assert item.question == "Which one of the following is not one of Drucker's five guiding principles of management?"
    assert item.choices == (
        "Making people's strengths effective and their weaknesses irrelevant.",
        "Enhancing the ability of people to contribute.",
        "To operate the organisation's status system.",
        "Integrating people in a common venture by thinking through, setting and exemplifying the organisational "
        "objectives, values and goals.",
    )
    assert item.gold == 2
    assert redux["management/1"].choices == ("Business", "Succession", "Ad hoc", "Financial")
    econ = redux["high_school_microeconomics/0"]
    assert econ.question == "Economics is a social science that" and econ.gold == 1
    assert econ.choices[1] == "is primarily concerned with how resources are used."


def test_redux_reordered_columns(redux):
    header = (REDUX / "mmlu_machine_learning.csv").read_text().splitlines()[0]
    assert header == "question,choices,answer,error_type,correct_answer,potential_reason,source"
    item = redux["machine_learning/1"]
    assert item.question == (
        "Statement 1| The Stanford Sentiment Treebank contained movie reviews, not book reviews. "
        "Statement 2| The Penn Treebank has been used for language modeling."
    )
    assert item.choices == STATEMENTS and item.gold == 0


def test_redux_latin1_file(redux):
    raw = (REDUX / "mmlu_moral_scenarios.csv").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    assert raw.splitlines()[0] == b"question,choices,answer,correct_answer,error_type,source,potential_reason"
    item = redux["moral_scenarios/1"]
    assert "Scenario 1 | I slapped my sister\u00d5s head." in item.question  # byte 0xD5 read as latin-1
    assert item.question.startswith("For which of these two scenarios does the main character (who uses I/me/my)")
    assert item.choices == MORAL and item.gold == 0
    assert redux["moral_scenarios/0"].gold == 3


def test_redux_json_style_choices_and_utf8_punctuation(redux):
    assert redux["virology/2"].choices == ("Humans", "Primates", "Fruit bats", "Pigs")
    assert redux["professional_psychology/1"].question == (
        "A small bit of meat powder in the dog\u2019s mouth was Pavlov\u2019s ___________."
    )


def test_redux_single_file_and_dispatcher():
    items = load_mmlu_redux(REDUX / "mmlu_management.csv")
    assert [i.id for i in items] == ["mmlu_redux/management/0", "mmlu_redux/management/1"]
    assert load_benchmark("mmlu_redux", REDUX) == load_mmlu_redux(REDUX)


# --------------------------------------------------------------------------- C-Eval (synthetic rows)


def test_ceval():
    items = load_benchmark("ceval", FIXTURES / "ceval_val")
    assert [i.id for i in items] == [
        "ceval/synthetic_arithmetic/0",
        "ceval/synthetic_arithmetic/1",
        "ceval/synthetic_arithmetic/2",
        "ceval/synthetic_science/0",
        "ceval/synthetic_science/1",
    ]
    question = "计算：3 × 4 = ____。\n（请选出正确结果）"  # multi-line quoted field
    assert items[1] == MCItem("ceval", items[1].id, question, ("7", "12", "34", "43"), 1, "synthetic_arithmetic")
    assert items[3].choices == ("0℃", "50℃", "100℃", "150℃") and items[3].gold == 2  # has an explanation column
    assert load_ceval(FIXTURES / "ceval_val" / "synthetic_science_val.csv") == items[3:]


# --------------------------------------------------------------------------- full MMLU pool


def test_mmlu_jsonl_skips_header_rows():
    items = load_mmlu_jsonl(FIXTURES / "mmlu_test_full.jsonl")
    assert len(items) == 6  # 7 lines, one of them {"question": "question", ..., "correct_answer": "answer"}
    assert all(i.question != "question" for i in items)
    assert items[1] == MCItem(
        "mmlu",
        "mmlu/1",
        'What is true for a type-Ia ("type one-a") supernova?',
        (
            "This type occurs in binary systems.",
            "This type occurs in young galaxies.",
            "This type produces gamma-ray bursts.",
            "This type produces high amounts of X-rays.",
        ),
        0,
        "astronomy",
    )


def test_mmlu_pool_excludes_redux_questions():
    redux_questions = {i.question for i in load_mmlu_redux(REDUX)}
    pool = load_mmlu_jsonl(FIXTURES / "mmlu_test_full.jsonl", exclude_questions=redux_questions)
    # The 4 shared questions go, including the one Redux spells "sisterÕs" and MMLU "sister’s".
    assert [i.subject for i in pool] == ["astronomy", "astronomy"]
    key = "my sister s head"
    assert normalize_question("my sister\u00d5s head.") == normalize_question("My sister\u2019s head") == key


# --------------------------------------------------------------------------- limit / dispatcher


def test_limit_is_deterministic_nested_and_in_file_order():
    full = load_benchmark("mmlu_redux", REDUX)
    five = load_benchmark("mmlu_redux", REDUX, limit=5, seed=0)
    assert len(five) == 5 and five == load_benchmark("mmlu_redux", REDUX, limit=5, seed=0)
    assert [i.id for i in five] == [i.id for i in full if i in five]  # original order
    assert set(five) <= set(load_benchmark("mmlu_redux", REDUX, limit=10, seed=0))
    assert five != load_benchmark("mmlu_redux", REDUX, limit=5, seed=1)
    assert load_benchmark("mmlu_redux", REDUX, limit=1000) == full


def test_unknown_benchmark_and_bad_item():
    with pytest.raises(ValueError, match="unknown benchmark"):
        load_benchmark("mmlu_pro", FIXTURES)
    with pytest.raises(ValueError, match="out of range"):
        MCItem("x", "x/0", "q", ("a", "b"), 2)


# --------------------------------------------------------------------------- prompt


def test_format_prompt_lists_every_choice_with_its_letter():
    item = load_benchmark("arc_challenge", FIXTURES / "arc_challenge.jsonl")[3]
    prompt = format_prompt(item)
    assert prompt.startswith("Which planet is the largest in our solar system?\n")
    for letter, choice in zip("ABCDE", ("Mercury", "Venus", "Earth", "Mars", "Jupiter")):
        assert f"\n{letter}. {choice}\n" in prompt + "\n"
    assert "(A, B, C, D or E)" in prompt
    three = format_prompt(load_benchmark("arc_challenge", FIXTURES / "arc_challenge.jsonl")[2])
    assert "C. gas" in three and "D." not in three and "(A, B or C)" in three


# --------------------------------------------------------------------------- answer extraction

EXTRACTION_CASES = [
    # (generated text, num_choices, expected index)
    ("B", 4, 1),
    ("b", 4, 1),
    ("(C)", 4, 2),
    ("D.", 4, 3),
    ("A) Paris", 4, 0),
    ("B) Paris", 4, 1),
    ("**B**", 4, 1),
    ("**C. Mitochondria**", 4, 2),
    ("The answer is B.", 4, 1),
    ("The answer is: (C).", 4, 2),
    ("Answer: D", 4, 3),
    ("ANSWER: a", 4, 0),
    ("Answer:\nB", 4, 1),
    ("The correct answer is **A**.", 4, 0),
    ("The correct option is C because the other options are incorrect.", 4, 2),
    ("The correct answer is option D", 4, 3),
    ("the answer is b", 4, 1),
    ("Answer: (b) the liver", 4, 1),
    ("The final answer is $\\boxed{C}$", 4, 2),
    ("I would choose B, since it is the only one that mentions energy.", 4, 1),
    (
        "Let's analyze each option.\nA) Incorrect, mass is conserved.\nB) Correct, energy is released.\n"
        "C) Incorrect.\nD) Incorrect.\nTherefore, the answer is B.",
        4,
        1,
    ),
    ("Option A is wrong because it ignores friction. Option C confuses speed and velocity. The answer is D.", 4, 3),
    ("A is too small and C is too large, so the best fit is B. Answer: B", 4, 1),
    ("First, A and B describe physical changes. C describes a chemical change.\nTherefore, C.", 4, 2),
    ("The answer is A. Actually, on reflection, the answer is D.", 4, 3),
    ("The answer is not A; it is C.", 4, 2),
    ("Step 1: compute 2 + 2 = 4.\nStep 2: compare with the options.\n\nC", 4, 2),
    ("B\n\nExplanation: Paris is the capital of France; option C is a different city.", 4, 1),
    ("I think it is option B.", 4, 1),
    ("I'd say B.", 4, 1),
    ("A plant needs sunlight, which makes C the right one.", 4, 2),
    ("答案是C。", 4, 2),
    ("答案：B", 4, 1),
    ("c) 12", 3, 2),
    ("The correct choice is: A", 3, 0),
    ("E", 5, 4),
    ("The answer is (E) Jupiter", 5, 4),
    # no valid answer
    ("The answer is E.", 4, None),
    ("E", 4, None),
    ("", 4, None),
    ("I don't know.", 4, None),
    ("Water boils at 100 degrees at sea level.", 4, None),
    ("The answer is a bit unclear without more context.", 4, None),
    ("B-cells produce antibodies.", 4, None),
    # several different letters, none preferred
    ("It could be B or C.", 4, None),
    ("Option A and option D both seem plausible.", 4, None),
]


@pytest.mark.parametrize(("text", "num_choices", "expected"), EXTRACTION_CASES)
def test_extract_choice(text, num_choices, expected):
    assert extract_choice(text, num_choices) == expected


def test_extract_choice_falls_back_to_choice_text():
    planets = ("Mercury", "Venus", "Earth", "Mars", "Jupiter")
    assert extract_choice("Jupiter", 5, planets) == 4
    assert extract_choice("It has to be jupiter, the gas giant.", 5, planets) == 4
    assert extract_choice("B) Jupiter", 5, planets) == 1  # an explicit letter wins over the text
    assert extract_choice("Pluto", 5, planets) is None
    assert extract_choice("Venus or Mars", 5, planets) is None
    assert match_choice_text("Not wrong, Not wrong", MORAL) == 3
    assert match_choice_text("I'd say: wrong, not wrong.", MORAL) == 1  # "Wrong" alone is inside the others
    assert match_choice_text("Wrong", MORAL) is None
