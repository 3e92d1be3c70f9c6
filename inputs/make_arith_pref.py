#!/usr/bin/env python3
"""make_arith_pref.py - writes the preference dataset inputs/arith_pref/{train,test}.jsonl.

Preference rows in TRL's standard format, one per prompt of the quickstart
dataset (inputs/arith, made by make_arith.py, which this script reads):
{"prompt": "17+25=", "chosen": "42", "rejected": "32"}. The chosen
completion is the right answer; the rejected one is a plausible wrong answer,
the kind of mistake a small model trained on inputs/arith makes:

    off_by_one    the result +-1                          42 -> 41, 43
    off_by_ten    the result +-10                         42 -> 32, 52
    carry_slip    a+b with a carry dropped (digit-wise    17+25 -> 32
                  sum) or added where there is none;      94+92 -> 86
                  a-b with the borrow forgotten or the    74-38 -> 46, 44
                  smaller digit taken from the larger
    swapped       the result's digits reversed            36 -> 63
    dropped_digit the result with one digit left out      148 -> 48, 18, 14
    extra_digit   the result with one digit doubled       42 -> 442, 422
    other_op      the other operation's result (a+b ->    17+25 -> 8
                  |a-b|)

For each prompt a kind is drawn uniformly from those that give an answer
different from the right one, non-negative and at most 3 digits (the range of
the task's answers), then one of that kind's answers. Answers are written as
integers without leading zeros, as the quickstart's completions are.

The test split holds every prompt of inputs/arith/test.jsonl in its order, so
exact-match accuracy on it (the reference answer is the chosen completion)
measures the same held-out prompts as the quickstart. The training split is
N_TRAIN prompts drawn from inputs/arith/train.jsonl, one pair each, so a
preference run of a few hundred steps of 32 pairs sees each pair once or
twice. The output depends only on SEED and the input files: rerunning
reproduces the files byte for byte. Standard library only.

Usage: python3 inputs/make_arith_pref.py [arith_dir [output_dir [n_train]]]
(defaults: inputs/arith and inputs/arith_pref next to this script, N_TRAIN
pairs; n_train 14550 gives a pair for every training prompt, as the README's
longer reward-model run uses)
"""
import collections
import json
import os
import random
import re
import sys

from make_arith import write_jsonl  # the quickstart files' exact writer

SEED = 4321
N_TRAIN = 4000
MAX_ANSWER = 999

PROMPT = re.compile(r"^(\d+)([+-])(\d+)=$")


def digit_op(a, b, op):
    """Applies op to each pair of digits of a and b (aligned at the ones),
    without carries or borrows; returns the integer the digits spell."""
    da, db = str(a)[::-1], str(b)[::-1]
    out = []
    for i in range(max(len(da), len(db))):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        out.append(str(op(x, y)))
    return int("".join(reversed(out)))


def carry_slips(a, b, sign):
    """Answers a pupil gets by mishandling the carry (a+b) or borrow (a-b)."""
    if sign == "+":
        no_carry = digit_op(a, b, lambda x, y: (x + y) % 10)
        if a % 10 + b % 10 >= 10:
            return [a + b - 10, no_carry]  # the ones' carry dropped
        return [a + b + 10, no_carry]      # a carry that is not there
    if a % 10 < b % 10:
        return [a - b + 10,                # the tens digit not decremented
                digit_op(a, b, lambda x, y: abs(x - y))]
    return [a - b - 10]                    # a borrow that is not there


def mistakes(a, b, sign):
    """Returns {kind: [wrong answers]} for the prompt a<sign>b=; some answers
    may still be right or out of range, the caller filters them."""
    right = a + b if sign == "+" else a - b
    s = str(right)
    kinds = {
        "off_by_one": [right - 1, right + 1],
        "off_by_ten": [right - 10, right + 10],
        "carry_slip": carry_slips(a, b, sign),
        "swapped": [int(s[::-1])] if len(s) > 1 else [],
        "dropped_digit": [int(s[:i] + s[i + 1:]) for i in range(len(s))] if len(s) > 1 else [],
        "extra_digit": [int(s[:i] + s[i] + s[i:]) for i in range(len(s))],
        "other_op": [abs(a - b) if sign == "+" else a + b],
    }
    return {k: sorted({v for v in vs if v != right and 0 <= v <= MAX_ANSWER})
            for k, vs in kinds.items()}


def make_pair(row, rng, counts):
    m = PROMPT.match(row["prompt"])
    if not m:
        sys.exit(f"make_arith_pref.py: unexpected prompt {row['prompt']!r}")
    a, sign, b = int(m.group(1)), m.group(2), int(m.group(3))
    right = a + b if sign == "+" else a - b
    if str(right) != row["completion"]:
        sys.exit(f"make_arith_pref.py: {row['prompt']} has completion {row['completion']!r}")
    options = {k: vs for k, vs in mistakes(a, b, sign).items() if vs}
    kind = rng.choice(sorted(options))
    counts[kind] += 1
    wrong = rng.choice(options[kind])
    return {"prompt": row["prompt"], "chosen": row["completion"], "rejected": str(wrong)}


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    arith_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "arith")
    out_dir = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "arith_pref")
    train_src = read_jsonl(os.path.join(arith_dir, "train.jsonl"))
    test_src = read_jsonl(os.path.join(arith_dir, "test.jsonl"))
    rng = random.Random(SEED)
    counts = collections.Counter()
    n_train = int(sys.argv[3]) if len(sys.argv) > 3 else N_TRAIN
    train = [make_pair(r, rng, counts) for r in rng.sample(train_src, n_train)]
    test = [make_pair(r, rng, counts) for r in test_src]
    assert not {r["prompt"] for r in test} & {r["prompt"] for r in train}
    assert all(r["chosen"] != r["rejected"] for r in train + test)
    os.makedirs(out_dir, exist_ok=True)
    write_jsonl(os.path.join(out_dir, "train.jsonl"), train)
    write_jsonl(os.path.join(out_dir, "test.jsonl"), test)
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(counts.items()))
    print(f"wrote {len(train)} train and {len(test)} test pairs to {out_dir} ({kinds})")


if __name__ == "__main__":
    main()
