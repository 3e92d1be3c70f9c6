#!/usr/bin/env python3
"""make_arith.py - writes the quickstart dataset inputs/arith/{train,test}.jsonl.

Prompt-completion rows of two-operand arithmetic on integers 0..99:
every addition a+b, and every subtraction a-b with a >= b (so no result is
negative), e.g. {"prompt": "17+25=", "completion": "42"}. That is 15050
distinct prompts; 500 of them, drawn at random, form the test split and the
rest (in random order) the training split, so no test prompt is seen in
training. The output depends only on SEED: rerunning reproduces the files
byte for byte. Standard library only.

Usage: python3 inputs/make_arith.py [output_dir]   (default: inputs/arith next
to this script)
"""
import json
import os
import random
import sys

SEED = 1234
N_TEST = 500
MAX_OPERAND = 99


def all_problems():
    rows = []
    for a in range(MAX_OPERAND + 1):
        for b in range(MAX_OPERAND + 1):
            rows.append({"prompt": f"{a}+{b}=", "completion": str(a + b)})
            if a >= b:
                rows.append({"prompt": f"{a}-{b}=", "completion": str(a - b)})
    return rows


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "arith")
    os.makedirs(out_dir, exist_ok=True)
    rows = all_problems()
    random.Random(SEED).shuffle(rows)
    test, train = rows[:N_TEST], rows[N_TEST:]
    assert not {r["prompt"] for r in test} & {r["prompt"] for r in train}
    write_jsonl(os.path.join(out_dir, "train.jsonl"), train)
    write_jsonl(os.path.join(out_dir, "test.jsonl"), test)
    print(f"wrote {len(train)} train and {len(test)} test rows to {out_dir}")


if __name__ == "__main__":
    main()
