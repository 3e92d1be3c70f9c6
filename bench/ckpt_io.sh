#!/bin/bash
# ckpt_io.sh - write and read bandwidth of a gpt2-124M checkpoint (model and
# AdamW moments, 1.49 GB) through trl-hpc's parallel-HDF5 save and load, on
# 1, 2 and 4 ranks, against dd, and against a plain write from (read into)
# memory, of the same bytes on the same folder in the same run. Prints a
# table; nothing passes or fails.
#
# Usage: bench/ckpt_io.sh [-r ROUNDS] [-n "1 2 4"] [-d DIR] [-c CONFIG]
#   ROUNDS  rounds per rank count (default 3), each running all three
#           writers (in turns) and readers; the table shows medians
#   DIR     where the files go (default: a new folder under $TMPDIR or /tmp)
#   CONFIG  gpt2-124M (default) or tiny
# Every write is durable: dd uses conv=fsync, raw calls fsync, a checkpoint
# save syncs its file before renaming it. Reads start cold when this script may drop the
# page cache (root: /proc/sys/vm/drop_caches), otherwise they are warm and
# the table says so. Needs `make bench/bench_ckpt` in the build directory;
# run from there (or set top_builddir).
set -u

. "$(cd "$(dirname "$0")" && pwd)/common.sh"
mpiexec=${MPIEXEC:-mpiexec}
rounds=3
ranks="1 2 4"
dir=""
config=gpt2-124M
while getopts "r:n:d:c:h" opt; do
	case $opt in
	r) rounds=$OPTARG ;;
	n) ranks=$OPTARG ;;
	d) dir=$OPTARG ;;
	c) config=$OPTARG ;;
	*) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
	esac
done
bench=$(need_bench bench_ckpt) || exit 1
if [ -z "$dir" ]; then
	dir=$(mktemp -d "${TMPDIR:-/tmp}/trl-ckpt-bench.XXXXXX")
	trap 'rm -rf "$dir"' EXIT
fi
cores=$(nproc)
cold=0
drop() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; }
(sync && echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null && cold=1

median() { sort -g | awk '{ v[NR] = $1 } END { printf "%.1f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# dd_rate write|read BYTES: MB/s of dd moving BYTES in 16 MiB blocks.
dd_rate() {
	local blocks=$((($2 + 16777215) / 16777216)) t0 t1
	t0=$(date +%s.%N)
	if [ "$1" = write ]; then
		dd if=/dev/zero of="$dir/dd.bin" bs=16M count="$blocks" conv=fsync status=none
	else
		dd if="$dir/dd.bin" of=/dev/null bs=16M status=none
	fi
	t1=$(date +%s.%N)
	awk -v b="$((blocks * 16777216))" -v a="$t0" -v c="$t1" 'BEGIN { printf "%.1f", b / 1e6 / (c - a) }'
}

declare -A med
bytes=""
for n in $ranks; do
	threads=$((cores / n))
	[ $threads -ge 1 ] || threads=1
	run="$mpiexec --allow-run-as-root --oversubscribe --bind-to none -np $n -x OMP_NUM_THREADS=$threads"
	for ((r = 1; r <= rounds; r++)); do
		# The disk may discard freed blocks in the background: let that
		# finish before the writes. The three writers take turns going first.
		rm -f "$dir/ckpt.h5" "$dir/dd.bin" "$dir/raw.bin"
		sync
		sleep 2
		order="ours dd raw"
		[ $((r % 2)) = 0 ] && order="raw dd ours"
		for who in $order; do
			case $who in
			ours)
				line=$($run "$bench" write "$dir/ckpt.h5" --config "$config" | grep '^ckpt ') ||
					{ echo "ckpt_io.sh: bench_ckpt write failed on $n ranks" >&2; exit 1; }
				echo "$line" >&2
				bytes=$(field bytes "$line")
				field mb_per_s "$line" >>"$dir/w$n" ;;
			dd) dd_rate write "$bytes" >>"$dir/dw$n"; echo >>"$dir/dw$n" ;;
			raw) field mb_per_s "$($run "$bench" rawwrite "$dir/raw.bin" --config "$config")" \
				>>"$dir/rw$n" ;;
			esac
		done
		drop
		line=$($run "$bench" read "$dir/ckpt.h5" --config "$config" | grep '^ckpt ') ||
			{ echo "ckpt_io.sh: bench_ckpt read failed on $n ranks" >&2; exit 1; }
		echo "$line" >&2
		field mb_per_s "$line" >>"$dir/r$n"
		drop
		dd_rate read "$bytes" >>"$dir/dr$n"
		echo >>"$dir/dr$n"
		drop
		field mb_per_s "$($run "$bench" rawread "$dir/ckpt.h5")" >>"$dir/rr$n"
		echo "  dd: write $(tail -1 "$dir/dw$n") MB/s, read $(tail -1 "$dir/dr$n") MB/s;" \
			"raw: write $(tail -1 "$dir/rw$n") MB/s, read $(tail -1 "$dir/rr$n") MB/s" >&2
	done
	for k in w dw rw r dr rr; do med[$k,$n]=$(median <"$dir/$k$n"); done
done

printf '\n%s checkpoint, %.2f GB of tensors; %s reads; medians of %d rounds\n' \
	"$config" "$(awk -v b="$bytes" 'BEGIN { print b / 1e9 }')" \
	"$([ $cold = 1 ] && echo cold || echo "warm (page cache not dropped: not root)")" "$rounds"
hdr='%-5s | %-7s || %8s | %8s | %5s | %8s | %5s || %8s | %8s | %5s | %8s | %5s\n'
printf "$hdr" ranks threads write dd ratio raw ratio read dd ratio raw ratio
printf -- '------+---------++----------+----------+-------+----------+-------++----------+----------+-------+----------+------\n'
for n in $ranks; do
	threads=$((cores / n))
	[ $threads -ge 1 ] || threads=1
	printf "$hdr" "$n" "$threads" \
		"${med[w,$n]}" "${med[dw,$n]}" "$(ratio "${med[w,$n]}" "${med[dw,$n]}")" \
		"${med[rw,$n]}" "$(ratio "${med[w,$n]}" "${med[rw,$n]}")" \
		"${med[r,$n]}" "${med[dr,$n]}" "$(ratio "${med[r,$n]}" "${med[dr,$n]}")" \
		"${med[rr,$n]}" "$(ratio "${med[r,$n]}" "${med[rr,$n]}")"
done
echo "MB/s (10^6 bytes). dd: 16 MiB blocks through one buffer (write from /dev/zero," \
	"conv=fsync). raw: one process writing the same bytes from, or reading the file" \
	"into, memory of their size in 16 MiB requests (write then fsync): the least a" \
	"save or load does."
echo "folder: $dir ($(df -h "$dir" | awk 'NR == 2 { print $1 ", " $2 " " }')); trl-hpc writes with" \
	"collective MPI-IO transfers, one dataset per tensor"
