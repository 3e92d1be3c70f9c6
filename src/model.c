/* model.c - llama-family, gpt2 and lfm2 forward/backward over the parameter slab. */
#include "model.h"

#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "layers.h"
#include "shortconv.h"
#include "lora.h"
#include "rng.h"

int batch_alloc(Batch *b, int B, int T, TrlErr *err)
{
	memset(b, 0, sizeof *b);
	size_t n = (size_t)B * T;
	b->ids = trl_alloc(n * sizeof(int32_t));
	b->pos = trl_alloc(n * sizeof(int32_t));
	b->doc = trl_alloc(n * sizeof(int32_t));
	b->targets = trl_alloc(n * sizeof(int32_t));
	if (!b->ids || !b->pos || !b->doc || !b->targets) {
		batch_free(b);
		return trl_errf(err, TRL_ENOMEM, "out of memory for a (%d, %d) batch", B,
		                T);
	}
	b->B = B;
	b->T = T;
	return TRL_OK;
}

void batch_free(Batch *b)
{
	trl_free(b->ids);
	trl_free(b->pos);
	trl_free(b->doc);
	trl_free(b->targets);
	memset(b, 0, sizeof *b);
}

/* The slab address of the tensor named by the format, or NULL when the
 * architecture has no such tensor. */
static float *ptr(const ParamTable *t, float *base, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static float *ptr(const ParamTable *t, float *base, const char *fmt, ...)
{
	char name[TRL_PARAM_NAME_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(name, sizeof name, fmt, ap);
	va_end(ap);
	const ParamInfo *p = params_find(t, name);
	return p ? base + p->offset : NULL;
}

static int wire(const ModelConfig *mc, const ParamTable *t, float *base, ModelPtrs *w)
{
	int L = mc->num_hidden_layers;
	w->layer = calloc((size_t)L, sizeof *w->layer);
	if (!w->layer)
		return TRL_ENOMEM;
	if (mc->arch == TRL_ARCH_GPT2) {
		w->wte = ptr(t, base, "transformer.wte.weight");
		w->wpe = ptr(t, base, "transformer.wpe.weight");
		w->lnf_w = ptr(t, base, "transformer.ln_f.weight");
		w->lnf_b = ptr(t, base, "transformer.ln_f.bias");
		w->lm_head = mc->num_labels > 0 ? ptr(t, base, "score.weight") : w->wte;
		for (int l = 0; l < L; l++) {
			LayerPtrs *p = &w->layer[l];
			const char *h = "transformer.h";
			p->ln1_w = ptr(t, base, "%s.%d.ln_1.weight", h, l);
			p->ln1_b = ptr(t, base, "%s.%d.ln_1.bias", h, l);
			p->qkv_w = ptr(t, base, "%s.%d.attn.c_attn.weight", h, l);
			p->qkv_b = ptr(t, base, "%s.%d.attn.c_attn.bias", h, l);
			p->o_w = ptr(t, base, "%s.%d.attn.c_proj.weight", h, l);
			p->o_b = ptr(t, base, "%s.%d.attn.c_proj.bias", h, l);
			p->ln2_w = ptr(t, base, "%s.%d.ln_2.weight", h, l);
			p->ln2_b = ptr(t, base, "%s.%d.ln_2.bias", h, l);
			p->fc_w = ptr(t, base, "%s.%d.mlp.c_fc.weight", h, l);
			p->fc_b = ptr(t, base, "%s.%d.mlp.c_fc.bias", h, l);
			p->proj_w = ptr(t, base, "%s.%d.mlp.c_proj.weight", h, l);
			p->proj_b = ptr(t, base, "%s.%d.mlp.c_proj.bias", h, l);
		}
	} else {
		/* llama family, and lfm2 under its own names: operator_norm,
		 * self_attn.out_proj, q/k_layernorm, ffn_norm, feed_forward.w1/w3/w2
		 * and the final embedding_norm. */
		int lfm2 = mc->arch == TRL_ARCH_LFM2;
		const char *ln1 = lfm2 ? "operator_norm" : "input_layernorm";
		const char *ln2 = lfm2 ? "ffn_norm" : "post_attention_layernorm";
		const char *o = lfm2 ? "out_proj" : "o_proj";
		const char *qn = lfm2 ? "q_layernorm" : "q_norm";
		const char *kn = lfm2 ? "k_layernorm" : "k_norm";
		const char *gate = lfm2 ? "feed_forward.w1" : "mlp.gate_proj";
		const char *up = lfm2 ? "feed_forward.w3" : "mlp.up_proj";
		const char *down = lfm2 ? "feed_forward.w2" : "mlp.down_proj";
		w->wte = ptr(t, base, "model.embed_tokens.weight");
		w->lnf_w = ptr(
		    t, base, lfm2 ? "model.embedding_norm.weight" : "model.norm.weight");
		w->lm_head = mc->num_labels > 0        ? ptr(t, base, "score.weight")
		             : mc->tie_word_embeddings ? w->wte
		                                       : ptr(t, base, "lm_head.weight");
		for (int l = 0; l < L; l++) {
			LayerPtrs *p = &w->layer[l];
			const char *m = "model.layers";
			p->ln1_w = ptr(t, base, "%s.%d.%s.weight", m, l, ln1);
			p->q_w = ptr(t, base, "%s.%d.self_attn.q_proj.weight", m, l);
			p->k_w = ptr(t, base, "%s.%d.self_attn.k_proj.weight", m, l);
			p->v_w = ptr(t, base, "%s.%d.self_attn.v_proj.weight", m, l);
			p->o_w = ptr(t, base, "%s.%d.self_attn.%s.weight", m, l, o);
			p->o_b = ptr(t, base, "%s.%d.self_attn.%s.bias", m, l, o);
			p->q_norm = ptr(t, base, "%s.%d.self_attn.%s.weight", m, l, qn);
			p->k_norm = ptr(t, base, "%s.%d.self_attn.%s.weight", m, l, kn);
			p->q_b = ptr(t, base, "%s.%d.self_attn.q_proj.bias", m, l);
			p->k_b = ptr(t, base, "%s.%d.self_attn.k_proj.bias", m, l);
			p->v_b = ptr(t, base, "%s.%d.self_attn.v_proj.bias", m, l);
			p->ln2_w = ptr(t, base, "%s.%d.%s.weight", m, l, ln2);
			p->gate_w = ptr(t, base, "%s.%d.%s.weight", m, l, gate);
			p->up_w = ptr(t, base, "%s.%d.%s.weight", m, l, up);
			p->down_w = ptr(t, base, "%s.%d.%s.weight", m, l, down);
			p->in_w = ptr(t, base, "%s.%d.conv.in_proj.weight", m, l);
			p->in_b = ptr(t, base, "%s.%d.conv.in_proj.bias", m, l);
			p->conv_w = ptr(t, base, "%s.%d.conv.conv.weight", m, l);
			p->conv_b = ptr(t, base, "%s.%d.conv.conv.bias", m, l);
			p->cout_w = ptr(t, base, "%s.%d.conv.out_proj.weight", m, l);
			p->cout_b = ptr(t, base, "%s.%d.conv.out_proj.bias", m, l);
		}
	}
	return TRL_OK;
}

/* Units (params_units): the embeddings, each layer, the final norm. */
static int build_units(Model *m)
{
	const ParamTable *t = &m->table;
	int U = params_units(t, NULL, NULL);
	m->unit_begin = calloc((size_t)U, sizeof(size_t));
	m->unit_end = calloc((size_t)U, sizeof(size_t));
	m->unit_w = calloc((size_t)U, sizeof(float *));
	m->unit_g = calloc((size_t)U, sizeof(float *));
	if (!m->unit_begin || !m->unit_end || !m->unit_w || !m->unit_g)
		return TRL_ENOMEM;
	m->n_units = params_units(t, m->unit_begin, m->unit_end);
	return TRL_OK;
}

/* The adapters' pointers (model_init_adapters): lora_a / lora_b of every
 * adapted module, and lm_head at a copied head. */
static int wire_adapters(const ModelConfig *mc, const ParamTable *t, float *base,
                         ModelPtrs *w)
{
	int L = mc->num_hidden_layers;
	w->layer = calloc((size_t)L, sizeof *w->layer);
	if (!w->layer)
		return TRL_ENOMEM;
	char path[TRL_PARAM_NAME_MAX];
	for (int l = 0; l < L; l++)
		for (int mod = 0; mod < LORA_NMOD; mod++) {
			int in, out;
			if (!lora_module_path(mc, l, (LoraModule)mod, path, sizeof path,
			                      &in, &out))
				continue;
			w->layer[l].lora_a[mod] =
			    ptr(t, base, "base_model.model.%s.lora_A.weight", path);
			w->layer[l].lora_b[mod] =
			    ptr(t, base, "base_model.model.%s.lora_B.weight", path);
		}
	w->lm_head = ptr(t, base, "base_model.model.score.weight");
	if (!w->lm_head)
		w->lm_head = ptr(t, base, "base_model.model.lm_head.weight");
	return TRL_OK;
}

/* The slabs (as flags allow), units and pointers of m, whose table is built.
 * A frozen model wires no gradient pointers: they all stay NULL. */
static int init_slabs(Model *m, unsigned flags, int adapters, TrlErr *err)
{
	if (flags & MODEL_FROZEN)
		flags |= MODEL_NO_GRADS;
	m->frozen = (flags & MODEL_FROZEN) != 0;
	size_t bytes = m->table.total * sizeof(float);
	if (!(flags & MODEL_NO_PARAMS))
		m->params = trl_alloc(bytes);
	if (!(flags & MODEL_NO_GRADS))
		m->grads = trl_alloc(bytes);
	if ((!(flags & MODEL_NO_PARAMS) && !m->params) ||
	    (!(flags & MODEL_NO_GRADS) && !m->grads))
		goto nomem;
	if (flags & (MODEL_NO_PARAMS | MODEL_NO_GRADS)) {
		/* Address space only: pointers into it are valid to compute and
		 * to rebind from, and any use before model_bind_unit faults. */
		m->reserve = mmap(NULL, bytes, PROT_NONE,
		                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (m->reserve == MAP_FAILED) {
			m->reserve = NULL;
			goto nomem;
		}
		m->reserve_bytes = bytes;
	}
	float *wbase = m->params ? m->params : m->reserve;
	float *gbase = m->grads ? m->grads : m->reserve;
	int (*wirer)(const ModelConfig *, const ParamTable *, float *, ModelPtrs *) =
	    adapters ? wire_adapters : wire;
	if (build_units(m) || wirer(&m->cfg, &m->table, wbase, &m->w))
		goto nomem;
	if (m->frozen)
		m->g.layer = calloc((size_t)m->cfg.num_hidden_layers, sizeof *m->g.layer);
	if (m->frozen ? !m->g.layer : wirer(&m->cfg, &m->table, gbase, &m->g) != 0)
		goto nomem;
	for (int u = 0; u < m->n_units; u++) {
		m->unit_w[u] = wbase + m->unit_begin[u];
		m->unit_g[u] = m->frozen ? NULL : gbase + m->unit_begin[u];
	}
	return TRL_OK;
nomem:;
	int rc = trl_errf(
	    err, TRL_ENOMEM,
	    "out of memory for %zu parameters (%.1f MiB for weights and gradients)",
	    m->table.total, 2.0 * m->table.total * sizeof(float) / 1048576.0);
	model_free(m);
	return rc;
}

int model_init_flags(Model *m, const ModelConfig *mc, unsigned flags, TrlErr *err)
{
	memset(m, 0, sizeof *m);
	m->cfg = *mc;
	int rc = model_config_check(&m->cfg, err);
	if (rc)
		return rc;
	rc = params_build(&m->table, &m->cfg, err);
	if (rc)
		return rc;
	return init_slabs(m, flags, 0, err);
}

int model_init_adapters(Model *m, const ModelConfig *mc, ParamTable *t, unsigned flags,
                        TrlErr *err)
{
	memset(m, 0, sizeof *m);
	m->cfg = *mc;
	m->table = *t;
	memset(t, 0, sizeof *t);
	return init_slabs(m, flags, 1, err);
}

int model_init(Model *m, const ModelConfig *mc, TrlErr *err)
{
	return model_init_flags(m, mc, 0, err);
}

void model_free(Model *m)
{
	trl_free(m->params);
	trl_free(m->grads);
	free(m->w.layer);
	free(m->g.layer);
	free(m->acts);
	trl_free(m->act_slab);
	free(m->unit_begin);
	free(m->unit_end);
	free(m->unit_w);
	free(m->unit_g);
	if (m->reserve)
		munmap(m->reserve, m->reserve_bytes);
	params_free(&m->table);
	memset(m, 0, sizeof *m);
}

/* Moves every pointer of *f that lies in [from, from + n) to the same place
 * in to. */
static void move_ptr(float **f, const float *from, size_t n, float *to)
{
	if (*f && *f >= from && *f < from + n)
		*f = to + (*f - from);
}

static void rebind(Model *m, ModelPtrs *w, int u, float *from, float *to)
{
	size_t n = m->unit_end[u] - m->unit_begin[u];
	if (u >= 1 && u <= m->table.num_layers) {
		/* LayerPtrs holds nothing but float pointers. */
		float **f = (float **)&w->layer[u - 1];
		for (size_t i = 0; i < sizeof(LayerPtrs) / sizeof(float *); i++)
			move_ptr(&f[i], from, n, to);
		return;
	}
	move_ptr(&w->wte, from, n, to);
	move_ptr(&w->wpe, from, n, to);
	move_ptr(&w->lnf_w, from, n, to);
	move_ptr(&w->lnf_b, from, n, to);
	move_ptr(&w->lm_head, from, n, to);
}

void model_bind_unit(Model *m, int u, float *w, float *g)
{
	if (w && w != m->unit_w[u]) {
		rebind(m, &m->w, u, m->unit_w[u], w);
		m->unit_w[u] = w;
	}
	if (g && g != m->unit_g[u]) {
		rebind(m, &m->g, u, m->unit_g[u], g);
		m->unit_g[u] = g;
	}
}

static int is_output_projection(const char *name)
{
	return strstr(name, "attn.c_proj.weight") || strstr(name, "mlp.c_proj.weight") ||
	       strstr(name, "o_proj.weight") || strstr(name, "down_proj.weight") ||
	       strstr(name, "out_proj.weight") || strstr(name, "feed_forward.w2.weight");
}

void model_init_weights_range(const Model *m, uint64_t seed, float *dst, size_t begin,
                              size_t end)
{
	const ParamTable *t = &m->table;
	double std = m->cfg.initializer_range > 0 ? m->cfg.initializer_range : 0.02;
	double proj_std = std / sqrt(2.0 * m->cfg.num_hidden_layers);
	/* One stream per tensor, seeded from (seed, tensor index): the values of a
	 * tensor do not depend on how many tensors come before it, nor on which
	 * part of it a range asks for (the draws before the range are skipped:
	 * each normal takes exactly two raw draws). */
#pragma omp parallel for schedule(dynamic, 1)
	for (int i = 0; i < t->n; i++) {
		const ParamInfo *p = &t->p[i];
		size_t lo = p->offset > begin ? p->offset : begin;
		size_t hi = p->offset + p->numel < end ? p->offset + p->numel : end;
		if (lo >= hi)
			continue;
		float *x = dst + (lo - begin);
		size_t skip = lo - p->offset, n = hi - lo;
		Rng r;
		rng_seed(&r, seed * 0x9E3779B97F4A7C15ULL + (uint64_t)i + 1);
		if (p->kind == TRL_PARAM_NORM) {
			float v = strstr(p->name, ".bias") ? 0.0f : 1.0f;
			for (size_t j = 0; j < n; j++)
				x[j] = v;
		} else if (p->kind == TRL_PARAM_BIAS || p->kind == TRL_PARAM_LORA_B) {
			memset(x, 0, n * sizeof *x);
		} else if (p->kind == TRL_PARAM_LORA_A) {
			/* PEFT: kaiming_uniform_(a = sqrt(5)) = U(-1/sqrt(in),
			 * 1/sqrt(in)), one raw draw per value */
			double bound = 1.0 / sqrt((double)p->shape[1]);
			for (size_t j = 0; j < skip; j++)
				(void)rng_next(&r);
			for (size_t j = 0; j < n; j++)
				x[j] = (float)(bound * (2.0 * rng_uniform(&r) - 1.0));
		} else {
			double s = is_output_projection(p->name) ? proj_std : std;
			for (size_t j = 0; j < 2 * skip; j++)
				(void)rng_next(&r);
			for (size_t j = 0; j < n; j++)
				x[j] = (float)(s * rng_normal(&r));
		}
	}
}

void model_init_weights(Model *m, uint64_t seed)
{
	model_init_weights_range(m, seed, m->params, 0, m->table.total);
}

/* ---- activations ----------------------------------------------------------- */

typedef struct Sizes {
	size_t N, C, QD, KVD, I, V, BHT, L;
} Sizes;

static Sizes sizes_of(const ModelConfig *mc, int B, int T)
{
	Sizes s;
	s.N = (size_t)B * T;
	s.C = (size_t)mc->hidden_size;
	s.QD = (size_t)mc->head_dim * (size_t)mc->num_attention_heads;
	s.KVD = (size_t)mc->head_dim * (size_t)mc->num_key_value_heads;
	s.I = (size_t)mc->intermediate_size;
	s.V = (size_t)model_config_out_dim(mc);
	s.BHT = (size_t)B * mc->num_attention_heads * T;
	s.L = (size_t)mc->num_hidden_layers;
	return s;
}

/* Lays out every activation and backward buffer of m for the shape s. When
 * base is NULL the pointers written are NULL and only the size matters. */
static size_t carve(Model *m, const Sizes *s, float *base)
{
	TrlCarver cv = {base, 0};
	size_t N = s->N, C = s->C, I = s->I, QD = s->QD;
	size_t CQ = C > QD ? C : QD, wide = I > CQ ? I : CQ;
	int gpt2 = m->cfg.arch == TRL_ARCH_GPT2, qkn = m->cfg.qk_norm;
	size_t H = (size_t)m->cfg.num_attention_heads;
	size_t KV = (size_t)m->cfg.num_key_value_heads;
	for (size_t l = 0; l < s->L; l++) {
		LayerActs scratch, *a = m->acts ? &m->acts[l] : &scratch;
		memset(a, 0, sizeof *a);
		a->x_in = trl_carve(&cv, N * C);
		a->ln1 = trl_carve(&cv, N * C);
		a->ln1_mean = trl_carve(&cv, N);
		a->ln1_rstd = trl_carve(&cv, N);
		if (model_config_conv_layer(&m->cfg, (int)l)) {
			/* lfm2's short convolution instead of attention */
			a->proj = trl_carve(&cv, 3 * N * C);
			a->bx = trl_carve(&cv, N * C);
			a->atty = trl_carve(&cv, N * C);
		} else if (gpt2) {
			/* c_attn's (N, 3C) output as it is: q, k, v are its column
			 * blocks, read by attention with a row stride of 3C. */
			a->q = trl_carve(&cv, 3 * N * C);
			a->k = a->q + C;
			a->v = a->q + 2 * C;
		} else {
			a->q = trl_carve(&cv, N * QD);
			a->k = trl_carve(&cv, N * s->KVD);
			a->v = trl_carve(&cv, N * s->KVD);
		}
		if (!a->proj) {
			a->q_raw = qkn ? trl_carve(&cv, N * QD) : NULL;
			a->k_raw = qkn ? trl_carve(&cv, N * s->KVD) : NULL;
			a->q_rstd = qkn ? trl_carve(&cv, N * H) : NULL;
			a->k_rstd = qkn ? trl_carve(&cv, N * KV) : NULL;
			a->att = trl_carve(&cv, s->BHT);
			a->atty = trl_carve(&cv, N * QD);
		}
		a->x_mid = trl_carve(&cv, N * C);
		a->ln2 = trl_carve(&cv, N * C);
		a->ln2_mean = trl_carve(&cv, N);
		a->ln2_rstd = trl_carve(&cv, N);
		a->h1 = trl_carve(&cv, N * I);
		a->h2 = gpt2 ? NULL : trl_carve(&cv, N * I);
		a->hact = trl_carve(&cv, N * I);
		for (int mod = 0; m->lora && mod < TRL_LORA_NMOD; mod++)
			if (m->lora->ad.w.layer[l].lora_a[mod])
				a->lora_v[mod] =
				    trl_carve(&cv, N * (size_t)m->lora->spec.r);
	}
	m->x_final = trl_carve(&cv, N * C);
	m->lnf = trl_carve(&cv, N * C);
	m->lnf_mean = trl_carve(&cv, N);
	m->lnf_rstd = trl_carve(&cv, N);
	m->logits = trl_carve(&cv, N * s->V);
	m->dres = trl_carve(&cv, N * C);
	m->dtmp = trl_carve(&cv, N * CQ);
	/* dbig holds dhact, dh1, dh2 (3 x (N, I)) in the MLP, the gpt2 c_attn
	 * gradient (N, 3C) in backward, the qwen3 gradients before q/k norm
	 * ((N, H*D) + (N, KV*D)) and lfm2's in_proj gradient (N, 3C). */
	m->dbig = trl_carve(&cv, 3 * N * wide);
	m->dq = gpt2 ? NULL : trl_carve(&cv, N * QD);
	m->dk = gpt2 ? NULL : trl_carve(&cv, N * s->KVD);
	m->dv = gpt2 ? NULL : trl_carve(&cv, N * s->KVD);
	m->att_scratch = trl_carve(&cv, (size_t)m->threads * attention_scratch_floats());
	m->lora_dv = m->lora ? trl_carve(&cv, N * (size_t)m->lora->spec.r) : NULL;
	m->lora_xd =
	    m->lora && m->lora->spec.dropout > 0 ? trl_carve(&cv, N * wide) : NULL;
	return cv.off;
}

size_t model_activation_bytes(const ModelConfig *mc, int B, int T)
{
	Model tmp;
	memset(&tmp, 0, sizeof tmp);
	tmp.cfg = *mc;
	tmp.maxT = T;
	tmp.threads = omp_get_max_threads();
	Sizes s = sizes_of(mc, B, T);
	return carve(&tmp, &s, NULL) * sizeof(float);
}

int model_alloc_activations(Model *m, int B, int T, TrlErr *err)
{
	if (B < 1 || T < 1)
		return trl_errf(err, TRL_EINVAL, "activations need B >= 1 and T >= 1");
	if (m->cfg.arch == TRL_ARCH_GPT2 && T > m->cfg.max_position_embeddings)
		return trl_errf(
		    err, TRL_EINVAL,
		    "sequence length %d exceeds model.max_position_embeddings "
		    "(%d): lower max_length or raise max_position_embeddings",
		    T, m->cfg.max_position_embeddings);
	if (m->cfg.sliding_window > 0 && T > m->cfg.sliding_window)
		return trl_errf(
		    err, TRL_EUNSUPPORTED,
		    "sequence length %d exceeds the model's sliding_window (%d), and "
		    "sliding-window attention is not implemented: lower max_length "
		    "to at most %d",
		    T, m->cfg.sliding_window, m->cfg.sliding_window);
	free(m->acts);
	trl_free(m->act_slab);
	m->acts = calloc((size_t)m->cfg.num_hidden_layers, sizeof *m->acts);
	m->maxB = B;
	m->maxT = T;
	Sizes s = sizes_of(&m->cfg, B, T);
	m->threads = omp_get_max_threads();
	m->act_floats = carve(m, &s, NULL);
	m->act_slab = trl_alloc(m->act_floats * sizeof(float));
	if (!m->acts || !m->act_slab) {
		free(m->acts);
		m->acts = NULL;
		return trl_errf(
		    err, TRL_ENOMEM,
		    "out of memory for activations of a (%d, %d) batch (%.1f MiB): "
		    "lower per_device_train_batch_size or max_length",
		    B, T, m->act_floats * 4.0 / 1048576.0);
	}
	carve(m, &s, m->act_slab);
	return TRL_OK;
}

int model_share_activations(Model *m, const Model *owner, int B, int T, TrlErr *err)
{
	Sizes s = sizes_of(&m->cfg, B, T);
	m->threads = owner->threads; /* carve sizes the scratch for it */
	size_t need = carve(m, &s, NULL);
	if (!owner->act_slab || need > owner->act_floats || owner->threads < 1)
		return model_alloc_activations(m, B, T, err);
	free(m->acts);
	trl_free(m->act_slab);
	m->act_slab = NULL;
	m->acts = calloc((size_t)m->cfg.num_hidden_layers, sizeof *m->acts);
	if (!m->acts)
		return trl_errf(err, TRL_ENOMEM, "out of memory");
	m->maxB = B;
	m->maxT = T;
	m->act_floats = need;
	carve(m, &s, owner->act_slab);
	return TRL_OK;
}

/* ---- forward --------------------------------------------------------------- */

static void norm_forward(const Model *m, float *out, float *mean, float *rstd,
                         const float *in, const float *w, const float *b, int N)
{
	int C = m->cfg.hidden_size;
	if (m->cfg.arch == TRL_ARCH_GPT2)
		layernorm_forward(out, mean, rstd, in, w, b, N, C, m->cfg.norm_eps);
	else
		rmsnorm_forward(out, rstd, in, w, N, C, m->cfg.norm_eps);
}

static void norm_backward(const Model *m, float *din, float *dw, float *db,
                          const float *dout, const float *in, const float *w,
                          const float *mean, const float *rstd, int N)
{
	int C = m->cfg.hidden_size;
	if (m->cfg.arch == TRL_ARCH_GPT2)
		layernorm_backward(din, dw, db, dout, in, w, mean, rstd, N, C);
	else
		rmsnorm_backward(din, dw, dout, in, w, rstd, N, C);
}

static void copy_floats(float *dst, const float *src, size_t n)
{
#pragma omp parallel for schedule(static)
	for (size_t i = 0; i < n; i++)
		dst[i] = src[i];
}

static void zero_floats(float *dst, size_t n)
{
#pragma omp parallel for schedule(static)
	for (size_t i = 0; i < n; i++)
		dst[i] = 0.0f;
}

/* The hooks of a sharded model, then those of its adapters (whose units
 * parallel the model's); all are no-ops for a plain model. */
static const ModelHooks *hooks_of(const Model *m, int which)
{
	if (which == 0)
		return m->hooks;
	return m->lora ? m->lora->ad.hooks : NULL;
}

static void hk_weights(const Model *m, int u, int pass)
{
	for (int i = 0; i < 2; i++) {
		const ModelHooks *h = hooks_of(m, i);
		if (h && h->weights)
			h->weights(h->ctx, u, pass);
	}
}

static void hk_done_weights(const Model *m, int u, int pass)
{
	for (int i = 0; i < 2; i++) {
		const ModelHooks *h = hooks_of(m, i);
		if (h && h->done_weights)
			h->done_weights(h->ctx, u, pass);
	}
}

static void hk_grads(const Model *m, int u)
{
	for (int i = 0; i < 2; i++) {
		const ModelHooks *h = hooks_of(m, i);
		if (h && h->grads)
			h->grads(h->ctx, u);
	}
}

static void hk_grads_done(const Model *m, int u)
{
	for (int i = 0; i < 2; i++) {
		const ModelHooks *h = hooks_of(m, i);
		if (h && h->grads_done)
			h->grads_done(h->ctx, u);
	}
}

static void hk_poll(const Model *m)
{
	for (int i = 0; i < 2; i++) {
		const ModelHooks *h = hooks_of(m, i);
		if (h && h->poll)
			h->poll(h->ctx);
	}
}

/* The adapter of module mod in layer l, when adapters are attached and on. */
static int lora_of(const Model *m, int l, int mod, const float **A, const float **B)
{
	const Lora *lo = m->lora;
	if (!lo || lo->off || !lo->ad.w.layer[l].lora_a[mod])
		return 0;
	*A = lo->ad.w.layer[l].lora_a[mod];
	*B = lo->ad.w.layer[l].lora_b[mod];
	return 1;
}

/* out (=, or += with add) in . W (+ b), plus module mod's adapter. */
static void lin_forward(Model *m, int l, int mod, float *out, const float *in,
                        const float *w, const float *bias, int N, int IC, int OC,
                        TrlWLayout layout, int add)
{
	if (add)
		matmul_forward_add(out, in, w, bias, N, IC, OC, layout);
	else
		matmul_forward(out, in, w, bias, N, IC, OC, layout);
	const float *A, *B;
	if (lora_of(m, l, mod, &A, &B)) {
		const Lora *lo = m->lora;
		lora_forward(out, m->acts[l].lora_v[mod], m->lora_xd, in, A, B, lo->scale,
		             lo->p_fwd, lora_mask_key(lo->seed, lo->draw, l, mod), N, IC,
		             OC, lo->spec.r);
	}
}

/* matmul_backward, plus module mod's adapter (its gradients into the adapter
 * model's gradient tensors). */
static void lin_backward(Model *m, int l, int mod, float *din, float *dw, float *db,
                         const float *dout, const float *in, const float *w, int N,
                         int IC, int OC, TrlWLayout layout)
{
	matmul_backward(din, dw, db, dout, in, w, N, IC, OC, layout);
	const float *A, *B;
	if (lora_of(m, l, mod, &A, &B)) {
		const Lora *lo = m->lora;
		const LayerPtrs *g = &lo->ad.g.layer[l];
		lora_backward(din, g->lora_a[mod], g->lora_b[mod], m->lora_dv, m->lora_xd,
		              dout, in, m->acts[l].lora_v[mod], A, B, lo->scale,
		              lo->p_fwd, lora_mask_key(lo->seed, lo->draw, l, mod), N, IC,
		              OC, lo->spec.r);
	}
}

/* The output head the forward uses: a copied head of the adapters (LoRA's
 * modules_to_save), else the model's; gradients likewise. */
static const float *head_w(const Model *m)
{
	return m->lora && !m->lora->off && m->lora->ad.w.lm_head ? m->lora->ad.w.lm_head
	                                                         : m->w.lm_head;
}

static float *head_g(const Model *m)
{
	return m->lora && !m->lora->off && m->lora->ad.w.lm_head ? m->lora->ad.g.lm_head
	                                                         : m->g.lm_head;
}

/* The attention block: x_mid = x_in + o_proj(attn(q, k, v of a->ln1)). */
static void attention_block_forward(Model *m, int l, LayerActs *a, const LayerPtrs *p,
                                    const Batch *b)
{
	const ModelConfig *mc = &m->cfg;
	int B = b->B, T = b->T, N = B * T;
	int C = mc->hidden_size, H = mc->num_attention_heads,
	    KV = mc->num_key_value_heads;
	int D = mc->head_dim, QD = H * D, KVD = KV * D, gpt2 = mc->arch == TRL_ARCH_GPT2;
	if (gpt2) {
		lin_forward(m, l, LORA_QKV, a->q, a->ln1, p->qkv_w, p->qkv_b, N, C, 3 * C,
		            TRL_W_IN_OUT, 0);
	} else {
		float *q = mc->qk_norm ? a->q_raw : a->q;
		float *k = mc->qk_norm ? a->k_raw : a->k;
		lin_forward(m, l, LORA_Q, q, a->ln1, p->q_w, p->q_b, N, C, QD,
		            TRL_W_OUT_IN, 0);
		lin_forward(m, l, LORA_K, k, a->ln1, p->k_w, p->k_b, N, C, KVD,
		            TRL_W_OUT_IN, 0);
		lin_forward(m, l, LORA_V, a->v, a->ln1, p->v_w, p->v_b, N, C, KVD,
		            TRL_W_OUT_IN, 0);
		if (mc->qk_norm) {
			/* qwen3, lfm2: RMSNorm over each head's D values,
			 * before RoPE. */
			rmsnorm_forward(a->q, a->q_rstd, a->q_raw, p->q_norm, N * H, D,
			                mc->norm_eps);
			rmsnorm_forward(a->k, a->k_rstd, a->k_raw, p->k_norm, N * KV, D,
			                mc->norm_eps);
		}
		rope_forward(a->q, b->pos, N, H, D, mc->rope_theta);
		rope_forward(a->k, b->pos, N, KV, D, mc->rope_theta);
	}
	hk_poll(m);
	attention_forward_strided(a->atty, a->att, a->q, a->k, a->v, gpt2 ? 3 * C : QD,
	                          gpt2 ? 3 * C : KVD, b->doc, B, T, H, KV, D);
	hk_poll(m);
	copy_floats(a->x_mid, a->x_in, (size_t)N * C);
	lin_forward(m, l, LORA_O, a->x_mid, a->atty, p->o_w, p->o_b, N, QD, C,
	            gpt2 ? TRL_W_IN_OUT : TRL_W_OUT_IN, 1);
}

/* lfm2's conv block: x_mid = x_in + out_proj(shortconv(in_proj(norm1(x_in)))),
 * from a->ln1. */
static void conv_block_forward(Model *m, int l, LayerActs *a, const LayerPtrs *p,
                               const Batch *b)
{
	int N = b->B * b->T, C = m->cfg.hidden_size;
	lin_forward(m, l, LORA_IN, a->proj, a->ln1, p->in_w, p->in_b, N, C, 3 * C,
	            TRL_W_OUT_IN, 0);
	hk_poll(m);
	shortconv_forward(a->atty, a->bx, a->proj, p->conv_w, p->conv_b, b->doc, b->B,
	                  b->T, C, m->cfg.conv_L_cache);
	hk_poll(m);
	copy_floats(a->x_mid, a->x_in, (size_t)N * C);
	lin_forward(m, l, LORA_COUT, a->x_mid, a->atty, p->cout_w, p->cout_b, N, C, C,
	            TRL_W_OUT_IN, 1);
}

/* Its backward: d ln1 into m->dtmp (overwritten), from dres = d x_mid. */
static void conv_block_backward(Model *m, int l, const LayerActs *a, const LayerPtrs *p,
                                const LayerPtrs *gp, const Batch *b)
{
	int N = b->B * b->T, C = m->cfg.hidden_size;
	size_t NC = (size_t)N * C;
	float *dy = m->dtmp, *dproj = m->dbig;
	zero_floats(dy, NC);
	lin_backward(m, l, LORA_COUT, dy, gp->cout_w, gp->cout_b, m->dres, a->atty,
	             p->cout_w, N, C, C, TRL_W_OUT_IN);
	hk_poll(m);
	zero_floats(dproj, 3 * NC);
	shortconv_backward(dproj, gp->conv_w, gp->conv_b, dy, a->proj, a->bx, p->conv_w,
	                   p->conv_b, b->doc, b->B, b->T, C, m->cfg.conv_L_cache);
	hk_poll(m);
	zero_floats(m->dtmp, NC);
	lin_backward(m, l, LORA_IN, m->dtmp, gp->in_w, gp->in_b, dproj, a->ln1, p->in_w,
	             N, C, 3 * C, TRL_W_OUT_IN);
}

void model_forward(Model *m, const Batch *b)
{
	const ModelConfig *mc = &m->cfg;
	int N = b->B * b->T, C = mc->hidden_size, I = mc->intermediate_size;
	int V = model_config_out_dim(mc), L = mc->num_hidden_layers,
	    gpt2 = mc->arch == TRL_ARCH_GPT2;
	const ModelPtrs *w = &m->w;
	int tied = head_w(m) == w->wte;

	if (m->lora) {
		/* This forward's dropout masks; the backward reads the same. */
		m->lora->draw++;
		m->lora->p_fwd = m->lora->train ? m->lora->spec.dropout : 0.0f;
	}
	hk_weights(m, 0, 0);
	embedding_forward(m->acts[0].x_in, b->ids, b->pos, w->wte, gpt2 ? w->wpe : NULL,
	                  N, C);
	hk_done_weights(m, 0, 0);
	for (int l = 0; l < L; l++) {
		LayerActs *a = &m->acts[l];
		hk_weights(m, l + 1, 0);
		const LayerPtrs *p = &w->layer[l];
		float *x_out = l + 1 < L ? m->acts[l + 1].x_in : m->x_final;

		norm_forward(m, a->ln1, a->ln1_mean, a->ln1_rstd, a->x_in, p->ln1_w,
		             p->ln1_b, N);
		if (model_config_conv_layer(mc, l))
			conv_block_forward(m, l, a, p, b);
		else
			attention_block_forward(m, l, a, p, b);
		hk_poll(m);
		norm_forward(m, a->ln2, a->ln2_mean, a->ln2_rstd, a->x_mid, p->ln2_w,
		             p->ln2_b, N);
		copy_floats(x_out, a->x_mid, (size_t)N * C);
		if (gpt2) {
			lin_forward(m, l, LORA_FC, a->h1, a->ln2, p->fc_w, p->fc_b, N, C,
			            I, TRL_W_IN_OUT, 0);
			hk_poll(m);
			gelu_forward(a->hact, a->h1, (size_t)N * I);
			lin_forward(m, l, LORA_PROJ, x_out, a->hact, p->proj_w, p->proj_b,
			            N, I, C, TRL_W_IN_OUT, 1);
		} else {
			lin_forward(m, l, LORA_GATE, a->h1, a->ln2, p->gate_w, NULL, N, C,
			            I, TRL_W_OUT_IN, 0);
			lin_forward(m, l, LORA_UP, a->h2, a->ln2, p->up_w, NULL, N, C, I,
			            TRL_W_OUT_IN, 0);
			hk_poll(m);
			swiglu_forward(a->hact, a->h1, a->h2, (size_t)N * I);
			lin_forward(m, l, LORA_DOWN, x_out, a->hact, p->down_w, NULL, N,
			            I, C, TRL_W_OUT_IN, 1);
		}
		hk_done_weights(m, l + 1, 0);
	}
	hk_weights(m, L + 1, 0);
	norm_forward(m, m->lnf, m->lnf_mean, m->lnf_rstd, m->x_final, w->lnf_w, w->lnf_b,
	             N);
	if (tied)
		hk_weights(m, 0, 0);
	matmul_forward(m->logits, m->lnf, head_w(m), NULL, N, C, V, TRL_W_OUT_IN);
	if (tied)
		hk_done_weights(m, 0, 0);
	hk_done_weights(m, L + 1, 0);
}

/* ---- backward -------------------------------------------------------------- */

/* The attention block's backward, x_mid = x_in + o_proj(attn(norm1(x_in))):
 * d ln1 into m->dtmp (overwritten), from dres = d x_mid. */
static void attention_block_backward(Model *m, int l, const LayerActs *a,
                                     const LayerPtrs *p, const LayerPtrs *gp,
                                     const Batch *b)
{
	const ModelConfig *mc = &m->cfg;
	int B = b->B, T = b->T, N = B * T;
	int C = mc->hidden_size, H = mc->num_attention_heads,
	    KV = mc->num_key_value_heads;
	int D = mc->head_dim, QD = H * D, KVD = KV * D, gpt2 = mc->arch == TRL_ARCH_GPT2;
	size_t NC = (size_t)N * C;
	float *dres = m->dres, *dtmp = m->dtmp;
	float *datty = dtmp; /* (N, H*D) */
	zero_floats(datty, (size_t)N * QD);
	lin_backward(m, l, LORA_O, datty, gp->o_w, gp->o_b, dres, a->atty, p->o_w, N, QD,
	             C, gpt2 ? TRL_W_IN_OUT : TRL_W_OUT_IN);
	/* gpt2: the gradients of q, k, v land as column blocks of one (N, 3C)
	 * buffer, which is c_attn's output gradient as it is. */
	float *dqkv = m->dbig;
	if (gpt2) {
		zero_floats(dqkv, (size_t)N * 3 * C);
		attention_backward_strided(
		    dqkv, dqkv + C, dqkv + 2 * C, m->att_scratch, m->threads, datty, a->q,
		    a->k, a->v, 3 * C, 3 * C, a->atty, a->att, b->doc, B, T, H, KV, D);
	} else {
		zero_floats(m->dq, (size_t)N * QD);
		zero_floats(m->dk, (size_t)N * KVD);
		zero_floats(m->dv, (size_t)N * KVD);
		attention_backward(m->dq, m->dk, m->dv, m->att_scratch, m->threads, datty,
		                   a->q, a->k, a->v, a->atty, a->att, b->doc, B, T, H, KV,
		                   D);
	}
	hk_poll(m);
	float *dln1 = dtmp; /* datty is no longer needed */
	zero_floats(dln1, NC);
	if (gpt2) {
		lin_backward(m, l, LORA_QKV, dln1, gp->qkv_w, gp->qkv_b, dqkv, a->ln1,
		             p->qkv_w, N, C, 3 * C, TRL_W_IN_OUT);
	} else {
		rope_backward(m->dq, b->pos, N, H, D, mc->rope_theta);
		rope_backward(m->dk, b->pos, N, KV, D, mc->rope_theta);
		float *dq = m->dq, *dk = m->dk;
		if (mc->qk_norm) {
			/* Through the per-head norms; dbig is free here. */
			dq = m->dbig;
			dk = m->dbig + (size_t)N * QD;
			zero_floats(dq, (size_t)N * (QD + KVD));
			rmsnorm_backward(dq, gp->q_norm, m->dq, a->q_raw, p->q_norm,
			                 a->q_rstd, N * H, D);
			rmsnorm_backward(dk, gp->k_norm, m->dk, a->k_raw, p->k_norm,
			                 a->k_rstd, N * KV, D);
		}
		lin_backward(m, l, LORA_Q, dln1, gp->q_w, gp->q_b, dq, a->ln1, p->q_w, N,
		             C, QD, TRL_W_OUT_IN);
		lin_backward(m, l, LORA_K, dln1, gp->k_w, gp->k_b, dk, a->ln1, p->k_w, N,
		             C, KVD, TRL_W_OUT_IN);
		lin_backward(m, l, LORA_V, dln1, gp->v_w, gp->v_b, m->dv, a->ln1, p->v_w,
		             N, C, KVD, TRL_W_OUT_IN);
	}
}

void model_backward(Model *m, const Batch *b)
{
	const ModelConfig *mc = &m->cfg;
	int N = b->B * b->T, C = mc->hidden_size, I = mc->intermediate_size;
	int V = model_config_out_dim(mc), L = mc->num_hidden_layers,
	    gpt2 = mc->arch == TRL_ARCH_GPT2;
	const ModelPtrs *w = &m->w, *g = &m->g;
	size_t NC = (size_t)N * C, NI = (size_t)N * I;
	float *dres = m->dres, *dtmp = m->dtmp;
	int tied = head_w(m) == w->wte;

	/* lm_head and the final norm; dres carries d loss / d residual stream.
	 * With tied embeddings lm_head is wte, so the embeddings' gradient is
	 * open from here to the end. */
	hk_weights(m, L + 1, 1);
	hk_grads(m, L + 1);
	if (tied) {
		hk_weights(m, 0, 1);
		hk_grads(m, 0);
	}
	zero_floats(dtmp, NC);
	matmul_backward(dtmp, head_g(m), NULL, m->logits, m->lnf, head_w(m), N, C, V,
	                TRL_W_OUT_IN);
	if (tied)
		hk_done_weights(m, 0, 1);
	zero_floats(dres, NC);
	norm_backward(m, dres, g->lnf_w, g->lnf_b, dtmp, m->x_final, w->lnf_w,
	              m->lnf_mean, m->lnf_rstd, N);
	hk_done_weights(m, L + 1, 1);
	hk_grads_done(m, L + 1);

	for (int l = L - 1; l >= 0; l--) {
		LayerActs *a = &m->acts[l];
		hk_weights(m, l + 1, 1);
		hk_grads(m, l + 1);
		const LayerPtrs *p = &w->layer[l];
		const LayerPtrs *gp = &g->layer[l];
		float *dhact = m->dbig, *dh1 = m->dbig + NI, *dh2 = m->dbig + 2 * NI;

		/* MLP: x_out = x_mid + mlp(norm2(x_mid)). */
		zero_floats(m->dbig, gpt2 ? 2 * NI : 3 * NI);
		zero_floats(dtmp, NC);
		if (gpt2) {
			lin_backward(m, l, LORA_PROJ, dhact, gp->proj_w, gp->proj_b, dres,
			             a->hact, p->proj_w, N, I, C, TRL_W_IN_OUT);
			gelu_backward(dh1, dhact, a->h1, NI);
			lin_backward(m, l, LORA_FC, dtmp, gp->fc_w, gp->fc_b, dh1, a->ln2,
			             p->fc_w, N, C, I, TRL_W_IN_OUT);
		} else {
			lin_backward(m, l, LORA_DOWN, dhact, gp->down_w, NULL, dres,
			             a->hact, p->down_w, N, I, C, TRL_W_OUT_IN);
			swiglu_backward(dh1, dh2, dhact, a->h1, a->h2, NI);
			lin_backward(m, l, LORA_GATE, dtmp, gp->gate_w, NULL, dh1, a->ln2,
			             p->gate_w, N, C, I, TRL_W_OUT_IN);
			lin_backward(m, l, LORA_UP, dtmp, gp->up_w, NULL, dh2, a->ln2,
			             p->up_w, N, C, I, TRL_W_OUT_IN);
		}
		norm_backward(m, dres, gp->ln2_w, gp->ln2_b, dtmp, a->x_mid, p->ln2_w,
		              a->ln2_mean, a->ln2_rstd, N);
		hk_poll(m);

		if (model_config_conv_layer(mc, l))
			conv_block_backward(m, l, a, p, gp, b);
		else
			attention_block_backward(m, l, a, p, gp, b);
		norm_backward(m, dres, gp->ln1_w, gp->ln1_b, dtmp, a->x_in, p->ln1_w,
		              a->ln1_mean, a->ln1_rstd, N);
		hk_done_weights(m, l + 1, 1);
		hk_grads_done(m, l + 1);
	}
	/* The embedding backward adds rows of dres; it reads no weights. */
	if (!tied)
		hk_grads(m, 0);
	if (g->wte) /* a frozen model has no weight gradients */
		embedding_backward(g->wte, gpt2 ? g->wpe : NULL, dres, b->ids, b->pos, N,
		                   C);
	hk_grads_done(m, 0);
}

double model_flops_per_token(const ModelConfig *mc, int T)
{
	double n = (double)model_config_num_nonembedding_params(mc);
	double L = mc->num_hidden_layers, C = mc->hidden_size,
	       V = model_config_out_dim(mc);
	return 6.0 * n + 6.0 * L * T * C + 6.0 * C * V;
}
