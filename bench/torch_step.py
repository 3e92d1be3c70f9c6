"""torch_step.py - the timed PyTorch training step the bench/ baselines share.

timed_steps(model, named, V, B, T, seed, warmup, steps) trains `model` on one
seeded batch of random token ids (B, T) with next-token targets: zero_grad,
forward, cross-entropy, backward, clip_grad_norm_(1.0) over the parameters in
`named` ((name, parameter) pairs), AdamW (lr 3e-4, weight decay 0.01 on the
matrices that `decays(name, p)` selects). Returns (seconds per step, loss of
the first step, loss of the last step).
"""

import time

import torch
import torch.nn.functional as F


def timed_steps(model, named, decays, V, B, T, seed, warmup, steps):
    trained = [p for _, p in named]
    decay = [p for n, p in named if decays(n, p)]
    no_decay = [p for n, p in named if not decays(n, p)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=3e-4, betas=(0.9, 0.999), eps=1e-8)
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, V, (B, T + 1), generator=gen)
    ids, targets = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()

    def step():
        opt.zero_grad(set_to_none=False)
        logits = model(ids)
        loss = F.cross_entropy(logits.view(-1, V), targets.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        return float(loss)

    loss0 = loss = float("nan")
    for i in range(warmup):
        loss = step()
        if i == 0:
            loss0 = loss
    t0 = time.perf_counter()
    for i in range(steps):
        loss = step()
        if warmup == 0 and i == 0:
            loss0 = loss
    return (time.perf_counter() - t0) / max(steps, 1), loss0, loss
