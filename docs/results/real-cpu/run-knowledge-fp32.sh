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

# 1. The sharers, each trained (resumes) and checked: the sharer alone on one question per held-out fact
#    (`sharer-check.json`). A recall sharer's cache is probed too: is the fact readable at the name for people a
#    linear probe never saw? (`sharer-kv-probe.json`, ~1 h on two threads; the 900-step sharer's at the end.)
sharer() {  # STEPS RUN_DIR REPORT_DIR knowledge.py-flags...
  local steps=$1 run=$2 report=$3 && shift 3
  [ -f $run/sharer-log.json ] || python $K sharer "${ROOTS[@]}" "$@" --sharer-steps $steps --threads 2 --group-by-length
  [ -f $report/sharer-check.json ] || python $K check "${ROOTS[@]}" "$@"
}
probe() {  # REPORT_DIR knowledge.py-flags...
  local report=$1 && shift
  [ -f $report/sharer-kv-probe.json ] ||
    python examples/real_cpu/probe_sharer_kv.py "${ROOTS[@]}" "$@" --output $report/sharer-kv-probe.json
}
#    The statements LoRA, 800 steps (~21 s a step on two threads, 5.2 h), and a recall LoRA of 300 steps over it.
R300=("${W[@]}" --sharer recall) REPORT300=$RESULTS/world-224-32/recall-sharer
sharer 800 $RUNS/world-224-32 $RESULTS/world-224-32 "${W[@]}"
sharer 300 $RUNS/world-224-32/recall-sharer $REPORT300 "${R300[@]}"
probe $REPORT300 "${R300[@]}"
#    The 300-step recall sharer states 37.5% of the held-out facts (the statements sharer 68.0%; the AMX run's
#    recall sharer 94.1%), so the fusers are built on a recall LoRA of 900 steps over the same statements sharer.
sharer 900 $RUN $REPORT "${R[@]}"

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
probe $REPORT "${R[@]}"   # the 900-step recall sharer's cache
