"""Import the fusers released by the C2C authors (thu-nics/C2C, package "rosetta"; Hub repo nics-efc/C2C_Fuser).

Their release holds, per pair, a folder with `config.json` (the training recipe) and `final/` with, per projector
`i`, `projector_{i}.pt` (a state dict) and `projector_{i}.json` (`{"class": ..., "init_args": {...}}`), plus
`projector_config.json`, the layer map `{receiver model idx: {sharer model idx: {receiver layer: [[sharer layer,
projector idx]]}}}` (model 0 is the receiver, model 1 the sharer).

Their `C2CProjector` computes what our `GatedFusion` branch (`fuser.py`) does, with these names per K/V branch (`key_*`, `value_*`):
`*_in` -> `in_proj`, `*_mlp1.blocks.0` -> `shared_block`, `*_proj_mlp2.blocks.j` -> `projection_blocks.j`,
`*_proj_out` -> `out_proj`, `*_scalar_mlp2.blocks.0` -> `weight_block`, `*_scalar_head` -> `weight_head`,
`*_gate_logit` -> `gate_logit`; in a block `norm`/`w1`/`w2` -> `norm`/`up`/`down`. Their hidden size, inner size and
`num_layers` become `fuser_hidden_size`, `fuser_intermediate_size` and `fuser_num_blocks`. Both gate at inference
with `logit > 0`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from ..atomic import atomic_write_text
from ..cli_flags import accept_both_spellings
from ..configuration_c2c import build_layer_map, kv_shape
from ..hub import TRAINING_FILE, write_model_card
from ..modeling_c2c import C2CForCausalLM

SUPPORTED_PROJECTOR = "C2CProjector"
RECEIVER_INDEX, SHARER_INDEX = "0", "1"  # model indices in their projector_config.json
CLOSED_GATE_LOGIT = -30.0  # receiver layers their map leaves out: gate closed, so the receiver's KV is kept exactly
_BLOCK_PARTS = {"norm": "norm", "w1": "up", "w2": "down"}
_LINEARS = {"in": "in_proj", "proj_out": "out_proj", "scalar_head": "weight_head"}
_NAME_PATTERNS = (
    (re.compile(r"(key|value)_(in|proj_out|scalar_head)\.(weight|bias)"), lambda b, m, p: f"{b}.{_LINEARS[m]}.{p}"),
    (
        re.compile(r"(key|value)_(mlp1|scalar_mlp2)\.blocks\.0\.(norm|w1|w2)\.weight"),
        lambda b, m, p: f"{b}.{'shared_block' if m == 'mlp1' else 'weight_block'}.{_BLOCK_PARTS[p]}.weight",
    ),
    (
        re.compile(r"(key|value)_proj_mlp2\.blocks\.(\d+)\.(norm|w1|w2)\.weight"),
        lambda b, j, p: f"{b}.projection_blocks.{j}.{_BLOCK_PARTS[p]}.weight",
    ),
    (re.compile(r"(key|value)_gate_logit"), lambda b: f"{b}.gate_logit"),
)
_IGNORED = {"gate_temperature"}  # their annealed training temperature (a buffer)


def convert_state_dict(state_dict: dict[str, torch.Tensor], source: str = "projector") -> dict[str, torch.Tensor]:
    """A `C2CProjector` state dict as a `C2CLayerFuser` state dict (fp32); `source` names it in errors."""
    converted = {}
    for name, tensor in state_dict.items():
        if name in _IGNORED:
            continue
        for pattern, rename in _NAME_PATTERNS:
            match = pattern.fullmatch(name)
            if match:
                converted[rename(*match.groups())] = tensor.detach().to(torch.float32)
                break
        else:
            raise ValueError(
                f"{source}: unexpected tensor {name!r}; only the authors' default {SUPPORTED_PROJECTOR} can be "
                "imported."
            )
    return converted


def read_layer_map(final_dir: Path) -> dict[int, tuple[int, int]]:
    """`{receiver layer: (sharer layer, projector index)}` from their `projector_config.json`."""
    path = final_dir / "projector_config.json"
    mapping = json.loads(path.read_text(encoding="utf-8"))
    if set(mapping) != {RECEIVER_INDEX} or set(mapping[RECEIVER_INDEX]) != {SHARER_INDEX}:
        pairs = {target: sorted(sources) for target, sources in mapping.items()}
        raise ValueError(
            f"{path}: only one sharer (model 1) fused into one receiver (model 0) is supported; this map pairs "
            f"receiver models with sharer models {pairs}."
        )
    layers = {}
    for receiver_layer, entries in mapping[RECEIVER_INDEX][SHARER_INDEX].items():
        if len(entries) != 1:
            raise ValueError(
                f"{path}: receiver layer {receiver_layer} takes {len(entries)} (sharer layer, projector) pairs "
                f"{entries}; one sharer layer per receiver layer is supported."
            )
        ((sharer_layer, projector),) = entries
        layers[int(receiver_layer)] = (int(sharer_layer), int(projector))
    if not layers:
        raise ValueError(f"{path} maps no receiver layer to a sharer layer: there is nothing to import.")
    return layers


def _load_projector(final_dir: Path, index: int) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """`(init_args, state_dict)` of `projector_{index}`, refusing classes other than `C2CProjector`."""
    spec_path = final_dir / f"projector_{index}.json"
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    if spec.get("class") != SUPPORTED_PROJECTOR:
        raise ValueError(
            f"{spec_path}: projector class {spec.get('class')!r} is not supported; only the authors' default "
            f"{SUPPORTED_PROJECTOR} maps onto the c2c_hf fuser."
        )
    state_dict = torch.load(final_dir / f"projector_{index}.pt", map_location="cpu", weights_only=True)
    return spec.get("init_args", {}), state_dict


def _fuser_sizes(state_dict: dict[str, torch.Tensor], init_args: dict[str, Any]) -> dict[str, Any]:
    """Our fuser config from one projector: sizes read from the tensor shapes, the rest from its init args."""
    projection_blocks = {name.split(".")[2] for name in state_dict if name.startswith("key_proj_mlp2.blocks.")}
    sizes = dict(
        fuser_hidden_size=state_dict["key_in.weight"].shape[0],
        fuser_intermediate_size=state_dict["key_mlp1.blocks.0.w1.weight"].shape[0],
        fuser_num_blocks=len(projection_blocks) + 2,
        fuser_dropout=float(init_args.get("dropout", 0.1)),
    )
    if "initial_temperature" in init_args:
        sizes["gate_temperature_start"] = float(init_args["initial_temperature"])
    if "final_temperature" in init_args:
        sizes["gate_temperature_end"] = float(init_args["final_temperature"])
    return sizes


def _check_init_args(
    init_args: dict[str, Any], receiver: PreTrainedConfig, sharer: PreTrainedConfig, source: str
) -> None:
    """The KV shapes a projector was built for must be the pair's (shapes alone cannot tell heads from head dims)."""
    _, receiver_heads, receiver_dim = kv_shape(receiver)
    _, sharer_heads, sharer_dim = kv_shape(sharer)
    expected = dict(
        source_num_heads=sharer_heads, source_dim=sharer_dim, target_num_heads=receiver_heads, target_dim=receiver_dim
    )
    wrong = {k: (init_args[k], v) for k, v in expected.items() if k in init_args and int(init_args[k]) != v}
    if wrong:
        details = ", ".join(f"{k}={found} (pair: {want})" for k, (found, want) in wrong.items())
        raise ValueError(f"{source} was built for other KV shapes than this receiver/sharer pair: {details}.")


def _base_config(
    base: str | os.PathLike | PreTrainedConfig | PreTrainedModel | None, name: str | None, role: str
) -> PreTrainedConfig:
    if isinstance(base, PreTrainedModel):
        return base.config
    if isinstance(base, PreTrainedConfig):
        return base
    if base is None and name is None:
        raise ValueError(f"No {role} given and the fuser's config.json names none: pass {role}=<config, model or id>.")
    return AutoConfig.from_pretrained(base if base is not None else name)


def import_rosetta(
    src_dir: str | os.PathLike,
    dest_dir: str | os.PathLike,
    receiver: str | os.PathLike | PreTrainedConfig | PreTrainedModel | None = None,
    sharer: str | os.PathLike | PreTrainedConfig | PreTrainedModel | None = None,
    receiver_id: str | None = None,
    sharer_id: str | None = None,
    receiver_tokenizer: PreTrainedTokenizerBase | None = None,
    sharer_tokenizer: PreTrainedTokenizerBase | None = None,
) -> C2CForCausalLM:
    """Convert one pair folder of the authors' release into a c2c_hf checkpoint at `dest_dir`; returns the model
    (bases on the meta device: load `dest_dir` with `from_pretrained` to run it).

    `src_dir` is the pair folder (`config.json` + `final/`) or a folder with the `projector_*` files.
    `receiver` / `sharer` give the bases' configs (a config, a model, or an id/path); by default they are read from
    `receiver_id` / `sharer_id`, which default to the `base_model` / `teacher_model` of their `config.json` and are
    what the checkpoint loads its bases from. When their recipe aligned tokens (`is_do_alignment`), a token map is
    built from the two tokenizers (given, or loaded from the same places as the configs).
    """
    src_dir, dest_dir = Path(src_dir), Path(dest_dir)
    final_dir = src_dir / "final" if (src_dir / "final" / "projector_config.json").is_file() else src_dir
    if not (final_dir / "projector_config.json").is_file():
        raise FileNotFoundError(
            f"{src_dir} holds no projector_config.json (nor final/projector_config.json): not a C2C fuser folder."
        )
    recipe_path = src_dir / "config.json"
    recipe = json.loads(recipe_path.read_text(encoding="utf-8")) if recipe_path.is_file() else {}
    model_recipe = recipe.get("model", {})
    receiver_id = (
        receiver_id or model_recipe.get("base_model") or (str(receiver) if isinstance(receiver, (str, Path)) else None)
    )
    sharer_id = (
        sharer_id or model_recipe.get("teacher_model") or (str(sharer) if isinstance(sharer, (str, Path)) else None)
    )
    receiver_config = _base_config(receiver, receiver_id, "receiver").get_text_config(decoder=True)
    sharer_config = _base_config(sharer, sharer_id, "sharer").get_text_config(decoder=True)

    layers = read_layer_map(final_dir)
    receiver_layers, sharer_layers = receiver_config.num_hidden_layers, sharer_config.num_hidden_layers
    outside = {t: s for t, (s, _) in layers.items() if not (0 <= t < receiver_layers and 0 <= s < sharer_layers)}
    if outside:
        raise ValueError(
            f"{final_dir / 'projector_config.json'} maps receiver layer -> sharer layer {outside}, outside this pair "
            f"({receiver_layers} receiver layers, {sharer_layers} sharer layers): is this fuser for another pair?"
        )
    projectors = {t: _load_projector(final_dir, p) for t, (_, p) in sorted(layers.items())}
    for t, (init_args, _) in projectors.items():
        _check_init_args(init_args, receiver_config, sharer_config, f"projector_{layers[t][1]}")
    first_args, first_state = next(iter(projectors.values()))
    default_map = build_layer_map("terminal", receiver_layers, sharer_layers)

    align = bool(model_recipe.get("is_do_alignment"))
    if align and receiver_tokenizer is None:
        receiver_tokenizer = AutoTokenizer.from_pretrained(
            receiver if isinstance(receiver, (str, Path)) else receiver_id
        )
    if align and sharer_tokenizer is None:
        sharer_tokenizer = AutoTokenizer.from_pretrained(sharer if isinstance(sharer, (str, Path)) else sharer_id)
    with torch.device("meta"):  # only the configs of the bases are needed
        meta_receiver = AutoModelForCausalLM.from_config(receiver_config)
        meta_sharer = AutoModelForCausalLM.from_config(sharer_config)
    model = C2CForCausalLM.from_base_models(
        meta_receiver,
        meta_sharer,
        receiver_tokenizer if align else None,
        sharer_tokenizer if align else None,
        token_alignment=model_recipe.get("alignment_strategy") or "longest",
        receiver_name_or_path=receiver_id,
        sharer_name_or_path=sharer_id,
        layer_map=[layers[t][0] if t in layers else default_map[t] for t in range(receiver_layers)],
        **_fuser_sizes(first_state, first_args),
    )
    with torch.no_grad():
        for t, layer in enumerate(model.fuser.layers):
            if t not in projectors:
                for tensor in layer.state_dict().values():
                    tensor.zero_()
                layer.key.gate_logit.fill_(CLOSED_GATE_LOGIT)
                layer.value.gate_logit.fill_(CLOSED_GATE_LOGIT)
                continue
            source = str(final_dir / f"projector_{layers[t][1]}.pt")
            converted = convert_state_dict(projectors[t][1], source)
            own = layer.state_dict()
            problems = [f"missing {k}" for k in own if k not in converted] + [
                f"{k}: {tuple(v.shape)} (pair needs {tuple(own[k].shape)})"
                for k, v in converted.items()
                if k not in own or v.shape != own[k].shape
            ]
            if problems:
                raise ValueError(
                    f"{source} does not fit receiver layer {t} of this pair (receiver KV "
                    f"{kv_shape(receiver_config)[1:]}, "
                    f"sharer KV {kv_shape(sharer_config)[1:]}, fuser hidden {model.config.fuser_hidden_size}, "
                    f"{model.config.fuser_num_blocks} blocks; tensors named as in c2c_hf): {problems[:5]}."
                )
            layer.load_state_dict(converted)
    model.eval()

    model.save_pretrained(dest_dir)
    training = _training_summary(recipe, src_dir, first_args)
    atomic_write_text(dest_dir / TRAINING_FILE, json.dumps(training, indent=2) + "\n")
    write_model_card(model, dest_dir, training)
    return model


def _training_summary(recipe: dict[str, Any], src_dir: Path, init_args: dict[str, Any]) -> dict[str, Any]:
    """What the card says about training, from their recipe (scalar entries of its `training` section)."""
    data = recipe.get("data", {})
    data_kwargs = ", ".join(f"{k}={v}" for k, v in data.get("kwargs", {}).items() if v is not None)
    summary: dict[str, Any] = {
        "origin": f"authors' release (thu-nics/C2C), folder {src_dir.name}, converted by `c2c-hf import-rosetta`",
        "data": f"{data['type']} ({data_kwargs})" if "type" in data else None,
    }
    if "anneal_steps" in init_args:
        summary["gate temperature annealing steps"] = init_args["anneal_steps"]
    summary.update(
        {k: v for k, v in recipe.get("training", {}).items() if isinstance(v, (int, float, str)) and k != "device"}
    )
    return summary


def build_parser() -> argparse.ArgumentParser:
    """The `c2c-hf import-rosetta` arguments (each long flag also parses with underscores)."""
    parser = argparse.ArgumentParser(prog="c2c-hf import-rosetta", description=main.__doc__)
    parser.add_argument("src", help="a pair folder of nics-efc/C2C_Fuser (config.json + final/)")
    parser.add_argument("dest", help="output folder for the c2c_hf checkpoint")
    parser.add_argument("--receiver", help="id or path to read the receiver's config (and tokenizer) from")
    parser.add_argument("--sharer", help="id or path to read the sharer's config (and tokenizer) from")
    parser.add_argument("--receiver-id", help="id the checkpoint loads the receiver from (default: their base_model)")
    parser.add_argument("--sharer-id", help="id the checkpoint loads the sharer from (default: their teacher_model)")
    return accept_both_spellings(parser)


def main(argv: list[str] | None = None) -> None:
    """`c2c-hf import-rosetta SRC DEST`: convert an authors' C2C fuser folder into a c2c_hf checkpoint."""
    args = build_parser().parse_args(argv)
    model = import_rosetta(args.src, args.dest, args.receiver, args.sharer, args.receiver_id, args.sharer_id)
    open_gates = model.fuser.open_gates().sum(0).tolist()
    print(
        f"Imported {args.src} -> {args.dest}: receiver {model.config.receiver_name_or_path}, sharer "
        f"{model.config.sharer_name_or_path}, {len(model.fuser.layers)} layers, "
        f"open gates K {open_gates[0]} V {open_gates[1]}"
    )


__all__ = ["build_parser", "convert_state_dict", "import_rosetta", "main", "read_layer_map"]
