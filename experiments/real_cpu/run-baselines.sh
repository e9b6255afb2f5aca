#!/usr/bin/env bash
# The four baselines for receiver SmolLM2-135M-Instruct <- sharer Qwen2.5-Coder-0.5B-Instruct, lettered prompt,
# generation mode -> docs/results/baselines-smollm2-qwen2.5coder/ (git keeps results.md and the plot).
# One torch thread (the 2-core machine was shared with another job); latencies compare methods within this run.
# Models: ../shared/tools/get-real-models (default ~/.cache/c2c-real-models); data: ../shared/data/benchmarks.
set -euo pipefail
MODELS=${MODELS:-$HOME/.cache/c2c-real-models}
cd "$(dirname "$0")/../.."
DATA=${DATA:-$(cd .. && pwd)/shared/data/benchmarks}
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} c2c-hf eval \
  --receiver "$MODELS/smollm2-135m-instruct" --sharer "$MODELS/qwen2.5-coder-0.5b-instruct" \
  --benchmarks arc_easy openbookqa \
  --benchmark-paths arc_easy="$DATA/arc_easy.jsonl" openbookqa="$DATA/openbookqa.jsonl" \
                    arc_challenge="$DATA/arc_challenge.jsonl" \
  --methods receiver sharer t2t routing --limit 200 --seed 0 \
  --mode generate --max-new-tokens 64 --hint-tokens 256 --batch-size 1 \
  --routing-fit-benchmark arc_challenge --routing-fit-limit 200 \
  --output docs/results/baselines-smollm2-qwen2.5coder
