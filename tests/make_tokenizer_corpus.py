#!/usr/bin/env python3
"""make_tokenizer_corpus.py - writes the deterministic tokenizer parity corpus (JSON lines {"text": ...})."""
import json
import random
import sys

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "Hello", "world",
         "tokenizer", "training", "gradient", "HPC", "MPI", "OpenMP", "LLM", "RLHF", "DPO",
         "internationalization", "antidisestablishmentarianism", "I", "a", "an", "USA",
         "don't", "it's", "WE'LL", "You'RE", "they've", "I'm", "she'd", "O'Neil", "rock'n'roll"]
ACCENTS = ["café", "naïve", "résumé", "Ünïcödé", "façade", "Ærøskøbing", "Łódź", "São Paulo",
           "e\u0301", "cafe\u0301", "A\u030a", "n\u0303", "Straße", "İstanbul", "ſ", "'ſ", "ﬁ"]
SCRIPTS = ["中文分词测试", "日本語のテキスト", "한국어 문장", "Привет, мир!", "Γειά σου κόσμε",
           "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "สวัสดีชาวโลก", "ქართული", "Tiếng Việt",
           "漢字かなカナ", "你好，世界。", "ｆｕｌｌｗｉｄｔｈ", "①②③", "½ ¾ ²³"]
EMOJI = ["😀", "👍🏽", "👨\u200d👩\u200d👧", "🇫🇷", "🎉🎉🎉", "❤️", "🤖", "✨", "🚀 launch", "☃", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢"]
CODE = ["def f(x):\n    return x * 2\n", "for (int i = 0; i < n; i++) {\n\tsum += a[i];\n}",
        "#include <stdio.h>", "if x == 1 and y != 2:", "SELECT * FROM t WHERE id=42;",
        "const re = /\\s+(?!\\S)/gu;", "{\"key\": [1, 2, 3]}", "<div class=\"a\">hi</div>",
        "x <<= 3; y >>= 1; z ||= w;", "$ ./configure --prefix=/usr && make -j8",
        "fn main() { println!(\"{}\", 1); }", "a_b_c = foo.bar(baz)[0]", "// comment\n/* block */"]
NUMBERS = ["0", "7", "42", "123", "1234", "12345", "1234567890", "3.14159", "1,000,000", "-17",
           "1e-9", "0x1F", "2024-01-15", "12:34:56", "99.9%", "$5.00", "١٢٣", "٣.١٤", "Ⅻ"]
WS = [" ", "  ", "   ", "    ", "\t", "\t\t", "\n", "\n\n", "\r\n", " \n", "\n ", " \t ",
      "\u00a0", "\u3000", "\u2003", "\u200b", "\u2028", "\u0085", "\f", "\v", "        "]
SPECIAL = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<s>", "</s>", "[INST]", "[/INST]",
           "<unk>", "<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>",
           "<think>", "</think>", "<tool_call>", "<|fim_prefix|>", "<|im_start", "<|", "|>",
           "<<SYS>>", "<|reserved_special_token_5|>", "<0x41>", "▁", "Ġ"]
PUNCT = [".", ",", "!", "?", "...", "—", "–", "«", "»", "“", "”", "'", "\"", "(", ")", ":", ";",
         "!!", "?!", "-", "_", "/", "\\", "@", "#", "&", "*", "~", "`", "^", "|"]

POOLS = [WORDS] * 6 + [ACCENTS, SCRIPTS, EMOJI, CODE, NUMBERS, WS, WS, SPECIAL, PUNCT, PUNCT]


def text(rng):
    n = rng.choice([1, 1, 2, 3, 5, 8, 13, 21, 40])
    out = []
    for _ in range(n):
        pool = rng.choice(POOLS)
        out.append(rng.choice(pool))
        r = rng.random()
        if r < 0.55:
            out.append(" ")
        elif r < 0.6:
            out.append(rng.choice(WS))
    s = "".join(out)
    r = rng.random()
    if r < 0.1:
        s = s.strip()
    elif r < 0.15:
        s = " " + s
    return s


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1200
    rng = random.Random(20240615)
    fixed = ["", " ", "  ", "\n", "a", "Hello world", " Hello world", "Hello  world",
             "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
             "<s>[INST] What is 2+2? [/INST] 4</s>", "<|endoftext|><|endoftext|>",
             "trailing spaces   ", "tabs\tand\nnewlines\r\n", "x" * 300, "ab" * 200,
             " " * 50 + "end", "word " * 100, "🤖" * 20, "中" * 64, "1234567890" * 10]
    texts = fixed + [text(rng) for _ in range(count - len(fixed))]
    for t in texts:
        sys.stdout.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")


main()
