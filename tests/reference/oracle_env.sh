# oracle_env.sh - set-up shared by the PyTorch oracle tests: paths, the Python
# that has torch, and the checks that skip (exit 77) without torch or fail
# when the C program under test was not built. Source it, then call
# need_torch and need_program PATH.
here=$(cd "$(dirname "$0")" && pwd)
top_srcdir=${top_srcdir:-$(cd "$here/../.." && pwd)}
top_builddir=${top_builddir:-$top_srcdir}
python=${PYTHON3:-/usr/bin/python3}

need_torch() {
	if ! "$python" -c 'import torch, numpy' 2>/dev/null; then
		echo "SKIP: $python cannot import torch and numpy (Debian: apt-get install python3-torch python3-numpy)"
		exit 77
	fi
}

need_program() {
	if [ ! -x "$1" ]; then
		echo "FAIL: $1 is missing; build it with 'make tests/$(basename "$1")'"
		exit 1
	fi
}
