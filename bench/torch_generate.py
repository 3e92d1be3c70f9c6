#!/usr/bin/env python3
"""torch_generate.py - PyTorch KV-cached greedy decoding of a GPT-2 model folder,
the baseline for bench_generate.

Usage: torch_generate.py DIR --name CONFIG [--new_tokens N] [--threads N]

DIR is written by `bench_generate CONFIG --save DIR`: config.json,
model.safetensors (float32, Hugging Face GPT-2 names, read here by hand) and
prompts.txt (one row of prompt ids per line, all of one length). The decoder
is functional PyTorch in float32 under inference_mode: a prefill of the whole
prompt batch with a causal mask, then one token per row per step against a
preallocated (B, H, T, D) key/value cache per layer, greedy argmax, no EOS.
As in bench_generate, the time of prefill plus the first token (a run with
one new token) is subtracted from a full run. Prints one line:

    pytorch CONFIG batch=B prefill_ms=... decode_ms_per_step=...
        decode_tokens_per_s=... threads=... checksum=... first=ID,ID,...

checksum sums (i+1)*id over every generated token of every row, as
bench_generate does, so equal checksums mean the same greedy tokens.
"""

import argparse
import json
import math
import os
import struct
import time

import numpy as np
import torch
import torch.nn.functional as F


def read_safetensors(path):
    """{name: float32 tensor} from a safetensors file with F32 tensors."""
    with open(path, "rb") as f:
        data = f.read()
    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + hlen].decode("utf-8"))
    header.pop("__metadata__", None)
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        if info["dtype"] != "F32":
            raise ValueError("%s: tensor %s is %s, not F32" % (path, name, info["dtype"]))
        begin, end = info["data_offsets"]
        arr = np.frombuffer(data, dtype="<f4", count=(end - begin) // 4, offset=base + begin)
        out[name] = torch.from_numpy(arr.reshape(info["shape"]).copy())
    return out


class Gpt2Decoder:
    def __init__(self, w, cfg, B, maxT):
        self.w = w
        self.L = cfg["n_layer"]
        self.H = cfg["n_head"]
        self.C = cfg["n_embd"]
        self.D = self.C // self.H
        self.eps = cfg.get("layer_norm_epsilon", 1e-5)
        shape = (B, self.H, maxT, self.D)
        self.k = [torch.zeros(shape) for _ in range(self.L)]
        self.v = [torch.zeros(shape) for _ in range(self.L)]

    def forward(self, ids, start):
        """Logits (B, V) after the last of ids (B, T) placed at positions start..."""
        w, C, H, D = self.w, self.C, self.H, self.D
        B, T = ids.shape
        x = w["transformer.wte.weight"][ids] + w["transformer.wpe.weight"][start:start + T]
        end = start + T
        mask = None
        if T > 1:
            qpos = torch.arange(start, end)[:, None]
            kpos = torch.arange(end)[None, :]
            mask = kpos > qpos
        for l in range(self.L):
            p = "transformer.h.%d." % l
            h = F.layer_norm(x, (C,), w[p + "ln_1.weight"], w[p + "ln_1.bias"], self.eps)
            qkv = torch.matmul(h, w[p + "attn.c_attn.weight"]) + w[p + "attn.c_attn.bias"]
            q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in qkv.split(C, dim=-1))
            self.k[l][:, :, start:end] = k
            self.v[l][:, :, start:end] = v
            K = self.k[l][:, :, :end]
            V = self.v[l][:, :, :end]
            att = torch.matmul(q, K.transpose(-1, -2)) * (1.0 / math.sqrt(D))
            if mask is not None:
                att = att.masked_fill(mask, float("-inf"))
            y = torch.matmul(torch.softmax(att, dim=-1), V)
            y = y.transpose(1, 2).reshape(B, T, C)
            x = x + torch.matmul(y, w[p + "attn.c_proj.weight"]) + w[p + "attn.c_proj.bias"]
            h = F.layer_norm(x, (C,), w[p + "ln_2.weight"], w[p + "ln_2.bias"], self.eps)
            h = F.gelu(torch.matmul(h, w[p + "mlp.c_fc.weight"]) + w[p + "mlp.c_fc.bias"],
                       approximate="tanh")
            x = x + torch.matmul(h, w[p + "mlp.c_proj.weight"]) + w[p + "mlp.c_proj.bias"]
        x = F.layer_norm(x[:, -1], (C,), w["transformer.ln_f.weight"],
                         w["transformer.ln_f.bias"], self.eps)
        return torch.matmul(x, w["transformer.wte.weight"].t())


def generate(dec, prompts, n):
    """Greedy: (B, n) new token ids."""
    P = prompts.shape[1]
    logits = dec.forward(prompts, 0)
    out = []
    for i in range(n):
        tok = torch.argmax(logits, dim=-1)
        out.append(tok)
        if i + 1 < n:
            logits = dec.forward(tok[:, None], P + i)
    return torch.stack(out, dim=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--name", default="model")
    ap.add_argument("--new_tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with open(os.path.join(a.dir, "config.json")) as f:
        cfg = json.load(f)
    if cfg.get("model_type") != "gpt2":
        raise SystemExit("torch_generate.py: only gpt2 folders, got %r" % cfg.get("model_type"))
    w = read_safetensors(os.path.join(a.dir, "model.safetensors"))
    with open(os.path.join(a.dir, "prompts.txt")) as f:
        rows = [[int(t) for t in line.split()] for line in f if line.strip()]
    prompts = torch.tensor(rows, dtype=torch.long)
    B, P = prompts.shape
    N = a.new_tokens
    dec = Gpt2Decoder(w, cfg, B, P + N)
    with torch.inference_mode():
        generate(dec, prompts, min(N, 8))
        t0 = time.perf_counter()
        generate(dec, prompts, 1)
        t_prefill = time.perf_counter() - t0
        t0 = time.perf_counter()
        toks = generate(dec, prompts, N)
        t_all = time.perf_counter() - t0
    decode = t_all - t_prefill
    steps = max(N - 1, 1)
    checksum = int(sum((i + 1) * int(t) for row in toks.tolist() for i, t in enumerate(row)))
    first = ",".join(str(int(t)) for t in toks[0, :8].tolist())
    print("pytorch %s batch=%d prefill_ms=%.2f decode_ms_per_step=%.3f "
          "decode_tokens_per_s=%.1f threads=%d checksum=%d first=%s"
          % (a.name, B, t_prefill * 1e3, decode / steps * 1e3, B * steps / decode,
             torch.get_num_threads(), checksum, first))


if __name__ == "__main__":
    main()
