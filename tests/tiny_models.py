"""Tiny random causal LMs with different architectures, depths and KV shapes, built from configs."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig, Qwen2Config, Qwen3Config

VOCAB = 96


def receiver_config() -> Qwen3Config:
    """Qwen3-shaped receiver: 4 layers, 2 KV heads x 16."""
    return Qwen3Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=256, tie_word_embeddings=True,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )


def sharer_configs() -> dict:
    """Sharers of other families, depths and KV shapes than the receiver."""
    return {
        "qwen2": Qwen2Config(
            vocab_size=VOCAB, hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=1, max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=0,
        ),  # 1 KV head x 12
        "llama": LlamaConfig(
            vocab_size=VOCAB, hidden_size=96, intermediate_size=160, num_hidden_layers=6, num_attention_heads=3,
            num_key_value_heads=3, max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=0,
        ),  # 3 KV heads x 32
        "gemma3": Gemma3TextConfig(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=5, num_attention_heads=2,
            num_key_value_heads=1, head_dim=40, sliding_window=6, max_position_embeddings=256,
            layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention", "full_attention"],
            bos_token_id=1, eos_token_id=2, pad_token_id=0,
        ),  # 1 KV head x 40, sliding window 6
    }


def build(config, seed: int):
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


def saved_bases(root, sharer: str = "llama"):
    """The tiny receiver (seed 0) and a tiny sharer (`sharer_configs()[sharer]`, seed 1) saved in `root/receiver` and
    `root/sharer`, and loaded back from there (so a C2C model over them names those folders)."""
    build(receiver_config(), seed=0).save_pretrained(root / "receiver")
    build(sharer_configs()[sharer], seed=1).save_pretrained(root / "sharer")
    return AutoModelForCausalLM.from_pretrained(root / "receiver"), AutoModelForCausalLM.from_pretrained(root / "sharer")



SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]  # pad/bos/eos ids 0/1/2, as in the tiny configs
ROLES = ["<|user|>", "<|assistant|>"]  # chat-template markers: atomic, but decoded (not special)
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def word_tokenizer(words: list[str]):
    """A word-level tokenizer over `SPECIALS + ROLES + words` (ids < VOCAB) with a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokens = SPECIALS + ROLES + list(words)
    assert len(tokens) == len(set(tokens)) <= VOCAB
    backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(SPECIALS)
    backend.add_tokens(ROLES)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        chat_template=CHAT_TEMPLATE,
    )
