#!/usr/bin/env python3
"""hf_oracle.py - tiny random models in the exact Hugging Face folder layout, and their logits.

Usage:
    hf_oracle.py build ROOT           writes ROOT/<case>/ for every case (below)
    hf_oracle.py compare CASE_DIR LOGITS.safetensors [--tol 1e-4]
    hf_oracle.py check-export OUT_DIR SRC_DIR [--dtype BF16] [--bos N --eos N]

Each case folder holds what save_pretrained writes for the architecture
(config.json with its model_type, architectures and keys, model.safetensors or
shards behind model.safetensors.index.json, generation_config.json, tokenizer
files), plus batch.safetensors (batch.ids, batch.pos: I32 (B, T)) and
expected.safetensors (the logits in float64 from torch_model.py, which follows
the published Hugging Face modeling code; with doc = 0 everywhere its mask is
plain causal attention). Cases: llama, qwen2, qwen3 (explicit head_dim !=
hidden/heads, q_norm/k_norm), mistral (sliding_window longer than the batch),
gpt2 (transformer.* names), gpt2-hub (base-model names and attn.bias buffers,
as in the Hub's gpt2), and for llama, qwen3 and gpt2 a -bf16 variant (weights
stored as BF16, expected logits from the bf16-rounded weights) and a -sharded
variant (two shards and an index). Safetensors files are written by hand.

compare passes when max |trl-hpc - oracle| / max |oracle| <= tol.
check-export reads a folder trl-hpc exported from SRC_DIR and checks
config.json (model_type, architectures, torch_dtype), tensor names and shapes
against the source, the dtype, the values (source weights rounded to the
dtype), generation_config.json and the copied tokenizer files.
"""

import argparse
import json
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_model  # noqa: E402

NP_DTYPES = {"F32": "<f4", "F64": "<f8", "I32": "<i4", "I64": "<i8", "F16": "<f2"}
B, T = 2, 9
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def tensor_bytes(t, dtype):
    """(dtype name, raw little-endian bytes) of tensor t stored as dtype."""
    if dtype == "BF16":
        raw = t.detach().to(torch.float32).to(torch.bfloat16).contiguous().view(torch.int16)
        return "BF16", raw.numpy().astype("<i2").tobytes()
    if dtype == "I32":
        return "I32", t.detach().numpy().astype("<i4").tobytes()
    return dtype, t.detach().numpy().astype(NP_DTYPES[dtype]).tobytes()


def write_safetensors(path, tensors, dtype="F32"):
    """tensors: list of (name, torch tensor); written as dtype (I32 for ints)."""
    header, blobs, off = {}, [], 0
    for name, t in tensors:
        dt = "I32" if not t.is_floating_point() else dtype
        dt, raw = tensor_bytes(t, dt)
        header[name] = {"dtype": dt, "shape": list(t.shape),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for raw in blobs:
            f.write(raw)


def read_safetensors(path):
    """{name: (dtype, numpy array)}; BF16 is returned widened to float32."""
    with open(path, "rb") as f:
        data = f.read()
    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + hlen])
    header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        b0, b1 = info["data_offsets"]
        raw = data[8 + hlen + b0:8 + hlen + b1]
        if info["dtype"] == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = u.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=NP_DTYPES[info["dtype"]])
        out[name] = (info["dtype"], arr.reshape(info["shape"]))
    return out


def hf_config(kind):
    """config.json as save_pretrained writes it for each architecture."""
    common = {"vocab_size": 61, "hidden_size": 32, "intermediate_size": 40,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "hidden_act": "silu", "max_position_embeddings": 64,
              "initializer_range": 0.02, "rms_norm_eps": 1e-6, "use_cache": True,
              "rope_theta": 10000.0, "rope_scaling": None, "attention_dropout": 0.0,
              "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
              "transformers_version": "4.51.0"}
    if kind == "llama":
        return dict(common, architectures=["LlamaForCausalLM"], model_type="llama",
                    attention_bias=False, mlp_bias=False, pretraining_tp=1,
                    head_dim=8, tie_word_embeddings=False, rope_theta=500000.0)
    if kind == "qwen2":
        return dict(common, architectures=["Qwen2ForCausalLM"], model_type="qwen2",
                    use_sliding_window=False, sliding_window=4096, max_window_layers=2,
                    tie_word_embeddings=True, rope_theta=1000000.0)
    if kind == "qwen3":
        return dict(common, architectures=["Qwen3ForCausalLM"], model_type="qwen3",
                    head_dim=16, attention_bias=False, use_sliding_window=False,
                    sliding_window=None, max_window_layers=2, tie_word_embeddings=True,
                    rope_theta=1000000.0)
    if kind == "mistral":
        return dict(common, architectures=["MistralForCausalLM"], model_type="mistral",
                    sliding_window=16, head_dim=8, tie_word_embeddings=False,
                    num_key_value_heads=1, rms_norm_eps=1e-5)
    if kind == "gpt2":
        return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
                "activation_function": "gelu_new", "vocab_size": 61, "n_embd": 32,
                "n_layer": 2, "n_head": 4, "n_inner": None, "n_positions": 64,
                "n_ctx": 64, "layer_norm_epsilon": 1e-5, "initializer_range": 0.02,
                "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1,
                "bos_token_id": 50, "eos_token_id": 50, "torch_dtype": "float32",
                "transformers_version": "4.51.0"}
    raise ValueError(kind)


def param_shapes(cfg):
    """{name: shape} in Hugging Face layout for a normalized config."""
    C, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    H, KV, D = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    shapes = {}
    for n in torch_model.param_names(cfg):
        leaf = n.split(".")
        if cfg["architecture"] == "gpt2":
            P = cfg["max_position_embeddings"]
            table = {"wte.weight": (V, C), "wpe.weight": (P, C),
                     "c_attn.weight": (C, 3 * C), "c_attn.bias": (3 * C,),
                     "attn.c_proj.weight": (C, C), "attn.c_proj.bias": (C,),
                     "c_fc.weight": (C, I), "c_fc.bias": (I,),
                     "mlp.c_proj.weight": (I, C), "mlp.c_proj.bias": (C,)}
            key = next((k for k in table if n.endswith(k)), None)
            shapes[n] = table[key] if key else (C,)
            continue
        proj = leaf[-2]
        if proj == "q_proj":
            shapes[n] = (H * D, C) if leaf[-1] == "weight" else (H * D,)
        elif proj in ("k_proj", "v_proj"):
            shapes[n] = (KV * D, C) if leaf[-1] == "weight" else (KV * D,)
        elif proj == "o_proj":
            shapes[n] = (C, H * D) if leaf[-1] == "weight" else (C,)
        elif proj in ("q_norm", "k_norm"):
            shapes[n] = (D,)
        elif proj in ("gate_proj", "up_proj"):
            shapes[n] = (I, C)
        elif proj == "down_proj":
            shapes[n] = (C, I)
        elif proj in ("embed_tokens", "lm_head"):
            shapes[n] = (V, C)
        else:
            shapes[n] = (C,)
    return shapes


def random_weights(cfg, seed):
    g = torch.Generator().manual_seed(seed)
    w = {}
    for n, shape in param_shapes(cfg).items():
        if "norm" in n or "ln_" in n:
            base = 0.0 if n.endswith(".bias") else 1.0
            w[n] = base + 0.2 * torch.randn(shape, generator=g)
        else:
            w[n] = 0.3 * torch.randn(shape, generator=g)
    return w


def build_case(root, name, kind, dtype="F32", shards=1, hub_names=False, seed=0):
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    hf = hf_config(kind)
    if dtype == "BF16":
        hf["torch_dtype"] = "bfloat16"
    cfg = torch_model.normalize_config(hf)
    w = random_weights(cfg, seed)
    if dtype == "BF16":
        w = {n: t.to(torch.bfloat16).to(torch.float32) for n, t in w.items()}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(hf, f, indent=2)
    with open(os.path.join(d, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": hf["bos_token_id"], "eos_token_id": hf["eos_token_id"],
                   "transformers_version": "4.51.0"}, f, indent=2)
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        json.dump({"version": "1.0", "model": {"type": "BPE", "vocab": {}}}, f)
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"model_max_length": 64, "case": name}, f)
    items = list(w.items())
    if hub_names:
        items = [(n[len("transformer."):], t) for n, t in items]
        for i in range(cfg["num_hidden_layers"]):
            P = cfg["max_position_embeddings"]
            items.append(("h.%d.attn.bias" % i, torch.tril(torch.ones(1, 1, P, P))))
    if shards == 1:
        write_safetensors(os.path.join(d, "model.safetensors"), items, dtype)
    else:
        half = len(items) // 2
        parts = [items[:half], items[half:]]
        weight_map = {}
        for k, part in enumerate(parts):
            fn = "model-%05d-of-%05d.safetensors" % (k + 1, len(parts))
            write_safetensors(os.path.join(d, fn), part, dtype)
            for n, _ in part:
                weight_map[n] = fn
        total = sum(t.numel() * 4 for _, t in items)
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f,
                      indent=2)
    g = torch.Generator().manual_seed(seed + 1000)
    ids = torch.randint(0, cfg["vocab_size"], (B, T), generator=g)
    pos = torch.arange(T)[None].repeat(B, 1)
    doc = torch.zeros(B, T, dtype=torch.long)
    w64 = {n: t.to(torch.float64) for n, t in w.items()}
    logits = torch_model.forward(w64, cfg, ids, pos, doc)
    write_safetensors(os.path.join(d, "batch.safetensors"),
                      [("batch.ids", ids.to(torch.int32)), ("batch.pos", pos.to(torch.int32))])
    write_safetensors(os.path.join(d, "expected.safetensors"), [("out.logits", logits)], "F64")


CASES = [("llama", "llama", {}), ("qwen2", "qwen2", {}), ("qwen3", "qwen3", {}),
         ("mistral", "mistral", {}), ("gpt2", "gpt2", {}),
         ("gpt2-hub", "gpt2", {"hub_names": True}),
         ("llama-bf16", "llama", {"dtype": "BF16"}), ("qwen3-bf16", "qwen3", {"dtype": "BF16"}),
         ("gpt2-bf16", "gpt2", {"dtype": "BF16"}),
         ("llama-sharded", "llama", {"shards": 2}), ("qwen3-sharded", "qwen3", {"shards": 2}),
         ("gpt2-sharded", "gpt2", {"shards": 2})]


def cmd_build(args):
    for i, (name, kind, kw) in enumerate(CASES):
        build_case(args.root, name, kind, seed=11 + i, **kw)
        print(name)
    return 0


def cmd_compare(args):
    ref = read_safetensors(os.path.join(args.case, "expected.safetensors"))["out.logits"][1]
    got = read_safetensors(args.logits)["out.logits"][1].astype(np.float64)
    if got.shape != ref.shape:
        print("FAIL %s: logits shape %s, expected %s" % (args.case, got.shape, ref.shape))
        return 1
    rel = float(np.max(np.abs(got - ref)) / max(float(np.max(np.abs(ref))), 1e-6))
    ok = np.all(np.isfinite(got)) and rel <= args.tol
    print("%-16s logits rel %.3e (tol %.0e) %s" % (os.path.basename(args.case.rstrip("/")),
                                                    rel, args.tol, "PASS" if ok else "FAIL"))
    return 0 if ok else 1


def cmd_check_export(args):
    problems = []
    with open(os.path.join(args.out, "config.json")) as f:
        out_cfg = json.load(f)
    with open(os.path.join(args.src, "config.json")) as f:
        src_cfg = json.load(f)
    for k in ("model_type", "architectures"):
        if out_cfg.get(k) != src_cfg.get(k):
            problems.append("config.json %s = %r, source has %r" % (k, out_cfg.get(k),
                                                                   src_cfg.get(k)))
    want_td = {"BF16": "bfloat16", "F32": "float32"}[args.dtype]
    if out_cfg.get("torch_dtype") != want_td:
        problems.append("config.json torch_dtype = %r, expected %r" %
                        (out_cfg.get("torch_dtype"), want_td))
    a = torch_model.normalize_config(out_cfg)
    b = torch_model.normalize_config(src_cfg)
    for k in a:
        if a[k] != b[k]:
            problems.append("config.json: %s = %r, source has %r" % (k, a[k], b[k]))
    # The source weights, from whichever files it has.
    src = {}
    for fn in sorted(os.listdir(args.src)):
        if fn.startswith("model") and fn.endswith(".safetensors"):
            src.update(read_safetensors(os.path.join(args.src, fn)))
    src = {("transformer." + n if b["architecture"] == "gpt2" and
            not n.startswith("transformer.") else n): v for n, v in src.items()}
    out = read_safetensors(os.path.join(args.out, "model.safetensors"))
    names = torch_model.param_names(b)
    if sorted(out) != sorted(names):
        problems.append("tensor names differ: extra %s, missing %s" %
                        (sorted(set(out) - set(names)), sorted(set(names) - set(out))))
    shapes = param_shapes(b)
    for n in names:
        if n not in out:
            continue
        dt, arr = out[n]
        if dt != args.dtype:
            problems.append("%s: dtype %s, expected %s" % (n, dt, args.dtype))
        if tuple(arr.shape) != tuple(shapes[n]):
            problems.append("%s: shape %s, expected %s" % (n, arr.shape, shapes[n]))
            continue
        ref = torch.from_numpy(src[n][1].astype(np.float32))
        if args.dtype == "BF16":
            ref = ref.to(torch.bfloat16).to(torch.float32)
        if not np.array_equal(arr.astype(np.float32), ref.numpy()):
            problems.append("%s: values differ from the source rounded to %s" %
                            (n, args.dtype))
    with open(os.path.join(args.out, "generation_config.json")) as f:
        gen = json.load(f)
    if args.bos is not None and (gen.get("bos_token_id") != args.bos or
                                 gen.get("eos_token_id") != args.eos):
        problems.append("generation_config.json ids %r/%r, expected %d/%d" %
                        (gen.get("bos_token_id"), gen.get("eos_token_id"), args.bos, args.eos))
    for fn in TOKENIZER_FILES:
        s = os.path.join(args.src, fn)
        if os.path.exists(s):
            o = os.path.join(args.out, fn)
            if not os.path.exists(o) or open(o, "rb").read() != open(s, "rb").read():
                problems.append("%s was not copied" % fn)
    name = os.path.basename(args.src.rstrip("/"))
    if problems:
        print("FAIL export of %s (%s):" % (name, args.dtype))
        for p in problems:
            print("  " + p)
        return 1
    print("%-16s export %s: %d tensors, names/shapes/dtype/values PASS" %
          (name, args.dtype, len(names)))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("build")
    p.add_argument("root")
    p = sub.add_parser("compare")
    p.add_argument("case")
    p.add_argument("logits")
    p.add_argument("--tol", type=float, default=1e-4)
    p = sub.add_parser("check-export")
    p.add_argument("out")
    p.add_argument("src")
    p.add_argument("--dtype", default="BF16", choices=("BF16", "F32"))
    p.add_argument("--bos", type=int)
    p.add_argument("--eos", type=int)
    args = ap.parse_args()
    return {"build": cmd_build, "compare": cmd_compare,
            "check-export": cmd_check_export}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
