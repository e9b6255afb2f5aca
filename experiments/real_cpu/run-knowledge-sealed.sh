#!/usr/bin/env bash
# Private-knowledge transfer re-run under the protocol (docs/results/real-cpu/README.md's earlier headline chose its
# settings on the questions it reported). A world of fresh people (world seed 1: 208 fuser-training, 16 validation
# and 32 test people; none of their questions was ever scored), fp32 bases, the sharer recipe of run-knowledge-fp32.sh
# (a dense LoRA, then a recall LoRA over it). Every choice is made on the validation people; the test people are
# scored only by the last stage, once per reported configuration, and every such scoring is appended to
# $RESULTS/test-scorings.jsonl (committed), which gives each report's protocol.test_evaluations.
# Re-run to resume, also on a fresh machine: a stage whose report is there is skipped (this study's per-question
# reports are committed), the sharers are rebuilt from their adapters (restored from git history, stage 1), and an
# unfinished sharer or fuser resumes from its checkpoints while runs/ (out of git) is still on the machine. A fuser,
# the reader and the scorings that use them run in one session: their weights are not kept.
#   bash experiments/real_cpu/run-knowledge-sealed.sh   # stages 1-3: choices on the validation people; 4: the test people
set -euo pipefail
cd "$(dirname "$0")/../.."
K=experiments/real_cpu/knowledge.py
RUNS=runs/real-cpu/knowledge-sealed RESULTS=docs/results/real-cpu/knowledge-sealed
ROOTS=(--runs $RUNS --results $RESULTS --dtype float32)
W=(--seed 1 --fuser-people 224 --heldout-people 32 --validation-people 16)
D=("${W[@]}" --sharer dense) R=("${W[@]}" --sharer recall --recall-over dense)
RUN=$RUNS/seed-1/world-224-32/dense-sharer/recall-sharer REPORT=$RESULTS/seed-1/world-224-32/dense-sharer/recall-sharer
VALIDATION=(--split validation)
THREADS=${THREADS:-2}  # the one-process stages' torch threads (1 when another job shares the two cores)
has_method() {  # REPORT_JSON METHOD: whether the report holds rows of METHOD
  python -c 'import json, sys; sys.exit(sys.argv[2] not in json.load(open(sys.argv[1]))["results"])' "$1" "$2" 2>/dev/null
}

# 1. The sharers (dense LoRA: 600 steps of 16, about 72 min on two threads; recall LoRA: 300 steps over it), each
#    checked on the validation people (validation/sharer-check.json). Each adapter is kept (float16, out of git) in
#    $ADAPTERS: where it is, the sharer is rebuilt from it in a minute instead of trained again.
ADAPTERS=runs/real-cpu/knowledge-sealed-adapters
#    Both adapters were committed once (ADAPTERS_COMMIT) and then taken out of the tree to keep it light: where a
#    clone's history holds them, they are restored from it rather than trained again.
ADAPTERS_COMMIT=2f3b7861d185e4d293083c8a48f0c5002aba6fa4
if [ ! -d $ADAPTERS ] && git cat-file -e $ADAPTERS_COMMIT 2>/dev/null; then
  mkdir -p $ADAPTERS.partial && git archive $ADAPTERS_COMMIT experiments/real_cpu/adapters/knowledge-sealed |
    tar -x -C $ADAPTERS.partial --strip-components 4 && mv $ADAPTERS.partial $ADAPTERS
fi
sharer() {  # RUN_DIR REPORT_DIR STEPS knowledge.py-flags...
  local run=$1 report=$2 steps=$3 && shift 3
  [ -d $run/sharer-private ] || python $K sharer "${ROOTS[@]}" "$@" --sharer-steps $steps --lora-r 8 --threads $THREADS \
    --group-by-length --run-token-mean --store-adapters $ADAPTERS
  [ -f $report/validation/sharer-check.json ] || python $K check "${ROOTS[@]}" "$@" --threads $THREADS "${VALIDATION[@]}"
}
sharer $RUNS/seed-1/world-224-32/dense-sharer $RESULTS/seed-1/world-224-32/dense-sharer 600 "${D[@]}"
sharer $RUN $REPORT 300 "${R[@]}"

# 2. The baselines on the validation people (one process, two threads); routing's classifier is fitted on questions
#    about fuser-training people.
B=$REPORT/validation/open/baselines/results.json
for method in receiver sharer t2t routing fact_in_prompt; do  # one at a time, each kept as it lands
  has_method $B $method || python $K baselines "${ROOTS[@]}" "${R[@]}" --prompt open --threads $THREADS \
    "${VALIDATION[@]}" --methods $method
done

# 3. Two candidate fusers, each scored on the validation people only: the earlier study's best family (projection
#    only) and the method's full fuser (gated, gates starting open), both 64 wide on the sharer's top seven layers
#    with span alignment (the settings the earlier world pointed to). Two at a time on one thread each: 37 min a
#    fuser on an Intel Xeon, 50 on an AMD EPYC; 3-6 min an evaluation.
H64=(--layer-map top7 --fuser-hidden-size 64 --fuser-lr 1e-3)
fuse() {  # SPLIT FUSION TAG SEED [flags for the fuser and its evaluation]: train (unless there) and score one fuser
  local split=$1 fusion=$2 tag=$3 seed=$4 && shift 4
  [ $seed = 1 ] || { tag=$tag-fseed$seed && set -- "$@" --fuser-seed $seed; }
  local run=(--prompt open --questions-per-fact 3 --fusion "$fusion" --tag "$tag")
  local report=$REPORT/open/$fusion-$tag/results.json scoring=(--split test --selected-on validation)
  [ $split = test ] || { report=$REPORT/validation/open/$fusion-$tag/results.json && scoring=("${VALIDATION[@]}"); }
  [ -f $report ] && return 0
  [ -f $RUN/c2c-open-$fusion-$tag/model.safetensors ] ||
    python $K fuser "${ROOTS[@]}" "${R[@]}" "${run[@]}" --fuser-dropout 0.3 --fuser-steps 900 --save-steps 150 \
      --threads 1 "$@"
  python $K eval "${ROOTS[@]}" "${R[@]}" "${run[@]}" --methods c2c --threads 1 "${scoring[@]}" "$@"
}
gated() { fuse $1 gated h64-top7-span-gate4 $2 "${H64[@]}" --token-alignment span --gate-init-logit 4; }  # SPLIT SEED
projection() { fuse $1 projection h64-top7-span $2 "${H64[@]}" --token-alignment span; }  # SPLIT SEED
two_at_a_time() {  # "FUNCTION ARGS"...: each a job, at most two at once; stops the script when one fails
  local running=0 job
  for job in "$@"; do
    if [ $running = 2 ]; then wait -n; running=1; fi
    $job & running=$((running + 1))
  done
  for ((; running > 0; running--)); do wait -n; done
}
two_at_a_time "projection validation 1" "gated validation 1"

# The choice, by the rule fixed before either candidate was scored: the higher validation accuracy. Frozen in
# validation-choice.json. The method's full fuser (gated) is reported beside the chosen family either way.
V=$REPORT/validation/open
CHOSEN=$(python experiments/real_cpu/sealed.py choose --benchmark validation --out $REPORT/validation-choice.json \
  projection=$V/projection-h64-top7-span gated=$V/gated-h64-top7-span-gate4)
echo "chosen on validation: $CHOSEN"
FAMILIES=(gated)
[ $CHOSEN = gated ] || FAMILIES=($CHOSEN gated)
validation_summary() {  # both candidates (one fuser seed each) beside the baselines scored so far, every question
  local methods=() method
  for method in receiver sharer t2t t2t_trained routing fact_in_prompt; do
    if has_method $B $method; then methods+=($method); fi
  done
  python $K sealed "${ROOTS[@]}" "${R[@]}" "${VALIDATION[@]}" --config projection=projection-h64-top7-span \
    gated=gated-h64-top7-span-gate4 --methods "${methods[@]}"
}
validation_summary

# 4. The test people, scored once per reported configuration: the chosen fuser and the full one, each with fuser
#    seeds 1 (stage 3's fuser), 2 and 3, every baseline, and the trained text-to-text baseline. First what uses stage
#    3's weights, so that it is scored in the session that trained them; then the baselines that need no training
#    (one at a time: they share one report); then the reader and the later fuser seeds, two at a time.
TEST=(--split test --selected-on validation)
two_at_a_time "${FAMILIES[@]/%/ test 1}"
READER=(--prompt open --questions-per-fact 3 --fusion projection --tag h64-top7-span --fuser-steps 900 --fuser-lr 1e-3)
T=$REPORT/open/baselines/results.json
for method in receiver sharer t2t routing fact_in_prompt; do
  has_method $T $method || python $K baselines "${ROOTS[@]}" "${R[@]}" "${READER[@]}" --threads $THREADS "${TEST[@]}" \
    --methods $method
done
#    The trained text-to-text baseline: a receiver LoRA reading the sharer's hints, with the 64-wide fusers' data,
#    steps, batch and learning rate (`knowledge.py reader`), scored on validation and test. Its weights are not
#    kept: it is trained only while one of its scorings is still to run, and both run in the session that trains it.
reader() {
  has_method $B t2t_trained && has_method $T t2t_trained && return 0
  [ -d $RUN/t2t-reader-open-projection-h64-top7-span ] || python $K reader "${ROOTS[@]}" "${R[@]}" "${READER[@]}" --threads 1
  has_method $B t2t_trained || python $K baselines "${ROOTS[@]}" "${R[@]}" "${READER[@]}" --threads 1 "${VALIDATION[@]}" \
    --methods t2t_trained
  has_method $T t2t_trained || python $K baselines "${ROOTS[@]}" "${R[@]}" "${READER[@]}" --threads 1 "${TEST[@]}" \
    --methods t2t_trained
}
JOBS=(reader)  # the chosen family's seeds first: a session that ends early leaves the full fuser's to resume
for fusion in "${FAMILIES[@]}"; do JOBS+=("$fusion test 2" "$fusion test 3"); done
two_at_a_time "${JOBS[@]}"

# The summaries: validation, now with the trained text-to-text baseline, and test (every seed).
validation_summary
CONFIGS=()
for fusion in "${FAMILIES[@]}"; do
  [ $fusion = gated ] && tag=h64-top7-span-gate4 || tag=h64-top7-span
  CONFIGS+=("$fusion=$fusion-$tag,$fusion-$tag-fseed2,$fusion-$tag-fseed3")
done
python $K sealed "${ROOTS[@]}" "${R[@]}" "${TEST[@]}" --config "${CONFIGS[@]}" \
  --methods receiver sharer t2t t2t_trained routing fact_in_prompt
