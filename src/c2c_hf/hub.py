"""Hugging Face Hub: model cards for C2C checkpoints, and uploads.

The model calls this module when it saves (`save_pretrained` writes the card); this module never imports the model,
so `model` arguments are typed `PreTrainedModel` and are always a `C2CForCausalLM`.

A C2C repository holds the fuser, its config, the generation config, the model code and a card; the bases stay in
their own repositories and `from_pretrained` resolves all three through `huggingface_hub` (cache, revisions, token,
offline mode).
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo, CommitOperationAdd, EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .atomic import atomic_write_text
from .configuration_c2c import C2CConfig

TEMPLATE_PATH = Path(__file__).resolve().parent / "templates" / "model_card.md"  # shipped inside the package
CARD_TAGS = ["c2c", "cache-to-cache", "kv-cache-fusion"]
RESULTS_FILE = "results.md"  # evaluation table (c2c-hf eval writes one) the card shows by default
TRAINING_FILE = "training.json"  # free-form training facts the card shows by default
# The usage snippet's conversation when the training facts hold no `example` from the training data.
GENERIC_EXAMPLE = [{"role": "user", "content": "Which planet is known as the red planet?"}]


def _hub_ids(*names: str | None) -> list[str]:
    """The names that are Hub repo ids (local paths are left out of the card's metadata)."""
    ids = []
    for name in filter(None, names):
        try:
            validate_repo_id(name)
        except HFValidationError:
            continue
        if not os.path.isdir(name):
            ids.append(name)
    return ids


def _or_unknown(value: Any) -> Any:
    return "unknown" if value is None or value == "" else value


def _demote_headings(markdown: str) -> str:
    """Nest a stand-alone markdown document (e.g. `results.md`) under the card's `## Evaluation` heading."""
    return "\n".join("##" + line if line.startswith("#") else line for line in markdown.strip().splitlines())


def eval_results(metrics: dict[str, float], dataset: str) -> list[EvalResult]:
    """The card metadata's `model-index` entries for an evaluation's `metrics` (name -> value, e.g. `loss`) on
    `dataset` (its name or Hub id), for the text-generation task."""
    return [
        EvalResult(task_type="text-generation", dataset_type=dataset, dataset_name=dataset, metric_type=name,
                   metric_name=name, metric_value=value)
        for name, value in metrics.items()
    ]  # fmt: skip


def card_variables(
    model: PreTrainedModel,
    repo_id: str,
    training: dict[str, Any] | None = None,
    evaluation_table: str | None = None,
    tokenizer_id: str | None = None,
) -> dict[str, Any]:
    """The values the model card template renders: pair, KV shapes, layer map, gates, alignment, LoRA, training.

    `training` keys with a meaning of their own: `data`, `steps` (their own lines, "unknown" when absent),
    `example` (a training conversation whose last message is the trained answer: the usage snippet asks its
    earlier messages and names the answer), `eval_metrics` (name -> value: a line each); the other keys are listed
    as they are.
    """
    config: C2CConfig = model.config
    receiver = config.receiver_name_or_path or "unknown"
    sharer = config.sharer_name_or_path or "unknown"
    kv_rows = []
    for role, name, revision, (layers, heads, head_dim) in (
        ("receiver", receiver, config.receiver_revision, config.receiver_kv_shape),
        ("sharer", sharer, config.sharer_revision, config.sharer_kv_shape),
    ):
        kv_rows.append(
            dict(role=role, model=name, revision=revision or "main", layers=layers, heads=heads, head_dim=head_dim,
                 width=heads * head_dim)
        )  # fmt: skip
    logits, is_open = model.fuser.gate_logits().tolist(), model.fuser.open_gates().tolist()
    layer_rows = [
        dict(receiver=t, sharer=s, k_logit=f"{k:+.3f}", v_logit=f"{v:+.3f}", k_open="yes" if ko else "no",
             v_open="yes" if vo else "no")
        for t, (s, (k, v), (ko, vo)) in enumerate(zip(config.resolved_layer_map(), logits, is_open, strict=True))
    ]  # fmt: skip
    if config.token_alignment is None:
        alignment = "None: the receiver and the sharer share a tokenizer, so the sharer reads the receiver's token ids."
    elif config.token_alignment == "span":
        alignment = (
            "Span: the sharer reads the prompt's text in its own tokenization, and each receiver position takes the KV "
            "of the sharer token ending with it or last before it (`from_pretrained` loads both bases' tokenizers)."
        )
    else:
        coverage = config.token_alignment_coverage
        alignment = (
            f"Strategy `{config.token_alignment}`: every receiver token maps to one sharer token (the map is stored in "
            "the checkpoint and applied inside `forward` / `generate`); "
            + (
                "coverage unknown."
                if coverage is None
                else f"{coverage:.1%} of the receiver vocabulary maps one-to-one."
            )
        )
    training = dict(training or {})
    example = training.pop("example", None)
    metrics = training.pop("eval_metrics", None) or {}
    training.pop("dataset", None)  # the metadata's (`write_model_card`); `data` is its line
    return dict(
        repo_id=repo_id,
        tokenizer_id=tokenizer_id or receiver,
        receiver=receiver,
        sharer=sharer,
        fuser_parameters=f"{sum(p.numel() for p in model.fuser.parameters()):,}",
        receiver_lora=config.receiver_lora,
        kv_rows=kv_rows,
        hidden_size=config.fuser_hidden_size,
        intermediate_size=config.fuser_intermediate_size,
        num_blocks=config.fuser_num_blocks,
        num_layers=len(layer_rows),
        open_k=sum(ko for ko, _ in is_open),
        open_v=sum(vo for _, vo in is_open),
        layer_rows=layer_rows,
        token_alignment=alignment,
        training_data=_or_unknown(training.pop("data", None)),
        training_steps=_or_unknown(training.pop("steps", None)),
        training_extra=sorted(training.items()) + [(f"eval {name}", value) for name, value in sorted(metrics.items())],
        example_messages=json.dumps(example[:-1] if example else GENERIC_EXAMPLE, ensure_ascii=False),  # a Python literal
        example_answer=example[-1]["content"] if example else None,
        evaluation_table=_demote_headings(evaluation_table) if evaluation_table else None,
    )


def write_model_card(
    model: PreTrainedModel,
    save_directory: str | os.PathLike,
    training: dict[str, Any] | None = None,
    evaluation_table: str | None = None,
    *,
    repo_id: str | None = None,
    tags: list[str] | None = None,
    language: str | list[str] | None = None,
    license: str | None = None,
) -> ModelCard:
    """Write `README.md` (a Hub model card) for a C2C model into `save_directory` (atomically) and return it.

    `training` is free-form (`card_variables` says which keys mean what: `data`, `steps`, `example`,
    `eval_metrics`); `eval_metrics` also become the metadata's `eval_results` (on `dataset`, else `data`), and a
    `dataset` that is a Hub id the metadata's `datasets`. It defaults to `training.json` in `save_directory`
    (`C2CTrainer` writes one), and `evaluation_table` (markdown) to `results.md` there, if present. `repo_id` is the
    id the usage snippet loads (default: `save_directory`); the snippet loads the tokenizer from there when the
    directory holds one, else from the receiver. `tags` add to the C2C tags; `language` and `license` go to the
    metadata.
    """
    save_directory = Path(save_directory)
    if training is None and (save_directory / TRAINING_FILE).is_file():
        training = json.loads((save_directory / TRAINING_FILE).read_text(encoding="utf-8"))
    if evaluation_table is None and (save_directory / RESULTS_FILE).is_file():
        evaluation_table = (save_directory / RESULTS_FILE).read_text(encoding="utf-8")
    repo_id = repo_id or str(save_directory)
    has_tokenizer = (save_directory / "tokenizer_config.json").is_file()
    config = model.config
    dataset = (training or {}).get("dataset") or (training or {}).get("data")
    metrics = (training or {}).get("eval_metrics") or {}
    card_data = ModelCardData(
        base_model=_hub_ids(config.receiver_name_or_path, config.sharer_name_or_path) or None,
        datasets=_hub_ids(dataset) or None,
        eval_results=eval_results(metrics, str(dataset or "unknown")) if metrics else None,
        model_name=Path(repo_id).name if metrics else None,  # the model-index entry's name
        language=language,
        license=license,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=list(dict.fromkeys(CARD_TAGS + list(tags or []))),
    )
    variables = card_variables(model, repo_id, training, evaluation_table, repo_id if has_tokenizer else None)
    card = ModelCard.from_template(card_data, template_path=str(TEMPLATE_PATH), **variables)
    atomic_write_text(save_directory / "README.md", str(card))  # the bytes `card.save` writes, renamed into place
    return card


def check_bases_on_hub(config: C2CConfig, allow_local_bases: bool = False) -> None:
    """Refuse (or, with `allow_local_bases`, warn about) bases the config names by local path, not by Hub id."""
    local = {
        role: name
        for role, name in (("receiver", config.receiver_name_or_path), ("sharer", config.sharer_name_or_path))
        if name and not _hub_ids(name)
    }
    if not local:
        return
    named = ", ".join(f"the {role} {name!r}" for role, name in local.items())
    consequence = (
        f"{named} {'is a local path' if len(local) == 1 else 'are local paths'}, which nobody who downloads the repo "
        "has: they would have to pass " + " and ".join(f"`{role}=`" for role in local) + " to from_pretrained."
    )
    if not allow_local_bases:
        raise ValueError(
            f"push_to_hub refuses this C2C model: {consequence} Push the base(s) to the Hub and name them by id ("
            + ", ".join(f"model.config.{role}_name_or_path = 'org/name'" for role in local)
            + "), or pass allow_local_bases=True to upload anyway."
        )
    warnings.warn(f"Uploading a C2C model whose bases are not on the Hub: {consequence}", UserWarning, stacklevel=3)


def push_to_hub(
    model: PreTrainedModel,
    repo_id: str,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    training: dict[str, Any] | None = None,
    evaluation_table: str | None = None,
    commit_message: str | None = None,
    commit_description: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    max_shard_size: int | str = "50GB",
    tags: list[str] | None = None,
    allow_local_bases: bool = False,
) -> CommitInfo:
    """Upload a C2C checkpoint with its model card in one commit: what `save_pretrained` writes (fuser weights,
    config, generation config, model code, the model's tokenizers), the tokenizer when given, and `README.md`.
    Never the bases.

    Takes the arguments of `PreTrainedModel.push_to_hub`, whose own upload would replace the card with the repo's
    current one or a generic card. A base named by a local path (not a Hub id) makes the repo unloadable for anyone
    else, so the upload is refused with a `ValueError` naming it, unless `allow_local_bases=True` (then it uploads
    with a warning: loaders must pass `receiver=` / `sharer=`).
    """
    check_bases_on_hub(model.config, allow_local_bases)
    # One commit built here rather than `HfApi.upload_folder`, which may split a folder into several commits (with
    # hf_xet installed): a C2C repo's config, code and fuser weights must change together.
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory() as workspace:
        tmp = Path(workspace, "repo")  # a folder with no bases beside it: local bases keep their absolute paths
        model.save_pretrained(tmp, max_shard_size=max_shard_size)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        write_model_card(model, tmp, training, evaluation_table, repo_id=repo_id, tags=tags)
        operations = [
            CommitOperationAdd(path_in_repo=file.relative_to(tmp).as_posix(), path_or_fileobj=str(file))
            for file in sorted(Path(tmp).rglob("*"))
            if file.is_file()
        ]
        if revision is not None and not create_pr:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        return api.create_commit(
            repo_id,
            operations=operations,
            commit_message=commit_message or "Upload C2C fuser",
            commit_description=commit_description,
            revision=revision,
            create_pr=create_pr,
        )


__all__ = [
    "CARD_TAGS", "GENERIC_EXAMPLE", "RESULTS_FILE", "TRAINING_FILE", "card_variables", "check_bases_on_hub",
    "eval_results", "push_to_hub", "write_model_card",
]  # fmt: skip
