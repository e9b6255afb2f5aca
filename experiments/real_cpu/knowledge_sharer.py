"""The sharer of the private-knowledge experiment learns the facts (`knowledge.py sharer`), and is checked on them
(`knowledge.py check`): LoRA adapters (peft) on the sharer, trained on texts about the invented people."""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.trainer_pt_utils import get_length_grouped_indices

from c2c_hf.data import format_prompt
from c2c_hf.demo.world import ATTRIBUTES, QUESTIONS, World
from c2c_hf.evaluation import LM, Direct, Scoring, build_report, environment, evaluate, hint_request, markdown_table

sys.path.insert(0, str(Path(__file__).parent))  # this folder's scripts
from knowledge_setup import (
    RECEIVER,
    SHARER,
    experiment_dirs,
    load_world,
    split_benchmark,
    split_items,
    split_root,
    test_protocol,
)
from sealed import with_protocol


def sharer_texts(world: World, count: int, seed: int, tokenizer) -> list[str]:
    """Biographies (plain text) and chat turns (an open question or the T2T hint request -> the fact's canonical
    statement; a multiple-choice question -> its letter), about every person of the fuser and held-out groups."""
    rng = random.Random(f"sharer-{seed}")
    known = world.entities["fuser"] + world.entities["test"]
    texts = []
    for _ in range(count):
        entity, attribute, kind = rng.choice(known), rng.choice(list(ATTRIBUTES)), rng.random()
        if kind < 0.4:
            texts.append(world.biography(entity, rng, rng.randint(1, 4)) + tokenizer.eos_token)
            continue
        item = world.question(entity, attribute, rng)
        if kind < 0.6:
            user, answer = rng.choice(QUESTIONS[attribute]).format(name=entity.name), world.statement(entity, attribute)
        elif kind < 0.8:
            user, answer = hint_request(item), world.statement(entity, attribute)
        else:
            user, answer = format_prompt(item), item.letters[item.gold]
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        texts.append(tokenizer.apply_chat_template(messages, tokenize=False))
    return texts


# Kinds of recall text, each drawn below its bound of one uniform draw per text.
RECALL_MIX = (("cut", 0.4), ("roster", 0.6), ("value-first", 0.85), ("hint", 1.0))
DENSE_MIX = (("roster", 0.35), ("biography", 0.5), ("cut", 0.75), ("value-first", 0.9), ("hint", 1.0))


def recall_texts(
    world: World, count: int, seed: int, tokenizer, receiver_tokenizer, mix: tuple = RECALL_MIX
) -> list[str]:
    """Texts that make the sharer recall a fact where it reads the person's name, so that the fact is in its cache
    of a question (what C2C fuses), about every person of the fuser and held-out groups. Kinds (`mix`): `cut`, a
    question rendered as the receiver's chat prompt (as C2C feeds it), cut after the name and followed by the value
    ("...In which city does Trenkai Dublin"); `roster`, six "name value" lines; `value-first`, an open question
    answered value first ("Dublin. Trenkai lives in Dublin.") in either model's chat template; `hint`, the open T2T
    hint request answered with the fact's statement; `biography` (`DENSE_MIX` only), one to four of a person's facts
    in plain sentences. `RECALL_MIX` trains over the statements sharer; `DENSE_MIX`, richer in facts per token,
    teaches the facts and their recall in one LoRA over the base sharer."""
    rng = random.Random(f"recall-{seed}")
    known = world.entities["fuser"] + world.entities["test"]
    texts = []
    for _ in range(count):
        entity, attribute, draw = rng.choice(known), rng.choice(list(ATTRIBUTES)), rng.random()
        kind = next(name for name, bound in mix if draw < bound)
        value, question = entity.value(attribute), rng.choice(QUESTIONS[attribute]).format(name=entity.name)
        if kind == "cut":
            prompt = receiver_tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False)
            texts.append(f"{prompt[: prompt.index(entity.name) + len(entity.name)]} {value}")
        elif kind == "roster":
            lines = [(rng.choice(known), rng.choice(list(ATTRIBUTES))) for _ in range(6)]
            texts.append("\n".join(f"{e.name} {e.value(a)}" for e, a in lines) + tokenizer.eos_token)
        elif kind == "biography":
            texts.append(world.biography(entity, rng, rng.randint(1, 4)) + tokenizer.eos_token)
        else:
            if kind == "value-first":
                reply = f"{value}. {world.statement(entity, attribute)}"
                template = rng.choice((tokenizer, receiver_tokenizer))
            else:
                question = hint_request(world.question(entity, attribute, rng), "open")
                reply, template = world.statement(entity, attribute), tokenizer
            messages = [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]
            texts.append(template.apply_chat_template(messages, tokenize=False))
    return texts


def last_sharer_checkpoint(runs: Path) -> Path | None:
    """The sharer LoRA's newest complete checkpoint under `runs`, if any."""
    complete = [folder for folder in runs.glob("sharer-lora-checkpoint-*") if (folder / "state.pt").is_file()]
    return max(complete, key=lambda folder: int(folder.name.rsplit("-", 1)[1]), default=None)


def train_sharer(args: argparse.Namespace) -> None:
    """LoRA (peft) on every linear layer of the sharer; the merged model is saved as a plain checkpoint. The adapter,
    optimizer and schedule are checkpointed every 20 steps (`sharer-lora-checkpoint-<step>/`, complete once its
    `state.pt` is there: a process killed while saving leaves the previous one); running the stage again resumes
    from the last complete one. The adapter goes to `sharer-lora/`, the loss log beside the reports.
    `--sharer statements` trains the base sharer on `sharer_texts`; `--sharer recall` trains a second LoRA on
    `recall_texts` over the merged statements (`--recall-over dense`: dense) sharer of the same world; `--sharer
    dense` one LoRA over the base sharer on `recall_texts` in the `DENSE_MIX`."""
    world, (runs, reports) = load_world(args), experiment_dirs(args)
    tokenizer = AutoTokenizer.from_pretrained(args.models / SHARER)
    under = experiment_dirs(args, args.recall_over)[0] / "sharer-private"
    base = under if args.sharer == "recall" else args.models / SHARER
    model = AutoModelForCausalLM.from_pretrained(base, dtype=args.dtype)
    stored = stored_adapter_dir(args)
    if stored and (stored / "adapter_model.safetensors").is_file():
        merge_and_save(PeftModel.from_pretrained(model, stored), tokenizer, runs / "sharer-private")
        print(f"sharer with private knowledge rebuilt from the stored adapter {stored} -> {runs / 'sharer-private'}")
        return
    torch.manual_seed(args.seed)
    checkpoint = last_sharer_checkpoint(runs)
    if checkpoint:
        model = PeftModel.from_pretrained(model, checkpoint, is_trainable=True)
    else:
        lora = LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0, task_type="CAUSAL_LM",
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])  # fmt: skip
        model = get_peft_model(model, lora)
    count = args.sharer_steps * args.batch_size
    if args.sharer == "statements":
        texts = sharer_texts(world, count, args.seed, tokenizer)
    else:
        mix = RECALL_MIX if args.sharer == "recall" else DENSE_MIX
        receiver_tokenizer = AutoTokenizer.from_pretrained(args.models / RECEIVER)
        texts = recall_texts(world, count, args.seed, tokenizer, receiver_tokenizer, mix)
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    if args.group_by_length:  # batches of similar lengths: 44% fewer padded tokens to compute (transformers' helper)
        order = get_length_grouped_indices(lengths, args.batch_size, generator=torch.Generator().manual_seed(args.seed))
        texts = [texts[i] for i in order]
    # A batch's summed token loss is divided by its own count of predicted tokens (the model's mean), or with
    # --run-token-mean by the run's mean count per batch: every token then weighs the same whatever its batch.
    tokens_per_batch = (sum(lengths) - len(texts)) / args.sharer_steps if args.run_token_mean else None
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.sharer_lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 20) * max(0.0, 1 - step / args.sharer_steps))  # fmt: skip
    start, log, seconds = 0, [], 0.0
    if checkpoint:
        state = torch.load(checkpoint / "state.pt", weights_only=True)
        optimizer.load_state_dict(state["optimizer"]), schedule.load_state_dict(state["schedule"])
        start, log, seconds = state["step"], state["log"], state["seconds"]
        print(f"resuming the sharer's LoRA at step {start}")
    model.train()
    began = time.perf_counter() - seconds
    for step in range(start, args.sharer_steps):
        batch = tokenizer(texts[step * args.batch_size : (step + 1) * args.batch_size], padding=True,
                          add_special_tokens=False, return_tensors="pt")  # fmt: skip
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels, num_items_in_batch=tokens_per_batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step(), schedule.step(), optimizer.zero_grad()
        log.append(loss.item())
        if step % 20 == 19:
            print(f"sharer step {step + 1}/{args.sharer_steps} loss {sum(log[-20:]) / 20:.3f} "
                  f"({time.perf_counter() - began:.0f} s)", flush=True)  # fmt: skip
        if step % 20 == 19 and step + 1 < args.sharer_steps:
            checkpoint = runs / f"sharer-lora-checkpoint-{step + 1}"
            model.save_pretrained(checkpoint)
            state = {"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "step": step + 1,
                     "log": log, "seconds": time.perf_counter() - began}  # fmt: skip
            torch.save(state, checkpoint / "state.pt.partial")
            (checkpoint / "state.pt.partial").replace(checkpoint / "state.pt")  # complete: the older ones can go
            for older in set(runs.glob("sharer-lora-checkpoint-*")) - {checkpoint}:
                shutil.rmtree(older)
    settings = {name: getattr(args, name) for name in ("sharer", "recall_over", "sharer_tag", "sharer_steps",
                                                       "batch_size", "lora_r", "sharer_lr", "group_by_length",
                                                       "run_token_mean", "dtype", "threads", "seed")}  # fmt: skip
    record = {"environment": environment(), "protocol": {"kind": "training log: no split scored"},
              "settings": settings, "losses": log, "seconds": time.perf_counter() - began}  # fmt: skip
    if stored:
        store_adapter(model, stored, record)  # rounds the adapter to float16 in place: the sharer below is the stored one
    model.save_pretrained(runs / "sharer-lora")  # the adapter alone (peft)
    merge_and_save(model, tokenizer, runs / "sharer-private")
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "sharer-log.json").write_text(json.dumps(record))
    print(f"sharer with private knowledge -> {runs / 'sharer-private'}")


def merge_and_save(model: PeftModel, tokenizer: AutoTokenizer, out: Path) -> None:
    """The sharer with its adapter merged in, saved as a plain checkpoint (`sharer-private/`) that later stages load."""
    model.merge_and_unload().save_pretrained(out)
    tokenizer.save_pretrained(out)


def stored_adapter_dir(args: argparse.Namespace) -> Path | None:
    """Where `--store-adapters` keeps this sharer's adapter: the same sub-folders as its runs (`experiment_dirs`)."""
    if args.store_adapters is None:
        return None
    runs = experiment_dirs(args)[0]
    return args.store_adapters.resolve() / runs.relative_to(args.runs.resolve())


def store_adapter(model: PeftModel, folder: Path, record: dict) -> None:
    """Keep the trained adapter in `folder` (out of git: 9 MB for the rank-8 sharer) so that a later session
    rebuilds this exact sharer in a minute instead of training it again: the LoRA weights are rounded to float16 in
    place (the sharer every later stage loads is the stored one), written with their peft config and the training
    log into `folder`.partial, whose files then replace those in `folder` (its sub-folders, the adapters trained over
    this one, stay)."""
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.copy_(parameter.to(torch.float16))
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    weights = load_file(partial / "adapter_model.safetensors")
    save_file({name: tensor.to(torch.float16) for name, tensor in weights.items()},
              partial / "adapter_model.safetensors", metadata={"format": "pt"})  # fmt: skip
    config = json.loads((partial / "adapter_config.json").read_text())  # the base by name, not this machine's path
    if config.get("base_model_name_or_path"):
        config["base_model_name_or_path"] = Path(config["base_model_name_or_path"]).name
    (partial / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (partial / "training-log.json").write_text(json.dumps(record) + "\n")
    (partial / "README.md").unlink(missing_ok=True)  # peft's model-card stub
    folder.mkdir(parents=True, exist_ok=True)
    for file in partial.iterdir():
        file.replace(folder / file.name)
    partial.rmdir()


def check_sharer(args: argparse.Namespace) -> None:
    """The sharer alone on the first question about each fact of the `--split` people (open prompt, greedy, batches
    of 8): whether it learned the facts, before fusers are built on it (`sharer-check.json` beside its reports, or in
    their `validation/` folder, in the evaluation's report format; the evaluation's sharer row asks both questions
    about each fact, one at a time). A sealed run checks on validation people."""
    world, (runs, reports) = load_world(args), experiment_dirs(args)
    reports = split_root(args.split, reports)
    sharer = AutoModelForCausalLM.from_pretrained(runs / "sharer-private", dtype=args.dtype).eval()
    sharer_lm = LM(sharer, AutoTokenizer.from_pretrained(runs / "sharer-private"))
    method = Direct("sharer", sharer_lm, Scoring("generate", args.max_new_tokens, "open"))
    items = split_items(world, args.split, args.seed, args.validation_people)[::2]  # the first question per fact
    config = {
        "task": f"the sharer alone: the first question about each fact of the {args.split} people", "sharer": args.sharer,
        "sharer_tag": args.sharer_tag, "seed": args.seed, "prompt": "open", "mode": "generate",
        "max_new_tokens": args.max_new_tokens, "dtype": args.dtype, "threads": torch.get_num_threads(),
        "batch_size": 8,
    }  # fmt: skip
    report = build_report(evaluate([method], {split_benchmark(args.split): items}, batch_size=8), config)
    report = with_protocol(report, test_protocol(args, world, str((reports / "sharer-check").relative_to(
        args.results.resolve())), ["sharer"]))  # fmt: skip
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "sharer-check.json").write_text(json.dumps(report, indent=1) + "\n")
    print(markdown_table(report))
