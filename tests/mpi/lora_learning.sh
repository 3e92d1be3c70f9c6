#!/bin/bash
# lora_learning.sh - LoRA on LFM2 learns the bundled task with the bundled
# recipes. From a briefly trained LFM2 (inputs/lfm2_quickstart.yaml cut to 600
# steps), LoRA SFT (inputs/lfm2_sft_lora.yaml) answers more held-out prompts
# right, and DPO with LoRA (inputs/lfm2_dpo_lora.yaml, the reference being the
# base with the adapters off) ranks the right answer above the wrong one on
# more than 90 % of the training pairs. The outputs are PEFT adapter folders:
# generation from one equals generation from the merged export, checkpoints
# hold adapters only, and the base folder is never written. About a minute
# on 2 cores.
. "$(dirname "$0")/common.sh"

inputs="$top_srcdir/inputs"

run() { # run NAME YAML [--key value ...]: one rank with 2 threads into $WORK/NAME
    local name=$1 yaml=$2
    shift 2
    run_limited 300 $(mpirun_threads 2) -np 1 "$TRL" "$inputs/$yaml" \
        --output_dir "$WORK/$name" --disable_tqdm true "$@" \
        >"$WORK/$name.out" 2>&1 || { cat "$WORK/$name.out"; fail "run $name failed"; }
}

# first_last DIR KEY: KEY's first and last value in DIR/metrics.jsonl.
first_last() {
    py "$1/metrics.jsonl" "$2" <<'PY'
import json, sys
v = [json.loads(l)[sys.argv[2]] for l in open(sys.argv[1]) if f'"{sys.argv[2]}"' in l]
if len(v) < 2:
    sys.exit(f"{sys.argv[1]}: {sys.argv[2]} logged {len(v)} times")
print(v[0], v[-1])
PY
}

# (a) The base: a full SFT run of the toy LFM2, stopped early.
run base lfm2_quickstart.yaml --dataset_name "$inputs/arith" --max_steps 600 --eval_steps 0 \
    --save_strategy no
read -r _ base_em <<<"$(first_last "$WORK/base" eval_exact_match)" || fail "base: no exact match"
sum_before=$(cat "$WORK/base"/*.safetensors "$WORK/base/config.json" | cksum)

# (b) LoRA SFT with the recipe (q/k/v/out_proj adapters), from the base.
run sft lfm2_sft_lora.yaml --model_name_or_path "$WORK/base" --dataset_name "$inputs/arith" \
    --eval_steps 0 --save_steps 300
read -r sft0 sft1 <<<"$(first_last "$WORK/sft" eval_exact_match)" || fail "sft: no exact match"
[ "$sft0" = "$base_em" ] || fail "LoRA SFT's exact match before training $sft0 != the base's $base_em"
py "$sft0" "$sft1" <<'PY' || fail "LoRA SFT did not learn: exact match $sft0 -> $sft1"
import sys
sys.exit(not float(sys.argv[2]) > float(sys.argv[1]) + 0.15)
PY
grep -q "trainable params: .* || all params: .* || trainable%" "$WORK/sft.out" ||
    fail "the banner lacks PEFT's trainable-parameter line"
grep -q "on 10 modules: out_proj x4 q_proj x2 k_proj x2 v_proj x2" "$WORK/sft.out" ||
    fail "the banner does not list the adapted modules"
for f in adapter_config.json adapter_model.safetensors; do
    [ -f "$WORK/sft/$f" ] || fail "sft: no $f"
done
[ ! -e "$WORK/sft/model.safetensors" ] || fail "a LoRA run wrote a full model.safetensors"
"$TRL" inspect "$WORK/sft/checkpoint-300.h5" >"$WORK/inspect.out" || fail "inspect failed"
grep -q "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight" "$WORK/inspect.out" ||
    fail "the checkpoint lacks the adapters"
! grep -q "^  model.layers" "$WORK/inspect.out" || fail "the checkpoint holds base tensors"
# The adapter folder generates as the merged model does.
"$TRL" export "$WORK/sft/checkpoint-683.h5" "$WORK/merged" --merge_adapter >/dev/null ||
    fail "export --merge_adapter failed"
for p in "12+34=" "7+8=" "55+44="; do
    a=$("$TRL" generate "$WORK/sft" --prompt "$p" --temperature 0 --max_new_tokens 5) ||
        fail "generate from the adapter folder failed"
    b=$("$TRL" generate "$WORK/merged" --prompt "$p" --temperature 0 --max_new_tokens 5) ||
        fail "generate from the merged folder failed"
    [ "$a" = "$b" ] || fail "prompt $p: adapter folder says '$a', merged model '$b'"
done
echo "ok: LoRA SFT, held-out exact match $sft0 -> $sft1; adapter folder = merged export"

# The seed's o_proj names no LFM2 module: said by name, and q/k/v still adapted.
run seed lfm2_sft_lora.yaml --model_name_or_path "$WORK/base" --dataset_name "$inputs/arith" \
    --max_steps 1 --eval_steps 0 --save_strategy no \
    --lora_target_modules '[q_proj, k_proj, v_proj, o_proj]'
grep -q "lora_target_modules: o_proj matches no module of this lfm2 model" "$WORK/seed.out" ||
    fail "o_proj on lfm2 was not reported"
run_limited 60 $(mpirun_threads 2) -np 1 "$TRL" "$inputs/lfm2_sft_lora.yaml" \
    --model_name_or_path "$WORK/base" --output_dir "$WORK/none" --lora_target_modules o_proj \
    >"$WORK/none.out" 2>&1 && fail "targets matching nothing were accepted"
grep -q "matches no linear module" "$WORK/none.out" || { cat "$WORK/none.out"; fail "no clear message"; }
echo "ok: unmatched target names are reported, none matching is an error"

# (c) DPO with LoRA: the reference is the base with the adapters off.
run dpo lfm2_dpo_lora.yaml --model_name_or_path "$WORK/base" \
    --dataset_name "$inputs/arith_pref" --eval_steps 0 --save_strategy no --logging_steps 1
read -r dpo0 _ <<<"$(first_last "$WORK/dpo" eval_exact_match)" || fail "dpo: no exact match"
[ "$dpo0" = "$base_em" ] || fail "DPO's exact match before training $dpo0 != the base's $base_em"
py "$WORK/dpo/metrics.jsonl" <<'PY' || fail "DPO with LoRA did not learn the preferences"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
train = [r for r in rows if "rewards/accuracies" in r]
# Step 1's rewards come from the forward before the first update, where the
# adapters (B = 0) leave the policy equal to the reference.
if train[0]["step"] != 1 or train[0]["rewards/chosen"] != 0 or train[0]["rewards/rejected"] != 0:
    sys.exit(f"step {train[0]['step']}: rewards {train[0]['rewards/chosen']}, "
             f"{train[0]['rewards/rejected']}: the policy must start as the reference")
acc = train[-1]["rewards/accuracies"]
print(f"  rewards/accuracies {acc:.3f} at step {train[-1]['step']}")
if not acc > 0.9:
    sys.exit(f"last rewards/accuracies {acc} <= 0.9")
PY
[ "$(cat "$WORK/base"/*.safetensors "$WORK/base/config.json" | cksum)" = "$sum_before" ] ||
    fail "the base folder changed"
echo "ok: DPO with LoRA prefers the right answers; the base is untouched"
