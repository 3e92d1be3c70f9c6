#!/bin/bash
# parity.sh - checks trl-hpc's logits, loss and every parameter gradient against
# the PyTorch oracle (torch_model.py), for each architecture: tests/ref_dump
# writes a tiny model, a batch and its results; check_parity.py recomputes them
# in float64, then the same with LoRA adapters on a frozen base. Run by
# `make check`; exits 77 (skip) without Python torch/numpy.
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

# LoRA on a frozen base: the adapters (PEFT's names and shapes) are the only
# trained tensors; check_parity.py also checks that the adapted modules are the
# ones PEFT selects for the targets. On LFM2 the seed recipe's o_proj matches
# nothing (its attention output is self_attn.out_proj).
while read -r arch targets; do
	echo "== $arch --lora $targets"
	out=$tmp/$arch-lora-$(echo "$targets" | tr ',' '-').safetensors
	if ! "$ref_dump" "$arch" "$out" --lora "$targets" </dev/null; then
		echo "FAIL: ref_dump $arch --lora $targets"
		status=1
		continue
	fi
	"$python" "$check" "$out" --lora-targets "$targets" </dev/null || status=1
done <<'EOF'
lfm2 all-linear
lfm2-bias q_proj,k_proj,v_proj,o_proj
llama-gqa-bias all-linear
gpt2 all-linear
qwen3 q_proj,v_proj
EOF
# bf16: true (gemm.h): the linear layers' inputs rounded to bf16, fp32 sums;
# check_parity.py rounds the same inputs in its float64 oracle, and compares
# with torch.autocast too. A build without oneDNN skips these (ref_dump 77).
while read -r arch targets; do
	echo "== $arch --bf16 ${targets:+--lora $targets}"
	out=$tmp/$arch-bf16-$targets.safetensors
	"$ref_dump" "$arch" "$out" --bf16 ${targets:+--lora "$targets"} </dev/null
	rc=$?
	if [ $rc -eq 77 ]; then
		echo "SKIP: this build has no oneDNN (bf16)"
		continue
	elif [ $rc -ne 0 ]; then
		echo "FAIL: ref_dump $arch --bf16"
		status=1
		continue
	fi
	"$python" "$check" "$out" ${targets:+--lora-targets "$targets"} </dev/null || status=1
done <<'EOF'
llama-gqa-bias
qwen3
gpt2
lfm2
lfm2 all-linear
EOF
exit $status
