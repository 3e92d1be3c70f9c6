#!/bin/bash
# parity.sh - checks trl-hpc's logits, loss and every parameter gradient against
# the PyTorch oracle (torch_model.py), for each architecture: tests/ref_dump
# writes a tiny model, a batch and its results; check_parity.py recomputes them
# in float64. Run by `make check`; exits 77 (skip) without Python torch/numpy.
set -u

here=$(cd "$(dirname "$0")" && pwd)
top_srcdir=${top_srcdir:-$(cd "$here/../.." && pwd)}
top_builddir=${top_builddir:-$top_srcdir}
python=${PYTHON3:-/usr/bin/python3}
ref_dump=$top_builddir/tests/ref_dump
check=$top_srcdir/tests/reference/check_parity.py

if ! "$python" -c 'import torch, numpy' 2>/dev/null; then
	echo "SKIP: $python cannot import torch and numpy (Debian: apt-get install python3-torch python3-numpy)"
	exit 77
fi
if [ ! -x "$ref_dump" ]; then
	echo "FAIL: $ref_dump is missing; build it with 'make tests/ref_dump'"
	exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/trl-parity.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

status=0
for arch in llama llama-gqa-bias llama-bias qwen3 gpt2; do
	echo "== $arch"
	if ! "$ref_dump" "$arch" "$tmp/$arch.safetensors"; then
		echo "FAIL: ref_dump $arch"
		status=1
		continue
	fi
	"$python" "$check" "$tmp/$arch.safetensors" || status=1
done
exit $status
