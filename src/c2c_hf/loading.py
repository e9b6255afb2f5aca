"""Loading and saving C2C checkpoints: `C2CCheckpointMixin` gives `C2CForCausalLM` its `from_pretrained`,
`save_pretrained`, `push_to_hub` and `load_state_dict`.

A C2C checkpoint holds only the fuser (and an optional receiver LoRA, `lora.py`), the config, the generation config
and, when the model knows them, the receiver's tokenizer (so that `AutoTokenizer` and `pipeline` work on the folder)
and the sharer's in `sharer_tokenizer/` when its vocabulary differs. `from_pretrained` loads the fuser, then the
receiver and sharer from the repos the config names, and the tokenizers (from the checkpoint, else, for a
span-aligned pair, from the bases). Saving writes the trained tensors only, the config (with the `auto_map` that
remote-code loading needs; bases lying in or beside the saved folder named by paths relative to it, so the folders
move together) and the model card (`hub.py`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .alignment import SpanAligner
from .atomic import atomic_folder
from .configuration_c2c import C2CConfig
from .lora import (
    RECEIVER_ADAPTER_FOLDER,
    inject_receiver_lora,
    is_trained_key,
    load_receiver_lora,
    refuse_wrapper_adapter,
    save_receiver_adapter,
)

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
# Weight files a save writes (single file, shards, index; any variant; the receiver LoRA's peft adapter folder): those
# of an earlier save into the same folder that this save does not rewrite (other shards, the adapter of a model that
# had a LoRA) are dropped, so that config and weights always belong together.
WEIGHT_FILES = re.compile(rf"model([.-].*)?\.safetensors(\.index(\..*)?\.json)?|{RECEIVER_ADAPTER_FOLDER}")
# Options of `save_pretrained(push_to_hub=True)` that go to the upload.
PUSH_KWARGS = ("repo_id", "commit_message", "create_pr", "private", "token", "allow_local_bases")
# Keyword arguments of `from_pretrained` that locate the C2C repo itself (and are shared with the bases' loads).
HUB_KWARGS = ("cache_dir", "token", "local_files_only", "force_download", "revision", "subfolder")
# Where a save puts the sharer's tokenizer when its vocabulary differs from the receiver's.
SHARER_TOKENIZER_FOLDER = "sharer_tokenizer"
# The `C2CConfig` fields naming the bases, by role.
BASE_NAME_FIELDS = {"receiver": "receiver_name_or_path", "sharer": "sharer_name_or_path"}


def split_load_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`(hub_kwargs, base_kwargs)` of a `from_pretrained` call; options only the bases use are popped from `kwargs`
    (the fuser always loads in fp32 on the default device)."""
    hub_kwargs = {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}
    base_kwargs = {k: kwargs[k] if k in HUB_KWARGS else kwargs.pop(k) for k in BASE_LOAD_KWARGS if k in kwargs}
    return hub_kwargs, base_kwargs


def is_local_path(path: str | os.PathLike) -> bool:
    """Whether `path` can only be a local path, not a Hub repo id: a path object, text starting with `.`, `/`, `~` or
    `\\`, or holding more than one `/` (a Hub id has at most one) or a backslash."""
    text = os.fspath(path)
    return isinstance(path, os.PathLike) or text.startswith((".", "/", "~", "\\")) or text.count("/") > 1 or "\\" in text


def base_reference(name_or_path: str | None, save_directory: str | os.PathLike) -> str | None:
    """How a saved config names a base: a local folder inside `save_directory` or beside it (in its parent folder) as
    a path relative to it (`./bases/receiver`, `../receiver`), so that moving the parent folder keeps the checkpoint
    loadable; a Hub id, or a folder elsewhere, as given."""
    if not name_or_path or not os.path.isdir(name_or_path):
        return name_or_path
    base, folder = Path(name_or_path).resolve(), Path(os.path.realpath(save_directory))
    if not base.is_relative_to(folder.parent):
        return name_or_path
    relative = Path(os.path.relpath(base, folder)).as_posix()
    return relative if relative.startswith("../") else f"./{relative}"


def resolve_base_reference(
    name_or_path: str | None, checkpoint: str | os.PathLike, subfolder: str | None = None
) -> str | None:
    """A base name read from the saved config of `checkpoint` as a loadable one: a path relative to the saved folder
    (`./x`, `../x`, what `base_reference` writes) joined to the folder; anything else (a Hub id, an absolute path) as
    it is."""
    folder = Path(checkpoint, subfolder or "")
    if name_or_path and name_or_path.startswith(("./", "../")) and folder.is_dir():
        return os.path.realpath(folder / name_or_path)  # `..` taken in the folder's real parent (symlinks)
    return name_or_path


def check_checkpoint_location(path: str | os.PathLike) -> None:
    """Refuse a local checkpoint path that is not a folder (missing, or a file) before transformers reads it as a Hub
    repo id ("Repo id must be in the form ..."). A path object, one starting with `.`, `/` or `~`, or one with more
    than one `/` (a Hub id has at most one) is local."""
    text = os.fspath(path)
    if os.path.isdir(text):
        return
    if os.path.exists(text):
        raise NotADirectoryError(
            f"{text} is a file: from_pretrained takes a C2C checkpoint folder (with config.json and model.safetensors) "
            "or a Hub repo id."
        )
    if is_local_path(path):
        raise FileNotFoundError(
            f"No such folder: {text} (relative paths start from {os.getcwd()}). Give the folder a C2C model was saved "
            "to (save_pretrained, or a Trainer's output_dir / checkpoint-N), or a Hub repo id 'org/name'."
        )


def load_c2c_config(path: str | os.PathLike, hub_kwargs: dict[str, Any]) -> C2CConfig:
    """The `C2CConfig` of the checkpoint at `path`, refusing a config.json of another model type or without the two
    bases' configs (defaults would build a fuser of other shapes and fail with a table of mismatched tensors)."""
    local = Path(path, hub_kwargs.get("subfolder") or "")
    if local.is_dir() and not (local / "config.json").is_file():
        raise FileNotFoundError(
            f"{local} holds no config.json, so it is not a saved C2C model: give the folder save_pretrained wrote (a "
            "Trainer's output_dir after training, or one of its checkpoint-N folders)."
        )
    config_dict, _ = C2CConfig.get_config_dict(path, **hub_kwargs)
    if config_dict.get("model_type", C2CConfig.model_type) != C2CConfig.model_type:
        raise ValueError(
            f"{os.fspath(path)} is not a C2C checkpoint: its config.json has model_type {config_dict['model_type']!r}. "
            "Load a plain model with AutoModelForCausalLM.from_pretrained, or pair two with "
            "C2CForCausalLM.from_base_models."
        )
    missing = [key for key in ("model_type", "text_config", "sharer_config") if key not in config_dict]
    if missing:
        raise ValueError(
            f"The config.json of {os.fspath(path)} lacks {missing} (model_type 'c2c', the receiver's and the sharer's "
            "configs), so the fuser's shapes are unknown: restore the config.json save_pretrained wrote, or pass "
            "config=C2CConfig.from_base_configs(receiver.config, sharer.config, ...)."
        )
    return C2CConfig.from_pretrained(path, **hub_kwargs)


def unreadable_weight_file(path: str | os.PathLike, hub_kwargs: dict[str, Any]) -> str:
    """The first `.safetensors` file of the checkpoint at `path` whose header cannot be read (the cached download
    for a Hub repo), to name it in the error."""
    from safetensors import SafetensorError, safe_open
    from transformers.utils.hub import cached_file

    local = Path(path, hub_kwargs.get("subfolder") or "")
    files = sorted(local.glob("*.safetensors")) if local.is_dir() else []
    if not files:
        resolved = cached_file(path, "model.safetensors", _raise_exceptions_for_missing_entries=False, **hub_kwargs)
        files = [Path(resolved)] if resolved else []
    for file in files:
        try:
            with safe_open(file, "pt"):
                pass
        except (SafetensorError, OSError):
            return str(file)
    return str(local / "model.safetensors")


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
    override = f"`from_pretrained(..., {role}=AutoModelForCausalLM.from_pretrained(<its folder or Hub id>))`"
    if is_local_path(name_or_path) and not os.path.isdir(name_or_path):
        raise FileNotFoundError(
            f"The C2C {role} {name_or_path!r} (the local folder this checkpoint's config names) does not exist: it was "
            f"moved or deleted, or the C2C folder was moved without it. Pass the loaded base instead, {override}, or "
            "keep the bases inside or beside the C2C folder when moving it (a save names those relative to it)."
        )
    load_kwargs = {**shared, **({"revision": revision} if revision else {}), **(overrides or {})}
    try:
        return AutoModelForCausalLM.from_pretrained(name_or_path, **load_kwargs)
    except OSError as error:
        raise OSError(f"Could not load the C2C {role} {name_or_path!r}: {error}. To use another copy, pass {override}.") from error


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


def saved_tokenizer(path: str | os.PathLike, hub_kwargs: dict[str, Any], folder: str = "") -> PreTrainedTokenizerBase | None:
    """The tokenizer a save wrote into the checkpoint at `path` (its `folder` inside), or None when it holds none."""
    from transformers.utils.hub import cached_file

    options = {**hub_kwargs, "subfolder": "/".join(filter(None, (hub_kwargs.get("subfolder"), folder)))}
    found = cached_file(
        path, "tokenizer_config.json", _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False, **options,
    )  # fmt: skip
    return AutoTokenizer.from_pretrained(path, **options) if found else None


class C2CCheckpointMixin:
    """Checkpoint I/O of `C2CForCausalLM`: fuser-only saves, loads that fetch the bases from their own repos."""

    # A receiver LoRA's tensors in `model.safetensors` load after the bases are attached (`load_receiver_lora`): the
    # fuser-only load must not report them as unexpected.
    _keys_to_ignore_on_load_unexpected = (r"^receiver\..*\.lora_",)
    # The bases' tokenizers, when known (`from_base_models` / `from_pretrained`): saves write them into the checkpoint.
    receiver_tokenizer: PreTrainedTokenizerBase | None = None
    sharer_tokenizer: PreTrainedTokenizerBase | None = None

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

        `dtype`, `device_map`, `attn_implementation` (also when an Auto class has moved it into `config`) and the Hub
        options (`cache_dir`, `token`, `local_files_only`, `force_download`) reach both bases; `revision` selects the
        C2C repo's revision, the bases use the revisions in the config unless `receiver_revision` / `sharer_revision`
        are given. `receiver_kwargs` / `sharer_kwargs` add or override load arguments per base; already-loaded
        `receiver` / `sharer` models are used as given (their shapes are checked). Bases named by paths relative to
        the saved folder are found relative to it; a missing local base raises a `FileNotFoundError` naming it.

        The tokenizers (`model.receiver_tokenizer` / `model.sharer_tokenizer`) are the ones given, else those the
        checkpoint holds; a span-aligned model (`token_alignment="span"`) without either loads them from the bases.
        """
        from safetensors import SafetensorError

        hub_kwargs, base_kwargs = split_load_kwargs(kwargs)
        check_checkpoint_location(pretrained_model_name_or_path)
        if config is not None and getattr(config, "model_type", None) != C2CConfig.model_type:
            raise TypeError(f"config must be a C2CConfig, got {type(config).__name__}: leave it out to read the checkpoint's.")
        for role, base in (("receiver", receiver), ("sharer", sharer)):
            if base is not None and not isinstance(base, PreTrainedModel):
                raise TypeError(f"{role} must be a loaded transformers model, got {type(base).__name__}.")
        attn_implementation = getattr(config, "_attn_implementation_internal", None)  # an Auto class moves it there
        if attn_implementation is not None:
            base_kwargs.setdefault("attn_implementation", attn_implementation)
        if config is None:
            config = load_c2c_config(pretrained_model_name_or_path, hub_kwargs)
        for role in BASE_NAME_FIELDS:  # as the Auto classes do: set on the config they read
            if f"{role}_revision" in kwargs:
                setattr(config, f"{role}_revision", kwargs.pop(f"{role}_revision"))
        for field in BASE_NAME_FIELDS.values():
            name = resolve_base_reference(getattr(config, field), pretrained_model_name_or_path, hub_kwargs.get("subfolder"))
            setattr(config, field, name)
        output_loading_info = kwargs.pop("output_loading_info", False)
        kwargs.setdefault("use_safetensors", True)  # C2C checkpoints are safetensors: never fall back to a pickle
        try:
            model, loading_info = super().from_pretrained(
                pretrained_model_name_or_path, *model_args, config=config, dtype=torch.float32, attach_bases=False,
                output_loading_info=True, **kwargs,
            )  # fmt: skip
        except SafetensorError as error:
            file = unreadable_weight_file(pretrained_model_name_or_path, hub_kwargs)
            raise OSError(
                f"Could not read the fuser weights {file}: not a valid safetensors file ({error}). The file is corrupt "
                "or truncated (an interrupted copy or download): save or download the checkpoint again."
            ) from error
        check_fuser_checkpoint(loading_info, pretrained_model_name_or_path, config)
        if receiver is None:
            receiver = load_base("receiver", config.receiver_name_or_path, config.receiver_revision, base_kwargs, receiver_kwargs)
        if sharer is None:
            sharer = load_base("sharer", config.sharer_name_or_path, config.sharer_revision, base_kwargs, sharer_kwargs)
        model.attach_bases(receiver, sharer)
        stored = saved_tokenizer(pretrained_model_name_or_path, hub_kwargs)
        receiver_tokenizer = receiver_tokenizer or stored
        if stored is not None:  # the save wrote the sharer's only when its vocabulary differs from the receiver's,
            # which every aligned pair's does: only a pair without token alignment shares the receiver's tokenizer
            own = saved_tokenizer(pretrained_model_name_or_path, hub_kwargs, SHARER_TOKENIZER_FOLDER)
            stored = own if own is not None or config.token_alignment is not None else stored
        sharer_tokenizer = sharer_tokenizer or stored
        if config.token_alignment == "span":
            receiver_tokenizer = receiver_tokenizer or load_tokenizer("receiver", config.receiver_name_or_path, config.receiver_revision, base_kwargs)
            sharer_tokenizer = sharer_tokenizer or load_tokenizer("sharer", config.sharer_name_or_path, config.sharer_revision, base_kwargs)
            model.span_aligner = SpanAligner(receiver_tokenizer, sharer_tokenizer)
        model.receiver_tokenizer, model.sharer_tokenizer = receiver_tokenizer, sharer_tokenizer
        if config.receiver_lora is not None:
            model.add_receiver_lora(**config.receiver_lora)
            load_receiver_lora(model, pretrained_model_name_or_path, hub_kwargs)
        return (model, loading_info) if output_loading_info else model

    def add_receiver_lora(
        self, r: int = 8, lora_alpha: int = 16, lora_dropout: float = 0.0, target_modules: list[str] | None = None
    ) -> None:
        """Inject a trainable LoRA (peft) into the frozen receiver; it trains and is saved beside the fuser, and also in
        peft's adapter format (`receiver_adapter/`, for `PeftModel.from_pretrained(<receiver>, ...)`). This is the
        way to put a LoRA on a C2C model: `peft.get_peft_model(model, LoraConfig(...))` on the whole model is refused
        (see `peft_config`)."""
        self.config.receiver_lora = inject_receiver_lora(self.receiver, r, lora_alpha, lora_dropout, target_modules)

    @property
    def peft_config(self) -> dict[str, Any]:
        """A C2C model never carries a peft adapter of its own (`add_receiver_lora` puts one on the receiver)."""
        raise AttributeError("C2CForCausalLM has no peft_config: a receiver LoRA's is model.receiver.peft_config.")

    @peft_config.setter
    def peft_config(self, value: dict[str, Any]) -> None:
        """peft sets this at the end of `get_peft_model(model, config)` / `model.add_adapter(config)`: refused, with
        the injected layers removed again (`lora.refuse_wrapper_adapter`), because an adapter over the whole C2C model
        would wrap the sharer's and the fuser's layers, freeze the fuser, and save (or merge) where a C2C checkpoint
        keeps nothing. The supported LoRA is the receiver's: `add_receiver_lora`."""
        refuse_wrapper_adapter(self, value)

    def save_pretrained(self, save_directory: str | os.PathLike, *args, state_dict: dict | None = None, **kwargs):
        """Save the fuser weights (safetensors), the config, the generation config, the model code, the tokenizers
        (`save_tokenizers`), a receiver LoRA also in peft's adapter format (`receiver_adapter/`, `lora.py`) and the
        model card; never the bases. A base lying in a local folder inside or beside
        `save_directory` is named in the saved config by its path relative to `save_directory` (`base_reference`),
        so the C2C folder and its bases can move together; a Hub id stays an id.

        The save is atomic (`atomic.atomic_folder`): everything is written into a temporary sibling folder, the
        entries of an existing folder that this save does not write (a tokenizer, Trainer's optimizer state, your
        own files) are carried over as hard links, and the complete folder takes the old one's place in one
        rename. A failed or killed save leaves the previous folder as it was and no temporary files (a killed
        save's are removed by the next save there). Weight files of an earlier save that this one does not rewrite
        (other shards) are dropped. Ranks that write no files (`is_main_process=False`) and saves written by several
        processes together (`distributed_checkpoint=True`) go straight to the folder. `push_to_hub=True` uploads
        the saved model with `push_to_hub` (one commit, card included) to `repo_id` (default: the folder's name).
        """
        state_dict = self.state_dict() if state_dict is None else state_dict
        self.config.auto_map = {
            "AutoConfig": "configuration_c2c.C2CConfig",
            "AutoModel": "modeling_c2c.C2CForCausalLM",
            "AutoModelForCausalLM": "modeling_c2c.C2CForCausalLM",
        }
        trained = {k: v for k, v in state_dict.items() if is_trained_key(k)}
        names = {field: getattr(self.config, field) for field in BASE_NAME_FIELDS.values()}
        push = kwargs.pop("push_to_hub", False)
        push_kwargs = {key: kwargs.pop(key) for key in PUSH_KWARGS if key in kwargs}
        try:
            for field, name in names.items():  # restored below: in memory, local names stay valid from the cwd
                setattr(self.config, field, base_reference(name, save_directory))
            if not kwargs.get("is_main_process", True) or kwargs.get("distributed_checkpoint"):
                return super().save_pretrained(save_directory, *args, state_dict=trained, **kwargs)
            with atomic_folder(save_directory, owned=WEIGHT_FILES, before_swap=self._card_writer(save_directory)) as folder:
                result = super().save_pretrained(folder, *args, state_dict=trained, **kwargs)
                self.save_tokenizers(folder)
                if self.config.receiver_lora is not None:
                    save_receiver_adapter(self.receiver, folder, names[BASE_NAME_FIELDS["receiver"]], self.config.receiver_revision)
        finally:
            for field, name in names.items():
                setattr(self.config, field, name)
        if push:
            self.push_to_hub(push_kwargs.pop("repo_id", Path(os.path.realpath(save_directory)).name), **push_kwargs)
        return result

    def save_tokenizers(self, save_directory: str | os.PathLike) -> None:
        """Write the receiver's tokenizer into `save_directory` (what `AutoTokenizer` and `pipeline` read there) and
        the sharer's into its `sharer_tokenizer/` folder when its vocabulary differs; nothing for an unknown one."""
        if self.receiver_tokenizer is not None:
            self.receiver_tokenizer.save_pretrained(save_directory)
        if self.sharer_tokenizer is not None and (
            self.receiver_tokenizer is None or self.sharer_tokenizer.get_vocab() != self.receiver_tokenizer.get_vocab()
        ):
            self.sharer_tokenizer.save_pretrained(Path(save_directory, SHARER_TOKENIZER_FOLDER))

    def _card_writer(self, save_directory: str | os.PathLike) -> Callable[[Path], None] | None:
        """What writes the model card into a staged save of `save_directory` (the card names `save_directory`), or
        None when c2c_hf is not installed (this file loaded as remote code: no card)."""
        try:
            from c2c_hf.hub import write_model_card  # absolute: remote-code copies of this file need no hub.py
        except ImportError:
            return None
        return lambda folder: write_model_card(self, folder, repo_id=str(save_directory))

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


__all__ = ["BASE_LOAD_KWARGS", "BASE_NAME_FIELDS", "HUB_KWARGS", "PUSH_KWARGS", "SHARER_TOKENIZER_FOLDER", "WEIGHT_FILES", "C2CCheckpointMixin", "base_reference", "check_checkpoint_location", "check_fuser_checkpoint", "is_local_path", "load_base", "load_c2c_config", "load_tokenizer", "resolve_base_reference", "saved_tokenizer", "split_load_kwargs"]
