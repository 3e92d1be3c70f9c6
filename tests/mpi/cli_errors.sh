#!/bin/bash
# cli_errors.sh - bad input stops every rank with a clear message and a
# non-zero exit, never a hang: config errors, CLI errors, bad data, bad model.
. "$(dirname "$0")/common.sh"

# expect_error NAME PATTERN CMD...: CMD must fail within 60 s and print PATTERN.
expect_error() {
    local name=$1 pattern=$2
    shift 2
    local out=$WORK/$name.out rc=0
    run_limited 60 "$@" >"$out" 2>&1 || rc=$?
    [ "$rc" -ne 0 ] || { cat "$out"; fail "$name: exit status 0, expected an error"; }
    [ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] || { cat "$out"; fail "$name: timed out (hang)"; }
    grep -qF -- "$pattern" "$out" || { cat "$out"; fail "$name: message lacks '$pattern'"; }
    # Every rank stops, but the message is printed once (by rank 0).
    local n
    n=$(grep -c "trl-hpc: error:" "$out")
    [ "$n" -eq 1 ] || { cat "$out"; fail "$name: error printed $n times"; }
    echo "ok: $name"
}

mkdir -p "$WORK/data"
printf '{"text": "hello world"}\n{"text": "second row"}\n' >"$WORK/data/train.jsonl"
good() {
    cat <<YAML
method: sft
dataset_name: $WORK/data/train.jsonl
output_dir: $WORK/out
max_steps: 1
per_device_train_batch_size: 1
model:
  architecture: llama
  hidden_size: 16
  num_hidden_layers: 1
  num_attention_heads: 2
YAML
}

good >"$WORK/good.yaml"
run_limited 60 $MPIRUN -np 2 "$TRL" "$WORK/good.yaml" >"$WORK/good.out" 2>&1 ||
    { cat "$WORK/good.out"; fail "the valid config did not run"; }
echo "ok: valid config runs on 2 ranks"

{ good; echo "learning_rat: 0.1"; } >"$WORK/typo.yaml"
expect_error unknown_key "typo.yaml:11:1: unknown key 'learning_rat' (did you mean 'learning_rate'?)" \
    $MPIRUN -np 2 "$TRL" "$WORK/typo.yaml"

{ good; echo "per_device_train_batch_size: 0"; } | grep -v '^per_device_train_batch_size: 1' >"$WORK/range.yaml"
expect_error out_of_range "per_device_train_batch_size: 0 is out of range" \
    $MPIRUN -np 3 "$TRL" "$WORK/range.yaml"

{ good; echo "warmup_ratio: lots"; } >"$WORK/type.yaml"
expect_error wrong_type "warmup_ratio: 'lots' is not a number" \
    $MPIRUN -np 2 "$TRL" "$WORK/type.yaml"

expect_error missing_file "cannot read config file" \
    $MPIRUN -np 2 "$TRL" "$WORK/nonexistent.yaml"

expect_error cli_unknown_flag "did you mean '--learning_rate'" \
    $MPIRUN -np 2 "$TRL" "$WORK/good.yaml" --learning-rate 0.1

expect_error cli_bad_value "max_steps: 'ten' is not an integer" \
    $MPIRUN -np 2 "$TRL" "$WORK/good.yaml" --max_steps ten

printf '{"text": "fine"}\n{"text": "broken\n' >"$WORK/data/bad.jsonl"
expect_error bad_jsonl "bad.jsonl:2:" \
    $MPIRUN -np 2 "$TRL" "$WORK/good.yaml" --dataset_name "$WORK/data/bad.jsonl"

printf '{"text": "fine"}\n{"txt": "wrong column"}\n' >"$WORK/data/col.jsonl"
expect_error missing_column "col.jsonl:2:" \
    $MPIRUN -np 2 "$TRL" "$WORK/good.yaml" --dataset_name "$WORK/data/col.jsonl"

printf '{"text": ""}\n{"text": ""}\n' >"$WORK/data/empty.jsonl"
expect_error nothing_to_learn "no training example has a token to learn" \
    $MPIRUN -np 2 "$TRL" "$WORK/good.yaml" --dataset_name "$WORK/data/empty.jsonl"

# An empty prompt in the test split is a question the model cannot be asked:
# it counts as a wrong answer instead of reading logits before the batch.
mkdir -p "$WORK/pc"
printf '{"prompt": "1+1=", "completion": "2"}\n{"prompt": "2+2=", "completion": "4"}\n' >"$WORK/pc/train.jsonl"
printf '{"prompt": "", "completion": "7"}\n{"prompt": "1+1=", "completion": "2"}\n' >"$WORK/pc/test.jsonl"
run_limited 60 $MPIRUN -np 2 "$TRL" "$WORK/good.yaml" --dataset_name "$WORK/pc" \
    --eval_max_new_tokens 3 >"$WORK/emptyprompt.out" 2>&1 ||
    { cat "$WORK/emptyprompt.out"; fail "an empty test prompt broke evaluation"; }
grep -q "(2 answers)" "$WORK/emptyprompt.out" || { cat "$WORK/emptyprompt.out"; fail "empty prompt not counted"; }
echo "ok: empty test prompt counts as a wrong answer"

expect_error small_vocab "model.vocab_size (100) is smaller than the tokenizer's vocabulary (258)" \
    $MPIRUN -np 2 "$TRL" "$WORK/good.yaml" --model.vocab_size 100

expect_error bad_heads "must be a multiple of" \
    $MPIRUN -np 2 "$TRL" "$WORK/good.yaml" --model.num_attention_heads 3

expect_error missing_model "config.json" \
    $MPIRUN -np 2 "$TRL" "$WORK/good.yaml" --model_name_or_path "$WORK/no-such-model"

# skip_invalid_rows turns the data error into a count.
run_limited 60 $MPIRUN -np 2 "$TRL" "$WORK/good.yaml" --dataset_name "$WORK/data/col.jsonl" \
    --skip_invalid_rows true >"$WORK/skip.out" 2>&1 || { cat "$WORK/skip.out"; fail "skip_invalid_rows run failed"; }
grep -q "1 skipped" "$WORK/skip.out" || { cat "$WORK/skip.out"; fail "skipped row not counted"; }
echo "ok: skip_invalid_rows"

# The preference methods: data of the wrong type, loss types, combinations.
printf '{"prompt": "1+1=", "chosen": "2", "rejected": "3"}\n{"prompt": "2+2=", "chosen": "4", "rejected": "5"}\n' \
    >"$WORK/data/pref.jsonl"
pref() { good | sed "s/^method: sft/method: $1/; s|train.jsonl|pref.jsonl|"; }
pref dpo >"$WORK/dpo.yaml"
expect_error dpo_wrong_format "method dpo" \
    $MPIRUN -np 2 "$TRL" "$WORK/dpo.yaml" --dataset_name "$WORK/data/train.jsonl"
expect_error dpo_loss_type "loss_type: 'sigmod' is not a dpo loss type" \
    $MPIRUN -np 2 "$TRL" "$WORK/dpo.yaml" --loss_type sigmod
expect_error dpo_loss_weights "loss_weights has 1 entries but loss_type 2" \
    $MPIRUN -np 2 "$TRL" "$WORK/dpo.yaml" --loss_type sigmoid,sft --loss_weights 1
expect_error dpo_wpo_aot "use_weighting: WPO weights do not apply to loss_type aot" \
    $MPIRUN -np 2 "$TRL" "$WORK/dpo.yaml" --loss_type aot --use_weighting true
expect_error dpo_packing "packing: dpo does not pack sequences" \
    $MPIRUN -np 2 "$TRL" "$WORK/dpo.yaml" --packing true
expect_error dpo_robust "the robust loss needs a flip rate in [0, 0.5)" \
    $MPIRUN -np 2 "$TRL" "$WORK/dpo.yaml" --loss_type robust --label_smoothing 0.5
expect_error dpo_missing_ref "ref_model_name_or_path" \
    $MPIRUN -np 2 "$TRL" "$WORK/dpo.yaml" --ref_model_name_or_path "$WORK/no-such-model"
pref kto >"$WORK/kto.yaml"
expect_error kto_random "kto's KL term pairs each example with its neighbour" \
    $MPIRUN -np 2 "$TRL" "$WORK/kto.yaml" --train_sampling_strategy random
expect_error kto_batch1 "kto's KL term needs at least 2 examples per micro-batch" \
    $MPIRUN -np 2 "$TRL" "$WORK/kto.yaml"
pref orpo >"$WORK/orpo.yaml"
expect_error orpo_ref "precompute_ref_log_probs: method orpo uses no reference model" \
    $MPIRUN -np 2 "$TRL" "$WORK/orpo.yaml" --precompute_ref_log_probs true
pref reward >"$WORK/reward.yaml"
printf '{"prompt": "1+1=", "chosen": "2", "rejected": "3", "margin": "big"}\n' >"$WORK/data/margin.jsonl"
expect_error reward_margin "line 1: the margin column must be a number" \
    $MPIRUN -np 2 "$TRL" "$WORK/reward.yaml" --dataset_name "$WORK/data/margin.jsonl"
# TR-DPO's mixed reference is not in checkpoints: resuming is refused.
run_limited 60 $MPIRUN -np 2 "$TRL" "$WORK/dpo.yaml" --output_dir "$WORK/trdpo" \
    --sync_ref_model true >"$WORK/trdpo.out" 2>&1 || { cat "$WORK/trdpo.out"; fail "sync_ref_model run failed"; }
expect_error trdpo_resume "resume_from_checkpoint with sync_ref_model" \
    $MPIRUN -np 2 "$TRL" "$WORK/dpo.yaml" --output_dir "$WORK/trdpo" \
    --sync_ref_model true --resume_from_checkpoint latest

# An example whose prompt fills max_length has no completion left: dropped
# with a note, as TRL drops it (ORPO's odds would be log 0); when every
# example is, the run stops with a message.
printf '{"prompt": "1+1=", "chosen": "2", "rejected": "3"}\n{"prompt": "%s", "chosen": "4", "rejected": "5"}\n' \
    "$(printf 'x%.0s' $(seq 1 40))" >"$WORK/data/long.jsonl"
pref orpo >"$WORK/orpo.yaml"
run_limited 60 $MPIRUN -np 2 "$TRL" "$WORK/orpo.yaml" --dataset_name "$WORK/data/long.jsonl" \
    --max_length 24 --output_dir "$WORK/long" >"$WORK/long.out" 2>&1 ||
    { cat "$WORK/long.out"; fail "the run with one over-long example failed"; }
grep -q "note: dropped 1 train and 0 test examples whose completion max_length (24) cut away" \
    "$WORK/long.out" || { cat "$WORK/long.out"; fail "no note of the dropped example"; }
grep -q '"loss": nan\|"loss": inf\|"loss": -nan' "$WORK/long/metrics.jsonl" &&
    fail "orpo logged a non-finite loss"
echo "ok: an example truncated to its prompt is dropped"
printf '{"prompt": "%s", "chosen": "4", "rejected": "5"}\n' "$(printf 'x%.0s' $(seq 1 40))" \
    >"$WORK/data/allong.jsonl"
expect_error all_truncated "every completion was cut by max_length (24)" \
    $MPIRUN -np 2 "$TRL" "$WORK/orpo.yaml" --dataset_name "$WORK/data/allong.jsonl" --max_length 24
