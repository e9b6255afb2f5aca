"""What a result was measured on: every results JSON records it, so that a rerun elsewhere can be compared.

`environment()` gives the versions (python, torch, transformers, c2c_hf), the git commit of the working tree the
code ran from (when it is a git checkout), torch's thread count, the device (CPU model or CUDA device) and the CPU
flags that change speed or numerics (AVX-512, AMX: bf16 matrix units give other bf16 results than emulation).
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
import transformers

CPU_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_fp16", "amx_int8", "amx_tile")


def git_commit(path: str | Path | None = None) -> str | None:
    """The commit checked out where `path` (default: this package's source) lives, with `+dirty` when the tree
    has uncommitted changes; `None` outside a git checkout (an installed wheel) or without git."""
    folder = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder, capture_output=True, text=True,
            check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if status else commit


def _cpuinfo(field: str) -> str | None:
    """The first `field` line's value in Linux `/proc/cpuinfo` (None elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(field)), None)


def cpu_flags() -> list[str]:
    """The `CPU_FLAGS` this CPU has (Linux `/proc/cpuinfo`; empty elsewhere)."""
    flags = (_cpuinfo("flags") or "").split()
    return [flag for flag in CPU_FLAGS if flag in flags]


def device_name(device: torch.device | str | None = None) -> str:
    """`cuda:<name>` for a CUDA device, else `cpu:<processor>`."""
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()}"


def environment(device: torch.device | str | None = None) -> dict[str, Any]:
    """The environment block of a results JSON."""
    try:
        c2c_hf_version = version("c2c-hf")
    except PackageNotFoundError:  # run from a source tree that is not installed
        c2c_hf_version = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "c2c_hf": c2c_hf_version,
        "git_commit": git_commit(),
        "torch_threads": torch.get_num_threads(),
        "device": device_name(device),
        "cpu_flags": cpu_flags(),
        "cpu_model": _cpuinfo("model name") or platform.processor() or None,
        "cpu_count": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
    }


# The protocol of a result that chooses nothing and scores no split: a measurement of given models on given data
# (an analysis, a timing). Results that compare methods state their own (`selected_on`, `test_evaluations`).
MEASUREMENT_PROTOCOL = {"selected_on": None, "test_evaluations": None, "kind": "measurement: nothing is chosen on it"}
# The protocol of a result whose settings were chosen on the very questions it reports (no sealed test split): said
# so, rather than calling those figures a test.
UNSEALED_PROTOCOL = {"selected_on": "heldout", "test_evaluations": None, "kind": "settings chosen on the reported questions"}


def result_metadata(protocol: Mapping[str, Any], device: torch.device | str | None = None) -> dict[str, Any]:
    """The `environment` and `protocol` blocks every results JSON starts with."""
    return {"environment": environment(device), "protocol": dict(protocol)}


__all__ = ["CPU_FLAGS", "MEASUREMENT_PROTOCOL", "UNSEALED_PROTOCOL", "cpu_flags", "device_name", "environment", "git_commit", "result_metadata"]
