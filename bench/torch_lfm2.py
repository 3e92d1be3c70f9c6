#!/usr/bin/env python3
"""torch_lfm2.py - times an LFM2 training step (full or LoRA) in PyTorch eager, the baseline for bench_lfm2.

Usage: torch_lfm2.py CONFIG MODE [--steps N] [--warmup N] [--threads N] [--seed S]
CONFIG is lfm2-tiny or lfm2-small and MODE full, lora or lora-all (the same
shapes and adapters as bench/bench_lfm2.c). The model is a plain nn.Module in
float32 with a fresh random init, written as Hugging Face's Lfm2 computes it:
per layer an RMSNorm, then either GQA attention (q/k RMSNorm over head_dim
before rotate-half RoPE, causal softmax by explicit matmul and mask: PyTorch
1.13 has no scaled_dot_product_attention) or the gated short convolution
(in_proj to 3C split into b, c, x; depthwise causal conv1d of b * x, kernel
3; out_proj of c * conv), a residual, an RMSNorm and a SwiGLU w2(silu(w1 x) *
w3 x); a final RMSNorm and the lm_head tied to the embedding.

A step is zero_grad, forward, cross-entropy, backward, clip_grad_norm_(1.0)
and AdamW (lr 3e-4, weight decay 0.01 on matrices), on random token ids with
next-token targets. In the LoRA modes the base is frozen (requires_grad
False) and each targeted nn.Linear, matched as PEFT matches names (the name
or its last dotted parts), becomes base(x) + alpha / r * B(A(dropout(x)))
with r 16, alpha 32, dropout 0.05, A Kaiming-uniform and B zero; AdamW and
the clipping see the adapters only. Prints one line:

    pytorch CONFIG MODE ms_per_step=... tokens_per_s=... threads=... steps=...
    loss0=... loss=... trainable=... adapted=...
"""

import argparse
import math
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_step import timed_steps

CONFIGS = {
    "lfm2-tiny": dict(layers="ccacca", C=256, H=4, KV=2, I=768, V=8192, B=8, T=128,
                      steps=10),
    "lfm2-small": dict(layers="ccaccaca", C=512, H=8, KV=2, I=1536, V=16384, B=4, T=256,
                       steps=5),
}
MODES = ("full", "lora", "lora-all")
LORA_TARGETS = {"lora": ["q_proj", "k_proj", "v_proj", "out_proj"], "lora-all": None}
ROPE_THETA = 1000000.0
EPS = 1e-5
KERNEL = 3


class RMSNorm(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * self.weight


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, C, H, KV, T):
        super().__init__()
        self.H, self.KV, self.D = H, KV, C // H
        D = self.D
        self.q_proj = nn.Linear(C, H * D, bias=False)
        self.k_proj = nn.Linear(C, KV * D, bias=False)
        self.v_proj = nn.Linear(C, KV * D, bias=False)
        self.out_proj = nn.Linear(H * D, C, bias=False)
        self.q_layernorm = RMSNorm(D)
        self.k_layernorm = RMSNorm(D)
        inv = 1.0 / ROPE_THETA ** (torch.arange(0, D, 2, dtype=torch.float32) / D)
        ang = torch.outer(torch.arange(T, dtype=torch.float32), inv)
        ang = torch.cat((ang, ang), dim=-1)
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)
        self.register_buffer("causal", torch.ones(T, T, dtype=torch.bool).tril(),
                             persistent=False)

    def forward(self, x):
        B, T, _ = x.shape
        H, KV, D = self.H, self.KV, self.D
        q = self.q_layernorm(self.q_proj(x).view(B, T, H, D)).transpose(1, 2)
        k = self.k_layernorm(self.k_proj(x).view(B, T, KV, D)).transpose(1, 2)
        v = self.v_proj(x).view(B, T, KV, D).transpose(1, 2)
        cos, sin = self.cos[:T], self.sin[:T]
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // KV, dim=1)
        v = v.repeat_interleave(H // KV, dim=1)
        att = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(D))
        att = att.masked_fill(~self.causal[:T, :T], float("-inf"))
        y = torch.matmul(torch.softmax(att, dim=-1), v)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, H * D))


class ShortConv(nn.Module):
    def __init__(self, C):
        super().__init__()
        self.in_proj = nn.Linear(C, 3 * C, bias=False)
        self.conv = nn.Conv1d(C, C, KERNEL, groups=C, padding=KERNEL - 1, bias=False)
        self.out_proj = nn.Linear(C, C, bias=False)

    def forward(self, x):
        T = x.shape[1]
        b, c, xx = self.in_proj(x).transpose(-1, -2).chunk(3, dim=-2)
        z = self.conv(b * xx)[..., :T]
        return self.out_proj((c * z).transpose(-1, -2))


class FeedForward(nn.Module):
    def __init__(self, C, I):
        super().__init__()
        self.w1 = nn.Linear(C, I, bias=False)
        self.w3 = nn.Linear(C, I, bias=False)
        self.w2 = nn.Linear(I, C, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Layer(nn.Module):
    def __init__(self, attn, C, H, KV, I, T):
        super().__init__()
        self.operator_norm = RMSNorm(C)
        if attn:
            self.self_attn = Attention(C, H, KV, T)
        else:
            self.conv = ShortConv(C)
        self.ffn_norm = RMSNorm(C)
        self.feed_forward = FeedForward(C, I)

    def forward(self, x):
        op = self.self_attn if hasattr(self, "self_attn") else self.conv
        x = x + op(self.operator_norm(x))
        return x + self.feed_forward(self.ffn_norm(x))


class LFM2(nn.Module):
    def __init__(self, layers, C, H, KV, I, V, T):
        super().__init__()
        self.embed_tokens = nn.Embedding(V, C)
        self.layers = nn.ModuleList(Layer(t == "a", C, H, KV, I, T) for t in layers)
        self.embedding_norm = RMSNorm(C)
        self.lm_head = nn.Linear(C, V, bias=False)
        self.lm_head.weight = self.embed_tokens.weight
        # trl-hpc's model_init_weights: N(0, 0.02), output projections
        # N(0, 0.02 / sqrt(2 L)), norm scales 1.
        std = 0.02
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(p)
            elif name.endswith("out_proj.weight") or name.endswith("w2.weight"):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * len(layers)))
            else:
                nn.init.normal_(p, 0.0, std)

    def forward(self, ids):
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.embedding_norm(x))


class LoraLinear(nn.Module):
    """PEFT's lora.Linear: base(x) + scale * B(A(dropout(x))), B zero at start."""

    def __init__(self, base, r, alpha, dropout):
        super().__init__()
        self.base = base
        self.lora_A = nn.Linear(base.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.scale = alpha / r

    def forward(self, x):
        return self.base(x) + self.scale * self.lora_B(self.lora_A(self.drop(x)))


def add_lora(model, targets, r=16, alpha=32.0, dropout=0.05):
    """Freezes model and wraps the targeted nn.Linear modules (targets None:
    all-linear, every linear but lm_head). Returns the number wrapped."""
    for p in model.parameters():
        p.requires_grad_(False)
    chosen = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear) or name == "lm_head":
            continue
        if targets is None or any(name == t or name.endswith("." + t) for t in targets):
            chosen.append(name)
    for name in chosen:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, attr, LoraLinear(getattr(parent, attr), r, alpha, dropout))
    return len(chosen)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", choices=sorted(CONFIGS))
    ap.add_argument("mode", choices=MODES)
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
    model = LFM2(c["layers"], c["C"], c["H"], c["KV"], c["I"], V, T)
    adapted = 0
    if args.mode != "full":
        adapted = add_lora(model, LORA_TARGETS[args.mode])
    model.train()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    dt, loss0, loss = timed_steps(
        model, params, lambda n, p: p.dim() >= 2 and "embed_tokens" not in n, V, B, T,
        args.seed, args.warmup, steps)
    trained = [p for _, p in params]
    tok_s = B * T / dt
    print("pytorch %s %s ms_per_step=%.1f tokens_per_s=%.1f threads=%d steps=%d "
          "loss0=%.4f loss=%.4f trainable=%d adapted=%d torch=%s" %
          (args.config, args.mode, dt * 1e3, tok_s, torch.get_num_threads(), steps, loss0,
           loss, sum(p.numel() for p in trained), adapted, torch.__version__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
