"""C2C end to end on an embedded default (no Hub): wrap two causal LMs, generate, save the fuser, reload.

    python examples/quickstart.py [--receiver ID_OR_DIR --sharer ID_OR_DIR] [--output DIR]

Without `--receiver/--sharer` it builds two tiny random models of different families (Qwen3 receiver,
Llama sharer) so that it runs anywhere in seconds; the fuser is untrained, so the text is noise.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen3Config

import c2c_hf  # noqa: F401  (registers the Auto classes)
from c2c_hf import C2CForCausalLM


def tiny_bases(folder: Path) -> tuple[str, str]:
    """Save two tiny random models of different families and shapes; return their folders."""
    torch.manual_seed(0)
    receiver = Qwen3Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    sharer = LlamaConfig(vocab_size=256, hidden_size=96, intermediate_size=192, num_hidden_layers=6,
                         num_attention_heads=3, num_key_value_heads=3)
    for name, config in (("receiver", receiver), ("sharer", sharer)):
        AutoModelForCausalLM.from_config(config).save_pretrained(folder / name)
    return str(folder / "receiver"), str(folder / "sharer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--receiver")
    parser.add_argument("--sharer")
    parser.add_argument("--output", default=None, help="where to save the C2C checkpoint (default: a temp dir)")
    args = parser.parse_args()
    work = Path(args.output or tempfile.mkdtemp(prefix="c2c-quickstart-"))
    receiver_id, sharer_id = (args.receiver, args.sharer) if args.receiver else tiny_bases(work)

    receiver = AutoModelForCausalLM.from_pretrained(receiver_id)
    sharer = AutoModelForCausalLM.from_pretrained(sharer_id)
    model = C2CForCausalLM.from_base_models(receiver, sharer, fuser_hidden_size=256).eval()
    fuser_params = sum(p.numel() for p in model.fuser.parameters())
    print(f"receiver {receiver_id}  sharer {sharer_id}  layer map {model.fuser.layer_map}  fuser {fuser_params:,} params")

    prompt = torch.tensor([[1, 17, 42, 8, 77, 23, 61, 9]])
    generated = model.generate(prompt, max_new_tokens=8, do_sample=False)
    print("C2C greedy continuation:", generated[0, prompt.shape[1]:].tolist())

    model.save_pretrained(work / "c2c")
    reloaded = AutoModelForCausalLM.from_pretrained(work / "c2c")
    again = reloaded.generate(prompt, max_new_tokens=8, do_sample=False)
    print(f"saved to {work / 'c2c'}; reloaded model generates the same tokens: {torch.equal(generated, again)}")


if __name__ == "__main__":
    main()
