"""The paper's analyses of C2C (Fu et al., arXiv 2510.03215), as functions and as `c2c-hf analyze`.

- `cache_enrichment_oracle`: does a receiver answer better from a prompt cache computed with extra context in front
  (same length, no extra tokens attended)?
- `cache_transfer_oracle`: can a 3-layer MLP map one model's cache into another's?
- `effective_rank` / `cache_effective_rank`: entropy effective rank of the K and V caches, own vs fused.
- `progressive_fusion`: accuracy / answer loss as a growing fraction of the prompt positions is fused.
- `gate_map`: which layers' gates are open, and the fuser's dynamic weights per layer and head.

One module per concern: `examples` (the analysed prompts and their scoring), `caches` (KV helpers every analysis
shares), `oracles` (enrichment and transfer), `rank`, `progressive`, `gates`, `plots` (one figure per analysis) and
`command` (`c2c-hf analyze`). The analyses that need a fused cache get it from the model itself
(`C2CForCausalLM.fuse_prompt`, which also returns the receiver's own KV before fusion). Every analysis runs without
gradients and expects an eval-mode model (hard gates); examples run one at a time (batch 1, no padding), the rank and
gate analyses take left-padded batches and use real tokens only.
"""

from .caches import BRANCHES, KV, answer_logits, causal_lm, kv_of, prefill, token_features, with_kv
from .command import ANALYSES, build_parser, main, run_analysis
from .examples import Example, as_examples, example_from_item, example_from_texts, load_examples, summarize
from .gates import gate_map
from .oracles import KVMapper, cache_enrichment_oracle, cache_transfer_oracle
from .plots import PLOTS, plot_enrichment, plot_gates, plot_progressive, plot_rank, plot_transfer
from .progressive import SIDES, fused_positions, mix_kv, progressive_fusion
from .rank import cache_effective_rank, effective_rank

__all__ = [
    "ANALYSES",
    "BRANCHES",
    "KV",
    "PLOTS",
    "SIDES",
    "Example",
    "KVMapper",
    "answer_logits",
    "as_examples",
    "build_parser",
    "cache_effective_rank",
    "cache_enrichment_oracle",
    "cache_transfer_oracle",
    "causal_lm",
    "effective_rank",
    "example_from_item",
    "example_from_texts",
    "fused_positions",
    "gate_map",
    "kv_of",
    "load_examples",
    "main",
    "mix_kv",
    "plot_enrichment",
    "plot_gates",
    "plot_progressive",
    "plot_rank",
    "plot_transfer",
    "prefill",
    "progressive_fusion",
    "run_analysis",
    "summarize",
    "token_features",
    "with_kv",
]
