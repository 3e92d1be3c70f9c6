#!/bin/bash
# formats_e2e.sh - dataset formats end to end: SFT on conversational `messages`
# data with assistant_only_loss learns (the loss falls); data of a format SFT
# cannot read stops every rank with a message naming the format and the method.
. "$(dirname "$0")/common.sh"

mkdir -p "$WORK/chat"
py "$WORK/chat" <<'PY'
import json, random, sys
random.seed(11)
d = sys.argv[1]
def row():
    a, b = random.randint(0, 49), random.randint(0, 49)
    return {"messages": [
        {"role": "user", "content": f"{a}+{b}"},
        {"role": "assistant", "content": str(a + b)},
    ], "id": random.randint(0, 10**6)}
with open(f"{d}/train.jsonl", "w") as f:
    for _ in range(200):
        f.write(json.dumps(row()) + "\n")
with open(f"{d}/test.jsonl", "w") as f:
    for _ in range(16):
        f.write(json.dumps(row()) + "\n")
with open(f"{d}/pref.jsonl", "w") as f:
    for _ in range(8):
        f.write(json.dumps({"prompt": "1+1=", "chosen": "2", "rejected": "3"}) + "\n")
PY

cat >"$WORK/base.yaml" <<YAML
method: sft
dataset_name: $WORK/chat
max_length: 64
learning_rate: 3.0e-3
warmup_steps: 2
max_steps: 25
logging_steps: 1
per_device_train_batch_size: 4
assistant_only_loss: true
seed: 5
disable_tqdm: true
$(llama_model 2 true)
YAML

run_limited 300 $MPIRUN -np 2 "$TRL" "$WORK/base.yaml" --output_dir "$WORK/conv" \
    >"$WORK/conv.out" 2>&1 || { cat "$WORK/conv.out"; fail "conversational SFT run failed"; }
py "$WORK/conv/metrics.jsonl" <<'PY' || { cat "$WORK/conv.out"; fail "loss did not fall"; }
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
first, last = rows[0]["loss"], rows[-1]["loss"]
print(f"  loss {first:.3f} -> {last:.3f}")
assert len(rows) == 25, len(rows)
assert last < 0.75 * first, (first, last)
PY
echo "ok: SFT on conversational messages with assistant_only_loss learns"

# The option reaches the loss: with the same weights, the loss over the
# assistant turns alone differs from the loss over whole conversations (the
# exact masks are checked by tests/test_data).
run_limited 300 $MPIRUN -np 1 "$TRL" "$WORK/base.yaml" --output_dir "$WORK/full" \
    --assistant_only_loss false --max_steps 1 >"$WORK/full.out" 2>&1 ||
    { cat "$WORK/full.out"; fail "run without assistant_only_loss failed"; }
run_limited 300 $MPIRUN -np 1 "$TRL" "$WORK/base.yaml" --output_dir "$WORK/asst" \
    --max_steps 1 >"$WORK/asst.out" 2>&1 ||
    { cat "$WORK/asst.out"; fail "run with assistant_only_loss failed"; }
py "$WORK/full/metrics.jsonl" "$WORK/asst/metrics.jsonl" <<'PY' ||
import json, sys
def first_eval(p):
    return [json.loads(l) for l in open(p) if '"eval_loss"' in l][0]
full, asst = first_eval(sys.argv[1]), first_eval(sys.argv[2])
print(f"  eval_loss before training: whole {full['eval_loss']}, assistant-only {asst['eval_loss']}")
assert full["eval_loss"] != asst["eval_loss"]
PY
    fail "assistant_only_loss changes nothing"
echo "ok: assistant_only_loss changes the loss"

# Preference data cannot train SFT: every rank stops with one clear message.
out=$WORK/pref.out
rc=0
run_limited 60 $MPIRUN -np 2 "$TRL" "$WORK/base.yaml" --output_dir "$WORK/pref" \
    --dataset_name "$WORK/chat/pref.jsonl" --assistant_only_loss false >"$out" 2>&1 || rc=$?
[ "$rc" -ne 0 ] || { cat "$out"; fail "preference data trained sft"; }
[ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] || { cat "$out"; fail "preference data: hang"; }
n=$(grep -c "trl-hpc: error:" "$out")
[ "$n" -eq 1 ] || { cat "$out"; fail "preference data: error printed $n times"; }
grep -qF "$WORK/chat/pref.jsonl: preference data (prompt, chosen, rejected) cannot train method sft: it needs language modeling or prompt-completion data" "$out" ||
    { cat "$out"; fail "message does not name the format and the method"; }
echo "ok: preference data given to sft stops every rank with the format and method"

# A forced dataset_format that does not match the columns names both.
rc=0
run_limited 60 $MPIRUN -np 2 "$TRL" "$WORK/base.yaml" --output_dir "$WORK/forced" \
    --dataset_format prompt_completion >"$WORK/forced.out" 2>&1 || rc=$?
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || { cat "$WORK/forced.out"; fail "forced format: rc $rc"; }
grep -qF "train.jsonl:1: dataset_format is prompt-completion, which needs the columns prompt, completion, but the row has 'messages', 'id', which is language modeling data" "$WORK/forced.out" ||
    { cat "$WORK/forced.out"; fail "forced format message"; }
echo "ok: a forced dataset_format that does not fit names both formats"

# A model folder with a real Hugging Face tokenizer (Qwen3: byte-level BPE and
# its chat template) trains on conversational data, and the folder written at
# the end carries the tokenizer, so it loads and tokenizes as it came in.
mkdir -p "$WORK/qwen"
cat >"$WORK/qwen.yaml" <<YAML
method: sft
dataset_name: $WORK/chat/train.jsonl
max_length: 64
per_device_train_batch_size: 4
learning_rate: 1.0e-3
max_steps: 3
disable_tqdm: true
model:
  architecture: llama
  vocab_size: 151669
  hidden_size: 32
  num_hidden_layers: 1
  num_attention_heads: 2
  intermediate_size: 64
  max_position_embeddings: 128
YAML
mkdir -p "$WORK/chat"
py "$WORK/chat/train.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for a in range(24):
        f.write(json.dumps({"messages": [
            {"role": "user", "content": f"What is {a}+1?"},
            {"role": "assistant", "content": str(a + 1)}]}) + "\n")
PY
run_limited 120 $MPIRUN -np 1 "$TRL" "$WORK/qwen.yaml" --output_dir "$WORK/qwen/init" --max_steps 1 \
    >"$WORK/qinit.out" 2>&1 || { cat "$WORK/qinit.out"; fail "initial qwen-shaped model"; }
xz -dc "$top_srcdir/tests/data/tokenizers/qwen3/tokenizer.json.xz" >"$WORK/qwen/init/tokenizer.json"
cp "$top_srcdir/tests/data/tokenizers/qwen3/tokenizer_config.json" "$WORK/qwen/init/"
run_limited 300 $MPIRUN -np 2 "$TRL" "$WORK/qwen.yaml" --model_name_or_path "$WORK/qwen/init" \
    --output_dir "$WORK/qwen/out" --assistant_only_loss true >"$WORK/qwen.out" 2>&1 ||
    { cat "$WORK/qwen.out"; fail "SFT with the Qwen3 tokenizer failed"; }
for f in config.json generation_config.json model.safetensors tokenizer.json tokenizer_config.json; do
    [ -s "$WORK/qwen/out/$f" ] || fail "output folder lacks $f"
done
ids=$(echo '{"text": "<|im_start|>user"}' | "$TRL" tokenize "$WORK/qwen/out")
[ "$ids" = '{"ids": [151644, 872]}' ] || fail "tokenizer of the output folder gives $ids"
grep -q '"eos_token_id": 151645' "$WORK/qwen/out/generation_config.json" ||
    fail "generation_config.json lacks Qwen3's eos id"
echo "ok: Hugging Face tokenizer folder in and out (Qwen3 template, 2 ranks)"

# tokenizer.json without tokenizer_config.json names no EOS: a clear error on
# every rank, not id -1 in the embedding.
mkdir -p "$WORK/noeos"
cp "$WORK/qwen/init/config.json" "$WORK/qwen/init/model.safetensors" "$WORK/qwen/init/tokenizer.json" "$WORK/noeos/"
rc=0
run_limited 120 $MPIRUN -np 2 "$TRL" "$WORK/qwen.yaml" --model_name_or_path "$WORK/noeos" \
    --output_dir "$WORK/noeos-out" >"$WORK/noeos.out" 2>&1 || rc=$?
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && grep -q "names no EOS token" "$WORK/noeos.out" ||
    { cat "$WORK/noeos.out"; fail "a tokenizer without EOS was not refused"; }
echo "ok: a tokenizer without EOS is refused with a message"

# trl-hpc generate on the output folder: plain and --chat (Qwen3 template),
# reproducible with a seed, and clear usage errors.
a=$("$TRL" generate "$WORK/qwen/out" --prompt "What is 3+1?" --chat --max_new_tokens 5 \
    --temperature 0.8 --seed 11) || fail "generate --chat failed"
b=$("$TRL" generate "$WORK/qwen/out" --prompt "What is 3+1?" --chat --max_new_tokens 5 \
    --temperature 0.8 --seed 11) || fail "generate --chat failed"
[ -n "$a" ] && [ "$a" = "$b" ] || fail "seeded generation is not reproducible: '$a' vs '$b'"
"$TRL" generate "$WORK/qwen/out" --prompt "2+2=" --max_new_tokens 3 --logprobs \
    >/dev/null 2>"$WORK/lp.err" || fail "generate failed"
grep -q "finish_reason=" "$WORK/lp.err" || fail "--logprobs printed no finish reason"
rc=0
"$TRL" generate "$WORK/qwen/out" >/dev/null 2>&1 || rc=$?
[ "$rc" -eq 2 ] || fail "generate without --prompt: exit $rc, expected 2"
rc=0
run_limited 60 $MPIRUN -np 2 "$TRL" generate "$WORK/qwen/out" --prompt x >"$WORK/np2.out" 2>&1 || rc=$?
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && grep -q "runs on one process" "$WORK/np2.out" ||
    { cat "$WORK/np2.out"; fail "generate under mpirun -np 2 was not refused"; }
echo "ok: trl-hpc generate (chat template, seeded sampling, usage errors)"
