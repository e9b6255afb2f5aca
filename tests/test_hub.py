"""Hub integration, offline: C2C and base repos resolved by id from a laid-out Hub cache, model cards, uploads."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import FUSER_KWARGS
from huggingface_hub import HfApi, ModelCard, constants
from safetensors import safe_open
from tiny_models import build, receiver_config, sharer_configs, word_tokenizer
from transformers import AutoModelForCausalLM

from c2c_hf import C2CForCausalLM, hub
from c2c_hf.commands import push

IDS = torch.tensor([[5, 17, 42, 8, 77, 23, 61, 9, 30, 12], [44, 3, 90, 15, 7, 66, 21, 50, 11, 38]])
MODEL_FILES = [
    "README.md", "alignment.py", "atomic.py", "cache.py", "config.json", "configuration_c2c.py", "fuser.py",
    "generation_config.json", "lm_eval_guard.py", "loading.py", "lora.py", "model.safetensors", "modeling_c2c.py", "validation.py",
]  # fmt: skip
RESULTS_MD = "# C2C evaluation\n\n| method | arc |\n|---|---|\n| c2c | 52.6 [49.0, 56.1] · 0.300 s (n=500) |\n"


def add_to_cache(cache: Path, repo_id: str, folder: Path, revision: str = "main") -> None:
    """Lay `folder` out as the snapshot of `repo_id` at `revision` in a Hub cache, as a download would."""
    sha = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / sha)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(sha)


def c2c_model(receiver, sharer, seed: int) -> C2CForCausalLM:
    """A C2C model whose fuser visibly changes logits, naming its bases by Hub id."""
    torch.manual_seed(seed)
    model = C2CForCausalLM.from_base_models(
        receiver, sharer, receiver_name_or_path="tiny-org/receiver", receiver_revision="v1",
        sharer_name_or_path="tiny-org/sharer", **FUSER_KWARGS,
    ).eval()  # fmt: skip
    with torch.no_grad():
        for layer in model.fuser.layers:
            for branch in (layer.key, layer.value):
                branch.out_proj.weight.normal_(std=0.5)
        model.fuser.layers[1].value.gate_logit.fill_(-2.0)  # one closed gate, for the card
    return model


@pytest.fixture(scope="module")
def hub_repos(tmp_path_factory):
    """A Hub cache with tiny-org/{receiver (main, v1), sharer, c2c (main, v2), c2c-orphan}; reference logits."""
    root = tmp_path_factory.mktemp("hub")
    cache, staging = root / "cache", root / "staging"
    receiver_main, receiver_v1 = build(receiver_config(), seed=0), build(receiver_config(), seed=10)
    sharer = build(sharer_configs()["qwen2"], seed=1)
    receiver_main.save_pretrained(staging / "receiver-main")
    word_tokenizer(["which", "planet", "is", "red", "?"]).save_pretrained(staging / "receiver-main")
    receiver_v1.save_pretrained(staging / "receiver-v1")
    sharer.save_pretrained(staging / "sharer")
    add_to_cache(cache, "tiny-org/receiver", staging / "receiver-main")
    add_to_cache(cache, "tiny-org/receiver", staging / "receiver-v1", revision="v1")
    add_to_cache(cache, "tiny-org/sharer", staging / "sharer")

    references = {}
    for revision, seed in (("main", 0), ("v2", 1)):
        model = c2c_model(receiver_v1, sharer, seed)
        with torch.no_grad():
            references[revision] = model(IDS).logits
        model.save_pretrained(staging / f"c2c-{revision}")
        hub.write_model_card(
            model, staging / f"c2c-{revision}", {"data": "tiny-chat", "steps": 3}, repo_id="tiny-org/c2c"
        )
        add_to_cache(cache, "tiny-org/c2c", staging / f"c2c-{revision}", revision=revision)
    model.config.sharer_name_or_path = "tiny-org/missing-sharer"
    model.save_pretrained(staging / "c2c-orphan")
    add_to_cache(cache, "tiny-org/c2c-orphan", staging / "c2c-orphan")
    torch.save(references["main"], root / "reference.pt")
    return SimpleNamespace(root=root, cache=cache, references=references)


@pytest.fixture
def offline_cache(hub_repos, monkeypatch):
    """Point huggingface_hub's default cache at the laid-out one, offline (both read these at call time)."""
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_repos.cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return hub_repos


# --------------------------------------------------------------------------- download


def test_load_by_id_resolves_the_c2c_repo_and_both_bases(offline_cache):
    loaded = AutoModelForCausalLM.from_pretrained("tiny-org/c2c")
    assert isinstance(loaded, C2CForCausalLM)
    with torch.no_grad():
        assert torch.equal(loaded(IDS).logits, offline_cache.references["main"])  # receiver at its config revision v1


def test_revision_selects_the_c2c_snapshot(offline_cache):
    loaded = AutoModelForCausalLM.from_pretrained("tiny-org/c2c", revision="v2")
    with torch.no_grad():
        assert torch.equal(loaded(IDS).logits, offline_cache.references["v2"])
    with pytest.raises(OSError):
        AutoModelForCausalLM.from_pretrained("tiny-org/c2c", revision="no-such-branch")


def test_missing_base_repo_is_named(offline_cache):
    with pytest.raises(OSError, match="Could not load the C2C sharer 'tiny-org/missing-sharer'"):
        AutoModelForCausalLM.from_pretrained("tiny-org/c2c-orphan")


def test_explicit_cache_dir_reaches_the_c2c_weights_and_the_bases(hub_repos, tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-default-cache"))
    loaded = AutoModelForCausalLM.from_pretrained("tiny-org/c2c", cache_dir=hub_repos.cache, local_files_only=True)
    with torch.no_grad():
        assert torch.equal(loaded(IDS).logits, hub_repos.references["main"])


def test_card_snippet_runs_as_written_with_the_hub_env_offline(hub_repos):
    """The card's usage snippet, verbatim, in a fresh process that only has HF_HUB_CACHE and HF_HUB_OFFLINE."""
    snapshot = next((hub_repos.cache / "models--tiny-org--c2c" / "snapshots").iterdir())
    card = ModelCard.load(snapshot / "README.md")
    snippet = re.search(r"```python\n(.*?)```", card.text, re.DOTALL).group(1)
    check = f"""
from huggingface_hub import constants
assert constants.HF_HUB_OFFLINE
import torch
with torch.no_grad():
    logits = model(torch.tensor({IDS.tolist()})).logits
assert torch.equal(logits, torch.load({str(hub_repos.root / "reference.pt")!r}, weights_only=True))
print("snippet-ok", output.shape[0])
"""
    env = {**os.environ, "HF_HUB_CACHE": str(hub_repos.cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", snippet + check],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=hub_repos.root,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "snippet-ok 1" in result.stdout


def test_remote_code_by_id_without_c2c_hf(hub_repos):
    """`trust_remote_code=True` takes the model code from the C2C snapshot; the bases still resolve by id."""
    script = f"""
import sys, torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained("tiny-org/c2c", trust_remote_code=True)
assert "c2c_hf" not in sys.modules and type(model).__module__.startswith("transformers_modules")
with torch.no_grad():
    logits = model(torch.tensor({IDS.tolist()})).logits
assert torch.equal(logits, torch.load({str(hub_repos.root / "reference.pt")!r}, weights_only=True))
print("remote-ok")
"""
    env = {**os.environ, "HF_HUB_CACHE": str(hub_repos.cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env, cwd=hub_repos.root
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "remote-ok" in result.stdout


# --------------------------------------------------------------------------- model cards


def test_model_card_round_trips_with_pair_layers_gates_and_results(make_c2c, tmp_path):
    model = make_c2c("llama", receiver_name_or_path="Qwen/Qwen3-0.6B", sharer_name_or_path=str(tmp_path / "sharer"))
    model.fuser.layers[2].key.gate_logit.data.fill_(-0.5)
    (tmp_path / "results.md").write_text(RESULTS_MD)
    hub.write_model_card(
        model, tmp_path, {"data": "teknium/OpenHermes-2.5", "steps": 1929, "lr": 1e-4}, repo_id="org/c2c"
    )

    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.base_model == ["Qwen/Qwen3-0.6B"]  # a local path is no Hub base model
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    assert card.data.tags == ["c2c", "cache-to-cache", "kv-cache-fusion"]
    text = card.text
    assert "| receiver | `Qwen/Qwen3-0.6B` | main | 4 | 2 | 16 | 32 |" in text
    assert f"| sharer | `{tmp_path / 'sharer'}` | main | 6 | 3 | 32 | 96 |" in text
    assert "open: K 3/4, V 4/4" in text
    assert "| 0 | 2 | +1.000 | yes | +1.000 | yes |" in text  # terminal map: receiver 0 <- sharer 6 - 4 + 0
    assert "| 2 | 4 | -0.500 | no | +1.000 | yes |" in text
    assert "- Data: teknium/OpenHermes-2.5\n- Steps: 1929\n- lr: 0.0001" in text
    assert "## Evaluation\n\n### C2C evaluation" in text and "| c2c | 52.6 [49.0, 56.1]" in text
    assert "share a tokenizer" in text and "LoRA" not in text
    assert 'AutoModelForCausalLM.from_pretrained("org/c2c", dtype="auto")' in text
    assert 'AutoTokenizer.from_pretrained("Qwen/Qwen3-0.6B")' in text  # no tokenizer in the checkpoint


def test_model_card_defaults_and_token_alignment(receiver, sharers, tmp_path):
    model = C2CForCausalLM.from_base_models(
        receiver, sharers["qwen2"], word_tokenizer(["red", "planet"]), word_tokenizer(["planet", "red", "mars"]),
        **FUSER_KWARGS,
    )  # fmt: skip
    word_tokenizer(["red", "planet"]).save_pretrained(tmp_path)
    card = hub.write_model_card(model, tmp_path)
    assert ModelCard.load(tmp_path / "README.md").data.base_model is None  # bases built in memory: no ids
    assert "- Data: unknown\n- Steps: unknown" in card.text and "## Evaluation" not in card.text
    coverage = model.config.token_alignment_coverage
    assert "Strategy `longest`: every receiver token maps to one sharer token" in card.text
    assert f"{coverage:.1%} of the receiver vocabulary maps one-to-one" in card.text
    assert f'AutoTokenizer.from_pretrained("{tmp_path}")' in card.text  # the checkpoint's own tokenizer
    span = C2CForCausalLM.from_base_models(
        receiver, sharers["qwen2"], word_tokenizer(["red", "planet"]), word_tokenizer(["planet", "red", "mars"]),
        token_alignment="span", **FUSER_KWARGS,
    )  # fmt: skip
    span_card = hub.write_model_card(span, tmp_path / "span")
    assert "Span: the sharer reads the prompt's text in its own tokenization" in span_card.text
    assert "maps one-to-one" not in span_card.text


# --------------------------------------------------------------------------- uploads


@pytest.fixture
def fake_hub(monkeypatch):
    """Patch the HfApi calls an upload makes; record each commit's files (read while they exist)."""
    calls = SimpleNamespace(commits=[], branches=[], repos=[])

    def create_repo(self, repo_id, **kwargs):
        calls.repos.append((repo_id, kwargs))
        return SimpleNamespace(repo_id=repo_id)

    def create_branch(self, repo_id, *, branch, **kwargs):
        calls.branches.append((repo_id, branch))

    def create_commit(self, repo_id, operations, **kwargs):
        files = {op.path_in_repo: Path(op.path_or_fileobj).read_bytes() for op in operations}
        calls.commits.append(SimpleNamespace(repo_id=repo_id, files=files, **kwargs))
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/0123abc")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_branch", create_branch)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    return calls


def safetensors_keys(data: bytes, tmp_path: Path) -> set[str]:
    path = tmp_path / "uploaded.safetensors"
    path.write_bytes(data)
    with safe_open(path, "pt") as weights:
        return set(weights.keys())


def test_push_uploads_fuser_config_code_and_card_only(make_c2c, fake_hub, tmp_path):
    model = make_c2c("qwen2", receiver_name_or_path="tiny-org/receiver", sharer_name_or_path="tiny-org/sharer")
    hub.push_to_hub(
        model,
        "org/c2c",
        training={"data": "tiny-chat", "steps": 7},
        revision="dev",
        private=True,
        tags=["qwen3", "c2c"],
    )

    assert fake_hub.repos == [("org/c2c", {"private": True, "exist_ok": True})]
    assert fake_hub.branches == [("org/c2c", "dev")]
    (commit,) = fake_hub.commits
    assert commit.repo_id == "org/c2c" and commit.revision == "dev" and commit.commit_message == "Upload C2C fuser"
    assert sorted(commit.files) == MODEL_FILES
    assert safetensors_keys(commit.files["model.safetensors"], tmp_path) == {
        f"fuser.{name}" for name, _ in model.fuser.named_parameters()
    }  # no base weights
    card = ModelCard(commit.files["README.md"].decode())
    assert card.data.base_model == ["tiny-org/receiver", "tiny-org/sharer"]
    assert card.data.tags == ["c2c", "cache-to-cache", "kv-cache-fusion", "qwen3"]
    assert 'from_pretrained("org/c2c", dtype="auto")' in card.text and "- Steps: 7" in card.text


def test_push_command_needs_no_bases_and_keeps_tokenizer_and_results(make_c2c, fake_hub, tmp_path, capsys):
    model = make_c2c("gemma3", receiver_name_or_path="tiny-org/receiver", sharer_name_or_path="tiny-org/absent-sharer")
    model.save_pretrained(tmp_path / "ckpt")
    word_tokenizer(["red", "planet"]).save_pretrained(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "results.md").write_text(RESULTS_MD)
    (tmp_path / "ckpt" / "training_args.bin").write_bytes(b"not uploaded")

    push.main([str(tmp_path / "ckpt"), "org/c2c", "--training-data", "tiny-chat", "--training-steps", "12"])

    (commit,) = fake_hub.commits
    uploaded = set(commit.files)
    assert set(MODEL_FILES) <= uploaded and "tokenizer_config.json" in uploaded
    assert not uploaded & {"results.md", "training_args.bin"}
    assert all(
        name.startswith(("tokenizer", "special_tokens", "chat_template")) for name in uploaded - set(MODEL_FILES)
    )
    assert commit.files["model.safetensors"] == (tmp_path / "ckpt" / "model.safetensors").read_bytes()
    card = ModelCard(commit.files["README.md"].decode())
    assert "| c2c | 52.6 [49.0, 56.1]" in card.text and "- Data: tiny-chat\n- Steps: 12" in card.text
    assert 'AutoTokenizer.from_pretrained("org/c2c")' in card.text
    assert "Pushed" in capsys.readouterr().out


def test_push_command_keeps_a_receiver_lora(fake_hub, tmp_path):
    build(receiver_config(), seed=0).save_pretrained(tmp_path / "receiver")
    receiver = AutoModelForCausalLM.from_pretrained(tmp_path / "receiver")
    model = C2CForCausalLM.from_base_models(receiver, build(sharer_configs()["qwen2"], seed=1), **FUSER_KWARGS)
    model.config.sharer_name_or_path = "tiny-org/absent-sharer"  # the sharer stays on the meta device
    model.add_receiver_lora(r=2)
    with torch.no_grad():
        for name, parameter in model.receiver.named_parameters():
            if ".lora_B" in name:
                parameter.normal_()
    model.save_pretrained(tmp_path / "ckpt")

    with pytest.raises(ValueError, match=r"refuses this C2C model: the receiver '.*receiver' is a local path"):
        push.main([str(tmp_path / "ckpt"), "org/c2c-lora"])
    assert fake_hub.commits == [] and fake_hub.repos == []
    with pytest.warns(UserWarning, match="bases are not on the Hub: the receiver '.*receiver' is a local path"):
        push.main([str(tmp_path / "ckpt"), "org/c2c-lora", "--allow-local-bases"])

    (commit,) = fake_hub.commits
    assert commit.files["model.safetensors"] == (tmp_path / "ckpt" / "model.safetensors").read_bytes()
    assert any(".lora_B" in key for key in safetensors_keys(commit.files["model.safetensors"], tmp_path))
    card_text = " ".join(ModelCard(commit.files["README.md"].decode()).text.split())
    assert "LoRA adapter on the receiver (rank 2, alpha 16, on q_proj, k_proj, v_proj, o_proj)" in card_text


def test_push_refuses_local_bases_unless_allowed(make_c2c, fake_hub, tmp_path):
    model = make_c2c("qwen2", receiver_name_or_path=str(tmp_path / "receiver"), sharer_name_or_path="tiny-org/sharer")
    (tmp_path / "receiver").mkdir()
    with pytest.raises(ValueError) as error:
        hub.push_to_hub(model, "org/c2c")
    message = str(error.value)
    assert f"the receiver '{tmp_path / 'receiver'}' is a local path" in message and "sharer" not in message.split(":")[1]
    assert "model.config.receiver_name_or_path = 'org/name'" in message and "allow_local_bases=True" in message
    with pytest.raises(ValueError, match="push_to_hub refuses this C2C model"):
        model.push_to_hub("org/c2c")  # the model's method: the same check
    assert fake_hub.repos == [] and fake_hub.commits == []

    with pytest.warns(UserWarning, match=r"not on the Hub: the receiver '.*' is a local path.*pass `receiver=`"):
        model.push_to_hub("org/c2c", allow_local_bases=True)
    uploaded_config = json.loads(fake_hub.commits[0].files["config.json"])
    assert uploaded_config["receiver_name_or_path"] == str(tmp_path / "receiver")  # as it is: no relative guess
    with pytest.warns(UserWarning, match="not on the Hub"):
        model.save_pretrained(tmp_path / "saved", push_to_hub=True, repo_id="org/c2c-saved", allow_local_bases=True)
    assert [commit.repo_id for commit in fake_hub.commits] == ["org/c2c", "org/c2c-saved"]


@pytest.mark.parametrize("auto_class", [AutoModelForCausalLM, C2CForCausalLM])
def test_loading_options_reach_the_bases_from_the_hub(offline_cache, auto_class):
    loaded = auto_class.from_pretrained(
        "tiny-org/c2c", receiver_revision="main", attn_implementation="eager", local_files_only=True
    )
    main = build(receiver_config(), seed=0)  # what tiny-org/receiver holds at main (the config names v1)
    assert loaded.config.receiver_revision == "main"
    assert all(torch.equal(a, b) for a, b in zip(loaded.receiver.state_dict().values(), main.state_dict().values()))
    assert loaded.receiver.config._attn_implementation == loaded.sharer.config._attn_implementation == "eager"
