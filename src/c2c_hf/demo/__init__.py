"""`c2c-hf demo`: watch C2C transfer knowledge between two small models trained from scratch on the CPU.

    c2c-hf demo [--output DIR] [--seed S] [--quick] [--threads N]

A knowledge world of invented people with four attributes each (`world`), and two models that know different
things, with different architectures, depths, head shapes and tokenizers (`bases`):

- the **sharer** (Llama-like, 4 layers, 8 heads x 16, byte-pair tokenizer) learns the facts of the fuser-training
  and held-out people from paraphrased statements, answers multiple-choice questions about them, and writes a hint
  on request (everything it knows about the person);
- the **receiver** (Qwen3-like, 3 layers, 4 heads x 32 with 2 KV heads, word-level tokenizer) learns the 4-way
  multiple-choice format through the chat template and to answer from facts given in its prompt ("Hint: ..." then
  the question, about context-only names whose facts are drawn afresh for every example). It never sees a fact of
  a fuser-training or held-out person.

Both models answer with the text of the correct choice; the harness's answer extraction maps it to its letter
(binding a value to its letter is a circuit these tiny models do not form within a CPU budget of minutes). Both are
pretrained with the stock `transformers.Trainer`.

A fuser is trained with the project's training path (`build_features` + `C2CDataCollator` + `make_trainer`) on
questions about the fuser-training people, then the project's evaluation harness compares, on questions about
**held-out people** (known to the sharer only): receiver alone, sharer alone, text-to-text (the sharer's hint in the
receiver's prompt), routing, C2C, and an oracle (the receiver given the one relevant fact in its prompt) (`run`).
The token map between the two tokenizers is built by `from_base_models(..., receiver_tokenizer, sharer_tokenizer)`.
Every receiver layer is fused with sharer layer 0: this sharer keeps its facts in the name tokens' layer-0 keys and
values (a linear probe reads a person's city from them for ~96% of held-out people, ~40-50% from layers 1-3); in our
tuning runs the default "terminal" map ([1, 2, 3]) left C2C near chance on held-out people (25%) where [0, 0, 0]
reached 40% with the same budget, and [0, 1, 2] 51% where [0, 0, 0] reached 65%. The C2C model is saved with `save_pretrained` (with the receiver tokenizer), reloaded with
`AutoModelForCausalLM.from_pretrained` and asked questions with `generate`.

Outputs in `--output` (default `./c2c-demo`, written by `report`): `results.md` / `results.json` /
`accuracy_latency.png` (the harness report), `gates.png` (the analysis gate map: which gates are open per receiver
layer, K and V, and their dynamic weights per KV head), `demo.md` (table, targets, timings, examples), and the
models: `receiver/`, `sharer/` (bases with their tokenizers) and `c2c/` (fuser, config, receiver tokenizer).
Deterministic for a given seed and thread count (latencies aside).
"""

from .bases import (
    Example,
    WeightedLMCollator,
    WeightedLMLoss,
    answer_text,
    build_receiver,
    build_sharer,
    encode_chat,
    encode_text,
    pretrain,
    receiver_examples,
    sharer_examples,
    train_tokenizers,
)
from .command import build_parser, main
from .report import demo_markdown, demo_targets, write_demo_report
from .run import (
    DemoConfig,
    Oracle,
    answer_example,
    fuser_dataset,
    heldout_questions,
    run_demo,
    train_fuser,
)
from .world import ATTRIBUTES, QUESTIONS, ROLES, STATEMENTS, Entity, World, invent_names

__all__ = [
    "ATTRIBUTES",
    "QUESTIONS",
    "ROLES",
    "STATEMENTS",
    "DemoConfig",
    "Entity",
    "Example",
    "Oracle",
    "WeightedLMCollator",
    "WeightedLMLoss",
    "World",
    "answer_example",
    "answer_text",
    "build_parser",
    "build_receiver",
    "build_sharer",
    "demo_markdown",
    "demo_targets",
    "encode_chat",
    "encode_text",
    "fuser_dataset",
    "heldout_questions",
    "invent_names",
    "main",
    "pretrain",
    "receiver_examples",
    "run_demo",
    "sharer_examples",
    "train_fuser",
    "train_tokenizers",
    "write_demo_report",
]
