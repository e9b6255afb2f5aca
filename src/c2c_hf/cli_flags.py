"""One spelling of `c2c-hf` flags in help, both accepted: every long option is shown with dashes
(`--max-new-tokens`) and also parses when written with underscores (`--max_new_tokens`), and the reverse.

`c2c-hf train` reads `TrainingArguments` through `HfArgumentParser`, whose flags are dataclass field names
(underscores) with a dashed alias; the other sub-commands use argparse with dashes. Users copy flags between
them, so each parser accepts both spellings, and its help and usage show the dashed one only.
"""

from __future__ import annotations

import argparse
import copy


def dashed(option: str) -> str:
    """`--max_new_tokens` -> `--max-new-tokens` (the spelling help shows); short options are left as they are."""
    return "--" + option[2:].replace("_", "-") if option.startswith("--") else option


def underscored(option: str) -> str:
    """`--max-new-tokens` -> `--max_new_tokens` (the accepted alias); short options are left as they are."""
    return "--" + option[2:].replace("-", "_") if option.startswith("--") else option


class DashedHelpFormatter(argparse.HelpFormatter):
    """A help formatter that lists an option under its dashed spelling only, when it has one (the underscore
    aliases still parse)."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings:
            return super()._format_action_invocation(action)
        shown = copy.copy(action)
        options = action.option_strings
        shown.option_strings = [o for o in options if dashed(o) == o or dashed(o) not in options]
        return super()._format_action_invocation(shown)


def accept_both_spellings(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make every long option of `parser` parse under both spellings (dashes and underscores) and show it with
    dashes in the help and usage; returns `parser`. Call it once the parser's arguments are all added.

    argparse has no public way to give an existing option another name, so the alias is registered the way
    `add_argument` registers one (`parser._option_string_actions`), and each option's dashed spelling takes its
    place (the usage line shows the first), the other spellings following.
    """
    for action in parser._actions:
        options = action.option_strings
        spellings = dict.fromkeys([*map(dashed, options), *options, *map(underscored, options)])  # dashed first
        # a spelling another option already has stays that option's
        action.option_strings = [o for o in spellings if parser._option_string_actions.setdefault(o, action) is action]
    if not issubclass(parser.formatter_class, DashedHelpFormatter):
        parser.formatter_class = type(
            f"Dashed{parser.formatter_class.__name__}", (DashedHelpFormatter, parser.formatter_class), {}
        )
    return parser


__all__ = ["DashedHelpFormatter", "accept_both_spellings", "dashed", "underscored"]
