#!/bin/bash
# parity.sh - checks trl-hpc's logits, loss and every parameter gradient against
# the PyTorch oracle (torch_model.py), for each architecture: tests/ref_dump
# writes a tiny model, a batch and its results; check_parity.py recomputes them
# in float64. Run by `make check`; exits 77 (skip) without Python torch/numpy.
set -u

. "$(dirname "$0")/oracle_env.sh"
ref_dump=$top_builddir/tests/ref_dump
check=$top_srcdir/tests/reference/check_parity.py
need_torch
need_program "$ref_dump"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/trl-parity.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

status=0
for arch in llama llama-gqa-bias llama-bias qwen3 gpt2 lfm2 lfm2-bias; do
	echo "== $arch"
	if ! "$ref_dump" "$arch" "$tmp/$arch.safetensors"; then
		echo "FAIL: ref_dump $arch"
		status=1
		continue
	fi
	"$python" "$check" "$tmp/$arch.safetensors" || status=1
done
exit $status
