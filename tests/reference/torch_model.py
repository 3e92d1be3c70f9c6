"""torch_model.py - an independent PyTorch oracle for trl-hpc's forward pass and loss.

Functional implementations of the two architectures trl-hpc trains, written
from the published semantics of Hugging Face LlamaForCausalLM, Qwen2ForCausalLM,
Qwen3ForCausalLM, MistralForCausalLM and GPT2LMHeadModel. Weights are a dict
{Hugging Face name: tensor}; the config is a dict with the keys

    architecture ("llama" | "gpt2"), model_type ("llama", "qwen2", "qwen3",
    "mistral", "gpt2"), vocab_size, hidden_size, num_hidden_layers,
    num_attention_heads, num_key_value_heads, head_dim, intermediate_size,
    max_position_embeddings, rope_theta, norm_eps, tie_word_embeddings,
    attention_bias (q/k/v biases), o_bias (o_proj bias: llama and qwen3 with
    attention_bias), qk_norm (qwen3 q_norm/k_norm)

(normalize_config also accepts the Hugging Face config.json spellings and
fills the keys each model_type implies).

The batch carries position ids and document ids (B, T). Attention follows
trl-hpc's rule: query t attends key s iff (s <= t and doc[s] == doc[t] >= 0)
or s == t, so packed documents never see each other and padding (doc = -1) sees
only itself. Everything runs in the dtype of the weights (float64 for parity).
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
    else:
        names += ["transformer.wte.weight", "transformer.wpe.weight"]
        for i in range(L):
            p = "transformer.h.%d." % i
            for sub in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc",
                        "mlp.c_proj"):
                names += [p + sub + ".weight", p + sub + ".bias"]
        names += ["transformer.ln_f.weight", "transformer.ln_f.bias"]
    return names


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


def linear(x, w, b=None):
    """nn.Linear: w is (out, in), y = x w^T + b."""
    y = torch.matmul(x, w.t())
    return y + b if b is not None else y


def conv1d(x, w, b):
    """GPT-2 Conv1D: w is (in, out), y = x w + b."""
    return torch.matmul(x, w) + b


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


def llama_forward(w, cfg, ids, pos, doc):
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
        bias = (lambda n: w[p + "self_attn.%s_proj.bias" % n]) if cfg["attention_bias"] \
            else (lambda n: None)
        q = linear(h, w[p + "self_attn.q_proj.weight"], bias("q"))
        k = linear(h, w[p + "self_attn.k_proj.weight"], bias("k"))
        v = linear(h, w[p + "self_attn.v_proj.weight"], bias("v"))
        q = q.view(B, T, H, D)
        k = k.view(B, T, KV, D)
        if cfg["qk_norm"]:
            # Qwen3: RMSNorm over each head's head_dim values, before RoPE.
            q = rms_norm(q, w[p + "self_attn.q_norm.weight"], eps)
            k = rms_norm(k, w[p + "self_attn.k_norm.weight"], eps)
        q = q.transpose(1, 2)
        k = k.transpose(1, 2)
        v = v.view(B, T, KV, D).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        # Grouped-query attention: query head j reads kv head j // (H / KV).
        k = k.repeat_interleave(H // KV, dim=1)
        v = v.repeat_interleave(H // KV, dim=1)
        y = attend(q, k, v, mask).transpose(1, 2).reshape(B, T, H * D)
        x = x + linear(y, w[p + "self_attn.o_proj.weight"],
                       w[p + "self_attn.o_proj.bias"] if cfg["o_bias"] else None)
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = linear(h, w[p + "mlp.gate_proj.weight"])
        up = linear(h, w[p + "mlp.up_proj.weight"])
        x = x + linear(torch.nn.functional.silu(gate) * up, w[p + "mlp.down_proj.weight"])
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = emb if cfg["tie_word_embeddings"] else w["lm_head.weight"]
    return linear(x, head)


def gpt2_forward(w, cfg, ids, pos, doc):
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
        qkv = conv1d(h, w[p + "attn.c_attn.weight"], w[p + "attn.c_attn.bias"])
        q, k, v = qkv.split(C, dim=-1)
        q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v))
        y = attend(q, k, v, mask).transpose(1, 2).reshape(B, T, C)
        x = x + conv1d(y, w[p + "attn.c_proj.weight"], w[p + "attn.c_proj.bias"])
        h = ln(x, (C,), w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        h = gelu_new(conv1d(h, w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"]))
        x = x + conv1d(h, w[p + "mlp.c_proj.weight"], w[p + "mlp.c_proj.bias"])
    x = ln(x, (C,), w["transformer.ln_f.weight"], w["transformer.ln_f.bias"], eps)
    return linear(x, w["transformer.wte.weight"])


def forward(weights, cfg, ids, pos, doc):
    """Logits (B, T, V) for int64 tensors ids, pos, doc (B, T)."""
    cfg = normalize_config(cfg)
    if cfg["architecture"] == "llama":
        return llama_forward(weights, cfg, ids, pos, doc)
    return gpt2_forward(weights, cfg, ids, pos, doc)


def loss_fn(logits, targets):
    """Mean cross-entropy over positions whose target is not -1."""
    V = logits.shape[-1]
    flat = logits.reshape(-1, V)
    t = targets.reshape(-1)
    keep = t != -1
    logp = torch.log_softmax(flat[keep], dim=-1)
    nll = -logp.gather(1, t[keep][:, None]).squeeze(1)
    return nll.sum() / keep.sum()


def forward_backward(weights, cfg, ids, pos, doc, targets, dtype=torch.float64):
    """Runs forward and backward in dtype. Returns (logits, loss, grads by name)."""
    w = {n: t.detach().to(dtype).clone().requires_grad_(True) for n, t in weights.items()}
    logits = forward(w, cfg, ids, pos, doc)
    loss = loss_fn(logits, targets)
    loss.backward()
    grads = {n: t.grad for n, t in w.items() if t.grad is not None}
    return logits.detach(), loss.detach(), grads
