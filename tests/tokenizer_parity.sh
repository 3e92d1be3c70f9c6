#!/bin/sh
# tokenizer_parity.sh - checks tokenizer_encode against golden ids from the reference
# (tests/make_golden.sh) for each test tokenizer; set TOK_BENCH=MB to print tokens/s.
set -eu
srcdir=${srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
check=${TOK_CHECK:-./tok_check}
data=$srcdir/tests/data
work=$(mktemp -d "${TMPDIR:-/tmp}/tok_parity.XXXXXX")
trap 'rm -rf "$work"' EXIT
status=0
for name in qwen3 llama3 sentencepiece-bpe; do
	mkdir -p "$work/$name"
	xz -dc "$data/tokenizers/$name/tokenizer.json.xz" >"$work/$name/tokenizer.json"
	cp "$data/tokenizers/$name/tokenizer_config.json" "$work/$name/"
	gzip -dc "$data/golden/$name.jsonl.gz" >"$work/$name.jsonl"
	extra=""
	# Byte-level without NFC is lossless: decode(encode(x)) == x.
	[ "$name" = llama3 ] && extra="--roundtrip"
	[ -n "${TOK_BENCH:-}" ] && extra="$extra --bench $TOK_BENCH"
	# shellcheck disable=SC2086
	"$check" "$work/$name" "$work/$name.jsonl" $extra || status=1
done
exit $status
