#!/usr/bin/env bash
# Every cross-model paired comparison of the general fusers' evaluations, in one file:
# docs/results/real-cpu/general-paired.{json,md}. Reads the per-method reports (every answer) that eval_general.sh
# writes under docs/results/real-cpu/general-*/ (not committed: run those evaluations first; see experiments/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
R=docs/results/real-cpu
RECEIVER=$R/general-open-zero-smollm2-135m-instruct/likelihood-open:receiver   # fp32, batch 1: the controls' receiver
CONTROL=$R/general-open-zero-smollm2-135m-instruct/likelihood-open:c2c           # the receiver as its own sharer
QWEN=$R/general-qwen2.5-coder-0.5b-instruct/likelihood-open                      # lettered-mix fuser, bf16
GEMMA=$R/general-gemma-3-270m/likelihood-open                                    # lettered-mix fuser, bf16
OPEN_GEMMA=$R/general-open-gemma-3-270m/likelihood-open:c2c
ZERO_GEMMA=$R/general-open-zero-gemma-3-270m/likelihood-open:c2c
ZERO_QWEN=$R/general-open-zero-qwen2.5-coder-0.5b-instruct/likelihood-open:c2c
QWEN_T2T=$R/general-qwen2.5-coder-0.5b-instruct-baselines-fp32-b16/likelihood-open
GEMMA_T2T=$R/general-gemma-3-270m-baselines-fp32-b16/likelihood-open:t2t
GEMMA_ROUTING=$R/general-gemma-3-270m-baselines-fp32/likelihood-open:routing
python experiments/real_cpu/paired.py \
  --compare control-vs-receiver $CONTROL $RECEIVER \
  --compare open-gemma-vs-receiver $OPEN_GEMMA ${OPEN_GEMMA%:c2c}:receiver \
  --compare open-gemma-vs-control $OPEN_GEMMA $CONTROL \
  --compare open-gemma-vs-gemma-sharer $OPEN_GEMMA $GEMMA:sharer \
  --compare zero-gemma-vs-control $ZERO_GEMMA $CONTROL \
  --compare control-vs-gemma-sharer $CONTROL $GEMMA:sharer \
  --compare receiver-fp32-vs-bf16 $RECEIVER $GEMMA:receiver \
  --compare zero-qwen-vs-receiver $ZERO_QWEN $RECEIVER \
  --compare zero-qwen-vs-control $ZERO_QWEN $CONTROL \
  --compare zero-qwen-vs-qwen-sharer $ZERO_QWEN $QWEN:sharer \
  --compare zero-qwen-vs-lettered-qwen $ZERO_QWEN $QWEN:c2c \
  --compare zero-qwen-vs-open-gemma $ZERO_QWEN $OPEN_GEMMA \
  --compare qwen-t2t-vs-receiver $QWEN_T2T:t2t $RECEIVER \
  --compare qwen-t2t-vs-qwen-sharer $QWEN_T2T:t2t $QWEN:sharer \
  --compare qwen-c2c-vs-qwen-t2t $QWEN:c2c $QWEN_T2T:t2t \
  --compare receiver-batch16-vs-batch1 $QWEN_T2T:receiver $RECEIVER \
  --compare gemma-t2t-vs-receiver $GEMMA_T2T $RECEIVER \
  --compare gemma-t2t-vs-gemma-sharer $GEMMA_T2T $GEMMA:sharer \
  --compare open-gemma-vs-gemma-t2t $OPEN_GEMMA $GEMMA_T2T \
  --compare gemma-routing-vs-receiver $GEMMA_ROUTING $RECEIVER \
  --compare gemma-routing-vs-gemma-sharer $GEMMA_ROUTING $GEMMA:sharer \
  --output $R/general-paired.json
