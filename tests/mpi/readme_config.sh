#!/bin/bash
# readme_config.sh - the README's configuration reference is exactly what the
# schema table prints, so the documentation cannot drift from the code.
. "$(dirname "$0")/common.sh"
sed -n '/<!-- config-reference:begin -->/,/<!-- config-reference:end -->/p' \
    "$top_srcdir/README.md" | sed '1d;$d' >"$WORK/readme.md"
"$TRL" config-reference >"$WORK/schema.md" || fail "trl-hpc config-reference failed"
diff -u "$WORK/schema.md" "$WORK/readme.md" ||
    fail "README.md's configuration reference is stale: regenerate it with trl-hpc config-reference"
echo "ok: README configuration reference matches the schema"
