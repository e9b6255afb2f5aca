#!/usr/bin/env bash
# Issue 7, parts 2 and 3: private-knowledge transfer SmolLM2-135M-Instruct <- Qwen2.5-Coder-0.5B-Instruct + LoRA,
# and the fusion ablation. Models: ../shared/tools/get-real-models (~/.cache/c2c-real-models). 2 torch threads, CPU.
# Intermediate models go to runs/real-cpu/knowledge/ (not in git); reports to docs/results/real-cpu/knowledge/.
set -euo pipefail
cd "$(dirname "$0")/../../.."
K=examples/real_cpu/knowledge.py
python $K sharer                                  # LoRA on the sharer: ~45 min
for fusion in gated weighted projection; do
  python $K fuser --fusion $fusion                # ~20 min each
done
python $K eval --fusion gated                     # receiver, sharer, t2t, c2c, oracle: ~15 min
python $K eval --fusion weighted --methods c2c
python $K eval --fusion projection --methods c2c
python $K summary
