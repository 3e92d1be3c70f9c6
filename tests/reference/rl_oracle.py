#!/usr/bin/env python3
"""rl_oracle.py - the PyTorch oracle for src/rl_losses.c.

Builds a fixed set of deterministic input cases and evaluates each the way
TRL's online trainers do, in float64 with autograd for every gradient:
GRPOTrainer (reward combination, advantages with NaN rewards, the vLLM
importance-sampling correction, the entropy-quantile mask and _compute_loss
with its four aggregations and clip metrics), RLOOTrainer (leave-one-out
advantages and the sequence-level loss) and the experimental PPOTrainer
(k1/k3, GAE with TRL's padding masks, masked_whiten, the clipped policy and
value losses). The C code is never called: tests/test_rl_losses.c compares
its results with the file this writes.

    rl_oracle.py --out tests/data/rl_golden.json
    rl_oracle.py --compare tests/data/rl_golden.json NEW.json

The golden file is {"cases": [...]}, one case per line, each with "kind",
"name", "options" (TRL's config names), "inputs" and "expected". Per-token
arrays are (n, T) nested lists. JSON has no NaN or infinity: they are written
as null (a NaN reward is TRL's None). Inputs are float32 values (the C code
takes float log-probs), evaluated here in float64; so is the entropy
quantile, which TRL takes of float32 entropies. Positions outside the
masks hold junk, which TRL overwrites (INVALID_LOGPROB, masked_fill) or
multiplies by 0, so the C code must ignore it.
"""
import math
import os
import random
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import oracle_io  # noqa: E402

DT = torch.float64
SEED = 20260725
INVALID_LOGPROB = 1.0


def f32(x):
    """x rounded to the nearest float32, as a Python float."""
    return struct.unpack("f", struct.pack("f", x))[0]


def t(x, grad=False):
    return torch.tensor(x, dtype=DT, requires_grad=grad)


def opt_t(x):
    """A tensor with NaN for None (nested lists)."""
    def conv(v):
        if isinstance(v, list):
            return [conv(u) for u in v]
        return float("nan") if v is None else v
    return t(conv(x))


def clean(x):
    """NaN and infinities as None, recursively, for JSON."""
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def nanstd(x, dim=None, keepdim=False):
    """TRL's nanstd: Bessel-corrected, NaN with fewer than two values."""
    if dim is None:
        mean = torch.nanmean(x)
        var = torch.nanmean((x - mean) ** 2)
        count = torch.sum(~torch.isnan(x))
    else:
        mean = torch.nanmean(x, dim=dim, keepdim=True)
        var = torch.nanmean((x - mean) ** 2, dim=dim, keepdim=True)
        count = torch.sum(~torch.isnan(x), dim=dim, keepdim=True)
    corr = torch.where(count > 1, count / (count - 1), torch.full_like(var, float("nan")))
    std = torch.sqrt(var * corr)
    if dim is not None and not keepdim:
        std = std.squeeze(dim)
    return std


def nanmin(x):
    x = x[~torch.isnan(x)]
    return x.min().item() if x.numel() else float("nan")


def nanmax(x):
    x = x[~torch.isnan(x)]
    return x.max().item() if x.numel() else float("nan")


def grad_of(x):
    return x.grad.tolist() if x.grad is not None else torch.zeros_like(x).tolist()


# ------------------------------------------------------------ rewards


def combine_oracle(opt, inp):
    r = opt_t(inp["r"])
    w = t(inp["w"])
    unscorable = torch.isnan(r).all(dim=1)
    out = (r * w.unsqueeze(0)).nansum(dim=1)
    out[unscorable] = float("nan")
    return {"out": out.tolist()}


def grpo_adv_oracle(opt, inp):
    """GRPOTrainer._generate_and_score_completions, sum_then_normalize."""
    rewards = opt_t(inp["r"])
    G, scale = opt["num_generations"], opt["scale_rewards"]
    mean = torch.nanmean(rewards.view(-1, G), dim=1).repeat_interleave(G, dim=0)
    if scale in ("group", "none"):
        if G > 1:
            std = nanstd(rewards.view(-1, G), dim=1).repeat_interleave(G, dim=0)
        else:
            std = torch.zeros_like(rewards)
    else:
        std = nanstd(rewards).expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
    adv = rewards - mean
    if scale != "none":
        adv = adv / (std + 1e-4)
    adv = torch.nan_to_num(adv, nan=0.0)
    return {"adv": adv.tolist(), "group_std": std.tolist()}


def rloo_adv_oracle(opt, inp):
    """RLOOTrainer._generate_and_score_completions (rewards given)."""
    rewards = opt_t(inp["r"])
    G = opt["num_generations"]
    grouped = rewards.view(-1, G)
    counts = (~torch.isnan(grouped)).sum(dim=1, keepdim=True)
    gsum = torch.nansum(grouped, dim=1, keepdim=True)
    if G > 1:
        baselines = ((gsum - grouped) / (counts - 1)).view(-1)
        adv = rewards - baselines
    else:
        adv = torch.zeros_like(rewards)
    if opt["normalize_advantages"]:
        adv = (adv - torch.nanmean(adv)) / (nanstd(adv) + 1e-4)
    adv = torch.nan_to_num(adv, nan=0.0)
    return {"adv": adv.tolist()}


# ------------------------------------------------------ importance sampling


def is_ratio(opt, old, samp, mask):
    """The vLLM importance-sampling ratio, (B, T) or (B, 1), and its metrics."""
    mode = opt["vllm_importance_sampling_mode"]
    cmin, cmax = opt["vllm_importance_sampling_clip_min"], opt["vllm_importance_sampling_clip_max"]
    diff = (old - samp) * mask
    seq = mode in ("sequence_mask", "sequence_truncate")
    ratio = torch.exp(diff.sum(dim=-1, keepdim=True) if seq else diff)
    if mode in ("sequence_truncate", "token_truncate"):
        ratio = torch.clamp(ratio, min=cmin, max=cmax)
    else:
        lo = cmin if cmin is not None else -math.inf
        hi = cmax if cmax is not None else math.inf
        ratio = ratio.masked_fill((ratio < lo) | (ratio > hi), 0.0)
    bmask = mask.bool()
    delta = torch.abs(old - samp)[bmask]
    flat = ratio.flatten() if seq else ratio[bmask]
    stats = {
        "logp_diff_mean": delta.mean().item() if delta.numel() else 0.0,
        "logp_diff_max": delta.max().item() if delta.numel() else 0.0,
        "ratio_min": flat.min().item() if flat.numel() else 0.0,
        "ratio_mean": flat.mean().item() if flat.numel() else 0.0,
        "ratio_max": flat.max().item() if flat.numel() else 0.0,
    }
    return ratio, stats


def is_oracle(opt, inp):
    mask = t(inp["mask"])
    ratio, stats = is_ratio(opt, t(inp["old_lp"]), t(inp["samp_lp"]), mask)
    w = (ratio * torch.ones_like(mask)) * mask  # the C code writes 0 off the mask
    return {"w": w.tolist(), **stats}


def quantile_oracle(opt, inp):
    return {"value": torch.quantile(t(inp["v"]), opt["q"]).item()}


def entropy_mask(entropies, mask, threshold):
    """GRPOTrainer.get_high_entropy_mask on one rank."""
    local = entropies[mask.bool()]
    if local.numel() == 0:
        return torch.zeros_like(entropies, dtype=torch.bool)
    thr = torch.quantile(local, threshold)
    return ((entropies * mask) >= thr) & mask.bool()


# --------------------------------------------------------------------- GRPO


def grpo_oracle(opt, inp):
    """GRPOTrainer._compute_loss for grpo/bnpo/dr_grpo/dapo on one rank."""
    lp = t(inp["lp"], True)
    mask = t(inp["mask"])
    old = lp.detach() if inp["old_lp"] is None else t(inp["old_lp"])
    adv = t(inp["adv"]).unsqueeze(1)
    beta, loss_type = opt["beta"], opt["loss_type"]
    el, eh, delta = opt["epsilon"], opt["epsilon_high"], opt["delta"]
    out = {}

    is_w = None
    if "samp_lp" in inp:
        is_w, is_stats = is_ratio(opt, old, t(inp["samp_lp"]), mask)
        # The weights reach the loss as float32, as in TRL's float32 tensors
        # and in the C code's w.
        is_w = is_w.float().double()
    ent_mask = None
    if "entropies" in inp:
        ent_mask = entropy_mask(t(inp["entropies"]), mask, 1 - opt["top_entropy_quantile"])

    log_ratio = lp - old
    if opt["importance_sampling_level"] == "token":
        liw = log_ratio
    else:
        liw = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    coef_1 = torch.exp(liw)
    if beta != 0.0:
        ref = t(inp["ref_lp"])
        per_token_kl = torch.exp(ref - lp) - (ref - lp) - 1
    coef_2 = torch.clamp(coef_1, 1 - el, 1 + eh)
    if delta is not None:
        coef_1 = torch.clamp(coef_1, max=delta)
    per_token_loss = -torch.min(coef_1 * adv, coef_2 * adv)
    if ent_mask is not None:
        per_token_loss = per_token_loss * ent_mask
    if is_w is not None:
        per_token_loss = per_token_loss * is_w
    if beta != 0.0:
        per_token_loss = per_token_loss + beta * per_token_kl

    ga = opt["gradient_accumulation_steps"]
    if loss_type == "grpo":
        loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / ga
    elif loss_type == "bnpo":
        loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0) / ga
    elif loss_type == "dr_grpo":
        loss = (per_token_loss * mask).sum() / (per_token_loss.size(0) * opt["max_completion_length"]) / ga
    elif loss_type == "dapo":
        norm = t(inp["num_items_in_batch"]).clamp(min=1.0) / opt["num_processes"]
        loss = (per_token_loss * mask).sum() / norm
    else:
        raise ValueError(loss_type)
    loss.backward()
    out["loss"] = loss.item()
    out["dlp"] = grad_of(lp)

    # The per-rank sums behind TRL's metrics.
    def rank_sum(x):
        if x.shape[1] == 1:
            return x.sum().item(), float(x.shape[0])
        return (x * mask).sum().item(), mask.sum().item()

    def seq_mean(x):
        return x.squeeze(1) if x.shape[1] == 1 else (x * mask).sum(-1) / mask.sum(-1)

    with torch.no_grad():
        out["tokens"] = mask.sum().item()
        out["kl"] = (per_token_kl * mask).sum().item() if beta != 0.0 else 0.0
        low = ((coef_1 < 1 - el) & (adv < 0)).to(DT)
        high = ((coef_1 > 1 + eh) & (adv > 0)).to(DT)
        region = (((coef_1 < 1 - el) & (adv < 0)) | ((coef_1 > 1 + eh) & (adv > 0))).to(DT)
        out["low_clipped"], out["clip_count"] = rank_sum(low)
        out["high_clipped"], _ = rank_sum(high)
        out["region_clipped"], _ = rank_sum(region)
        out["low_min"] = nanmin(seq_mean(low))
        out["high_max"] = nanmax(seq_mean(high))
    if is_w is not None:
        out["is"] = is_stats
    return out


# --------------------------------------------------------------------- RLOO


def rloo_oracle(opt, inp):
    """RLOOTrainer._compute_loss (the Trainer then divides by GA)."""
    lp = t(inp["lp"], True)
    mask = t(inp["mask"])
    old_logps = (t(inp["old_lp"]) * mask).sum(1)
    adv = t(inp["adv"])
    el, eh = opt["epsilon"], opt["epsilon_high"]
    logps = (lp * mask).sum(1)
    coef_1 = torch.exp(logps - old_logps)
    coef_2 = torch.clamp(coef_1, 1 - el, 1 + eh)
    loss = -torch.min(coef_1 * adv, coef_2 * adv).mean() / opt["gradient_accumulation_steps"]
    loss.backward()
    low = (coef_1 < 1 - el) & (adv < 0)
    high = (coef_1 > 1 + eh) & (adv > 0)
    return {
        "loss": loss.item(),
        "dlp": grad_of(lp),
        "low_mean": low.to(DT).nanmean().item(),
        "high_mean": high.to(DT).nanmean().item(),
        "region_mean": (low | high).to(DT).nanmean().item(),
    }


# ---------------------------------------------------------------------- PPO


def kl_oracle(opt, inp):
    lp, ref = t(inp["lp"]), t(inp["ref"])
    logr = ref - lp
    return {"k1": (-logr).tolist(), "k3": ((logr.exp() - 1) - logr).tolist()}


def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum()


def masked_whiten(x, mask, shift_mean=True):
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask) * (mask.sum() / (mask.sum() - 1))
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out


def whiten_oracle(opt, inp):
    x, mask = t(inp["x"]), t(inp["mask"])
    out = masked_whiten(x, mask, opt["shift_mean"]).masked_fill(~mask.bool(), 0.0)
    return {"out": out.tolist()}


def ppo_masks(seqlen, T):
    idx = torch.arange(T).repeat(len(seqlen), 1)
    L = torch.tensor(seqlen)
    return idx > L.unsqueeze(1), idx > (L + 1).unsqueeze(1)


def gae_oracle(opt, inp):
    """PPOTrainer's rollout steps 4-6: rewards from the KL and the score,
    optional whiten_rewards, GAE, returns, whitened advantages."""
    T = len(inp["lp"][0])
    seqlen = inp["seqlen"]
    padding_mask, padding_mask_p1 = ppo_masks(seqlen, T)
    lp = t(inp["lp"]).masked_fill(padding_mask, INVALID_LOGPROB)
    ref = t(inp["ref"]).masked_fill(padding_mask, INVALID_LOGPROB)
    values = t(inp["values"]).masked_fill(padding_mask_p1, 0)
    logr = ref - lp
    kl = -logr if opt["kl_estimator"] == "k1" else (logr.exp() - 1) - logr
    rewards = -opt["kl_coef"] * kl
    L1 = torch.tensor(seqlen) + 1
    end = torch.where(L1 < T, L1, torch.tensor(seqlen))
    rewards[torch.arange(len(seqlen)), end] += t(inp["scores"])
    raw = rewards.clone()
    if opt["whiten_rewards"]:
        rewards = masked_whiten(rewards, ~padding_mask_p1, shift_mean=False)
        rewards = rewards.masked_fill(padding_mask_p1, 0)
    gamma, lam = opt["gamma"], opt["lam"]
    last, rev = 0, []
    for k in reversed(range(T)):
        nextv = values[:, k + 1] if k < T - 1 else 0.0
        d = rewards[:, k] + gamma * nextv - values[:, k]
        last = d + gamma * lam * last
        rev.append(last)
    adv = torch.stack(rev[::-1], axis=1)
    ret = adv + values
    white = masked_whiten(adv, ~padding_mask).masked_fill(padding_mask, 0)
    return {"rewards_raw": raw.tolist(), "rewards": rewards.tolist(), "adv": adv.tolist(),
            "ret": ret.tolist(),
            "adv_whitened": white.tolist()}


def ppo_policy_oracle(opt, inp):
    T = len(inp["lp"][0])
    padding_mask, _ = ppo_masks(inp["seqlen"], T)
    lp_in = t(inp["lp"], True)
    lp = torch.masked_fill(lp_in, padding_mask, INVALID_LOGPROB)
    old = t(inp["old_lp"]).masked_fill(padding_mask, INVALID_LOGPROB)
    adv = t(inp["adv"]).masked_fill(padding_mask, 0)
    c = opt["cliprange"]
    diff = lp - old
    ratio = torch.exp(diff)
    pg1 = -adv * ratio
    pg2 = -adv * torch.clamp(ratio, 1.0 - c, 1.0 + c)
    pg = masked_mean(torch.max(pg1, pg2), ~padding_mask)
    (pg * opt["scale"]).backward()
    with torch.no_grad():
        return {"loss": pg.item(), "dlp": grad_of(lp_in),
                "clipfrac": masked_mean((pg2 > pg1).to(DT), ~padding_mask).item(),
                "approxkl": (0.5 * (diff ** 2).mean()).item(), "ratio_mean": ratio.mean().item()}


def ppo_value_oracle(opt, inp):
    T = len(inp["v"][0])
    _, padding_mask_p1 = ppo_masks(inp["seqlen"], T)
    v_in = t(inp["v"], True)
    v = torch.masked_fill(v_in, padding_mask_p1, 0)
    old = t(inp["old_v"]).masked_fill(padding_mask_p1, 0)
    ret = t(inp["ret"])
    c = opt["cliprange_value"]
    vc = torch.clamp(v, old - c, old + c)
    l1, l2 = torch.square(v - ret), torch.square(vc - ret)
    vf = 0.5 * masked_mean(torch.max(l1, l2), ~padding_mask_p1)
    (vf * opt["scale"]).backward()
    return {"loss": vf.item(), "dv": grad_of(v_in),
            "clipfrac": masked_mean((l2 > l1).to(DT), ~padding_mask_p1).item()}


# -------------------------------------------------------------------- cases


class Gen:
    def __init__(self, seed):
        self.rng = random.Random(seed)

    def u(self, lo, hi):
        return f32(self.rng.uniform(lo, hi))

    def g(self, s=1.0):
        return f32(self.rng.gauss(0.0, s))

    def lengths(self, n, T, empty=False):
        """n completion lengths in 1..T, one of them T, one 0 when empty."""
        ls = [self.rng.randint(1, T) for _ in range(n)]
        ls[self.rng.randrange(n)] = T
        if empty:
            ls[(ls.index(T) + 1) % n] = 0
        return ls

    def mask(self, ls, T):
        return [[1.0 if k < L else 0.0 for k in range(T)] for L in ls]

    def logps(self, n, T):
        return [[-self.u(0.01, 5.0) for _ in range(T)] for _ in range(n)]

    def shifted(self, base, row_s, tok_s):
        out = []
        for row in base:
            off = self.rng.uniform(-row_s, row_s)
            out.append([f32(x + off + self.rng.gauss(0.0, tok_s)) for x in row])
        return out


def build_cases():
    gen = Gen(SEED)
    cases = []

    def add(kind, name, options, inputs):
        cases.append({"kind": kind, "name": name, "options": options, "inputs": inputs})

    # Reward combination with None values, one completion unscorable.
    r = [[gen.g(), None, gen.g()], [None, None, None], [gen.g(), gen.g(), None],
         [gen.g(), gen.g(), gen.g()]]
    add("combine", "weights_with_none", {}, {"r": r, "w": [1.0, 0.5, -2.0]})

    # GRPO advantages: every scale_rewards, NaN rewards (an unscorable
    # completion, a group with one scorable value, a whole group unscorable),
    # a group of equal rewards (std 0) and one completion per prompt.
    base = [round(gen.u(-2, 3), 3) for _ in range(12)]
    nan_r = list(base)
    nan_r[1] = None
    nan_r[4] = nan_r[5] = None  # with G = 3: group 1 keeps one scorable value
    nan_r[9] = nan_r[10] = nan_r[11] = None
    equal = list(base)
    equal[6] = equal[7] = equal[8] = 0.5
    for scale in ("group", "batch", "none"):
        add("grpo_adv", f"{scale}_G4", {"num_generations": 4, "scale_rewards": scale}, {"r": base})
        add("grpo_adv", f"{scale}_nan_G3", {"num_generations": 3, "scale_rewards": scale},
            {"r": nan_r})
        add("grpo_adv", f"{scale}_equal_group", {"num_generations": 3, "scale_rewards": scale},
            {"r": equal})
        add("grpo_adv", f"{scale}_G1", {"num_generations": 1, "scale_rewards": scale},
            {"r": base[:3]})

    # RLOO advantages.
    for normalize in (False, True):
        tag = "norm" if normalize else "raw"
        add("rloo_adv", f"{tag}_G4", {"num_generations": 4, "normalize_advantages": normalize},
            {"r": base})
        add("rloo_adv", f"{tag}_nan_G3", {"num_generations": 3, "normalize_advantages": normalize},
            {"r": nan_r})
        add("rloo_adv", f"{tag}_G2", {"num_generations": 2, "normalize_advantages": normalize},
            {"r": base[:6]})
        add("rloo_adv", f"{tag}_G1", {"num_generations": 1, "normalize_advantages": normalize},
            {"r": base[:3]})

    # Importance-sampling correction: every mode, with and without clip_min,
    # and clip_max None for the mask modes.
    def is_inputs(n, T, row_s, tok_s):
        ls = gen.lengths(n, T, empty=True)
        old = gen.logps(n, T)
        return {"old_lp": old, "samp_lp": gen.shifted(old, row_s, tok_s), "mask": gen.mask(ls, T)}

    for mode in ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask"):
        seq = mode.startswith("sequence")
        for cmin, cmax in ((None, 3.0), (0.5, 2.0), (0.8, None)):
            if cmin is None and cmax is None:
                continue
            if mode.endswith("truncate") and cmax is None:
                cmax = 1.5
            opts = {"vllm_importance_sampling_mode": mode,
                    "vllm_importance_sampling_clip_min": cmin,
                    "vllm_importance_sampling_clip_max": cmax}
            inp = is_inputs(6, 7, 0.25 if seq else 0.3, 0.08 if seq else 0.8)
            add("is", f"{mode}_{cmin}_{cmax}", opts, inp)

    for name, v, q in (("q0.8", [gen.u(0, 3) for _ in range(17)], 0.8),
                       ("q0.5_even", [gen.u(0, 3) for _ in range(10)], 0.5),
                       ("q0.37", [gen.u(0, 3) for _ in range(9)], 0.37),
                       ("q0", [gen.u(0, 3) for _ in range(5)], 0.0),
                       ("q1", [gen.u(0, 3) for _ in range(5)], 1.0),
                       ("one", [gen.u(0, 3)], 0.3)):
        add("quantile", name, {"q": q}, {"v": v})

    # GRPO loss.
    def grpo_opts(loss_type, level="token", beta=0.0, delta=None, eps=0.2, eps_high=0.28, ga=2):
        return {"loss_type": loss_type, "importance_sampling_level": level, "beta": beta,
                "epsilon": eps, "epsilon_high": eps_high, "delta": delta,
                "max_completion_length": 12, "gradient_accumulation_steps": ga,
                "num_processes": 2}

    def grpo_inputs(n, T, level, on_policy=False, empty=True):
        ls = gen.lengths(n, T, empty=empty)
        lp = gen.logps(n, T)
        row_s, tok_s = (0.6, 0.1) if level == "sequence" else (0.3, 0.35)
        # Advantages of both signs on every loss type.
        adv = [round(gen.u(0.2, 2.0), 4) * (1 if i % 2 else -1) for i in range(n)]
        inp = {"lp": lp, "old_lp": None if on_policy else gen.shifted(lp, row_s, tok_s),
               "ref_lp": gen.shifted(lp, 0.2, 0.4), "mask": gen.mask(ls, T), "adv": adv,
               "num_items_in_batch": float(sum(ls) * 3 + 5)}
        return inp

    for loss_type in ("grpo", "bnpo", "dr_grpo", "dapo"):
        for level in ("token", "sequence"):
            for beta, delta in ((0.0, None), (0.04, None), (0.0, 1.6), (0.1, 1.6)):
                name = f"{loss_type}_{level}_beta{beta}_delta{delta}"
                add("grpo", name, grpo_opts(loss_type, level, beta, delta),
                    grpo_inputs(6, 8, level))
    add("grpo", "grpo_on_policy", grpo_opts("grpo", beta=0.04),
        grpo_inputs(5, 6, "token", on_policy=True))
    add("grpo", "bnpo_sequence_on_policy", grpo_opts("bnpo", "sequence"),
        grpo_inputs(5, 6, "sequence", on_policy=True))
    add("grpo", "dapo_symmetric_eps", grpo_opts("dapo", eps=0.2, eps_high=0.2, ga=1),
        grpo_inputs(4, 9, "token", empty=False))
    add("grpo", "grpo_delta_low", grpo_opts("grpo", delta=1.1),
        grpo_inputs(6, 8, "token"))
    # With the vLLM importance-sampling correction (every mode) and the
    # entropy-quantile mask.
    for k, mode in enumerate(("token_truncate", "token_mask", "sequence_truncate",
                              "sequence_mask")):
        level = "sequence" if k % 2 else "token"
        o = grpo_opts(("dapo", "grpo", "bnpo", "dr_grpo")[k], level, beta=0.04 * (k % 2))
        o.update({"vllm_importance_sampling_mode": mode,
                  "vllm_importance_sampling_clip_min": 0.7 if k < 2 else None,
                  "vllm_importance_sampling_clip_max": 1.6})
        inp = grpo_inputs(6, 8, level)
        inp["samp_lp"] = gen.shifted(inp["old_lp"], 0.1, 0.2 if k < 2 else 0.05)
        add("grpo", f"is_{mode}", o, inp)
    for level, q in (("token", 0.4), ("sequence", 0.25)):
        o = grpo_opts("grpo" if level == "token" else "dapo", level, beta=0.04)
        o["top_entropy_quantile"] = q
        inp = grpo_inputs(6, 8, level)
        inp["entropies"] = [[gen.u(0.0, 4.0) for _ in range(8)] for _ in range(6)]
        add("grpo", f"entropy_mask_{level}", o, inp)

    # RLOO loss: per-token differences small enough that the summed log-ratio
    # lands on both sides of the clip range.
    for name, eps, eps_high, ga in (("eps0.2", 0.2, 0.2, 1), ("eps_high", 0.2, 0.28, 4)):
        n, T = 8, 6
        ls = gen.lengths(n, T, empty=True)
        lp = gen.logps(n, T)
        adv = [round(gen.u(0.1, 1.5), 4) * (1 if i % 2 else -1) for i in range(n)]
        add("rloo", name, {"epsilon": eps, "epsilon_high": eps_high,
                           "gradient_accumulation_steps": ga},
            {"lp": lp, "old_lp": gen.shifted(lp, 0.45, 0.05), "mask": gen.mask(ls, T), "adv": adv})

    # PPO.
    lp = gen.logps(2, 6)
    add("kl", "k1_k3", {}, {"lp": lp[0] + lp[1], "ref": [f32(x + gen.g(0.7)) for x in lp[0] + lp[1]]})

    def junk_after(rows, seqlen, extra):
        """rows with junk past position seqlen + extra."""
        return [[x if k <= L + extra else f32(x * 7.0 + 3.0) for k, x in enumerate(r)]
                for r, L in zip(rows, seqlen)]

    for name, gamma, lam, est, whiten in (("gamma1_lam0.95", 1.0, 0.95, "k1", False),
                                          ("gamma0.9_lam0.8", 0.9, 0.8, "k3", False),
                                          ("gamma0.97_lam0.9_whiten", 0.97, 0.9, "k1", True)):
        n, T = 5, 8
        seqlen = [gen.rng.randint(0, T - 3) for _ in range(n)]
        seqlen[0], seqlen[1] = T - 1, T - 2  # the score at L (truncated) and at T - 1
        add("gae", name, {"gamma": gamma, "lam": lam, "kl_coef": 0.05, "kl_estimator": est,
                          "whiten_rewards": whiten},
            {"seqlen": seqlen, "lp": gen.logps(n, T), "ref": gen.logps(n, T),
             "values": [[gen.g() for _ in range(T)] for _ in range(n)],
             "scores": [gen.g(2.0) for _ in range(n)]})

    for shift in (True, False):
        x = [[f32(gen.g(2.0) + 1.5) for _ in range(7)] for _ in range(4)]
        ls = gen.lengths(4, 7)
        add("whiten", f"shift_mean_{shift}", {"shift_mean": shift}, {"x": x, "mask": gen.mask(ls, 7)})

    for name, c, scale in (("clip0.2", 0.2, 0.5), ("clip0.1", 0.1, 1.0)):
        n, T = 5, 7
        seqlen = [gen.rng.randint(0, T - 1) for _ in range(n)]
        seqlen[0] = T - 1
        lp = gen.logps(n, T)
        add("ppo_policy", name, {"cliprange": c, "scale": scale},
            {"seqlen": seqlen, "lp": junk_after(lp, seqlen, 0),
             "old_lp": junk_after(gen.shifted(lp, 0.1, 0.2), seqlen, 0),
             "adv": junk_after([[gen.g() for _ in range(T)] for _ in range(n)], seqlen, 0)})
    for name, c, scale in (("clip0.2", 0.2, 0.05), ("clip0.5", 0.5, 0.1)):
        n, T = 5, 7
        seqlen = [gen.rng.randint(0, T - 2) for _ in range(n)]
        seqlen[0] = T - 1
        old_v = [[gen.g() for _ in range(T)] for _ in range(n)]
        v = [[f32(x + gen.g(0.4)) for x in r] for r in old_v]
        ret = [[f32(x + gen.g(0.8)) for x in r] for r in old_v]
        add("ppo_value", name, {"cliprange_value": c, "scale": scale},
            {"seqlen": seqlen, "v": junk_after(v, seqlen, 1), "old_v": junk_after(old_v, seqlen, 1),
             "ret": ret})
    return cases


ORACLES = {"combine": combine_oracle, "grpo_adv": grpo_adv_oracle, "rloo_adv": rloo_adv_oracle,
           "is": is_oracle, "quantile": quantile_oracle, "grpo": grpo_oracle, "rloo": rloo_oracle,
           "kl": kl_oracle, "whiten": whiten_oracle, "gae": gae_oracle,
           "ppo_policy": ppo_policy_oracle, "ppo_value": ppo_value_oracle}


def write(path):
    cases = build_cases()
    for c in cases:
        c["expected"] = ORACLES[c["kind"]](c["options"], c["inputs"])
        c["inputs"] = clean(c["inputs"])
        c["expected"] = clean(c["expected"])
    oracle_io.write_cases(path, cases)


if __name__ == "__main__":
    torch.set_default_dtype(DT)
    sys.exit(oracle_io.main(__doc__, write))
