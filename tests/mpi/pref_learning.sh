#!/bin/bash
# pref_learning.sh - the preference methods learn the bundled task. From a
# briefly trained SFT model on inputs/arith (right on about a third of the
# held-out prompts), DPO on inputs/arith_pref ranks the right answer above the
# wrong one on more than 90 % of the training pairs and answers as many held-out
# prompts right (within noise); a reward model trained from the same SFT model orders most
# held-out pairs correctly. The runs use the bundled configs
# (inputs/quickstart.yaml, dpo.yaml, reward.yaml) with shorter or stronger
# schedules and take about a minute and a half on 2 cores.
. "$(dirname "$0")/common.sh"

inputs="$top_srcdir/inputs"

# The checked-in preference data is what its generator makes from inputs/arith.
"$PYTHON3" "$inputs/make_arith_pref.py" "$inputs/arith" "$WORK/arith_pref" >/dev/null ||
    fail "make_arith_pref.py failed"
for split in train test; do
    cmp -s "$WORK/arith_pref/$split.jsonl" "$inputs/arith_pref/$split.jsonl" ||
        fail "inputs/arith_pref/$split.jsonl is stale: rerun python3 inputs/make_arith_pref.py"
done
echo "ok: inputs/arith_pref is what make_arith_pref.py writes"

# run NAME YAML [--key value ...]: one rank with 2 threads into $WORK/NAME.
# Checkpoints are off: only the exported model and metrics.jsonl are used.
run() {
    local name=$1 yaml=$2
    shift 2
    run_limited 300 $(mpirun_threads 2) -np 1 "$TRL" "$inputs/$yaml" \
        --output_dir "$WORK/$name" --save_strategy no --disable_tqdm true "$@" \
        >"$WORK/$name.out" 2>&1 || { cat "$WORK/$name.out"; fail "run $name failed"; }
}

# exact_match DIR: the first and last eval_exact_match of DIR/metrics.jsonl
# (before and after training), checking they were logged at step 0 and at the
# last step.
exact_match() {
    py "$1/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ev = [r for r in rows if "eval_exact_match" in r]
last = max(r["step"] for r in rows)
if len(ev) < 2 or ev[0]["step"] != 0 or ev[-1]["step"] != last:
    sys.exit(f"{sys.argv[1]}: eval_exact_match not logged at step 0 and step {last}: "
             f"{[r['step'] for r in ev]}")
print(ev[0]["eval_exact_match"], ev[-1]["eval_exact_match"])
PY
}

# (a) The starting point: the quickstart recipe cut to 1400 of its 3411 steps
# (the cosine schedule shrinks with it), which leaves a model with plenty of
# wrong answers for the preference methods to correct.
run sft quickstart.yaml --dataset_name "$inputs/arith" --max_steps 1400 --eval_steps 0
em=$(exact_match "$WORK/sft") || fail "sft: no exact-match accuracy"
read -r _ sft1 <<<"$em"
py "$sft1" <<'PY' || fail "the SFT model's exact match $sft1 is not between 0.1 and 0.8"
import sys
sys.exit(not 0.1 < float(sys.argv[1]) < 0.8)
PY
echo "ok: SFT start point, held-out exact match $sft1"

# (b) DPO from the SFT model (the reference is its frozen copy) with dpo.yaml's
# loss, the sigmoid loss plus the chosen answers' NLL (RPO): the sigmoid loss
# alone learns the preferences but lowers exact match on this task; RPO
# keeps it.
run dpo dpo.yaml --model_name_or_path "$WORK/sft" --dataset_name "$inputs/arith_pref" \
    --eval_steps 0
em=$(exact_match "$WORK/dpo") || fail "dpo: no exact-match accuracy"
read -r dpo0 dpo1 <<<"$em"
[ "$dpo0" = "$sft1" ] ||
    fail "DPO's exact match before training $dpo0 != the SFT model's after training $sft1"
py "$WORK/dpo/metrics.jsonl" "$dpo0" "$dpo1" <<'PY' || fail "DPO did not learn the preferences"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
train = [r for r in rows if "rewards/accuracies" in r]
held = [r for r in rows if "eval_rewards/accuracies" in r]
if not train or not held:
    sys.exit("rewards/accuracies not logged in training and evaluation")
for k in ("rewards/chosen", "rewards/rejected", "rewards/margins"):
    if k not in train[-1]:
        sys.exit(f"metrics.jsonl lacks TRL's {k}")
acc, held_acc = train[-1]["rewards/accuracies"], held[-1]["eval_rewards/accuracies"]
before, after = float(sys.argv[2]), float(sys.argv[3])
print(f"  rewards/accuracies {acc:.3f} at step {train[-1]['step']} ({held_acc:.3f} on the "
      f"held-out pairs), held-out exact match {before:.3f} -> {after:.3f}")
if not acc > 0.9:
    sys.exit(f"last rewards/accuracies {acc} <= 0.9")
if not held_acc > 0.8:
    sys.exit(f"held-out eval_rewards/accuracies {held_acc} <= 0.8")
# RPO holds greedy accuracy where the sigmoid loss alone drops it by a
# third (README); from this short SFT start the change is within the
# run-to-run noise of the start itself (0.22-0.36 exact match over seeds
# and kernels' summation orders), so only a real fall fails.
if not after >= before - 0.05:
    sys.exit(f"exact match fell from {before} to {after} after DPO")
PY
echo "ok: DPO prefers the right answers; exact match $dpo0 -> $dpo1"

# (c) A reward model from the same SFT model, scored on the held-out pairs.
# Its head starts random (accuracy about 0.5); wrong answers of the wrong shape
# are soon ranked right, near misses (off by one or ten) need arithmetic the
# SFT model lacks, so the accuracy ends at 0.7-0.8, not near 1.
run reward reward.yaml --model_name_or_path "$WORK/sft" --dataset_name "$inputs/arith_pref" \
    --max_steps 500 --eval_steps 0
py "$WORK/reward/metrics.jsonl" <<'PY' || fail "the reward model did not learn to rank the pairs"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ev = [r for r in rows if "eval_accuracy" in r]
last = max(r["step"] for r in rows)
if len(ev) < 2 or ev[0]["step"] != 0 or ev[-1]["step"] != last:
    sys.exit(f"eval_accuracy not logged at step 0 and at the last step {last}")
before, after = ev[0]["eval_accuracy"], ev[-1]["eval_accuracy"]
print(f"  held-out pairwise accuracy {before:.3f} -> {after:.3f}")
if not after >= 0.65:
    sys.exit(f"final eval_accuracy {after} < 0.65")
PY
echo "ok: the reward model orders the held-out pairs"
