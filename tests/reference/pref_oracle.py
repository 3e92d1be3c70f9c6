#!/usr/bin/env python3
"""pref_oracle.py - one training step of trl-hpc's preference and reward methods against PyTorch.

Usage:
    pref_oracle.py build ROOT          writes the models, data and one run.yaml per case
                                       under ROOT, and prints "CASE RANKS" per line
    pref_oracle.py check CASE_DIR ...  compares what trl-hpc wrote in CASE_DIR/out
                                       with the oracle, case by case

build writes random tiny llama causal LMs in the Hugging Face folder layout
(ROOT/models/policy, a flatter policy_flat for WPO and a different
ROOT/models/ref, the reference of dpo and kto; tied embeddings, no
tokenizer.json so trl-hpc uses its byte tokenizer: id = UTF-8 byte, EOS 256
appended to every completion, pad 257), a LlamaForSequenceClassification
(ROOT/models/reward, a (1, C) score head), the data sets, and per case a
run.yaml for exactly one AdamW step with lr = 1, adam_epsilon = 1, no
clipping, no decay. At step 1 AdamW's bias-corrected update is
delta = -g / (|g| + 1), so the gradient trl-hpc took is g = -delta / (1 - |delta|)
with delta = exported weights - initial weights.

check recomputes that step in float64 from TRL's own formulas
(DPOTrainer._compute_loss, KTOTrainer._compute_loss with its KL rows,
ORPOTrainer.odds_ratio_loss with its NLL over the whole chosen sequence,
CPOTrainer.cpo_loss, RewardTrainer.compute_loss) on the forward pass of
torch_model.py, takes every gradient with autograd and compares: the step-1
loss and TRL's logged metrics in CASE_DIR/out/metrics.jsonl (relative 1e-4)
and every parameter's gradient (max |g_c - g_t| / max |g_t| per tensor <= 1e-4).
A global batch is split as trl-hpc splits it: micro-batch k = j * ranks + rank
(j the accumulation step) holds rows [k B, (k + 1) B) in file order; the loss
is the mean of the micro-batch losses (DDP and accumulation), and a metric is
gathered over the ranks of a micro-step and averaged over micro-steps (TRL's
log()).
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_oracle  # noqa: E402
import torch_model  # noqa: E402

DT = torch.float64
EOS, PAD = 256, 257
TOL = 1e-4

# Preference pairs: every pair's completions differ in length (LD-DPO).
PAIRS = [
    {"prompt": "2+3=", "chosen": "5", "rejected": "six"},
    {"prompt": "The sky is ", "chosen": "blue.", "rejected": "green!!"},
    {"prompt": "Q: cat? A:", "chosen": " meow meow", "rejected": " no"},
    {"prompt": "hi", "chosen": " there friend", "rejected": " bye"},
]
MARGINS = [0.5, -0.25, 1.0, 0.0]
# Unpaired rows for kto, mixed labels. With max_length 24 every row fits (the
# longest is 24 tokens) but row 2's KL row, its prompt with row 1's long
# completion (33 tokens), is cut, as TRL's collator cuts it.
UNPAIRED = [
    {"prompt": "Tell me a joke:", "completion": " no", "label": True},
    {"prompt": "x=", "completion": " a much longer answer", "label": False},
    {"prompt": "Once upon a", "completion": " time", "label": False},
    {"prompt": "Say it loud now:", "completion": " ok", "label": True},
]
KTO_MAX_LENGTH = 24

LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 258,
         "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
         "hidden_act": "silu", "max_position_embeddings": 64, "rms_norm_eps": 1e-6,
         "rope_theta": 10000.0, "attention_bias": False, "mlp_bias": False,
         "tie_word_embeddings": True, "eos_token_id": EOS, "pad_token_id": PAD,
         "torch_dtype": "float32", "transformers_version": "4.51.0"}
REWARD = dict(LLAMA, architectures=["LlamaForSequenceClassification"],
              id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0},
              tie_word_embeddings=False)

# Each case: name, ranks, and the run's YAML keys beyond the common ones
# (TRL's names, which the oracle reads too), except "model" (policy,
# policy_flat or reward; policy by default) and "data" (pairs, unpaired or
# margins; pairs by default).
STEP = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 1}
CASES = [
    ("dpo_sigmoid", 1, {"method": "dpo", "loss_type": "sigmoid", "beta": 0.1}),
    ("dpo_ipo", 1, {"method": "dpo", "loss_type": "ipo", "beta": 0.1}),
    ("dpo_hinge", 1, {"method": "dpo", "loss_type": "hinge", "beta": 0.1}),
    ("dpo_mpo", 1, {"method": "dpo", "loss_type": ["sigmoid", "bco_pair", "sft"],
                    "loss_weights": [0.8, 0.2, 1.0], "beta": 0.1}),
    ("dpo_wpo", 1, {"method": "dpo", "loss_type": "sigmoid", "use_weighting": True,
                    "model": "policy_flat"}),
    ("dpo_ld_alpha", 1, {"method": "dpo", "loss_type": "sigmoid", "ld_alpha": 0.5}),
    ("dpo_alpha_div", 1, {"method": "dpo", "loss_type": "sigmoid",
                          "f_divergence_type": "alpha_divergence",
                          "f_alpha_divergence_coef": 0.5}),
    ("dpo_aot", 1, {"method": "dpo", "loss_type": "aot", "label_smoothing": 0.1}),
    ("dpo_robust", 1, {"method": "dpo", "loss_type": "robust", "label_smoothing": 0.2}),
    ("dpo_precompute", 1, {"method": "dpo", "loss_type": "sigmoid",
                           "precompute_ref_log_probs": True}),
    ("kto", 1, {"method": "kto", "loss_type": "kto", "desirable_weight": 1.0,
                "undesirable_weight": 1.5, "max_length": KTO_MAX_LENGTH,
                "data": "unpaired"}),
    ("kto_paired", 1, {"method": "kto", "loss_type": "kto", "undesirable_weight": 1.5,
                       "gradient_accumulation_steps": 2}),
    ("bco", 1, {"method": "bco", "beta": 0.1, "gradient_accumulation_steps": 2}),
    ("orpo", 1, {"method": "orpo", "beta": 0.1}),
    ("cpo_sigmoid", 1, {"method": "cpo", "loss_type": "sigmoid", "beta": 0.1}),
    ("cpo_simpo", 1, {"method": "cpo", "loss_type": "simpo", "cpo_alpha": 0.0,
                      "beta": 2.0, "simpo_gamma": 0.5}),
    ("reward", 1, {"method": "reward", "center_rewards_coefficient": 0.01,
                   "model": "reward", "data": "margins"}),
    ("dpo_sigmoid_2ranks", 2, {"method": "dpo", "loss_type": "sigmoid",
                               "per_device_train_batch_size": 2}),
    ("dpo_sigmoid_zero3", 2, {"method": "dpo", "loss_type": "sigmoid",
                              "per_device_train_batch_size": 2, "zero_stage": 3,
                              "stage3_param_persistence_threshold": 0}),
]
ORACLE_ONLY = ("model", "data")


# --------------------------------------------------------------------- build


def random_model(cfg, seed, scale):
    """Random weights in Hugging Face names: norms around 1, the rest scale * N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    w = {}
    ncfg = torch_model.normalize_config(cfg)
    shapes = hf_oracle.param_shapes(ncfg)
    if "id2label" in cfg:
        shapes.pop("lm_head.weight", None)
        shapes["score.weight"] = (1, ncfg["hidden_size"])
    for n, shape in shapes.items():
        if "norm" in n:
            w[n] = 1.0 + 0.2 * torch.randn(shape, generator=g)
        else:
            w[n] = scale * torch.randn(shape, generator=g)
    return w


def write_model(d, cfg, w):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    hf_oracle.write_safetensors(os.path.join(d, "model.safetensors"), sorted(w.items()))


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def yaml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(yaml_value(x) for x in v) + "]"
    if isinstance(v, str):
        return json.dumps(v)
    return repr(v)


def cmd_build(args):
    root = os.path.abspath(args.root)
    # The reference is sharper than the policy (larger weights), so the
    # policy's log-probs of mismatched rows exceed the reference's and kto's
    # z0 = max(0, mean) is positive, not clamped.
    policy = random_model(LLAMA, 1, 0.3)
    write_model(os.path.join(root, "models", "policy"), LLAMA, policy)
    # WPO weighs a pair by exp(mean_t log(p_t / sum_v p_v^2)) of both
    # completions, about exp(-1.5 s^2) per completion for logits of spread s
    # (1.7 here): the weights would shrink the gradients to the float32
    # resolution of the weights. A final norm at 0.3 spreads the logits by
    # about 0.5 and keeps the product near 1/2.
    flat = dict(policy)
    flat["model.norm.weight"] = 0.3 * policy["model.norm.weight"]
    write_model(os.path.join(root, "models", "policy_flat"), LLAMA, flat)
    write_model(os.path.join(root, "models", "ref"), LLAMA, random_model(LLAMA, 2, 0.45))
    write_model(os.path.join(root, "models", "reward"), REWARD, random_model(REWARD, 3, 0.3))
    os.makedirs(os.path.join(root, "data"), exist_ok=True)
    write_jsonl(os.path.join(root, "data", "pairs.jsonl"), PAIRS)
    write_jsonl(os.path.join(root, "data", "unpaired.jsonl"), UNPAIRED)
    write_jsonl(os.path.join(root, "data", "margins.jsonl"),
                [dict(p, margin=m) for p, m in zip(PAIRS, MARGINS)])
    for name, ranks, keys in CASES:
        d = os.path.join(root, name)
        os.makedirs(d, exist_ok=True)
        model = keys.get("model", "policy")
        run = {"model_name_or_path": os.path.join(root, "models", model),
               "dataset_name": os.path.join(root, "data", keys.get("data", "pairs") + ".jsonl"),
               "output_dir": os.path.join(d, "out"), "max_length": 64,
               "learning_rate": 1.0, "adam_epsilon": 1.0, "weight_decay": 0.0,
               "max_grad_norm": 0.0, "lr_scheduler_type": "constant", "warmup_steps": 0,
               "max_steps": 1, "logging_steps": 1, "save_strategy": "no",
               "dataset_cache_dir": "none", "train_sampling_strategy": "sequential",
               "disable_tqdm": True, "seed": 1}
        run.update(STEP)
        if keys["method"] in ("dpo", "kto", "bco"):
            run["ref_model_name_or_path"] = os.path.join(root, "models", "ref")
        run.update({k: v for k, v in keys.items() if k not in ORACLE_ONLY})
        with open(os.path.join(d, "run.yaml"), "w") as f:
            for k, v in run.items():
                f.write("%s: %s\n" % (k, yaml_value(v)))
        with open(os.path.join(d, "case.json"), "w") as f:
            json.dump({"name": name, "ranks": ranks, "keys": keys, "run": run,
                       "root": root}, f, indent=1)
        print(name, ranks)
    return 0


# --------------------------------------------------------------------- model


def load_weights(d):
    tensors = hf_oracle.read_safetensors(os.path.join(d, "model.safetensors"))
    return {n: torch.from_numpy(a.astype(np.float64)) for n, (_, a) in tensors.items()}


def tokens(s):
    return list(s.encode("utf-8"))


def run_model(w, cfg, rows):
    """Logits (B, T, V) of rows [(ids, completion mask)], right-padded; padding
    (doc -1) sees only itself, so the real tokens see what they would alone."""
    T = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), T), PAD, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=DT)
    doc = torch.full((len(rows), T), -1, dtype=torch.long)
    for i, (r, m) in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = torch.tensor(m, dtype=DT)
        doc[i, :len(r)] = 0
    pos = torch.arange(T)[None].repeat(len(rows), 1)
    weights = dict(w)
    if "score.weight" in w:  # the score head is a (1, C) untied output layer
        weights["lm_head.weight"] = w["score.weight"]
    return torch_model.forward(weights, cfg, ids, pos, doc), ids, mask, doc


def shifted(logits, ids, mask):
    """Per-token log-probs (B, T-1) of logits[:, :-1] against ids[:, 1:],
    zero outside the mask, and the shifted mask."""
    lp = torch.log_softmax(logits[:, :-1], -1).gather(2, ids[:, 1:, None]).squeeze(2)
    m = mask[:, 1:]
    return lp * m, m


def row(prompt, completion, max_length=None):
    p, c = tokens(prompt), tokens(completion) + [EOS]
    ids, m = p + c, [0] * len(p) + [1] * len(c)
    if max_length is not None:
        ids, m = ids[:max_length], m[:max_length]
    return ids, m


# --------------------------------------------------------------------- methods


class Metrics:
    """TRL's logging: a value per micro-step (already gathered over ranks), then
    the mean over the micro-steps of the step."""

    def __init__(self):
        self.vals = {}

    def add(self, k, v):
        self.vals.setdefault(k, []).append(float(v))

    def means(self):
        return {k: sum(v) / len(v) for k, v in self.vals.items()}


def ld_logps(ptl, m, ld_alpha):
    if ld_alpha is None:
        return ptl.sum(1)
    comp_pos = m.cumsum(1)
    lens = m.sum(1)
    n = ptl.shape[0] // 2
    shared = torch.minimum(lens[:n], lens[n:]).repeat(2)
    shared_mask = (comp_pos > 0) & (comp_pos <= shared[:, None])
    tail_mask = comp_pos > shared[:, None]
    return (ptl * shared_mask).sum(1) + ld_alpha * (ptl * tail_mask).sum(1)


def dpo_micro(o, w, wr, cfg, pairs):
    """DPOTrainer._compute_loss on one micro-batch; returns (loss, per-rank stats)."""
    rows = [row(p["prompt"], p["chosen"]) for p in pairs] + \
           [row(p["prompt"], p["rejected"]) for p in pairs]
    n = len(pairs)
    beta, ls = o["beta"], o["label_smoothing"]
    ld = o["ld_alpha"] if o["ld_alpha"] != 1.0 else None
    logits, ids, mask, _ = run_model(w, cfg, rows)
    ptl, m = shifted(logits, ids, mask)
    logps = ld_logps(ptl, m, ld)
    pc, pr = logps[:n], logps[n:]
    with torch.no_grad():
        rlogits = run_model(wr, cfg, rows)[0]
        rptl, _ = shifted(rlogits, ids, mask)
        rlogps = ld_logps(rptl, m, ld)
    rc, rr = rlogps[:n], rlogps[n:]
    cl, rl = pc - rc, pr - rr
    fd = o["f_divergence_type"]
    if fd == "reverse_kl":
        cs, rs = cl, rl
    elif fd == "forward_kl":
        cs, rs = -torch.exp(-cl), -torch.exp(-rl)
    elif fd == "js_divergence":
        cs, rs = F.logsigmoid(cl), F.logsigmoid(rl)
    else:
        a = o["f_alpha_divergence_coef"]
        if abs(a - 1.0) < 1e-6:
            cs, rs = cl, rl
        else:
            cs = torch.exp(torch.clamp((a - 1.0) * cl, max=80.0)) / (a - 1.0)
            rs = torch.exp(torch.clamp((a - 1.0) * rl, max=80.0)) / (a - 1.0)
    d = cs - rs
    nc, nr = mask[:n].sum(1).clamp(min=1.0), mask[n:].sum(1).clamp(min=1.0)
    loss = 0.0
    for lt, lw in zip(o["loss_type"], o["loss_weights"]):
        if lt == "sigmoid":
            per = -F.logsigmoid(beta * d)
        elif lt == "hinge":
            per = torch.relu(1 - beta * d)
        elif lt == "ipo":
            per = (cs / nc - rs / nr - 1 / (2 * beta)) ** 2
        elif lt == "robust":
            per = (-(1 - ls) * F.logsigmoid(beta * d) + ls * F.logsigmoid(-beta * d)) / (1 - 2 * ls)
        elif lt == "bco_pair":
            per = -F.logsigmoid(beta * cs) - F.logsigmoid(-beta * rs)
        elif lt == "aot":
            x = torch.sort(pc - pr)[0] - torch.sort(rc - rr)[0]
            per = -F.logsigmoid(beta * x) * (1 - ls) - F.logsigmoid(-beta * x) * ls
        elif lt == "sft":
            keep = m[:n].bool()
            per = F.cross_entropy(logits[:n, :-1][keep], ids[:n, 1:][keep]).expand(n)
        else:
            raise ValueError(lt)
        if o["use_weighting"]:
            with torch.no_grad():
                sl = logits[:, :-1]
                log_denom = torch.logsumexp(2.0 * sl, -1) - 2.0 * torch.logsumexp(sl, -1)
                wts = torch.exp(((ptl - log_denom) * m).sum(1) / m.sum(1).clamp(min=1))
            per = per * wts[:n] * wts[n:]
        loss = loss + per.mean() * lw
    with torch.no_grad():
        sl, keep = logits[:, :-1], m.bool()
        ck = keep[:n]
        stats = {
            "rewards/chosen": (beta * cl).tolist(), "rewards/rejected": (beta * rl).tolist(),
            "logps/chosen": pc.tolist(), "logps/rejected": pr.tolist(),
            "mean_token_accuracy": [float(((sl[:n].argmax(-1) == ids[:n, 1:]) & ck).sum()),
                                    float(ck.sum())],
        }
        stats.update(token_stats(sl, keep, torch.arange(2 * n) < n))
    return loss, stats


def dpo_metrics(stats, met):
    """One micro-step's DPO metrics, gathered over the ranks' stats: the
    pair metrics and the token-weighted ones."""
    pair_metrics(stats, met)
    token_metrics(stats, met, ("entropy", "logits/chosen", "logits/rejected",
                               "mean_token_accuracy"))


def kto_micro(o, w, wr, cfg, exs, kl_completions):
    """KTOTrainer._compute_loss on one micro-batch of unpaired examples."""
    ml = o["max_length"]
    rows = [row(e["prompt"], e["completion"], ml) for e in exs]
    klrows = [row(e["prompt"], c, ml) for e, c in zip(exs, kl_completions)]
    beta = o["beta"]
    with torch.no_grad():
        klp = shifted(*run_model(w, cfg, klrows)[:3])[0].sum(1)
        klr = shifted(*run_model(wr, cfg, klrows)[:3])[0].sum(1)
        z0 = torch.clamp((klp - klr).mean(), min=0)
    logits, ids, mask, _ = run_model(w, cfg, rows)
    lp = shifted(logits, ids, mask)[0].sum(1)
    with torch.no_grad():
        ref = shifted(*run_model(wr, cfg, rows)[:3])[0].sum(1)
    lab = torch.tensor([bool(e["label"]) for e in exs])
    r = lp - ref
    if o["loss_type"][0] == "kto":
        cl = 1 - torch.sigmoid(beta * (r[lab] - z0))
        rl = 1 - torch.sigmoid(beta * (z0 - r[~lab]))
    else:
        cl = 1 - torch.sigmoid(beta * r[lab])
        rl = torch.sigmoid(beta * r[~lab])
    loss = torch.cat((o["desirable_weight"] * cl, o["undesirable_weight"] * rl)).mean()
    stats = {"z0": float(z0), "rc": (beta * r[lab]).tolist(), "rr": (beta * r[~lab]).tolist(),
             "lc": lp[lab].tolist(), "lr": lp[~lab].tolist(),
             "raw_kl": float((klp - klr).mean())}
    with torch.no_grad():
        sl, keep = logits[:, :-1], mask[:, 1:].bool()
        stats.update(token_stats(sl, keep, lab))
    return loss, stats


def bco_micro(o, w, wr, cfg, exs, running):
    """BCOTrainer.get_batch_loss_metrics (no UDM) on one micro-batch; running
    is [mean, var, count], updated in place with the micro-batch's rewards
    first (do_train), as RunningMoments.update does on one rank."""
    ml = o["max_length"]
    rows = [row(e["prompt"], e["completion"], ml) for e in exs]
    beta = o["beta"]
    logits, ids, mask, _ = run_model(w, cfg, rows)
    lp = shifted(logits, ids, mask)[0].sum(1)
    with torch.no_grad():
        ref = shifted(*run_model(wr, cfg, rows)[:3])[0].sum(1)
    lab = torch.tensor([bool(e["label"]) for e in exs])
    r = beta * (lp - ref)
    chosen, rejected = r[lab], r[~lab]
    xs = torch.cat((chosen, rejected)).detach()
    xs_var, xs_mean = torch.var_mean(xs, unbiased=False)
    mean, var, count = running
    d = float(xs_mean) - mean
    tot = count + xs.numel()
    old = var * count + d * d * count * xs.numel() / tot
    running[:] = [mean + d * xs.numel() / tot, (old + float(xs_var) * xs.numel()) / tot, tot]
    delta = running[0]
    loss = torch.cat((-F.logsigmoid(chosen - delta), -F.logsigmoid(-(rejected - delta)))).mean()
    stats = {"delta": delta, "rc": chosen.tolist(), "rr": rejected.tolist(),
             "lc": lp[lab].tolist(), "lr": lp[~lab].tolist()}
    with torch.no_grad():
        sl, keep = logits[:, :-1], mask[:, 1:].bool()
        stats.update(token_stats(sl, keep, lab))
    return loss, stats


def bco_metrics(stats, met):
    met.add("delta", stats[0]["delta"])
    nc = sum(len(s["rc"]) for s in stats)
    nr = sum(len(s["rr"]) for s in stats)
    if nc:
        met.add("rewards/chosen", sum(sum(s["rc"]) for s in stats) / nc)
        met.add("logps/chosen", sum(sum(s["lc"]) for s in stats) / nc)
        token_metrics(stats, met, ("logits/chosen",))
    if nr:
        met.add("rewards/rejected", sum(sum(s["rr"]) for s in stats) / nr)
        met.add("logps/rejected", sum(sum(s["lr"]) for s in stats) / nr)
        token_metrics(stats, met, ("logits/rejected",))


def token_stats(sl, keep, first):
    """Token-weighted [sum, count] of the entropy over every completion token
    and of the vocabulary-mean logit over the rows selected by first (chosen)
    and the others (rejected): TRL's entropy and logits/* metrics."""
    ent = -(torch.softmax(sl, -1) * torch.log_softmax(sl, -1)).sum(-1)
    kc, kr = keep[first], keep[~first]
    return {"entropy": [float(ent[keep].sum()), float(keep.sum())],
            "logits/chosen": [float(sl[first][kc].mean(-1).sum()), float(kc.sum())],
            "logits/rejected": [float(sl[~first][kr].mean(-1).sum()), float(kr.sum())]}


def token_metrics(stats, met, keys):
    for k in keys:
        met.add(k, sum(s[k][0] for s in stats) / sum(s[k][1] for s in stats))


def kto_metrics(stats, met):
    met.add("kl", max(0.0, sum(s["raw_kl"] for s in stats) / len(stats)))
    nc = sum(len(s["rc"]) for s in stats)
    nr = sum(len(s["rr"]) for s in stats)
    if nc:
        met.add("rewards/chosen", sum(sum(s["rc"]) for s in stats) / nc)
        met.add("logps/chosen", sum(sum(s["lc"]) for s in stats) / nc)
    if nr:
        met.add("rewards/rejected", sum(sum(s["rr"]) for s in stats) / nr)
        met.add("logps/rejected", sum(sum(s["lr"]) for s in stats) / nr)
    if nc and nr:
        met.add("rewards/margins",
                met.vals["rewards/chosen"][-1] - met.vals["rewards/rejected"][-1])
    token_metrics(stats, met, ("entropy",) + (("logits/chosen",) if nc else ()) +
                  (("logits/rejected",) if nr else ()))


def pair_logps(w, cfg, pairs, average):
    rows = [row(p["prompt"], p["chosen"]) for p in pairs] + \
           [row(p["prompt"], p["rejected"]) for p in pairs]
    logits, ids, mask, doc = run_model(w, cfg, rows)
    ptl, m = shifted(logits, ids, mask)
    lp = ptl.sum(1) / (m.sum(1) if average else 1.0)
    return logits, ids, mask, doc, lp


def orpo_micro(o, w, wr, cfg, pairs):
    """ORPOTrainer: average completion log-probs; the NLL over the chosen rows'
    whole sequences (prompt and completion, labels = input_ids where attended)."""
    n = len(pairs)
    logits, ids, mask, doc, lp = pair_logps(w, cfg, pairs, True)
    ac, ar = lp[:n], lp[n:]
    attended = (doc[:n, 1:] >= 0)
    nll = F.cross_entropy(logits[:n, :-1][attended], ids[:n, 1:][attended])
    log_odds = (ac - ar) - (torch.log(-torch.expm1(ac)) - torch.log(-torch.expm1(ar)))
    ratio = F.logsigmoid(log_odds)
    loss = nll - (o["beta"] * ratio).mean()
    beta = o["beta"]
    stats = {"rewards/chosen": (beta * ac).tolist(), "rewards/rejected": (beta * ar).tolist(),
             "logps/chosen": ac.tolist(), "logps/rejected": ar.tolist(),
             "nll_loss": [float(nll)], "log_odds_ratio": [float(ratio.mean())],
             "log_odds_chosen": [float(log_odds.mean())]}
    return loss, stats


def cpo_micro(o, w, wr, cfg, pairs):
    """CPOTrainer.cpo_loss + cpo_alpha * NLL of the chosen completions."""
    n = len(pairs)
    lt, beta, ls = o["loss_type"][0], o["beta"], o["label_smoothing"]
    logits, ids, mask, doc, lp = pair_logps(w, cfg, pairs, lt in ("ipo", "simpo"))
    pc, pr = lp[:n], lp[n:]
    keep = mask[:n, 1:].bool()
    if o["cpo_alpha"] == 0:
        nll = torch.zeros((), dtype=DT)
    else:
        nll = F.cross_entropy(logits[:n, :-1][keep], ids[:n, 1:][keep])
    if o["alpha"] != 0.0:
        a = o["alpha"]
        rwc, rwr = (1 - torch.exp(pc).pow(-a)) / a, (1 - torch.exp(pr).pow(-a)) / a
        z = rwc - rwr
    else:
        rwc, rwr = pc, pr
        z = pc - pr
    if lt == "simpo":
        z = z - o["simpo_gamma"] / beta
    if lt in ("sigmoid", "simpo"):
        per = -F.logsigmoid(beta * z) * (1 - ls) - F.logsigmoid(-beta * z) * ls
    elif lt == "hinge":
        per = torch.relu(1 - beta * z)
    else:
        per = (z - 1 / (2 * beta)) ** 2
    loss = per.mean() + o["cpo_alpha"] * nll
    stats = {"rewards/chosen": (beta * rwc).tolist(), "rewards/rejected": (beta * rwr).tolist(),
             "logps/chosen": pc.tolist(), "logps/rejected": pr.tolist(),
             "nll_loss": [float(nll)]}
    return loss, stats


def pair_metrics(stats, met):
    cat = lambda k: torch.tensor(sum((s[k] for s in stats), []), dtype=DT)  # noqa: E731
    c, r = cat("rewards/chosen"), cat("rewards/rejected")
    met.add("rewards/chosen", c.mean())
    met.add("rewards/rejected", r.mean())
    met.add("rewards/accuracies", (c > r).to(DT).mean())
    met.add("rewards/margins", (c - r).mean())
    for k in ("logps/chosen", "logps/rejected", "nll_loss", "log_odds_ratio",
              "log_odds_chosen"):
        if k in stats[0]:
            met.add(k, cat(k).mean())


def reward_micro(o, w, wr, cfg, pairs):
    """RewardTrainer.compute_loss: the score at each row's last token."""
    n = len(pairs)
    rows = [(tokens(p["prompt"] + p["chosen"]) + [EOS], None) for p in pairs] + \
           [(tokens(p["prompt"] + p["rejected"]) + [EOS], None) for p in pairs]
    rows = [(ids, [1] * len(ids)) for ids, _ in rows]
    logits, ids, mask, doc = run_model(w, cfg, rows)
    last = torch.tensor([len(r) - 1 for r, _ in rows])
    scores = logits[torch.arange(2 * n), last, 0]
    rc, rr = scores[:n], scores[n:]
    margin = torch.tensor([p["margin"] for p in pairs], dtype=DT)
    loss = -F.logsigmoid(rc - rr - margin).mean()
    if o["center_rewards_coefficient"]:
        loss = loss + o["center_rewards_coefficient"] * torch.mean((rc + rr) ** 2)
    stats = {"scores": scores.tolist(), "acc": [float((rc > rr).to(DT).mean())],
             "margin": [float((rc - rr).mean())]}
    return loss, stats


def reward_metrics(stats, met):
    s = [x for st in stats for x in st["scores"]]
    met.add("min_reward", min(s))
    met.add("mean_reward", sum(s) / len(s))
    met.add("max_reward", max(s))
    met.add("accuracy", sum(st["acc"][0] for st in stats) / len(stats))
    met.add("margin", sum(st["margin"][0] for st in stats) / len(stats))


DEFAULTS = {"beta": 0.1, "loss_type": None, "loss_weights": None, "label_smoothing": 0.0,
            "use_weighting": False, "ld_alpha": 1.0, "f_divergence_type": "reverse_kl",
            "f_alpha_divergence_coef": 0.5, "desirable_weight": 1.0,
            "undesirable_weight": 1.0, "cpo_alpha": 1.0, "simpo_gamma": 0.5, "alpha": 0.0,
            "center_rewards_coefficient": 0.0, "max_length": 64,
            "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1}
DEFAULT_LOSS = {"dpo": "sigmoid", "kto": "kto", "cpo": "sigmoid"}


def unpair(pairs, order="trl"):
    """TRL's unpair_preference_dataset: a batched Dataset.map (1000 rows a
    batch) whose _unpair_row returns the batch's chosen completions (label
    True) followed by its rejected ones (False), so 4 pairs become
    c0 c1 c2 c3 r0 r1 r2 r3. order "interleaved" gives c0 r0 c1 r1 ... instead
    (only to name the difference when a check fails)."""
    out = []
    for s in range(0, len(pairs), 1000):
        batch = pairs[s:s + 1000]
        c = [{"prompt": p["prompt"], "completion": p["chosen"], "label": True} for p in batch]
        r = [{"prompt": p["prompt"], "completion": p["rejected"], "label": False}
             for p in batch]
        out += [x for pair in zip(c, r) for x in pair] if order == "interleaved" else c + r
    return out


def oracle(case, unpair_order="trl"):
    """(loss, {name: gradient}, metrics, initial weights, extra) of the case's
    one step in float64."""
    keys, ranks, root = case["keys"], case["ranks"], case["root"]
    method = keys["method"]
    o = dict(DEFAULTS)
    o.update({k: v for k, v in case["run"].items() if k in DEFAULTS})
    lt = o["loss_type"] or DEFAULT_LOSS.get(method)
    o["loss_type"] = lt if isinstance(lt, list) else [lt]
    o["loss_weights"] = o["loss_weights"] or [1.0] * len(o["loss_type"])
    model = keys.get("model", "policy")
    cfg = json.load(open(os.path.join(root, "models", model, "config.json")))
    w0 = load_weights(os.path.join(root, "models", model))
    w = {n: t.clone().requires_grad_(True) for n, t in w0.items()}
    wr = (load_weights(os.path.join(root, "models", "ref"))
          if method in ("dpo", "kto", "bco") else None)
    data = keys.get("data", "pairs")
    rows = {"pairs": PAIRS, "unpaired": UNPAIRED,
            "margins": [dict(p, margin=m) for p, m in zip(PAIRS, MARGINS)]}[data]
    if method in ("kto", "bco") and data == "pairs":
        rows = unpair(rows, unpair_order)
    B, GA = o["per_device_train_batch_size"], o["gradient_accumulation_steps"]
    assert len(rows) == B * GA * ranks, "the data must fill exactly one step"
    micro = {"dpo": dpo_micro, "kto": kto_micro, "orpo": orpo_micro, "cpo": cpo_micro,
             "reward": reward_micro, "bco": bco_micro}[method]
    metrics_of = {"dpo": dpo_metrics, "kto": kto_metrics, "orpo": pair_metrics,
                  "cpo": pair_metrics, "reward": reward_metrics, "bco": bco_metrics}[method]
    running = [0.0, 1.0, 1e-24]  # RunningMoments' initial state
    if method == "kto":
        # TRL's KL completions: rotate by one within each chunk of
        # per_device_train_batch_size rows in file order.
        comp = [r["completion"] for r in rows]
        kl = []
        for s in range(0, len(comp), B):
            chunk = comp[s:s + B]
            kl += chunk[-1:] + chunk[:-1]
    met = Metrics()
    total = 0.0
    extra = {}
    for j in range(GA):
        stats = []
        for rk in range(ranks):
            k = j * ranks + rk
            part = rows[k * B:(k + 1) * B]
            if method == "kto":
                loss, st = micro(o, w, wr, cfg, part, kl[k * B:(k + 1) * B])
                extra.setdefault("z0", []).append(st["z0"])
            elif method == "bco":
                assert ranks == 1, "the bco oracle updates the moments on one rank"
                loss, st = micro(o, w, wr, cfg, part, running)
            else:
                loss, st = micro(o, w, wr, cfg, part)
            total = total + loss / (GA * ranks)
            stats.append(st)
        metrics_of(stats, met)
    total.backward()
    grads = {n: t.grad.detach() for n, t in w.items()}
    out = met.means()
    out["grad_norm"] = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
    return float(total), grads, out, w0, extra


# --------------------------------------------------------------------- check


def step1(path):
    for line in open(path):
        r = json.loads(line)
        if r.get("step") == 1 and "loss" in r:
            return r
    return None


def rel(a, b, floor):
    """Relative difference of a logged value a from the oracle's b, past the
    half unit of the sixth decimal that metrics.jsonl prints."""
    return max(0.0, abs(a - b) - 5e-7) / max(abs(b), floor)


def check_case(d):
    case = json.load(open(os.path.join(d, "case.json")))
    name = case["name"]
    out = os.path.join(d, "out")
    problems = []
    got = step1(os.path.join(out, "metrics.jsonl")) if os.path.exists(
        os.path.join(out, "metrics.jsonl")) else None
    if got is None:
        print("FAIL %s: no step-1 line with a loss in %s/metrics.jsonl" % (name, out))
        return False
    loss, grads, mets, w0, extra = oracle(case)
    if "z0" in extra and not all(z > 0 for z in extra["z0"]):
        problems.append("the oracle's z0 %s is clamped at 0: the KL term is not exercised"
                        % extra["z0"])
    worst_m = rel(got["loss"], loss, 1e-3)
    if worst_m > TOL:
        problems.append("loss %.8g, oracle %.8g (rel %.2e)" % (got["loss"], loss, worst_m))
        if case["keys"]["method"] == "kto" and case["keys"].get("data", "pairs") == "pairs":
            alt = oracle(case, "interleaved")[0]
            problems.append("(unpaired as c0 r0 c1 r1 ... instead of TRL's c0 c1 ... r0 r1 ... "
                            "the loss would be %.8g, rel %.2e)" %
                            (alt, rel(got["loss"], alt, 1e-3)))
    checked = ["loss"]
    for k, v in sorted(mets.items()):
        if k not in got:
            problems.append("metric %s is not logged (oracle %.6g)" % (k, v))
            continue
        e = rel(got[k], v, 1e-2)
        worst_m = max(worst_m, e)
        checked.append(k)
        if e > TOL:
            problems.append("%s %.8g, oracle %.8g (rel %.2e)" % (k, got[k], v, e))
    w1 = load_weights(out)
    worst_g, bad = 0.0, []
    if sorted(w1) != sorted(grads):
        problems.append("the exported tensors differ from the model's: %s" %
                        sorted(set(w1) ^ set(grads)))
    for n in sorted(grads):
        if n not in w1:
            continue
        delta = w1[n] - w0[n]
        gc = -delta / (1.0 - delta.abs())
        gt = grads[n]
        scale = float(gt.abs().max())
        e = float((gc - gt).abs().max()) / max(scale, 1e-30)
        worst_g = max(worst_g, e)
        if not (e <= TOL):
            bad.append((e, "gradient of %s: max |diff| %.3e, max |g| %.3e (rel %.2e)" %
                        (n, float((gc - gt).abs().max()), scale, e)))
    bad.sort(reverse=True)
    problems += [b for _, b in bad[:3]]
    if len(bad) > 3:
        problems.append("... and %d more gradients differ by more than %.0e" %
                        (len(bad) - 3, TOL))
    status = "PASS" if not problems else "FAIL"
    print("%-20s %s  loss %.6f; %d metrics rel %.1e; %d gradients rel %.1e" %
          (name, status, loss, len(checked), worst_m, len(grads), worst_g))
    for p in problems:
        print("    " + p)
    return not problems


def cmd_check(args):
    ok = True
    for d in args.case:
        ok = check_case(d) and ok
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("build")
    p.add_argument("root")
    p = sub.add_parser("check")
    p.add_argument("case", nargs="+")
    args = ap.parse_args()
    return {"build": cmd_build, "check": cmd_check}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
