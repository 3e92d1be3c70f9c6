#!/bin/bash
# bench_generate.sh - trl-hpc's KV-cached greedy decoding against a PyTorch
# KV-cached loop on the same random weights and prompts, same thread count;
# prints a table of figures (no pass/fail on time).
#
# Usage: bench/bench_generate.sh [-t THREADS] [-r ROUNDS] [-b "BATCHES"] [CONFIG...]
#   THREADS  threads for both (default 2): OMP_NUM_THREADS for trl-hpc,
#            torch.set_num_threads for PyTorch (with OMP_WAIT_POLICY=PASSIVE)
#   ROUNDS   runs of each implementation per case, alternating (default 1);
#            the table shows the best round of each
#   BATCHES  batch sizes (default "1 16")
#   CONFIG   gpt2-124M and/or tiny (default: tiny gpt2-124M)
# Needs the bench binary: run `make bench/bench_generate` in the build
# directory, then run this script from there (or set top_builddir).
# PROMPT_LEN and NEW_TOKENS in the environment override the defaults (32, 64).
# "same" is yes when both decoders produced the same greedy tokens.
set -u

here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
python=${PYTHON3:-/usr/bin/python3}
threads=2
rounds=1
batches="1 16"
while getopts "t:r:b:h" opt; do
	case $opt in
	t) threads=$OPTARG ;;
	r) rounds=$OPTARG ;;
	b) batches=$OPTARG ;;
	*) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(tiny gpt2-124M)

bench=$(need_bench bench_generate) || exit 1
have_torch=1
if ! "$python" -c 'import torch, numpy' 2>/dev/null; then
	echo "bench_generate.sh: $python cannot import torch and numpy; showing trl-hpc only" >&2
	have_torch=0
fi

prompt_len=${PROMPT_LEN:-32}
new_tokens=${NEW_TOKENS:-64}
work=$(mktemp -d "${TMPDIR:-/tmp}/bench_generate.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT

# field NAME LINE: the value of NAME=... in a result line.

declare -A result
for cfg in "${configs[@]}"; do
	for B in $batches; do
		dir=$work/$cfg-b$B
		ours=""
		theirs=""
		for ((r = 1; r <= rounds; r++)); do
			save=()
			[ $r = 1 ] && save=(--save "$dir")
			line=$(OMP_NUM_THREADS=$threads "$bench" "$cfg" --batch "$B" \
				--prompt_len "$prompt_len" --new_tokens "$new_tokens" "${save[@]}" |
				grep '^trl-hpc ')
			echo "$line" >&2
			[ -n "$line" ] && ours=$(best decode_tokens_per_s "$ours" "$line")
			if [ $have_torch = 1 ] && [ -f "$dir/prompts.txt" ]; then
				line=$(OMP_NUM_THREADS=$threads OMP_WAIT_POLICY=PASSIVE "$python" \
					"$here/torch_generate.py" "$dir" --name "$cfg" \
					--new_tokens "$new_tokens" --threads "$threads" |
					grep '^pytorch ')
				echo "$line" >&2
				[ -n "$line" ] && theirs=$(best decode_tokens_per_s "$theirs" "$line")
			fi
		done
		rm -rf "$dir"
		result[$cfg,$B,trl-hpc]=$ours
		result[$cfg,$B,pytorch]=$theirs
	done
done

printf '\n%-10s | %5s | %-8s | %10s | %14s | %12s | %5s | %s\n' config batch impl \
	"prefill ms" "decode ms/step" "decode tok/s" same "ratio trl-hpc/pytorch (tok/s)"
printf -- '-----------+-------+----------+------------+----------------+--------------+-------+------------------------------\n'
for cfg in "${configs[@]}"; do
	for B in $batches; do
		ours=${result[$cfg,$B,trl-hpc]}
		theirs=${result[$cfg,$B,pytorch]}
		ratio="n/a"
		same="n/a"
		if [ -n "$ours" ] && [ -n "$theirs" ]; then
			ratio=$(ratio "$(field decode_tokens_per_s "$ours")" \
				"$(field decode_tokens_per_s "$theirs")")
			same=no
			[ "$(field checksum "$ours")" = "$(field checksum "$theirs")" ] && same=yes
		fi
		for impl in trl-hpc pytorch; do
			line=${result[$cfg,$B,$impl]}
			[ -n "$line" ] || continue
			printf '%-10s | %5s | %-8s | %10s | %14s | %12s | %5s | %s\n' "$cfg" "$B" \
				"$impl" "$(field prefill_ms "$line")" \
				"$(field decode_ms_per_step "$line")" \
				"$(field decode_tokens_per_s "$line")" \
				"$([ $impl = trl-hpc ] && echo "$same")" \
				"$([ $impl = trl-hpc ] && echo "$ratio")"
		done
	done
done
echo "threads=$threads rounds=$rounds prompt_len=$prompt_len new_tokens=$new_tokens" \
	"(best round shown)"
