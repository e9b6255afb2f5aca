"""`C2CCache`: the receiver's cache, fused with a sharer's cache after the prompt prefill."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from transformers import DynamicCache, PreTrainedConfig

if TYPE_CHECKING:
    from .modeling_c2c import C2CFuser


class C2CCache(DynamicCache):
    """A receiver `DynamicCache` that holds a sharer's cache until it is fused into the receiver's prompt KV.

    Life cycle ("prefill, then fuse"):
    1. the sharer's prefill over the prompt minus its last token is stored in `sharer_cache`;
    2. the receiver's plain prefill over the same tokens fills this cache as any `DynamicCache`;
    3. `fuse(fuser)` replaces every receiver layer's KV by the fuser's output and drops the sharer cache;
    4. the last prompt token and all generated tokens then attend to the fused KV, which is never fused again.

    Sliding-window receiver layers (e.g. Gemma3) store only the last `window - 1` prompt tokens; those are fused
    with the sharer KV of the same positions.
    """

    def __init__(self, receiver_config: PreTrainedConfig, sharer_cache: DynamicCache | None = None):
        super().__init__(config=receiver_config)
        self.sharer_cache = sharer_cache
        self.is_fused = False

    @property
    def has_sharer_state(self) -> bool:
        return self.sharer_cache is not None and self.sharer_cache.get_seq_length() > 0

    def fuse(self, fuser: C2CFuser) -> None:
        """Fuse the stored sharer KV into every receiver layer, in place; afterwards the sharer cache is released."""
        if self.is_fused:
            raise RuntimeError("This C2CCache is already fused: only the prompt is fused, once.")
        num_fused = self.get_seq_length()
        sharer_len = 0 if self.sharer_cache is None else self.sharer_cache.get_seq_length()
        if sharer_len != num_fused:
            raise ValueError(
                f"Cannot fuse: the receiver cache holds {num_fused} prompt tokens but the sharer cache holds "
                f"{sharer_len}; both must come from prefills over the same positions."
            )
        # Inference reads every hard gate in one host transfer, not one per layer and branch.
        open_kv = [(None, None)] * len(self.layers) if fuser.training else fuser.open_gates().tolist()
        for receiver_idx, layer in enumerate(self.layers if num_fused > 0 else []):
            sharer_layer = self.sharer_cache.layers[fuser.layer_map[receiver_idx]]
            stored = layer.keys.shape[-2]  # == num_fused, or the window tail for a sliding layer
            sharer_keys = sharer_layer.keys[..., -stored:, :]  # (B, H_s, stored, D_s)
            sharer_values = sharer_layer.values[..., -stored:, :]
            layer.keys, layer.values = fuser(
                receiver_idx, sharer_keys, sharer_values, layer.keys, layer.values, open_kv[receiver_idx]
            )  # (B, H_r, stored, D_r) each
        self.sharer_cache = None
        self.is_fused = True

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        if self.sharer_cache is not None:
            self.sharer_cache.batch_repeat_interleave(repeats)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        if self.sharer_cache is not None:
            self.sharer_cache.batch_select_indices(indices)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        if self.sharer_cache is not None:
            self.sharer_cache.reorder_cache(beam_idx)


__all__ = ["C2CCache"]
