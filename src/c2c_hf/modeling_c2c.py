"""Cache-to-Cache (C2C): a frozen receiver LM answers from its prompt KV cache fused with a frozen sharer's.

Read top to bottom next to the method (Fu et al., arXiv 2510.03215):
- `C2CForCausalLM.fuse_prompt`: "prefill, then fuse". The sharer and the receiver prefill the prompt minus its last
  token; the fuser (`fuser.py`) turns each receiver layer's KV and its paired sharer layer's KV into fused KV,
  which replaces the receiver's in its `C2CCache` (`cache.py`).
- `C2CForCausalLM.forward`: `fuse_prompt`, then the rest of the sequence (the last prompt token, a response) runs on
  the receiver attending to the fused cache; with a fused cache (decoding) the receiver runs alone.
- `C2CForCausalLM.generate`: runs the sharer once on the un-expanded batch, then the stock `generate`.
Loading the bases (`loading.py`), the receiver LoRA (`lora.py`) and model cards (`hub.py`) live in their own modules.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import (
    AutoModelForCausalLM,
    Cache,
    DynamicCache,
    GenerationMixin,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple

from .alignment import (
    ALIGNMENTS,
    SpanAligner,
    TokenMap,
    gather_positions,
    pair_alignment,
    position_aligned_sharer_ids,
    position_ids_from_mask,
)
from .cache import KV, C2CCache
from .configuration_c2c import C2CConfig
from .fuser import C2CFuser, C2COutputProjection
from .loading import C2CCheckpointMixin
from .validation import check_base_models, check_forward_inputs, check_fuse_prompt_inputs, check_generate_inputs


@dataclass
class C2CPromptOutput(ModelOutput):
    """What `C2CForCausalLM.fuse_prompt` returns.

    Args:
        cache (`C2CCache`): the receiver's cache over the fused positions, fused (`cache.is_fused`).
        logits (`torch.FloatTensor` of shape `(B, kept, V)`, *optional*): the receiver's logits at the last
            `logits_to_keep` fused positions, computed before fusion (prompt tokens never attend to fused KV).
        hidden_states (`tuple(torch.FloatTensor)`, *optional*): the receiver's hidden states over the fused positions.
        receiver_kv (`list[tuple[torch.Tensor, torch.Tensor]]`, *optional*): per receiver layer, its own
            `(keys, values)` before fusion (`keep_receiver_kv=True`), for analyses that compare the two.
    """

    cache: C2CCache | None = None
    logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    receiver_kv: KV | None = None


def backbone_prefill(
    model: PreTrainedModel,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None = None,
    cache: DynamicCache | None = None,
    position_ids: torch.LongTensor | None = None,
) -> DynamicCache:
    """Prefill `input_ids` `(B, N)` through a causal LM's backbone (no logits) into `cache`, which it returns.

    Positions default to those counted over `attention_mask`. The default cache is laid out for `model`
    (sliding-window layers keep their tail, as in generation); `DynamicCache()` keeps every position of every layer.
    """
    cache = DynamicCache(config=model.config) if cache is None else cache
    if input_ids.shape[1] == 0:
        return cache
    if position_ids is None and attention_mask is not None:
        position_ids = position_ids_from_mask(attention_mask, input_ids.shape[1])
    model.base_model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache, use_cache=True
    )
    return cache


def check_generation_settings(generation_config, kwargs: dict) -> None:
    """Refuse the `generate` settings that break "prefill the whole prompt once, then fuse"."""

    def setting(name: str):
        return kwargs[name] if name in kwargs else getattr(generation_config, name, None)

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


class C2CPreTrainedModel(PreTrainedModel):
    config_class = C2CConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    # Activation checkpointing (`gradient_checkpointing_enable`) covers the fuser: see `_set_gradient_checkpointing`.
    supports_gradient_checkpointing = True
    gradient_checkpointing = False
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def _apply(self, fn, recurse: bool = True):
        """Casts of the whole model (`to(dtype)`, `half()`, `bfloat16()`) reach the bases; a float32 fuser moves with
        them but stays float32, the precision it was trained and is saved in (as `from_pretrained` keeps it whatever
        `dtype` the bases load in; it casts the KV it reads and writes), with a warning that says so."""
        fuser = self._modules.get("fuser")
        weight = None if fuser is None else next(fuser.parameters(), None)
        if not recurse or weight is None or weight.dtype != torch.float32:
            return super()._apply(fn, recurse)
        probe = fn(torch.zeros((), dtype=weight.dtype, device=weight.device))  # where and in what fn puts a float32
        if probe.dtype == torch.float32 or not probe.is_floating_point():
            return super()._apply(fn, recurse)
        warnings.warn(
            f"C2CForCausalLM: the bases are cast to {probe.dtype} but the fuser stays torch.float32, its trained "
            f"precision (from_pretrained keeps it in float32 too). To cast the fuser as well: model.fuser.to({probe.dtype}).",
            stacklevel=4,  # the caller of `model.to(...)` / `model.half()`
        )
        for name, module in self.named_children():
            module._apply((lambda tensor: tensor.to(probe.device)) if name == "fuser" else fn)
        return super()._apply(fn, recurse=False)

    def _set_gradient_checkpointing(
        self, enable: bool = True, gradient_checkpointing_func: Callable = checkpoint, every_n_layers: int = 1
    ) -> None:
        """Activation checkpointing of the fuser (`fuse_kv`), whose activations over every prompt position of every
        layer are most of what a training step keeps for its backward. The bases' layers are left as they are: they
        are frozen and in eval mode, and their checkpointing would drop the cache, the fused prompt included.
        The checkpoint is non-reentrant: the fuser's inputs need no gradient, so a reentrant one would give it none."""
        reentrant = getattr(gradient_checkpointing_func, "keywords", {}).get("use_reentrant")
        if enable and reentrant:
            raise ValueError(
                "C2CForCausalLM checkpoints its fuser, whose inputs (the frozen bases' KV) need no gradient: with "
                "use_reentrant=True the fuser would get none. Pass use_reentrant=False (the default)."
            )
        if enable and reentrant is None:  # kwargs without it: torch would pick the reentrant variant
            gradient_checkpointing_func = functools.partial(gradient_checkpointing_func, use_reentrant=False)
        self.gradient_checkpointing, self._gradient_checkpointing_func = enable, gradient_checkpointing_func

    def enable_input_require_grads(self) -> None:
        """Nothing to do (activation checkpointing calls it): only the fuser and a receiver LoRA train, and the
        fuser's checkpoint is non-reentrant, so no input needs a gradient. Marking the receiver's embeddings would
        make the frozen receiver keep its prompt activations for a backward that changes nothing."""

    def fuse_kv(self, receiver_kv: KV, sharer_kv: KV) -> KV:
        """The fuser's fused KV; under activation checkpointing in training, its activations are recomputed in the
        backward instead of kept (the relaxed gates' random samples are replayed: same loss and gradients)."""
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return self._gradient_checkpointing_func(self.fuser.__call__, receiver_kv, sharer_kv)
        return self.fuser(receiver_kv, sharer_kv)

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
        elif getattr(module, "has_gate", False):
            module.gate_logit.fill_(self.config.gate_init_logit)


class C2CForCausalLM(C2CCheckpointMixin, C2CPreTrainedModel, GenerationMixin):
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

    # ------------------------------------------------------------------ construction (loading and saving: `C2CCheckpointMixin`)

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
        sharer reads the receiver's ids. Given tokenizers are kept on the model, and every save writes them.
        """
        fields = {f.name for f in dataclasses.fields(C2CConfig)}
        check_base_models(receiver, sharer, receiver_tokenizer, sharer_tokenizer, token_alignment, config_kwargs, fields, ALIGNMENTS)
        alignment = None
        if receiver_tokenizer is not None and sharer_tokenizer is not None:
            receiver_vocab = receiver.config.get_text_config(decoder=True).vocab_size
            alignment = pair_alignment(receiver_tokenizer, sharer_tokenizer, token_alignment, receiver_vocab)
        token_map = alignment if isinstance(alignment, TokenMap) else None
        config = C2CConfig.from_base_configs(
            copy.deepcopy(receiver.config),
            copy.deepcopy(sharer.config),
            token_alignment="span" if isinstance(alignment, SpanAligner) else None if token_map is None else token_map.strategy,
            token_alignment_coverage=None if token_map is None else token_map.coverage,
            **config_kwargs,
        )
        model = cls(config, receiver=receiver, sharer=sharer)
        model.receiver_tokenizer, model.sharer_tokenizer = receiver_tokenizer, sharer_tokenizer  # saves write them
        if isinstance(alignment, SpanAligner):
            model.span_aligner = alignment
        if token_map is not None:
            table = token_map.to_tensor()  # (len(receiver_tokenizer),); ids past it never occur in text
            model.fuser.token_map.zero_()[: len(table)] = table
        if receiver.generation_config is not None:
            model.generation_config = copy.deepcopy(receiver.generation_config)
        return model

    def attach_bases(self, receiver: PreTrainedModel, sharer: PreTrainedModel) -> None:
        """Attach frozen bases, checking that their KV shapes are the ones this fuser was built for."""
        self.config.check_base("receiver", receiver)
        self.config.check_base("sharer", sharer)
        for model in (receiver, sharer):
            model.requires_grad_(False)
            model.eval()
        self.receiver = receiver
        self.sharer = sharer
        receiver_device = receiver.get_input_embeddings().weight.device
        if receiver_device.type != "meta":
            self.fuser.to(receiver_device)

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

    # ------------------------------------------------------------------ the sharer's side

    def sharer_inputs(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        sharer_input_ids: torch.LongTensor | None = None,
        sharer_attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.LongTensor, torch.Tensor | None]:
        """The sharer's token ids and mask, position-aligned with the receiver's `input_ids` (explicit sharer ids,
        the stored token map, or the receiver's own ids for a pair that shares a tokenizer)."""
        token_map = getattr(self.fuser, "token_map", None)
        return position_aligned_sharer_ids(input_ids, attention_mask, sharer_input_ids, sharer_attention_mask, token_map, self.config)

    def sharer_prefill(self, sharer_input_ids: torch.LongTensor, sharer_attention_mask: torch.Tensor | None) -> DynamicCache:
        """The sharer's full cache over the tokens to be fused (its backbone only, no logits)."""
        return backbone_prefill(self.sharer, sharer_input_ids, sharer_attention_mask, DynamicCache())  # every token kept

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

    # ------------------------------------------------------------------ the C2C forward

    def fuse_prompt(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        *,
        position_ids: torch.LongTensor | None = None,
        sharer_input_ids: torch.LongTensor | None = None,
        sharer_attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        logits_to_keep: int | None = None,
        output_hidden_states: bool | None = None,
        keep_receiver_kv: bool = False,
        **receiver_kwargs,
    ) -> C2CPromptOutput:
        """Prefill, then fuse: the receiver's cache over `input_ids` `(B, N)` fused with the sharer's.

        Pass the prompt minus its last token (`N = L - 1`); the last token and whatever follows then run on the
        receiver with `cache=output.cache`, attending to the fused KV (this is what `forward` and `generate` do).
        1. the sharer prefills the same positions (unless `cache` already holds its KV: `generate`, `SharerCacheMemo`);
        2. the receiver prefills them into a `C2CCache` (prompt tokens never attend to fused KV);
        3. the fuser turns each receiver layer's KV and its paired sharer layer's into fused KV, stored in the cache.
        `logits_to_keep`: receiver logits at the last that many positions (0: all; `None`: none);
        `keep_receiver_kv`: also return the receiver's own KV before fusion.
        """
        check_fuse_prompt_inputs(self, input_ids, attention_mask, sharer_input_ids, sharer_attention_mask)
        batch, num_fused = input_ids.shape
        if cache is not None and (cache.get_seq_length() > 0 or getattr(cache, "is_fused", False)):
            raise ValueError(
                f"C2CForCausalLM got a non-empty {type(cache).__name__} that holds no fused prompt: start from an "
                "empty cache (or none), or continue with the C2CCache a previous call returned."
            )
        cache = cache if isinstance(cache, C2CCache) else C2CCache(self.receiver.config)
        if cache.has_sharer_state:  # 1. the sharer's KV, computed once on the un-expanded batch
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
        else:  # 1. sharer prefill over the same positions
            cache.sharer_cache = self.sharer_cache_for(
                input_ids, attention_mask, num_fused, sharer_input_ids, sharer_attention_mask
            )
        if num_fused == 0:
            cache.store_fused_prompt([])
            return C2CPromptOutput(cache=cache, receiver_kv=[] if keep_receiver_kv else None)
        if position_ids is None:
            position_ids = (
                torch.arange(num_fused, device=input_ids.device).unsqueeze(0)
                if attention_mask is None
                else position_ids_from_mask(attention_mask, num_fused)
            )
        no_logits = torch.empty(0, dtype=torch.long, device=input_ids.device)
        receiver_out = self.receiver(  # 2. receiver prefill: (B, H_r, N, D_r) per layer into the cache
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache, use_cache=True,
            logits_to_keep=no_logits if logits_to_keep is None else logits_to_keep,
            output_hidden_states=output_hidden_states, **receiver_kwargs,
        )  # fmt: skip
        receiver_kv = cache.receiver_kv()
        cache.store_fused_prompt(self.fuse_kv(receiver_kv, cache.sharer_kv()))  # 3. fuse, layer by layer
        return C2CPromptOutput(
            cache=cache,
            logits=None if logits_to_keep is None else receiver_out.logits,
            hidden_states=receiver_out.hidden_states,
            receiver_kv=receiver_kv if keep_receiver_kv else None,
        )

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
        Without a fused cache, `input_ids` is a prompt (optionally followed by a response): its first `fuse_length`
        positions are prefilled and fused (`fuse_prompt`), and the rest of the sequence runs attending to the fused
        cache. With a fused `C2CCache` (decoding), the receiver runs alone.

        sharer_input_ids / sharer_attention_mask (`(B, L)`, *optional*):
            The sharer's tokens, one per receiver position; default to `input_ids` (same-tokenizer pairs).
        fuse_length (`int` or `(B,)` tensor of equal values, *optional*):
            Number of leading positions whose KV is fused (the prompt minus its last token). Default: with `labels`,
            the position before the first supervised label (every row's response must start in one column); else
            `L - 1`. Prompts of a batch are left-padded to one length so that a single split serves every row.
        position_ids (*optional*):
            Default to positions counted over the `attention_mask` (left padding aware), as `generate` uses.
        labels (*optional*):
            Causal-LM labels over `input_ids` (`-100` ignored); the loss uses the positions whose logits are kept.
            A loss the fuser cannot move is refused: `fuse_length=0`, or labels that supervise only positions up to
            `fuse_length` (predicted before fusion), would give the fuser a gradient of exactly zero.
        """
        num_fused = check_forward_inputs(
            self, input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
            cache=cache, labels=labels, logits_to_keep=logits_to_keep, fuse_length=fuse_length,
            sharer_input_ids=sharer_input_ids, sharer_attention_mask=sharer_attention_mask, output_attentions=output_attentions,
        )  # fmt: skip
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        length = input_ids.shape[1]
        if position_ids is None:
            position_ids = (
                torch.arange(length, device=input_ids.device).unsqueeze(0)
                if attention_mask is None
                else position_ids_from_mask(attention_mask, length)
            )
        receiver_kwargs = dict(output_hidden_states=output_hidden_states, **kwargs)

        prompt = None
        if num_fused is not None:  # prefill (no fused cache yet): fuse the first `num_fused` positions
            # Logits are computed only where kept: the last `logits_to_keep` positions (0 = all).
            kept_rest = length - num_fused if logits_to_keep == 0 else min(logits_to_keep, length - num_fused)
            kept_prefix = num_fused if logits_to_keep == 0 else logits_to_keep - kept_rest
            prompt = self.fuse_prompt(
                input_ids[:, :num_fused],
                None if attention_mask is None else attention_mask[:, :num_fused],
                position_ids=position_ids[:, :num_fused],
                sharer_input_ids=None if sharer_input_ids is None else sharer_input_ids[:, :num_fused],
                sharer_attention_mask=None if sharer_attention_mask is None else sharer_attention_mask[:, :num_fused],
                cache=cache,
                logits_to_keep=kept_prefix if kept_prefix > 0 else None,
                **receiver_kwargs,
            )
            cache, input_ids, position_ids, logits_to_keep = prompt.cache, input_ids[:, num_fused:], position_ids[:, num_fused:], kept_rest
        # The rest (the last prompt token, a response, or a decoding step) attends to the fused cache.
        outputs = self.receiver(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache, use_cache=True,
            logits_to_keep=logits_to_keep, **receiver_kwargs,
        )  # fmt: skip
        logits, hidden_states = outputs.logits, outputs.hidden_states
        if prompt is not None and prompt.logits is not None:
            logits = torch.cat([prompt.logits, logits], dim=1)  # (B, kept, V)
        if prompt is not None and output_hidden_states and prompt.hidden_states is not None:
            hidden_states = tuple(torch.cat(pair, dim=1) for pair in zip(prompt.hidden_states, hidden_states))

        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits,
                labels=labels[:, length - logits.shape[1] :],
                vocab_size=self.config.text_config.vocab_size,
                num_items_in_batch=num_items_in_batch,
            )
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=cache if use_cache is not False else None,
            hidden_states=hidden_states,
        )

    # ------------------------------------------------------------------ generation

    def generate(self, inputs: torch.Tensor | None = None, generation_config=None, **kwargs):
        """`GenerationMixin.generate` with the sharer run once, on the un-expanded batch, before decoding.

        Supports greedy, sampling, beam search, `num_return_sequences`, streamers and left-padded batches.
        Refused: static/quantized/offloaded caches, `prefill_chunk_size`, `use_cache=False`, assisted decoding.
        """
        check_generation_settings(generation_config if generation_config is not None else self.generation_config, kwargs)
        input_ids = inputs if inputs is not None else kwargs.get("input_ids")
        check_generate_inputs(self, input_ids, kwargs)
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


__all__ = ["C2CForCausalLM", "C2CPreTrainedModel", "C2CPromptOutput"]
