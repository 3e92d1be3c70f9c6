#!/usr/bin/env python3
"""reward_example.py - an example reward_command for the arithmetic task.

Use it from a GRPO/RLOO config:
    reward_command: python3 inputs/reward_example.py
    reward_timeout: 30

The protocol. trl-hpc starts the command once (with /bin/sh -c) and keeps it
for the whole run. For every completion it writes one request line to the
program's stdin, a JSON object
    {"prompt": "15-3=", "completion": "12", "completion_ids": [17, 18, 0],
     "index": 0, "batch_size": 8, "solution": "12", ...}
holding the prompt and completion text (valid UTF-8: bytes that are not
become U+FFFD), the completion's token ids, the request's position in the
batch (index, from 0) and the batch's size, and every other column of the
dataset row under its own name. With prompt-completion data (the bundled
inputs/arith) whose rows have no "solution" column, trl-hpc passes the row's
reference completion as "solution". The program answers on stdout, in request
order, either
    {"reward": 1.0}                one line per request, or
    {"rewards": [1.0, 0.0, null]}  one line for the next k pending requests
and may mix the two. null means "does not apply" (TRL's None): that reward
function is left out for that completion. Write null, never NaN:
json.dumps(float("nan")) prints NaN, which is not JSON and is refused. Answers must come within
reward_timeout seconds per batch; a line that is not such an object, more
rewards than requests sent, or an exit is an error that stops training and
names the line. Blank lines are ignored. stderr is passed through, so print
diagnostics there, never on stdout. Flush stdout after every answer. When
training ends stdin is closed: exit then.

This program answers in batch mode - one {"rewards": [...]} line once it has
read batch_size requests - to show that mode; with --per-line it answers each
request as it arrives. The reward is 1.0 when the first number in the
completion equals the solution column, 0.0 when it differs or there is no
number, and null when the row has no solution column. Standard library only.
"""
import json
import re
import sys

NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def as_number(text):
    try:
        return float(str(text).strip().replace(",", ""))
    except ValueError:
        return None


def score(request):
    solution = request.get("solution")
    if solution is None:
        return None
    m = NUMBER.search(request.get("completion", ""))
    if not m:
        return 0.0
    want = as_number(solution)
    if want is None:  # not a number: compare the text
        return 1.0 if m.group(0) == str(solution).strip() else 0.0
    return 1.0 if float(m.group(0)) == want else 0.0


def main():
    per_line = "--per-line" in sys.argv[1:]
    pending = []
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        reward = score(request)
        if per_line:
            print(json.dumps({"reward": reward}), flush=True)
            continue
        pending.append(reward)
        # The batch is complete once its last request has been read.
        if len(pending) >= request["batch_size"] or request["index"] + 1 >= request["batch_size"]:
            print(json.dumps({"rewards": pending}), flush=True)
            pending = []
    if pending:  # stdin closed mid-batch: answer what was read
        print(json.dumps({"rewards": pending}), flush=True)


if __name__ == "__main__":
    main()
