/* lora.c - LoRA adapters: targets matched as PEFT matches them, the adapters'
 * parameter table, their kernels, merging and PEFT's adapter files. */
#include "lora.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h" /* TRL_PATH_MAX */
#include "json.h"
#include "layers.h"
#include "model_io.h"
#include "safetensors.h"

void lora_spec_defaults(LoraSpec *s)
{
	memset(s, 0, sizeof *s);
	s->r = 16;
	s->alpha = 32.0f;
	s->dropout = 0.05f;
}

void lora_spec_format(const LoraSpec *s, char *buf, size_t cap)
{
	snprintf(buf, cap, "r=%d alpha=%.9g dropout=%.9g rslora=%d targets=%s save=%s",
	         s->r, (double)s->alpha, (double)s->dropout, s->rslora, s->targets,
	         s->to_save);
}

int lora_spec_parse(LoraSpec *s, const char *text, TrlErr *err)
{
	lora_spec_defaults(s);
	const char *t = strstr(text, " targets="), *v = strstr(text, " save=");
	if (sscanf(text, "r=%d alpha=%g dropout=%g rslora=%d", &s->r, &s->alpha,
	           &s->dropout, &s->rslora) != 4 ||
	    !t || !v || v < t)
		return trl_errf(err, TRL_EFORMAT, "LoRA spec '%s' is not readable", text);
	snprintf(s->targets, sizeof s->targets, "%.*s", (int)(v - t - 9), t + 9);
	snprintf(s->to_save, sizeof s->to_save, "%s", v + 6);
	return TRL_OK;
}

/* ---- modules ---------------------------------------------------------------- */

int lora_module_path(const ModelConfig *mc, int l, LoraModule mod, char *buf, size_t cap,
                     int *in, int *out)
{
	int C = mc->hidden_size, F = mc->intermediate_size;
	int D = mc->head_dim > 0 ? mc->head_dim : C / mc->num_attention_heads;
	int QD = D * mc->num_attention_heads, KVD = D * mc->num_key_value_heads;
	const char *name = NULL;
	int i = C, o = C;
	if (mc->arch == TRL_ARCH_GPT2) {
		static const char *const g[LORA_NMOD] = {[LORA_QKV] = "attn.c_attn",
		                                         [LORA_O] = "attn.c_proj",
		                                         [LORA_FC] = "mlp.c_fc",
		                                         [LORA_PROJ] = "mlp.c_proj"};
		name = g[mod];
		o = mod == LORA_QKV ? 3 * C : mod == LORA_FC ? F : C;
		i = mod == LORA_PROJ ? F : C;
		if (name)
			snprintf(buf, cap, "transformer.h.%d.%s", l, name);
	} else {
		int lfm2 = mc->arch == TRL_ARCH_LFM2,
		    conv = model_config_conv_layer(mc, l);
		static const char *const llama[LORA_NMOD] = {
		    [LORA_Q] = "self_attn.q_proj", [LORA_K] = "self_attn.k_proj",
		    [LORA_V] = "self_attn.v_proj", [LORA_O] = "self_attn.o_proj",
		    [LORA_GATE] = "mlp.gate_proj", [LORA_UP] = "mlp.up_proj",
		    [LORA_DOWN] = "mlp.down_proj"};
		static const char *const attn[LORA_NMOD] = {
		    [LORA_Q] = "self_attn.q_proj",   [LORA_K] = "self_attn.k_proj",
		    [LORA_V] = "self_attn.v_proj",   [LORA_O] = "self_attn.out_proj",
		    [LORA_GATE] = "feed_forward.w1", [LORA_UP] = "feed_forward.w3",
		    [LORA_DOWN] = "feed_forward.w2"};
		static const char *const cv[LORA_NMOD] = {[LORA_IN] = "conv.in_proj",
		                                          [LORA_COUT] = "conv.out_proj",
		                                          [LORA_GATE] = "feed_forward.w1",
		                                          [LORA_UP] = "feed_forward.w3",
		                                          [LORA_DOWN] =
		                                              "feed_forward.w2"};
		name = !lfm2 ? llama[mod] : conv ? cv[mod] : attn[mod];
		switch (mod) {
		case LORA_Q:
			o = QD;
			break;
		case LORA_K:
		case LORA_V:
			o = KVD;
			break;
		case LORA_O:
			i = QD;
			break;
		case LORA_GATE:
		case LORA_UP:
			o = F;
			break;
		case LORA_DOWN:
			i = F;
			break;
		case LORA_IN:
			o = 3 * C;
			break;
		default:
			break;
		}
		if (name)
			snprintf(buf, cap, "model.layers.%d.%s", l, name);
	}
	if (!name)
		return 0;
	*in = i;
	*out = o;
	return 1;
}

const char *lora_default_targets(const ModelConfig *mc)
{
	if (mc->arch == TRL_ARCH_GPT2)
		return "c_attn";
	if (mc->arch == TRL_ARCH_LLAMA)
		return "q_proj,v_proj";
	return NULL;
}

/* The items of a comma-separated list (spaces trimmed) into items[n][64]. */
static int split(const char *s, char items[][64], int cap)
{
	int n = 0;
	while (*s) {
		s += strspn(s, " ");
		size_t len = strcspn(s, ",");
		size_t t = len;
		while (t && s[t - 1] == ' ')
			t--;
		if (t && n < cap) {
			snprintf(items[n], 64, "%.*s", (int)t, s);
			n++;
		}
		s += len;
		if (*s == ',')
			s++;
	}
	return n;
}

/* PEFT's rule for a list entry: the module's name, or a dotted suffix. */
static int name_matches(const char *path, const char *target)
{
	size_t n = strlen(path), k = strlen(target);
	if (k > n)
		return 0;
	if (k == n)
		return strcmp(path, target) == 0;
	return path[n - k - 1] == '.' && strcmp(path + n - k, target) == 0;
}

/* ---- the adapters' table ------------------------------------------------------ */

enum { MAX_TARGETS = 32 };

static int build_table(ParamTable *t, const ModelConfig *mc, const LoraSpec *s,
                       int *adapted, int *head, char *unmatched, size_t ucap, TrlErr *err)
{
	char tg[MAX_TARGETS][64], keep[MAX_TARGETS][64];
	const char *targets = s->targets[0] ? s->targets : lora_default_targets(mc);
	if (!targets)
		return trl_errf(
		    err, TRL_EINVAL,
		    "lora_target_modules: none given, and PEFT has no default "
		    "targets for model_type %s: name them (e.g. "
		    "[q_proj, k_proj, v_proj, out_proj] or all-linear)",
		    model_hf_type_name(mc->model_type));
	int nt = split(targets, tg, MAX_TARGETS),
	    nk = split(s->to_save, keep, MAX_TARGETS);
	int all = nt == 1 && strcmp(tg[0], "all-linear") == 0;
	int hits[MAX_TARGETS] = {0};
	int L = mc->num_hidden_layers, cap = 0, rc = TRL_OK;
	memset(t, 0, sizeof *t);
	t->num_layers = L;
	t->layer_begin = calloc((size_t)L, sizeof(size_t));
	t->layer_end = calloc((size_t)L, sizeof(size_t));
	if (!t->layer_begin || !t->layer_end)
		return trl_errf(err, TRL_ENOMEM, "out of memory");
	*adapted = 0;
	for (int l = 0; l < L && !rc; l++) {
		t->layer_begin[l] = t->total;
		for (int mod = 0; mod < LORA_NMOD && !rc; mod++) {
			char path[TRL_PARAM_NAME_MAX], name[TRL_PARAM_NAME_MAX + 32];
			int in, out, hit = all;
			if (!lora_module_path(mc, l, (LoraModule)mod, path, sizeof path,
			                      &in, &out))
				continue;
			for (int i = 0; i < nt && !all; i++)
				if (name_matches(path, tg[i]))
					hit = hits[i] = 1;
			if (!hit)
				continue;
			snprintf(name, sizeof name, "base_model.model.%s.lora_A.weight",
			         path);
			rc = params_append(t, &cap, TRL_PARAM_LORA_A, l, (size_t)s->r,
			                   (size_t)in, name);
			snprintf(name, sizeof name, "base_model.model.%s.lora_B.weight",
			         path);
			rc |= params_append(t, &cap, TRL_PARAM_LORA_B, l, (size_t)out,
			                    (size_t)s->r, name);
			(*adapted)++;
		}
		t->layer_end[l] = t->total;
	}
	if (rc)
		return trl_errf(err, TRL_ENOMEM, "out of memory for the adapters' table");
	/* A classifier's score is always trained whole, as PEFT does for
	 * SEQ_CLS; lm_head only when asked (and untied). */
	int want_score = mc->num_labels > 0, want_head = 0;
	for (int i = 0; i < nk; i++) {
		if (strcmp(keep[i], "score") == 0 && mc->num_labels > 0)
			want_score = 1;
		else if (strcmp(keep[i], "lm_head") == 0 && mc->num_labels <= 0 &&
		         !mc->tie_word_embeddings)
			want_head = 1;
		else
			return trl_errf(
			    err, TRL_EUNSUPPORTED,
			    "lora_modules_to_save: '%s' cannot be trained whole here: "
			    "supported are score (a reward model's head, always kept) "
			    "and "
			    "lm_head of a model with untied embeddings",
			    keep[i]);
	}
	size_t C = (size_t)mc->hidden_size;
	if (want_score)
		rc = params_append(t, &cap, TRL_PARAM_MATRIX, -1, (size_t)mc->num_labels,
		                   C, "base_model.model.score.weight");
	if (want_head)
		rc = params_append(t, &cap, TRL_PARAM_MATRIX, -1, (size_t)mc->vocab_size,
		                   C, "base_model.model.lm_head.weight");
	if (rc)
		return trl_errf(err, TRL_ENOMEM, "out of memory for the adapters' table");
	*head = want_score || want_head;
	if (unmatched && ucap)
		unmatched[0] = '\0';
	for (int i = 0; i < nt && !all && unmatched; i++)
		if (!hits[i]) {
			size_t n = strlen(unmatched);
			snprintf(unmatched + n, ucap - n, "%s%s", n ? ", " : "", tg[i]);
		}
	if (*adapted == 0)
		return trl_errf(
		    err, TRL_EINVAL,
		    "lora_target_modules: [%s] matches no linear module of this %s model "
		    "(a name matches a module whose name is it or ends with '.' and it; "
		    "e.g. %s, or all-linear)",
		    targets, model_hf_type_name(mc->model_type),
		    mc->arch == TRL_ARCH_GPT2   ? "c_attn, c_proj, c_fc"
		    : mc->arch == TRL_ARCH_LFM2 ? "q_proj, k_proj, v_proj, out_proj, "
		                                  "in_proj, w1, w2, w3"
		                                : "q_proj, k_proj, v_proj, o_proj, "
		                                  "gate_proj, up_proj, down_proj");
	return TRL_OK;
}

int lora_init(Lora *lo, const Model *base, const LoraSpec *s, unsigned flags,
              uint64_t seed, char *unmatched, size_t unmatched_cap, TrlErr *err)
{
	memset(lo, 0, sizeof *lo);
	if (s->r < 1 || !(s->alpha > 0) || !(s->dropout >= 0 && s->dropout < 1))
		return trl_errf(err, TRL_EINVAL,
		                "LoRA: lora_r (%d) must be >= 1, lora_alpha (%g) > 0 and "
		                "lora_dropout (%g) in [0, 1)",
		                s->r, (double)s->alpha, (double)s->dropout);
	lo->spec = *s;
	lo->seed = seed;
	lo->scale = s->rslora ? s->alpha / sqrtf((float)s->r) : s->alpha / (float)s->r;
	ParamTable t;
	int rc = build_table(&t, &base->cfg, s, &lo->n_adapted, &lo->head_copy, unmatched,
	                     unmatched_cap, err);
	if (!rc)
		rc = model_init_adapters(&lo->ad, &base->cfg, &t, flags, err);
	params_free(&t);
	if (rc) {
		lora_free(lo);
		return rc;
	}
	for (int i = 0; i < lo->ad.table.n; i++)
		lo->n_trainable += lo->ad.table.p[i].numel;
	if (lo->ad.params)
		lora_initial_values(lo, base, base->params, lo->ad.params);
	return TRL_OK;
}

void lora_initial_values(const Lora *lo, const Model *base, const float *base_params,
                         float *dst)
{
	model_init_weights_range(&lo->ad, lo->seed, dst, 0, lo->ad.table.total);
	if (!lo->head_copy || !base_params)
		return;
	const ParamInfo *h = &lo->ad.table.p[lo->ad.table.n - 1];
	const char *src = strstr(h->name, "score") ? "score.weight" : "lm_head.weight";
	const ParamInfo *b = params_find(&base->table, src);
	if (b && b->numel == h->numel)
		memcpy(dst + h->offset, base_params + b->offset,
		       h->numel * sizeof(float));
}

void lora_free(Lora *lo)
{
	model_free(&lo->ad);
	memset(lo, 0, sizeof *lo);
}

void lora_attach(Model *base, Lora *lo)
{
	base->lora = lo;
}

/* The distinct last names of the adapted modules ("q_proj"), in module
 * order, into names[], and how many modules carry each; returns how many. */
static int adapted_names(const Lora *lo, const ModelConfig *mc, char names[][48],
                         int *counts)
{
	int n = 0;
	for (int l = 0; l < mc->num_hidden_layers; l++)
		for (int mod = 0; mod < LORA_NMOD; mod++) {
			if (!lo->ad.w.layer[l].lora_a[mod])
				continue;
			char path[TRL_PARAM_NAME_MAX];
			int in, out;
			lora_module_path(mc, l, (LoraModule)mod, path, sizeof path, &in,
			                 &out);
			const char *last = strrchr(path, '.') + 1;
			int k = 0;
			while (k < n && strcmp(names[k], last) != 0)
				k++;
			if (k == n && n < LORA_NMOD) {
				snprintf(names[n], 48, "%s", last);
				counts[n++] = 0;
			}
			if (k < n)
				counts[k]++;
		}
	return n;
}

void lora_describe(const Lora *lo, const Model *base, char *buf, size_t cap)
{
	char names[LORA_NMOD][48];
	int counts[LORA_NMOD];
	int nn = adapted_names(lo, &base->cfg, names, counts);
	size_t all = lo->n_trainable + base->table.total;
	int n = snprintf(
	    buf, cap,
	    "LoRA r %d, alpha %g (scale %g%s), dropout %g on %d modules:", lo->spec.r,
	    (double)lo->spec.alpha, (double)lo->scale, lo->spec.rslora ? ", rsLoRA" : "",
	    (double)lo->spec.dropout, lo->n_adapted);
	for (int k = 0; k < nn && n > 0 && (size_t)n < cap; k++)
		n += snprintf(buf + n, cap - (size_t)n, " %s x%d", names[k], counts[k]);
	if (lo->head_copy && n > 0 && (size_t)n < cap)
		n += snprintf(buf + n, cap - (size_t)n, "; %s trained whole",
		              strstr(lo->ad.table.p[lo->ad.table.n - 1].name, "score")
		                  ? "score"
		                  : "lm_head");
	if (n > 0 && (size_t)n < cap)
		snprintf(
		    buf + n, cap - (size_t)n,
		    "\ntrainable params: %zu || all params: %zu || trainable%%: %.4f",
		    lo->n_trainable, all, 100.0 * (double)lo->n_trainable / (double)all);
}

/* ---- kernels ------------------------------------------------------------------ */

uint64_t lora_mask_key(uint64_t seed, uint64_t draw, int l, int mod)
{
	uint64_t k = seed * 0x9E3779B97F4A7C15ULL;
	k ^= draw * 0xBF58476D1CE4E5B9ULL + (uint64_t)l * 0x94D049BB133111EBULL +
	     (uint64_t)mod * 0x2545F4914F6CDD1DULL;
	return k;
}

/* The dropout factor of element i: 0 (dropped) or 1 / (1 - p). */
static inline float keep_factor(uint64_t key, size_t i, float p)
{
	uint64_t z = key + (uint64_t)i * 0x9E3779B97F4A7C15ULL;
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	z ^= z >> 31;
	double u = (double)(z >> 11) * 0x1.0p-53;
	return u < (double)p ? 0.0f : 1.0f / (1.0f - p);
}

static void dropped(float *xd, const float *x, float p, uint64_t key, size_t n)
{
#pragma omp parallel for schedule(static)
	for (size_t i = 0; i < n; i++)
		xd[i] = x[i] * keep_factor(key, i, p);
}

void lora_forward(float *out, float *v, float *xd, const float *x, const float *A,
                  const float *B, float scale, float p, uint64_t key, int N, int IC,
                  int OC, int r)
{
	const float *xin = x;
	if (p > 0) {
		dropped(xd, x, p, key, (size_t)N * IC);
		xin = xd;
	}
	/* v = scale * xin A^T (N, r), then out += v B^T */
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, r, IC, scale, xin, IC, A,
	            IC, 0.0f, v, r);
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, r, 1.0f, v, r, B, r,
	            1.0f, out, OC);
}

void lora_backward(float *dx, float *dA, float *dB, float *dv, float *xd,
                   const float *dout, const float *x, const float *v, const float *A,
                   const float *B, float scale, float p, uint64_t key, int N, int IC,
                   int OC, int r)
{
	/* dB (OC, r) += dout^T v; du = scale * dout B (N, r) */
	if (dB)
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, r, N, 1.0f, dout,
		            OC, v, r, 1.0f, dB, r);
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, r, OC, scale, dout, OC,
	            B, r, 0.0f, dv, r);
	const float *xin = x;
	if (p > 0) {
		dropped(xd, x, p, key, (size_t)N * IC);
		xin = xd;
	}
	/* dA (r, IC) += du^T xin */
	if (dA)
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, IC, N, 1.0f, dv,
		            r, xin, IC, 1.0f, dA, IC);
	if (!dx)
		return;
	if (p <= 0) { /* dx += du A */
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, IC, r, 1.0f, dv,
		            r, A, IC, 1.0f, dx, IC);
		return;
	}
	/* Through the mask: dx += (du A) * mask / (1 - p), xd reused. */
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, IC, r, 1.0f, dv, r, A,
	            IC, 0.0f, xd, IC);
	size_t n = (size_t)N * IC;
#pragma omp parallel for schedule(static)
	for (size_t i = 0; i < n; i++)
		dx[i] += xd[i] * keep_factor(key, i, p);
}

/* ---- merging ------------------------------------------------------------------ */

/* The base weight of module mod in p (gpt2's are (in, out), the rest (out, in)). */
static float *base_weight(const LayerPtrs *p, int mod)
{
	float *const w[LORA_NMOD] = {
	    [LORA_Q] = p->q_w,       [LORA_K] = p->k_w,       [LORA_V] = p->v_w,
	    [LORA_O] = p->o_w,       [LORA_GATE] = p->gate_w, [LORA_UP] = p->up_w,
	    [LORA_DOWN] = p->down_w, [LORA_QKV] = p->qkv_w,   [LORA_FC] = p->fc_w,
	    [LORA_PROJ] = p->proj_w, [LORA_IN] = p->in_w,     [LORA_COUT] = p->cout_w};
	return w[mod];
}

void lora_merge(Model *base, const Lora *lo)
{
	lora_merge_from(base, NULL, lo);
}

void lora_merge_from(Model *base, const Model *src, const Lora *lo)
{
	const ModelConfig *mc = &base->cfg;
	int gpt2 = mc->arch == TRL_ARCH_GPT2, r = lo->spec.r;
	for (int l = 0; l < mc->num_hidden_layers; l++)
		for (int mod = 0; mod < LORA_NMOD; mod++) {
			const float *A = lo->ad.w.layer[l].lora_a[mod];
			const float *B = lo->ad.w.layer[l].lora_b[mod];
			if (!A)
				continue;
			char path[TRL_PARAM_NAME_MAX];
			int in = 0, out = 0;
			if (!lora_module_path(mc, l, (LoraModule)mod, path, sizeof path,
			                      &in, &out))
				continue;
			float *W = base_weight(&base->w.layer[l], mod);
			if (src)
				memcpy(W, base_weight(&src->w.layer[l], mod),
				       (size_t)in * out * sizeof(float));
			/* Conv1D: W (in, out) += scale (B A)^T = scale A^T B^T */
			if (gpt2)
				cblas_sgemm(CblasRowMajor, CblasTrans, CblasTrans, in,
				            out, r, lo->scale, A, in, B, r, 1.0f, W, out);
			else /* W (out, in) += scale B A */
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans,
				            out, in, r, lo->scale, B, r, A, in, 1.0f, W,
				            in);
		}
	if (lo->head_copy && lo->ad.w.lm_head && base->w.lm_head) {
		const ParamInfo *h = &lo->ad.table.p[lo->ad.table.n - 1];
		memcpy(base->w.lm_head, lo->ad.w.lm_head, h->numel * sizeof(float));
	}
}

/* ---- files -------------------------------------------------------------------- */

int lora_load_merged(Model *m, const char *dir, const char *base_dir, int num_labels,
                     uint64_t seed, unsigned flags, int *head_initialized, TrlErr *err)
{
	LoraSpec s;
	char base[TRL_PATH_MAX];
	int rc = lora_read_config(dir, &s, base, sizeof base, err);
	if (rc)
		return rc;
	if (base_dir && base_dir[0])
		snprintf(base, sizeof base, "%s", base_dir);
	if (!base[0] || lora_is_adapter_dir(base))
		return trl_errf(err, TRL_EINVAL,
		                "%s/adapter_config.json: base_model_name_or_path %s%s%s "
		                "is not a model folder: name the base model's folder",
		                dir, base[0] ? "'" : "", base[0] ? base : "is empty",
		                base[0] ? "'" : "");
	rc = model_load_dir_flags(m, base, num_labels, seed,
	                          flags & ~(unsigned)MODEL_FROZEN, head_initialized, err);
	if (rc) {
		char msg[sizeof err->msg];
		snprintf(msg, sizeof msg, "%s", err->msg);
		return trl_errf(err, rc, "the base of adapter %s: %s", dir, msg);
	}
	Lora lo;
	rc = lora_init(&lo, m, &s, 0, 0, NULL, 0, err);
	if (!rc)
		rc = lora_load_weights(&lo, dir, lo.ad.params, err);
	if (!rc)
		lora_merge(m, &lo);
	lora_free(&lo);
	if (rc)
		model_free(m);
	return rc;
}

int lora_is_adapter_dir(const char *dir)
{
	char path[TRL_PATH_MAX + 32];
	struct stat st;
	snprintf(path, sizeof path, "%s/adapter_config.json", dir);
	return stat(path, &st) == 0;
}

/* target_modules: the distinct last names of the adapted modules. */
static void target_names(const Lora *lo, const ModelConfig *mc, JsonBuf *b)
{
	char names[LORA_NMOD][48];
	int counts[LORA_NMOD];
	int n = adapted_names(lo, mc, names, counts);
	json_buf_puts(b, "[");
	for (int k = 0; k < n; k++) {
		json_buf_puts(b, k ? ",\n    " : "\n    ");
		json_buf_string(b, names[k], strlen(names[k]));
	}
	json_buf_puts(b, n ? "\n  ]" : "]");
}

int lora_save_dir(const Lora *lo, const float *params, const char *base_path,
                  const char *dir, TrlErr *err)
{
	const ModelConfig *mc = &lo->ad.cfg;
	char path[TRL_PATH_MAX + 48];
	struct stat sb;
	if (mkdir(dir, 0777) != 0 && !(stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode)))
		return trl_errf(err, TRL_EIO, "%s: cannot create the adapter folder",
		                dir);
	/* PEFT 0.20's LoraConfig fields, sorted, indent 2; unset options null. */
	JsonBuf b = {0};
	int cls = mc->num_labels > 0;
	json_buf_puts(&b, "{\n  \"alora_invocation_tokens\": null,\n"
	                  "  \"alpha_pattern\": {},\n  \"arrow_config\": null,\n"
	                  "  \"auto_mapping\": null,\n  \"base_model_name_or_path\": ");
	json_buf_string(&b, base_path, strlen(base_path));
	json_buf_printf(
	    &b,
	    ",\n  \"bias\": \"none\",\n  \"corda_config\": null,\n"
	    "  \"ensure_weight_tying\": false,\n  \"eva_config\": null,\n"
	    "  \"exclude_modules\": null,\n  \"fan_in_fan_out\": %s,\n"
	    "  \"inference_mode\": true,\n  \"init_lora_weights\": true,\n"
	    "  \"kasa_config\": null,\n  \"layer_replication\": null,\n"
	    "  \"layers_pattern\": null,\n  \"layers_to_transform\": null,\n"
	    "  \"loftq_config\": {},\n  \"lora_alpha\": %g,\n  \"lora_bias\": false,\n"
	    "  \"lora_dropout\": %g,\n  \"lora_ga_config\": null,\n"
	    "  \"megatron_config\": null,\n  \"megatron_core\": \"megatron.core\",\n"
	    "  \"modules_to_save\": %s,\n  \"monteclora_config\": null,\n"
	    "  \"peft_type\": \"LORA\",\n  \"peft_version\": \"0.20.0\",\n"
	    "  \"qalora_group_size\": 16,\n  \"r\": %d,\n  \"rank_pattern\": {},\n"
	    "  \"revision\": null,\n  \"target_modules\": ",
	    mc->arch == TRL_ARCH_GPT2 ? "true" : "false", (double)lo->spec.alpha,
	    (double)lo->spec.dropout,
	    !lo->head_copy ? "null"
	    : cls          ? "[\n    \"score\"\n  ]"
	                   : "[\n    \"lm_head\"\n  ]",
	    lo->spec.r);
	target_names(lo, mc, &b);
	json_buf_printf(&b,
	                ",\n  \"target_parameters\": null,\n  \"task_type\": \"%s\",\n"
	                "  \"trainable_token_indices\": null,\n  \"use_bdlora\": null,\n"
	                "  \"use_dora\": false,\n  \"use_qalora\": false,\n"
	                "  \"use_rslora\": %s,\n  \"velora_config\": null\n}\n",
	                cls ? "SEQ_CLS" : "CAUSAL_LM",
	                lo->spec.rslora ? "true" : "false");
	if (b.oom) {
		json_buf_free(&b);
		return trl_errf(err, TRL_ENOMEM,
		                "out of memory writing adapter_config.json");
	}
	snprintf(path, sizeof path, "%s/adapter_config.json", dir);
	int rc = model_io_write_file(path, b.p, b.len, err);
	json_buf_free(&b);
	if (rc)
		return rc;

	const ParamTable *t = &lo->ad.table;
	StTensor *st = calloc((size_t)t->n, sizeof *st);
	if (!st)
		return trl_errf(err, TRL_ENOMEM, "out of memory writing the adapter");
	for (int i = 0; i < t->n; i++) {
		const ParamInfo *p = &t->p[i];
		snprintf(st[i].name, sizeof st[i].name, "%s", p->name);
		st[i].dtype = ST_F32;
		st[i].ndim = params_file_shape(p, st[i].shape);
		st[i].data = params + p->offset;
		st[i].nbytes = p->numel * sizeof(float);
	}
	const char *meta[2] = {"format", "pt"};
	snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
	rc = st_write(path, st, t->n, meta, 1, err);
	free(st);
	return rc;
}

int lora_read_config(const char *dir, LoraSpec *s, char *base, size_t cap, TrlErr *err)
{
	char path[TRL_PATH_MAX + 32];
	snprintf(path, sizeof path, "%s/adapter_config.json", dir);
	JsonValue *root = NULL;
	int rc = json_load_file(path, &root, err);
	if (rc)
		return rc;
	lora_spec_defaults(s);
	s->alpha = 8.0f; /* PEFT's own defaults where the file is silent */
	s->r = 8;
	s->dropout = 0.0f;
	const char *type = json_str(json_get(root, "peft_type"));
	const JsonValue *v;
	int64_t r;
	double x;
	if (!type || strcmp(type, "LORA") != 0) {
		rc = trl_errf(err, TRL_EUNSUPPORTED,
		              "%s: peft_type is %s%s%s; only LORA is "
		              "supported",
		              path, type ? "'" : "", type ? type : "missing",
		              type ? "'" : "");
		goto out;
	}
	if ((v = json_get(root, "r")) && (json_int(v, &r) || r < 1 || r > 1 << 20)) {
		rc = trl_errf(err, TRL_EFORMAT, "%s: r must be a positive integer", path);
		goto out;
	}
	if (v)
		s->r = (int)r;
	if ((v = json_get(root, "lora_alpha")) && !json_num(v, &x))
		s->alpha = (float)x;
	if ((v = json_get(root, "lora_dropout")) && !json_num(v, &x))
		s->dropout = (float)x;
	s->rslora =
	    (v = json_get(root, "use_rslora")) && v->type == JSON_BOOL && v->boolean;
	if ((v = json_get(root, "use_dora")) && v->type == JSON_BOOL && v->boolean) {
		rc = trl_errf(err, TRL_EUNSUPPORTED,
		              "%s: use_dora (DoRA) is not supported", path);
		goto out;
	}
	const char *bias = json_str(json_get(root, "bias"));
	if (bias && strcmp(bias, "none") != 0) {
		rc = trl_errf(err, TRL_EUNSUPPORTED,
		              "%s: bias '%s' is not supported (only \"none\")", path,
		              bias);
		goto out;
	}
	/* target_modules: a list, or a string (PEFT: a regex, except all-linear). */
	struct {
		const char *key;
		char *dst;
	} lists[2] = {{"target_modules", s->targets}, {"modules_to_save", s->to_save}};
	for (int k = 0; k < 2; k++) {
		v = json_get(root, lists[k].key);
		if (!v || v->type == JSON_NULL)
			continue;
		if (v->type == JSON_STRING) {
			if (k == 0 && strcmp(v->str, "all-linear") != 0) {
				rc = trl_errf(
				    err, TRL_EUNSUPPORTED,
				    "%s: target_modules '%s' is a regular expression "
				    "(PEFT's rule for a string); give a list of names",
				    path, v->str);
				goto out;
			}
			snprintf(lists[k].dst, TRL_LORA_LIST_MAX, "%s", v->str);
			continue;
		}
		size_t n = 0;
		for (size_t i = 0; i < v->len; i++) {
			const char *e = json_str(json_at(v, i));
			if (!e)
				continue;
			n += (size_t)snprintf(lists[k].dst + n, TRL_LORA_LIST_MAX - n,
			                      "%s%s", n ? "," : "", e);
			if (n >= TRL_LORA_LIST_MAX) {
				rc = trl_errf(err, TRL_EFORMAT, "%s: %s is too long",
				              path, lists[k].key);
				goto out;
			}
		}
	}
	const char *bp = json_str(json_get(root, "base_model_name_or_path"));
	snprintf(base, cap, "%s", bp ? bp : "");
out:
	json_free(root);
	return rc;
}

int lora_load_weights(const Lora *lo, const char *dir, float *dst, TrlErr *err)
{
	char path[TRL_PATH_MAX + 32];
	snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
	StFile f = {0};
	int rc = st_open(&f, path, err);
	if (rc)
		return rc;
	const ParamTable *t = &lo->ad.table;
	for (int i = 0; i < t->n && !rc; i++) {
		const ParamInfo *p = &t->p[i];
		const StTensor *x = st_find(&f, p->name);
		int64_t want[3];
		int nd = params_file_shape(p, want), ok = x && x->ndim == nd;
		for (int d = 0; ok && d < nd; d++)
			ok = x->shape[d] == want[d];
		if (!x)
			rc = trl_errf(err, TRL_EFORMAT,
			              "%s: no tensor '%s' (adapter_config.json's targets "
			              "adapt that module)",
			              path, p->name);
		else if (!ok)
			rc = trl_errf(err, TRL_EFORMAT,
			              "%s: tensor '%s' does not have the shape r and the "
			              "base model imply",
			              path, p->name);
		else
			rc = st_tensor_to_f32(x, dst + p->offset, p->numel, err);
	}
	st_close(&f);
	return rc;
}
