#!/usr/bin/env bash
# Issue 7, parts 2 and 3, rebuilt on a CPU without bf16 matrix units (AVX2 only): the 224 + 32 world's two sharer
# LoRAs with fp32 bases and length-grouped batches (run-knowledge.sh sections 4-5), then the fusion ablation on the
# recall sharer with the fixed fuser init (section 6: the three fusions and the open gates, top2 map, 16 wide).
# Models go to runs/real-cpu/knowledge-fp32/ (not in git), reports to docs/results/real-cpu/knowledge-fp32/.
# Re-run to resume across sessions: a finished stage is skipped, an unfinished one resumes from its checkpoints.
# Two cores: the sharers train on both; then two fusers at a time, one thread each.
set -euo pipefail
cd "$(dirname "$0")/../../.."
K=examples/real_cpu/knowledge.py
RUNS=runs/real-cpu/knowledge-fp32 RESULTS=docs/results/real-cpu/knowledge-fp32
ROOTS=(--runs $RUNS --results $RESULTS --dtype float32)
W=(--fuser-people 224 --heldout-people 32 --validation-people 16)
R=("${W[@]}" --sharer recall --sharer-tag 900)   # the fusers' sharer: the recall LoRA of 900 steps (below)
RUN=$RUNS/world-224-32/recall-sharer-900 REPORT=$RESULTS/world-224-32/recall-sharer-900

# 1. The sharers: statements LoRA, 800 steps (~21 s a step on two threads, 5.2 h); recall LoRA over it, 300 steps.
#    Each is checked: the sharer alone on one question per held-out fact (`sharer-check.json`).
[ -f $RUNS/world-224-32/sharer-log.json ] ||
  python $K sharer "${ROOTS[@]}" "${W[@]}" --sharer-steps 800 --threads 2 --group-by-length
[ -f $RESULTS/world-224-32/sharer-check.json ] || python $K check "${ROOTS[@]}" "${W[@]}"
R300=("${W[@]}" --sharer recall) RUN300=$RUNS/world-224-32/recall-sharer REPORT300=$RESULTS/world-224-32/recall-sharer
[ -f $RUN300/sharer-log.json ] ||
  python $K sharer "${ROOTS[@]}" "${R300[@]}" --sharer-steps 300 --threads 2 --group-by-length
[ -f $REPORT300/sharer-check.json ] || python $K check "${ROOTS[@]}" "${R300[@]}"
[ -f $REPORT300/sharer-kv-probe.json ] ||   # is the fact readable at the name for people a linear probe never saw?
  python examples/real_cpu/probe_sharer_kv.py "${ROOTS[@]}" "${R300[@]}" --output $REPORT300/sharer-kv-probe.json
#    The 300-step recall sharer states 37.5% of the held-out facts (the statements sharer 68.0%; the AMX run's
#    recall sharer 94.1%), so the fusers are built on a recall LoRA of 900 steps over the same statements sharer.
[ -f $RUN/sharer-log.json ] || python $K sharer "${ROOTS[@]}" "${R[@]}" --sharer-steps 900 --threads 2 --group-by-length
[ -f $REPORT/sharer-check.json ] || python $K check "${ROOTS[@]}" "${R[@]}"
[ -f $REPORT/sharer-kv-probe.json ] ||
  python examples/real_cpu/probe_sharer_kv.py "${ROOTS[@]}" "${R[@]}" --output $REPORT/sharer-kv-probe.json

# 2. A fuser (900 steps, top2 map, 16 wide), then its C2C evaluation on the held-out people.
fuse() {  # FUSION TAG [more fuser flags]
  local fusion=$1 tag=$2 && shift 2
  local run=(--prompt open --questions-per-fact 3 --fusion "$fusion" --tag "$tag")
  [ -f $RUN/c2c-open-$fusion-$tag/model.safetensors ] ||
    python $K fuser "${ROOTS[@]}" "${R[@]}" "${run[@]}" --layer-map top2 --fuser-hidden-size 16 --fuser-dropout 0.3 \
      --fuser-lr 3e-3 --fuser-steps 900 --save-steps 150 --threads 1 "$@"
  [ -f $REPORT/open/$fusion-$tag/results.json ] ||
    python $K eval "${ROOTS[@]}" "${R[@]}" "${run[@]}" --methods c2c --threads 1
}
fuse gated h16-top2 & first=$!   # (a failure of either of a pair stops the script)
fuse weighted h16-top2
wait $first
fuse projection h16-top2 & first=$!
fuse gated h16-top2-gate4 --gate-init-logit 4
wait $first

# 3. The baselines on the same held-out questions (rows added to the gated report), and the ablation table.
grep -q '"oracle"' $REPORT/open/gated-h16-top2/results.json ||
  python $K eval "${ROOTS[@]}" "${R[@]}" --prompt open --questions-per-fact 3 --fusion gated --tag h16-top2 \
    --methods receiver sharer t2t oracle --threads 2
python $K summary "${ROOTS[@]}" "${R[@]}" --prompt open --tag h16-top2   # open/ablation.{md,json,png}
