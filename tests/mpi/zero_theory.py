"""zero_theory.py - what a ZeRO run should report, worked out independently of
the C code: the parameter count from the model's shape, the textbook memory
and communication formulas, and checks of a run's ranks.jsonl against them.

    zero_theory.py check RUN_DIR ARCH C L H KV I V TIED GA

ARCH is llama or gpt2, TIED 1 or 0, GA the gradient accumulation steps. Exits
non-zero naming the first figure off by more than its tolerance: model-state
bytes 10 %, bytes sent per optimizer step 5 %.
"""
import json
import sys


def align(n):
    return (n + 15) // 16 * 16


def units(arch, C, L, H, KV, I, V, tied, P=1024):
    """Floats of the embeddings unit, of one layer and of the final unit,
    tensors 16-float aligned as the parameter slab lays them out."""
    D = C // H
    if arch == "gpt2":
        head = align(V * C) + align(P * C)
        layer = sum(align(x) for x in (C, C, 3 * C * C, 3 * C, C * C, C, C, C,
                                       C * I, I, I * C, C))
        tail = 2 * align(C)
    else:
        head = align(V * C)
        layer = sum(align(x) for x in (C, H * D * C, KV * D * C, KV * D * C,
                                       C * H * D, C, I * C, I * C, C * I))
        tail = align(C) + (0 if tied else align(V * C))
    return head, layer, tail


def expected(stage, N, GA, head, layer, tail, L):
    """Per-rank model-state bytes (shards + gather/reduce buffers) and bytes
    sent per optimizer step, fp32 AdamW (4 B weights, 4 B gradients, 8 B
    moments). Ring collectives: a rank sends (N-1)/N of what is reduced or
    gathered."""
    psi = head + L * layer + tail
    f = (N - 1) / N
    state = {0: 16 * psi, 1: 8 * psi + 8 * psi / N, 2: 4 * psi + 12 * psi / N,
             3: 16 * psi / N}[stage]
    # Stages 2 and 3 reduce each unit's gradient from a buffer of its own:
    # the embeddings, the final unit and two rotating layer buffers. Stage 3
    # gathers parameters into the same four.
    buffers = 4 * (head + tail + min(L, 2) * layer)
    work = {0: 0, 1: 0, 2: buffers, 3: 2 * buffers}[stage]
    # Stages 0 and 1 reduce once per step; 2 and 3 reduce every micro-batch.
    # Stages 1 and 2 all-gather the updated parameters once. Stage 3 gathers
    # the embeddings and the final unit once per step (they keep their
    # buffers), and layers L + (2 GA - 1)(L - 2) times: all of them in the
    # first forward after an update, then all but the two still held in the
    # rotating buffers in every later pass.
    if stage == 0:
        sent = 2 * psi
    elif stage == 1:
        sent = 2 * psi
    elif stage == 2:
        sent = GA * psi + psi
    else:
        gathered = head + tail + layer * (L + (2 * GA - 1) * max(L - 2, 0))
        sent = GA * psi + gathered
    return psi, state + work, 4 * f * sent


def check(run, arch, C, L, H, KV, I, V, tied, GA):
    head, layer, tail = units(arch, C, L, H, KV, I, V, tied)
    rows = [json.loads(x) for x in open(f"{run}/ranks.jsonl")]
    N, stage = rows[0]["ranks"], rows[0]["zero_stage"]
    psi, state, sent = expected(stage, N, GA, head, layer, tail, L)
    if rows[0]["num_params"] != psi:
        sys.exit(f"{run}: the slab holds {rows[0]['num_params']} floats, the "
                 f"shape gives {psi}")
    for r in rows:
        got = r["model_state_bytes"]
        if abs(got - state) > 0.10 * state:
            sys.exit(f"{run}: rank {r['rank']} stage {stage} holds {got:.0f} B of "
                     f"model states, theory {state:.0f} B (off by more than 10 %)")
        if N > 1:
            c = r["comm_bytes_per_step"]
            if abs(c - sent) > 0.05 * sent:
                sys.exit(f"{run}: rank {r['rank']} stage {stage} sent {c:.0f} B "
                         f"per step, theory {sent:.0f} B (off by more than 5 %)")
        elif r["comm_bytes_per_step"] != 0:
            sys.exit(f"{run}: one rank sent {r['comm_bytes_per_step']} B")
    worst_m = max(abs(r["model_state_bytes"] - state) / state for r in rows)
    worst_c = max(abs(r["comm_bytes_per_step"] - sent) / sent for r in rows) \
        if N > 1 else 0.0
    print(f"  {run.split('/')[-1]}: stage {stage} N={N}: state {state / 1024:.1f} KiB "
          f"(worst rank {100 * worst_m:.1f} % off), sent {sent / 1024:.1f} KiB/step "
          f"(worst rank {100 * worst_c:.2f} % off)")


if __name__ == "__main__":
    if len(sys.argv) != 12 or sys.argv[1] != "check":
        sys.exit(__doc__)
    a = sys.argv[2:]
    check(a[0], a[1], *(int(x) for x in a[2:]))
