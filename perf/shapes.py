"""Shape sets of the performance runner: receiver/sharer pairs with their tokenizers, and fuser sizes.

- `tiny`: Qwen3-shaped receiver (4 layers, hidden 64) and Llama-shaped sharer (6 layers, hidden 96), vocab 512;
  for tests and quick checks.
- `small`: the pair the performance targets were set on, random weights: Qwen3-shaped receiver (8 layers, hidden
  512, 8 heads of 64, 4 KV heads, MLP 1536, untied embeddings) = 57.9M parameters and Qwen2-shaped sharer (6
  layers, hidden 384, 6 heads of 64, 2 KV heads, MLP 1024, untied) = 34.0M, both with a 32,000-token vocabulary.
- `paper`: the paper's pair shapes, random weights: Qwen3-0.6B-shaped receiver (596M) and Qwen2.5-0.5B-shaped
  sharer (494M), vocabulary 151,936.
- `real`: SmolLM2-135M-Instruct receiver and Qwen2.5-Coder-0.5B-Instruct sharer loaded from a local folder; their
  tokenizers differ, so the C2C model carries a token map.

Random-weight pairs share one synthetic word-level tokenizer that covers the whole vocabulary (every id decodes to
one word that encodes back to that id), so text-to-text hints keep their token count.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)

SHAPE_SETS = ("tiny", "small", "paper", "real")
REAL_MODELS = {"receiver": "smollm2-135m-instruct", "sharer": "qwen2.5-coder-0.5b-instruct"}
# C2CConfig keyword arguments per fuser size; "default" is the paper's (hidden 1024, 3 blocks).
FUSERS = {
    "default": {"fuser_hidden_size": 1024, "fuser_num_blocks": 3},
    "small": {"fuser_hidden_size": 256, "fuser_num_blocks": 3},
    "tiny": {"fuser_hidden_size": 64, "fuser_num_blocks": 3},
}
# The authors' code (thu-nics/C2C, transformers 4.52.4, torch 2.13 CPU, fp32, 2 threads, random weights, 128-token
# prompt), measured by the project on the same kind of machine.
AUTHORS_TRAIN_RATIO = 6.3  # their training forward + backward / the two plain forwards, small pair, batch 1
REFERENCE = {
    "small": "time to first token: receiver 111 ms, both plain prefills 155 ms, C2C 504 ms (3.3x the plain "
    "prefills); decode 30 ms/token vs receiver 40 ms/token; training forward + backward at batch 1: 1.78 s vs "
    "0.28 s for the two plain forwards (6.3x); left-padded batches give wrong rows.",
    "paper": "time to first token: receiver 1.64 s, both plain prefills 2.36 s.",
}

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]  # ids 0..3, as in the random configs below
ROLE_TOKENS = ["<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL_IDS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}


@dataclass
class Pair:
    """A receiver and a sharer (eval mode, on one device) with the tokenizers their prompts are written in."""

    name: str
    receiver: PreTrainedModel
    sharer: PreTrainedModel
    receiver_tokenizer: PreTrainedTokenizerBase
    sharer_tokenizer: PreTrainedTokenizerBase


def synthetic_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over exactly `vocab_size` tokens: specials, chat roles, then `w<i>` words."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokens = (
        SPECIAL_TOKENS + ROLE_TOKENS + [f"w{i}" for i in range(vocab_size - len(SPECIAL_TOKENS) - len(ROLE_TOKENS))]
    )
    backend = Tokenizer(models.WordLevel({token: i for i, token in enumerate(tokens)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(SPECIAL_TOKENS)
    backend.add_tokens(ROLE_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        chat_template=CHAT_TEMPLATE,
    )  # fmt: skip


def random_configs(name: str) -> tuple[PreTrainedConfig, PreTrainedConfig]:
    """`(receiver, sharer)` configs of a random-weight shape set."""
    if name == "tiny":
        receiver = Qwen3Config(
            vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, **SPECIAL_IDS,
        )  # fmt: skip
        sharer = LlamaConfig(
            vocab_size=512, hidden_size=96, intermediate_size=160, num_hidden_layers=6, num_attention_heads=3,
            num_key_value_heads=3, **SPECIAL_IDS,
        )  # fmt: skip
    elif name == "small":
        receiver = Qwen3Config(
            vocab_size=32000, hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
            num_key_value_heads=4, head_dim=64, tie_word_embeddings=False, **SPECIAL_IDS,
        )  # fmt: skip
        sharer = Qwen2Config(
            vocab_size=32000, hidden_size=384, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=6,
            num_key_value_heads=2, tie_word_embeddings=False, **SPECIAL_IDS,
        )  # fmt: skip
    elif name == "paper":
        receiver = Qwen3Config(
            vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
            num_key_value_heads=8, head_dim=128, tie_word_embeddings=True, **SPECIAL_IDS,
        )  # fmt: skip
        sharer = Qwen2Config(
            vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
            num_key_value_heads=2, tie_word_embeddings=True, **SPECIAL_IDS,
        )  # fmt: skip
    else:
        raise ValueError(f"{name!r} is not a random-weight shape set.")
    return receiver, sharer


def load_pair(name: str, dtype: torch.dtype, device: torch.device, models_dir: Path) -> Pair:
    """The shape set's pair: random weights (seeded) built on `device`, or the real pair read from `models_dir`."""
    if name == "real":
        paths = {role: models_dir / folder for role, folder in REAL_MODELS.items()}
        missing = [str(path) for path in paths.values() if not path.is_dir()]
        if missing:
            raise FileNotFoundError(
                f"The real shape set needs local model folders {missing}: pass --models DIR (with "
                f"{' and '.join(REAL_MODELS.values())}) or leave `real` out of --shapes."
            )
        receiver, sharer = (
            AutoModelForCausalLM.from_pretrained(paths[role], dtype=dtype).to(device).eval() for role in REAL_MODELS
        )
        tokenizers = [AutoTokenizer.from_pretrained(paths[role]) for role in REAL_MODELS]
        return Pair(name, receiver, sharer, *tokenizers)
    configs = random_configs(name)
    models = []
    for seed, config in enumerate(configs):
        torch.manual_seed(seed)
        with torch.device(device):
            models.append(AutoModelForCausalLM.from_config(config, dtype=dtype).eval())
    tokenizer = synthetic_tokenizer(configs[0].vocab_size)  # both configs have this vocabulary
    return Pair(name, *models, tokenizer, tokenizer)
