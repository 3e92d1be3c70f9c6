# common.sh - helpers the bench/ scripts share. Source it; it reads
# top_builddir (default: the current folder).
top_builddir=${top_builddir:-.}

# need_bench NAME: prints the path of the benchmark program NAME, or says how
# to build it and exits.
need_bench() {
	local prog=$top_builddir/bench/$1
	if [ ! -x "$prog" ]; then
		echo "$(basename "$0"): $prog not found; build it with 'make bench/$1'" \
			"in the build directory (or set top_builddir)" >&2
		exit 1
	fi
	echo "$prog"
}

# torch_or_note PYTHON: 1 when PYTHON imports torch, else 0 with a note that
# only trl-hpc is shown.
torch_or_note() {
	if "$1" -c 'import torch' 2>/dev/null; then
		echo 1
	else
		echo "$(basename "$0"): $1 cannot import torch; showing trl-hpc only" >&2
		echo 0
	fi
}

# step_args: --steps / --warmup from STEPS and WARMUP in the environment, for
# both programs of a benchmark, one word per line (read with mapfile).
step_args() {
	[ -n "${STEPS:-}" ] && printf '%s\n' --steps "$STEPS"
	[ -n "${WARMUP:-}" ] && printf '%s\n' --warmup "$WARMUP"
	return 0
}

# field NAME LINE: the value of NAME=... in a result line.
field() { sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p" <<<"$2"; }

# best KEY OLD NEW: of two result lines, the one with the larger KEY (OLD may
# be empty).
best() {
	if [ -z "$2" ]; then echo "$3"; return; fi
	awk -v a="$(field "$1" "$2")" -v b="$(field "$1" "$3")" \
		'BEGIN { exit !(b > a) }' && echo "$3" || echo "$2"
}

# ratio A B: A / B with two decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
