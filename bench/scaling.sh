#!/bin/bash
# scaling.sh - trl-hpc training over ranks x threads layouts and ZeRO stages,
# with the same global batch everywhere; prints a table (no pass/fail).
#
# Usage: bench/scaling.sh [-s STEPS] [-l LAYOUTS] [-z STAGES] [CONFIG...]
#   STEPS    optimizer steps per run (default 30 for tiny, 4 for gpt2-124M;
#            the first is left out of the per-step figures)
#   LAYOUTS  ranks x threads per rank (default "1x2 2x1 4x1"; 4x1 is
#            oversubscribed on a 2-core machine: it shows communication
#            behaviour, not speed)
#   STAGES   ZeRO stages (default "0 1 2 3")
#   CONFIG   gpt2-124M and/or tiny (default: tiny gpt2-124M); the shapes of
#            bench/bench_train.c: gpt2-124M global batch 4 x 256 tokens, tiny
#            8 x 128
# Columns: ms/step (slowest rank), tokens/s, bytes each rank sends per step,
# MPI time (blocked in or testing collectives, slowest rank) as a share of
# the step, model-state bytes (largest rank: shards plus gather/reduce
# buffers), peak RSS (largest rank), and throughput relative to the first
# run of the config (the first layout at the first stage: by default one
# rank, no sharding). PyTorch eager (bench/torch_train.py, one process
# with the first layout's thread count) runs once per config in the same
# session as a reference point. Run from the build directory (or set
# top_builddir); needs mpiexec.
set -u

here=$(cd "$(dirname "$0")" && pwd)
top_builddir=${top_builddir:-.}
trl=$top_builddir/trl-hpc
python=${PYTHON3:-/usr/bin/python3}
mpiexec=${MPIEXEC:-mpiexec}
steps=""
layouts="1x2 2x1 4x1"
stages="0 1 2 3"
while getopts "s:l:z:h" opt; do
	case $opt in
	s) steps=$OPTARG ;;
	l) layouts=$OPTARG ;;
	z) stages=$OPTARG ;;
	*) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(tiny gpt2-124M)
[ -x "$trl" ] || { echo "scaling.sh: $trl not found (run from the build directory)" >&2; exit 1; }

root=()
[ "$(id -u)" -ne 0 ] || root=(--allow-run-as-root)
work=$(mktemp -d "${TMPDIR:-/tmp}/trl-scaling.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Rows of random letters longer than any T here: with the byte tokenizer each
# row is cut to exactly max_length tokens, so every step has the same work.
"$python" - "$work/train.jsonl" <<'PY'
import json, random, sys
random.seed(0)
with open(sys.argv[1], "w") as f:
    for _ in range(256):
        f.write(json.dumps({"text": "".join(random.choice("abcdefghij klmnopqrstuvwxyz")
                                            for _ in range(400))}) + "\n")
PY

shape() { # shape CONFIG: model keys, T and global batch rows
	case $1 in
	gpt2-124M) echo "768 12 12 3072 50257 256 4 4" ;;
	tiny) echo "256 4 4 1024 8192 128 8 30" ;;
	*) echo "scaling.sh: unknown config '$1' (gpt2-124M or tiny)" >&2; exit 2 ;;
	esac
}

printf "%-10s %-6s %-5s %10s %10s %12s %10s %12s %12s %8s\n" config layout stage \
	ms/step tokens/s sent/step "MPI %" "states/rank" "peak RSS" "vs first"
for cfg in "${configs[@]}"; do
	read -r C L H I V T G S <<<"$(shape "$cfg")"
	[ -z "$steps" ] || S=$steps
	cat >"$work/$cfg.yaml" <<YAML
method: sft
dataset_name: $work/train.jsonl
dataset_cache_dir: none
max_length: $T
max_steps: $S
logging_steps: $S
learning_rate: 1.0e-4
disable_tqdm: true
stage3_param_persistence_threshold: 0
model:
  architecture: gpt2
  hidden_size: $C
  num_hidden_layers: $L
  num_attention_heads: $H
  intermediate_size: $I
  vocab_size: $V
YAML
	if "$python" -c 'import torch' 2>/dev/null; then
		t0=${layouts%% *}
		line=$(OMP_WAIT_POLICY=PASSIVE "$python" "$here/torch_train.py" "$cfg" \
			--threads "${t0#*x}" 2>/dev/null | grep '^pytorch')
		ms=$(sed -n 's/.*ms_per_step=\([^ ]*\).*/\1/p' <<<"$line")
		tps=$(sed -n 's/.*tokens_per_s=\([^ ]*\).*/\1/p' <<<"$line")
		printf "%-10s %-6s %-5s %10s %10s\n" "$cfg" "torch" "-" "$ms" "$tps"
	fi
	base=""
	for st in $stages; do
		for lay in $layouts; do
			R=${lay%x*} TH=${lay#*x}
			if [ $((G % R)) -ne 0 ]; then
				echo "scaling.sh: $G rows do not split over $R ranks; skipping $lay" >&2
				continue
			fi
			bind=(--bind-to core)
			[ $((R * TH)) -le "$(nproc)" ] && [ "$TH" -eq 1 ] || bind=(--bind-to none)
			[ $((R * TH)) -le "$(nproc)" ] || bind+=(--oversubscribe)
			out=$work/$cfg-$lay-$st
			if ! "$mpiexec" "${root[@]}" "${bind[@]}" -np "$R" -x OMP_NUM_THREADS="$TH" \
				-x OMP_WAIT_POLICY=PASSIVE "$trl" "$work/$cfg.yaml" --zero_stage "$st" \
				--threads_per_rank "$TH" --per_device_train_batch_size $((G / R)) \
				--output_dir "$out" >"$out.log" 2>&1; then
				echo "scaling.sh: $cfg $lay stage $st failed:" >&2
				tail -5 "$out.log" >&2
				continue
			fi
			row=$("$python" "$here/ranks_summary.py" "$out/ranks.jsonl" "$((G * T))" "$base")
			tps=${row##* }
			[ -n "$base" ] || base=$tps
			printf "%-10s %-6s %-5s %s\n" "$cfg" "$lay" "$st" "${row% *}"
		done
	done
done
