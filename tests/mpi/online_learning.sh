#!/bin/bash
# online_learning.sh - the online methods learn the bundled arithmetic task.
# A short SFT from scratch on inputs/arith (1000 steps, about 10 s) leaves a
# small llama that answers 9-22 % of the prompts right; GRPO (1 trainer + 1
# generation rank, max_staleness 1) and RLOO (the trainer sampling itself),
# with the built-in accuracy reward, then raise the accuracy of their sampled
# answers by more than 0.15 and the greedy exact match by more than 0.2
# (seeds 1-3: reward +0.28 to +0.38, exact match +0.37 to +0.59).
#
# The online runs train and evaluate on the same 32 prompts of the train
# split, each seen about 70 times. On fresh prompts (the full train split)
# neither the reward nor the held-out exact match of this model rises in
# 150-200 steps at learning rates 1e-5 to 1e-3: the held-out exact match
# does not rise (0.22 before, 0.12-0.22 after at 1e-5 to 1e-4 and lower at
# higher rates), so held-out learning is not what is tested.
. "$(dirname "$0")/common.sh"

seed=${LEARN_SEED:-1}
inputs="$top_srcdir/inputs"
DATA="$WORK/arith32"
mkdir -p "$DATA"
head -n 32 "$inputs/arith/train.jsonl" >"$DATA/train.jsonl"
cp "$DATA/train.jsonl" "$DATA/test.jsonl"

# run NAME NP LAUNCHER YAML [--key value ...]: trains into $WORK/NAME.
run() {
    local name=$1 np=$2 launcher=$3 yaml=$4
    shift 4
    run_limited 120 $launcher -np "$np" "$TRL" "$yaml" --output_dir "$WORK/$name" \
        --save_strategy no --disable_tqdm true --seed "$seed" "$@" \
        >"$WORK/$name.out" 2>&1 || { tail -20 "$WORK/$name.out"; fail "run $name failed"; }
}

# (1) SFT from scratch on the full train split: 1000 steps of batch 64 (about
# 4 epochs) with the quickstart's schedule.
{
    cat <<YAML
method: sft
dataset_name: $inputs/arith
completion_only_loss: true
max_length: 32
per_device_train_batch_size: 64
max_steps: 1000
learning_rate: 3.0e-3
lr_scheduler_type: cosine
warmup_ratio: 0.05
weight_decay: 0.01
max_grad_norm: 1.0
logging_steps: 100
eval_steps: 0
eval_max_new_tokens: 5
per_device_eval_batch_size: 100
model:
  architecture: llama
  vocab_size: 258
  hidden_size: 64
  num_hidden_layers: 2
  num_attention_heads: 4
  num_key_value_heads: 2
  intermediate_size: 192
  max_position_embeddings: 64
  tie_word_embeddings: true
YAML
}     >"$WORK/sft.yaml"
t0=$SECONDS
run sft 1 "$MPIRUN" "$WORK/sft.yaml"
sft_em=$(py "$WORK/sft/metrics.jsonl" <<'PY'
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1]) if "eval_exact_match" in l]
print(f"{ev[0]['eval_exact_match']:.3f} -> {ev[-1]['eval_exact_match']:.3f}")
PY
) || fail "sft: no exact match logged"
echo "  sft: held-out exact match $sft_em ($((SECONDS - t0)) s)"

# online.yaml: the shared part of the online configs, on $DATA.
online_yaml() { # online_yaml METHOD [LINE ...]
    local method=$1
    shift
    printf '%s\n' "method: $method" "model_name_or_path: $WORK/sft" "dataset_name: $DATA" \
        "reward_funcs: [accuracy]" "per_device_train_batch_size: 64" \
        "max_completion_length: 6" "temperature: 1.0" "lr_scheduler_type: constant" \
        "logging_steps: 10" "eval_steps: 0" "eval_max_new_tokens: 5" \
        "per_device_eval_batch_size: 64" "$@"
}

# learned NAME MIN_REWARD_GAIN MIN_EM_GAIN: the mean reward of the last three
# logged steps exceeds that of the first three by MIN_REWARD_GAIN, and the
# exact match after training (last eval line) exceeds the one before (step 0)
# by MIN_EM_GAIN.
learned() {
    py "$WORK/$1/metrics.jsonl" "$2" "$3" "$1" <<'PY'
import json, sys
path, dr, de, name = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
rows = [json.loads(l) for l in open(path)]
tr = [r for r in rows if "rewards/accuracy/mean" in r]
ev = [r for r in rows if "eval_exact_match" in r]
if len(tr) < 6 or len(ev) < 2 or ev[0]["step"] != 0:
    sys.exit(f"{path}: too few reward lines ({len(tr)}) or no eval at step 0")
first = sum(r["rewards/accuracy/mean"] for r in tr[:3]) / 3
last = sum(r["rewards/accuracy/mean"] for r in tr[-3:]) / 3
before, after = ev[0]["eval_exact_match"], ev[-1]["eval_exact_match"]
print(f"  {name}: reward {first:.3f} -> {last:.3f} (steps {tr[0]['step']}-{tr[2]['step']} vs "
      f"{tr[-3]['step']}-{tr[-1]['step']}), exact match {before:.3f} -> {after:.3f}")
if not last > first + dr:
    sys.exit(f"{name}: reward rose by {last - first:.3f}, not more than {dr}")
if not after > before + de:
    sys.exit(f"{name}: exact match rose by {after - before:.3f}, not more than {de}")
PY
}

# (2) GRPO: 8 prompts x 8 completions a step, sampled by a generation rank one
# step behind the trainer.
online_yaml grpo "generation_ranks: 1" "max_staleness: 1" "num_generations: 8" \
    "learning_rate: 3.0e-4" "max_steps: 300" >"$WORK/grpo.yaml"
t0=$SECONDS
run grpo 2 "$MPIRUN" "$WORK/grpo.yaml"
learned grpo 0.15 0.2 || fail "GRPO did not learn"
echo "  grpo: $((SECONDS - t0)) s"

# (3) RLOO (beta 0.05): 16 prompts x 4 completions a step, the trainer
# sampling itself.
online_yaml rloo "generation_ranks: 0" "num_generations: 4" \
    "learning_rate: 3.0e-4" "max_steps: 300" >"$WORK/rloo.yaml"
t0=$SECONDS
run rloo 1 "$MPIRUN" "$WORK/rloo.yaml"
learned rloo 0.15 0.2 || fail "RLOO did not learn"
echo "  rloo: $((SECONDS - t0)) s"
echo "PASS"
