#!/bin/bash
# ckpt_resume.sh - resuming from parallel-HDF5 checkpoints: on the same rank
# count and stage the continued run is bit for bit the uninterrupted one (loss
# at every step, final weights); on another rank count or stage it continues
# the same curve; SIGUSR1 (or SIGTERM to any one rank) saves and stops every
# rank with exit status 75, and `latest` resumes exactly.
. "$(dirname "$0")/common.sh"
need_procps

sums_data "$WORK/pc" 11 21
# Constant learning rate: a run of 6 steps resumed to 12 follows the schedule
# of a 12-step run exactly.
ckpt_yaml "$WORK/base.yaml" 4 "lr_scheduler_type: constant" "weight_decay: 0.01" \
    "max_grad_norm: 0.5" "stage3_param_persistence_threshold: 0"

run() { train "$1" "$2" "$WORK/base.yaml" "${@:3}"; } # run NAME NP [--key value ...]

# The metrics lines of the training steps without the timing field.
steps_of() {
    grep '"loss"' "$WORK/$1/metrics.jsonl" | sed 's/, "tokens_per_second.*//'
}

# Same rank count and stage: 6 steps, then `latest` to 12, is the 12-step run.
for st in 0 1 2 3; do
    run full$st 2 --zero_stage $st --per_device_train_batch_size 4
    run half$st 2 --zero_stage $st --per_device_train_batch_size 4 --max_steps 6
    [ "$(cat "$WORK/half$st/latest")" = checkpoint-6.h5 ] || fail "latest does not name checkpoint-6.h5"
    run half$st 2 --zero_stage $st --per_device_train_batch_size 4 --resume_from_checkpoint latest
    grep -q "resumed from $WORK/half$st/checkpoint-6.h5: step 6" "$WORK/half$st.out" ||
        fail "stage $st: no resume message"
    cmp -s "$WORK/full$st/model.safetensors" "$WORK/half$st/model.safetensors" ||
        fail "stage $st: resumed weights differ from the uninterrupted run"
    diff <(steps_of full$st) <(steps_of half$st) >/dev/null ||
        fail "stage $st: the resumed loss curve differs: $(diff <(steps_of full$st) <(steps_of half$st) | head -4)"
done
echo "ok: stages 0-3 on 2 ranks resume bit for bit (12 losses, final weights)"

# Another rank count and stage, global batch 12 throughout: the curve of one
# rank within reduction-order noise. At this constant learning rate AdamW
# amplifies that noise: an uninterrupted run on 3 ranks ends up to 8e-5 from
# one rank's weights, so weights get 2e-4.
run ref 1 --per_device_train_batch_size 12
reshard() { # reshard NAME NP1 STAGE1 NP2 STAGE2
    run "$1" "$2" --zero_stage "$3" --per_device_train_batch_size $((12 / $2)) --max_steps 6
    run "$1" "$4" --zero_stage "$5" --per_device_train_batch_size $((12 / $4)) \
        --resume_from_checkpoint latest
    grep -q "saved by $2 ranks* at zero_stage $3" "$WORK/$1.out" || fail "$1: not resumed"
    same ref "$1" 1e-5 2e-4 tensor || fail "$1: $2 ranks stage $3 -> $4 ranks stage $5 left the curve"
}
reshard n2to3 2 1 3 2
reshard n4to1 4 3 1 0
reshard s0to3 2 0 3 3
reshard s3to0 3 3 2 0
echo "ok: resumed on 2->3, 4->1 ranks and stages 1->2, 3->0, 0->3 follow one rank's run"

# A stop signal: SIGUSR1 to the launcher (as Slurm's --signal sends it to
# every task), once training is under way. Linear decay over 400 steps.
sig_run() { # sig_run NAME SIGNAL TARGET: TARGET mpirun or rank1
    local name=$1 sig=$2 target=$3
    $MPIRUN -np 2 "$TRL" "$WORK/base.yaml" --output_dir "$WORK/$name" --zero_stage 2 \
        --per_device_train_batch_size 4 --lr_scheduler_type linear --max_steps 400 \
        --save_steps 100000 >"$WORK/$name.out" 2>&1 &
    local pid=$! i n
    for i in $(seq 600); do
        n=$(grep -c '"loss"' "$WORK/$name/metrics.jsonl" 2>/dev/null)
        [ "${n:-0}" -ge 10 ] && break
        sleep 0.05
    done
    if [ "$target" = mpirun ]; then
        kill -"$sig" $pid
    else # one rank alone: the others learn of it from the step's sum
        kill -"$sig" "$(pgrep -f "^$TRL $WORK/base.yaml --output_dir $WORK/$name " | tail -1)"
    fi
    local rc=0
    wait $pid || rc=$?
    [ $rc -eq 75 ] || { cat "$WORK/$name.out"; fail "$name: exit status $rc after SIG$sig, not 75"; }
    [ "$(grep -c 'trl-hpc: stopped by SIGTERM or SIGUSR1' "$WORK/$name.out")" = 1 ] ||
        fail "$name: the stop message is not printed once"
    local k
    k=$(sed -n 's/^checkpoint-\([0-9]*\)\.h5$/\1/p' "$WORK/$name/latest")
    [ -n "$k" ] && [ "$k" -lt 400 ] || fail "$name: no checkpoint before the end (latest: $k)"
    run "$name" 2 --zero_stage 2 --per_device_train_batch_size 4 --lr_scheduler_type linear \
        --max_steps 400 --save_steps 100000 --resume_from_checkpoint latest
    cmp -s "$WORK/sigref/model.safetensors" "$WORK/$name/model.safetensors" ||
        fail "$name: stopped at step $k and resumed, the weights differ"
    diff <(steps_of sigref) <(steps_of "$name") >/dev/null || fail "$name: the loss curve differs"
    echo "  $name: stopped after step $k, resumed to 400 bit for bit"
}
run sigref 2 --zero_stage 2 --per_device_train_batch_size 4 --lr_scheduler_type linear \
    --max_steps 400 --save_steps 100000
sig_run usr1 USR1 mpirun
sig_run term TERM rank1
echo "ok: SIGUSR1 to mpirun and SIGTERM to one rank save, exit 75 and resume exactly"
