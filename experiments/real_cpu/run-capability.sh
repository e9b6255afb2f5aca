#!/usr/bin/env bash
# The printed-output task under the protocol (experiments/real_cpu/capability.py): fusers trained on the train
# split's `basic` programs, every choice made on 200 validation programs, the 400 test programs scored once per
# reported configuration (each scoring appended to $RESULTS/test-scorings.jsonl, committed). fp32 bases, one thread
# a process. Re-run to resume: a finished report is skipped, an unfinished fuser resumes from its checkpoints
# (runs/ stays on this machine, out of git). On a fresh clone (no runs/, no per-question reports) the committed
# choice and summaries stand for their stages: nothing is trained or scored again, the test split least of all.
#   bash experiments/real_cpu/run-capability.sh   # stage 1: the choice, on validation only; the trained
#   text-to-text reader (a baseline) on validation; stage 2: the test split
set -euo pipefail
cd "$(dirname "$0")/../.."
RESULTS=${RESULTS:-docs/results/real-cpu/capability} RUNS=${RUNS:-runs/real-cpu/capability}
C="python experiments/real_cpu/capability.py --results $RESULTS --runs $RUNS"
MODES=(--modes likelihood generate)

# A fuser (its flags) trained, then scored on validation in both modes.
candidate() {  # RUN_NAME [capability.py fuser flags]
  local run=$1 && shift
  [ -f $RUNS/$run/model.safetensors ] || $C fuser "$@"
  [ -f $RESULTS/validation/generate/$run/results.json ] || $C eval --split validation --run $run "${MODES[@]}"
}

# 1. Candidates on validation: the knowledge study's best family (projection only, 64 wide, the sharer's top seven
#    layers, span alignment), the method's full fuser (gated, gates starting open) and each one's control (the
#    receiver as its own sharer: what a fuser gains from training alone); the baselines beside them.
if [ ! -f $RESULTS/validation-choice.json ]; then
  candidate projection-h64-top7-span-seed0 --fusion projection
  [ -f $RESULTS/validation/generate/baselines/results.json ] || $C baselines --split validation "${MODES[@]}"
  candidate control-projection-h64-top7-span-seed0 --fusion projection --control
  candidate gated-h64-top7-span-gate4-seed0 --fusion gated
  #  The projection's control beat it on validation (likelihood 59.5 against 48.5%; generate 19.0 against 15.0%):
  #  trained on the task, the receiver's own cache gains more than the sharer's gives. The gated fuser keeps the
  #  receiver's cache and adds the sharer's, so its own control is what a gated C2C must beat.
  candidate control-gated-h64-top7-span-gate4-seed0 --fusion gated --control
fi

# The choice, by the rule fixed before any candidate was scored: the higher likelihood-mode validation accuracy
# (likelihood is the primary mode; generated answers are near zero for the receiver). Frozen in validation-choice.json.
V=$RESULTS/validation/likelihood
if [ -f $RESULTS/validation-choice.json ]; then
  CHOSEN=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["chosen"])' $RESULTS/validation-choice.json)
else
  CHOSEN=$(python experiments/real_cpu/sealed.py choose --benchmark snippets --out $RESULTS/validation-choice.json \
    projection-h64-top7-span=$V/projection-h64-top7-span-seed0 gated-h64-top7-span-gate4=$V/gated-h64-top7-span-gate4-seed0)
fi
echo "chosen on validation: $CHOSEN"

# The trained text-to-text baseline (no choice rests on it): the receiver with a rank-8 LoRA trained on the
# sharer's hints with the fuser's data, steps and learning rate (capability.py reader), likelihood mode only.
READER=t2t-reader-r8-seed0
summarised() {  # SUMMARY_JSON LABEL: the committed summary holds LABEL's per-question outcomes
  [ -f $1 ] && python -c 'import json, sys; sys.exit(sys.argv[2] not in json.load(open(sys.argv[1]))["outcomes"])' $1 $2
}
reader_eval() {  # SPLIT: the reader scored on SPLIT unless its report or summary is here
  summarised $RESULTS/$1-likelihood.json t2t_trained || [ -f $RESULTS/$1/likelihood/$READER/results.json ] || {
    [ -f $RUNS/$READER/config.json ] || $C reader --fuser-seed 0
    $C eval --split $1 --run $READER --modes likelihood
  }
}
VALIDATION_CONFIGS=("projection=projection-h64-top7-span-seed0" "gated=gated-h64-top7-span-gate4-seed0"
  "control-projection=control-projection-h64-top7-span-seed0" "control-gated=control-gated-h64-top7-span-gate4-seed0")
reader_eval validation
summarised $RESULTS/validation-likelihood.json t2t_trained ||
  $C summary --split validation --modes likelihood --reader $READER --config "${VALIDATION_CONFIGS[@]}"
[ -f $RESULTS/validation-generate.json ] || $C summary --split validation --modes generate --config "${VALIDATION_CONFIGS[@]}"

# 2. The test split, scored once per configuration and mode: the chosen fuser and its control, fuser seeds 0, 1 and
#    2, then the baselines. Each mode is its own scoring, so an interrupted run resumes without scoring one twice.
test_scored() {  # RUN_OR_BASELINES MODE: its report is here, or the mode's committed test summary holds it
  [ -f $RESULTS/test/$2/$1/results.json ] || [ -f $RESULTS/test-$2.json ]
}
SEEDS=(0 1 2)
for seed in "${SEEDS[@]}"; do
  for control in "" --control; do
    run=${control:+control-}$CHOSEN-seed$seed
    for mode in likelihood generate; do
      test_scored $run $mode && continue
      [ -f $RUNS/$run/model.safetensors ] || $C fuser --fusion ${CHOSEN%%-*} --fuser-seed $seed $control
      $C eval --split test --run $run --modes $mode
    done
  done
done
for mode in likelihood generate; do
  test_scored baselines $mode || $C baselines --split test --modes $mode
done
reader_eval test
runs() {  # PREFIX -> the runs of every seed, comma-separated
  local IFS=, && echo "${SEEDS[*]/#/$1$CHOSEN-seed}"
}
TEST_CONFIGS=("${CHOSEN%%-*}=$(runs '')" "control-${CHOSEN%%-*}=$(runs control-)")
summarised $RESULTS/test-likelihood.json t2t_trained ||
  $C summary --split test --modes likelihood --reader $READER --config "${TEST_CONFIGS[@]}"
[ -f $RESULTS/test-generate.json ] || $C summary --split test --modes generate --config "${TEST_CONFIGS[@]}"
