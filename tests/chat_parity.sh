#!/bin/bash
# chat_parity.sh - checks the built-in chat-template renderers against Jinja:
# tests/reference/render_chat.py renders every (template, conversation,
# add_generation_prompt[, enable_thinking]) case the way Hugging Face does, and
# tests/chat_check compares the C rendering byte for byte and error for error.
# Run by `make check`; exits 77 (skip) when no Python with jinja2 is found.
set -u

here=$(cd "$(dirname "$0")" && pwd)
top_srcdir=${top_srcdir:-$(cd "$here/.." && pwd)}
top_builddir=${top_builddir:-$top_srcdir}
check=$top_builddir/tests/chat_check
data=$top_srcdir/tests/data

python=
for p in "${PYTHON3:-}" /usr/bin/python3; do
	if [ -n "$p" ] && "$p" -c 'import jinja2' 2>/dev/null; then
		python=$p
		break
	fi
done
if [ -z "$python" ]; then
	echo "SKIP: no python3 can import jinja2 (Debian: apt-get install python3-jinja2)"
	exit 77
fi
if [ ! -x "$check" ]; then
	echo "FAIL: $check is missing; build it with 'make tests/chat_check'"
	exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/trl-chat.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

if ! "$python" "$top_srcdir/tests/reference/render_chat.py" "$data/chat_templates" \
	"$data/conversations.jsonl" "$tmp/expected.jsonl"; then
	echo "FAIL: render_chat.py"
	exit 1
fi
"$check" "$tmp/expected.jsonl" "$data/conversations.jsonl" "$data/chat_templates"
