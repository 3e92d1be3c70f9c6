#!/bin/sh
# bench_tokenizer.sh - tokens/s of trl-hpc's tokenizer vs the JS reference on the same text.
# usage: bench/bench_tokenizer.sh TOK_CHECK GOLDEN_TOOL_DIR_WITH_node_modules TOKENIZER_DIR [MB]
#   e.g. bench/bench_tokenizer.sh ./tok_check /tmp/gt /work/shared/data/tokenizers/qwen3 5
set -eu
check=$1 tool=$2 dir=$3 mb=${4:-5}
here=$(cd "$(dirname "$0")/.." && pwd)
corpus=$here/tests/data/tokenizer_corpus.jsonl
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
node "$tool/golden-tokens.mjs" "$dir" "$corpus" >"$work/golden.jsonl"
"$check" "$dir" "$work/golden.jsonl" --bench "$mb"
cat >"$tool/bench-js.mjs" <<'JS'
import { Tokenizer } from "@huggingface/tokenizers";
import fs from "fs";
const [dir, corpus, mb] = process.argv.slice(2);
const tok = new Tokenizer(JSON.parse(fs.readFileSync(`${dir}/tokenizer.json`, "utf8")),
  JSON.parse(fs.readFileSync(`${dir}/tokenizer_config.json`, "utf8")));
const base = fs.readFileSync(corpus, "utf8").split("\n").filter((l) => l.trim())
  .map((l) => JSON.parse(l).text + "\n").join("");
let text = base;
while (Buffer.byteLength(text) < mb * 1e6) text += base;
const t0 = performance.now();
const n = tok.encode(text, { add_special_tokens: false }).ids.length;
const dt = (performance.now() - t0) / 1e3;
console.log(`js reference: ${n} tokens in ${dt.toFixed(3)} s: ${(n / dt / 1e6).toFixed(2)} M tokens/s`);
JS
node "$tool/bench-js.mjs" "$dir" "$corpus" "$mb"
