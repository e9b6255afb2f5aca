"""Import of the authors' released fusers: their folder layout, written here with random tensors, converted and
checked against an independent implementation of their C2CProjector formulas."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from tiny_models import build, receiver_config, sharer_configs, word_tokenizer
from transformers import AutoModelForCausalLM

from c2c_hf import C2CForCausalLM
from c2c_hf.commands import push
from c2c_hf.integrations import rosetta

HIDDEN, INTERMEDIATE, NUM_LAYERS = 32, 48, 4  # their hidden_dim, intermediate_dim, num_layers (2 projection blocks)
LAYER_MAP = {0: 2, 1: 0, 2: 1, 3: 2}  # receiver layer -> sharer layer (explicit, not the terminal map)
PROJECTOR_OF = {t: 3 - t for t in LAYER_MAP}  # projector files in another order than the receiver layers
GATES = {0: (1.5, 0.7), 1: (-0.3, 2.0), 2: (0.4, -1.0), 3: (0.9, 0.2)}  # (key, value) gate logits
RECIPE = {
    "model": {
        "base_model": "Qwen/Qwen3-0.6B", "teacher_model": "Qwen/Qwen2.5-0.5B-Instruct", "is_do_alignment": False,
        "projector": {"type": "C2CProjector", "params": {"hidden_dim": HIDDEN, "num_layers": NUM_LAYERS}},
        "mapping": "last_aligned",
    },
    "training": {"learning_rate": 1e-4, "num_epochs": 1, "max_length": 2048, "device": "cuda", "freeze": ["teacher"]},
    "data": {"type": "OpenHermesChatDataset", "kwargs": {"split": "train", "num_samples": 500000}},
}  # fmt: skip


def their_state_dict(kv_in: int, kv_out: int, heads_out: int, gates: tuple[float, float], seed: int) -> dict:
    """A C2CProjector state dict (their parameter names and shapes) with random values."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape, std=0.3, mean=0.0):
        return torch.randn(*shape, generator=generator) * std + mean

    state = {}
    for branch, gate in zip(("key", "value"), gates, strict=True):
        blocks = {"mlp1": [INTERMEDIATE], "scalar_mlp2": [HIDDEN], "proj_mlp2": [INTERMEDIATE] * (NUM_LAYERS - 2)}
        state[f"{branch}_in.weight"], state[f"{branch}_in.bias"] = rand(HIDDEN, kv_in + kv_out), rand(HIDDEN)
        for name, inner_sizes in blocks.items():
            for j, inner in enumerate(inner_sizes):
                prefix = f"{branch}_{name}.blocks.{j}"
                state[f"{prefix}.norm.weight"] = rand(HIDDEN, std=0.1, mean=1.0)
                state[f"{prefix}.w1.weight"], state[f"{prefix}.w2.weight"] = rand(inner, HIDDEN), rand(HIDDEN, inner)
        state[f"{branch}_scalar_head.weight"], state[f"{branch}_scalar_head.bias"] = (
            rand(heads_out, HIDDEN),
            rand(heads_out),
        )
        state[f"{branch}_proj_out.weight"], state[f"{branch}_proj_out.bias"] = rand(kv_out, HIDDEN), rand(kv_out)
        state[f"{branch}_gate_logit"] = torch.tensor(gate)
    state["gate_temperature"] = torch.tensor(0.001)
    return state


def write_release(folder: Path, layer_map=LAYER_MAP, projector_of=PROJECTOR_OF, recipe=RECIPE) -> Path:
    """A pair folder in the authors' layout: config.json, final/projector_{i}.{pt,json}, final/projector_config.json."""
    final = folder / "final"
    final.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(recipe))
    _, sharer_heads, sharer_dim = 3, 1, 12  # tiny qwen2 sharer KV
    _, receiver_heads, receiver_dim = 4, 2, 16  # tiny qwen3 receiver KV
    for t, index in projector_of.items():
        state = their_state_dict(
            sharer_heads * sharer_dim, receiver_heads * receiver_dim, receiver_heads, GATES[t], seed=t
        )
        torch.save(state, final / f"projector_{index}.pt")
        init_args = dict(
            source_dim=sharer_dim, target_dim=receiver_dim, source_num_heads=sharer_heads,
            target_num_heads=receiver_heads, intermediate_dim=INTERMEDIATE, hidden_dim=HIDDEN, num_layers=NUM_LAYERS,
            dropout=0.1, initial_temperature=1.0, final_temperature=0.001, anneal_steps=1929,
            dtype={"__type__": "torch.dtype", "value": "float32"},
        )  # fmt: skip
        (final / f"projector_{index}.json").write_text(json.dumps({"class": "C2CProjector", "init_args": init_args}))
    mapping = {"0": {"1": {str(t): [[s, projector_of[t]]] for t, s in layer_map.items()}}}
    (final / "projector_config.json").write_text(json.dumps(mapping))
    return folder


# ---- an independent implementation of their C2CProjector forward (eval mode), from their formulas


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def ffn_block(x: torch.Tensor, state: dict, prefix: str) -> torch.Tensor:
    """Their StandardFFNLayer: x + W2(GELU(W1(RMSNorm(x)))), bias-free."""
    h = rms_norm(x, state[f"{prefix}.norm.weight"])
    return x + gelu(h @ state[f"{prefix}.w1.weight"].T) @ state[f"{prefix}.w2.weight"].T


def their_projector(state: dict, source: torch.Tensor, target: torch.Tensor, branch: str) -> torch.Tensor:
    """target + (logit > 0) * sigmoid(scalar_head(scalar_mlp2(h))) * proj_out(proj_mlp2(h)), h = mlp1(in([s, t]))."""
    batch, target_heads, length, target_dim = target.shape
    flat = lambda x: x.transpose(1, 2).reshape(batch, length, -1)  # noqa: E731 (a one-line helper)
    h = torch.cat([flat(source), flat(target)], -1) @ state[f"{branch}_in.weight"].T + state[f"{branch}_in.bias"]
    h = ffn_block(h, state, f"{branch}_mlp1.blocks.0")
    projected = h
    for j in range(NUM_LAYERS - 2):
        projected = ffn_block(projected, state, f"{branch}_proj_mlp2.blocks.{j}")
    projected = projected @ state[f"{branch}_proj_out.weight"].T + state[f"{branch}_proj_out.bias"]
    projected = projected.view(batch, length, target_heads, target_dim).transpose(1, 2)
    scalar = ffn_block(h, state, f"{branch}_scalar_mlp2.blocks.0") @ state[f"{branch}_scalar_head.weight"].T
    scalar = (scalar + state[f"{branch}_scalar_head.bias"]).permute(0, 2, 1).unsqueeze(-1)
    gate = (state[f"{branch}_gate_logit"] > 0).float()
    return target + gate * torch.sigmoid(scalar) * projected


# ---- tests


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("rosetta")
    src = write_release(root / "qwen3_0.6b+qwen2.5_0.5b_Fuser")
    rosetta.import_rosetta(src, root / "c2c", receiver=receiver_config(), sharer=sharer_configs()["qwen2"])
    return root, src


def test_imported_fuser_computes_their_function(imported):
    root, src = imported
    model = push.load_fuser_only(root / "c2c").eval()  # the saved checkpoint, bases on the meta device
    config = model.config
    assert (config.fuser_hidden_size, config.fuser_intermediate_size, config.fuser_num_blocks) == (32, 48, 4)
    assert config.resolved_layer_map() == [LAYER_MAP[t] for t in range(4)]
    torch.testing.assert_close(model.fuser.gate_logits(), torch.tensor([GATES[t] for t in range(4)]))
    assert (config.receiver_name_or_path, config.sharer_name_or_path) == (
        "Qwen/Qwen3-0.6B",
        "Qwen/Qwen2.5-0.5B-Instruct",
    )
    generator = torch.Generator().manual_seed(0)
    for t in range(4):
        state = torch.load(src / "final" / f"projector_{PROJECTOR_OF[t]}.pt", weights_only=True)
        sk, sv = (torch.randn(2, 1, 5, 12, generator=generator) for _ in range(2))
        rk, rv = (torch.randn(2, 2, 5, 16, generator=generator) for _ in range(2))
        with torch.no_grad():
            keys, values = model.fuser.layers[t](sk, sv, rk, rv, model.fuser.gate_temperature)
        torch.testing.assert_close(keys, their_projector(state, sk, rk, "key"), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(values, their_projector(state, sv, rv, "value"), rtol=1e-5, atol=1e-5)
        for fused, receiver_kv, logit in ((keys, rk, GATES[t][0]), (values, rv, GATES[t][1])):
            assert torch.equal(fused, receiver_kv) == (logit <= 0)  # closed gate: the receiver's KV exactly


def test_imported_checkpoint_card_and_training_facts(imported):
    root, _ = imported
    card = ModelCard.load(root / "c2c" / "README.md")
    assert card.data.base_model == ["Qwen/Qwen3-0.6B", "Qwen/Qwen2.5-0.5B-Instruct"]
    assert "- Data: OpenHermesChatDataset (split=train, num_samples=500000)" in card.text
    assert "- gate temperature annealing steps: 1929" in card.text and "- learning_rate: 0.0001" in card.text
    assert "| 1 | 0 | -0.300 | no | +2.000 | yes |" in card.text
    assert json.loads((root / "c2c" / "training.json").read_text())["max_length"] == 2048


def test_cli_import_then_load_with_real_bases(tmp_path, capsys):
    build(receiver_config(), seed=0).save_pretrained(tmp_path / "receiver")
    build(sharer_configs()["qwen2"], seed=1).save_pretrained(tmp_path / "sharer")
    src = write_release(tmp_path / "pair", layer_map={1: 0, 2: 1, 3: 2}, projector_of={1: 0, 2: 1, 3: 2})
    receiver, sharer = str(tmp_path / "receiver"), str(tmp_path / "sharer")
    rosetta.main([str(src), str(tmp_path / "c2c"), "--receiver", receiver, "--sharer", sharer,
                  "--receiver-id", receiver, "--sharer-id", sharer])  # fmt: skip
    assert "open gates K 2 V 2" in capsys.readouterr().out  # layer 0 has no projector: both its gates closed
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "c2c")
    assert isinstance(model, C2CForCausalLM) and model.config.resolved_layer_map()[1:] == [0, 1, 2]
    assert model.fuser.gate_logits()[0].tolist() == [rosetta.CLOSED_GATE_LOGIT] * 2
    ids = torch.tensor([[5, 17, 42, 8, 77, 23]])
    with torch.no_grad():
        fused = model(ids).logits[:, -1]
        alone = model.receiver(ids).logits[:, -1]
        assert not torch.allclose(fused, alone) and model.generate(ids, max_new_tokens=2).shape == (1, 8)


def test_token_alignment_recipe_builds_a_token_map(tmp_path):
    recipe = {**RECIPE, "model": {**RECIPE["model"], "is_do_alignment": True, "alignment_strategy": "first"}}
    src = write_release(tmp_path / "pair", recipe=recipe)
    model = rosetta.import_rosetta(
        src, tmp_path / "c2c", receiver_config(), sharer_configs()["qwen2"], "tiny-org/receiver", "tiny-org/sharer",
        receiver_tokenizer=word_tokenizer(["red", "planet"]), sharer_tokenizer=word_tokenizer(["planet", "red"]),
    )  # fmt: skip
    assert model.config.token_alignment == "first" and hasattr(model.fuser, "token_map")
    assert model.config.receiver_name_or_path == "tiny-org/receiver"


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "case, match",
    [
        ("other_class", r"projector class 'AllInOneProjector' is not supported"),
        ("wrong_sharer", r"built for other KV shapes .*source_num_heads=1 \(pair: 3\)"),
        ("wrong_sharer_no_init_args",
         r"projector_3.pt does not fit receiver layer 0 .*key.in_proj.weight: \(32, 44\) \(pair needs \(32, 128\)\)"),
        ("other_hidden_size", r"projector_1.pt does not fit receiver layer 2 .*fuser hidden 32"),
        ("two_sharers", r"only one sharer \(model 1\) fused into one receiver"),
        ("two_sources_per_layer", r"receiver layer 0 takes 2 \(sharer layer, projector\) pairs"),
        ("layer_outside_pair", r"maps receiver layer -> sharer layer \{0: 7\}, outside this pair"),
        ("empty_map", r"maps no receiver layer to a sharer layer"),
        ("foreign_tensor", r"unexpected tensor 'key_combiner.weight'"),
        ("not_a_release", r"holds no projector_config.json"),
    ],
)  # fmt: skip
def test_unsupported_or_inconsistent_release_fails_clearly(tmp_path, case, match):
    src = write_release(tmp_path / "pair")
    final, sharer = src / "final", sharer_configs()["qwen2"]
    if case == "other_class":
        edit_json(final / "projector_2.json", lambda d: d.update({"class": "AllInOneProjector"}))
    elif case.startswith("wrong_sharer"):
        sharer = sharer_configs()["llama"]  # 3 KV heads x 32 instead of 1 x 12
        if case == "wrong_sharer_no_init_args":
            for index in range(4):
                edit_json(final / f"projector_{index}.json", lambda d: d.update({"init_args": {}}))
    elif case == "other_hidden_size":
        state = torch.load(final / "projector_1.pt", weights_only=True)
        state["key_in.weight"] = state["key_in.weight"][:24]
        torch.save(state, final / "projector_1.pt")
    elif case == "two_sharers":
        edit_json(final / "projector_config.json", lambda d: d["0"].update({"2": {"0": [[0, 0]]}}))
    elif case == "two_sources_per_layer":
        edit_json(final / "projector_config.json", lambda d: d["0"]["1"].update({"0": [[2, 3], [1, 3]]}))
    elif case == "layer_outside_pair":
        edit_json(final / "projector_config.json", lambda d: d["0"]["1"].update({"0": [[7, 3]]}))
    elif case == "empty_map":
        edit_json(final / "projector_config.json", lambda d: d["0"].update({"1": {}}))
    elif case == "foreign_tensor":
        state = torch.load(final / "projector_0.pt", weights_only=True)
        torch.save({**state, "key_combiner.weight": torch.zeros(2, 2)}, final / "projector_0.pt")
    elif case == "not_a_release":
        src = tmp_path
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        rosetta.import_rosetta(src, tmp_path / "out", receiver_config(), sharer)
