#!/usr/bin/env python3
"""check_parity.py - compares trl-hpc's logits, loss and gradients with the PyTorch oracle.

Usage: check_parity.py CASE.safetensors [--tol 1e-4]

CASE.safetensors is written by tests/ref_dump: every parameter by its Hugging
Face name, the batch (batch.ids, batch.pos, batch.doc, batch.targets), trl-hpc's
out.logits and out.loss, grad.<name> for every parameter, and the model config
as JSON in the "config" metadata entry. The oracle (torch_model.py) recomputes
all of it in float64 with autograd. Per tensor the error is

    max |trl-hpc - oracle| / max(max |oracle|, 1e-6)

and every tensor must stay within the tolerance. Exit 0 when all pass, 1 with
a report otherwise (also when a parameter or gradient is missing).
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

DTYPES = {"F32": "<f4", "F64": "<f8", "I32": "<i4", "I64": "<i8", "F16": "<f2"}


def read_safetensors(path):
    """Returns ({name: numpy array}, metadata dict), parsed without the safetensors package."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError("%s: too short for a safetensors file" % path)
    (hlen,) = struct.unpack("<Q", data[:8])
    if 8 + hlen > len(data):
        raise ValueError("%s: header length %d runs past the end of the file" % (path, hlen))
    header = json.loads(data[8:8 + hlen].decode("utf-8"))
    base = 8 + hlen
    meta = header.pop("__metadata__", {}) or {}
    tensors = {}
    for name, info in header.items():
        dt = info["dtype"]
        if dt not in DTYPES:
            raise ValueError("%s: tensor %s has unsupported dtype %s" % (path, name, dt))
        begin, end = info["data_offsets"]
        shape = tuple(int(s) for s in info["shape"])
        count = (end - begin) // np.dtype(DTYPES[dt]).itemsize
        if base + end > len(data) or begin > end:
            raise ValueError("%s: tensor %s has data_offsets outside the file" % (path, name))
        arr = np.frombuffer(data, dtype=DTYPES[dt], count=count, offset=base + begin)
        if arr.size != int(np.prod(shape, dtype=np.int64)):
            raise ValueError("%s: tensor %s has %d values for shape %s" % (path, name, arr.size, shape))
        tensors[name] = arr.reshape(shape)
    return tensors, meta


def rel_err(got, ref):
    """max abs error relative to the reference's largest magnitude."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        return float("inf"), "shape %s != %s" % (got.shape, ref.shape)
    if not np.all(np.isfinite(got)):
        return float("inf"), "non-finite values in trl-hpc's tensor"
    err = float(np.max(np.abs(got - ref))) if got.size else 0.0
    scale = max(float(np.max(np.abs(ref))) if ref.size else 0.0, 1e-6)
    return err / scale, "max_abs_err %.3e, max_abs_ref %.3e" % (err, scale)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("case", help="safetensors file written by tests/ref_dump")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()

    tensors, meta = read_safetensors(args.case)
    if "config" not in meta:
        print("FAIL %s: no 'config' metadata entry" % args.case)
        return 1
    cfg = torch_model.normalize_config(json.loads(meta["config"]))
    names = torch_model.param_names(cfg)
    problems = []
    missing = [n for n in names if n not in tensors]
    if missing:
        problems.append("parameters missing from the file: %s" % ", ".join(missing))
    missing_g = [n for n in names if "grad." + n not in tensors]
    if missing_g:
        problems.append("gradients missing from the file: %s" % ", ".join(missing_g))
    extra = [n for n in tensors
             if not n.startswith(("batch.", "out.", "grad.")) and n not in names]
    if extra:
        problems.append("unexpected parameters in the file: %s" % ", ".join(extra))
    for k in ("batch.ids", "batch.pos", "batch.doc", "batch.targets", "out.logits",
              "out.loss"):
        if k not in tensors:
            problems.append("missing tensor %s" % k)
    if problems:
        print("FAIL %s" % args.case)
        for p in problems:
            print("  " + p)
        return 1

    weights = {n: torch.from_numpy(tensors[n].astype(np.float64)) for n in names}
    batch = {k: torch.from_numpy(tensors["batch." + k].astype(np.int64))
             for k in ("ids", "pos", "doc", "targets")}
    logits, loss, grads = torch_model.forward_backward(
        weights, cfg, batch["ids"], batch["pos"], batch["doc"], batch["targets"])

    results = []
    got_logits = tensors["out.logits"].reshape(logits.shape) \
        if tensors["out.logits"].size == logits.numel() else tensors["out.logits"]
    results.append(("out.logits",) + rel_err(got_logits, logits.numpy()))
    results.append(("out.loss",) + rel_err(np.reshape(tensors["out.loss"], ()),
                                           loss.numpy()))
    for n in names:
        if n not in grads:
            results.append(("grad." + n, float("inf"), "the oracle has no gradient"))
            continue
        results.append(("grad." + n,) + rel_err(tensors["grad." + n], grads[n].numpy()))

    failed = [r for r in results if not r[1] <= args.tol]
    worst = max(results, key=lambda r: r[1])
    layers = ""
    if cfg["architecture"] == "lfm2":
        conv = [i for i, t in enumerate(cfg["layer_types"]) if t == "conv"]
        layers = ", conv layers %s, conv_L_cache %d, conv_bias %s" % (
            conv, cfg["conv_L_cache"], cfg["conv_bias"])
    print("%s: %s (heads %d, kv heads %d, head_dim %d, attention_bias %s, qk_norm %s, "
          "tied %s%s), %d tensors, loss trl-hpc %.8f oracle %.8f" %
          (os.path.basename(args.case), cfg["model_type"], cfg["num_attention_heads"],
           cfg["num_key_value_heads"], cfg.get("head_dim", 0), cfg["attention_bias"],
           cfg.get("qk_norm", False), cfg["tie_word_embeddings"], layers,
           len(results),
           float(np.reshape(tensors["out.loss"], ())), float(loss)))
    for name, metric, detail in results:
        print("  %-52s rel %.3e  (%s)%s" % (name, metric, detail,
                                              "  FAIL" if not metric <= args.tol else ""))
    print("  worst: %s rel %.3e (%s) tol %.0e" % (worst[0], worst[1], worst[2], args.tol))
    if failed:
        print("FAIL: %d of %d tensors exceed the tolerance" % (len(failed), len(results)))
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
