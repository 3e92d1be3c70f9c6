#!/bin/bash
# bench_train.sh - trl-hpc against PyTorch eager on the same GPT-2 training
# step, same thread count; prints a table of figures (no pass/fail on time).
#
# Usage: bench/bench_train.sh [-t THREADS] [-r ROUNDS] [CONFIG...]
#   THREADS  threads for both (default 2): OMP_NUM_THREADS for trl-hpc,
#            torch.set_num_threads for PyTorch (with OMP_WAIT_POLICY=PASSIVE)
#   ROUNDS   runs of each implementation per config, alternating (default 1);
#            the table shows the best round of each
#   CONFIG   gpt2-124M, tiny and/or tiny-long (T=2048; default: tiny gpt2-124M)
# Needs the bench binary: run `make bench/bench_train` in the build directory,
# then run this script from there (or set top_builddir). STEPS and WARMUP in
# the environment override both programs' defaults.
set -u

here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
python=${PYTHON3:-/usr/bin/python3}
threads=2
rounds=1
while getopts "t:r:h" opt; do
	case $opt in
	t) threads=$OPTARG ;;
	r) rounds=$OPTARG ;;
	*) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(tiny gpt2-124M)

bench=$(need_bench bench_train) || exit 1
have_torch=$(torch_or_note "$python")

mapfile -t extra < <(step_args)


declare -A result
for cfg in "${configs[@]}"; do
	ours=""
	theirs=""
	for ((r = 1; r <= rounds; r++)); do
		line=$(OMP_NUM_THREADS=$threads "$bench" "$cfg" "${extra[@]}" | grep '^trl-hpc ')
		echo "$line" >&2
		[ -n "$line" ] && ours=$(best tokens_per_s "$ours" "$line")
		if [ $have_torch = 1 ]; then
			line=$(OMP_NUM_THREADS=$threads OMP_WAIT_POLICY=PASSIVE "$python" \
				"$here/torch_train.py" "$cfg" --threads "$threads" "${extra[@]}" |
				grep '^pytorch ')
			echo "$line" >&2
			[ -n "$line" ] && theirs=$(best tokens_per_s "$theirs" "$line")
		fi
	done
	result[$cfg,trl-hpc]=$ours
	result[$cfg,pytorch]=$theirs
done

printf '\n%-10s | %-8s | %9s | %9s | %8s | %s\n' config impl ms/step tokens/s GFLOP/s \
	"ratio trl-hpc/pytorch (tokens/s)"
printf -- '-----------+----------+-----------+-----------+----------+---------------------------------\n'
for cfg in "${configs[@]}"; do
	ours=${result[$cfg,trl-hpc]}
	theirs=${result[$cfg,pytorch]}
	ratio="n/a"
	if [ -n "$ours" ] && [ -n "$theirs" ]; then
		ratio=$(ratio "$(field tokens_per_s "$ours")" "$(field tokens_per_s "$theirs")")
	fi
	for impl in trl-hpc pytorch; do
		line=${result[$cfg,$impl]}
		[ -n "$line" ] || continue
		printf '%-10s | %-8s | %9s | %9s | %8s | %s\n' "$cfg" "$impl" \
			"$(field ms_per_step "$line")" "$(field tokens_per_s "$line")" \
			"$(field gflops "$line")" "$([ $impl = trl-hpc ] && echo "$ratio")"
	done
done
echo "threads=$threads rounds=$rounds (best round shown)"
