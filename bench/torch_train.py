#!/usr/bin/env python3
"""torch_train.py - times a GPT-2 training step in PyTorch eager, the baseline for bench_train.

Usage: torch_train.py CONFIG [--steps N] [--warmup N] [--threads N] [--seed S]
CONFIG is gpt2-124M or tiny (the same shapes as bench/bench_train.c). The model
is a plain nn.Module in float32 with a fresh random init and the lm_head tied
to the token embedding; attention uses F.scaled_dot_product_attention with
is_causal=True when this PyTorch has it (2.0 and later) and the masked softmax
of Hugging Face's eager GPT-2 otherwise. A step is zero_grad, forward,
cross-entropy, backward, clip_grad_norm_(1.0) and AdamW, on random token ids
with next-token targets. Prints one line:

    pytorch CONFIG ms_per_step=... tokens_per_s=... gflops=... threads=... steps=...

FLOPs per token use trl-hpc's estimate (model_flops_per_token in src/model.h):
6 N_nonembedding + 6 L T C + 6 C V.
"""

import argparse
import math
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_step import timed_steps

CONFIGS = {
    "gpt2-124M": dict(L=12, H=12, C=768, V=50257, P=1024, B=4, T=256, steps=5),
    "tiny": dict(L=4, H=4, C=256, V=8192, P=1024, B=8, T=128, steps=10),
    "tiny-long": dict(L=4, H=4, C=256, V=8192, P=2048, B=1, T=2048, steps=4),
}

HAVE_SDPA = hasattr(F, "scaled_dot_product_attention")


class Block(nn.Module):
    def __init__(self, C, H, T):
        super().__init__()
        self.H = H
        self.ln_1 = nn.LayerNorm(C, eps=1e-5)
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)
        self.ln_2 = nn.LayerNorm(C, eps=1e-5)
        self.c_fc = nn.Linear(C, 4 * C)
        self.mlp_proj = nn.Linear(4 * C, C)
        if not HAVE_SDPA:
            self.register_buffer("causal", torch.ones(T, T, dtype=torch.bool).tril(),
                                 persistent=False)

    def attention(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.H, C // self.H).transpose(1, 2) for t in (q, k, v))
        if HAVE_SDPA:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(k.shape[-1]))
            att = att.masked_fill(~self.causal[:T, :T], float("-inf"))
            y = torch.matmul(torch.softmax(att, dim=-1), v)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))

    def forward(self, x):
        x = x + self.attention(self.ln_1(x))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT2(nn.Module):
    def __init__(self, L, H, C, V, P, T):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(P, C)
        self.h = nn.ModuleList(Block(C, H, T) for _ in range(L))
        self.ln_f = nn.LayerNorm(C, eps=1e-5)
        self.lm_head = nn.Linear(C, V, bias=False)
        self.lm_head.weight = self.wte.weight
        std = 0.02
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif "ln_" in name:
                nn.init.ones_(p)
            elif name.endswith("c_proj.weight") or name.endswith("mlp_proj.weight"):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * L))
            else:
                nn.init.normal_(p, 0.0, std)

    def forward(self, ids):
        T = ids.shape[1]
        pos = torch.arange(T, device=ids.device)
        x = self.wte(ids) + self.wpe(pos)[None]
        for blk in self.h:
            x = blk(x)
        return self.lm_head(self.ln_f(x))


def flops_per_token(L, C, V, T):
    """trl-hpc's estimate: 6 N_nonembedding + 6 L T C + 6 C V (GPT-2, I = 4C)."""
    I = 4 * C
    per_layer = 2 * C + (3 * C * C + 3 * C) + (C * C + C) + 2 * C + (C * I + I) + (I * C + C)
    n_nonemb = L * per_layer + 2 * C
    return 6.0 * n_nonemb + 6.0 * L * T * C + 6.0 * C * V


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", choices=sorted(CONFIGS))
    ap.add_argument("--steps", type=int, default=None, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    c = CONFIGS[args.config]
    steps = args.steps if args.steps is not None else c["steps"]
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    B, T, V = c["B"], c["T"], c["V"]
    model = GPT2(c["L"], c["H"], c["C"], V, c["P"], T)
    dt, _, loss = timed_steps(
        model, list(model.named_parameters()),
        lambda n, p: p.dim() == 2 and "wte" not in n and "wpe" not in n, V, B, T,
        args.seed, args.warmup, steps)
    tok_s = B * T / dt
    gflops = flops_per_token(c["L"], c["C"], V, T) * tok_s / 1e9
    print("pytorch %s ms_per_step=%.1f tokens_per_s=%.1f gflops=%.2f threads=%d steps=%d "
          "loss=%.4f attention=%s torch=%s" %
          (args.config, dt * 1e3, tok_s, gflops, torch.get_num_threads(), steps, loss,
           "sdpa" if HAVE_SDPA else "eager", torch.__version__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
