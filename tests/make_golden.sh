#!/bin/sh
# make_golden.sh - regenerates tests/data/tokenizer_corpus.jsonl and the golden ids in
# tests/data/golden/ with the Hugging Face tokenizers JS port (add_special_tokens false).
# usage: tests/make_golden.sh [GOLDEN_TOOL_DIR] [TOKENIZERS_DIR]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tool=${1:-/work/shared/tools/golden-tokens}
toks=${2:-/work/shared/data/tokenizers}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$tool"/golden-tokens.mjs "$tool"/package.json "$work"/
(cd "$work" && npm install --silent >/dev/null)
python3 "$here/make_tokenizer_corpus.py" 1200 >"$here/data/tokenizer_corpus.jsonl"
for name in qwen3 llama3 sentencepiece-bpe; do
	node "$work/golden-tokens.mjs" "$toks/$name" "$here/data/tokenizer_corpus.jsonl" |
		gzip -9n >"$here/data/golden/$name.jsonl.gz"
	mkdir -p "$here/data/tokenizers/$name"
	xz -9c "$toks/$name/tokenizer.json" >"$here/data/tokenizers/$name/tokenizer.json.xz"
	cp "$toks/$name/tokenizer_config.json" "$here/data/tokenizers/$name/"
done
