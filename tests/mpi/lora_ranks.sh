#!/bin/bash
# lora_ranks.sh - LoRA on 1-4 ranks: adapters trained at ZeRO stages 0-3 match
# one rank (the frozen base sharded too under stage 3); a run resumes from its
# adapters-only checkpoint on another rank count and stage as if never
# stopped; and the measured peak memory of a LoRA run is below a full run's
# by at least the base's gradient and AdamW bytes.
. "$(dirname "$0")/common.sh"

sums_data "$WORK/pc" 11 21

# The base: a small LFM2 (conv and attention layers) after a few full steps.
cat >"$WORK/base.yaml" <<YAML
method: sft
dataset_name: $WORK/pc
max_length: 24
learning_rate: 3.0e-3
max_steps: 10
per_device_train_batch_size: 12
save_strategy: "no"
eval_max_new_tokens: 4
seed: 5
disable_tqdm: true
model:
  architecture: lfm2
  hidden_size: 32
  num_hidden_layers: 4
  layer_types: [conv, full_attention, conv, full_attention]
  num_attention_heads: 4
  num_key_value_heads: 2
  intermediate_size: 64
YAML
train base 1 "$WORK/base.yaml"

# LoRA SFT from it: all-linear adapters, no dropout (its masks follow each
# rank's rows), persistence 0 so every unit is sharded under stage 3. The
# adapters start at B = 0, so reduction-order noise is compared at 1e-4 of
# each tensor (AdamW turns it into steps of up to lr on tiny entries).
cat >"$WORK/lora.yaml" <<YAML
method: sft
model_name_or_path: $WORK/base
dataset_name: $WORK/pc
max_length: 24
learning_rate: 1.0e-2
lr_scheduler_type: linear
max_steps: 12
save_steps: 6
logging_steps: 1
eval_max_new_tokens: 4
per_device_eval_batch_size: 4
seed: 5
disable_tqdm: true
stage3_param_persistence_threshold: 0
use_peft: true
lora_r: 4
lora_alpha: 8
lora_dropout: 0
lora_target_modules: all-linear
YAML

run() { # run NAME NP [--key value ...]
    local name=$1 np=$2
    shift 2
    run_limited 120 $MPIRUN -np "$np" "$TRL" "$WORK/lora.yaml" --output_dir "$WORK/$name" "$@" \
        >"$WORK/$name.out" 2>&1 || { cat "$WORK/$name.out"; fail "run $name failed"; }
}

run ref 1 --per_device_train_batch_size 12
for np_st in 1:3 2:0 2:1 3:2 4:3 2:3; do
    np=${np_st%:*} st=${np_st#*:} name=r${np}s$st
    run "$name" "$np" --zero_stage "$st" --per_device_train_batch_size $((12 / np))
    same ref "$name" 1e-5 1e-4 tensor || fail "LoRA at stage $st on $np ranks is not one rank's run"
done
echo "ok: LoRA at stages 0-3 on 1-4 ranks matches one rank"

# Resume: stopped at step 6 (2 ranks, stage 2), continued on 3 ranks at
# stage 3 from the adapters-only checkpoint.
cp -r "$WORK/r2s1" "$WORK/cut"
rm -f "$WORK/cut/checkpoint-12.h5" "$WORK/cut/adapter_model.safetensors"
sed -i '/"step": \(7\|8\|9\|10\|11\|12\)[,}]/d' "$WORK/cut/metrics.jsonl"
echo "checkpoint-6.h5" >"$WORK/cut/latest"
run cut 3 --zero_stage 3 --per_device_train_batch_size 4 --resume_from_checkpoint latest
grep -q "resumed from .*checkpoint-6.h5: step 6" "$WORK/cut.out" || fail "the run did not resume"
same ref cut 1e-5 1e-4 tensor || fail "the resumed LoRA run differs from the uninterrupted one"
run_limited 60 $MPIRUN -np 1 "$TRL" "$WORK/lora.yaml" --output_dir "$WORK/cut" --lora_r 8 \
    --resume_from_checkpoint latest >"$WORK/bad.out" 2>&1 && fail "resumed with another lora_r"
grep -q "lora_r\|LoRA adapters" "$WORK/bad.out" || { cat "$WORK/bad.out"; fail "no clear message"; }
echo "ok: an adapters-only checkpoint resumes on 3 ranks at stage 3; other adapters are refused"

# The online methods with LoRA: the generators (and colocated trainers)
# sample with the adapters merged into the base, the reference is the base.
# Without dropout the sampling log-probs equal the trainer's to rounding.
# (The reward, a digit in the completion, varies on this barely trained base.)
for gr in 1 0; do
    run_limited 120 $MPIRUN -np 2 "$TRL" "$WORK/lora.yaml" --output_dir "$WORK/grpo$gr" \
        --method grpo --generation_ranks $gr --max_staleness 0 --reward_funcs '[format]' \
        --format_pattern '.*[0-9]' \
        --num_generations 4 --per_device_train_batch_size 16 --max_completion_length 4 \
        --max_steps 4 --beta 0.04 --learning_rate 1e-2 --disable_dropout true --save_strategy no \
        >"$WORK/grpo$gr.out" 2>&1 || { cat "$WORK/grpo$gr.out"; fail "grpo with LoRA (generation_ranks $gr) failed"; }
    [ -f "$WORK/grpo$gr/adapter_model.safetensors" ] || fail "grpo with LoRA wrote no adapters"
    py "$WORK/grpo$gr/metrics.jsonl" <<'PY' || fail "grpo with LoRA (generation_ranks $gr)"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"kl"' in l]
assert len(rows) == 4, len(rows)
if rows[0]["kl"] != 0:
    sys.exit(f"step 1 kl {rows[0]['kl']}: the reference must be the policy at the start")
if not rows[-1]["kl"] > 0:
    sys.exit("the adapters never moved the policy from the base")
d = max(r["sampling/sampling_logp_difference/max"] for r in rows)
if d > 1e-4:
    sys.exit(f"sampling log-probs differ from the trainer's by {d}")
print(f"  generation_ranks {sys.argv[1].split('grpo')[-1][0]}: kl {rows[-1]['kl']:.2e} at step 4, "
      f"sampling log-prob difference <= {d:.1e}")
PY
done
echo "ok: grpo with LoRA, on a generation rank and colocated, samples the merged adapters"

# Memory: a wider base (13M parameters) trained one step in full and with
# adapters; the LoRA run's peak RSS is lower by the 12 bytes per base
# parameter of the full run's gradient and AdamW moments, less the adapters'
# own 16 bytes per trainable parameter and 4 MiB for their activations.
sed -e 's/hidden_size: 32/hidden_size: 512/' -e 's/intermediate_size: 64/intermediate_size: 1536/' \
    -e 's/max_steps: 10/max_steps: 1/' "$WORK/base.yaml" >"$WORK/wide.yaml"
train wide 1 "$WORK/wide.yaml"
train widefull 1 "$WORK/wide.yaml" --model_name_or_path "$WORK/wide" --per_device_train_batch_size 4
run widelora 1 --model_name_or_path "$WORK/wide" --max_steps 1 --per_device_train_batch_size 4
py "$WORK/wide/config.json" "$WORK/widefull/ranks.jsonl" "$WORK/widelora/ranks.jsonl" <<'PY' ||
import json, sys
full = json.loads(open(sys.argv[2]).readline())
lora = json.loads(open(sys.argv[3]).readline())
n = full["num_params"]
assert lora["trainable_params"] < n / 10 and lora["frozen_param_bytes"] == 4 * n, lora
saved = full["peak_rss_bytes"] - lora["peak_rss_bytes"]
print(f"  peak RSS: full {full['peak_rss_bytes'] / 2**20:.1f} MiB, LoRA "
      f"{lora['peak_rss_bytes'] / 2**20:.1f} MiB; base gradient + AdamW {12 * n / 2**20:.1f} MiB")
want = 12 * n - 16 * lora["trainable_params"] - 4 * 2**20
if saved < want:
    sys.exit(f"LoRA saves {saved / 2**20:.1f} MiB, less than {want / 2**20:.1f} MiB")
PY
    fail "a LoRA run does not save the base's gradient and optimizer memory"
echo "ok: a LoRA run's peak memory is below a full run's by the base's training state"
