#!/bin/bash
# pref_parity.sh - one real training step of each preference and reward method
# (dpo and its loss variants, kto, orpo, cpo, simpo, reward; one rank, two
# ranks, ZeRO-3) on tiny random Hugging Face model folders written by
# pref_oracle.py: the step's loss, its logged metrics and the gradient of
# every parameter (read back from one AdamW step at lr 1, eps 1) must equal
# TRL's formulas evaluated in float64 PyTorch to 1e-4. Run by `make check`;
# exits 77 (skip) without Python torch/numpy.
set -u

. "$(dirname "$0")/oracle_env.sh"
trl=$top_builddir/trl-hpc
oracle=$top_srcdir/tests/reference/pref_oracle.py
need_torch
if [ ! -x "$trl" ]; then
	echo "FAIL: $trl is missing; build it with 'make trl-hpc'"
	exit 1
fi
MPIEXEC=${MPIEXEC:-mpiexec}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/trl-pref.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

"$python" "$oracle" build "$tmp" >"$tmp/cases" || exit 1
status=0
dirs=()
while read -r name ranks; do
	# One rank runs 2 OpenMP threads, so the threaded kernels are checked too.
	if [ "$ranks" = 1 ]; then
		run=(env OMP_NUM_THREADS=2 "$trl")
	else
		run=("$MPIEXEC" --allow-run-as-root --oversubscribe --bind-to none
			-x OMP_NUM_THREADS=1 -n "$ranks" "$trl")
	fi
	# mpiexec would read the rest of the case list from stdin.
	if ! timeout -k 5 60 "${run[@]}" "$tmp/$name/run.yaml" </dev/null >"$tmp/$name/log" 2>&1; then
		echo "FAIL: trl-hpc on $name ($ranks rank(s)):"
		sed 's/^/    /' "$tmp/$name/log"
		status=1
		continue
	fi
	dirs+=("$tmp/$name")
done <"$tmp/cases"
echo "loss, TRL's logged metrics and every gradient of one step against the float64 oracle:"
if [ ${#dirs[@]} -gt 0 ]; then
	"$python" "$oracle" check "${dirs[@]}" || status=1
fi
[ $status = 0 ] && echo PASS
exit $status
