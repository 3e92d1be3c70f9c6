/* params.c - the parameter table of each architecture, in Hugging Face names. */
#include "params.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct Builder {
	ParamTable *t;
	int cap;
	size_t off;
	int too_big; /* a size overflowed or passed TRL_PARAMS_MAX */
} Builder;

/* More floats than any model trl-hpc can hold (16 TiB): shapes from a
 * config.json past this are rejected before anything is allocated. */
#define TRL_PARAMS_MAX ((size_t)1 << 42)

/* Appends one tensor; offsets are rounded up to 16 floats (64 bytes) so every
 * tensor starts on a cache line. */
static int add(Builder *bl, TrlParamKind kind, int layer, size_t d0, size_t d1,
               const char *fmt, ...)
{
	ParamTable *t = bl->t;
	if (t->n == bl->cap) {
		int cap = bl->cap ? 2 * bl->cap : 64;
		ParamInfo *p = realloc(t->p, (size_t)cap * sizeof *p);
		if (!p)
			return TRL_ENOMEM;
		t->p = p;
		bl->cap = cap;
	}
	ParamInfo *pi = &t->p[t->n++];
	memset(pi, 0, sizeof *pi);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(pi->name, sizeof pi->name, fmt, ap);
	va_end(ap);
	pi->ndim = d1 ? 2 : 1;
	pi->shape[0] = d0;
	pi->shape[1] = d1;
	if (__builtin_mul_overflow(d0, d1 ? d1 : 1, &pi->numel) ||
	    pi->numel > TRL_PARAMS_MAX || bl->off > TRL_PARAMS_MAX) {
		bl->too_big = 1;
		pi->numel = 0;
	}
	pi->kind = kind;
	pi->layer = layer;
	pi->offset = bl->off;
	bl->off += (pi->numel + 15) & ~(size_t)15;
	return TRL_OK;
}

/* The attention tensors of llama-family layer l (lfm2's too): q, k, v and
 * the output projection `out` (o_proj, lfm2's out_proj), each followed by its
 * bias when it has one, then the per-head q and k norms named q_<norm>,
 * k_<norm> (qwen3's norm, lfm2's layernorm) when norm is not NULL. */
static int add_attention(Builder *bl, int l, size_t C, size_t QD, size_t KVD, size_t D,
                         int qkv_bias, int o_bias, const char *out, const char *norm)
{
	int rc = add(bl, TRL_PARAM_MATRIX, l, QD, C,
	             "model.layers.%d.self_attn.q_proj.weight", l);
	if (qkv_bias)
		rc |= add(bl, TRL_PARAM_BIAS, l, QD, 0,
		          "model.layers.%d.self_attn.q_proj.bias", l);
	rc |= add(bl, TRL_PARAM_MATRIX, l, KVD, C,
	          "model.layers.%d.self_attn.k_proj.weight", l);
	if (qkv_bias)
		rc |= add(bl, TRL_PARAM_BIAS, l, KVD, 0,
		          "model.layers.%d.self_attn.k_proj.bias", l);
	rc |= add(bl, TRL_PARAM_MATRIX, l, KVD, C,
	          "model.layers.%d.self_attn.v_proj.weight", l);
	if (qkv_bias)
		rc |= add(bl, TRL_PARAM_BIAS, l, KVD, 0,
		          "model.layers.%d.self_attn.v_proj.bias", l);
	rc |= add(bl, TRL_PARAM_MATRIX, l, C, QD, "model.layers.%d.self_attn.%s.weight",
	          l, out);
	if (o_bias)
		rc |= add(bl, TRL_PARAM_BIAS, l, C, 0,
		          "model.layers.%d.self_attn.%s.bias", l, out);
	if (norm) {
		rc |= add(bl, TRL_PARAM_NORM, l, D, 0,
		          "model.layers.%d.self_attn.q_%s.weight", l, norm);
		rc |= add(bl, TRL_PARAM_NORM, l, D, 0,
		          "model.layers.%d.self_attn.k_%s.weight", l, norm);
	}
	return rc;
}

/* A SwiGLU feed-forward of layer l: model.layers.<l>.<blk>.<gate|up|down>. */
static int add_swiglu(Builder *bl, int l, size_t C, size_t I, const char *blk,
                      const char *gate, const char *up, const char *down)
{
	int rc = add(bl, TRL_PARAM_MATRIX, l, I, C, "model.layers.%d.%s.%s.weight", l,
	             blk, gate);
	rc |= add(bl, TRL_PARAM_MATRIX, l, I, C, "model.layers.%d.%s.%s.weight", l, blk,
	          up);
	rc |= add(bl, TRL_PARAM_MATRIX, l, C, I, "model.layers.%d.%s.%s.weight", l, blk,
	          down);
	return rc;
}

int params_build(ParamTable *t, const ModelConfig *mc, TrlErr *err)
{
	memset(t, 0, sizeof *t);
	Builder bl = {t, 0, 0, 0};
	size_t V = (size_t)mc->vocab_size, C = (size_t)mc->hidden_size;
	size_t I = (size_t)mc->intermediate_size, L = (size_t)mc->num_hidden_layers;
	size_t D =
	    mc->head_dim > 0 ? (size_t)mc->head_dim : C / (size_t)mc->num_attention_heads;
	size_t QD = D * (size_t)mc->num_attention_heads;
	size_t KVD = D * (size_t)mc->num_key_value_heads;
	int o_bias = model_config_o_bias(mc);
	int rc = 0;
	t->num_layers = (int)L;
	t->layer_begin = calloc(L, sizeof *t->layer_begin);
	t->layer_end = calloc(L, sizeof *t->layer_end);
	if (!t->layer_begin || !t->layer_end)
		goto nomem;

	if (mc->arch == TRL_ARCH_LFM2) {
		/* Hugging Face's Lfm2ForCausalLM names; the final norm is
		 * embedding_norm despite its name. */
		size_t K = (size_t)mc->conv_L_cache;
		rc |=
		    add(&bl, TRL_PARAM_EMBEDDING, -1, V, C, "model.embed_tokens.weight");
		for (int l = 0; l < (int)L; l++) {
			t->layer_begin[l] = bl.off;
			const char *p = "model.layers";
			rc |= add(&bl, TRL_PARAM_NORM, l, C, 0,
			          "%s.%d.operator_norm.weight", p, l);
			if (mc->attn_layer[l]) {
				rc |= add_attention(&bl, l, C, QD, KVD, D, 0, 0,
				                    "out_proj", "layernorm");
			} else {
				/* conv.conv.weight is (C, 1, K) in the file; stored as
				 * the (C, K) matrix it is. */
				rc |= add(&bl, TRL_PARAM_MATRIX, l, 3 * C, C,
				          "%s.%d.conv.in_proj.weight", p, l);
				if (mc->conv_bias)
					rc |= add(&bl, TRL_PARAM_BIAS, l, 3 * C, 0,
					          "%s.%d.conv.in_proj.bias", p, l);
				rc |= add(&bl, TRL_PARAM_MATRIX, l, C, K,
				          "%s.%d.conv.conv.weight", p, l);
				t->p[t->n - 1].conv_kernel = 1;
				if (mc->conv_bias)
					rc |= add(&bl, TRL_PARAM_BIAS, l, C, 0,
					          "%s.%d.conv.conv.bias", p, l);
				rc |= add(&bl, TRL_PARAM_MATRIX, l, C, C,
				          "%s.%d.conv.out_proj.weight", p, l);
				if (mc->conv_bias)
					rc |= add(&bl, TRL_PARAM_BIAS, l, C, 0,
					          "%s.%d.conv.out_proj.bias", p, l);
			}
			rc |= add(&bl, TRL_PARAM_NORM, l, C, 0, "%s.%d.ffn_norm.weight",
			          p, l);
			rc |= add_swiglu(&bl, l, C, I, "feed_forward", "w1", "w3", "w2");
			t->layer_end[l] = bl.off;
		}
		rc |= add(&bl, TRL_PARAM_NORM, -1, C, 0, "model.embedding_norm.weight");
	} else if (mc->arch == TRL_ARCH_GPT2) {
		rc |= add(&bl, TRL_PARAM_EMBEDDING, -1, V, C, "transformer.wte.weight");
		rc |=
		    add(&bl, TRL_PARAM_EMBEDDING, -1, (size_t)mc->max_position_embeddings,
		        C, "transformer.wpe.weight");
		for (int l = 0; l < (int)L; l++) {
			t->layer_begin[l] = bl.off;
			const char *h = "transformer.h";
			rc |=
			    add(&bl, TRL_PARAM_NORM, l, C, 0, "%s.%d.ln_1.weight", h, l);
			rc |= add(&bl, TRL_PARAM_NORM, l, C, 0, "%s.%d.ln_1.bias", h, l);
			rc |= add(&bl, TRL_PARAM_MATRIX, l, C, 3 * C,
			          "%s.%d.attn.c_attn.weight", h, l);
			rc |= add(&bl, TRL_PARAM_BIAS, l, 3 * C, 0,
			          "%s.%d.attn.c_attn.bias", h, l);
			rc |= add(&bl, TRL_PARAM_MATRIX, l, C, C,
			          "%s.%d.attn.c_proj.weight", h, l);
			rc |= add(&bl, TRL_PARAM_BIAS, l, C, 0, "%s.%d.attn.c_proj.bias",
			          h, l);
			rc |=
			    add(&bl, TRL_PARAM_NORM, l, C, 0, "%s.%d.ln_2.weight", h, l);
			rc |= add(&bl, TRL_PARAM_NORM, l, C, 0, "%s.%d.ln_2.bias", h, l);
			rc |= add(&bl, TRL_PARAM_MATRIX, l, C, I, "%s.%d.mlp.c_fc.weight",
			          h, l);
			rc |= add(&bl, TRL_PARAM_BIAS, l, I, 0, "%s.%d.mlp.c_fc.bias", h,
			          l);
			rc |= add(&bl, TRL_PARAM_MATRIX, l, I, C,
			          "%s.%d.mlp.c_proj.weight", h, l);
			rc |= add(&bl, TRL_PARAM_BIAS, l, C, 0, "%s.%d.mlp.c_proj.bias",
			          h, l);
			t->layer_end[l] = bl.off;
		}
		rc |= add(&bl, TRL_PARAM_NORM, -1, C, 0, "transformer.ln_f.weight");
		rc |= add(&bl, TRL_PARAM_NORM, -1, C, 0, "transformer.ln_f.bias");
	} else {
		rc |=
		    add(&bl, TRL_PARAM_EMBEDDING, -1, V, C, "model.embed_tokens.weight");
		for (int l = 0; l < (int)L; l++) {
			t->layer_begin[l] = bl.off;
			const char *p = "model.layers";
			rc |= add(&bl, TRL_PARAM_NORM, l, C, 0,
			          "%s.%d.input_layernorm.weight", p, l);
			rc |=
			    add_attention(&bl, l, C, QD, KVD, D, mc->attention_bias,
			                  o_bias, "o_proj", mc->qk_norm ? "norm" : NULL);
			rc |= add(&bl, TRL_PARAM_NORM, l, C, 0,
			          "%s.%d.post_attention_layernorm.weight", p, l);
			rc |= add_swiglu(&bl, l, C, I, "mlp", "gate_proj", "up_proj",
			                 "down_proj");
			t->layer_end[l] = bl.off;
		}
		rc |= add(&bl, TRL_PARAM_NORM, -1, C, 0, "model.norm.weight");
	}
	/* An untied causal LM's output head (gpt2 always ties). */
	if (mc->arch != TRL_ARCH_GPT2 && !mc->tie_word_embeddings && mc->num_labels <= 0)
		rc |= add(&bl, TRL_PARAM_MATRIX, -1, V, C, "lm_head.weight");
	/* A sequence classifier's head replaces lm_head (Hugging Face's
	 * *ForSequenceClassification: a bias-free Linear named score). */
	if (mc->num_labels > 0)
		rc |= add(&bl, TRL_PARAM_MATRIX, -1, (size_t)mc->num_labels, C,
		          "score.weight");
	if (rc)
		goto nomem;
	if (bl.too_big || bl.off > TRL_PARAMS_MAX) {
		params_free(t);
		return trl_errf(
		    err, TRL_EINVAL,
		    "model shape too large (vocab_size %d, hidden_size %d, "
		    "intermediate_size %d, %d layers): more than 2^42 parameters",
		    mc->vocab_size, mc->hidden_size, mc->intermediate_size,
		    mc->num_hidden_layers);
	}
	t->total = bl.off;
	return TRL_OK;
nomem:
	params_free(t);
	return trl_errf(err, TRL_ENOMEM, "out of memory building the parameter table");
}

int params_append(ParamTable *t, int *cap, TrlParamKind kind, int layer, size_t d0,
                  size_t d1, const char *name)
{
	Builder bl = {t, *cap, t->total, 0};
	int rc = add(&bl, kind, layer, d0, d1, "%s", name);
	*cap = bl.cap;
	t->total = bl.off;
	return rc || bl.too_big ? TRL_ENOMEM : TRL_OK;
}

void params_free(ParamTable *t)
{
	free(t->p);
	free(t->layer_begin);
	free(t->layer_end);
	memset(t, 0, sizeof *t);
}

int params_units(const ParamTable *t, size_t *begin, size_t *end)
{
	int L = t->num_layers, U = L + 2;
	if (!begin || !end)
		return U;
	begin[0] = 0;
	end[0] = L > 0 ? t->layer_begin[0] : t->total;
	for (int l = 0; l < L; l++) {
		begin[l + 1] = t->layer_begin[l];
		end[l + 1] = t->layer_end[l];
	}
	begin[U - 1] = L > 0 ? t->layer_end[L - 1] : t->total;
	end[U - 1] = t->total;
	return U;
}

int params_file_shape(const ParamInfo *p, int64_t shape[3])
{
	shape[0] = (int64_t)p->shape[0];
	shape[1] = p->conv_kernel ? 1 : (int64_t)p->shape[1];
	shape[2] = p->conv_kernel ? (int64_t)p->shape[1] : 0;
	return p->conv_kernel ? 3 : p->ndim;
}

const ParamInfo *params_find(const ParamTable *t, const char *name)
{
	for (int i = 0; i < t->n; i++)
		if (strcmp(t->p[i].name, name) == 0)
			return &t->p[i];
	return NULL;
}
