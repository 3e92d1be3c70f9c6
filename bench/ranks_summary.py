#!/usr/bin/env python3
"""ranks_summary.py - one table row from a run's ranks.jsonl (bench/scaling.sh,
slurm/scaling.sbatch).

Usage: ranks_summary.py RANKS_JSONL TOKENS_PER_STEP [BASE_TOKENS_PER_S]

Prints: ms/step and MPI share of the slowest rank, tokens/s, bytes sent per
step, model-state bytes and peak RSS of the largest rank, throughput relative
to BASE (1.000 without one), and last the raw tokens/s for the caller.
"""
import json
import sys

if len(sys.argv) not in (3, 4):
    sys.exit(__doc__)
rows = [json.loads(line) for line in open(sys.argv[1])]
tokens = int(sys.argv[2])
base = float(sys.argv[3]) if len(sys.argv) == 4 and sys.argv[3] else 0.0
step = max(r["step_s"] for r in rows)
wait = max(r["mpi_wait_s_per_step"] for r in rows)
sent = max(r["comm_bytes_per_step"] for r in rows)
state = max(r["model_state_bytes"] for r in rows)
rss = max(r["peak_rss_bytes"] for r in rows)
tps = tokens / step
rel = f"{tps / base:.3f}" if base else "1.000"
print(f"{1e3 * step:10.1f} {tps:10.1f} {sent / 2**20:9.1f} MiB {100 * wait / step:9.1f}% "
      f"{state / 2**20:8.1f} MiB {rss / 2**20:8.1f} MiB {rel:>8} {tps}")
