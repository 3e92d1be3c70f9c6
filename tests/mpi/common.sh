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
