#!/usr/bin/env python3
"""losses_oracle.py - the PyTorch oracle for src/losses.c.

Builds a fixed set of deterministic input cases, evaluates each loss the way
TRL's trainers do (DPOTrainer._compute_loss, KTOTrainer._compute_loss,
ORPOTrainer.odds_ratio_loss, CPOTrainer.cpo_loss, RewardTrainer.compute_loss,
WPO's weights), in float64, and takes every gradient with autograd. The C code
is never called: tests/test_losses.c compares its results with the file this
writes.

    losses_oracle.py --out tests/data/losses_golden.json
    losses_oracle.py --compare tests/data/losses_golden.json NEW.json

The golden file is {"cases": [...]}, one case per line. A case has "kind"
(dpo, kto, orpo, cpo, reward, wpo), "name", "options" (TRL's config names),
"inputs" and "expected" (the loss, d loss / d each differentiable input under
the input's own name, and what the trainer logs).

Where TRL's code cannot run as written in float64 the oracle keeps its
arithmetic: the alpha-divergence clamp at 80 is applied in float64 (TRL casts
to float32 first), and WPO's weights multiply the expanded sft loss out of
place (TRL's in-place `*=` on the expanded tensor raises in torch).
"""
import math
import os
import random
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import oracle_io  # noqa: E402

DT = torch.float64
SEED = 20260724


def t(x, grad=False):
    return torch.tensor(x, dtype=DT, requires_grad=grad)


def grad_list(x):
    """x.grad as a list, zeros when x did not reach the loss."""
    if x.grad is None:
        return [0.0] * x.numel() if x.dim() else 0.0
    return x.grad.tolist()


# --------------------------------------------------------------------- DPO


def dpo_oracle(opt, inp):
    """TRL's DPOTrainer._compute_loss on given sequence log-probs."""
    pc, pr = t(inp["pc"], True), t(inp["pr"], True)
    rc, rr = t(inp["rc"]), t(inp["rr"])
    nc, nr = t(inp["nc"]), t(inp["nr"])
    nll = t(inp["nll"], True)
    beta, ls = opt["beta"], opt["label_smoothing"]
    n = pc.numel()

    chosen_logratios = pc - rc
    rejected_logratios = pr - rr
    fdiv = opt["f_divergence_type"]
    if fdiv == "reverse_kl":
        chosen_scores, rejected_scores = chosen_logratios, rejected_logratios
    elif fdiv == "forward_kl":
        chosen_scores = -torch.exp(-chosen_logratios)
        rejected_scores = -torch.exp(-rejected_logratios)
    elif fdiv == "js_divergence":
        chosen_scores = F.logsigmoid(chosen_logratios)
        rejected_scores = F.logsigmoid(rejected_logratios)
    elif fdiv == "alpha_divergence":
        a = opt["f_alpha_divergence_coef"]
        if abs(a - 1.0) < 1e-6:
            chosen_scores, rejected_scores = chosen_logratios, rejected_logratios
        else:
            coef = 1.0 / (a - 1.0)
            tc = torch.clamp((a - 1.0) * chosen_logratios, max=80.0)
            tr = torch.clamp((a - 1.0) * rejected_logratios, max=80.0)
            chosen_scores = torch.exp(tc) * coef
            rejected_scores = torch.exp(tr) * coef
    else:
        raise ValueError(fdiv)
    delta_score = chosen_scores - rejected_scores

    loss = 0.0
    for loss_type, loss_weight in zip(opt["loss_type"], opt["loss_weights"], strict=True):
        if loss_type == "sigmoid":
            per = -F.logsigmoid(beta * delta_score)
        elif loss_type == "hinge":
            per = torch.relu(1 - beta * delta_score)
        elif loss_type == "ipo":
            d = chosen_scores / nc.clamp(min=1.0) - rejected_scores / nr.clamp(min=1.0)
            per = (d - 1 / (2 * beta)) ** 2
        elif loss_type == "exo_pair":
            eps = t(ls)
            qw = torch.sigmoid(beta * delta_score)
            ql = torch.sigmoid(-beta * delta_score)
            per = qw * (F.logsigmoid(beta * delta_score) - torch.log1p(-eps)) + ql * (
                F.logsigmoid(-beta * delta_score) - torch.log(eps)
            )
        elif loss_type == "nca_pair":
            cr, rj = beta * chosen_scores, beta * rejected_scores
            per = -F.logsigmoid(cr) - 0.5 * F.logsigmoid(-cr) - 0.5 * F.logsigmoid(-rj)
        elif loss_type == "robust":
            clean = -(1 - ls) * F.logsigmoid(beta * delta_score)
            flipped = -ls * F.logsigmoid(-beta * delta_score)
            per = (clean - flipped) / (1 - 2 * ls)
        elif loss_type == "bco_pair":
            per = -F.logsigmoid(beta * chosen_scores) - F.logsigmoid(-beta * rejected_scores)
        elif loss_type == "sppo_hard":
            per = (chosen_scores - 0.5 / beta) ** 2 + (rejected_scores + 0.5 / beta) ** 2
        elif loss_type == "aot":
            x, _ = torch.sort(pc - pr, dim=0)
            y, _ = torch.sort(rc - rr, dim=0)
            d = x - y
            per = -F.logsigmoid(beta * d) * (1 - ls) - F.logsigmoid(-beta * d) * ls
        elif loss_type == "aot_unpaired":
            x, _ = torch.sort(chosen_logratios, dim=0)
            y, _ = torch.sort(rejected_logratios, dim=0)
            d = x - y
            per = -F.logsigmoid(beta * d) * (1 - ls) - F.logsigmoid(-beta * d) * ls
        elif loss_type == "apo_zero":
            per = (1 - torch.sigmoid(beta * chosen_logratios)) + torch.sigmoid(
                beta * rejected_logratios
            )
        elif loss_type == "apo_down":
            per = torch.sigmoid(beta * chosen_logratios) + (1 - torch.sigmoid(beta * delta_score))
        elif loss_type == "discopop":
            logits = delta_score * beta
            m = torch.sigmoid(logits / opt["discopop_tau"])
            per = -F.logsigmoid(logits) * (1 - m) + torch.exp(-logits) * m
        elif loss_type == "sft":
            per = nll.expand(n)
        elif loss_type == "sigmoid_norm":
            d = chosen_scores / nc.clamp(min=1.0) - rejected_scores / nr.clamp(min=1.0)
            per = -F.logsigmoid(beta * d)
        else:
            raise ValueError(loss_type)
        if "wc" in inp:
            per = per * (t(inp["wc"]) * t(inp["wr"]))
        loss = loss + per.mean() * loss_weight

    loss.backward()
    return {"loss": loss.item(), "pc": grad_list(pc), "pr": grad_list(pr), "nll": grad_list(nll)}


# --------------------------------------------------------------------- WPO


def wpo_sequence(rng, length, vocab=7):
    """One sequence's WPO quantities from random logits, as DPOTrainer forms them."""
    logits = t([[rng.gauss(0.0, 2.0) for _ in range(vocab)] for _ in range(length)])
    labels = torch.tensor([rng.randrange(vocab) for _ in range(length)])
    mask = torch.ones(length, dtype=DT)
    logps = torch.log_softmax(logits, dim=-1).gather(-1, labels[:, None]).squeeze(-1)
    log_denom = torch.logsumexp(2.0 * logits, dim=-1) - 2.0 * torch.logsumexp(logits, dim=-1)
    aligned = ((logps - log_denom) * mask).sum()
    count = mask.sum().clamp_min(1)
    return aligned.item(), mask.sum().item(), torch.exp(aligned / count).item()


# --------------------------------------------------------------------- KTO


def kto_oracle(opt, inp):
    """KTOTrainer._compute_loss: per-example losses times their weight, then
    the mean over all examples."""
    lp, ref = t(inp["lp"], True), t(inp["ref"])
    label = torch.tensor(inp["label"], dtype=torch.bool)
    beta = opt["beta"]
    kl = t(inp["z0"])
    chosen = lp[label] - ref[label]
    rejected = lp[~label] - ref[~label]
    if opt["loss_type"] == "kto":
        chosen_losses = 1 - torch.sigmoid(beta * (chosen - kl))
        rejected_losses = 1 - torch.sigmoid(beta * (kl - rejected))
    else:
        chosen_losses = 1 - torch.sigmoid(beta * chosen)
        rejected_losses = torch.sigmoid(beta * rejected)
    losses = torch.cat(
        (opt["desirable_weight"] * chosen_losses, opt["undesirable_weight"] * rejected_losses), 0
    )
    loss = losses.nanmean()
    loss.backward()
    return {"loss": loss.item(), "lp": grad_list(lp)}


def kto_z0(kl_lp, kl_ref):
    """The KL estimate: the mean of the mismatched pairs' log-ratios, clamped at 0."""
    return (t(kl_lp) - t(kl_ref)).mean().clamp(min=0).item()


# --------------------------------------------------------------------- BCO


def bco_oracle(opt, inp):
    """BCOTrainer.bco_loss without UDM: rewards beta * (lp - ref), the running
    mean of the rewards merged with this batch's (RunningMoments.update),
    -logsigmoid(r - delta) for desirable and -logsigmoid(delta - r) for
    undesirable examples, the mean over all. The running state is given as
    (mean, var, count) before the update; the expected output holds it
    after."""
    lp, ref = t(inp["lp"], True), t(inp["ref"])
    label = torch.tensor(inp["label"], dtype=torch.bool)
    beta = opt["beta"]
    r = beta * (lp - ref)
    chosen, rejected = r[label], r[~label]
    xs = torch.cat((chosen, rejected), 0).detach()
    mean, var, count = inp["running"]
    if opt["update"]:
        xs_var, xs_mean = torch.var_mean(xs, unbiased=False)
        xs_count = xs.numel()
        delta = xs_mean.item() - mean
        tot = count + xs_count
        old_sum = var * count + delta ** 2 * count * xs_count / tot
        mean += delta * xs_count / tot
        var = (old_sum + xs_var.item() * xs_count) / tot
        count = tot
    d = torch.tensor(mean, dtype=torch.float64)
    losses = torch.cat((-F.logsigmoid(chosen - d), -F.logsigmoid(-(rejected - d))), 0)
    loss = losses.mean()
    loss.backward()
    return {"loss": loss.item(), "lp": grad_list(lp), "running": [mean, var, count]}


# -------------------------------------------------------------------- ORPO


def log1mexp(x):
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo_oracle(opt, inp):
    pc, pr = t(inp["pc"], True), t(inp["pr"], True)
    nll = t(inp["nll"], True)
    ac, ar = pc / t(inp["nc"]), pr / t(inp["nr"])
    log_odds = (ac - ar) - (log1mexp(ac) - log1mexp(ar))
    ratio = F.logsigmoid(log_odds)
    loss = nll - (opt["beta"] * ratio).mean()
    loss.backward()
    return {
        "loss": loss.item(),
        "pc": grad_list(pc),
        "pr": grad_list(pr),
        "nll": grad_list(nll),
        "log_odds_ratio": ratio.mean().item(),
        "log_odds_chosen": log_odds.mean().item(),
    }


# --------------------------------------------------------------------- CPO


def cpo_oracle(opt, inp):
    pc, pr = t(inp["pc"], True), t(inp["pr"], True)
    nll = t(inp["nll"], True)
    kind, beta, ls, alpha = opt["loss_type"], opt["beta"], opt["label_smoothing"], opt["alpha"]
    if kind in ("ipo", "simpo"):
        chosen_logps, rejected_logps = pc / t(inp["nc"]), pr / t(inp["nr"])
    else:
        chosen_logps, rejected_logps = pc, pr
    if alpha != 0.0:
        chosen_r = (1 - torch.exp(chosen_logps).pow(-alpha)) / alpha
        rejected_r = (1 - torch.exp(rejected_logps).pow(-alpha)) / alpha
        logits = chosen_r - rejected_r
    else:
        logits = chosen_logps - rejected_logps
    if kind == "simpo":
        logits = logits - opt["simpo_gamma"] / beta
        losses = -F.logsigmoid(beta * logits) * (1 - ls) - F.logsigmoid(-beta * logits) * ls
    elif kind == "sigmoid":
        losses = -F.logsigmoid(beta * logits) * (1 - ls) - F.logsigmoid(-beta * logits) * ls
    elif kind == "hinge":
        losses = torch.relu(1 - beta * logits)
    elif kind == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(kind)
    if alpha != 0.0:
        chosen_rewards, rejected_rewards = beta * chosen_r.detach(), beta * rejected_r.detach()
    else:
        chosen_rewards, rejected_rewards = beta * chosen_logps.detach(), beta * rejected_logps.detach()
    nll_term = opt["cpo_alpha"] * nll if opt["cpo_alpha"] != 0 else t(0.0)
    loss = losses.mean() + nll_term
    loss.backward()
    return {
        "loss": loss.item(),
        "pc": grad_list(pc),
        "pr": grad_list(pr),
        "nll": grad_list(nll),
        "rewards_chosen": chosen_rewards.tolist(),
        "rewards_rejected": rejected_rewards.tolist(),
    }


# ------------------------------------------------------------------ reward


def reward_oracle(opt, inp):
    rc, rr = t(inp["rc"], True), t(inp["rr"], True)
    if "margin" in inp:
        loss = -F.logsigmoid(rc - rr - t(inp["margin"])).mean()
    else:
        loss = -F.logsigmoid(rc - rr).mean()
    coef = opt["center_rewards_coefficient"]
    if coef is not None:
        loss = loss + coef * torch.mean((rc + rr) ** 2)
    loss.backward()
    return {"loss": loss.item(), "rc": grad_list(rc), "rr": grad_list(rr)}


# ------------------------------------------------------------------- cases


def r4(x):
    return round(x, 4)


def pairs(rng, n, spread=3.0, extremes=True, close=False):
    """n preference pairs: log-prob sums that scale with the token counts,
    reference log-ratios of both signs, and (extremes) one pair with large
    log-ratios and one with tiny ones. close: each rejected sum lies within 3
    of its chosen one, so that sorting pc - pr and rc - rr (AOT) orders the
    pairs differently."""
    d = {k: [] for k in ("pc", "pr", "rc", "rr", "nc", "nr")}
    for i in range(n):
        nc, nr = rng.randint(2, 90), rng.randint(2, 90)
        pc = -r4(nc * rng.uniform(0.1, 2.5))
        pr = -r4(nr * rng.uniform(0.1, 2.5))
        if close:
            pr = r4(pc + rng.uniform(-3.0, 3.0))
        uc, ur = rng.uniform(-spread, spread), rng.uniform(-spread, spread)
        if extremes and i == n - 1:
            uc, ur = 4.0 * spread, -3.0 * spread
        if extremes and i == n - 2:
            uc, ur = 1e-3, -2e-3
        d["pc"].append(pc)
        d["pr"].append(pr)
        d["rc"].append(r4(pc - uc))
        d["rr"].append(r4(pr - ur))
        d["nc"].append(float(nc))
        d["nr"].append(float(nr))
    d["nll"] = r4(rng.uniform(0.5, 3.0))
    return d


def dpo_opts(types, weights=None, beta=0.1, ls=0.0, tau=0.05, fdiv="reverse_kl", coef=0.5):
    return {
        "loss_type": list(types),
        "loss_weights": list(weights) if weights else [1.0] * len(types),
        "beta": beta,
        "label_smoothing": ls,
        "discopop_tau": tau,
        "f_divergence_type": fdiv,
        "f_alpha_divergence_coef": coef,
    }


ALL_DPO = [
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard",
    "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
]
LIST_A = ["sigmoid", "ipo", "nca_pair", "sppo_hard", "apo_zero", "apo_down", "sigmoid_norm",
          "aot_unpaired"]
LIST_B = ["hinge", "robust", "bco_pair", "discopop", "exo_pair", "aot", "sft"]


def permutes(inp, types):
    """Whether every AOT loss in types sorts its two sides into different
    orders, neither the input order, without ties: otherwise the case would
    not exercise the permutation of the gradient."""
    pc, pr, rc, rr = (torch.tensor(inp[k], dtype=DT) for k in ("pc", "pr", "rc", "rr"))
    ident = torch.arange(len(inp["pc"]))
    for kind in types:
        if kind == "aot":
            x, y = pc - pr, rc - rr
        elif kind == "aot_unpaired":
            x, y = pc - rc, pr - rr
        else:
            continue
        px, py = torch.argsort(x), torch.argsort(y)
        if torch.equal(px, py) or torch.equal(px, ident) or torch.equal(py, ident):
            return False
        if len(set(x.tolist())) != len(x) or len(set(y.tolist())) != len(y):
            return False
    return True


def aot_pairs(rng, n, types, **kw):
    """pairs() drawn until permutes() holds (always, when types has no AOT)."""
    while True:
        inp = pairs(rng, n, close=True, **kw)
        if permutes(inp, types):
            return inp


def build_cases():
    rng = random.Random(SEED)
    cases = []

    def add(kind, name, options, inputs):
        cases.append({"kind": kind, "name": name, "options": options, "inputs": inputs})

    # Each DPO loss type alone. Loss types that ignore label_smoothing get one
    # anyway, so that a C loss that used it would be caught.
    special_ls = {"robust": 0.2, "exo_pair": 1e-3, "aot": 0.1, "aot_unpaired": 0.1}
    for k, kind in enumerate(ALL_DPO):
        beta = (0.1, 0.5, 0.05)[k % 3]
        ls = special_ls.get(kind, 0.15 if k % 2 else 0.0)
        inp = aot_pairs(rng, 5 + k % 3, [kind]) if kind.startswith("aot") else pairs(rng, 5 + k % 3)
        add("dpo", kind, dpo_opts([kind], beta=beta, ls=ls), inp)
    inp = pairs(rng, 6)
    add("dpo", "discopop_tau_0.2", dpo_opts(["discopop"], beta=0.3, tau=0.2), inp)
    inp = pairs(rng, 1, extremes=False)
    add("dpo", "aot_one_pair", dpo_opts(["aot"], ls=0.1), inp)
    # A pair far on the wrong side: naive log(1 + e^-z) would overflow.
    inp = pairs(rng, 3, extremes=False)
    inp["rc"][0] = r4(inp["pc"][0] + 9000.0)
    add("dpo", "sigmoid_saturated", dpo_opts(["sigmoid", "bco_pair", "nca_pair"], beta=0.1), inp)
    # DiscoPOP at z = -30, where e^-z is large and sigmoid(z / tau) tiny.
    inp = pairs(rng, 3, extremes=False)
    inp["rc"][1] = r4(inp["pc"][1] + 300.0)
    add("dpo", "discopop_negative", dpo_opts(["discopop"], beta=0.1), inp)

    # Loss lists: MPO and RPO as TRL documents them, and two mixed lists.
    inp = pairs(rng, 6)
    add("dpo", "mpo", dpo_opts(["sigmoid", "bco_pair", "sft"], [0.8, 0.2, 1.0]), inp)
    inp = pairs(rng, 5)
    add("dpo", "rpo", dpo_opts(["sigmoid", "sft"], [1.0, 0.5]), inp)

    # Every f-divergence on the two lists that between them use every loss type.
    for fdiv, coef in (("reverse_kl", 0.5), ("forward_kl", 0.5), ("js_divergence", 0.5),
                       ("alpha_divergence", 0.5), ("alpha_divergence", 1.0),
                       ("alpha_divergence", 1.5)):
        for lname, types in (("A", LIST_A), ("B", LIST_B)):
            inp = aot_pairs(rng, 6, types, spread=1.5)
            weights = [r4(rng.uniform(0.2, 1.5)) for _ in types]
            name = f"{fdiv}_{coef}_{lname}" if fdiv == "alpha_divergence" else f"{fdiv}_{lname}"
            add("dpo", name, dpo_opts(types, weights, beta=0.2, ls=0.05, fdiv=fdiv, coef=coef), inp)
    # alpha = 0.5: t = -0.5 u is clamped at 80 for u = -161 (t = 80.5), not for
    # u = -159 (t = 79.5).
    inp = pairs(rng, 4, extremes=False)
    inp["pc"][0] = r4(inp["rc"][0] - 161.0)
    inp["pc"][1] = r4(inp["rc"][1] - 159.0)
    add("dpo", "alpha_clamp", dpo_opts(["sigmoid", "bco_pair"], beta=0.1,
                                       fdiv="alpha_divergence", coef=0.5), inp)

    # use_weighting: WPO weights from random logits (also checked on their own).
    wpo = []
    for name, types, weights in (("wpo_mpo", ["sigmoid", "bco_pair", "sft"], [0.8, 0.2, 1.0]),
                                 ("wpo_mixed", ["ipo", "apo_down", "sft", "nca_pair"],
                                  [1.0, 0.5, 0.3, 0.7])):
        inp = pairs(rng, 5)
        inp["wc"], inp["wr"] = [], []
        for i in range(5):
            for side, cnt in (("wc", inp["nc"][i]), ("wr", inp["nr"][i])):
                length = min(int(cnt), 12)
                aligned, count, w = wpo_sequence(rng, length)
                inp[side].append(w)
                wpo.append((aligned, count, w))
        add("dpo", name, dpo_opts(types, weights, beta=0.1), inp)
    for j, (aligned, count, w) in enumerate(wpo[:6]):
        add("wpo", f"weight_{j}", {}, {"sum_aligned": aligned, "count": count})
    add("wpo", "weight_empty", {}, {"sum_aligned": 0.0, "count": 0.0})

    # KTO.
    def kto_inputs(n, labels, kl_shift):
        lp = [-r4(rng.uniform(5.0, 120.0)) for _ in range(n)]
        ref = [r4(x - rng.uniform(-4.0, 4.0)) for x in lp]
        kl_lp = [-r4(rng.uniform(5.0, 120.0)) for _ in range(n)]
        kl_ref = [r4(x - kl_shift - rng.uniform(-1.0, 1.0)) for x in kl_lp]
        return {"lp": lp, "ref": ref, "label": labels, "z0": kto_z0(kl_lp, kl_ref)}

    for name, typ, dw, uw, labels, shift in (
            ("kto", "kto", 1.0, 1.0, [1, 0, 0, 1, 0, 1, 1], 1.5),
            ("kto_weighted", "kto", 1.33, 0.75, [0, 1, 0, 0, 1, 0], 0.8),
            ("kto_z0_clamped", "kto", 1.0, 1.2, [1, 1, 0, 1, 0], -2.0),
            ("kto_all_desirable", "kto", 0.9, 1.1, [1, 1, 1, 1], 0.5),
            ("apo_zero_unpaired", "apo_zero_unpaired", 1.25, 0.8, [1, 0, 1, 0, 0, 1], 0.0)):
        inp = kto_inputs(len(labels), labels, shift)
        if typ == "kto" and shift > 0:
            assert inp["z0"] > 0
        if typ == "apo_zero_unpaired":
            inp["z0"] = 0.0
        opts = {"loss_type": typ, "beta": 0.1 if "weighted" not in name else 0.3,
                "desirable_weight": dw, "undesirable_weight": uw}
        add("kto", name, opts, inp)

    # BCO: a first update from the initial moments, a later one, and an
    # evaluation batch (no update).
    for name, beta, labels, running, update in (
            ("bco_first", 0.1, [1, 0, 1, 1, 0, 0], [0.0, 1.0, 1e-24], True),
            ("bco_running", 0.2, [0, 1, 0, 1, 1], [0.37, 2.5, 48.0], True),
            ("bco_eval", 0.1, [1, 1, 0, 0], [-0.8, 0.6, 120.0], False)):
        n = len(labels)
        lp = [-r4(rng.uniform(5.0, 120.0)) for _ in range(n)]
        ref = [r4(x - rng.uniform(-6.0, 6.0)) for x in lp]
        add("bco", name, {"beta": beta, "update": update},
            {"lp": lp, "ref": ref, "label": labels, "running": running})

    # ORPO: average log-probs on both sides of log1mexp's branch at -ln 2.
    for name, beta in (("orpo", 0.1), ("orpo_beta_0.25", 0.25)):
        inp = pairs(rng, 6, extremes=False)
        for side, cnt in (("pc", "nc"), ("pr", "nr")):
            for i in range(6):
                avg = -rng.uniform(0.02, 0.6) if i % 2 else -rng.uniform(0.8, 4.0)
                inp[side][i] = r4(avg * inp[cnt][i])
        for k in ("rc", "rr"):
            del inp[k]
        add("orpo", name, {"beta": beta}, inp)

    # CPO, SimPO, AlphaPO.
    def cpo_opts(kind, beta=0.1, ls=0.0, cpo_alpha=1.0, gamma=0.5, alpha=0.0):
        return {"loss_type": kind, "beta": beta, "label_smoothing": ls, "cpo_alpha": cpo_alpha,
                "simpo_gamma": gamma, "alpha": alpha}

    def cpo_inputs(n, per_token_hi=2.5):
        inp = pairs(rng, n, extremes=False)
        for k in ("rc", "rr"):
            del inp[k]
        for side, cnt in (("pc", "nc"), ("pr", "nr")):
            inp[side] = [-r4(c * rng.uniform(0.05, per_token_hi)) for c in inp[cnt]]
        return inp

    add("cpo", "sigmoid_ls", cpo_opts("sigmoid", ls=0.1), cpo_inputs(6))
    add("cpo", "sigmoid", cpo_opts("sigmoid", beta=0.05), cpo_inputs(5))
    add("cpo", "hinge", cpo_opts("hinge", beta=0.1, ls=0.2), cpo_inputs(7))
    add("cpo", "ipo", cpo_opts("ipo", beta=0.5), cpo_inputs(5))
    add("cpo", "simpo", cpo_opts("simpo", beta=2.0, cpo_alpha=0.0, gamma=0.5), cpo_inputs(6))
    add("cpo", "simpo_ls_nll", cpo_opts("simpo", beta=2.5, ls=0.1, cpo_alpha=0.3, gamma=1.0),
        cpo_inputs(5))
    add("cpo", "alphapo_simpo", cpo_opts("simpo", beta=2.5, cpo_alpha=0.0, gamma=0.5, alpha=0.25),
        cpo_inputs(6))
    inp = cpo_inputs(5)
    for side in ("pc", "pr"):
        inp[side] = [-r4(rng.uniform(0.5, 15.0)) for _ in range(5)]
    add("cpo", "alphapo_sigmoid", cpo_opts("sigmoid", beta=0.1, ls=0.05, alpha=0.05), inp)
    add("cpo", "alphapo_ipo", cpo_opts("ipo", beta=0.5, alpha=-0.5), cpo_inputs(4, 1.5))

    # Reward modelling.
    def rewards(n, scale):
        return ([r4(rng.gauss(0.0, scale)) for _ in range(n)],
                [r4(rng.gauss(0.0, scale)) for _ in range(n)])

    rc, rr = rewards(6, 2.0)
    add("reward", "plain", {"center_rewards_coefficient": None}, {"rc": rc, "rr": rr})
    rc, rr = rewards(5, 1.0)
    add("reward", "margin", {"center_rewards_coefficient": None},
        {"rc": rc, "rr": rr, "margin": [r4(rng.uniform(0.0, 2.0)) for _ in range(5)]})
    rc, rr = rewards(6, 3.0)
    add("reward", "margin_center", {"center_rewards_coefficient": 0.01},
        {"rc": rc, "rr": rr, "margin": [r4(rng.uniform(-1.0, 2.0)) for _ in range(6)]})
    rc, rr = rewards(4, 8.0)
    add("reward", "center", {"center_rewards_coefficient": 0.05}, {"rc": rc, "rr": rr})
    rc, rr = rewards(1, 1.0)
    add("reward", "one_pair", {"center_rewards_coefficient": None}, {"rc": rc, "rr": rr})
    return cases


ORACLES = {"dpo": dpo_oracle, "kto": kto_oracle, "orpo": orpo_oracle, "bco": bco_oracle,
           "cpo": cpo_oracle, "reward": reward_oracle}


def evaluate(case):
    kind, opt, inp = case["kind"], case["options"], case["inputs"]
    if kind in ORACLES:
        return ORACLES[kind](opt, inp)
    if kind == "wpo":
        count = max(inp["count"], 1.0)
        return {"weight": math.exp(inp["sum_aligned"] / count)}
    raise ValueError(kind)


def all_finite(x):
    if isinstance(x, dict):
        return all(all_finite(v) for v in x.values())
    if isinstance(x, list):
        return all(all_finite(v) for v in x)
    if isinstance(x, float):
        return math.isfinite(x)
    return True


def write(path):
    cases = build_cases()
    for c in cases:
        c["expected"] = evaluate(c)
        assert all_finite(c), f"{c['kind']}/{c['name']}: not finite"
    oracle_io.write_cases(path, cases)


if __name__ == "__main__":
    torch.set_default_dtype(DT)
    sys.exit(oracle_io.main(__doc__, write))
