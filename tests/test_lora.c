/* test_lora.c - LoRA: the adapter kernels against finite differences, whole
 * models with adapters (frozen base: only adapter gradients, which match
 * finite differences), target matching as PEFT matches, merging, switching
 * adapters off, and PEFT's adapter files. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json.h"
#include "layers.h"
#include "lora.h"
#include "model.h"
#include "random_model.h"
#include "rng.h"
#include "safetensors.h"

static ModelConfig tiny(TrlArch arch)
{
	ModelConfig mc = {0};
	mc.arch = arch;
	mc.vocab_size = 23;
	mc.hidden_size = 16;
	mc.num_hidden_layers = 2;
	mc.num_attention_heads = 4;
	mc.num_key_value_heads = arch == TRL_ARCH_GPT2 ? 4 : 2;
	mc.intermediate_size = 24;
	mc.max_position_embeddings = 16;
	mc.tie_word_embeddings = 1;
	mc.rope_theta = 10000.0f;
	mc.norm_eps = 1e-5f;
	mc.initializer_range = 0.3f;
	if (arch == TRL_ARCH_LFM2) {
		mc.num_hidden_layers = 3;
		mc.attn_layer[1] = 1;
		mc.conv_L_cache = 3;
	}
	return mc;
}

static void fill(float *x, size_t n, Rng *r, double s)
{
	for (size_t i = 0; i < n; i++)
		x[i] = (float)(s * rng_normal(r));
}

/* ---- kernels ------------------------------------------------------------------ */

/* L = sum(G * out) with out = lora_forward(...): the analytic gradients of x,
 * A and B against central differences in double-ish float. */
static void check_kernel(float p)
{
	enum { N = 5, IC = 7, OC = 6, R = 3 };
	float x[N * IC], A[R * IC], B[OC * R], G[N * OC];
	float v[N * R], xd[N * IC], dv[N * R], out[N * OC];
	Rng r;
	rng_seed(&r, 3);
	fill(x, N * IC, &r, 1.0);
	fill(A, R * IC, &r, 0.5);
	fill(B, OC * R, &r, 0.5);
	fill(G, N * OC, &r, 1.0);
	const float scale = 1.7f;
	const uint64_t key = 77;
	float dx[N * IC] = {0}, dA[R * IC] = {0}, dB[OC * R] = {0};
	memset(out, 0, sizeof out);
	lora_forward(out, v, xd, x, A, B, scale, p, key, N, IC, OC, R);
	lora_backward(dx, dA, dB, dv, xd, G, x, v, A, B, scale, p, key, N, IC, OC, R);
	float *params[3] = {x, A, B}, *grads[3] = {dx, dA, dB};
	int sizes[3] = {N * IC, R * IC, OC * R};
	for (int k = 0; k < 3; k++)
		for (int i = 0; i < sizes[k]; i++) {
			double l[2];
			float keep = params[k][i];
			for (int s = 0; s < 2; s++) {
				params[k][i] = keep + (s ? -1e-2f : 1e-2f);
				memset(out, 0, sizeof out);
				lora_forward(out, v, xd, x, A, B, scale, p, key, N, IC,
				             OC, R);
				l[s] = 0;
				for (int j = 0; j < N * OC; j++)
					l[s] += (double)G[j] * out[j];
			}
			params[k][i] = keep;
			double fd = (l[0] - l[1]) / 2e-2;
			cr_assert(
			    fabs(fd - grads[k][i]) <= 1e-3 + 1e-3 * fabs(fd),
			    "p %g tensor %d [%d]: analytic %g, finite difference %g",
			    (double)p, k, i, (double)grads[k][i], fd);
		}
	/* With dropout, some inputs are dropped: their dx is exactly zero. */
	if (p > 0) {
		int zeros = 0;
		for (int i = 0; i < N * IC; i++)
			zeros += xd[i] == 0.0f;
		cr_assert_gt(zeros, 0, "dropout %g dropped nothing", (double)p);
	}
}

Test(lora, kernel_gradients_match_finite_differences)
{
	check_kernel(0.0f);
	check_kernel(0.3f);
}

/* ---- whole models ------------------------------------------------------------- */

static void fill_batch(Batch *b, int V, uint64_t seed)
{
	Rng r;
	rng_seed(&r, seed);
	for (int i = 0; i < b->B * b->T; i++) {
		int t = i % b->T;
		b->ids[i] = (int32_t)rng_below(&r, (uint64_t)V);
		b->pos[i] = t;
		b->doc[i] = 0;
	}
	for (int i = 0; i < b->B * b->T; i++)
		b->targets[i] = i % b->T + 1 < b->T ? b->ids[i + 1] : -1;
}

typedef struct Setup {
	Model base;
	Lora lo;
	Batch b;
} Setup;

/* A frozen base with random weights and adapters whose B is random too (so
 * the adapters change the output and every gradient is exercised). */
static void setup(Setup *s, ModelConfig mc, const char *targets, float dropout)
{
	TrlErr err = {0};
	cr_assert_eq(model_init_flags(&s->base, &mc, MODEL_FROZEN, &err), 0, "%s",
	             err.msg);
	random_model_weights(&s->base, 5);
	LoraSpec sp;
	lora_spec_defaults(&sp);
	sp.r = 4;
	sp.alpha = 4.0f; /* scale 1: finite differences stay in the linear range */
	sp.dropout = dropout;
	snprintf(sp.targets, sizeof sp.targets, "%s", targets);
	cr_assert_eq(lora_init(&s->lo, &s->base, &sp, 0, 9, NULL, 0, &err), 0, "%s",
	             err.msg);
	Rng r;
	rng_seed(&r, 8);
	for (int i = 0; i < s->lo.ad.table.n; i++) {
		const ParamInfo *p = &s->lo.ad.table.p[i];
		if (p->kind == TRL_PARAM_LORA_B)
			fill(s->lo.ad.params + p->offset, p->numel, &r, 0.3);
	}
	lora_attach(&s->base, &s->lo);
	cr_assert_eq(model_alloc_activations(&s->base, 2, 6, &err), 0, "%s", err.msg);
	cr_assert_eq(batch_alloc(&s->b, 2, 6, &err), 0);
	fill_batch(&s->b, mc.vocab_size, 11);
}

static void teardown(Setup *s)
{
	batch_free(&s->b);
	s->base.lora = NULL;
	model_free(&s->base);
	lora_free(&s->lo);
}

static double loss_of(Setup *s)
{
	model_forward(&s->base, &s->b);
	long n = 0;
	double l = crossentropy_forward_backward(s->base.logits, s->b.targets, 12,
	                                         s->base.cfg.vocab_size, 0.0f, &n, NULL);
	return l / (double)n;
}

static void check_model_gradients(ModelConfig mc, const char *targets)
{
	Setup s;
	setup(&s, mc, targets, 0.0f);
	cr_assert_null(s.base.grads, "a frozen base has no gradient slab");
	size_t nb = s.base.table.total * sizeof(float);
	float *before = malloc(nb);
	memcpy(before, s.base.params, nb);
	model_forward(&s.base, &s.b);
	long n = 0;
	for (int i = 0; i < 12; i++)
		n += s.b.targets[i] >= 0;
	crossentropy_forward_backward(s.base.logits, s.b.targets, 12, mc.vocab_size,
	                              1.0f / (float)n, NULL, NULL);
	memset(s.lo.ad.grads, 0, s.lo.ad.table.total * sizeof(float));
	model_backward(&s.base, &s.b);
	Rng r;
	rng_seed(&r, 2);
	Model *ad = &s.lo.ad;
	for (int i = 0; i < ad->table.n; i++) {
		const ParamInfo *p = &ad->table.p[i];
		for (int k = 0; k < 3; k++) {
			size_t j = p->offset + rng_below(&r, p->numel);
			float keep = ad->params[j];
			ad->params[j] = keep + 1e-2f;
			double lp = loss_of(&s);
			ad->params[j] = keep - 1e-2f;
			double lm = loss_of(&s);
			ad->params[j] = keep;
			double fd = (lp - lm) / 2e-2, an = ad->grads[j];
			cr_expect(fabs(fd - an) <= 2e-3 + 3e-2 * fabs(fd),
			          "%s[%zu]: analytic %.6g vs finite difference %.6g",
			          p->name, j - p->offset, an, fd);
		}
	}
	cr_assert_eq(memcmp(before, s.base.params, nb), 0,
	             "the frozen base changed in a forward and backward");
	free(before);
	teardown(&s);
}

Test(lora, adapter_gradients_match_finite_differences)
{
	check_model_gradients(tiny(TRL_ARCH_LLAMA), "all-linear");
	check_model_gradients(tiny(TRL_ARCH_GPT2), "all-linear");
	check_model_gradients(tiny(TRL_ARCH_LFM2), "all-linear");
	check_model_gradients(tiny(TRL_ARCH_LFM2), "q_proj,k_proj,v_proj,o_proj");
}

/* Adapters off: the base's logits bitwise. Merged: the base alone computes
 * what base plus adapters computed. */
static void check_merge(ModelConfig mc)
{
	Setup s;
	setup(&s, mc, "all-linear", 0.0f);
	int N = 12, V = mc.vocab_size;
	float *with = malloc((size_t)N * V * sizeof(float));
	float *off = malloc((size_t)N * V * sizeof(float));
	model_forward(&s.base, &s.b);
	memcpy(with, s.base.logits, (size_t)N * V * sizeof(float));
	s.lo.off = 1;
	model_forward(&s.base, &s.b);
	memcpy(off, s.base.logits, (size_t)N * V * sizeof(float));
	s.lo.off = 0;
	double dmax = 0;
	for (int i = 0; i < N * V; i++)
		dmax = fmax(dmax, fabs(with[i] - off[i]));
	cr_assert_gt(dmax, 1e-3, "the adapters change nothing");

	/* The same base without adapters gives the off logits exactly. */
	s.base.lora = NULL;
	model_forward(&s.base, &s.b);
	cr_assert_eq(memcmp(off, s.base.logits, (size_t)N * V * sizeof(float)), 0,
	             "adapters off must be the base model bitwise");
	lora_merge(&s.base, &s.lo);
	model_forward(&s.base, &s.b);
	double err = 0, scale = 0;
	for (int i = 0; i < N * V; i++) {
		err = fmax(err, fabs(s.base.logits[i] - with[i]));
		scale = fmax(scale, fabs(with[i]));
	}
	cr_assert_lt(err / scale, 1e-5, "merged logits differ by %g relative",
	             err / scale);
	free(with);
	free(off);
	teardown(&s);
}

Test(lora, merged_equals_base_plus_adapter_and_off_equals_base)
{
	check_merge(tiny(TRL_ARCH_LLAMA));
	check_merge(tiny(TRL_ARCH_GPT2));
	check_merge(tiny(TRL_ARCH_LFM2));
}

/* Dropout acts in training forwards only, and changes them. */
Test(lora, dropout_only_in_training_forwards)
{
	Setup s;
	setup(&s, tiny(TRL_ARCH_LLAMA), "all-linear", 0.5f);
	double eval1 = loss_of(&s), eval2 = loss_of(&s);
	cr_assert_eq(eval1, eval2);
	s.lo.train = 1;
	double tr = loss_of(&s);
	cr_assert_neq(tr, eval1, "dropout 0.5 left the training loss unchanged");
	teardown(&s);
}

/* ---- targets ------------------------------------------------------------------ */

static int count_names(const Lora *lo, const char *needle)
{
	int n = 0;
	for (int i = 0; i < lo->ad.table.n; i++)
		n += strstr(lo->ad.table.p[i].name, needle) != NULL;
	return n;
}

Test(lora, targets_match_as_peft_matches)
{
	ModelConfig mc = tiny(TRL_ARCH_LFM2);
	Model base;
	TrlErr err = {0};
	cr_assert_eq(model_init_flags(&base, &mc, MODEL_FROZEN, &err), 0, "%s", err.msg);
	LoraSpec sp;
	lora_spec_defaults(&sp);
	Lora lo;
	char unmatched[128];

	/* all-linear: every linear but the head; never the conv kernel. */
	snprintf(sp.targets, sizeof sp.targets, "all-linear");
	cr_assert_eq(lora_init(&lo, &base, &sp, 0, 1, unmatched, sizeof unmatched, &err),
	             0, "%s", err.msg);
	cr_assert_eq(lo.n_adapted, 2 * 5 + 7, "conv layers 5 modules, attention 7");
	cr_assert_eq(count_names(&lo, "conv.in_proj.lora_A"), 2);
	cr_assert_eq(count_names(&lo, "self_attn.out_proj.lora_B"), 1);
	cr_assert_eq(count_names(&lo, "conv.conv"), 0);
	cr_assert_eq(count_names(&lo, "lm_head"), 0);
	const ParamInfo *a =
	    params_find(&lo.ad.table,
	                "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight");
	cr_assert_not_null(a, "PEFT's saved name");
	cr_assert(a->shape[0] == 16 && a->shape[1] == 16, "lora_A (r, in)");
	lora_free(&lo);

	/* The seed's list on lfm2: o_proj matches nothing and is reported. */
	snprintf(sp.targets, sizeof sp.targets, "q_proj, k_proj, v_proj, o_proj");
	cr_assert_eq(lora_init(&lo, &base, &sp, 0, 1, unmatched, sizeof unmatched, &err),
	             0, "%s", err.msg);
	cr_assert_eq(lo.n_adapted, 3);
	cr_assert_str_eq(unmatched, "o_proj");
	lora_free(&lo);

	/* out_proj hits the attention's and the conv's output; a dotted suffix
	 * limits it. */
	snprintf(sp.targets, sizeof sp.targets, "out_proj");
	cr_assert_eq(lora_init(&lo, &base, &sp, 0, 1, NULL, 0, &err), 0, "%s", err.msg);
	cr_assert_eq(lo.n_adapted, 3);
	lora_free(&lo);
	snprintf(sp.targets, sizeof sp.targets, "self_attn.out_proj");
	cr_assert_eq(lora_init(&lo, &base, &sp, 0, 1, NULL, 0, &err), 0, "%s", err.msg);
	cr_assert_eq(lo.n_adapted, 1);
	lora_free(&lo);

	/* Nothing matching is an error; so is lfm2 without targets. */
	snprintf(sp.targets, sizeof sp.targets, "o_proj");
	cr_assert_neq(lora_init(&lo, &base, &sp, 0, 1, NULL, 0, &err), 0);
	cr_assert(strstr(err.msg, "o_proj") && strstr(err.msg, "matches no"), "%s",
	          err.msg);
	sp.targets[0] = '\0';
	cr_assert_neq(lora_init(&lo, &base, &sp, 0, 1, NULL, 0, &err), 0);
	cr_assert(strstr(err.msg, "lora_target_modules"), "%s", err.msg);
	model_free(&base);

	/* llama: PEFT's default q_proj, v_proj. */
	mc = tiny(TRL_ARCH_LLAMA);
	cr_assert_eq(model_init_flags(&base, &mc, MODEL_FROZEN, &err), 0, "%s", err.msg);
	cr_assert_eq(lora_init(&lo, &base, &sp, 0, 1, NULL, 0, &err), 0, "%s", err.msg);
	cr_assert_eq(lo.n_adapted, 4);
	cr_assert_eq(count_names(&lo, "v_proj.lora_A"), 2);
	/* PEFT's scaling: alpha / r, or alpha / sqrt(r) with rsLoRA. */
	cr_assert_float_eq(lo.scale, 2.0f, 1e-6);
	lora_free(&lo);
	sp.rslora = 1;
	cr_assert_eq(lora_init(&lo, &base, &sp, 0, 1, NULL, 0, &err), 0, "%s", err.msg);
	cr_assert_float_eq(lo.scale, 8.0f, 1e-6);
	/* PEFT's initialisation: B zero, A within +-1/sqrt(in). */
	for (int i = 0; i < lo.ad.table.n; i++) {
		const ParamInfo *p = &lo.ad.table.p[i];
		double bound = 1.0 / sqrt((double)p->shape[1]), mx = 0;
		for (size_t j = 0; j < p->numel; j++)
			mx = fmax(mx, fabs(lo.ad.params[p->offset + j]));
		if (p->kind == TRL_PARAM_LORA_B)
			cr_assert_eq(mx, 0.0, "%s starts at zero", p->name);
		else
			cr_assert(mx > 0.5 * bound && mx <= bound,
			          "%s: max |A| %g, bound %g", p->name, mx, bound);
	}
	lora_free(&lo);
	model_free(&base);
}

/* ---- files -------------------------------------------------------------------- */

Test(lora, adapter_files_as_peft_writes_them_load_back_bitwise)
{
	Setup s;
	setup(&s, tiny(TRL_ARCH_LFM2), "q_proj,v_proj,in_proj", 0.05f);
	char dir[] = "/tmp/trl-lora-XXXXXX", path[96];
	cr_assert_not_null(mkdtemp(dir));
	TrlErr err = {0};
	cr_assert_eq(
	    lora_save_dir(&s.lo, s.lo.ad.params, "LiquidAI/LFM2-1.2B", dir, &err), 0,
	    "%s", err.msg);

	snprintf(path, sizeof path, "%s/adapter_config.json", dir);
	JsonValue *root = NULL;
	cr_assert_eq(json_load_file(path, &root, &err), 0, "%s", err.msg);
	cr_assert_str_eq(json_str(json_get(root, "peft_type")), "LORA");
	cr_assert_str_eq(json_str(json_get(root, "task_type")), "CAUSAL_LM");
	cr_assert_str_eq(json_str(json_get(root, "base_model_name_or_path")),
	                 "LiquidAI/LFM2-1.2B");
	int64_t r;
	cr_assert_eq(json_int(json_get(root, "r"), &r), 0);
	cr_assert_eq(r, 4);
	const JsonValue *tm = json_get(root, "target_modules");
	cr_assert(tm && tm->type == JSON_ARRAY && tm->len == 3);
	/* Keys sorted, as PEFT's to_json_string writes them. */
	for (size_t i = 1; i < root->len; i++)
		cr_assert_lt(strcmp(root->members[i - 1].key, root->members[i].key), 0);
	json_free(root);

	snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
	StFile f = {0};
	cr_assert_eq(st_open(&f, path, &err), 0, "%s", err.msg);
	cr_assert_eq(f.n, s.lo.ad.table.n);
	const StTensor *t =
	    st_find(&f, "base_model.model.model.layers.0.conv.in_proj.lora_B.weight");
	cr_assert_not_null(t);
	cr_assert(t->dtype == ST_F32 && t->ndim == 2 && t->shape[0] == 48 &&
	          t->shape[1] == 4);
	st_close(&f);

	LoraSpec sp;
	char base[64];
	cr_assert_eq(lora_read_config(dir, &sp, base, sizeof base, &err), 0, "%s",
	             err.msg);
	cr_assert_eq(sp.r, 4);
	cr_assert_float_eq(sp.dropout, 0.05f, 1e-7);
	cr_assert_str_eq(base, "LiquidAI/LFM2-1.2B");
	Lora back;
	cr_assert_eq(lora_init(&back, &s.base, &sp, 0, 123, NULL, 0, &err), 0, "%s",
	             err.msg);
	cr_assert_eq(lora_load_weights(&back, dir, back.ad.params, &err), 0, "%s",
	             err.msg);
	cr_assert_eq(back.ad.table.total, s.lo.ad.table.total);
	cr_assert_eq(
	    memcmp(back.ad.params, s.lo.ad.params, s.lo.ad.table.total * sizeof(float)),
	    0, "adapter round trip is bitwise");
	lora_free(&back);
	teardown(&s);
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
}
