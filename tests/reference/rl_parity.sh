#!/bin/bash
# rl_parity.sh - checks that the committed golden values of the online RL
# losses (tests/data/rl_golden.json, which tests/test_rl_losses checks the C
# code against) are what the PyTorch oracle rl_oracle.py computes today: it
# regenerates them into a temporary file and compares case by case. Run by
# `make check`; exits 77 (skip) without Python torch/numpy.
set -u

. "$(dirname "$0")/oracle_env.sh"
oracle=$top_srcdir/tests/reference/rl_oracle.py
golden=$top_srcdir/tests/data/rl_golden.json
need_torch
if [ ! -r "$golden" ]; then
	echo "FAIL: $golden is missing; write it with '$python $oracle --out $golden'"
	exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/trl-rl.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

"$python" "$oracle" --out "$tmp/rl_golden.json" || exit 1
"$python" "$oracle" --compare "$golden" "$tmp/rl_golden.json"
