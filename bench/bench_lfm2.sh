#!/bin/bash
# bench_lfm2.sh - trl-hpc against PyTorch eager on the same LFM2 training
# step (full fine-tuning and LoRA), same thread count; prints a table of
# figures (no pass/fail on time).
#
# Usage: bench/bench_lfm2.sh [-t THREADS] [-r ROUNDS] [-m MODES] [CONFIG...]
#   THREADS  threads for both (default 2): OMP_NUM_THREADS for trl-hpc,
#            torch.set_num_threads for PyTorch (with OMP_WAIT_POLICY=PASSIVE)
#   ROUNDS   runs of each implementation per config and mode, alternating
#            (default 1); the table shows the best round of each
#   MODES    comma-separated, of full, lora, lora-all (default all three)
#   CONFIG   lfm2-tiny and/or lfm2-small (default: lfm2-tiny lfm2-small)
# Needs the bench binary: run `make bench/bench_lfm2` in the build directory,
# then run this script from there (or set top_builddir). STEPS and WARMUP in
# the environment override both programs' defaults.
set -u

here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
python=${PYTHON3:-/usr/bin/python3}
threads=2
rounds=1
modes=full,lora,lora-all
while getopts "t:r:m:h" opt; do
	case $opt in
	t) threads=$OPTARG ;;
	r) rounds=$OPTARG ;;
	m) modes=$OPTARG ;;
	*) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(lfm2-tiny lfm2-small)
IFS=, read -r -a modes <<<"$modes"

bench=$(need_bench bench_lfm2) || exit 1
have_torch=$(torch_or_note "$python")

mapfile -t extra < <(step_args)

declare -A result
for cfg in "${configs[@]}"; do
	for mode in "${modes[@]}"; do
		ours=""
		theirs=""
		for ((r = 1; r <= rounds; r++)); do
			line=$(OMP_NUM_THREADS=$threads "$bench" "$cfg" "$mode" "${extra[@]}" |
				grep '^trl-hpc ')
			echo "$line" >&2
			[ -n "$line" ] && ours=$(best tokens_per_s "$ours" "$line")
			if [ $have_torch = 1 ]; then
				line=$(OMP_NUM_THREADS=$threads OMP_WAIT_POLICY=PASSIVE "$python" \
					"$here/torch_lfm2.py" "$cfg" "$mode" --threads "$threads" \
					"${extra[@]}" | grep '^pytorch ')
				echo "$line" >&2
				[ -n "$line" ] && theirs=$(best tokens_per_s "$theirs" "$line")
			fi
		done
		result[$cfg,$mode,trl-hpc]=$ours
		result[$cfg,$mode,pytorch]=$theirs
	done
done

printf '\n%-10s | %-8s | %-8s | %9s | %9s | %8s | %s\n' config mode impl ms/step tokens/s \
	loss0 "ratio trl-hpc/pytorch (tokens/s)"
printf -- '-----------+----------+----------+-----------+-----------+----------+----------------------------------\n'
for cfg in "${configs[@]}"; do
	for mode in "${modes[@]}"; do
		ours=${result[$cfg,$mode,trl-hpc]}
		theirs=${result[$cfg,$mode,pytorch]}
		ratio="n/a"
		if [ -n "$ours" ] && [ -n "$theirs" ]; then
			ratio=$(ratio "$(field tokens_per_s "$ours")" \
				"$(field tokens_per_s "$theirs")")
		fi
		for impl in trl-hpc pytorch; do
			line=${result[$cfg,$mode,$impl]}
			[ -n "$line" ] || continue
			printf '%-10s | %-8s | %-8s | %9s | %9s | %8s | %s\n' "$cfg" "$mode" \
				"$impl" "$(field ms_per_step "$line")" \
				"$(field tokens_per_s "$line")" "$(field loss0 "$line")" \
				"$([ $impl = trl-hpc ] && echo "$ratio")"
		done
	done
done

# LoRA step time over the full step, per implementation: how much of the
# full step's cost a LoRA step saves.
echo
for cfg in "${configs[@]}"; do
	for impl in trl-hpc pytorch; do
		full=${result[$cfg,full,$impl]:-}
		[ -n "$full" ] || continue
		out=""
		for mode in "${modes[@]}"; do
			[ "$mode" = full ] && continue
			line=${result[$cfg,$mode,$impl]:-}
			[ -n "$line" ] || continue
			out+=" $mode/full=$(ratio "$(field ms_per_step "$line")" \
				"$(field ms_per_step "$full")")"
		done
		[ -n "$out" ] && echo "$cfg $impl step time ratio:$out"
	done
done
echo "threads=$threads rounds=$rounds (best round shown)"
