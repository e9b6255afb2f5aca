#!/usr/bin/env bash
# Private-knowledge transfer SmolLM2-135M-Instruct <- Qwen2.5-Coder-0.5B-Instruct + LoRA, and the fusion ablation:
# the first runs, bf16 bases on a CPU with AMX. Models: ../shared/tools/get-real-models (~/.cache/c2c-real-models).
# Intermediate models go to runs/real-cpu/knowledge/ (not in git); reports to docs/results/real-cpu/knowledge/
# (git keeps the summaries the results README cites: knowledge/ablation.md, knowledge/open/gated-h64/results.md,
# knowledge/world-224-32/recall-sharer/open/ablation-h16-top2.md).
# Every stage resumes from its checkpoints when re-run.
# Every run below used bf16 bases on a CPU with AMX; without bf16 matrix units (e.g. AVX2 only) a bf16 matmul is
# ~50x slower: add --dtype float32 to every knowledge.py / probe_*.py command there.
set -euo pipefail
cd "$(dirname "$0")/../.."
K=experiments/real_cpu/knowledge.py
python $K sharer                                  # LoRA on the sharer (48 + 16 people): ~60 min

# 1. Lettered multiple-choice prompt, fuser trained on all 48 fuser people (knowledge/{gated,weighted,projection}).
MC=(--prompt choices --validation-people 0)
for fusion in gated weighted projection; do
  python $K fuser "${MC[@]}" --fusion $fusion     # ~20 min each
done
python $K fuser "${MC[@]}" --fusion gated --fuser-answer letter
python $K eval "${MC[@]}" --fusion gated          # receiver, sharer, t2t, c2c, fact in prompt: ~15 min
python $K eval "${MC[@]}" --fusion gated --fuser-answer letter --methods c2c
python $K eval "${MC[@]}" --fusion weighted --methods c2c
python $K eval "${MC[@]}" --fusion projection --methods c2c
python $K summary "${MC[@]}"
python $K fuser "${MC[@]}" --tag long --fuser-steps 1200   # probed at step 300 by probe_checkpoint.py

# 2. Open questions (knowledge/open/), 40 fuser-training people + 8 validation people, a 64-wide fuser.
OPEN=(--prompt open --fusion gated --tag h64)
python $K fuser "${OPEN[@]}" --fuser-hidden-size 64 --fuser-dropout 0.2 --fuser-lr 2e-3 --fuser-steps 600 \
  --questions-per-fact 3 --save-steps 50 --threads 1                                   # ~20 min
python experiments/real_cpu/probe_checkpoint.py runs/real-cpu/knowledge/c2c-open-gated-h64/trainer/checkpoint-{50,100,150,200,250,300,400} \
  --output docs/results/real-cpu/knowledge/open/gated-h64/probe.jsonl                 # trained vs validation people
D=runs/real-cpu/knowledge/c2c-open-gated-h64   # evaluate the earliest checkpoint with the best validation accuracy
cp $D/trainer/checkpoint-150/{config.json,model.safetensors} $D/
python $K eval "${OPEN[@]}" --threads 1                                                 # ~15 min

# 3. Is a fact decodable from the sharer's prompt cache for people a linear decoder never saw?
python experiments/real_cpu/probe_sharer_kv.py --output docs/results/real-cpu/knowledge/sharer-kv-probe.json   # ~3 min

# 4. A 4x larger world (224 fuser + 32 held-out people): LoRA of 800 steps (5.3 h on one thread beside other jobs), then as in 2.
#    (With --dtype float32 on an AVX2-only CPU: 72 s a step on one thread beside another job, ~16 h for the 800 steps.
#    The rebuild there, run-knowledge-fp32.sh, adds --group-by-length (44% fewer padded tokens) and two threads.)
python $K sharer --fuser-people 224 --heldout-people 32 --sharer-steps 800 --threads 1
W=(--fuser-people 224 --heldout-people 32 --validation-people 16)
P=docs/results/real-cpu/knowledge/world-224-32
python experiments/real_cpu/probe_sharer_kv.py "${W[@]}" --output $P/sharer-kv-probe.json                  # ~10 min
python experiments/real_cpu/probe_sharer_kv.py "${W[@]}" --answer-prefix --output $P/sharer-kv-probe-answer-prefix.json
python $K fuser "${W[@]}" --prompt open --fusion gated --tag h64 --fuser-hidden-size 64 --fuser-dropout 0.2 \
  --fuser-lr 2e-3 --fuser-steps 1200 --questions-per-fact 3 --save-steps 100 --threads 2         # resumes; not finished

# 5. A sharer that recalls a fact where it reads the name (knowledge/world-224-32/recall-sharer/): a second LoRA over
#    the merged sharer of section 4, on recall_texts (question prefixes cut after the name and followed by the value,
#    "name value" rosters, value-first answers, open T2T hints): 300 steps of 16, ~35 min on 2 threads.
R=(--fuser-people 224 --heldout-people 32 --validation-people 16 --sharer recall)
python $K sharer "${R[@]}" --sharer-steps 300 --threads 2
python experiments/real_cpu/probe_sharer_kv.py "${R[@]}" --output $P/recall-sharer/sharer-kv-probe.json
RP=$P/recall-sharer/open
F=(--prompt open --fusion gated --questions-per-fact 3)
python $K fuser "${R[@]}" "${F[@]}" --tag h64 --fuser-hidden-size 64 --fuser-dropout 0.2 --fuser-lr 2e-3 --fuser-steps 600 \
  --save-steps 100 --threads 1                                                          # 14 min
python $K fuser "${R[@]}" "${F[@]}" --tag h16 --fuser-hidden-size 16 --fuser-dropout 0.3 --fuser-lr 3e-3 --fuser-steps 900 \
  --save-steps 150 --threads 2                                                          # 13 min
python $K fuser "${R[@]}" "${F[@]}" --tag h16-top2 --layer-map top2 --fuser-hidden-size 16 --fuser-dropout 0.3 \
  --fuser-lr 3e-3 --fuser-steps 900 --save-steps 150 --threads 2                       # 13 min
for run in h64 h16 h16-top2; do
  python experiments/real_cpu/probe_checkpoint.py runs/real-cpu/knowledge/world-224-32/recall-sharer/c2c-open-gated-$run/trainer/checkpoint-* \
    "${W[@]}" --output $RP/gated-$run/probe.jsonl                                       # ~2 min per checkpoint
done
python $K eval "${R[@]}" "${F[@]}" --tag h16-top2 --methods c2c fact_in_prompt receiver --threads 2   # 16 min
python $K fuser "${R[@]}" "${F[@]}" --tag h16-top2-long --layer-map top2 --fuser-hidden-size 16 --fuser-dropout 0.3 \
  --fuser-lr 3e-3 --fuser-steps 2400 --save-steps 150 --threads 1                     # ~1 h; resumes
python experiments/real_cpu/probe_checkpoint.py runs/real-cpu/knowledge/world-224-32/recall-sharer/c2c-open-gated-h16-top2-long/trainer/checkpoint-{600,1200,1800,2400} \
  "${W[@]}" --output $RP/gated-h16-top2-long/probe.jsonl
python $K eval "${R[@]}" "${F[@]}" --tag h16-top2 --methods sharer t2t --threads 1   # 25 min; adds rows to that table

# 6. The fusion ablation on the recall sharer (top2 map, 16 wide, 900 steps each, as gated-h16-top2), a top4 map, and
#    gates that start almost surely open. ~17 min of training and ~6 min of held-out C2C evaluation each, on 1 thread.
A=(--layer-map top2 --fuser-hidden-size 16 --fuser-dropout 0.3 --fuser-lr 3e-3 --fuser-steps 900 --save-steps 150 --threads 1)
for fusion in projection weighted; do
  python $K fuser "${R[@]}" --prompt open --fusion $fusion --questions-per-fact 3 --tag h16-top2 "${A[@]}"
  python $K eval "${R[@]}" --prompt open --fusion $fusion --questions-per-fact 3 --tag h16-top2 --methods c2c --threads 1
done
python $K summary "${R[@]}" --prompt open --tag h16-top2           # open/ablation-h16-top2.{md,json,png}
for run in "gated --tag h16-top4 --layer-map top4" "projection --tag h16-top4 --layer-map top4" \
           "gated --tag h16-top2-gate4 --gate-init-logit 4" "weighted --tag h16-top2-long --fuser-steps 1500" \
           "gated --tag h16-fixed-token-map --layer-map terminal"; do   # each run's own flags come last and win
  python $K fuser "${R[@]}" --prompt open --questions-per-fact 3 "${A[@]}" --fusion $run
  python $K eval "${R[@]}" --prompt open --questions-per-fact 3 --fusion $run --methods c2c --threads 1
done
