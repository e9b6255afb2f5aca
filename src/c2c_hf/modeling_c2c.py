"""Cache-to-Cache (C2C): a frozen receiver LM answers from its prompt KV cache fused with a frozen sharer's.

Read next to the method (Fu et al., arXiv 2510.03215):
- `C2CFuserBranch`: projection of `[sharer KV, receiver KV]`, dynamic per-head weight, gate, residual fusion;
- `C2CFuser`: one K and one V branch per receiver layer, plus the receiver -> sharer layer map;
- `C2CForCausalLM.forward`: sharer prefill, receiver prefill, fuse (`C2CCache.fuse`), then the rest of the
  sequence attends to the fused cache ("prefill, then fuse").
"""

from __future__ import annotations

import copy
import os

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Cache,
    DynamicCache,
    GenerationMixin,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils import logging
from transformers.utils.generic import can_return_tuple

from .alignment import STRATEGIES, SpanAligner, TokenMap, build_token_map, gather_positions, position_ids_from_mask
from .cache import C2CCache
from .configuration_c2c import C2CConfig, kv_shape

logger = logging.get_logger(__name__)

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


class C2CResidualBlock(nn.Module):
    """`x + W2(GELU(W1(RMSNorm(x))))` at a fixed width."""

    def __init__(self, hidden_size: int, intermediate_size: int, dropout: float):
        super().__init__()
        self.norm = nn.RMSNorm(hidden_size, eps=1e-6)
        self.up = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down = nn.Linear(intermediate_size, hidden_size, bias=False)
        self.act = nn.GELU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(self.down(self.act(self.up(self.norm(x)))))


class C2COutputProjection(nn.Linear):
    """A branch's last layer, `hidden -> H_r * D_r`: the projection `P` (its own type so that `fuser_zero_init` can
    start it at zero)."""


class C2CFuserBranch(nn.Module):
    """Fuses one receiver layer's keys (or values) with the paired sharer layer's: `X_r + g * w * P`.

    - projection `P`: `[X_s, X_r]` flattened per token -> Linear -> shared block -> projection blocks -> Linear;
    - dynamic weight `w`: shared features -> block -> Linear(hidden -> H_r) -> sigmoid, per token and KV head;
    - gate `g`: one learnable logit. Training relaxes it with logistic noise, `sigmoid((logit + noise) / T)`, so
      the gate is open (> 1/2) with probability exactly `sigmoid(logit)`; inference uses the hard gate
      `logit > 0`. The two agree: a gate open at inference is one that was open in most training samples.
    """

    def __init__(self, sharer_heads: int, sharer_head_dim: int, receiver_heads: int, receiver_head_dim: int, config: C2CConfig):
        super().__init__()
        self.receiver_heads, self.receiver_head_dim = receiver_heads, receiver_head_dim
        self.fusion = config.fusion
        hidden, intermediate, dropout = config.fuser_hidden_size, config.fuser_intermediate_size, config.fuser_dropout
        receiver_width = 0 if self.fusion == "projection" else receiver_heads * receiver_head_dim
        self.in_proj = nn.Linear(sharer_heads * sharer_head_dim + receiver_width, hidden)
        self.shared_block = C2CResidualBlock(hidden, intermediate, dropout)
        self.projection_blocks = nn.ModuleList(
            C2CResidualBlock(hidden, intermediate, dropout) for _ in range(config.fuser_num_blocks - 2)
        )
        self.out_proj = C2COutputProjection(hidden, receiver_heads * receiver_head_dim)
        if self.fusion != "projection":
            self.weight_block = C2CResidualBlock(hidden, hidden, dropout)
            self.weight_head = nn.Linear(hidden, receiver_heads)
        if self.fusion == "gated":
            self.gate_logit = nn.Parameter(torch.tensor(float(config.gate_init_logit)))

    def gate(self, batch: int, length: int, temperature: float) -> torch.Tensor:
        """Relaxed gate `(B, H_r, N, 1)` in training; the hard 0/1 gate (a scalar) at inference."""
        if not self.training:
            return (self.gate_logit > 0).to(self.gate_logit.dtype)
        uniform = torch.rand(batch, self.receiver_heads, length, 1, device=self.gate_logit.device).clamp(1e-6, 1 - 1e-6)
        logistic_noise = torch.log(uniform) - torch.log1p(-uniform)
        return torch.sigmoid((self.gate_logit + logistic_noise) / temperature)

    def forward(
        self, sharer_x: torch.Tensor, receiver_x: torch.Tensor, temperature: float, is_open: bool | None = None
    ) -> torch.Tensor:
        """`is_open`: the hard gate at inference, when the caller has read it already (`C2CFuser.open_gates`, one
        host read for all layers); `None` reads it here."""
        # sharer_x: (B, H_s, N, D_s); receiver_x: (B, H_r, N, D_r) -> fused (B, H_r, N, D_r)
        gated = self.fusion == "gated"
        if gated and not self.training and not (self.gate_logit > 0 if is_open is None else is_open):
            return receiver_x  # closed gate: the receiver's own KV, exactly
        batch, _, length, _ = receiver_x.shape
        dtype = self.in_proj.weight.dtype  # the fuser computes in its own dtype (fp32), whatever the bases'
        inputs = [sharer_x] if self.fusion == "projection" else [sharer_x, receiver_x]
        features = torch.cat([x.transpose(1, 2).flatten(2) for x in inputs], dim=-1).to(dtype)  # (B, N, H_s*D_s [+ H_r*D_r])
        hidden = self.shared_block(self.in_proj(features))  # (B, N, hidden)
        projected = hidden
        for block in self.projection_blocks:
            projected = block(projected)
        projected = self.out_proj(projected)  # (B, N, H_r*D_r)
        projected = projected.view(batch, length, self.receiver_heads, self.receiver_head_dim).transpose(1, 2)
        if self.fusion == "projection":
            return projected.to(receiver_x.dtype)  # replaces the receiver's KV
        weight = torch.sigmoid(self.weight_head(self.weight_block(hidden)))  # (B, N, H_r)
        weight = weight.transpose(1, 2).unsqueeze(-1)  # (B, H_r, N, 1)
        if gated and self.training:  # at inference the gate is open here, i.e. exactly 1
            weight = self.gate(batch, length, temperature) * weight  # gate: (B, H_r, N, 1)
        fused = receiver_x.to(dtype) + weight * projected
        return fused.to(receiver_x.dtype)


class C2CLayerFuser(nn.Module):
    """The K and V branches for one receiver layer."""

    def __init__(self, sharer_shape: tuple[int, int], receiver_shape: tuple[int, int], config: C2CConfig):
        super().__init__()
        self.key = C2CFuserBranch(*sharer_shape, *receiver_shape, config)
        self.value = C2CFuserBranch(*sharer_shape, *receiver_shape, config)

    def forward(
        self,
        sharer_keys: torch.Tensor,
        sharer_values: torch.Tensor,
        receiver_keys: torch.Tensor,
        receiver_values: torch.Tensor,
        temperature: float,
        open_kv: tuple[bool | None, bool | None] = (None, None),
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            self.key(sharer_keys, receiver_keys, temperature, open_kv[0]),
            self.value(sharer_values, receiver_values, temperature, open_kv[1]),
        )


class C2CFuser(nn.Module):
    """All layer fusers of a C2C model: receiver layer `t` is fused with sharer layer `layer_map[t]`."""

    def __init__(self, config: C2CConfig):
        super().__init__()
        receiver_layers, receiver_heads, receiver_head_dim = config.receiver_kv_shape
        _, sharer_heads, sharer_head_dim = config.sharer_kv_shape
        self.layer_map = config.resolved_layer_map()
        self.gate_temperature = config.gate_temperature_start
        if config.token_alignment in STRATEGIES:  # receiver id -> sharer id, for pairs with different tokenizers
            self.register_buffer("token_map", torch.zeros(config.text_config.vocab_size, dtype=torch.long))
        self.layers = nn.ModuleList(
            C2CLayerFuser((sharer_heads, sharer_head_dim), (receiver_heads, receiver_head_dim), config)
            for _ in range(receiver_layers)
        )

    def forward(
        self,
        receiver_idx: int,
        sharer_keys: torch.Tensor,
        sharer_values: torch.Tensor,
        receiver_keys: torch.Tensor,
        receiver_values: torch.Tensor,
        open_kv: tuple[bool | None, bool | None] = (None, None),
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused `(keys, values)` of receiver layer `receiver_idx`, each `(B, H_r, N, D_r)`; `open_kv`: the layer's
        hard K / V gates at inference if already read (`open_gates().tolist()`), else read per branch."""
        with torch.autocast(device_type=receiver_keys.device.type, enabled=False):  # fp32 fuser under bf16 autocast
            return self.layers[receiver_idx](
                sharer_keys, sharer_values, receiver_keys, receiver_values, self.gate_temperature, open_kv
            )

    def gate_logits(self) -> torch.Tensor:
        """`(num_receiver_layers, 2)` gate logits, columns K and V; `+inf` (always open) for a fusion without gates."""
        if self.layers[0].key.fusion != "gated":
            return torch.full((len(self.layers), 2), float("inf"), device=self.layers[0].key.in_proj.weight.device)
        return torch.stack([torch.stack([layer.key.gate_logit, layer.value.gate_logit]) for layer in self.layers]).detach()

    def open_gates(self) -> torch.Tensor:
        """`(num_receiver_layers, 2)` booleans: which K / V gates are open at inference."""
        return self.gate_logits() > 0


class C2CPreTrainedModel(PreTrainedModel):
    config_class = C2CConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # Only the fuser is ever initialised here: the bases are attached after `post_init`. transformers calls this
        # on every submodule but, for a model defined outside transformers, skips modules that own no parameter
        # directly (a branch without a gate, a residual block), so each parameter is set by the module owning it.
        if isinstance(module, nn.Linear):
            if isinstance(module, C2COutputProjection) and self.config.fuser_zero_init:
                nn.init.zeros_(module.weight)  # P = 0: a fresh fuser leaves the receiver's KV as it is
            else:
                nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.RMSNorm):
            nn.init.ones_(module.weight)
        elif isinstance(module, C2CFuserBranch) and module.fusion == "gated":
            module.gate_logit.fill_(self.config.gate_init_logit)


class C2CForCausalLM(C2CPreTrainedModel, GenerationMixin):
    """A frozen receiver that answers from its prompt cache enriched by a frozen sharer's cache through a trained fuser.

    Build it from loaded models with `from_base_models(receiver, sharer, **config_kwargs)`, from a config
    (`C2CForCausalLM(config)`, random bases) or from a checkpoint with `from_pretrained`, which loads the fuser and
    then both bases from their own repos. Only the fuser trains and only the fuser is saved.
    """

    _auto_class = "AutoModelForCausalLM"

    def __init__(
        self,
        config: C2CConfig,
        receiver: PreTrainedModel | None = None,
        sharer: PreTrainedModel | None = None,
        *,
        attach_bases: bool = True,
    ):
        """`attach_bases=False` builds the fuser only (used by `from_pretrained`, which attaches loaded bases)."""
        super().__init__(config)
        self.fuser = C2CFuser(config)
        self.span_aligner: SpanAligner | None = None  # token_alignment="span": set by from_base_models / from_pretrained
        self.post_init()  # initialises the fuser only: the bases are attached afterwards and keep their weights
        if attach_bases:
            receiver = receiver if receiver is not None else AutoModelForCausalLM.from_config(config.text_config)
            sharer = sharer if sharer is not None else AutoModelForCausalLM.from_config(config.sharer_config)
            self.attach_bases(receiver, sharer)

    # ------------------------------------------------------------------ construction and loading

    @classmethod
    def from_base_models(
        cls,
        receiver: PreTrainedModel,
        sharer: PreTrainedModel,
        receiver_tokenizer: PreTrainedTokenizerBase | None = None,
        sharer_tokenizer: PreTrainedTokenizerBase | None = None,
        token_alignment: str | None = "longest",
        **config_kwargs,
    ) -> C2CForCausalLM:
        """A C2C model over two already-loaded causal LMs, with a fresh fuser (`config_kwargs` go to `C2CConfig`).

        With both tokenizers given and different vocabularies, a receiver-to-sharer token map is built with the
        `token_alignment` strategy (`"longest"` / `"first"`) and stored in the model, or (`"span"`) the sharer reads
        the prompt in its own tokenization (`SpanAligner`; `from_pretrained` reloads both tokenizers from the bases'
        ids); `token_alignment=None` refuses such a pair. Without tokenizers (or with identical vocabularies) the
        sharer reads the receiver's ids.
        """
        token_map, span_aligner = None, None
        if receiver_tokenizer is not None and sharer_tokenizer is not None:
            if token_alignment == "span":
                cls._check_receiver_tokenizer(receiver_tokenizer, receiver.config)
                if receiver_tokenizer.get_vocab() != sharer_tokenizer.get_vocab():
                    span_aligner = SpanAligner(receiver_tokenizer, sharer_tokenizer)
            else:
                token_map = cls._token_map_for(receiver_tokenizer, sharer_tokenizer, token_alignment, receiver.config)
        config = C2CConfig.from_base_configs(
            copy.deepcopy(receiver.config),
            copy.deepcopy(sharer.config),
            token_alignment="span" if span_aligner is not None else None if token_map is None else token_map.strategy,
            token_alignment_coverage=None if token_map is None else token_map.coverage,
            **config_kwargs,
        )
        model = cls(config, receiver=receiver, sharer=sharer)
        model.span_aligner = span_aligner
        if token_map is not None:
            table = token_map.to_tensor()  # (len(receiver_tokenizer),); ids past it never occur in text
            model.fuser.token_map.zero_()[: len(table)] = table
        if receiver.generation_config is not None:
            model.generation_config = copy.deepcopy(receiver.generation_config)
        return model

    @staticmethod
    def _token_map_for(receiver_tokenizer, sharer_tokenizer, strategy: str | None, receiver_config) -> TokenMap | None:
        """The token map a pair needs, or None when the tokenizers share a vocabulary."""
        if receiver_tokenizer.get_vocab() == sharer_tokenizer.get_vocab():
            return None
        if strategy is None:
            raise ValueError(
                "The receiver and sharer tokenizers differ but token alignment is off (token_alignment=None): "
                "use token_alignment='longest' or 'first' (one sharer token per receiver token) or 'span' (the "
                "sharer reads the prompt in its own tokenization)."
            )
        C2CForCausalLM._check_receiver_tokenizer(receiver_tokenizer, receiver_config)
        token_map = build_token_map(receiver_tokenizer, sharer_tokenizer, strategy=strategy)
        logger.info("C2C token alignment: %s", token_map.summary())
        return token_map

    @staticmethod
    def _check_receiver_tokenizer(receiver_tokenizer: PreTrainedTokenizerBase, receiver_config) -> None:
        if len(receiver_tokenizer) > receiver_config.get_text_config(decoder=True).vocab_size:
            raise ValueError(
                f"The receiver tokenizer has {len(receiver_tokenizer)} tokens but the receiver's embedding only "
                f"{receiver_config.get_text_config(decoder=True).vocab_size}: this tokenizer does not belong to it."
            )

    def attach_bases(self, receiver: PreTrainedModel, sharer: PreTrainedModel) -> None:
        """Attach frozen bases, checking that their KV shapes are the ones this fuser was built for."""
        for role, model, expected, name in (
            ("receiver", receiver, self.config.receiver_kv_shape, self.config.receiver_name_or_path),
            ("sharer", sharer, self.config.sharer_kv_shape, self.config.sharer_name_or_path),
        ):
            found = kv_shape(model.config.get_text_config(decoder=True))
            if found != expected:
                raise ValueError(
                    f"The fuser was built for a {role} {name or ''} with KV cache (layers, kv heads, head dim) = "
                    f"{expected}, but the {role} given ({model.name_or_path or type(model).__name__}) has {found}. "
                    f"Load this fuser with the {role} it was trained for, or train a new fuser for this pair."
                )
            model.requires_grad_(False)
            model.eval()
        self.receiver = receiver
        self.sharer = sharer
        receiver_device = receiver.get_input_embeddings().weight.device
        if receiver_device.type != "meta":
            self.fuser.to(receiver_device)

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
    ) -> C2CForCausalLM:
        """Load the fuser (always fp32) from a C2C checkpoint, then the receiver and sharer from their own repos.

        `dtype`, `device_map`, `attn_implementation` and the Hub options (`cache_dir`, `token`, `local_files_only`,
        `force_download`) reach both bases; `revision` selects the C2C repo's revision, the bases use the revisions
        in the config. `receiver_kwargs` / `sharer_kwargs` add or override load arguments per base;
        already-loaded `receiver` / `sharer` models are used as given (their shapes are checked). A span-aligned
        model (`token_alignment="span"`) also loads both tokenizers from the bases' ids, unless given as
        `receiver_tokenizer` / `sharer_tokenizer`.
        """
        hub_kwargs = {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}
        base_kwargs = {k: kwargs[k] if k in HUB_KWARGS else kwargs.pop(k) for k in BASE_LOAD_KWARGS if k in kwargs}
        if config is None:
            config = C2CConfig.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
        output_loading_info = kwargs.pop("output_loading_info", False)
        model, loading_info = super().from_pretrained(
            pretrained_model_name_or_path,
            *model_args,
            config=config,
            dtype=torch.float32,
            attach_bases=False,
            output_loading_info=True,
            **kwargs,
        )
        loading_info["unexpected_keys"] = {k for k in loading_info["unexpected_keys"] if not k.startswith("receiver.")}
        incomplete = {k: sorted(loading_info[k]) for k in ("missing_keys", "unexpected_keys") if loading_info[k]}
        if incomplete:
            raise ValueError(
                f"The fuser checkpoint at {pretrained_model_name_or_path} does not match its C2C config "
                f"(receiver layers {config.receiver_kv_shape[0]}, fuser_num_blocks {config.fuser_num_blocks}): "
                f"{incomplete}. Load it with the config it was saved with."
            )
        if receiver is None:
            receiver = cls._load_base("receiver", config.receiver_name_or_path, config.receiver_revision, base_kwargs, receiver_kwargs)
        if sharer is None:
            sharer = cls._load_base("sharer", config.sharer_name_or_path, config.sharer_revision, base_kwargs, sharer_kwargs)
        model.attach_bases(receiver, sharer)
        if config.token_alignment == "span":
            tokenizers = [
                given if given is not None else cls._load_tokenizer(role, name, revision, base_kwargs)
                for role, given, name, revision in (
                    ("receiver", receiver_tokenizer, config.receiver_name_or_path, config.receiver_revision),
                    ("sharer", sharer_tokenizer, config.sharer_name_or_path, config.sharer_revision),
                )
            ]
            model.span_aligner = SpanAligner(*tokenizers)
        if config.receiver_lora is not None:
            model._load_receiver_lora(pretrained_model_name_or_path, hub_kwargs)
        return (model, loading_info) if output_loading_info else model

    @staticmethod
    def _load_base(role: str, name_or_path: str | None, revision: str | None, shared: dict, overrides: dict | None) -> PreTrainedModel:
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

    @staticmethod
    def _load_tokenizer(role: str, name_or_path: str | None, revision: str | None, shared: dict) -> PreTrainedTokenizerBase:
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

    @staticmethod
    def _is_trained_key(key: str) -> bool:
        """Whether a state-dict key belongs in a C2C checkpoint: the fuser, and the receiver's LoRA if any."""
        return key.startswith("fuser.") or (key.startswith("receiver.") and ".lora_" in key)

    def add_receiver_lora(
        self, r: int = 8, lora_alpha: int = 16, lora_dropout: float = 0.0, target_modules: list[str] | None = None
    ) -> None:
        """Inject a trainable LoRA (peft) into the frozen receiver; it trains and is saved beside the fuser."""
        from peft import LoraConfig, inject_adapter_in_model

        if any(".lora_" in name for name, _ in self.receiver.named_parameters()):
            raise ValueError("The receiver already carries a LoRA: add_receiver_lora injects one adapter only.")
        settings = dict(
            r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
            target_modules=list(target_modules or ["q_proj", "k_proj", "v_proj", "o_proj"]),
        )  # fmt: skip
        inject_adapter_in_model(LoraConfig(**settings), self.receiver)
        for name, parameter in self.receiver.named_parameters():
            parameter.requires_grad_(".lora_" in name)
        self.config.receiver_lora = settings

    def _load_receiver_lora(self, pretrained_model_name_or_path: str | os.PathLike, hub_kwargs: dict) -> None:
        """Re-inject the receiver LoRA named by the config and load its weights from the checkpoint."""
        from safetensors.torch import load_file
        from transformers.utils.hub import cached_file

        self.add_receiver_lora(**self.config.receiver_lora)
        weights = load_file(cached_file(pretrained_model_name_or_path, "model.safetensors", **hub_kwargs))
        lora_state = {k: v for k, v in weights.items() if k.startswith("receiver.")}
        expected = {k for k in self.state_dict() if k.startswith("receiver.") and ".lora_" in k}
        if set(lora_state) != expected:
            raise ValueError(
                f"The receiver LoRA in {pretrained_model_name_or_path} does not match its config: missing "
                f"{sorted(expected - set(lora_state))[:5]}, unexpected {sorted(set(lora_state) - expected)[:5]}."
            )
        self.receiver.load_state_dict({k.removeprefix("receiver."): v for k, v in lora_state.items()}, strict=False)

    def save_pretrained(self, save_directory: str | os.PathLike, *args, state_dict: dict | None = None, **kwargs):
        """Save the fuser weights (safetensors), the config and the generation config; never the bases."""
        state_dict = self.state_dict() if state_dict is None else state_dict
        fuser_state = {k: v for k, v in state_dict.items() if self._is_trained_key(k)}
        self.config.auto_map = {
            "AutoConfig": "configuration_c2c.C2CConfig",
            "AutoModel": "modeling_c2c.C2CForCausalLM",
            "AutoModelForCausalLM": "modeling_c2c.C2CForCausalLM",
        }
        result = super().save_pretrained(save_directory, *args, state_dict=fuser_state, **kwargs)
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
        missing = [k for k in own if self._is_trained_key(k) and k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if mismatched or missing or unexpected:
            raise ValueError(
                "This state dict does not fit this C2C model (receiver KV shape "
                f"{self.config.receiver_kv_shape}, sharer {self.config.sharer_kv_shape}, fuser hidden "
                f"{self.config.fuser_hidden_size}): shape mismatches (state dict vs model) {mismatched[:5]}, missing "
                f"fuser tensors {missing[:5]}, unexpected tensors {unexpected[:5]}. Was it saved for another pair?"
            )
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        result.missing_keys[:] = [k for k in result.missing_keys if self._is_trained_key(k)]
        return result

    # ------------------------------------------------------------------ training behaviour

    def train(self, mode: bool = True) -> C2CForCausalLM:
        """Train the fuser; the frozen bases always stay in eval mode (no dropout, caches kept)."""
        super().train(mode)
        if hasattr(self, "receiver"):
            self.receiver.eval()
            self.sharer.eval()
        return self

    def set_gate_temperature(self, temperature: float) -> None:
        """Temperature of the relaxed gates in training (annealed from `gate_temperature_start` to `_end`)."""
        if not temperature > 0:
            raise ValueError(f"The gate temperature must be positive, got {temperature}.")
        self.fuser.gate_temperature = float(temperature)

    def get_input_embeddings(self) -> nn.Module:
        return self.receiver.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module:
        return self.receiver.get_output_embeddings()

    # ------------------------------------------------------------------ the C2C forward

    def sharer_inputs(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        sharer_input_ids: torch.LongTensor | None = None,
        sharer_attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.LongTensor, torch.Tensor | None]:
        """The sharer's token ids and mask, position-aligned with the receiver's `input_ids` (explicit sharer ids,
        the stored token map, or the receiver's own ids for a pair that shares a tokenizer)."""
        if sharer_input_ids is None and hasattr(self.fuser, "token_map"):
            return self.fuser.token_map[input_ids], attention_mask  # (B, L) sharer ids, one per receiver token
        if sharer_input_ids is None and self.config.token_alignment == "span":
            raise ValueError(
                "This C2C model aligns tokens by span: its sharer reads the prompt in its own tokenization, which has "
                "no one-to-one sharer token per receiver position. Use `sharer_cache_for` for the sharer's KV, or pass "
                "`sharer_input_ids`."
            )
        if sharer_input_ids is None:
            receiver_vocab = self.config.text_config.vocab_size
            sharer_vocab = self.config.sharer_config.vocab_size
            if receiver_vocab != sharer_vocab:
                raise ValueError(
                    f"The receiver (vocab {receiver_vocab}) and sharer (vocab {sharer_vocab}) do not share a "
                    "tokenizer, so the sharer cannot read the receiver's input_ids: pass `sharer_input_ids` "
                    "(one sharer token per receiver token) or use a token-aligned C2C model."
                )
            return input_ids, attention_mask
        if sharer_input_ids.shape != input_ids.shape:
            raise ValueError(
                f"sharer_input_ids has shape {tuple(sharer_input_ids.shape)} but input_ids has "
                f"{tuple(input_ids.shape)}: the sharer needs one token per receiver position."
            )
        return sharer_input_ids, attention_mask if sharer_attention_mask is None else sharer_attention_mask

    def sharer_prefill(self, sharer_input_ids: torch.LongTensor, sharer_attention_mask: torch.Tensor | None) -> DynamicCache:
        """Run the sharer's backbone (no logits) over the tokens to be fused; returns its full cache."""
        sharer_cache = DynamicCache()  # no config: keeps every token, even for sliding-window sharers
        if sharer_input_ids.shape[1] == 0:
            return sharer_cache
        positions = None
        if sharer_attention_mask is not None:
            positions = position_ids_from_mask(sharer_attention_mask, sharer_input_ids.shape[1])
        self.sharer.base_model(
            input_ids=sharer_input_ids,
            attention_mask=sharer_attention_mask,
            position_ids=positions,
            cache=sharer_cache,
            use_cache=True,
        )
        return sharer_cache

    def sharer_cache_for(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None,
        num_fused: int,
        sharer_input_ids: torch.LongTensor | None = None,
        sharer_attention_mask: torch.Tensor | None = None,
    ) -> DynamicCache:
        """The sharer's KV for the receiver's first `num_fused` positions, one entry per receiver position: a prefill
        over the position-aligned sharer ids (`sharer_inputs`), or, for a span-aligned model, over the sharer's own
        tokenization of those positions' text, gathered onto the receiver's positions."""
        if sharer_input_ids is not None or self.config.token_alignment != "span":
            ids, mask = self.sharer_inputs(input_ids, attention_mask, sharer_input_ids, sharer_attention_mask)
            return self.sharer_prefill(ids[:, :num_fused], None if mask is None else mask[:, :num_fused])
        if self.span_aligner is None:
            raise ValueError(
                "This C2C model aligns tokens by span (token_alignment='span') but holds no SpanAligner: load it with "
                "from_pretrained (which loads both tokenizers) or set `model.span_aligner = SpanAligner(receiver_"
                "tokenizer, sharer_tokenizer)`."
            )
        if num_fused == 0:
            return DynamicCache()
        aligned = self.span_aligner(input_ids[:, :num_fused], None if attention_mask is None else attention_mask[:, :num_fused])
        sharer_cache = self.sharer_prefill(aligned.sharer_input_ids, aligned.sharer_attention_mask)  # (B, H_s, S, D_s)
        return gather_positions(sharer_cache, aligned.positions)  # (B, H_s, num_fused, D_s) per layer

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        sharer_input_ids: torch.LongTensor | None = None,
        sharer_attention_mask: torch.Tensor | None = None,
        fuse_length: int | torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""
        Without a fused cache, `input_ids` is a prompt (optionally followed by a response): the sharer and the
        receiver prefill its first `fuse_length` positions, the receiver's cache for them is fused, and the rest of
        the sequence runs attending to the fused cache. With a fused `C2CCache` (decoding), the receiver runs alone.

        sharer_input_ids / sharer_attention_mask (`(B, L)`, *optional*):
            The sharer's tokens, one per receiver position; default to `input_ids` (same-tokenizer pairs).
        fuse_length (`int` or `(B,)` tensor of equal values, *optional*):
            Number of leading positions whose KV is fused (the prompt minus its last token); default `L - 1`.
            Prompts of a batch are left-padded to one length so that a single split serves every row.
        position_ids (*optional*):
            Default to positions counted over the `attention_mask` (left padding aware), as `generate` uses.
        labels (*optional*):
            Causal-LM labels over `input_ids` (`-100` ignored); the loss uses the positions whose logits are kept.
        """
        if input_ids is None or inputs_embeds is not None:
            raise ValueError("C2CForCausalLM needs `input_ids` (the sharer reads tokens); `inputs_embeds` is not supported.")
        if output_attentions:
            raise ValueError("output_attentions is not supported by C2CForCausalLM: the prompt runs in two passes.")
        if not isinstance(logits_to_keep, int):
            raise ValueError(f"logits_to_keep must be an int for C2CForCausalLM, got {type(logits_to_keep).__name__}.")
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        length = input_ids.shape[1]
        if position_ids is None and attention_mask is not None:
            position_ids = position_ids_from_mask(attention_mask, length)

        if isinstance(cache, C2CCache) and cache.is_fused:  # decoding: fused prompt KV already in the cache
            outputs = self.receiver(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=cache,
                use_cache=True,
                logits_to_keep=logits_to_keep,
                output_hidden_states=output_hidden_states,
                **kwargs,
            )
            logits, hidden_states = outputs.logits, outputs.hidden_states
        else:
            cache, logits, hidden_states = self._prefill_and_fuse(
                input_ids, attention_mask, position_ids, cache, logits_to_keep,
                sharer_input_ids, sharer_attention_mask, fuse_length, output_hidden_states, kwargs,
            )  # fmt: skip

        loss = None
        if labels is not None:
            first_kept = length - logits.shape[1]
            if first_kept > 0 and (labels[:, 1 : first_kept + 1] != -100).any():
                raise ValueError(
                    f"labels supervise positions whose logits are not computed (logits_to_keep={logits_to_keep}): "
                    "raise logits_to_keep or set those labels to -100."
                )
            loss = self.loss_function(
                logits=logits,
                labels=labels[:, first_kept:],
                vocab_size=self.config.text_config.vocab_size,
                num_items_in_batch=num_items_in_batch,
            )
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=cache if use_cache is not False else None,
            hidden_states=hidden_states,
        )

    def _prefill_and_fuse(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.LongTensor | None,
        cache: Cache | None,
        logits_to_keep: int,
        sharer_input_ids: torch.LongTensor | None,
        sharer_attention_mask: torch.Tensor | None,
        fuse_length: int | torch.Tensor | None,
        output_hidden_states: bool | None,
        receiver_kwargs: dict,
    ) -> tuple[C2CCache, torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """Prefill, then fuse: returns the fused cache, the kept logits and (optionally) the hidden states."""
        batch, length = input_ids.shape
        num_fused = self._resolve_fuse_length(fuse_length, length)
        if not isinstance(cache, C2CCache):
            if cache is not None and cache.get_seq_length() > 0:
                raise ValueError(
                    f"C2CForCausalLM got a non-empty {type(cache).__name__} that holds no fused prompt: start from "
                    "an empty cache (or none), or continue with the C2CCache a previous call returned."
                )
            cache = C2CCache(self.receiver.config)
        if position_ids is None:
            position_ids = torch.arange(length, device=input_ids.device).unsqueeze(0)

        # 1. Sharer prefill over [0, num_fused) (unless `generate` already ran it on the un-expanded batch).
        if cache.has_sharer_state:
            if sharer_input_ids is not None:
                raise ValueError(
                    "Got both sharer_input_ids and a cache that already holds the sharer's KV (a SharerCacheMemo "
                    "batch, or generate's): give one of them."
                )
            sharer_batch = cache.sharer_cache.layers[0].keys.shape[0]
            if batch % sharer_batch:
                raise ValueError(f"The sharer cache has batch {sharer_batch}, which does not divide the input batch {batch}.")
            if sharer_batch != batch:
                cache.sharer_cache.batch_repeat_interleave(batch // sharer_batch)
        else:
            cache.sharer_cache = self.sharer_cache_for(
                input_ids, attention_mask, num_fused, sharer_input_ids, sharer_attention_mask
            )

        # Logits are computed only where kept: the last `logits_to_keep` positions (0 = all).
        kept_rest = length - num_fused if logits_to_keep == 0 else min(logits_to_keep, length - num_fused)
        kept_prefix = num_fused if logits_to_keep == 0 else logits_to_keep - kept_rest
        phase_kwargs = dict(use_cache=True, output_hidden_states=output_hidden_states, **receiver_kwargs)

        # 2. Receiver prefill over the same positions; prompt tokens do not see fused KV.
        prefix = None
        if num_fused > 0:
            prefix = self.receiver(
                input_ids=input_ids[:, :num_fused],
                attention_mask=None if attention_mask is None else attention_mask[:, :num_fused],
                position_ids=position_ids[:, :num_fused],
                cache=cache,
                logits_to_keep=kept_prefix if kept_prefix > 0 else torch.empty(0, dtype=torch.long, device=input_ids.device),
                **phase_kwargs,
            )
        # 3. Fuse the receiver's prompt KV with the sharer's, layer by layer.
        cache.fuse(self.fuser)
        # 4. The rest (the last prompt token, a response) attends to the fused cache.
        rest = self.receiver(
            input_ids=input_ids[:, num_fused:],
            attention_mask=attention_mask,
            position_ids=position_ids[:, num_fused:],
            cache=cache,
            logits_to_keep=kept_rest,
            **phase_kwargs,
        )
        if prefix is None:
            return cache, rest.logits, rest.hidden_states
        logits = torch.cat([prefix.logits, rest.logits], dim=1)  # (B, kept, V)
        hidden_states = None
        if output_hidden_states:
            hidden_states = tuple(torch.cat(pair, dim=1) for pair in zip(prefix.hidden_states, rest.hidden_states))
        return cache, logits, hidden_states

    @staticmethod
    def _resolve_fuse_length(fuse_length: int | torch.Tensor | None, length: int) -> int:
        if fuse_length is None:
            return length - 1
        if isinstance(fuse_length, torch.Tensor):
            values = fuse_length.flatten().unique()
            if values.numel() != 1:
                raise ValueError(
                    f"fuse_length differs between rows ({values.tolist()}): left-pad the prompts of a batch to one "
                    "length so that one split serves every row."
                )
            fuse_length = int(values.item())
        if not 0 <= fuse_length < length:
            raise ValueError(
                f"fuse_length={fuse_length} is out of range for a sequence of {length} tokens: at least the last "
                "prompt token must run after fusion (0 <= fuse_length < sequence length)."
            )
        return fuse_length

    # ------------------------------------------------------------------ generation

    def generate(self, inputs: torch.Tensor | None = None, generation_config=None, **kwargs):
        """`GenerationMixin.generate` with the sharer run once, on the un-expanded batch, before decoding.

        Supports greedy, sampling, beam search, `num_return_sequences`, streamers and left-padded batches.
        Refused: static/quantized/offloaded caches, `prefill_chunk_size`, `use_cache=False`, assisted decoding.
        """
        self._check_generation_mode(generation_config, kwargs)
        input_ids = inputs if inputs is not None else kwargs.get("input_ids")
        if input_ids is None or kwargs.get("inputs_embeds") is not None:
            raise ValueError("C2CForCausalLM.generate needs `input_ids` (the sharer reads the prompt's tokens).")
        sharer_input_ids = kwargs.pop("sharer_input_ids", None)
        sharer_attention_mask = kwargs.pop("sharer_attention_mask", None)
        cache = kwargs.get("cache")
        if cache is None:
            with torch.no_grad():
                sharer_cache = self.sharer_cache_for(
                    input_ids, kwargs.get("attention_mask"), input_ids.shape[1] - 1, sharer_input_ids, sharer_attention_mask
                )
            kwargs["cache"] = C2CCache(self.receiver.config, sharer_cache)
        elif not isinstance(cache, C2CCache):
            raise ValueError(
                f"C2CForCausalLM.generate got a {type(cache).__name__}: pass no cache (one is built) or a C2CCache "
                "returned by an earlier call."
            )
        return super().generate(inputs, generation_config, **kwargs)

    def _check_generation_mode(self, generation_config, kwargs: dict) -> None:
        config = generation_config if generation_config is not None else self.generation_config

        def setting(name: str):
            return kwargs[name] if name in kwargs else getattr(config, name, None)

        if setting("use_cache") is False:
            raise ValueError(
                "C2CForCausalLM.generate needs use_cache=True: the fused prompt lives in the cache, and without it "
                "every step would re-run the sharer and fuse generated tokens."
            )
        if setting("cache_implementation") not in (None, "dynamic"):
            raise ValueError(
                f"cache_implementation={setting('cache_implementation')!r} is not supported by C2CForCausalLM: "
                "fusion needs its dynamic C2CCache. Leave cache_implementation unset."
            )
        if setting("prefill_chunk_size") is not None:
            raise ValueError(
                "prefill_chunk_size is not supported by C2CForCausalLM: the whole prompt must be prefilled and fused "
                "in one call."
            )
        for name in ("assistant_model", "prompt_lookup_num_tokens", "assistant_early_exit"):
            if setting(name) is not None:
                raise ValueError(f"{name} (assisted decoding) is not supported by C2CForCausalLM.")


__all__ = ["C2CForCausalLM", "C2CFuser", "C2CFuserBranch", "C2CLayerFuser", "C2CPreTrainedModel", "C2CResidualBlock"]
