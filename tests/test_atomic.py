"""Nothing lost: atomic saves (files, model folders, demo outputs), fault injection (a save failing half-way, a
training run killed with SIGKILL while writing a checkpoint) and a resume that skips incomplete checkpoints."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import HfApi
from safetensors.torch import load_file, save_file
from tiny_models import build, receiver_config, sharer_configs, word_tokenizer
from transformers import TrainingArguments, modeling_utils

from c2c_hf import C2CForCausalLM, atomic
from c2c_hf.atomic import atomic_file, atomic_folder, atomic_write_text, remove_leftovers
from c2c_hf.commands.train import main as train_main
from c2c_hf.data import C2CDataCollator
from c2c_hf.training import check_checkpoint_complete, last_complete_checkpoint, make_trainer

IDS = torch.tensor([[5, 17, 42, 8, 77, 23, 61, 9], [44, 3, 90, 15, 7, 66, 21, 50]])


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`: relative path -> content."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(parent: Path) -> list[str]:
    """Temporary or moved-aside siblings that a save left in `parent`."""
    return sorted(name for name in os.listdir(parent) if ".c2c-tmp-" in name or ".c2c-old-" in name)


def logits(model: C2CForCausalLM) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


def reload(model: C2CForCausalLM, folder: Path) -> C2CForCausalLM:
    return C2CForCausalLM.from_pretrained(folder, receiver=model.receiver, sharer=model.sharer).eval()


def shift_fuser(model: C2CForCausalLM) -> None:
    with torch.no_grad():
        for parameter in model.fuser.parameters():
            parameter.add_(0.5)


# --------------------------------------------------------------------------- model folders


def fill_the_disk(state_dict, filename, metadata=None):
    """safetensors' writer on a full disk: part of the file written, then ENOSPC."""
    Path(filename).write_bytes(b"\0" * 64)
    raise OSError(errno.ENOSPC, "No space left on device", filename)


def fail_rename(*args):
    raise OSError(errno.EIO, "Input/output error")


FAILURES = {
    "weights": (modeling_utils, "safe_save_file", fill_the_disk),  # while the weights are written
    "card": (os, "replace", fail_rename),  # the card's rename, after the old folder's files were carried over
    "swap": (atomic, "exchange_paths", fail_rename),  # the last step: the new folder taking the old one's place
}


@pytest.mark.parametrize("failure", FAILURES)
def test_a_save_failing_half_way_leaves_the_earlier_checkpoint_loadable_and_equal(
    make_c2c, tmp_path, monkeypatch, failure
):
    model = make_c2c("qwen2")
    folder = tmp_path / "c2c"
    model.save_pretrained(folder)
    (folder / "notes.txt").write_text("mine")
    before, expected = snapshot(folder), logits(model)
    shift_fuser(model)
    with monkeypatch.context() as patch:
        patch.setattr(*FAILURES[failure])
        with pytest.raises(OSError):
            model.save_pretrained(folder)
    assert snapshot(folder) == before  # not one byte changed
    assert os.listdir(tmp_path) == ["c2c"]  # no temporary files
    assert torch.equal(logits(reload(model, folder)), expected)


def test_a_resave_replaces_the_fuser_keeps_other_files_and_drops_stale_shards(make_c2c, tmp_path):
    model = make_c2c("qwen2")
    folder = tmp_path / "c2c"
    model.save_pretrained(folder, max_shard_size="20KB")
    assert (folder / "model.safetensors.index.json").is_file()
    word_tokenizer(["yes", "no"]).save_pretrained(folder)  # a tokenizer saved beside it
    (folder / "runs").mkdir()
    (folder / "runs" / "log.txt").write_text("the user's")
    (folder / "log-link").symlink_to("runs/log.txt")
    kept = {name: data for name, data in snapshot(folder).items() if name.startswith(("tokenizer", "runs/"))}
    shift_fuser(model)
    model.save_pretrained(folder)
    files = snapshot(folder)
    assert not [name for name in files if name.startswith("model-") or name.endswith(".index.json")]
    assert {name: files[name] for name in kept} == kept and os.readlink(folder / "log-link") == "runs/log.txt"
    assert torch.equal(logits(reload(model, folder)), logits(model))
    card = (folder / "README.md").read_text()
    assert f'AutoTokenizer.from_pretrained("{folder}")' in card and ".c2c-tmp-" not in card  # sees the kept tokenizer
    assert leftovers(tmp_path) == []


def test_saving_into_the_working_folder_or_through_a_symlink(make_c2c, tmp_path, monkeypatch):
    model = make_c2c("qwen2")
    real = tmp_path / "real"
    model.save_pretrained(real)
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    model.save_pretrained(link)
    assert link.is_symlink() and (real / "model.safetensors").is_file()
    monkeypatch.chdir(real)
    model.save_pretrained(".")
    assert Path.cwd() == real and Path("model.safetensors").is_file()  # still inside the (new) folder
    assert leftovers(tmp_path) == []
    with pytest.raises(NotADirectoryError, match=r"Cannot save into '.*model.safetensors': it is a file"):
        model.save_pretrained(real / "model.safetensors")


def test_save_with_push_to_hub_uploads_the_saved_model_to_the_named_repo(make_c2c, tmp_path, monkeypatch):
    commits = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kwargs: SimpleNamespace(repo_id=repo_id))

    def create_commit(self, repo_id, operations, **kwargs):
        commits.append((repo_id, {operation.path_in_repo for operation in operations}, kwargs))

    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    make_c2c("qwen2").save_pretrained(tmp_path / "c2c", push_to_hub=True, repo_id="me/c2c", commit_message="first")
    ((repo_id, files, options),) = commits
    assert repo_id == "me/c2c" and options["commit_message"] == "first"
    assert {"model.safetensors", "config.json", "README.md", "atomic.py"} <= files
    assert (tmp_path / "c2c" / "model.safetensors").is_file() and leftovers(tmp_path) == []


# --------------------------------------------------------------------------- files, leftovers, the fallback swap


def test_a_failed_file_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "plot.png"
    atomic_write_text(path, "first\n")
    with pytest.raises(RuntimeError, match="renderer crashed"), atomic_file(path) as temporary:
        assert temporary.parent == tmp_path and temporary.suffix == ".png"  # writers that read the suffix still work
        temporary.write_text("half")
        raise RuntimeError("renderer crashed")
    assert path.read_text() == "first\n" and leftovers(tmp_path) == []
    with pytest.raises(IsADirectoryError, match=r"Cannot save the file '.*': it is a folder"):
        atomic_write_text(tmp_path, "x")


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def test_a_killed_saves_leftovers_are_removed_and_a_moved_aside_folder_restored(tmp_path):
    dead, host = dead_pid(), atomic.HOST
    stale = tmp_path / f".results.json.c2c-tmp-0badc0de-{dead}-{host}.json"
    running = tmp_path / f".results.json.c2c-tmp-0badc0de-{os.getpid()}-{host}.json"  # a save in progress
    elsewhere = tmp_path / f".results.json.c2c-tmp-0badc0de-{dead}-other-host.json"  # another machine's
    for path in (stale, running, elsewhere):
        path.write_text("partial")
    atomic_write_text(tmp_path / "results.json", "{}\n")
    assert leftovers(tmp_path) == sorted([running.name, elsewhere.name])
    # killed between its two renames (no atomic exchange): the old folder waits beside a missing path
    aside = tmp_path / f".c2c.c2c-old-0badc0de-{dead}-{host}"
    aside.mkdir()
    (aside / "config.json").write_text("{}")
    staged = tmp_path / f".c2c.c2c-tmp-0badc0de-{dead}-{host}"
    staged.mkdir()
    remove_leftovers(tmp_path / "c2c")
    assert (tmp_path / "c2c" / "config.json").read_text() == "{}" and not aside.exists() and not staged.exists()


def test_without_an_atomic_exchange_two_renames_replace_the_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "exchange_paths", lambda first, second: False)
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "model.safetensors").write_text("old weights")
    (folder / "kept.txt").write_text("kept")
    with atomic_folder(folder, owned=re.compile(r"model.*")) as staged:
        (staged / "model-00001-of-00001.safetensors").write_text("new weights")
    assert snapshot(folder) == {"kept.txt": b"kept", "model-00001-of-00001.safetensors": b"new weights"}
    rename = os.rename
    monkeypatch.setattr(os, "rename", lambda src, dst: fail_rename() if ".c2c-tmp-" in str(src) else rename(src, dst))
    with pytest.raises(OSError, match="Input/output error"), atomic_folder(folder) as staged:
        (staged / "kept.txt").write_text("newer")
    assert snapshot(folder) == {"kept.txt": b"kept", "model-00001-of-00001.safetensors": b"new weights"}
    assert leftovers(tmp_path) == []


def test_files_another_process_writes_into_the_folder_during_the_save_are_kept(tmp_path, monkeypatch):
    """Trainer's other ranks write their RNG state into a checkpoint folder while rank 0 saves the model there."""
    folder = tmp_path / "checkpoint-2"
    folder.mkdir()
    with atomic_folder(folder, before_swap=lambda staged: (folder / "rng_state_1.pth").write_text("rank 1")) as staged:
        (staged / "model.safetensors").write_text("weights")
    assert snapshot(folder) == {"model.safetensors": b"weights", "rng_state_1.pth": b"rank 1"}
    rename = os.rename

    def another_rank_creates_it_first(source, destination):
        if ".c2c-tmp-" in str(source) and not os.path.exists(destination):
            os.mkdir(destination)
            Path(destination, "rng_state_1.pth").write_text("rank 1")
        return rename(source, destination)

    monkeypatch.setattr(os, "rename", another_rank_creates_it_first)
    with atomic_folder(tmp_path / "checkpoint-4") as staged:
        (staged / "model.safetensors").write_text("weights")
    assert snapshot(tmp_path / "checkpoint-4") == {"model.safetensors": b"weights", "rng_state_1.pth": b"rank 1"}
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------- resume


def write_checkpoint(run: Path, step: int) -> Path:
    """The files of a complete Trainer checkpoint, with tiny contents."""
    folder = run / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "c2c"}')
    save_file({"fuser.weight": torch.zeros(4)}, folder / "model.safetensors")
    for name in ("training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
        torch.save({"step": step}, folder / name)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


def cut_short(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_resume_skips_incomplete_checkpoints_naming_each(tmp_path, caplog):
    run = tmp_path / "run"
    write_checkpoint(run, 2)
    (write_checkpoint(run, 4) / "trainer_state.json").unlink()
    cut_short(run / "checkpoint-4" / "optimizer.pt")
    cut_short(write_checkpoint(run, 6) / "model.safetensors")
    cut_short(write_checkpoint(run, 8) / "trainer_state.json")
    index = {"weight_map": {"fuser.weight": "model-00002-of-00002.safetensors"}}
    (write_checkpoint(run, 10) / "model.safetensors.index.json").write_text(json.dumps(index))
    engine_state = write_checkpoint(run, 12) / "global_step12" / "model_states.pt"  # a sub-folder (DeepSpeed's)
    engine_state.parent.mkdir()
    torch.save({"step": 12}, engine_state)
    cut_short(engine_state)
    with caplog.at_level("WARNING"):
        assert last_complete_checkpoint(run) == str(run / "checkpoint-2")
    for expected in (
        f"Skipping incomplete checkpoints in {run}",
        "checkpoint-12 (global_step12/model_states.pt is cut short)",
        "checkpoint-10 (model-00002-of-00002.safetensors (named by model.safetensors.index.json) is missing)",
        "checkpoint-8 (trainer_state.json is cut short)",
        "checkpoint-6 (model.safetensors is cut short)",
        "checkpoint-4 (no trainer_state.json; optimizer.pt is cut short)",
        f"Resuming from {run / 'checkpoint-2'}.",
    ):
        assert expected in caplog.text
    check_checkpoint_complete(run / "checkpoint-2")
    weights_only = tmp_path / "weights-only"  # a save_pretrained folder: training starts from its weights
    weights_only.mkdir()
    (weights_only / "config.json").write_text("{}")
    check_checkpoint_complete(weights_only)
    assert last_complete_checkpoint(tmp_path / "no-run-yet") is None


def test_trainer_resumes_only_from_a_complete_checkpoint(make_c2c, tmp_path):
    run = tmp_path / "run"
    (write_checkpoint(run, 2) / "trainer_state.json").unlink()
    args = TrainingArguments(output_dir=str(run), report_to=[], use_cpu=True, max_steps=1)
    trainer = make_trainer(make_c2c("qwen2"), args, [{"input_ids": [1, 2]}], C2CDataCollator(pad_token_id=0))
    with pytest.raises(
        ValueError, match=rf"resume_from_checkpoint=True, but the output_dir {re.escape(str(run))} holds no complete"
    ):
        trainer.train(resume_from_checkpoint=True)
    with pytest.raises(
        ValueError,
        match=r"Cannot resume from .*checkpoint-2: the checkpoint is incomplete \(no trainer_state.json\), as a run "
        r"stopped while writing it leaves it. Resume from a complete one \(there is none in .*run\)",
    ):
        trainer.train(resume_from_checkpoint=str(run / "checkpoint-2"))


COLORS, CITIES = "red blue green yellow black white".split(), "paris rome oslo lima cairo quito".split()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Tiny receiver and sharer folders (one tokenizer) and a small chat dataset."""
    root = tmp_path_factory.mktemp("pair")
    tokenizer = word_tokenizer(["what", "is", "the", "color", "of", *COLORS, *CITIES])
    for name, config, seed in (("receiver", receiver_config(), 0), ("sharer", sharer_configs()["llama"], 1)):
        build(config, seed).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    chats = [
        {"messages": [{"role": "user", "content": f"what is the color of {CITIES[i % 6]}"},
                      {"role": "assistant", "content": COLORS[i * 7 % 6]}]}
        for i in range(48)
    ]  # fmt: skip
    (root / "data.jsonl").write_text("".join(json.dumps(chat) + "\n" for chat in chats))
    return root


def train_args(pair: Path, output: Path, *extra: str) -> list[str]:
    return [
        "--receiver", str(pair / "receiver"), "--sharer", str(pair / "sharer"), "--dataset", str(pair / "data.jsonl"),
        "--output_dir", str(output), "--per_device_train_batch_size", "2", "--fuser_hidden_size", "16",
        "--report_to", "none", "--use_cpu", "--disable_tqdm", "true", "--learning_rate", "1e-2", "--max_steps", "6",
        "--save_steps", "2", *extra,
    ]  # fmt: skip


# Runs `c2c-hf train` and SIGKILLs itself while Trainer writes checkpoint-4's optimizer state (after the model).
KILLED_RUN = """
import os, signal, sys, torch
torch.set_num_threads(1)
save = torch.save
def save_then_die(obj, path, *args, **kwargs):
    if str(path).endswith(os.path.join("checkpoint-4", "optimizer.pt")):
        with open(path, "wb") as file:
            file.write(b"PK\\x03\\x04 half an optimizer")
        os.kill(os.getpid(), signal.SIGKILL)
    return save(obj, path, *args, **kwargs)
torch.save = save_then_die
from c2c_hf.commands.train import main
torch.manual_seed(0)
main(sys.argv[1:])
"""


def test_a_run_killed_while_writing_a_checkpoint_resumes_to_the_uninterrupted_result(pair, tmp_path, caplog):
    torch.manual_seed(0)  # the fuser's initialisation, as in the killed run
    train_main(train_args(pair, tmp_path / "straight"))
    killed = tmp_path / "killed"
    result = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, *train_args(pair, killed)], capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    assert sorted(os.listdir(killed)) == ["checkpoint-2", "checkpoint-4"]  # checkpoint-4: the model, no trainer state
    assert (killed / "checkpoint-4" / "model.safetensors").is_file()
    assert not (killed / "checkpoint-4" / "trainer_state.json").exists()

    with caplog.at_level("WARNING"):
        train_main(train_args(pair, killed, "--resume_from_checkpoint", "True"))
    assert "checkpoint-4 (no trainer_state.json; optimizer.pt is cut short)" in caplog.text
    assert f"Resuming from {killed / 'checkpoint-2'}." in caplog.text
    assert json.loads((killed / "checkpoint-6" / "trainer_state.json").read_text())["global_step"] == 6
    expected, resumed = load_file(tmp_path / "straight" / "model.safetensors"), load_file(killed / "model.safetensors")
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(resumed[name], expected[name]) for name in expected)  # bit-exact


# --------------------------------------------------------------------------- demo output


@pytest.mark.parametrize("argv", [["--quick"], ["--quick", "--seeds", "0", "1"]], ids=["one world", "seeds"])
def test_demo_refuses_a_folder_holding_other_files(tmp_path, argv):
    from c2c_hf.demo.command import main as demo_main

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(
        FileExistsError,
        match=rf"The demo output folder {re.escape(str(tmp_path))} is not empty \(notes.txt\) and is not an earlier "
        r"c2c-hf demo output .* Give a new or empty folder \(--output\)",
    ):
        demo_main([*argv, "--output", str(tmp_path)])
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_demo_writes_again_into_its_own_output_folder(tmp_path):
    from c2c_hf.demo.report import OUTPUT_MARKER, claim_output_folder

    claim_output_folder(tmp_path / "new")
    (tmp_path / "new" / "results.json").write_text("{}")
    claim_output_folder(tmp_path / "new")  # marked by the first run
    assert sorted(os.listdir(tmp_path / "new")) == [OUTPUT_MARKER, "results.json"]
    finished_before_the_marker = tmp_path / "old"
    finished_before_the_marker.mkdir()
    (finished_before_the_marker / "demo.md").write_text("# C2C demo")
    claim_output_folder(finished_before_the_marker)
    evaluation = tmp_path / "evaluation"  # `c2c-hf eval --output` writes results.json too
    evaluation.mkdir()
    (evaluation / "results.json").write_text("{}")
    with pytest.raises(FileExistsError, match=r"is not empty \(results.json\)"):
        claim_output_folder(evaluation)
