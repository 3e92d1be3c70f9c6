"""torch_model.py - an independent PyTorch oracle for trl-hpc's forward pass and loss.

Functional implementations of the three architectures trl-hpc trains, written
from the published semantics of Hugging Face LlamaForCausalLM, Qwen2ForCausalLM,
Qwen3ForCausalLM, MistralForCausalLM, GPT2LMHeadModel and Lfm2ForCausalLM.
Weights are a dict {Hugging Face name: tensor}; the config is a dict with the keys

    architecture ("llama" | "gpt2" | "lfm2"), model_type ("llama", "qwen2",
    "qwen3", "mistral", "gpt2", "lfm2"), vocab_size, hidden_size,
    num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim,
    intermediate_size (lfm2: the effective FFN width), max_position_embeddings,
    rope_theta, norm_eps, tie_word_embeddings, attention_bias (q/k/v biases),
    o_bias (o_proj bias: llama and qwen3 with attention_bias), qk_norm (qwen3
    q_norm/k_norm, lfm2 q_layernorm/k_layernorm), and for lfm2 layer_types (one
    "full_attention" or "conv" per layer), conv_L_cache (kernel length),
    conv_bias

(normalize_config also accepts the Hugging Face config.json spellings and
fills the keys each model_type implies; its result normalizes to itself).

The batch carries position ids and document ids (B, T). Attention follows
trl-hpc's rule: query t attends key s iff (s <= t and doc[s] == doc[t] >= 0)
or s == t, so packed documents never see each other and padding (doc = -1) sees
only itself. LFM2's short convolution follows the matching rule: the tap at
position s feeds position t only when doc[s] == doc[t], so each packed document
starts its convolution from zeros (padding, doc = -1, reads padding). Everything
runs in the dtype of the weights (float64 for parity).

LoRA (PEFT's LoraModel): forward(..., lora={"scale": s}) adds to every linear
module (nn.Linear, and transformers Conv1D for GPT-2) whose path P has adapter
tensors in the weights, under PEFT's saved names

    base_model.model.<P>.lora_A.weight (r, in), base_model.model.<P>.lora_B.weight (out, r)

the branch s * (x A^T) B^T, so y = base(x) + s * B A x with s = lora_alpha / r
(lora_alpha / sqrt(r) with use_rslora; lora_scale). GPT-2's Conv1D keeps its
(in, out) base weight, but its A and B have the nn.Linear shapes above. No
dropout. linear_modules lists the modules LoRA can adapt and
lora_target_modules the ones a PEFT target_modules list (or "all-linear")
selects.
"""

import math

import torch


def normalize_config(cfg):
    """Returns the oracle's config dict from either our keys or HF config.json keys."""

    def pick(*keys, default=None):
        for k in keys:
            if k in cfg and cfg[k] is not None:
                return cfg[k]
        if default is None:
            raise KeyError("config has none of the keys %s" % (keys,))
        return default

    mtype = str(pick("model_type", "architecture")).lower()
    if mtype.startswith("gpt2"):
        arch = "gpt2"
    elif mtype in ("llama", "qwen2", "qwen3", "mistral"):
        arch = "llama"
    elif mtype == "lfm2":
        return lfm2_config(cfg, pick)
    else:
        raise ValueError("unknown model_type %r" % mtype)
    out = {
        "architecture": arch,
        "vocab_size": int(pick("vocab_size")),
        "hidden_size": int(pick("hidden_size", "n_embd")),
        "num_hidden_layers": int(pick("num_hidden_layers", "n_layer")),
        "num_attention_heads": int(pick("num_attention_heads", "n_head")),
        "max_position_embeddings": int(pick("max_position_embeddings", "n_positions")),
        "rope_theta": float(pick("rope_theta", default=10000.0)),
        "norm_eps": float(pick("norm_eps", "rms_norm_eps", "layer_norm_epsilon")),
        "tie_word_embeddings": bool(pick("tie_word_embeddings", default=arch == "gpt2")),
        "attention_bias": bool(pick("attention_bias", default=False)),
        "model_type": mtype,
    }
    if mtype == "qwen2":
        out["attention_bias"] = True
    if mtype == "mistral":
        out["attention_bias"] = False
    out["o_bias"] = out["attention_bias"] and mtype in ("llama", "qwen3")
    out["qk_norm"] = mtype == "qwen3"
    out["head_dim"] = int(pick("head_dim", default=0)) or \
        out["hidden_size"] // out["num_attention_heads"]
    out["num_key_value_heads"] = int(
        pick("num_key_value_heads", default=out["num_attention_heads"]))
    inter = pick("intermediate_size", "n_inner", default=0)
    out["intermediate_size"] = int(inter) if inter else 4 * out["hidden_size"]
    if arch == "gpt2":
        out["num_key_value_heads"] = out["num_attention_heads"]
        out["tie_word_embeddings"] = True
    return out


def lfm2_ffn_width(cfg, pick):
    """Lfm2Config's effective FFN width F (the rows of feed_forward.w1.weight).

    block_ff_dim, when present, replaces intermediate_size. With
    block_auto_adjust_ff_dim (default true) F shrinks to int(2F/3) and, unless
    block_ffn_dim_multiplier is explicitly null (absent means 1.0), is scaled
    by it and rounded up to a multiple of block_multiple_of (default 256).
    """
    F = int(pick("block_ff_dim", "intermediate_size", default=12288))
    if bool(pick("block_auto_adjust_ff_dim", default=True)):
        F = int(2 * F / 3)
        mult = cfg["block_ffn_dim_multiplier"] if "block_ffn_dim_multiplier" in cfg \
            else 1.0
        if mult is not None:
            F = int(float(mult) * F)
            m = int(pick("block_multiple_of", default=256))
            F = m * ((F + m - 1) // m)
    return F


def lfm2_layer_types(cfg, L):
    """One "full_attention" or "conv" per layer, from layer_types or full_attn_idxs.

    layer_types wins; full_attn_idxs lists the attention layers; with neither
    every layer is attention (Lfm2Config's rule).
    """
    if cfg.get("layer_types") is not None:
        types = [str(t) for t in cfg["layer_types"]]
    elif cfg.get("full_attn_idxs") is not None:
        idxs = set(int(i) for i in cfg["full_attn_idxs"])
        types = ["full_attention" if i in idxs else "conv" for i in range(L)]
    else:
        types = ["full_attention"] * L
    if len(types) != L:
        raise ValueError("layer_types has %d entries for %d layers" % (len(types), L))
    bad = [t for t in types if t not in ("full_attention", "conv")]
    if bad:
        raise ValueError("layer_types holds %r; each must be 'full_attention' or "
                         "'conv'" % bad[0])
    return types


def lfm2_config(cfg, pick):
    """The oracle's config for model_type "lfm2" (Lfm2Config keys and defaults).

    intermediate_size comes back as the effective width F with
    block_auto_adjust_ff_dim false, so the result normalizes to itself.
    """
    H = int(pick("hidden_size"))
    nh = int(pick("num_attention_heads"))
    L = int(pick("num_hidden_layers"))
    rope = cfg.get("rope_parameters") or {}
    theta = rope.get("rope_theta")
    if theta is None:
        theta = pick("rope_theta", "theta", default=1e6)
    if cfg.get("tie_embedding") is not None:      # the alias wins, as in Lfm2Config
        tied = bool(cfg["tie_embedding"])
    else:
        tied = bool(pick("tie_word_embeddings", default=True))
    out = {
        "architecture": "lfm2",
        "model_type": "lfm2",
        "vocab_size": int(pick("vocab_size")),
        "hidden_size": H,
        "num_hidden_layers": L,
        "num_attention_heads": nh,
        "num_key_value_heads": int(pick("num_key_value_heads", default=8)),
        "head_dim": int(pick("head_dim", default=0)) or H // nh,
        "intermediate_size": lfm2_ffn_width(cfg, pick),
        "block_auto_adjust_ff_dim": False,
        "layer_types": lfm2_layer_types(cfg, L),
        "conv_L_cache": int(pick("conv_L_cache", default=3)),
        "conv_bias": bool(pick("conv_bias", default=False)),
        "norm_eps": float(pick("norm_eps", default=1e-5)),
        "rope_theta": float(theta),
        "tie_word_embeddings": tied,
        "max_position_embeddings": int(pick("max_position_embeddings", default=128000)),
        "attention_bias": False,
        "o_bias": False,
        "qk_norm": True,
    }
    if nh % out["num_key_value_heads"]:
        raise ValueError("num_attention_heads %d is not a multiple of "
                         "num_key_value_heads %d" % (nh, out["num_key_value_heads"]))
    return out


def param_names(cfg):
    """Every parameter name the architecture has, in a fixed order."""
    L = cfg["num_hidden_layers"]
    names = []
    if cfg["architecture"] == "llama":
        names.append("model.embed_tokens.weight")
        for i in range(L):
            p = "model.layers.%d." % i
            names.append(p + "input_layernorm.weight")
            for proj in ("q", "k", "v", "o"):
                names.append(p + "self_attn.%s_proj.weight" % proj)
            if cfg["attention_bias"]:
                for proj in ("q", "k", "v"):
                    names.append(p + "self_attn.%s_proj.bias" % proj)
            if cfg["o_bias"]:
                names.append(p + "self_attn.o_proj.bias")
            if cfg["qk_norm"]:
                names += [p + "self_attn.q_norm.weight", p + "self_attn.k_norm.weight"]
            names.append(p + "post_attention_layernorm.weight")
            for proj in ("gate", "up", "down"):
                names.append(p + "mlp.%s_proj.weight" % proj)
        names.append("model.norm.weight")
        if not cfg["tie_word_embeddings"]:
            names.append("lm_head.weight")
    elif cfg["architecture"] == "lfm2":
        names.append("model.embed_tokens.weight")
        for i, kind in enumerate(cfg["layer_types"]):
            p = "model.layers.%d." % i
            names.append(p + "operator_norm.weight")
            if kind == "full_attention":
                for proj in ("q_proj", "k_proj", "v_proj", "out_proj", "q_layernorm",
                             "k_layernorm"):
                    names.append(p + "self_attn.%s.weight" % proj)
            else:
                for sub in ("in_proj", "conv", "out_proj"):
                    names.append(p + "conv.%s.weight" % sub)
                    if cfg["conv_bias"]:
                        names.append(p + "conv.%s.bias" % sub)
            names.append(p + "ffn_norm.weight")
            for proj in ("w1", "w3", "w2"):
                names.append(p + "feed_forward.%s.weight" % proj)
        names.append("model.embedding_norm.weight")
        if not cfg["tie_word_embeddings"]:
            names.append("lm_head.weight")
    else:
        names += ["transformer.wte.weight", "transformer.wpe.weight"]
        for i in range(L):
            p = "transformer.h.%d." % i
            for sub in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc",
                        "mlp.c_proj"):
                names += [p + sub + ".weight", p + sub + ".bias"]
        names += ["transformer.ln_f.weight", "transformer.ln_f.bias"]
    return names


def linear_modules(cfg):
    """Every linear module LoRA can adapt, in model order: a list of
    (module path, base weight name, kind) with kind "linear" (nn.Linear, weight
    (out, in)) or "conv1d" (transformers Conv1D, weight (in, out)).

    The last entry is the output head lm_head (an nn.Linear in every *ForCausalLM
    and GPT2LMHeadModel; tied, its weight is the token embedding). Embeddings,
    norms and LFM2's depthwise conv.conv (an nn.Conv1d) are not linear modules."""
    L = cfg["num_hidden_layers"]
    mods = []
    if cfg["architecture"] == "llama":
        for i in range(L):
            p = "model.layers.%d." % i
            for sub in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                        "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
                        "mlp.down_proj"):
                mods.append((p + sub, p + sub + ".weight", "linear"))
        head = "model.embed_tokens.weight" if cfg["tie_word_embeddings"] else "lm_head.weight"
    elif cfg["architecture"] == "lfm2":
        for i, kind in enumerate(cfg["layer_types"]):
            p = "model.layers.%d." % i
            subs = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                    "self_attn.out_proj") if kind == "full_attention" else \
                ("conv.in_proj", "conv.out_proj")
            for sub in subs + ("feed_forward.w1", "feed_forward.w3", "feed_forward.w2"):
                mods.append((p + sub, p + sub + ".weight", "linear"))
        head = "model.embed_tokens.weight" if cfg["tie_word_embeddings"] else "lm_head.weight"
    else:
        for i in range(L):
            p = "transformer.h.%d." % i
            for sub in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
                mods.append((p + sub, p + sub + ".weight", "conv1d"))
        head = "transformer.wte.weight"
    mods.append(("lm_head", head, "linear"))
    return mods


def parse_lora_targets(targets):
    """A target_modules value: "all-linear", a comma-separated string or a list."""
    if isinstance(targets, str):
        if targets.strip() == "all-linear":
            return "all-linear"
        targets = targets.split(",")
    out = [t.strip() for t in targets if t.strip()]
    if not out:
        raise ValueError("no LoRA target modules given")
    return out


def lora_target_modules(cfg, targets):
    """The module paths PEFT adapts for target_modules, in model order, and the
    list entries that match no module.

    "all-linear" selects every linear module (nn.Linear and Conv1D) except the
    output embedding lm_head. A list entry matches a module whose path equals
    it or ends with "." + entry; PEFT offers every module to the match, but only
    linear ones are listed here (an entry naming a norm or an embedding would
    make PEFT adapt or reject a non-linear module, which this oracle does not
    model), so such entries are reported as matching nothing."""
    targets = parse_lora_targets(targets)
    mods = [m[0] for m in linear_modules(cfg)]
    if targets == "all-linear":
        return [m for m in mods if m != "lm_head"], []
    hit = [m for m in mods if any(m == t or m.endswith("." + t) for t in targets)]
    unmatched = [t for t in targets if not any(m == t or m.endswith("." + t) for m in mods)]
    return hit, unmatched


def attention_mask(doc):
    """(B, 1, T, T) bool: True where query t may attend key s."""
    T = doc.shape[1]
    idx = torch.arange(T, device=doc.device)
    causal = idx[None, :] <= idx[:, None]          # [t, s]: s <= t
    # A padding query (doc -1) belongs to no document: it sees only itself.
    same_doc = (doc[:, :, None] == doc[:, None, :]) & (doc[:, :, None] >= 0)  # [b, t, s]
    diag = idx[None, :] == idx[:, None]
    return ((causal[None] & same_doc) | diag[None])[:, None]


def attend(q, k, v, mask):
    """q (B, H, T, D), k, v (B, H, T, D) -> (B, H, T, D); scores scaled 1/sqrt(D)."""
    D = q.shape[-1]
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(D)
    scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(probs, v)


# bf16 matmuls as trl-hpc's bf16: true runs them: both inputs of each linear
# layer's product rounded to bf16 (round to nearest even), the product summed
# without further rounding and kept in the working dtype; in the backward the
# incoming gradient and the other operand are rounded the same way. Attention
# scores, norms, the loss and LoRA's small products stay unrounded. Set by the
# caller (check_parity.py for a case dumped with --bf16).
BF16_MATMUL = False


def bf16(x):
    """x rounded to bf16 and back to its dtype."""
    return x.to(torch.bfloat16).to(x.dtype)


class Bf16Matmul(torch.autograd.Function):
    """y = bf16(x) bf16(w), with dx = bf16(dy) bf16(w)^T, dw = bf16(x)^T bf16(dy)."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return torch.matmul(bf16(x), bf16(w))

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        g = bf16(dy)
        dx = torch.matmul(g, bf16(w).t())
        xr = bf16(x).reshape(-1, x.shape[-1])
        dw = torch.matmul(xr.t(), g.reshape(-1, g.shape[-1]))
        return dx, dw


def matmul_w(x, w):
    """x (..., in) times w (in, out): the product a linear layer runs."""
    return Bf16Matmul.apply(x, w) if BF16_MATMUL else torch.matmul(x, w)


def linear(x, w, b=None):
    """nn.Linear: w is (out, in), y = x w^T + b."""
    y = matmul_w(x, w.t())
    return y + b if b is not None else y


def linear32(x, w):
    """x w^T never rounded (LoRA's rank-r products)."""
    return torch.matmul(x, w.t())


def conv1d(x, w, b):
    """GPT-2 Conv1D: w is (in, out), y = x w + b."""
    return matmul_w(x, w) + b


LORA_PREFIX = "base_model.model."


def lora_names(path):
    """PEFT's saved names of the lora_A and lora_B weights of module path."""
    return (LORA_PREFIX + path + ".lora_A.weight", LORA_PREFIX + path + ".lora_B.weight")


def lora_scale(r, lora_alpha, use_rslora=False):
    """PEFT's scaling: lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora."""
    return float(lora_alpha) / (math.sqrt(r) if use_rslora else float(r))


def lora_delta(x, w, path, lora):
    """scale * (x A^T) B^T for the adapter of module path, or None without one.

    lora is None (no adapters) or {"scale": s} with optionally "r" (checked
    against the adapter shapes) and "used" (a set the paths are added to)."""
    if lora is None:
        return None
    a_name, b_name = lora_names(path)
    if a_name not in w and b_name not in w:
        return None
    if a_name not in w or b_name not in w:
        raise ValueError("module %s has only one of %s and %s" % (path, a_name, b_name))
    A, B = w[a_name], w[b_name]
    r = A.shape[0] if A.dim() == 2 else -1
    if A.dim() != 2 or B.dim() != 2 or A.shape[1] != x.shape[-1] or B.shape[1] != r \
            or ("r" in lora and r != int(lora["r"])):
        raise ValueError("%s adapters have shapes A %s, B %s; expected (r, %d) and "
                         "(out, r)%s" % (path, tuple(A.shape), tuple(B.shape), x.shape[-1],
                                         " with r %d" % lora["r"] if "r" in lora else ""))
    if "used" in lora:
        lora["used"].add(path)
    return linear32(linear32(x, A), B) * lora["scale"]


def lin(w, lora, path, x, bias=False, weight=None):
    """The nn.Linear module at path: path.weight (or the tensor named weight),
    path.bias when bias, plus its LoRA adapter if it has one."""
    y = linear(x, w[weight or path + ".weight"], w[path + ".bias"] if bias else None)
    d = lora_delta(x, w, path, lora)
    return y if d is None else y + d


def lin_conv1d(w, lora, path, x):
    """The transformers Conv1D module at path ((in, out) weight and a bias), plus
    its LoRA adapter (A (r, in), B (out, r): only the base weight is transposed)."""
    y = conv1d(x, w[path + ".weight"], w[path + ".bias"])
    d = lora_delta(x, w, path, lora)
    return y if d is None else y + d


def rms_norm(x, w, eps):
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope_cos_sin(pos, D, theta, dtype):
    """cos, sin (B, 1, T, D) for position ids pos (B, T)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    freqs = pos.to(torch.float64)[:, :, None] * inv_freq[None, None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) *
                                       (x + 0.044715 * torch.pow(x, 3.0))))


def rope_gqa_attend(q, k, v, cos, sin, mask):
    """q (B, T, H, D), k, v (B, T, KV, D) -> (B, T, H*D): RoPE on q and k, then
    grouped-query attention (query head j reads kv head j // (H / KV))."""
    B, T, H, D = q.shape
    KV = k.shape[2]
    q = q.transpose(1, 2)
    k = k.transpose(1, 2)
    v = v.transpose(1, 2)
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    k = k.repeat_interleave(H // KV, dim=1)
    v = v.repeat_interleave(H // KV, dim=1)
    return attend(q, k, v, mask).transpose(1, 2).reshape(B, T, H * D)


def llama_forward(w, cfg, ids, pos, doc, lora=None):
    B, T = ids.shape
    C = cfg["hidden_size"]
    H = cfg["num_attention_heads"]
    KV = cfg["num_key_value_heads"]
    D = cfg["head_dim"]
    eps = cfg["norm_eps"]
    emb = w["model.embed_tokens.weight"]
    x = emb[ids]
    cos, sin = rope_cos_sin(pos, D, cfg["rope_theta"], x.dtype)
    mask = attention_mask(doc)
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        qkv_bias = cfg["attention_bias"]
        q = lin(w, lora, p + "self_attn.q_proj", h, qkv_bias)
        k = lin(w, lora, p + "self_attn.k_proj", h, qkv_bias)
        v = lin(w, lora, p + "self_attn.v_proj", h, qkv_bias)
        q = q.view(B, T, H, D)
        k = k.view(B, T, KV, D)
        if cfg["qk_norm"]:
            # Qwen3: RMSNorm over each head's head_dim values, before RoPE.
            q = rms_norm(q, w[p + "self_attn.q_norm.weight"], eps)
            k = rms_norm(k, w[p + "self_attn.k_norm.weight"], eps)
        y = rope_gqa_attend(q, k, v.view(B, T, KV, D), cos, sin, mask)
        x = x + lin(w, lora, p + "self_attn.o_proj", y, cfg["o_bias"])
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = lin(w, lora, p + "mlp.gate_proj", h)
        up = lin(w, lora, p + "mlp.up_proj", h)
        x = x + lin(w, lora, p + "mlp.down_proj", torch.nn.functional.silu(gate) * up)
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = "model.embed_tokens.weight" if cfg["tie_word_embeddings"] else "lm_head.weight"
    return lin(w, lora, "lm_head", x, weight=head)


def gpt2_forward(w, cfg, ids, pos, doc, lora=None):
    B, T = ids.shape
    C = cfg["hidden_size"]
    H = cfg["num_attention_heads"]
    D = C // H
    eps = cfg["norm_eps"]
    ln = torch.nn.functional.layer_norm
    x = w["transformer.wte.weight"][ids] + w["transformer.wpe.weight"][pos]
    mask = attention_mask(doc)
    for i in range(cfg["num_hidden_layers"]):
        p = "transformer.h.%d." % i
        h = ln(x, (C,), w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        qkv = lin_conv1d(w, lora, p + "attn.c_attn", h)
        q, k, v = qkv.split(C, dim=-1)
        q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v))
        y = attend(q, k, v, mask).transpose(1, 2).reshape(B, T, C)
        x = x + lin_conv1d(w, lora, p + "attn.c_proj", y)
        h = ln(x, (C,), w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        h = gelu_new(lin_conv1d(w, lora, p + "mlp.c_fc", h))
        x = x + lin_conv1d(w, lora, p + "mlp.c_proj", h)
    x = ln(x, (C,), w["transformer.ln_f.weight"], w["transformer.ln_f.bias"], eps)
    return lin(w, lora, "lm_head", x, weight="transformer.wte.weight")


def doc_causal_conv(u, weight, bias, doc):
    """LFM2's depthwise causal convolution within packed documents.

    u (B, T, C), weight (C, 1, K) as Hugging Face stores conv.conv.weight (or
    (C, K)), bias (C) or None, doc (B, T). Returns z (B, T, C) with

        z[b, t, c] = sum_{k<K} weight[c, 0, k] * u[b, t-K+1+k, c]  (+ bias[c])

    where a tap at s = t-K+1+k counts only when s >= 0 and doc[b, s] == doc[b, t].
    Within one document this is Conv1d(groups=C, padding=K-1) cut to the first T
    outputs (no kernel flip); it is built here from shifted copies of u, one per
    tap, each masked by the same-document test, so it does not rely on conv1d.
    """
    B, T, C = u.shape
    K = weight.shape[-1]
    if weight.shape[0] != C or weight.numel() != C * K:
        raise ValueError("conv weight has shape %s; expected (%d, 1, K) or (%d, K)" %
                         (tuple(weight.shape), C, C))
    taps = weight.reshape(C, K)
    z = torch.zeros_like(u)
    for k in range(K):
        lag = K - 1 - k                      # the tap reads s = t - lag
        if lag >= T:
            continue
        same = (doc[:, lag:] == doc[:, :T - lag]).to(u.dtype)[..., None]  # (B, T-lag, 1)
        term = u[:, :T - lag] * taps[:, k] * same
        z = z + torch.cat((u.new_zeros(B, lag, C), term), dim=1)
    return z + bias if bias is not None else z


def lfm2_short_conv(h, w, cfg, p, doc, lora=None):
    """Lfm2ShortConv on the normed input h (B, T, C); p is "model.layers.i.conv.".

    in_proj gives 3C features split B | C | X; the gated input B*X goes
    through the convolution, and C gates its output before out_proj.
    """
    C = cfg["hidden_size"]
    bias = (lambda n: w[p + n + ".bias"]) if cfg["conv_bias"] else (lambda n: None)
    proj = lin(w, lora, p + "in_proj", h, cfg["conv_bias"])
    b_gate, c_gate, x = proj[..., :C], proj[..., C:2 * C], proj[..., 2 * C:]
    weight = w[p + "conv.weight"]
    if weight.shape[-1] != cfg["conv_L_cache"]:
        raise ValueError("%sconv.weight has shape %s; conv_L_cache is %d" %
                         (p, tuple(weight.shape), cfg["conv_L_cache"]))
    z = doc_causal_conv(b_gate * x, weight, bias("conv"), doc)
    return lin(w, lora, p + "out_proj", c_gate * z, cfg["conv_bias"])


def lfm2_forward(w, cfg, ids, pos, doc, lora=None):
    """Lfm2ForCausalLM: pre-norm blocks of (attention or short conv) and SwiGLU.

    Attention layers norm q and k per head (q_layernorm, k_layernorm: one
    (head_dim) weight shared by the heads) before RoPE; out_proj has no bias.
    model.embedding_norm is the final norm, applied after the last layer.
    """
    B, T = ids.shape
    H = cfg["num_attention_heads"]
    KV = cfg["num_key_value_heads"]
    D = cfg["head_dim"]
    eps = cfg["norm_eps"]
    emb = w["model.embed_tokens.weight"]
    x = emb[ids]
    cos, sin = rope_cos_sin(pos, D, cfg["rope_theta"], x.dtype)
    mask = attention_mask(doc)
    for i, kind in enumerate(cfg["layer_types"]):
        p = "model.layers.%d." % i
        h = rms_norm(x, w[p + "operator_norm.weight"], eps)
        if kind == "full_attention":
            a = p + "self_attn."
            q = lin(w, lora, a + "q_proj", h).view(B, T, H, D)
            k = lin(w, lora, a + "k_proj", h).view(B, T, KV, D)
            v = lin(w, lora, a + "v_proj", h).view(B, T, KV, D)
            q = rms_norm(q, w[a + "q_layernorm.weight"], eps)
            k = rms_norm(k, w[a + "k_layernorm.weight"], eps)
            y = rope_gqa_attend(q, k, v, cos, sin, mask)
            x = x + lin(w, lora, a + "out_proj", y)
        else:
            x = x + lfm2_short_conv(h, w, cfg, p + "conv.", doc, lora)
        h = rms_norm(x, w[p + "ffn_norm.weight"], eps)
        f = p + "feed_forward."
        gate = lin(w, lora, f + "w1", h)
        up = lin(w, lora, f + "w3", h)
        x = x + lin(w, lora, f + "w2", torch.nn.functional.silu(gate) * up)
    x = rms_norm(x, w["model.embedding_norm.weight"], eps)
    head = "model.embed_tokens.weight" if cfg["tie_word_embeddings"] else "lm_head.weight"
    return lin(w, lora, "lm_head", x, weight=head)


def forward(weights, cfg, ids, pos, doc, lora=None):
    """Logits (B, T, V) for int64 tensors ids, pos, doc (B, T).

    lora: None, or {"scale": s} (and optionally "r") to add the LoRA adapters
    found in weights (base_model.model.<module>.lora_A/B.weight). Every adapter
    tensor must belong to a module the forward applies, and adapters without
    lora raise, so none is silently ignored."""
    cfg = normalize_config(cfg)
    adapters = sorted(n for n in weights if n.startswith(LORA_PREFIX))
    if lora is None and adapters:
        raise ValueError("weights hold LoRA adapters (%s, ...) but no lora scale was "
                         "given" % adapters[0])
    if lora is not None:
        lora = dict(lora, used=set())
    if cfg["architecture"] == "llama":
        logits = llama_forward(weights, cfg, ids, pos, doc, lora)
    elif cfg["architecture"] == "lfm2":
        logits = lfm2_forward(weights, cfg, ids, pos, doc, lora)
    else:
        logits = gpt2_forward(weights, cfg, ids, pos, doc, lora)
    if lora is not None:
        used = set(n for path in lora["used"] for n in lora_names(path))
        unused = [n for n in adapters if n not in used]
        if unused:
            raise ValueError("LoRA tensors of no module this model applies: %s" %
                             ", ".join(unused))
    return logits


def loss_fn(logits, targets):
    """Mean cross-entropy over positions whose target is not -1."""
    V = logits.shape[-1]
    flat = logits.reshape(-1, V)
    t = targets.reshape(-1)
    keep = t != -1
    logp = torch.log_softmax(flat[keep], dim=-1)
    nll = -logp.gather(1, t[keep][:, None]).squeeze(1)
    return nll.sum() / keep.sum()


def forward_backward(weights, cfg, ids, pos, doc, targets, dtype=torch.float64,
                     lora=None, trainable=None):
    """Runs forward and backward in dtype. Returns (logits, loss, grads by name).

    trainable: the names that get gradients; by default every tensor, or with
    lora (see forward) only the adapters, the base being frozen."""
    if trainable is None and lora is not None:
        trainable = [n for n in weights if n.startswith(LORA_PREFIX)]
    trainable = None if trainable is None else set(trainable)
    w = {n: t.detach().to(dtype).clone().requires_grad_(trainable is None or n in trainable)
         for n, t in weights.items()}
    logits = forward(w, cfg, ids, pos, doc, lora)
    loss = loss_fn(logits, targets)
    loss.backward()
    grads = {n: t.grad for n, t in w.items() if t.grad is not None}
    return logits.detach(), loss.detach(), grads


def conv_self_check(seed=0, dtype=torch.float64):
    """Compares doc_causal_conv with torch's Conv1d(groups=C, padding=K-1) on rows
    that hold one document, and checks that a second packed document starts
    from zeros. Returns the largest absolute difference; raises on a mismatch."""
    g = torch.Generator().manual_seed(seed)
    B, T, C, K = 2, 11, 6, 3
    u = torch.randn(B, T, C, generator=g, dtype=dtype)
    weight = torch.randn(C, 1, K, generator=g, dtype=dtype)
    bias = torch.randn(C, generator=g, dtype=dtype)
    one_doc = torch.zeros(B, T, dtype=torch.long)
    got = doc_causal_conv(u, weight, bias, one_doc)
    ref = torch.nn.functional.conv1d(u.transpose(1, 2), weight, bias, padding=K - 1,
                                     groups=C)[..., :T].transpose(1, 2)
    err = float((got - ref).abs().max())
    if not err <= 1e-12:
        raise AssertionError("doc_causal_conv differs from conv1d by %.3e" % err)
    cut = 5
    doc = torch.cat((torch.zeros(B, cut, dtype=torch.long),
                     torch.ones(B, T - cut, dtype=torch.long)), dim=1)
    got = doc_causal_conv(u, weight, bias, doc)
    ref2 = torch.nn.functional.conv1d(u[:, cut:].transpose(1, 2), weight, bias,
                                      padding=K - 1, groups=C)[..., :T - cut]
    err2 = float((got[:, cut:] - ref2.transpose(1, 2)).abs().max())
    err3 = float((got[:, :cut] - ref[:, :cut]).abs().max())
    if not max(err2, err3) <= 1e-12:
        raise AssertionError("a packed document's convolution differs by %.3e" %
                             max(err2, err3))
    return max(err, err2, err3)


if __name__ == "__main__":
    print("conv_self_check: max abs diff %.3e" % conv_self_check())
