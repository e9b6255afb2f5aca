"""`c2c-hf demo`: watch C2C transfer and combine knowledge between two small models trained from scratch on the CPU.

    c2c-hf demo [--output DIR] [--seed S | --seeds S ...] [--quick] [--splits test|validation] [--workers 1|2]

A knowledge world of invented people with four attributes each, and cities that lie in invented countries
(`world`), and two models that know different things, with different architectures, depths, head shapes and
tokenizers (`bases`):

- the **sharer** (Llama-like, 4 layers, 8 heads x 16, byte-pair tokenizer) learns the facts of the fuser-training,
  validation and test people from paraphrased statements, answers multiple-choice questions about them, and writes a
  hint on request (everything it knows about the person); it never reads a country;
- the **receiver** (Qwen3-like, 3 layers, 4 heads x 32 with 2 KV heads, word-level tokenizer) learns the 4-way
  multiple-choice format through the chat template, the country of every city, and to answer from facts given in its
  prompt ("Hint: ..." then the question, about context-only names whose facts are drawn afresh for every example),
  including the two-hop country question (the hint gives the city, the answer is its country). It never sees a fact
  of a fuser-training, validation or test person.

Both models answer with the text of the correct choice; the harness's answer extraction maps it to its letter. Both
are pretrained with the stock `transformers.Trainer` (the receiver in a second process beside the sharer).

Small models learn a skill abruptly, after a loss plateau whose length depends on the world. The quick preset
therefore trains the receiver and the fuser "until learnt" (`schedule.DecayWhenLearnt`): a constant learning rate
until a probe of training questions (context-only names for the receiver, fuser-training people for the fuser; never
a validation or test person) is answered at a threshold, then a short decay; a receiver still stuck near chance at
its give-up step starts again from another initialisation.

A fuser is trained with the project's training path (`build_features` + `C2CDataCollator` with a `SharerCacheMemo`
+ `make_trainer`) on questions about the fuser-training people; beside it, the trained text-to-text baseline (a
receiver LoRA reading the sharer's written hints, same questions and steps: `hint_reader`). The harness then scores,
on people none of them was trained on: receiver alone, sharer alone, text-to-text (the sharer's hint in the receiver's
prompt), trained text-to-text, routing, C2C, and the fact in the receiver's prompt (what the receiver makes of the
one fact it needs, stated correctly: a measure of its reading, not a bound) on two tasks (`run.demo_questions`):

- **transfer**: a fact only the sharer knows;
- **complementary**: a person's country, which needs the sharer's fact (the city) and the receiver's (its country):
  the receiver alone, the sharer alone and any choice between them stay near chance.

Protocol: every setting (steps, widths, learning rates, layer map, the fuser's share of country questions) was chosen
on the validation people (`experiments/demo_recipe/`); the demo scores the test people once (`--splits validation`
scores validation instead, for choosing). Every receiver layer is fused with sharer layer 0, where this sharer keeps
its facts in the name tokens' keys and values. The C2C model is saved with `save_pretrained` (with the receiver
tokenizer), reloaded with `AutoModelForCausalLM.from_pretrained` and asked questions with `generate`.

Outputs in `--output` (default `./c2c-demo`, written by `report`): `results.md` / `results.json` /
`accuracy_latency.png` (the harness report), `gates.png` (the analysis gate map), `demo.md` (table, targets, timings,
examples), and the models: `receiver/`, `sharer/` (bases with their tokenizers), `t2t_receiver/` (the hint-trained
receiver) and `c2c/` (fuser, config, receiver tokenizer). Deterministic for a given seed and thread count, with one
or two workers (latencies aside).
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
from .config import DemoConfig
from .hint_reader import TrainedTextToText, train_hint_reader
from .report import demo_markdown, demo_targets, write_demo_report
from .run import (
    TASKS,
    Bases,
    FactInPrompt,
    answer_example,
    build_c2c,
    demo_methods,
    demo_questions,
    fuser_dataset,
    fuser_items,
    run_demo,
    train_bases,
    train_fuser,
)
from .schedule import DecayWhenLearnt, answer_accuracy
from .world import ATTRIBUTES, COUNTRIES, QUESTIONS, ROLES, STATEMENTS, Entity, World, invent_names

__all__ = [
    "ATTRIBUTES",
    "COUNTRIES",
    "QUESTIONS",
    "ROLES",
    "STATEMENTS",
    "TASKS",
    "Bases",
    "DecayWhenLearnt",
    "DemoConfig",
    "Entity",
    "Example",
    "FactInPrompt",
    "TrainedTextToText",
    "WeightedLMCollator",
    "WeightedLMLoss",
    "World",
    "answer_accuracy",
    "answer_example",
    "answer_text",
    "build_c2c",
    "build_parser",
    "build_receiver",
    "build_sharer",
    "demo_markdown",
    "demo_methods",
    "demo_questions",
    "demo_targets",
    "encode_chat",
    "encode_text",
    "fuser_dataset",
    "fuser_items",
    "invent_names",
    "main",
    "pretrain",
    "receiver_examples",
    "run_demo",
    "sharer_examples",
    "train_bases",
    "train_fuser",
    "train_hint_reader",
    "train_tokenizers",
    "write_demo_report",
]
