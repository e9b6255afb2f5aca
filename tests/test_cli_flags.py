"""The `c2c-hf` command line: its help and command list load no torch, and every sub-command shows its flags with
dashes and parses them with underscores too, to the same values."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import re
import subprocess
import sys

import pytest

from c2c_hf.cli_flags import dashed, underscored
from c2c_hf_cli import COMMANDS, main

HEAVY_MODULES = ("torch", "transformers", "c2c_hf", "c2c_hf.modeling_c2c")
PROBE = """
import json, sys
from c2c_hf_cli import main
{call}
print(json.dumps([name for name in {heavy!r} if name in sys.modules]))
"""


def run_entry(call: str) -> subprocess.CompletedProcess:
    code = PROBE.format(call=call, heavy=HEAVY_MODULES)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("argv", [["--help"], ["-h"], []])
def test_help_and_the_command_list_import_no_torch(argv):
    result = run_entry(f"main({argv!r})")
    assert result.returncode == 0, result.stderr
    *listing, loaded = result.stdout.strip().splitlines()
    assert json.loads(loaded) == []
    assert listing[0].startswith("usage: c2c-hf <command> [options]")
    assert [line.split()[0] for line in listing[3:]] == list(COMMANDS)


def test_an_unknown_command_exits_2_naming_it_without_importing_torch():
    result = run_entry("try:\n    main(['trian'])\nexcept SystemExit as error:\n    print('exit', error.code)")
    exit_line, loaded = result.stdout.strip().splitlines()
    assert exit_line == "exit 2"
    assert json.loads(loaded) == []
    assert result.stderr.strip().endswith(
        "c2c-hf: error: unknown command 'trian' (choose from demo, train, eval, push, lm-eval, import-rosetta, analyze)"
    )


def test_python_m_c2c_hf_cli_is_the_same_entry():
    from c2c_hf import cli

    assert cli.main is main and cli.COMMANDS is COMMANDS


# Per sub-command: its argparse parser, and an argv using its multi-word flags (written with dashes).
ARGVS = {
    "train": [
        "--receiver", "r", "--sharer", "s", "--dataset", "d.jsonl", "--output-dir", "out", "--base-dtype", "bfloat16",
        "--layer-map", "0,1", "--fuser-hidden-size", "64", "--gate-init-logit", "1.5", "--max-steps", "7",
        "--learning-rate", "0.01", "--reuse-sharer-kv", "--per-device-train-batch-size", "3", "--use-cpu",
    ],
    "eval": [
        "--model", "m", "--output", "o", "--benchmark-paths", "arc_challenge=a.jsonl", "--max-new-tokens", "9",
        "--hint-tokens", "5", "--batch-size", "2", "--routing-fit-benchmark", "openbookqa", "--routing-fit-limit", "3",
    ],
    "push": ["dir", "org/name", "--create-pr", "--commit-message", "m", "--training-steps", "5", "--allow-local-bases"],
    "import-rosetta": ["src", "dest", "--receiver-id", "r", "--sharer-id", "s"],
    "analyze": [
        "transfer", "--model", "m", "--data", "d", "--output", "o", "--chat-template", "--batch-size", "3",
        "--train-fraction", "0.5", "--prefix-fraction", "0.25", "--hidden-size", "8", "--learning-rate", "0.1",
    ],
    "lm-eval": [
        "--model", "c2c", "--model-args", "pretrained=x", "--tasks", "t", "--batch-size", "4", "--num-fewshot", "2",
        "--output-path", "o", "--log-samples", "--apply-chat-template",
    ],
}  # fmt: skip


def parser_of(command: str) -> argparse.ArgumentParser:
    """The argparse parser of `c2c-hf <command>` (for lm-eval: its `run` sub-command, the default one)."""
    built = importlib.import_module(COMMANDS[command][0]).build_parser()
    return built._subparsers.choices["run"] if command == "lm-eval" else built


def parse(command: str, argv: list[str]) -> dict:
    parser = parser_of(command)
    if command == "train":
        parsed = parser.parse_args_into_dataclasses(args=argv)
        return {f.name: getattr(d, f.name) for d in parsed for f in dataclasses.fields(d)}  # the flags' values
    return vars(parser.parse_args(argv))


def respelled(argv: list[str], spelling) -> list[str]:
    return [spelling(token) if token.startswith("--") else token for token in argv]


def test_every_command_with_multi_word_flags_is_covered():
    """Each sub-command but demo is in ARGVS; demo's flags are single words, so it has one spelling only."""
    assert set(ARGVS) == set(COMMANDS) - {"demo"}
    demo = importlib.import_module(COMMANDS["demo"][0]).build_parser()
    assert [o for a in demo._actions for o in a.option_strings if re.search(r"\w[-_]\w", o)] == []


@pytest.mark.parametrize("command", list(ARGVS))
def test_both_spellings_parse_to_the_same_arguments(command):
    argv = ARGVS[command]
    assert any("_" in token for token in respelled(argv, underscored))  # the other spelling is really used
    assert parse(command, respelled(argv, underscored)) == parse(command, respelled(argv, dashed))


@pytest.mark.parametrize("command", list(ARGVS))
def test_help_shows_flags_with_dashes_only(command):
    text = parser_of(command).format_help()
    usage, _ = text.split("\n\n", 1)
    # each option line's flags (not its description), e.g. "  -b <size>, --batch-size <size>"
    invocations = [m.group(1) for line in text.splitlines() if (m := re.match(r"\s+(-\S.*?)(\s{2,}|$)", line))]
    # lm-eval writes its usage line by hand (with its own underscores); its option list is formatted by ours
    shown = "\n".join(invocations if command == "lm-eval" else [usage, *invocations])
    flags = re.findall(r"--\w[\w-]*", shown)
    assert len(flags) > 5
    assert [flag for flag in flags if "_" in flag] == []


def test_train_values_parse_from_both_spellings():
    """The values arrive whichever spelling carried them (not only equal namespaces)."""
    values = parse("train", respelled(ARGVS["train"], underscored))
    assert (values["fuser_hidden_size"], values["gate_init_logit"], values["max_steps"]) == (64, 1.5, 7)
    assert (values["base_dtype"], values["layer_map"], values["reuse_sharer_kv"]) == ("bfloat16", "0,1", True)
