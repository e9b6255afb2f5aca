"""`C2CCache`: the receiver's cache of one C2C generation, holding the fused prompt state.

It stores; it does not compute. `C2CForCausalLM.fuse_prompt` fills it: the sharer's prompt cache goes into
`sharer_cache`, the receiver's plain prefill into the cache's own layers, and the fuser's output replaces those
layers' KV (`store_fused_prompt`). From then on it is an ordinary `DynamicCache` that grows with generated tokens.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache, PreTrainedConfig

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values), each (B, H, N, D)


class C2CCache(DynamicCache):
    """A receiver `DynamicCache` that holds a sharer's cache until the receiver's prompt KV is fused with it.

    Life cycle ("prefill, then fuse"):
    1. the sharer's prefill over the prompt minus its last token is stored in `sharer_cache`;
    2. the receiver's plain prefill over the same tokens fills this cache as any `DynamicCache`;
    3. `store_fused_prompt` replaces every receiver layer's KV by the fused KV and drops the sharer cache;
    4. the last prompt token and all generated tokens then attend to the fused KV, which is never fused again.

    Sliding-window receiver layers (e.g. Gemma3) store only the last `window - 1` prompt tokens; their fused KV
    covers the same positions.
    """

    def __init__(self, receiver_config: PreTrainedConfig, sharer_cache: DynamicCache | None = None):
        super().__init__(config=receiver_config)
        self.sharer_cache = sharer_cache
        self.is_fused = False

    @property
    def has_sharer_state(self) -> bool:
        return self.sharer_cache is not None and self.sharer_cache.get_seq_length() > 0

    def receiver_kv(self) -> KV:
        """Every layer's stored `(keys, values)`, each `(B, H_r, N_t, D_r)`."""
        return [(layer.keys, layer.values) for layer in self.layers]

    def sharer_kv(self) -> KV:
        """Every sharer layer's `(keys, values)`, each `(B, H_s, N, D_s)`, checked against the receiver's prompt."""
        num_prompt = self.get_seq_length()
        sharer_len = 0 if self.sharer_cache is None else self.sharer_cache.get_seq_length()
        if sharer_len != num_prompt:
            raise ValueError(
                f"Cannot fuse: the receiver cache holds {num_prompt} prompt tokens but the sharer cache holds "
                f"{sharer_len}; both must come from prefills over the same positions."
            )
        return [(layer.keys, layer.values) for layer in self.sharer_cache.layers]

    def store_fused_prompt(self, fused_kv: KV) -> None:
        """Replace every layer's prompt KV by its fused KV (same shapes); the sharer cache is released."""
        if self.is_fused:
            raise RuntimeError("This C2CCache is already fused: only the prompt is fused, once.")
        if fused_kv:
            for layer, (keys, values) in zip(self.layers, fused_kv, strict=True):
                if keys.shape != layer.keys.shape or values.shape != layer.values.shape:
                    raise ValueError(
                        f"Fused KV of shape {tuple(keys.shape)} does not replace the stored {tuple(layer.keys.shape)}."
                    )
                layer.keys, layer.values = keys, values
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
