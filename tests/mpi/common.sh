# common.sh - shared set-up for the script tests run by make check.
# Provides: $TRL (the binary), $MPIRUN (launcher with root/oversubscribe flags),
# $WORK (a fresh temporary directory removed at exit), fail(), and py().
set -u
top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
top_builddir=${top_builddir:-$top_srcdir}
TRL="$top_builddir/trl-hpc"
MPIEXEC=${MPIEXEC:-mpiexec}
PYTHON3=${PYTHON3:-/usr/bin/python3}
# Ranks here are oversubscribed on a small machine: one OpenMP thread each
# unless a test sets THREADS. --bind-to none: Open MPI would otherwise pin
# several ranks to the same core.
MPIRUN="$MPIEXEC --allow-run-as-root --oversubscribe --bind-to none -x OMP_NUM_THREADS=1"
mpirun_threads() { # mpirun_threads N: the launcher with N threads per rank
    echo "$MPIEXEC --allow-run-as-root --oversubscribe --bind-to none -x OMP_NUM_THREADS=$1"
}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/trl-test.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# Tokenized-dataset caches go inside the test's own folder.
export XDG_CACHE_HOME="$WORK/cache"

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# need_procps: the tests that signal or kill single ranks find them with pgrep
# and pkill; without them they would wait on runs they cannot stop.
need_procps() {
    command -v pgrep >/dev/null && command -v pkill >/dev/null ||
        fail "pgrep and pkill are missing: apt-get install procps"
}

# Runs a command with a time limit so a hang fails the test instead of
# stalling make check.
run_limited() {
    timeout -k 5 "$@"
}

# run_method NAME NP METHOD [--key value ...]: writes the test's
# `base_yaml METHOD OUT` to $WORK/NAME.yaml and trains it on NP ranks into
# $WORK/NAME (log $WORK/NAME.log) within 300 s; an error fails the test.
run_method() {
    local name=$1 np=$2 method=$3
    shift 3
    base_yaml "$method" "$WORK/$name" >"$WORK/$name.yaml"
    run_limited 300 $MPIRUN -n "$np" "$TRL" "$WORK/$name.yaml" "$@" \
        >"$WORK/$name.log" 2>&1 || {
        tail -20 "$WORK/$name.log"
        fail "$name: trl-hpc exited with an error"
    }
}

py() {
    "$PYTHON3" - "$@"
}

# sums_data DIR SEED NTEST: prompt-completion rows "a+b=" -> the sum written 1-3
# times, 240 for training and NTEST for testing (DIR/train.jsonl, test.jsonl).
# The answers differ in length, so micro-batches hold different numbers of
# target tokens and a per-micro-batch mean would differ from the global one.
sums_data() {
    mkdir -p "$1"
    py "$@" <<'PY'
import json, random, sys
d, seed, ntest = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
random.seed(seed)
def row():
    a, b = random.randint(0, 99), random.randint(0, 99)
    return {"prompt": f"{a}+{b}=", "completion": str(a + b) * random.randint(1, 3)}
with open(f"{d}/train.jsonl", "w") as f:
    for _ in range(240):
        f.write(json.dumps(row()) + "\n")
with open(f"{d}/test.jsonl", "w") as f:
    for _ in range(ntest):
        f.write(json.dumps(row()) + "\n")
PY
}

# llama_model LAYERS TIED: the model: block of the small llama the tests
# train (C=32, H=4, KV=2, I=64, V=258), with LAYERS layers; TIED true/false.
llama_model() {
    cat <<YAML
model:
  architecture: llama
  hidden_size: 32
  num_hidden_layers: $1
  num_attention_heads: 4
  num_key_value_heads: 2
  intermediate_size: 64
  tie_word_embeddings: $2
YAML
}

# ckpt_yaml FILE LAYERS [LINE ...]: the config of the checkpoint tests: SFT
# on $WORK/pc (sums_data) for 12 steps with a checkpoint every 6, the small
# llama with LAYERS layers, and any further YAML lines.
ckpt_yaml() {
    local file=$1 layers=$2
    shift 2
    {
        printf '%s\n' "method: sft" "dataset_name: $WORK/pc" "max_length: 24" \
            "learning_rate: 3.0e-3" "max_steps: 12" "save_steps: 6" "logging_steps: 1" \
            "seed: 5" "disable_tqdm: true" "$@"
        llama_model "$layers" false
    } >"$file"
}

# train NAME NP YAML [--key value ...]: trains on NP ranks into $WORK/NAME,
# appending the output to $WORK/NAME.out; a failure fails the test.
train() {
    local name=$1 np=$2 yaml=$3
    shift 3
    run_limited 120 $MPIRUN -np "$np" "$TRL" "$yaml" --output_dir "$WORK/$name" "$@" \
        >>"$WORK/$name.out" 2>&1 || { cat "$WORK/$name.out"; fail "run $name failed"; }
}

# same REF RUN LOSS_TOL PARAM_TOL SCALE: the training losses and grad norms
# of two runs ($WORK/REF and $WORK/RUN, which logged the same steps) agree
# within LOSS_TOL (relative), and every weight (the adapters' of LoRA runs)
# within PARAM_TOL relative to the largest magnitude of its tensor
# (SCALE=tensor) or of the whole model (SCALE=model).
same() {
    py "$WORK/$1" "$WORK/$2" "$3" "$4" "$5" <<'PY'
import json, struct, sys
from array import array
a, b, ltol, ptol, scale = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
def curve(p):
    return [json.loads(l) for l in open(p + "/metrics.jsonl") if '"loss"' in l]
ca, cb = curve(a), curve(b)
assert len(ca) == len(cb) > 0, (len(ca), len(cb))
assert [x["step"] for x in ca] == [y["step"] for y in cb], "different steps logged"
lw = 0.0
for x, y in zip(ca, cb):
    for k in ("loss", "grad_norm"):
        # losses near 0 (grpo: ratio 1 by design) compare absolutely
        d = abs(x[k] - y[k]) / max(abs(x[k]), 1e-4)
        lw = max(lw, d)
        if d > ltol:
            sys.exit(f"{b}: step {x['step']} {k} {y[k]!r}, one rank {x[k]!r} (rel {d:.2e} > {ltol})")
def weights(p):
    import os
    f = "/adapter_model.safetensors" if os.path.exists(p + "/adapter_model.safetensors") else "/model.safetensors"
    raw = open(p + f, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n])
    out = {}
    for k, v in head.items():
        if k != "__metadata__":
            s, e = v["data_offsets"]
            out[k] = array("f", raw[8 + n + s:8 + n + e])
    return out
wa, wb = weights(a), weights(b)
assert wa.keys() == wb.keys()
big = max(max(abs(x) for x in t) for t in wa.values())
pw = 0.0
for k in wa:
    ref = big if scale == "model" else max(abs(x) for x in wa[k]) or 1.0
    d = max(abs(x - y) for x, y in zip(wa[k], wb[k])) / ref
    pw = max(pw, d)
    if d > ptol:
        sys.exit(f"{b}: {k} differs from one rank by {d:.2e} (> {ptol})")
print(f"  {b.split('/')[-1]}: losses {lw:.1e}, weights {pw:.1e}")
PY
}
