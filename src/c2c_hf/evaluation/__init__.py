"""The paper's comparison on multiple-choice benchmarks: receiver, sharer, text-to-text, routing and C2C.

One module per concern: `tasks` (benchmark loaders and answer extraction), `lm` (the answering model: prompt
rendering, generation, choice scores), `scoring` (prompts, scoring modes, predictions), `methods` (the five methods,
the router, the timing harness), `statistics` (intervals), `reports` (JSON, markdown table, plot, merging) and
`command` (`c2c-hf eval`). Multiple-choice items and the shared prompt (`MCItem`, `format_prompt`) live in
`c2c_hf.data`, which training uses too.
"""

from .command import build_parser, load_models, main
from .environment import MEASUREMENT_PROTOCOL, UNSEALED_PROTOCOL, environment, result_metadata
from .lm import LM
from .methods import (
    METHODS,
    Direct,
    Method,
    Router,
    Routing,
    TextToText,
    build_methods,
    confidence_features,
    evaluate,
    timed_predictions,
)
from .reports import (
    build_report,
    format_paired,
    load_report,
    markdown_table,
    merge_report_dirs,
    merge_reports,
    plot_accuracy_latency,
    question_outcomes,
    save_report,
    summarize,
    write_report,
)
from .scoring import MODES, PROMPTS, Prediction, Scoring, hint_request, hinted_prompt, question_prompt, respond
from .statistics import Z_95, normal_mean_interval, paired_difference, t_interval, wilson_interval
from .tasks import BENCHMARKS, extract_choice, load_benchmark, match_choice_text

__all__ = [
    "BENCHMARKS",
    "LM",
    "MEASUREMENT_PROTOCOL",
    "METHODS",
    "MODES",
    "PROMPTS",
    "UNSEALED_PROTOCOL",
    "Z_95",
    "Direct",
    "Method",
    "Prediction",
    "Router",
    "Routing",
    "Scoring",
    "TextToText",
    "build_methods",
    "build_parser",
    "build_report",
    "confidence_features",
    "environment",
    "evaluate",
    "extract_choice",
    "format_paired",
    "hint_request",
    "hinted_prompt",
    "load_benchmark",
    "load_models",
    "load_report",
    "main",
    "markdown_table",
    "match_choice_text",
    "merge_report_dirs",
    "merge_reports",
    "normal_mean_interval",
    "paired_difference",
    "plot_accuracy_latency",
    "question_outcomes",
    "question_prompt",
    "respond",
    "result_metadata",
    "save_report",
    "summarize",
    "t_interval",
    "timed_predictions",
    "wilson_interval",
    "write_report",
]
