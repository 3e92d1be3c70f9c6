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
