"""Time one fuser training step (forward + backward + AdamW) at a given sequence length and batch size.

    python -m benchmarks.train_step --pair tiny
    python -m benchmarks.train_step --pair real --models ~/.cache/c2c-real-models   # SmolLM2-135M <- Qwen2.5-Coder-0.5B

Each batch is 4 x 256 tokens by default: a 192-token prompt (fused except its last token) and a 64-token response.
Prints and (with --output) writes JSON: median seconds per step over --steps steps after --warmup steps.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, Qwen3Config

from c2c_hf import C2CForCausalLM


def tiny_pair() -> tuple:  # (receiver, sharer, from_base_models kwargs)
    torch.manual_seed(0)
    receiver = Qwen3Config(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    sharer = LlamaConfig(vocab_size=512, hidden_size=96, intermediate_size=160, num_hidden_layers=6,
                         num_attention_heads=3, num_key_value_heads=3)
    return AutoModelForCausalLM.from_config(receiver), AutoModelForCausalLM.from_config(sharer), {"fuser_hidden_size": 64}


def real_pair(models: Path) -> tuple:
    receiver, sharer = models / "smollm2-135m-instruct", models / "qwen2.5-coder-0.5b-instruct"
    tokenizers = {"receiver_tokenizer": AutoTokenizer.from_pretrained(receiver),
                  "sharer_tokenizer": AutoTokenizer.from_pretrained(sharer)}  # different vocabularies: a token map
    # the paper's default fuser (hidden 1024, 3 blocks)
    return AutoModelForCausalLM.from_pretrained(receiver), AutoModelForCausalLM.from_pretrained(sharer), tokenizers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", choices=("tiny", "real"), default="tiny")
    parser.add_argument("--models", type=Path, default=Path.home() / ".cache" / "c2c-real-models")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--prompt-tokens", type=int, default=192)
    parser.add_argument("--response-tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    receiver, sharer, fuser_kwargs = tiny_pair() if args.pair == "tiny" else real_pair(args.models)
    model = C2CForCausalLM.from_base_models(receiver, sharer, fuser_dropout=0.0, **fuser_kwargs).train()
    vocab = receiver.config.vocab_size
    length = args.prompt_tokens + args.response_tokens
    ids = torch.randint(10, vocab, (args.batch_size, length), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, : args.prompt_tokens] = -100
    batch = dict(input_ids=ids, labels=labels, fuse_length=args.prompt_tokens - 1, logits_to_keep=args.response_tokens + 1)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    times = []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    result = {
        "pair": args.pair,
        "receiver": receiver.name_or_path or receiver.config.model_type,
        "sharer": sharer.name_or_path or sharer.config.model_type,
        "fuser_params": sum(p.numel() for p in model.fuser.parameters()),
        "batch_size": args.batch_size,
        "tokens": length,
        "median_step_s": statistics.median(times),
        "step_times_s": times,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {platform.processor() or ''} torch {torch.__version__}".strip(),
    }
    print(json.dumps(result, indent=2))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
