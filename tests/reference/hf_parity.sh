#!/bin/bash
# hf_parity.sh - loads tiny Hugging Face model folders (llama, qwen2, qwen3,
# mistral, gpt2; fp32, bf16 and sharded) written by hf_oracle.py, checks
# trl-hpc's logits against the PyTorch forward to 1e-4, and re-exports some in
# bf16 and fp32 to check names, shapes, dtype and values. Run by `make check`;
# exits 77 (skip) without Python torch/numpy.
set -u

. "$(dirname "$0")/oracle_env.sh"
hf_logits=$top_builddir/tests/hf_logits
oracle=$top_srcdir/tests/reference/hf_oracle.py
need_torch
need_program "$hf_logits"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/trl-hf.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

"$python" "$oracle" build "$tmp/cases" >/dev/null || exit 1
status=0
for case in "$tmp"/cases/*/; do
	name=$(basename "$case")
	if ! "$hf_logits" logits "$case" "$case/batch.safetensors" "$tmp/$name.logits"; then
		echo "FAIL: hf_logits on $name"
		status=1
		continue
	fi
	"$python" "$oracle" compare "$case" "$tmp/$name.logits" || status=1
done

# Export: bf16 with generation ids, fp32 without (the source's
# generation_config.json is copied), and the exported folder loads again.
for name in llama qwen2 qwen3 mistral gpt2-hub; do
	src=$tmp/cases/$name
	if ! "$hf_logits" export "$src" "$tmp/out-$name-bf16" bf16 7 8; then
		echo "FAIL: export $name bf16"
		status=1
		continue
	fi
	"$python" "$oracle" check-export "$tmp/out-$name-bf16" "$src" --dtype BF16 \
		--bos 7 --eos 8 || status=1
	if ! "$hf_logits" export "$src" "$tmp/out-$name-f32" f32 ||
		! "$hf_logits" logits "$tmp/out-$name-f32" "$src/batch.safetensors" \
			"$tmp/$name.f32.logits"; then
		echo "FAIL: export $name f32 and reload"
		status=1
		continue
	fi
	"$python" "$oracle" check-export "$tmp/out-$name-f32" "$src" --dtype F32 || status=1
	"$python" "$oracle" compare "$src" "$tmp/$name.f32.logits" || status=1
done
[ $status = 0 ] && echo PASS
exit $status
