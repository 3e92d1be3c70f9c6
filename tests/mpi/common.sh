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

# Runs a command with a time limit so a hang fails the test instead of
# stalling make check.
run_limited() {
    timeout -k 5 "$@"
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
