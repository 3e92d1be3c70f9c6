#!/bin/bash
# bench_train.sh - trl-hpc against PyTorch eager on the same GPT-2 training
# step, same thread count; prints a table of figures (no pass/fail on time).
#
# Usage: bench/bench_train.sh [-t THREADS] [-r ROUNDS] [CONFIG...]
#   THREADS  threads for both (default 2): OMP_NUM_THREADS for trl-hpc,
#            torch.set_num_threads for PyTorch (with OMP_WAIT_POLICY=PASSIVE)
#   ROUNDS   runs of each implementation per config, alternating (default 1);
#            the table shows the best round of each
#   CONFIG   gpt2-124M and/or tiny (default: tiny gpt2-124M)
# Needs the bench binary: run `make bench/bench_train` in the build directory,
# then run this script from there (or set top_builddir). STEPS and WARMUP in
# the environment override both programs' defaults.
set -u

here=$(cd "$(dirname "$0")" && pwd)
top_builddir=${top_builddir:-.}
bench=$top_builddir/bench/bench_train
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

if [ ! -x "$bench" ]; then
	echo "bench_train.sh: $bench not found; build it with 'make bench/bench_train'" \
		"in the build directory (or set top_builddir)" >&2
	exit 1
fi
have_torch=1
if ! "$python" -c 'import torch' 2>/dev/null; then
	echo "bench_train.sh: $python cannot import torch; showing trl-hpc only" >&2
	have_torch=0
fi

extra=()
[ -n "${STEPS:-}" ] && extra+=(--steps "$STEPS")
[ -n "${WARMUP:-}" ] && extra+=(--warmup "$WARMUP")

# field NAME LINE: the value of NAME=... in a result line.
field() { sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p" <<<"$2"; }
# best OLD NEW: the line with more tokens_per_s.
best() {
	if [ -z "$1" ]; then echo "$2"; return; fi
	awk -v a="$(field tokens_per_s "$1")" -v b="$(field tokens_per_s "$2")" \
		'BEGIN { exit !(b > a) }' && echo "$2" || echo "$1"
}

declare -A result
for cfg in "${configs[@]}"; do
	ours=""
	theirs=""
	for ((r = 1; r <= rounds; r++)); do
		line=$(OMP_NUM_THREADS=$threads "$bench" "$cfg" "${extra[@]}" | grep '^trl-hpc ')
		echo "$line" >&2
		[ -n "$line" ] && ours=$(best "$ours" "$line")
		if [ $have_torch = 1 ]; then
			line=$(OMP_NUM_THREADS=$threads OMP_WAIT_POLICY=PASSIVE "$python" \
				"$here/torch_train.py" "$cfg" --threads "$threads" "${extra[@]}" |
				grep '^pytorch ')
			echo "$line" >&2
			[ -n "$line" ] && theirs=$(best "$theirs" "$line")
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
		ratio=$(awk -v a="$(field tokens_per_s "$ours")" -v b="$(field tokens_per_s "$theirs")" \
			'BEGIN { printf "%.2f", a / b }')
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
