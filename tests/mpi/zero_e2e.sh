#!/bin/bash
# zero_e2e.sh - ZeRO stages 0-3 through mpiexec on 1-4 ranks: the loss curve and
# the final weights match one rank (reduction-order noise only); each rank's
# model-state bytes and bytes sent per step match the textbook formulas
# (tests/mpi/zero_theory.py); sharded runs are reproducible; a rank that fails
# stops every rank with its message.
. "$(dirname "$0")/common.sh"
THEORY="$(dirname "$0")/zero_theory.py"

# 21 test rows: with 4 ranks and batches of 4 the last ranks run out of rows
# first, and under stage 3 must keep joining the gathers.
sums_data "$WORK/pc" 11 21

# llama, untied lm_head (a final unit of its own), 4 layers (C=32, H=4, KV=2,
# I=64, V=258); persistence 0 so every unit is sharded under stage 3.
cat >"$WORK/llama.yaml" <<YAML
method: sft
dataset_name: $WORK/pc
max_length: 24
learning_rate: 3.0e-3
lr_scheduler_type: linear
warmup_steps: 2
weight_decay: 0.01
max_grad_norm: 0.5
max_steps: 20
logging_steps: 1
eval_max_new_tokens: 4
per_device_eval_batch_size: 4
seed: 5
disable_tqdm: true
stage3_param_persistence_threshold: 0
$(llama_model 4 false)
YAML
LLAMA_SHAPE="llama 32 4 4 2 64 258 0"

run() { # run NAME YAML NP [--key value ...]
    local name=$1 yaml=$2 np=$3
    shift 3
    run_limited 120 $MPIRUN -np "$np" "$TRL" "$WORK/$yaml" --output_dir "$WORK/$name" "$@" \
        >"$WORK/$name.out" 2>&1 || { cat "$WORK/$name.out"; fail "run $name failed"; }
}

# Equivalence, memory and communication: every stage on 1-4 ranks, the same
# global batch of 12 rows (12/N per rank).
run ref llama.yaml 1 --per_device_train_batch_size 12
for np in 1 2 3 4; do
    for st in 0 1 2 3; do
        name=l${np}s$st
        run "$name" llama.yaml "$np" --zero_stage "$st" --per_device_train_batch_size $((12 / np))
        same ref "$name" 1e-5 1e-5 tensor || fail "stage $st on $np ranks is not one rank's run"
        "$PYTHON3" "$THEORY" check "$WORK/$name" $LLAMA_SHAPE 1 || fail "stage $st on $np ranks: memory or communication"
    done
done
echo "ok: stages 0-3 on 1-4 ranks match one rank; memory and bytes match theory"

# gpt2 (tied embeddings: lm_head is the embeddings unit) with 2 accumulation
# steps: stages 2 and 3 reduce and gather on every micro-batch. The k part of
# c_attn's bias has a zero gradient in exact arithmetic; AdamW turns its
# rounding noise into steps of up to lr, so weights are compared at the scale
# of the whole model.
sed -e 's/architecture: llama/architecture: gpt2/' -e '/num_key_value_heads/d' \
    -e '/tie_word_embeddings/d' "$WORK/llama.yaml" >"$WORK/gpt2.yaml"
run gref gpt2.yaml 1 --per_device_train_batch_size 6 --gradient_accumulation_steps 2
for np in 2 3; do
    for st in 1 2 3; do
        name=g${np}s$st
        run "$name" gpt2.yaml "$np" --zero_stage "$st" --per_device_train_batch_size $((6 / np)) \
            --gradient_accumulation_steps 2
        same gref "$name" 1e-5 1e-4 model || fail "gpt2 stage $st on $np ranks is not one rank's run"
        "$PYTHON3" "$THEORY" check "$WORK/$name" gpt2 32 4 4 4 64 258 1 2 || fail "gpt2 stage $st on $np ranks"
    done
done
echo "ok: gpt2 with accumulation: stages 1-3 on 2-3 ranks match one rank"

# lfm2: conv and attention layers (each a ZeRO unit), tied embeddings.
sed -e 's/architecture: llama/architecture: lfm2/' -e 's/tie_word_embeddings: false/tie_word_embeddings: true/' \
    -e 's/num_hidden_layers: 4/num_hidden_layers: 4\n  layer_types: [conv, full_attention, conv, conv]/' \
    "$WORK/llama.yaml" >"$WORK/lfm2.yaml"
run fref lfm2.yaml 1 --per_device_train_batch_size 12
for np_st in 2:0 2:1 3:2 4:3; do
    np=${np_st%:*} st=${np_st#*:} name=f${np_st/:/s}
    run "$name" lfm2.yaml "$np" --zero_stage "$st" --per_device_train_batch_size $((12 / np))
    same fref "$name" 1e-5 1e-5 tensor || fail "lfm2 stage $st on $np ranks is not one rank's run"
done
grep -q "conv" "$WORK/fref/config.json" || fail "lfm2 run did not write its layer_types"
echo "ok: lfm2: stages 0-3 on 2-4 ranks match one rank"


# Overlap off waits for each collective at once: the same numbers.
run l3s3w llama.yaml 3 --zero_stage 3 --per_device_train_batch_size 4 --overlap_comm false
same l3s3 l3s3w 0 0 tensor || fail "overlap_comm false changed the result"
# The persistence threshold keeps small units whole: the same numbers, fewer
# gathers (every unit of this model is below the default threshold).
run l3s3p llama.yaml 3 --zero_stage 3 --per_device_train_batch_size 4 \
    --stage3_param_persistence_threshold 100000
same ref l3s3p 1e-5 1e-5 tensor || fail "persistent units changed the result"
# Sharded runs are reproducible bit for bit.
run l3s3again llama.yaml 3 --zero_stage 3 --per_device_train_batch_size 4
same l3s3 l3s3again 0 0 tensor || fail "two stage-3 runs differ"
echo "ok: overlap off, persistent units and a rerun give the same weights"

# A rank that cannot read the dataset stops all four (MPMD: rank 1 alone is
# given a missing file), with its message, well within the time limit.
rc=0
run_limited 60 $MPIRUN -np 1 "$TRL" "$WORK/llama.yaml" --zero_stage 3 --output_dir "$WORK/f1" : \
    -np 3 "$TRL" "$WORK/llama.yaml" --zero_stage 3 --output_dir "$WORK/f1" \
    --dataset_name "$WORK/missing" >"$WORK/f1.out" 2>&1 || rc=$?
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] ||
    { cat "$WORK/f1.out"; fail "one rank's unreadable dataset: exit $rc"; }
grep -q "rank 1: dataset_name: cannot read" "$WORK/f1.out" ||
    { cat "$WORK/f1.out"; fail "the failing rank's message is missing"; }
echo "ok: one rank's unreadable dataset stops every rank with its message"

# A failure in the middle of training, during a stage-3 save that every rank
# takes part in: the step-4 export folder is blocked by a file.
mkdir -p "$WORK/f2"
: >"$WORK/f2/checkpoint-4"
rc=0
run_limited 60 $MPIRUN -np 3 "$TRL" "$WORK/llama.yaml" --zero_stage 3 --output_dir "$WORK/f2" \
    --per_device_train_batch_size 4 --export_steps 4 >"$WORK/f2.out" 2>&1 || rc=$?
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] ||
    { cat "$WORK/f2.out"; fail "a failed save: exit $rc"; }
grep -q "checkpoint-4" "$WORK/f2.out" || { cat "$WORK/f2.out"; fail "the save error is not named"; }
echo "ok: a failed save in mid-run stops every rank"

# validate's plan for GPT-2 124M on 64 ranks agrees with the formulas, and
# names the lowest stage that fits in the memory given.
cat >"$WORK/big.yaml" <<YAML
method: sft
dataset_name: $WORK/pc
max_length: 256
per_device_train_batch_size: 4
per_device_eval_batch_size: 4
stage3_param_persistence_threshold: 0
model:
  architecture: gpt2
  hidden_size: 768
  num_hidden_layers: 12
  num_attention_heads: 12
  intermediate_size: 3072
  vocab_size: 50257
YAML
run_limited 60 $MPIRUN -np 1 "$TRL" validate "$WORK/big.yaml" --ranks 64 --mem-per-rank 1.5G \
    >"$WORK/plan.out" 2>&1 || { cat "$WORK/plan.out"; fail "validate --ranks failed"; }
"$PYTHON3" - "$THEORY" "$WORK/plan.out" <<'PY' || { cat "$WORK/plan.out"; fail "validate's plan"; }
import importlib.util, re, sys
spec = importlib.util.spec_from_file_location("theory", sys.argv[1])
th = importlib.util.module_from_spec(spec)
spec.loader.exec_module(th)
head, layer, tail = th.units("gpt2", 768, 12, 12, 12, 3072, 50257, 1)
def size(v, u):
    return float(v) * (2**30 if u == "GiB" else 2**20)
rows, act = {}, None
for line in open(sys.argv[2]):
    m = re.match(r"#\s+(\d)\s+((?:[\d.]+ [MG]iB\s*){7})", line)
    if m:
        v = re.findall(r"([\d.]+) ([MG]iB)", m.group(2))
        rows[int(m.group(1))] = [size(*x) for x in v]
assert sorted(rows) == [0, 1, 2, 3], rows
fits = None
for st in range(4):
    psi, state, sent = th.expected(st, 64, 1, head, layer, tail, 12)
    params, grads, optim, work, act, total, got_sent = rows[st]
    for what, got, want in (("model states", params + grads + optim + work, state),
                            ("sent per step", got_sent, sent)):
        if abs(got - want) > 0.01 * want + 0.06 * 2**20:
            sys.exit(f"stage {st}: {what} {got:.0f} B, theory {want:.0f} B")
    if fits is None and state + act <= 1.5 * 2**30:
        fits = st
said = re.search(r"zero_stage (\d) is the lowest stage that fits", open(sys.argv[2]).read())
assert said and int(said.group(1)) == fits, (said and said.group(0), fits)
print(f"  validate: 4 stages within 1 % of theory; stage {fits} fits in 1.5 GiB")
PY
expect_plan_error() {
    local out=$WORK/planerr.out rc=0
    run_limited 30 $MPIRUN -np 1 "$TRL" validate "$WORK/big.yaml" "$@" >"$out" 2>&1 || rc=$?
    [ "$rc" -eq 2 ] && grep -q "not a" "$out" || { cat "$out"; fail "validate $*: exit $rc"; }
}
expect_plan_error --ranks many
expect_plan_error --mem-per-rank lots
echo "ok: validate --ranks --mem-per-rank"
