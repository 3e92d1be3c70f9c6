#!/bin/bash
# pref_ranks.sh - the preference methods across ranks and ZeRO stages.
#
# - dpo sigmoid: the same global batch on 2 and 3 ranks at every ZeRO stage
#   gives one rank's losses and weights (the loss is a mean of micro-batch
#   means, as under DDP).
# - aot (beta 3, so that the losses leave the linear range of logsigmoid,
#   where a sort would not change the mean): "the batch" AOT sorts is each rank's micro-batch of
#   per_device_train_batch_size pairs, as in TRL (no gather): 2 ranks x 2
#   pairs equals 1 rank x 2 pairs x 2 accumulation steps (the same
#   micro-batches), and differs from 1 rank x 4 pairs (one sort over 4).
# - kto: z0 is the mean over every rank's mismatched rows of the micro-step:
#   2 ranks x 2 examples log the same kl as 1 rank x 4 examples whose KL
#   partners are the same (kto_partners works in chunks of
#   per_device_train_batch_size, so the data is laid out to make them equal),
#   and the kl of 1 rank x 2 x 2 accumulation differs (per micro-batch).
# - precompute_ref_log_probs gives the same run as the frozen reference;
#   sync_ref_model (TR-DPO) with alpha 0 is the plain run and with alpha 1
#   every step keeps the reference equal to the policy.
# - a dpo run stopped at a checkpoint and resumed ends bit for bit where the
#   uninterrupted run does; so does a bco run, whose running mean of the
#   rewards travels in the checkpoint.
. "$(dirname "$0")/common.sh"

DATA="$WORK/pref"
mkdir -p "$DATA"
head -n 96 "$top_srcdir/inputs/arith_pref/train.jsonl" >"$DATA/train.jsonl"
head -n 40 "$top_srcdir/inputs/arith_pref/test.jsonl" >"$DATA/test.jsonl"

base_yaml() { # base_yaml METHOD OUT
    cat <<YAML
method: $1
dataset_name: $DATA
output_dir: $2
dataset_cache_dir: none
max_length: 32
learning_rate: 3.0e-3
lr_scheduler_type: constant
max_steps: 8
logging_steps: 1
save_strategy: "no"
per_device_eval_batch_size: 8
eval_max_samples: 16
seed: 7
disable_tqdm: true
YAML
    llama_model 2 true
}



# compare A B KEY REL: the metric KEY of every training step of runs A and B
# agree to REL relative (or differ by more than -REL when REL < 0).
compare() {
    py "$WORK/$1/metrics.jsonl" "$WORK/$2/metrics.jsonl" "$3" "$4" <<'PY' || fail "$1 vs $2: $3"
import json, sys
a, b, key, rel = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
def steps(p):
    return {r["step"]: r[key] for r in map(json.loads, open(p)) if key in r and "loss" in r}
x, y = steps(a), steps(b)
assert x.keys() == y.keys() and x, (sorted(x), sorted(y))
worst = max(abs(x[s] - y[s]) / max(abs(x[s]), 1e-3) for s in x)
if rel >= 0:
    ok = worst <= rel
    print("  %s: %d steps agree to %.2g (<= %g)" % (key, len(x), worst, rel))
else:
    ok = worst > -rel
    print("  %s: the runs differ by up to %.2g (> %g)" % (key, worst, -rel))
sys.exit(0 if ok else 1)
PY
}

echo "dpo sigmoid: 1 rank x 4 pairs against 2 and 3 ranks, stages 0-3"
run_method dpo1 1 dpo --per_device_train_batch_size 4 --gradient_accumulation_steps 3
for st in 0 1 2 3; do
    run_method dpo2_$st 2 dpo --per_device_train_batch_size 2 --gradient_accumulation_steps 3 \
        --zero_stage $st
    compare dpo1 dpo2_$st rewards/margins 2e-3
    same dpo1 dpo2_$st 2e-4 2e-4 tensor
done
run_method dpo3 3 dpo --per_device_train_batch_size 4 --gradient_accumulation_steps 1 \
    --zero_stage 3
run_method dpo1b 1 dpo --per_device_train_batch_size 4 --gradient_accumulation_steps 3
same dpo1 dpo1b 0 0 tensor
same dpo1 dpo3 2e-4 2e-4 tensor

echo "dpo: precompute_ref_log_probs equals the frozen reference"
run_method dpo_pre 2 dpo --per_device_train_batch_size 2 --gradient_accumulation_steps 3 \
    --precompute_ref_log_probs true
grep -q "precompute_ref_log_probs: reference log-probs of 96 train and 40 test" \
    "$WORK/dpo_pre.log" || fail "dpo_pre: no precompute line"
compare dpo1 dpo_pre loss 2e-4
compare dpo1 dpo_pre rewards/chosen 2e-3

# resumed METHOD NAME KEY...: an 8-step run on 2 ranks saving every 4 steps,
# against one stopped at step 4 and resumed from its latest checkpoint: the
# metrics KEY... of every step and the final weights are bit for bit equal.
resumed() {
    local method=$1 name=$2
    shift 2
    run_method ${name}_full 2 "$method" --per_device_train_batch_size 2 --save_strategy steps \
        --save_steps 4
    run_method ${name}_half 2 "$method" --per_device_train_batch_size 2 --save_strategy steps \
        --save_steps 4 --max_steps 4
    base_yaml "$method" "$WORK/${name}_half" >"$WORK/${name}_resume.yaml"
    run_limited 300 $MPIRUN -n 2 "$TRL" "$WORK/${name}_resume.yaml" \
        --per_device_train_batch_size 2 --save_strategy steps --save_steps 4 \
        --resume_from_checkpoint latest >"$WORK/${name}_resume.log" 2>&1 ||
        { tail -20 "$WORK/${name}_resume.log"; fail "$name: resume failed"; }
    grep -q "resumed from .*checkpoint-4.h5: step 4" "$WORK/${name}_resume.log" ||
        fail "$name: no resume line"
    for key in "$@"; do
        compare ${name}_full ${name}_half "$key" 0
    done
    same ${name}_full ${name}_half 0 0 tensor
}

echo "dpo: a resumed run is the uninterrupted one (the reference is rebuilt)"
resumed dpo res loss rewards/margins
echo "bco: the running mean of the rewards (delta) survives a resume"
resumed bco bres delta loss

echo "dpo: TR-DPO's sync_ref_model mixes the policy into the reference"
# alpha 0 never changes the reference: the plain run, bit for bit. alpha 1
# every step makes the reference the policy each step starts from, so every
# step's log-ratios are 0: loss log 2 and zero margins, at stage 0 and at
# stage 3 (where each rank mixes its own shards).
run_method sync0 2 dpo --per_device_train_batch_size 2 --gradient_accumulation_steps 3 \
    --sync_ref_model true --ref_model_mixup_alpha 0 --ref_model_sync_steps 1
compare dpo1 sync0 loss 2e-4
same dpo2_0 sync0 0 0 tensor
for st in 0 3; do
    run_method sync1_$st 2 dpo --per_device_train_batch_size 2 --sync_ref_model true \
        --ref_model_mixup_alpha 1 --ref_model_sync_steps 1 --zero_stage $st \
        --stage3_param_persistence_threshold 0
    py "$WORK/sync1_$st/metrics.jsonl" <<'PY' || fail "sync1_$st: the reference did not follow the policy"
import json, math, sys
rows = [r for r in map(json.loads, open(sys.argv[1])) if "loss" in r]
bad = [(r["step"], r["loss"], r["rewards/margins"]) for r in rows
       if abs(r["loss"] - math.log(2)) > 1e-6 or abs(r["rewards/margins"]) > 1e-6]
print("  %d steps at loss log 2 and margin 0 (bad: %s)" % (len(rows) - len(bad), bad))
sys.exit(1 if bad or len(rows) != 8 else 0)
PY
done

echo "aot: the sort is per micro-batch"
run_method aot2 2 dpo --loss_type aot --beta 3 --per_device_train_batch_size 2
run_method aot1ga 1 dpo --loss_type aot --beta 3 --per_device_train_batch_size 2 \
    --gradient_accumulation_steps 2
run_method aot1 1 dpo --loss_type aot --beta 3 --per_device_train_batch_size 4
compare aot2 aot1ga loss 2e-4
compare aot2 aot1 loss -1e-3

echo "kto: z0 is all-reduced over the ranks of each micro-step"
# kto pairs each example with its neighbour in chunks of
# per_device_train_batch_size; rows i and i+2 of the file below have the same
# completion, so chunks of 2 and of 4 give every example the same partner's
# completion, and the runs differ only in how z0 is averaged.
py "$DATA" <<'PY'
import json, sys
d = sys.argv[1]
rows = [json.loads(l) for l in open(d + "/train.jsonl")]
out = []
for k in range(0, len(rows) - 3, 4):
    a, b, c, e = rows[k:k + 4]
    for r, comp, lab in ((a, a["chosen"], True), (b, b["rejected"], False),
                         (c, a["chosen"], False), (e, b["rejected"], True)):
        out.append({"prompt": r["prompt"], "completion": comp, "label": lab})
with open(d + "/train.jsonl", "w") as f:
    for r in out:
        f.write(json.dumps(r) + "\n")
open(d + "/test.jsonl", "w").writelines(json.dumps(r) + "\n" for r in out[:16])
PY
run_method kto2 2 kto --per_device_train_batch_size 2
run_method kto1 1 kto --per_device_train_batch_size 4
run_method kto1ga 1 kto --per_device_train_batch_size 2 --gradient_accumulation_steps 2
compare kto2 kto1 kl 2e-4
compare kto2 kto1 loss 2e-4
compare kto2 kto1ga kl -1e-3
echo "ok: preference methods across ranks"
