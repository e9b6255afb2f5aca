"""Is a fact linearly decodable from the sharer's prompt cache, for people the decoder never saw?

    python experiments/real_cpu/probe_sharer_kv.py --output docs/results/real-cpu/knowledge/sharer-kv-probe.json

A fuser can only transfer what the sharer's cache holds in a code shared across people. This trains, per sharer
layer, K or V, and attribute, a multinomial logistic regression (L2) from the sharer's KV to the fact's value (8
classes) on the questions about the fuser's training people, and scores it on the validation and held-out people.
Features: the KV of the name's last token (where a model that recalls facts by their subject would put them), of the
last fused position (the prompt minus its last token, what C2C fuses last), of the last prompt position (never
fused), and the mean over the fused positions. Every question template is used for every fact, in the receiver's
chat-rendered prompt read by the sharer's tokenizer (both use ChatML).

Beside K and V, each position's residual stream entering the layer (`H`, the hidden state that layer's K and V are
projected from, through its input norm) is probed too: what the sharer computed there, against what its cache keeps
of it. `recall_at_name` is how often the sharer's own next token after the name is the value's first token (what
the recall LoRA trains), read from its last layer's output, which no cache holds.

`--answer-prefix` (a positive control) appends the start of the sharer's answer up to the value ("Trenkai lives
in"), so that the last position is the one where the sharer retrieves the value to say it next.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from c2c_hf.demo.world import ATTRIBUTES, QUESTIONS, Entity, World
from c2c_hf.evaluation import MEASUREMENT_PROTOCOL, result_metadata

sys.path.insert(0, str(Path(__file__).parent))
import knowledge_setup  # this folder's scripts

POSITIONS = ("name", "last_fused", "last", "mean_fused")
KINDS = ("K", "V", "H")


def layer_states(output, kind: str) -> torch.Tensor:
    """`(layers, N, features)` of one sharer prefill: K or V of every layer flattened over heads (`H_s * D_s`), or H,
    the hidden state entering each layer."""
    if kind == "H":
        return torch.stack(output.hidden_states[:-1])[:, 0].float()
    kv = torch.stack([(layer.keys if kind == "K" else layer.values)[0] for layer in output.cache.layers]).float()
    return kv.transpose(1, 2).flatten(2)  # (layers, H_s, N, D_s) -> (layers, N, H_s * D_s)


@torch.no_grad()
def sharer_features(
    people: list[Entity],
    sharer,
    sharer_tokenizer,
    receiver_tokenizer,
    answer_prefix: bool,
    positions: tuple[str, ...] = POSITIONS,
    kinds: tuple[str, ...] = KINDS,
) -> list[tuple[str, int, dict, bool]]:
    """Per question: (attribute, value index, {(position, kind): (layers, features)} for the asked positions and kinds,
    whether the sharer's next token after the name is the value's first token). Kinds: K and V `(layers, H_s * D_s)`,
    H `(layers, hidden)`."""
    rows = []
    for entity in people:
        for attribute in ATTRIBUTES:
            for template in QUESTIONS[attribute]:
                messages = [{"role": "user", "content": template.format(name=entity.name)}]
                text = receiver_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
                if answer_prefix:  # "Trenkai lives in Dublin." -> "Trenkai lives in"
                    statement = World.statement(entity, attribute)
                    text += statement[: statement.index(entity.value(attribute))].rstrip()
                encoded = sharer_tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
                name_end = text.index(entity.name) + len(entity.name)  # the name's last character is at name_end - 1
                name = next(i for i, (start, end) in enumerate(encoded["offset_mapping"]) if start < name_end <= end)
                output = sharer(torch.tensor([encoded["input_ids"]]), use_cache=True, output_hidden_states="H" in kinds)
                index = {"name": name, "last_fused": -2, "last": -1}
                features = {}
                for kind in kinds:
                    per_position = layer_states(output, kind)
                    for position in positions:  # cloned: a view would keep the whole prompt's tensor alive
                        features[position, kind] = (per_position[:, :-1].mean(1) if position == "mean_fused"
                                                    else per_position[:, index[position]].clone())  # fmt: skip
                value = entity.value(attribute)
                value_token = sharer_tokenizer(f" {value}", add_special_tokens=False)["input_ids"][0]
                recalled = int(output.logits[0, name].argmax()) == value_token
                rows.append((attribute, ATTRIBUTES[attribute].index(value), features, recalled))
    return rows


def fit_softmax_regression(
    x: torch.Tensor, y: torch.Tensor, classes: int, l2: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights `(features, classes)` and bias of an L2-regularised multinomial logistic regression (LBFGS)."""
    weight = torch.zeros(x.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight + bias, y) + l2 * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()


def probe_accuracy(groups: dict[str, list], feature: tuple[str, str], layer: int, l2: float) -> dict[str, float]:
    """Accuracy per group of per-attribute regressions fitted on group `"trained"` (standardised features)."""
    right, total = dict.fromkeys(groups, 0), dict.fromkeys(groups, 0)
    for attribute, values in ATTRIBUTES.items():
        x = {g: torch.stack([r[2][feature][layer] for r in rows if r[0] == attribute]) for g, rows in groups.items()}
        y = {g: torch.tensor([r[1] for r in rows if r[0] == attribute]) for g, rows in groups.items()}
        mean, std = x["trained"].mean(0), x["trained"].std(0) + 1e-4
        x = {g: (v - mean) / std for g, v in x.items()}
        weight, bias = fit_softmax_regression(x["trained"], y["trained"], len(values), l2)
        for g in groups:
            right[g] += int(((x[g] @ weight + bias).argmax(-1) == y[g]).sum())
            total[g] += len(y[g])
    return {g: right[g] / total[g] for g in groups}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    knowledge_setup.add_world_arguments(parser)
    knowledge_setup.add_location_arguments(parser)
    parser.add_argument("--l2", type=float, default=1e-2)
    parser.add_argument("--answer-prefix", action="store_true", help="append the answer's start (a positive control)")
    parser.add_argument("--positions", nargs="+", choices=POSITIONS, default=POSITIONS)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=KINDS)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the sharer's prefills)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    world, (runs, _) = knowledge_setup.load_world(args), knowledge_setup.experiment_dirs(args)
    sharer_path = runs / "sharer-private"
    sharer = AutoModelForCausalLM.from_pretrained(sharer_path, dtype=args.dtype).eval()
    sharer_tokenizer = AutoTokenizer.from_pretrained(sharer_path)
    receiver_tokenizer = AutoTokenizer.from_pretrained(args.models / knowledge_setup.RECEIVER)
    trained, validation = knowledge_setup.split_fuser_people(world, args.validation_people)
    people = {"trained": trained, "validation": validation, "heldout": world.entities["test"]}
    groups = {g: sharer_features(p, sharer, sharer_tokenizer, receiver_tokenizer, args.answer_prefix,
                                 tuple(args.positions), tuple(args.kinds)) for g, p in people.items()}  # fmt: skip
    layers = sharer.config.num_hidden_layers
    shown_path = (
        sharer_path.relative_to(knowledge_setup.ROOT)
        if sharer_path.is_relative_to(knowledge_setup.ROOT)
        else sharer_path
    )
    report = {
        "sharer": str(shown_path), "people": {g: len(p) for g, p in people.items()},
        "questions": {g: len(rows) for g, rows in groups.items()}, "classes_per_attribute": 8, "l2": args.l2,
        "answer_prefix": args.answer_prefix,
        "recall_at_name": {g: sum(r[3] for r in rows) / len(rows) for g, rows in groups.items()},
        "accuracy": {},
    }  # fmt: skip
    print(f"recall at the name: {report['recall_at_name']}", flush=True)
    for position in args.positions:
        for kind in args.kinds:
            by_layer = [probe_accuracy(groups, (position, kind), layer, args.l2) for layer in range(layers)]
            report["accuracy"][f"{position}/{kind}"] = by_layer
            best = max(range(layers), key=lambda i: by_layer[i]["validation"])
            print(f"{position} {kind}: best validation layer {best} {by_layer[best]}", flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({**result_metadata(MEASUREMENT_PROTOCOL), **report}, indent=1) + "\n")


if __name__ == "__main__":
    main()
