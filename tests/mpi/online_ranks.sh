#!/bin/bash
# online_ranks.sh - the online methods' rank layouts and their failure paths.
#
# - grpo with max_staleness 0 trains the same weights, bit for bit, with the
#   trainer generating itself (generation_ranks 0) and with 1 or 2
#   generation ranks: each chunk of completions is sampled in one call with
#   its own seed, whoever samples it, and the weights pushed are the
#   trainer's own.
# - 2 trainers + 1 generation rank equal 1 trainer with 2 accumulation steps
#   (the same chunks, dapo's global token normalisation), and ZeRO-3 the
#   stage-0 run; rloo likewise across layouts.
# - max_staleness 1 completes and logs staleness 1 after the first round,
#   the importance-sampling ratios and the weight push.
# - a run stopped at a checkpoint and resumed with generation ranks ends
#   where the uninterrupted run does (staleness 0).
# - a generation rank killed mid-run, a reward program that crashes or
#   answers garbage, and generation_ranks that leave no trainer end the job
#   with a message, never a hang.
. "$(dirname "$0")/common.sh"

DATA="$WORK/arith"
mkdir -p "$DATA"
head -n 200 "$top_srcdir/inputs/arith/train.jsonl" >"$DATA/train.jsonl"
head -n 20 "$top_srcdir/inputs/arith/test.jsonl" >"$DATA/test.jsonl"

# A new model gets no accuracy reward yet; "contains a digit" varies within
# the groups from the first step, so every step has a gradient.
base_yaml() { # base_yaml METHOD OUT
    cat <<YAML
method: $1
dataset_name: $DATA
output_dir: $2
dataset_cache_dir: none
max_length: 32
per_device_train_batch_size: 8
gradient_accumulation_steps: 2
num_generations: 4
max_completion_length: 6
reward_funcs: [format]
format_pattern: ".*[0-9].*"
learning_rate: 1.0e-2
lr_scheduler_type: constant
max_steps: 4
logging_steps: 1
save_strategy: "no"
eval_max_new_tokens: 4
per_device_eval_batch_size: 10
seed: 3
disable_tqdm: true
YAML
    llama_model 2 true
}



# Expects a failure: exit status non-zero within the limit and the message.
run_fails() { # run_fails NAME NP LIMIT PATTERN [--key value ...]
    local name=$1 np=$2 limit=$3 pattern=$4
    shift 4
    base_yaml grpo "$WORK/$name" >"$WORK/$name.yaml"
    local t0=$SECONDS rc=0
    run_limited "$limit" $MPIRUN -n "$np" "$TRL" "$WORK/$name.yaml" "$@" \
        >"$WORK/$name.log" 2>&1 || rc=$?
    [ "$rc" -ne 0 ] || fail "$name: exited 0"
    [ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] ||
        fail "$name: hung (killed after $limit s)"
    grep -q -- "$pattern" "$WORK/$name.log" || {
        tail -20 "$WORK/$name.log"
        fail "$name: no message matching '$pattern'"
    }
    echo "  $name: exit $rc after $((SECONDS - t0)) s: $(grep -m1 -- "$pattern" "$WORK/$name.log" | cut -c1-150)"
}

echo "== grpo, max_staleness 0: generation_ranks 0, 1, 2 give the same weights"
run_method k0 1 grpo --max_staleness 0
run_method k1 2 grpo --max_staleness 0 --generation_ranks 1
run_method k2 3 grpo --max_staleness 0 --generation_ranks 2
py "$WORK/k0/metrics.jsonl" <<'PY' || fail "k0: the run did not train"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
assert len(rows) == 4, rows
assert all(r["grad_norm"] > 0 for r in rows), [r["grad_norm"] for r in rows]
assert all(0 < r["reward"] < 1 for r in rows), [r["reward"] for r in rows]
for k in ("completions/mean_length", "rewards/format/mean", "rewards/format/std",
          "reward_std", "frac_reward_zero_std", "entropy", "clip_ratio/region_mean",
          "sampling/importance_sampling_ratio/mean", "staleness/max",
          "timing/wait_rollouts"):
    assert k in rows[0], k
PY
cmp -s "$WORK/k0/model.safetensors" "$WORK/k1/model.safetensors" ||
    fail "generation_ranks 1 trained other weights than generation_ranks 0"
cmp -s "$WORK/k0/model.safetensors" "$WORK/k2/model.safetensors" ||
    fail "generation_ranks 2 trained other weights than generation_ranks 0"
cmp -s "$WORK/k0/metrics.jsonl" "$WORK/k1/metrics.jsonl" && fail "the metrics lack the layout's timings"
echo "  identical weights after 4 steps"

echo "== 2 trainers and ZeRO-3 against 1 trainer"
# grpo's logged loss is about 0 by design (the ratio is 1 at the first
# iteration): losses compare to 1e-3 of max(|loss|, 1e-4), the weights to 1e-5.
run_method t2 3 grpo --max_staleness 0 --generation_ranks 1 --gradient_accumulation_steps 1
same k0 t2 1e-3 1e-5 model || fail "2 trainers differ from 1"
run_method z3 2 grpo --max_staleness 0 --zero_stage 3 --gradient_accumulation_steps 1
same k0 z3 1e-3 1e-5 model || fail "ZeRO-3 differs from stage 0"
run_method z3g 3 grpo --max_staleness 0 --zero_stage 3 --gradient_accumulation_steps 1 --generation_ranks 1
same k0 z3g 1e-3 1e-5 model || fail "ZeRO-3 with a generation rank differs"
run_method r0 1 rloo --max_staleness 0 --beta 0.05
run_method r2 3 rloo --max_staleness 0 --beta 0.05 --generation_ranks 1 --gradient_accumulation_steps 1
same r0 r2 1e-3 1e-5 model || fail "rloo: 2 trainers differ from 1"

echo "== ppo: the value model trains beside the policy, the same on every layout"
head -n 64 "$top_srcdir/inputs/arith_pref/train.jsonl" >"$WORK/pref.jsonl"
cat >"$WORK/rm.yaml" <<YAML
method: reward
dataset_name: $WORK/pref.jsonl
output_dir: $WORK/rm
dataset_cache_dir: none
max_length: 32
per_device_train_batch_size: 16
max_steps: 4
learning_rate: 1.0e-3
save_strategy: "no"
disable_tqdm: true
$(llama_model 2 true)
YAML
run_limited 60 $MPIRUN -n 1 "$TRL" "$WORK/rm.yaml" >"$WORK/rm.log" 2>&1 || {
    tail "$WORK/rm.log"
    fail "reward model: trl-hpc exited with an error"
}
ppo_args="--reward_model $WORK/rm --reward_funcs [] --num_mini_batches 2 --num_ppo_epochs 2 --per_device_train_batch_size 4"
run_method p0 1 ppo --max_staleness 0 $ppo_args
run_method p1 2 ppo --max_staleness 0 --generation_ranks 1 $ppo_args
cmp -s "$WORK/p0/model.safetensors" "$WORK/p1/model.safetensors" ||
    fail "ppo: generation_ranks 1 trained other weights than generation_ranks 0"
py "$WORK/p0/metrics.jsonl" <<'PY' || fail "ppo: figures"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
assert len(rows) == 4 and all(r["grad_norm"] > 0 for r in rows), rows
for k in ("objective/kl", "objective/scores", "objective/rlhf_reward", "loss/policy_avg",
          "loss/value_avg", "policy/clipfrac_avg", "val/clipfrac_avg", "val/ratio"):
    assert k in rows[0], k
assert all(r["loss/value_avg"] > 0 for r in rows), [r["loss/value_avg"] for r in rows]
PY
# ppo whitens the advantages on each rank, as TRL does per process: compare
# 2 trainers with 2 trainers.
run_method p2 2 ppo --max_staleness 0 --gradient_accumulation_steps 1 $ppo_args
run_method pz 3 ppo --max_staleness 0 --gradient_accumulation_steps 1 --zero_stage 3 \
    --generation_ranks 1 $ppo_args
same p2 pz 1e-4 1e-5 model || fail "ppo: ZeRO-3 differs from stage 0"
echo "  ppo: identical weights across layouts, ZeRO-3 within rounding"
# A round of ppo is num_ppo_epochs x num_mini_batches = 4 steps: stopped at
# the end of the first (the value model goes to checkpoint-4.value.h5) and
# resumed on another ZeRO stage, it ends where the uninterrupted run does.
run_method pfull 2 ppo --max_staleness 0 --generation_ranks 1 --max_steps 8 $ppo_args
run_method phalf 2 ppo --max_staleness 0 --generation_ranks 1 --max_steps 4 --save_strategy steps \
    --save_steps 4 $ppo_args
[ -f "$WORK/phalf/checkpoint-4.value.h5" ] || fail "ppo: no checkpoint-4.value.h5"
base_yaml ppo "$WORK/phalf" >"$WORK/presume.yaml"
run_limited 120 $MPIRUN -n 2 "$TRL" "$WORK/presume.yaml" --max_staleness 0 --generation_ranks 1 \
    --max_steps 8 --resume_from_checkpoint latest --zero_stage 2 $ppo_args \
    >"$WORK/presume.log" 2>&1 || {
    tail -20 "$WORK/presume.log"
    fail "ppo resume: trl-hpc exited with an error"
}
same pfull phalf 1e-4 1e-5 model || fail "ppo: the resumed run ended elsewhere"
echo "  ppo: resumed with its value model at step 4, the same weights at step 8"

echo "== max_staleness 1"
run_method s1 2 grpo --generation_ranks 1 --max_staleness 1 --max_steps 6
py "$WORK/s1/metrics.jsonl" <<'PY' || fail "s1: staleness figures"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
st = [r["staleness/max"] for r in rows]
assert st[0] == 0 and all(s == 1 for s in st[1:]), st
# the last two rounds were asked for before they began: no push after them
sb = [r["sync/bytes"] for r in rows]
assert all(b > 0 for b in sb[:-2]) and sb[-2:] == [0, 0], sb
for r in rows:
    assert 0 < r["sampling/importance_sampling_ratio/mean"] <= 3.0, r
print("  staleness per step", st)
PY
cmp -s "$WORK/k1/model.safetensors" "$WORK/s1/model.safetensors" &&
    fail "staleness 1 trained the staleness-0 weights"

echo "== resume with generation ranks"
run_method full 2 grpo --generation_ranks 1 --max_staleness 0 --max_steps 6
run_method half 2 grpo --generation_ranks 1 --max_staleness 0 --max_steps 3 --save_strategy steps --save_steps 3
base_yaml grpo "$WORK/half" >"$WORK/resume.yaml"
run_limited 120 $MPIRUN -n 2 "$TRL" "$WORK/resume.yaml" --generation_ranks 1 --max_staleness 0 \
    --max_steps 6 --resume_from_checkpoint latest >"$WORK/resume.log" 2>&1 || {
    tail -20 "$WORK/resume.log"
    fail "resume: trl-hpc exited with an error"
}
cmp -s "$WORK/full/model.safetensors" "$WORK/half/model.safetensors" ||
    fail "the resumed run ended elsewhere than the uninterrupted one"
echo "  resumed at step 3: the same weights at step 6"

echo "== the reward program gets each sampled completion and its ids"
# The byte tokenizer's ids are the bytes (EOS 256): the program scores 1 when
# the text it was sent is exactly the bytes of completion_ids, and checks the
# solution column trl-hpc adds for prompt-completion rows.
cat >"$WORK/echo.py" <<'PY'
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    ids = [i for i in r["completion_ids"] if i < 256]
    same = bytes(ids).decode("utf-8", "replace") == r["completion"]
    print(json.dumps({"reward": 1.0 if same and "solution" in r else 0.0}), flush=True)
PY
run_method cmd 2 grpo --generation_ranks 1 --reward_funcs '[format]' --reward_command "$PYTHON3 $WORK/echo.py"
py "$WORK/cmd/metrics.jsonl" <<'PY' || fail "cmd: the program was sent other text than the completion"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
got = [r["rewards/reward_command/mean"] for r in rows]
assert got == [1.0] * len(rows), got
PY

echo "== a reward that does not apply (null) leaves the step finite"
# The program answers null for the first completion of every batch: its
# advantage is 0 and it leaves its group's baseline (rloo) or statistics
# (grpo); nothing may turn into inf or NaN.
cat >"$WORK/nulls.py" <<'PY'
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    v = None if r["index"] == 0 else float(any(ch.isdigit() for ch in r["completion"]))
    print(json.dumps({"reward": v}), flush=True)
PY
for m in rloo grpo; do
    run_method "null_$m" 1 $m --reward_funcs '[]' --reward_command "$PYTHON3 $WORK/nulls.py"
    py "$WORK/null_$m/metrics.jsonl" <<'PY' || fail "null_$m: a null reward made the run non-finite"
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
assert len(rows) == 4, rows
for r in rows:
    for k in ("loss", "grad_norm", "reward"):
        assert math.isfinite(r[k]), (k, r[k])
assert any(r["grad_norm"] > 0 for r in rows), rows
PY
done

echo "== failures end the job with a message"
run_fails nogen 2 60 "leaves no trainer" --generation_ranks 2
# The trainers fail in their set-up: the generation ranks stop with them.
run_fails badreward 3 60 "'bogus' is not a built-in reward" --generation_ranks 2 \
    --reward_funcs '[accuracy, bogus]'
run_fails noppo 2 60 "ppo needs reward_model" --generation_ranks 1 --method ppo
run_fails badloss 2 60 "grpo takes grpo, bnpo, dr_grpo or dapo" --generation_ranks 1 \
    --loss_type sigmoid
run_fails badgroup 1 60 "num_generations 3 does not divide the 16 completions" \
    --num_generations 3
cat >"$WORK/crash.py" <<'PY'
import json, sys
for i, line in enumerate(sys.stdin):
    if i == 5:
        sys.exit(3)
    print(json.dumps({"reward": 1.0}), flush=True)
PY
run_fails crash 2 60 "exited with status 3" --generation_ranks 1 --reward_funcs '[]' \
    --reward_command "$PYTHON3 $WORK/crash.py"
run_fails garbage 1 60 "not JSON" --reward_funcs '[]' \
    --reward_command "echo hello; cat >/dev/null"

need_procps
base_yaml grpo "$WORK/kill" >"$WORK/kill.yaml"
t0=$SECONDS
run_limited 120 $MPIRUN -n 2 "$TRL" "$WORK/kill.yaml" --generation_ranks 1 --max_steps 100000 \
    --logging_steps 1 >"$WORK/kill.log" 2>&1 &
launcher=$!
gen=""
for _ in $(seq 100); do
    sleep 0.2
    grep -q '"step": 2,' "$WORK/kill/metrics.jsonl" 2>/dev/null || continue
    for p in $(pgrep -f "^$TRL $WORK/kill.yaml"); do
        grep -qz '^OMPI_COMM_WORLD_RANK=1$' "/proc/$p/environ" 2>/dev/null && gen=$p
    done
    [ -n "$gen" ] && break
done
[ -n "$gen" ] || { kill $launcher; fail "kill: the generation rank was not found"; }
kill -9 "$gen"
rc=0
wait $launcher || rc=$?
[ "$rc" -ne 0 ] || fail "kill: the job exited 0 after its generation rank died"
# (mpirun passes the rank's signal on: 137 is the dead rank's status, a
# hang would show as the 120 s limit)
[ $((SECONDS - t0)) -lt 110 ] || fail "kill: the job hung after its generation rank died"
grep -qi "signal 9\|killed\|exited on signal" "$WORK/kill.log" || {
    tail "$WORK/kill.log"
    fail "kill: no message names the dead rank"
}
echo "  killed the generation rank: exit $rc after $((SECONDS - t0)) s: $(grep -i -m1 "signal 9\|killed" "$WORK/kill.log" | cut -c1-120)"
echo "PASS"
