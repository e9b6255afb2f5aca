"""Loading and saving C2C checkpoints: `C2CCheckpointMixin` gives `C2CForCausalLM` its `from_pretrained`,
`save_pretrained`, `push_to_hub` and `load_state_dict`.

A C2C checkpoint holds only the fuser (and an optional receiver LoRA, `lora.py`) and the config; `from_pretrained`
loads the fuser, then the receiver and sharer from the repos the config names, and, for a span-aligned pair, their
tokenizers. Saving writes the trained tensors only, the config (with the `auto_map` that remote-code loading
needs) and the model card (`hub.py`).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .alignment import SpanAligner
from .configuration_c2c import C2CConfig
from .lora import inject_receiver_lora, is_trained_key, load_receiver_lora

# Keyword arguments of `from_pretrained` that are forwarded to the receiver and sharer loads.
BASE_LOAD_KWARGS = (
    "dtype",
    "device_map",
    "attn_implementation",
    "cache_dir",
    "token",
    "local_files_only",
    "force_download",
    "trust_remote_code",
)
# Keyword arguments of `from_pretrained` that locate the C2C repo itself (and are shared with the bases' loads).
HUB_KWARGS = ("cache_dir", "token", "local_files_only", "force_download", "revision", "subfolder")


def split_load_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`(hub_kwargs, base_kwargs)` of a `from_pretrained` call; options only the bases use are popped from `kwargs`
    (the fuser always loads in fp32 on the default device)."""
    hub_kwargs = {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}
    base_kwargs = {k: kwargs[k] if k in HUB_KWARGS else kwargs.pop(k) for k in BASE_LOAD_KWARGS if k in kwargs}
    return hub_kwargs, base_kwargs


def check_fuser_checkpoint(loading_info: dict[str, Any], path: str | os.PathLike, config: C2CConfig) -> None:
    """Refuse a fuser checkpoint with missing or unexpected tensors (a receiver LoRA's tensors load separately)."""
    loading_info["unexpected_keys"] = {k for k in loading_info["unexpected_keys"] if not k.startswith("receiver.")}
    incomplete = {k: sorted(loading_info[k]) for k in ("missing_keys", "unexpected_keys") if loading_info[k]}
    if incomplete:
        raise ValueError(
            f"The fuser checkpoint at {path} does not match its C2C config (receiver layers "
            f"{config.receiver_kv_shape[0]}, fuser_num_blocks {config.fuser_num_blocks}): {incomplete}. Load it "
            "with the config it was saved with."
        )


def load_base(
    role: str, name_or_path: str | None, revision: str | None, shared: dict[str, Any], overrides: dict[str, Any] | None
) -> PreTrainedModel:
    """The `role` ("receiver" / "sharer") base model from its own repo, with the shared options and its overrides."""
    if not name_or_path:
        raise ValueError(
            f"This C2C config names no {role} (`{role}_name_or_path` is empty): pass `{role}=<loaded model>` to "
            f"from_pretrained, or set `{role}_name_or_path` before saving."
        )
    load_kwargs = {**shared, **({"revision": revision} if revision else {}), **(overrides or {})}
    try:
        return AutoModelForCausalLM.from_pretrained(name_or_path, **load_kwargs)
    except OSError as error:
        raise OSError(f"Could not load the C2C {role} {name_or_path!r}: {error}") from error


def load_tokenizer(role: str, name_or_path: str | None, revision: str | None, shared: dict[str, Any]) -> PreTrainedTokenizerBase:
    """The `role` base's tokenizer (a span-aligned model needs both), refusing an empty one."""
    if not name_or_path:
        raise ValueError(
            f"This span-aligned C2C config names no {role} (`{role}_name_or_path` is empty), so its tokenizer "
            f"cannot be loaded: pass `{role}_tokenizer=<loaded tokenizer>` to from_pretrained."
        )
    hub = {k: v for k, v in shared.items() if k in HUB_KWARGS or k == "trust_remote_code"}
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **hub, **({"revision": revision} if revision else {}))
    except OSError as error:
        raise OSError(f"Could not load the C2C {role}'s tokenizer {name_or_path!r}: {error}") from error
    if len(tokenizer) < 2:  # transformers builds an empty tokenizer from a model folder without tokenizer files
        raise OSError(
            f"Could not load the C2C {role}'s tokenizer {name_or_path!r}: it holds no tokenizer files (got "
            f"{len(tokenizer)} token(s)). Pass `{role}_tokenizer=<loaded tokenizer>` to from_pretrained."
        )
    return tokenizer



class C2CCheckpointMixin:
    """Checkpoint I/O of `C2CForCausalLM`: fuser-only saves, loads that fetch the bases from their own repos."""

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args,
        config: C2CConfig | None = None,
        receiver: PreTrainedModel | None = None,
        sharer: PreTrainedModel | None = None,
        receiver_kwargs: dict | None = None,
        sharer_kwargs: dict | None = None,
        receiver_tokenizer: PreTrainedTokenizerBase | None = None,
        sharer_tokenizer: PreTrainedTokenizerBase | None = None,
        **kwargs,
    ) -> PreTrainedModel:
        """Load the fuser (always fp32) from a C2C checkpoint, then the receiver and sharer from their own repos; returns
        a `C2CForCausalLM`.

        `dtype`, `device_map`, `attn_implementation` and the Hub options (`cache_dir`, `token`, `local_files_only`,
        `force_download`) reach both bases; `revision` selects the C2C repo's revision, the bases use the revisions
        in the config. `receiver_kwargs` / `sharer_kwargs` add or override load arguments per base;
        already-loaded `receiver` / `sharer` models are used as given (their shapes are checked). A span-aligned
        model (`token_alignment="span"`) also loads both tokenizers from the bases' ids, unless given as
        `receiver_tokenizer` / `sharer_tokenizer`.
        """
        hub_kwargs, base_kwargs = split_load_kwargs(kwargs)
        if config is None:
            config = C2CConfig.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
        output_loading_info = kwargs.pop("output_loading_info", False)
        model, loading_info = super().from_pretrained(
            pretrained_model_name_or_path, *model_args, config=config, dtype=torch.float32, attach_bases=False,
            output_loading_info=True, **kwargs,
        )  # fmt: skip
        check_fuser_checkpoint(loading_info, pretrained_model_name_or_path, config)
        if receiver is None:
            receiver = load_base("receiver", config.receiver_name_or_path, config.receiver_revision, base_kwargs, receiver_kwargs)
        if sharer is None:
            sharer = load_base("sharer", config.sharer_name_or_path, config.sharer_revision, base_kwargs, sharer_kwargs)
        model.attach_bases(receiver, sharer)
        if config.token_alignment == "span":
            model.span_aligner = SpanAligner(
                receiver_tokenizer or load_tokenizer("receiver", config.receiver_name_or_path, config.receiver_revision, base_kwargs),
                sharer_tokenizer or load_tokenizer("sharer", config.sharer_name_or_path, config.sharer_revision, base_kwargs),
            )
        if config.receiver_lora is not None:
            model.add_receiver_lora(**config.receiver_lora)
            load_receiver_lora(model, pretrained_model_name_or_path, hub_kwargs)
        return (model, loading_info) if output_loading_info else model

    def add_receiver_lora(
        self, r: int = 8, lora_alpha: int = 16, lora_dropout: float = 0.0, target_modules: list[str] | None = None
    ) -> None:
        """Inject a trainable LoRA (peft) into the frozen receiver; it trains and is saved beside the fuser."""
        self.config.receiver_lora = inject_receiver_lora(self.receiver, r, lora_alpha, lora_dropout, target_modules)

    def save_pretrained(self, save_directory: str | os.PathLike, *args, state_dict: dict | None = None, **kwargs):
        """Save the fuser weights (safetensors), the config and the generation config; never the bases."""
        state_dict = self.state_dict() if state_dict is None else state_dict
        self.config.auto_map = {
            "AutoConfig": "configuration_c2c.C2CConfig",
            "AutoModel": "modeling_c2c.C2CForCausalLM",
            "AutoModelForCausalLM": "modeling_c2c.C2CForCausalLM",
        }
        trained = {k: v for k, v in state_dict.items() if is_trained_key(k)}
        result = super().save_pretrained(save_directory, *args, state_dict=trained, **kwargs)
        if kwargs.get("is_main_process", True):
            try:
                from c2c_hf.hub import write_model_card  # absolute: remote-code copies of this file need no hub.py
            except ImportError:  # loaded as remote code without c2c_hf installed: no card
                return result
            write_model_card(self, save_directory)
        return result

    def push_to_hub(self, repo_id: str, **kwargs):
        """Upload the fuser, config, generation config, code and model card in one commit (`c2c_hf.hub.push_to_hub`)."""
        try:
            from c2c_hf.hub import push_to_hub
        except ImportError:  # loaded as remote code without c2c_hf installed: the stock upload, with a generic card
            return super().push_to_hub(repo_id, **kwargs)
        return push_to_hub(self, repo_id, **kwargs)

    def load_state_dict(self, state_dict: dict, strict: bool = True, assign: bool = False):
        """Load a C2C state dict (a checkpoint's: the fuser and a receiver LoRA; base tensors may be present too).

        Every trained tensor must be present with this model's shape, else a `ValueError` says what differs (a
        checkpoint of another pair or fuser size). Base tensors absent from the state dict are not reported missing:
        C2C checkpoints never hold them.
        """
        own = self.state_dict()
        mismatched = [f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state_dict.items() if k in own and v.shape != own[k].shape]
        missing = [k for k in own if is_trained_key(k) and k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if mismatched or missing or unexpected:
            raise ValueError(
                "This state dict does not fit this C2C model (receiver KV shape "
                f"{self.config.receiver_kv_shape}, sharer {self.config.sharer_kv_shape}, fuser hidden "
                f"{self.config.fuser_hidden_size}): shape mismatches (state dict vs model) {mismatched[:5]}, missing "
                f"fuser tensors {missing[:5]}, unexpected tensors {unexpected[:5]}. Was it saved for another pair?"
            )
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        result.missing_keys[:] = [k for k in result.missing_keys if is_trained_key(k)]
        return result


__all__ = ["BASE_LOAD_KWARGS", "HUB_KWARGS", "C2CCheckpointMixin", "check_fuser_checkpoint", "load_base", "load_tokenizer", "split_load_kwargs"]
