"""Configuration of a Cache-to-Cache (C2C) model: a receiver, a sharer and the fuser between them."""

from __future__ import annotations

from typing import ClassVar

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .alignment import ALIGNMENTS as TOKEN_ALIGNMENT_STRATEGIES
from .fuser import FUSIONS
from .validation import describe, is_finite_number, is_integer

LAYER_MAP_STRATEGIES = ("terminal", "proportional")
LORA_SETTINGS = ("r", "lora_alpha", "lora_dropout", "target_modules")  # the keys of `receiver_lora`


def check_base_config(name: str, role: str, config: PreTrainedConfig) -> None:
    """The `role` base's config (`name` in `C2CConfig`) must describe a KV cache of positive sizes."""
    for attribute in ("num_hidden_layers", "num_attention_heads"):
        value = getattr(config, attribute, None)
        if not is_integer(value) or value <= 0:
            raise ValueError(f"{name}.{attribute} must be a positive integer (the {role}'s), got {value!r}.")
    shape = kv_shape(config)
    if not all(is_integer(size) and size > 0 for size in shape):
        raise ValueError(
            f"{name} describes a {role} KV cache (layers, kv heads, head dim) = {shape}: each must be a positive integer."
        )


def kv_shape(config: PreTrainedConfig) -> tuple[int, int, int]:
    """`(num_layers, num_kv_heads, head_dim)` of the KV cache a causal LM with this config stores."""
    num_heads = config.num_attention_heads
    num_kv_heads = getattr(config, "num_key_value_heads", None) or num_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // num_heads
    return config.num_hidden_layers, num_kv_heads, head_dim


def build_layer_map(strategy: str | list[int], receiver_layers: int, sharer_layers: int) -> list[int]:
    """Sharer layer paired with each receiver layer.

    - `"terminal"` (paper default): align the deepest layers, receiver layer t of T takes sharer layer
      `clamp(S - T + t, 0, S - 1)`.
    - `"proportional"`: spread the receiver's depth over the sharer's, first to first and last to last.
    - an explicit list of `receiver_layers` sharer-layer indices.
    """
    T, S = receiver_layers, sharer_layers
    if isinstance(strategy, (list, tuple)):
        not_indices = [s for s in strategy if not is_integer(s)]
        if not_indices:
            raise ValueError(
                f"layer_map entries must be sharer layer indices (integers), got {not_indices[:5]}: give one int per "
                "receiver layer, or a strategy name ('terminal', 'proportional')."
            )
        layer_map = [int(s) for s in strategy]
        if len(layer_map) != T:
            raise ValueError(
                f"layer_map has {len(layer_map)} entries but the receiver has {T} layers: give one sharer layer per "
                "receiver layer, or a strategy name ('terminal', 'proportional')."
            )
        bad = [s for s in layer_map if not 0 <= s < S]
        if bad:
            raise ValueError(f"layer_map entries {bad} are out of range: the sharer has {S} layers (valid: 0..{S - 1}).")
        return layer_map
    if strategy == "terminal":
        return [min(max(S - T + t, 0), S - 1) for t in range(T)]
    if strategy == "proportional":
        return [S - 1] if T == 1 else [round(t * (S - 1) / (T - 1)) for t in range(T)]
    raise ValueError(
        f"Unknown layer_map strategy {strategy!r}: use one of {LAYER_MAP_STRATEGIES} or an explicit list of sharer layers."
    )


class C2CConfig(PreTrainedConfig):
    r"""
    Configuration of [`C2CForCausalLM`]: a frozen receiver (`text_config`, the model that answers), a frozen sharer
    (`sharer_config`) and a trained fuser that projects the sharer's KV cache into the receiver's and fuses it.

    Args:
        text_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of the receiver causal LM (named `text_config` so that `generate` takes special tokens and the
            cache layout from it). Defaults to a full-size Qwen3 config.
        sharer_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of the sharer causal LM. Defaults to a full-size Qwen2 config.
        receiver_name_or_path / sharer_name_or_path (`str`, *optional*):
            Hub ids or local paths the bases are loaded from by `from_pretrained`; the checkpoint never holds them.
        receiver_revision / sharer_revision (`str`, *optional*):
            Revisions of those repos.
        layer_map (`str` or `list[int]`, defaults to `"terminal"`):
            Sharer layer fused into each receiver layer: `"terminal"`, `"proportional"` or an explicit list.
        fuser_hidden_size (`int`, defaults to 1024):
            Width of the fuser's MLP (the paper's default; the main size/cost lever).
        fuser_intermediate_size (`int`, *optional*):
            Inner width of the fuser's residual blocks; defaults to `fuser_hidden_size`.
        fuser_num_blocks (`int`, defaults to 3):
            Residual MLP blocks per K or V branch: one shared, one on the dynamic-weight head, the rest on the
            projection path (so at least 2).
        fuser_dropout (`float`, defaults to 0.1):
            Dropout inside the residual blocks during training.
        fuser_zero_init (`bool`, defaults to `False`):
            Initialise every branch's output projection to zero, so that a fresh fuser adds nothing (`P = 0`): the
            model starts as exactly the receiver and training moves it away (as LoRA starts at its base). With the
            default random init a fresh fuser perturbs the receiver's cache and training first has to undo that.
            Needs a residual fusion (`"gated"` or `"weighted"`).
        fusion (`str`, defaults to `"gated"`):
            How a branch combines the caches (the paper's ablation ladder): `"gated"` is C2C, `X_r + g * w * P` with
            `P` projected from `[X_s, X_r]`; `"weighted"` drops the layer gate, `X_r + w * P`; `"projection"` keeps
            only the projection of the sharer's KV, which replaces the receiver's (`P(X_s)`, no receiver input, no
            weight, no gate).
        gate_init_logit (`float`, defaults to 1.0):
            Initial gate logit of every layer (K and V). Positive means open: a fresh fuser is on, at inference and
            (with probability `sigmoid(logit)`, per head and token) in training. At 1.0 training drops about a
            quarter of the fused contributions; where the gates barely move (small data), a higher value such as 4
            fits and transfers better (`docs/results/real-cpu/`: 34.8% vs 24.2% of held-out facts, gates at 4 vs 1).
        gate_temperature_start / gate_temperature_end (`float`, defaults to 1.0 / 0.001):
            Temperature of the relaxed (logistic-noise) gate, annealed from start to end over training.
        token_alignment (`str`, *optional*):
            `None` when the sharer reads the receiver's token ids (same tokenizer). `"longest"` or `"first"`: the
            strategy of the stored receiver-to-sharer token map (`fuser.token_map`), which turns receiver ids into
            sharer ids inside `forward` / `generate`. `"span"`: the sharer reads the prompt's text in its own
            tokenization and each receiver position takes the KV of the sharer token ending with it or last before
            it (`SpanAligner`, built from both bases' tokenizers).
        token_alignment_coverage (`float`, *optional*):
            Share of receiver tokens that map to exactly one sharer token (reported, not used).
        receiver_lora (`dict`, *optional*):
            LoRA on the receiver trained beside the fuser (`r`, `lora_alpha`, `lora_dropout`, `target_modules`);
            its weights are saved with the fuser's and re-injected by `from_pretrained`.
    """

    model_type = "c2c"
    _auto_class = "AutoConfig"  # saved checkpoints carry this file, for `trust_remote_code=True` without c2c_hf
    sub_configs_defaults: ClassVar[dict[str, SubConfigSpec]] = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen3"),
        "sharer_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen2"),
    }

    text_config: dict | PreTrainedConfig | None = None
    sharer_config: dict | PreTrainedConfig | None = None
    receiver_name_or_path: str | None = None
    receiver_revision: str | None = None
    sharer_name_or_path: str | None = None
    sharer_revision: str | None = None
    layer_map: str | list[int] = "terminal"
    fuser_hidden_size: int = 1024
    fuser_intermediate_size: int | None = None
    fuser_num_blocks: int = 3
    fuser_dropout: float = 0.1
    fuser_zero_init: bool = False
    fusion: str = "gated"
    gate_init_logit: float = 1.0
    gate_temperature_start: float = 1.0
    gate_temperature_end: float = 0.001
    token_alignment: str | None = None
    token_alignment_coverage: float | None = None
    receiver_lora: dict | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        for name in ("text_config", "sharer_config"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (dict, PreTrainedConfig)):
                raise TypeError(f"{name} must be a config dict or a PreTrainedConfig, got {describe(value)}.")
        super().__post_init__(**kwargs)
        check_base_config("text_config", "receiver", self.text_config)
        check_base_config("sharer_config", "sharer", self.sharer_config)
        for name in ("receiver_name_or_path", "sharer_name_or_path", "receiver_revision", "sharer_revision"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a str (a Hub id, local path or revision) or None, got {describe(getattr(self, name))}.")
        if self.fuser_intermediate_size is None:
            self.fuser_intermediate_size = self.fuser_hidden_size
        for name in ("fuser_hidden_size", "fuser_intermediate_size"):
            value = getattr(self, name)
            if not is_integer(value) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if not is_integer(self.fuser_num_blocks) or self.fuser_num_blocks < 2:
            raise ValueError(
                f"fuser_num_blocks must be an integer >= 2 (one shared block and one weight-head block), "
                f"got {self.fuser_num_blocks!r}."
            )
        if not is_finite_number(self.fuser_dropout) or not 0.0 <= self.fuser_dropout < 1.0:
            raise ValueError(f"fuser_dropout must be in [0, 1), got {self.fuser_dropout!r}: a dropout probability.")
        if not isinstance(self.fuser_zero_init, bool):
            raise TypeError(f"fuser_zero_init must be True or False, got {describe(self.fuser_zero_init)}.")
        if not isinstance(self.fusion, str) or self.fusion not in FUSIONS:
            raise ValueError(f"Unknown fusion {self.fusion!r}: use one of {tuple(FUSIONS)}.")
        if self.fuser_zero_init and not FUSIONS[self.fusion].residual:
            residual = tuple(name for name, branch in FUSIONS.items() if branch.residual)
            raise ValueError(
                f"fuser_zero_init=True starts the fuser as the receiver, but fusion={self.fusion!r} replaces the "
                f"receiver's KV by the projection, which would start at zero: use a residual fusion {residual}, or "
                "fuser_zero_init=False."
            )
        if not is_finite_number(self.gate_init_logit):
            raise ValueError(
                f"gate_init_logit must be a finite number (the initial gate logit: > 0 open, < 0 closed), got "
                f"{self.gate_init_logit!r}."
            )
        for name in ("gate_temperature_start", "gate_temperature_end"):
            if not is_finite_number(getattr(self, name)) or not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}: a finite number > 0.")
        if self.token_alignment is not None and self.token_alignment not in TOKEN_ALIGNMENT_STRATEGIES:
            raise ValueError(
                f"Unknown token_alignment {self.token_alignment!r}: use one of {TOKEN_ALIGNMENT_STRATEGIES}, or None "
                "for a pair that shares a tokenizer."
            )
        coverage = self.token_alignment_coverage
        if coverage is not None and (not is_finite_number(coverage) or not 0.0 <= coverage <= 1.0):
            raise ValueError(f"token_alignment_coverage must be a share in [0, 1] or None, got {coverage!r}.")
        self.check_receiver_lora()
        self.resolved_layer_map()  # validates an explicit map or a strategy name against both depths

    def check_receiver_lora(self) -> None:
        """`receiver_lora` is None or the settings `add_receiver_lora` takes, with a positive rank."""
        lora = self.receiver_lora
        if lora is None:
            return
        if not isinstance(lora, dict):
            raise TypeError(f"receiver_lora must be a dict of LoRA settings {LORA_SETTINGS} or None, got {describe(lora)}.")
        unknown = sorted(set(lora) - set(LORA_SETTINGS))
        if unknown:
            raise ValueError(f"receiver_lora has unknown settings {unknown}: use {LORA_SETTINGS}.")
        if not is_integer(lora.get("r", 8)) or lora.get("r", 8) <= 0:
            raise ValueError(f"receiver_lora['r'] (the LoRA rank) must be a positive integer, got {lora['r']!r}.")

    @property
    def receiver_kv_shape(self) -> tuple[int, int, int]:
        """`(num_layers, num_kv_heads, head_dim)` of the receiver."""
        return kv_shape(self.text_config)

    @property
    def sharer_kv_shape(self) -> tuple[int, int, int]:
        """`(num_layers, num_kv_heads, head_dim)` of the sharer."""
        return kv_shape(self.sharer_config)

    def check_base(self, role: str, model) -> None:
        """Refuse a `role` ("receiver" / "sharer") base model whose KV cache is not the one this config describes."""
        expected = self.receiver_kv_shape if role == "receiver" else self.sharer_kv_shape
        found = kv_shape(model.config.get_text_config(decoder=True))
        if found != expected:
            name = getattr(self, f"{role}_name_or_path") or ""
            raise ValueError(
                f"The fuser was built for a {role} {name} with KV cache (layers, kv heads, head dim) = {expected}, "
                f"but the {role} given ({model.name_or_path or type(model).__name__}) has {found}. Load this fuser "
                f"with the {role} it was trained for, or train a new fuser for this pair."
            )

    def resolved_layer_map(self) -> list[int]:
        """The sharer layer index for each receiver layer."""
        return build_layer_map(self.layer_map, self.receiver_kv_shape[0], self.sharer_kv_shape[0])

    def gate_temperature_at(self, progress: float) -> float:
        """Gate temperature after a fraction `progress` of training: exponential from start to end."""
        progress = min(max(progress, 0.0), 1.0)
        return self.gate_temperature_start * (self.gate_temperature_end / self.gate_temperature_start) ** progress

    @classmethod
    def from_base_configs(
        cls, receiver_config: PreTrainedConfig, sharer_config: PreTrainedConfig, **kwargs
    ) -> C2CConfig:
        """Build a config from the two bases' configs; their `_name_or_path` becomes the id they are loaded from."""
        kwargs.setdefault("receiver_name_or_path", receiver_config.name_or_path or None)
        kwargs.setdefault("sharer_name_or_path", sharer_config.name_or_path or None)
        return cls(
            text_config=receiver_config.get_text_config(decoder=True),
            sharer_config=sharer_config.get_text_config(decoder=True),
            **kwargs,
        )


__all__ = ["C2CConfig", "build_layer_map", "kv_shape"]
