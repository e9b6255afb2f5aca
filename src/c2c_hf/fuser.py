"""The C2C fuser: per receiver layer, a K and a V branch that fuse the paired sharer layer's KV into the receiver's.

Read next to the method (Fu et al., arXiv 2510.03215). Every branch flattens `[X_s, X_r]` per token, projects it
through an MLP to the receiver's KV width (`P`), and combines it with the receiver's own `X_r`. The paper's ablation
ladder is a registry of branch classes, one per `C2CConfig.fusion` value:

- `"projection"` (`ProjectionFusion`): `P(X_s)` replaces `X_r` (no receiver input, no weight, no gate);
- `"weighted"` (`WeightedFusion`): `X_r + w * P([X_s, X_r])`, with `w` a dynamic weight per token and KV head;
- `"gated"` (`GatedFusion`, C2C): `X_r + g * w * P([X_s, X_r])`, with `g` a learnable per-layer gate.

A new variant is one subclass registered with `@register_fusion("name")`: the config, the model, the checkpoint
format and the model card pick it up from `FUSIONS`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers import PreTrainedConfig

from .alignment import STRATEGIES
from .cache import KV


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


FUSIONS: dict[str, type[C2CFuserBranch]] = {}  # `C2CConfig.fusion` value -> branch class


def register_fusion(name: str) -> Callable[[type[C2CFuserBranch]], type[C2CFuserBranch]]:
    """Class decorator: make a branch class available as `C2CConfig(fusion=name)`."""

    def register(branch_class: type[C2CFuserBranch]) -> type[C2CFuserBranch]:
        FUSIONS[name] = branch_class
        return branch_class

    return register


class C2CFuserBranch(nn.Module):
    """The projection path every fusion shares: `[X_s (, X_r)]` flattened per token -> Linear -> shared block ->
    projection blocks -> Linear -> `P: (B, H_r, N, D_r)`. Subclasses say how `P` meets the receiver's `X_r`.

    `config` is the model's `C2CConfig` (typed by its base class: the config module imports this one's registry).
    Class attributes: `reads_receiver` (`X_r` is an input of the projection), `residual` (the output is `X_r` plus a
    contribution, so a zero projection leaves the receiver as it is), `has_gate` (a learnable layer gate).
    """

    reads_receiver = True
    residual = True
    has_gate = False

    def __init__(self, sharer_heads: int, sharer_head_dim: int, receiver_heads: int, receiver_head_dim: int, config: PreTrainedConfig):
        super().__init__()
        self.receiver_heads, self.receiver_head_dim = receiver_heads, receiver_head_dim
        hidden, intermediate, dropout = config.fuser_hidden_size, config.fuser_intermediate_size, config.fuser_dropout
        receiver_width = receiver_heads * receiver_head_dim if self.reads_receiver else 0
        self.in_proj = nn.Linear(sharer_heads * sharer_head_dim + receiver_width, hidden)
        self.shared_block = C2CResidualBlock(hidden, intermediate, dropout)
        self.projection_blocks = nn.ModuleList(
            C2CResidualBlock(hidden, intermediate, dropout) for _ in range(config.fuser_num_blocks - 2)
        )
        self.out_proj = C2COutputProjection(hidden, receiver_heads * receiver_head_dim)

    def shared_features(self, sharer_x: torch.Tensor, receiver_x: torch.Tensor) -> torch.Tensor:
        """`(B, N, hidden)` features of each token, in the fuser's own dtype (fp32) whatever the bases' dtype."""
        inputs = [sharer_x, receiver_x] if self.reads_receiver else [sharer_x]
        features = torch.cat([x.transpose(1, 2).flatten(2) for x in inputs], dim=-1)  # (B, N, H_s*D_s [+ H_r*D_r])
        return self.shared_block(self.in_proj(features.to(self.in_proj.weight.dtype)))

    def projection(self, hidden: torch.Tensor) -> torch.Tensor:
        """`P: (B, H_r, N, D_r)` from the shared features `(B, N, hidden)`."""
        batch, length, _ = hidden.shape
        for block in self.projection_blocks:
            hidden = block(hidden)
        projected = self.out_proj(hidden)  # (B, N, H_r*D_r)
        return projected.view(batch, length, self.receiver_heads, self.receiver_head_dim).transpose(1, 2)

    def forward(
        self, sharer_x: torch.Tensor, receiver_x: torch.Tensor, temperature: float, is_open: bool | None = None
    ) -> torch.Tensor:
        """Fused `(B, H_r, N, D_r)` from `sharer_x: (B, H_s, N, D_s)` and `receiver_x: (B, H_r, N, D_r)`.

        `temperature`: of the relaxed gate in training; `is_open`: the hard gate at inference when the caller has
        read it already (one host read for all layers); both are ignored by fusions without a gate."""
        raise NotImplementedError


@register_fusion("projection")
class ProjectionFusion(C2CFuserBranch):
    """Projection only: `P(X_s)` replaces the receiver's KV (the ablation's first rung)."""

    reads_receiver = False
    residual = False

    def forward(self, sharer_x, receiver_x, temperature, is_open=None):
        return self.projection(self.shared_features(sharer_x, receiver_x)).to(receiver_x.dtype)


@register_fusion("weighted")
class WeightedFusion(C2CFuserBranch):
    """`X_r + w * P([X_s, X_r])`: the dynamic weight `w` (shared features -> block -> Linear(hidden -> H_r) ->
    sigmoid) scales the projection per token and KV head."""

    def __init__(self, sharer_heads: int, sharer_head_dim: int, receiver_heads: int, receiver_head_dim: int, config: PreTrainedConfig):
        super().__init__(sharer_heads, sharer_head_dim, receiver_heads, receiver_head_dim, config)
        self.weight_block = C2CResidualBlock(config.fuser_hidden_size, config.fuser_hidden_size, config.fuser_dropout)
        self.weight_head = nn.Linear(config.fuser_hidden_size, receiver_heads)

    def contribution_weight(self, hidden: torch.Tensor, temperature: float) -> torch.Tensor:
        """`(B, H_r, N, 1)` weight of the projection: the dynamic weight `w`."""
        weight = torch.sigmoid(self.weight_head(self.weight_block(hidden)))  # (B, N, H_r)
        return weight.transpose(1, 2).unsqueeze(-1)

    def forward(self, sharer_x, receiver_x, temperature, is_open=None):
        hidden = self.shared_features(sharer_x, receiver_x)  # (B, N, hidden)
        projected = self.projection(hidden)  # (B, H_r, N, D_r); before the weight: dropout and gate noise draw in order
        contribution = self.contribution_weight(hidden, temperature) * projected
        return (receiver_x.to(contribution.dtype) + contribution).to(receiver_x.dtype)


@register_fusion("gated")
class GatedFusion(WeightedFusion):
    """C2C: `X_r + g * w * P([X_s, X_r])` with one learnable gate logit per branch.

    Training relaxes the gate with logistic noise, `sigmoid((logit + noise) / T)`, so it is open (> 1/2) with
    probability exactly `sigmoid(logit)`; inference uses the hard gate `logit > 0`. The two agree: a gate open at
    inference is one that was open in most training samples.
    """

    has_gate = True

    def __init__(self, sharer_heads: int, sharer_head_dim: int, receiver_heads: int, receiver_head_dim: int, config: PreTrainedConfig):
        super().__init__(sharer_heads, sharer_head_dim, receiver_heads, receiver_head_dim, config)
        self.gate_logit = nn.Parameter(torch.tensor(float(config.gate_init_logit)))

    def gate(self, batch: int, length: int, temperature: float) -> torch.Tensor:
        """The relaxed gate `(B, H_r, N, 1)` of one training sample; the hard 0/1 gate (a scalar) at inference."""
        if not self.training:
            return (self.gate_logit > 0).to(self.gate_logit.dtype)
        uniform = torch.rand(batch, self.receiver_heads, length, 1, device=self.gate_logit.device).clamp(1e-6, 1 - 1e-6)
        logistic_noise = torch.log(uniform) - torch.log1p(-uniform)
        return torch.sigmoid((self.gate_logit + logistic_noise) / temperature)

    def contribution_weight(self, hidden: torch.Tensor, temperature: float) -> torch.Tensor:
        weight = super().contribution_weight(hidden, temperature)  # (B, H_r, N, 1)
        if not self.training:  # `forward` only gets here with the hard gate open, i.e. exactly 1
            return weight
        return self.gate(hidden.shape[0], hidden.shape[1], temperature) * weight

    def forward(self, sharer_x, receiver_x, temperature, is_open=None):
        if not self.training and not (self.gate_logit > 0 if is_open is None else is_open):
            return receiver_x  # closed gate: the receiver's own KV, exactly
        return super().forward(sharer_x, receiver_x, temperature)


class C2CLayerFuser(nn.Module):
    """The K and V branches for one receiver layer, of the config's fusion variant."""

    def __init__(self, sharer_shape: tuple[int, int], receiver_shape: tuple[int, int], config: PreTrainedConfig):
        super().__init__()
        branch_class = FUSIONS[config.fusion]
        self.key = branch_class(*sharer_shape, *receiver_shape, config)
        self.value = branch_class(*sharer_shape, *receiver_shape, config)

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
    """All layer fusers of a C2C model: receiver layer `t` is fused with sharer layer `layer_map[t]`.

    It holds the token map too (receiver id -> sharer id) for pairs aligned token by token (`token_alignment`
    "longest" / "first"), so that a checkpoint's one weights file carries everything built for the pair.
    """

    def __init__(self, config: PreTrainedConfig):
        super().__init__()
        receiver_layers, receiver_heads, receiver_head_dim = config.receiver_kv_shape
        _, sharer_heads, sharer_head_dim = config.sharer_kv_shape
        self.layer_map = config.resolved_layer_map()
        self.gate_temperature = config.gate_temperature_start
        if config.token_alignment in STRATEGIES:
            self.register_buffer("token_map", torch.zeros(config.text_config.vocab_size, dtype=torch.long))
        self.layers = nn.ModuleList(
            C2CLayerFuser((sharer_heads, sharer_head_dim), (receiver_heads, receiver_head_dim), config)
            for _ in range(receiver_layers)
        )

    @property
    def has_gates(self) -> bool:
        """Whether the branches carry learnable layer gates (`fusion="gated"`)."""
        return self.layers[0].key.has_gate

    def forward(self, receiver_kv: KV, sharer_kv: KV) -> KV:
        """Fused `(keys, values)` of every receiver layer.

        `receiver_kv[t]`: `(B, H_r, N_t, D_r)` each, the positions receiver layer `t` stores (the whole prompt, or
        a sliding window's tail); `sharer_kv[s]`: `(B, H_s, N, D_s)` each, every prompt position. Receiver layer `t`
        is fused with the last `N_t` positions of sharer layer `layer_map[t]`.
        """
        # Inference reads every hard gate in one host transfer, not one per layer and branch.
        open_kv = [(None, None)] * len(self.layers) if self.training else self.open_gates().tolist()
        fused = []
        with torch.autocast(device_type=self.layers[0].key.in_proj.weight.device.type, enabled=False):  # fp32 fuser under autocast
            for t, (receiver_keys, receiver_values) in enumerate(receiver_kv):
                sharer_keys, sharer_values = sharer_kv[self.layer_map[t]]
                stored = receiver_keys.shape[-2]  # N_t
                fused.append(
                    self.layers[t](
                        sharer_keys[..., -stored:, :], sharer_values[..., -stored:, :],
                        receiver_keys, receiver_values, self.gate_temperature, open_kv[t],
                    )
                )  # fmt: skip
        return fused

    def gate_logits(self) -> torch.Tensor:
        """`(num_receiver_layers, 2)` gate logits, columns K and V; `+inf` (always open) for a fusion without gates."""
        if not self.has_gates:
            return torch.full((len(self.layers), 2), float("inf"), device=self.layers[0].key.in_proj.weight.device)
        return torch.stack([torch.stack([layer.key.gate_logit, layer.value.gate_logit]) for layer in self.layers]).detach()

    def open_gates(self) -> torch.Tensor:
        """`(num_receiver_layers, 2)` booleans: which K / V gates are open at inference."""
        return self.gate_logits() > 0


__all__ = [
    "FUSIONS",
    "C2CFuser",
    "C2CFuserBranch",
    "C2CLayerFuser",
    "C2CResidualBlock",
    "GatedFusion",
    "ProjectionFusion",
    "WeightedFusion",
    "register_fusion",
]
