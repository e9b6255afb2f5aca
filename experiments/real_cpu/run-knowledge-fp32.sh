#!/usr/bin/env bash
# Private-knowledge transfer rebuilt on a CPU without bf16 matrix units (AVX2 only), fp32 bases: the sharer of the
# 224 + 32 world (two LoRAs, each checked), the baselines, then the fusion ablation on it with the fixed fuser init
# (run-knowledge.sh section 6: the three fusions and the open gates, top2 map, 16 wide), the layer maps, the width,
# span alignment and the seeds: every result of docs/results/real-cpu/README.md's knowledge section.
# Models go to runs/real-cpu/knowledge-fp32/ (not in git), reports to docs/results/real-cpu/knowledge-fp32/ (git
# keeps the summaries of section 3 and the sharer's probe; the per-run reports with every answer stay local).
# Re-run to resume: a stage whose report is there is skipped, an unfinished one resumes from its checkpoints on the
# same machine. Each sharer trains within one session (~2 h for both); the models stay out of git,
# so on a new machine they are trained again (same seed) before the fusers.
# Two cores: the sharer trains on both; then two fusers at a time, one thread each.
set -euo pipefail
cd "$(dirname "$0")/../.."
K=experiments/real_cpu/knowledge.py
RUNS=runs/real-cpu/knowledge-fp32 RESULTS=docs/results/real-cpu/knowledge-fp32
ROOTS=(--runs $RUNS --results $RESULTS --dtype float32)
W=(--fuser-people 224 --heldout-people 32 --validation-people 16)
D=("${W[@]}" --sharer dense) R=("${W[@]}" --sharer recall --recall-over dense)   # R: the fusers' sharer (below)
RUN=$RUNS/world-224-32/dense-sharer/recall-sharer REPORT=$RESULTS/world-224-32/dense-sharer/recall-sharer

# 1. The sharers, each trained and checked: the sharer alone on one question
#    per held-out fact (`sharer-check.json`).
#    Earlier sharers of this rebuild, two LoRAs as in run-knowledge.sh (their models were lost with their machine,
#    their reports are not kept):
#      python $K sharer "${ROOTS[@]}" "${W[@]}" --sharer-steps 800 --threads 2 --group-by-length   # 5.2 h
#      python $K sharer "${ROOTS[@]}" "${W[@]}" --sharer recall --sharer-steps 300 --threads 2 --group-by-length
#      python $K check "${ROOTS[@]}" "${W[@]}" [--sharer recall]
#    They stated too few of the held-out facts for a fuser to pass on. Now: the dense sharer, one LoRA (r 8) over the
#    base sharer on texts richer in facts per token (rosters, biographies, the recall forms), 600 steps of 16 (72 min
#    on two threads), then a recall LoRA (r 8) of 300 steps over it.
sharer() {  # RUN_DIR REPORT_DIR STEPS knowledge.py-flags...
  local run=$1 report=$2 steps=$3 && shift 3
  [ -d $run/sharer-private ] || python $K sharer "${ROOTS[@]}" "$@" --sharer-steps $steps --lora-r 8 --threads 2 \
    --group-by-length --run-token-mean
  [ -f $report/sharer-check.json ] || python $K check "${ROOTS[@]}" "$@"
}
sharer $RUNS/world-224-32/dense-sharer $RESULTS/world-224-32/dense-sharer 600 "${D[@]}"
sharer $RUN $REPORT 300 "${R[@]}"
#    The baselines on the held-out questions, in two runs (~15 and ~27 min on two threads) into one report.
B=$REPORT/open/baselines/results.json BASELINES=(baselines "${ROOTS[@]}" "${R[@]}" --prompt open --threads 2)
grep -qs '"fact_in_prompt"' $B || python $K "${BASELINES[@]}" --methods receiver fact_in_prompt
grep -qs '"t2t"' $B || python $K "${BASELINES[@]}" --methods sharer t2t

# 2. A fuser (900 steps, top2 map, 16 wide), then its C2C evaluation on the held-out people. Measured with two jobs on
#    the two cores, one thread each: 37-40 min a fuser, 5-7 min an evaluation.
fuse() {  # FUSION TAG [more flags, given to the fuser and its evaluation]
  local fusion=$1 tag=$2 && shift 2
  local run=(--prompt open --questions-per-fact 3 --fusion "$fusion" --tag "$tag")
  [ -f $REPORT/open/$fusion-$tag/results.json ] && return 0
  [ -f $RUN/c2c-open-$fusion-$tag/model.safetensors ] ||
    python $K fuser "${ROOTS[@]}" "${R[@]}" "${run[@]}" --layer-map top2 --fuser-hidden-size 16 --fuser-dropout 0.3 \
      --fuser-lr 3e-3 --fuser-steps 900 --save-steps 150 --threads 1 "$@"
  python $K eval "${ROOTS[@]}" "${R[@]}" "${run[@]}" --methods c2c --threads 1 "$@"
}
fuse gated h16-top2 & first=$!   # (a failure of either of a pair stops the script)
fuse weighted h16-top2
wait $first
fuse projection h16-top2 & first=$!
fuse gated h16-top2-gate4 --gate-init-logit 4
wait $first
fuse projection h16-top2-seed1 --fuser-seed 1   # run to run: the best fusion again, another init and batch order
#    The fusers' checkpoints against validation people (64 questions each; ~5 min a checkpoint on one thread), and what
#    the sharer's cache holds: the linear probe at the name and over the fused positions, K, V and the residual stream
#    (18 min on two threads), which finds the facts in the values of layers 17-21; then fusers that take those layers.
P=$REPORT/open/projection-h16-top2/probe.jsonl CHECKPOINTS=$RUN/c2c-open-projection-h16-top2/trainer/checkpoint-
[ -f $P ] || python experiments/real_cpu/probe_checkpoint.py $CHECKPOINTS{300,450,600,750,900} "${W[@]}" --dtype float32 \
  --output $P
[ -f $REPORT/sharer-kv-probe.json ] || python experiments/real_cpu/probe_sharer_kv.py "${ROOTS[@]}" "${R[@]}" \
  --positions name mean_fused --threads 2 --output $REPORT/sharer-kv-probe.json
fuse projection h16-top4 --layer-map top4 & first=$!   # receiver layers take sharer layers >= 20
fuse projection h16-top7 --layer-map top7              # >= 17
wait $first
fuse weighted h16-top7 --layer-map top7 & first=$!
fuse projection h64-top7 --layer-map top7 --fuser-hidden-size 64 --fuser-lr 1e-3   # at lr 3e-3 it diverged (step 320)
wait $first
#    The 64-wide top7 fuser again with another seed, then with the sharer reading the prompt in its own tokenization
#    (span alignment: the method's per-token alignment splits 12 of the 32 held-out names otherwise than the sharer),
#    twice, and the full C2C fuser (gated, gates starting open) with it. 37 min a fuser, 7 min an evaluation.
H64=(--layer-map top7 --fuser-hidden-size 64 --fuser-lr 1e-3)
fuse projection h64-top7-seed1 "${H64[@]}" --fuser-seed 1 & first=$!
fuse projection h64-top7-span "${H64[@]}" --token-alignment span
wait $first
fuse projection h64-top7-span-seed1 "${H64[@]}" --token-alignment span --fuser-seed 1 & first=$!
fuse gated h64-top7-span-gate4 "${H64[@]}" --token-alignment span --gate-init-logit 4
wait $first
fuse projection h64-top7-span-seed2 "${H64[@]}" --token-alignment span --fuser-seed 2

# 3. The ablation table, with the paired differences (each fusion vs receiver and t2t, each step vs the last).
python $K summary "${ROOTS[@]}" "${R[@]}" --prompt open --tag h16-top2   # open/ablation-h16-top2.{md,json,png}
python $K summary "${ROOTS[@]}" "${R[@]}" --prompt open --tag h16-top2-gate4   # the gates started open
for tag in h16-top4 h16-top7; do   # each against the same fusion on the top2 map as well
  python $K summary "${ROOTS[@]}" "${R[@]}" --prompt open --tag $tag --compare-tag h16-top2
done
python $K summary "${ROOTS[@]}" "${R[@]}" --prompt open --tag h64-top7 --compare-tag h16-top7   # the width
for tag in h64-top7-seed1 h64-top7-span; do   # run to run, and the alignment
  python $K summary "${ROOTS[@]}" "${R[@]}" --prompt open --tag $tag --compare-tag h64-top7
done
python $K summary "${ROOTS[@]}" "${R[@]}" --prompt open --tag h64-top7-span-seed1 --compare-tag h64-top7-seed1
python $K summary "${ROOTS[@]}" "${R[@]}" --prompt open --tag h64-top7-span-seed2
python $K summary "${ROOTS[@]}" "${R[@]}" --prompt open --tag h64-top7-span-gate4   # the full C2C fuser
python $K segmentation "${ROOTS[@]}" "${R[@]}" --prompt open   # open/segmentation.{md,json}: by how names are split
#    The seeds' mean against the baselines (open/seeds-projection-<first tag>.{md,json}).
python $K seeds "${ROOTS[@]}" "${R[@]}" --prompt open --fusion projection --seed-tags h64-top7 h64-top7-seed1
python $K seeds "${ROOTS[@]}" "${R[@]}" --prompt open --fusion projection \
  --seed-tags h64-top7-span h64-top7-span-seed1 h64-top7-span-seed2
