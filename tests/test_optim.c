/* test_optim.c - AdamW steps, decay masks over slab ranges, LR schedules, grad norms. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optim.h"

/* A hand-built table laid out like params_build would: tensors on 16-float
 * boundaries with padding between them.
 *   [ 0, 20) matrix      pad [20, 32)
 *   [32, 42) embedding   pad [42, 48)
 *   [48, 53) norm        pad [53, 64)
 *   [64, 67) bias        pad [67, 80)
 *   [80, 96) matrix                      total 96 */
static ParamInfo tbl_info[5];
static ParamTable tbl;

static void add_param(int i, const char *name, size_t offset, size_t numel,
                      TrlParamKind kind)
{
	ParamInfo *p = &tbl_info[i];
	memset(p, 0, sizeof *p);
	snprintf(p->name, sizeof p->name, "%s", name);
	p->ndim = 1;
	p->shape[0] = numel;
	p->offset = offset;
	p->numel = numel;
	p->kind = kind;
	p->layer = -1;
}

static void build_table(void)
{
	add_param(0, "w0", 0, 20, TRL_PARAM_MATRIX);
	add_param(1, "wte", 32, 10, TRL_PARAM_EMBEDDING);
	add_param(2, "ln.weight", 48, 5, TRL_PARAM_NORM);
	add_param(3, "b", 64, 3, TRL_PARAM_BIAS);
	add_param(4, "w1", 80, 16, TRL_PARAM_MATRIX);
	memset(&tbl, 0, sizeof tbl);
	tbl.p = tbl_info;
	tbl.n = 5;
	tbl.total = 96;
}

/* The expected mask value of slab float i, written out from the layout above. */
static int expect_decay(size_t i, int decay_embeddings)
{
	if (i < 20 || (i >= 80 && i < 96))
		return 1;
	if (i >= 32 && i < 42)
		return decay_embeddings;
	return 0;
}

/* A one-parameter table for the update arithmetic. */
static ParamInfo one_info = {.name = "w",
                             .ndim = 1,
                             .shape = {1},
                             .offset = 0,
                             .numel = 1,
                             .kind = TRL_PARAM_MATRIX,
                             .layer = -1};
static ParamTable one_tbl = {.p = &one_info, .n = 1, .total = 1};

/* Three AdamW steps on one parameter; expected values computed by hand (in
 * double, from the torch.optim.AdamW formulas) and written down as numbers. */
static void check_three_steps(double p0, const float g[3], double lr, double wd,
                              double b1, double b2, double eps, const double want[3])
{
	AdamW o;
	TrlErr err = {0};
	cr_assert_eq(adamw_init(&o, &one_tbl, 0, 1, b1, b2, eps, wd, 0, &err), 0, "%s",
	             err.msg);
	float p = (float)p0;
	for (int t = 0; t < 3; t++) {
		adamw_step(&o, &p, &g[t], lr);
		cr_assert_eq(o.step, t + 1);
		cr_assert(fabs(p - want[t]) <= 2e-6 * fmax(1.0, fabs(want[t])),
		          "step %d: got %.9g, want %.9g", t + 1, p, want[t]);
	}
	adamw_free(&o);
}

Test(optim, adamw_matches_hand_computed_steps)
{
	const float g[3] = {0.5f, -0.25f, 2.0f};
	const double want[3] = {0.900000002, 0.8733662987078463, 0.8063015345291531};
	check_three_steps(1.0, g, 0.1, 0.0, 0.9, 0.999, 1e-8, want);
}

Test(optim, adamw_decoupled_weight_decay_matches_hand_computed_steps)
{
	const float g[3] = {0.5f, -0.25f, 2.0f};
	const double want[3] = {0.899000002, 0.8714672987058463, 0.8035310672284472};
	check_three_steps(1.0, g, 0.1, 0.01, 0.9, 0.999, 1e-8, want);
}

Test(optim, adamw_other_betas_and_eps)
{
	const float g[3] = {-3.0f, 1.0f, 0.125f};
	const double want[3] = {-1.9880000033333323, -1.9825266641617196,
	                        -1.9783022254549119};
	check_three_steps(-2.0, g, 0.01, 0.1, 0.8, 0.99, 1e-6, want);
}

/* At t = 1 bias correction makes mhat = g and vhat = g^2, so every parameter
 * moves by lr * sign(g) whatever the size of g. */
Test(optim, adamw_first_step_moves_by_lr_times_sign)
{
	enum { N = 7 };
	ParamInfo info = {.name = "w",
	                  .ndim = 1,
	                  .shape = {N},
	                  .numel = N,
	                  .kind = TRL_PARAM_MATRIX,
	                  .layer = -1};
	ParamTable t = {.p = &info, .n = 1, .total = N};
	float p[N] = {0}, g[N] = {1e-3f, -1e-3f, 5.0f, -200.0f, 0.3f, -0.7f, 1e2f};
	AdamW o;
	TrlErr err = {0};
	cr_assert_eq(adamw_init(&o, &t, 0, N, 0.9, 0.999, 1e-8, 0.0, 0, &err), 0);
	adamw_step(&o, p, g, 0.01);
	for (int i = 0; i < N; i++) {
		double want = g[i] > 0 ? -0.01 : 0.01;
		cr_assert(fabs(p[i] - want) < 1e-6, "p[%d] = %.9g, want %.9g", i, p[i],
		          want);
	}
	adamw_free(&o);
}

/* A double-precision AdamW over many random-looking elements and steps,
 * including a learning rate that changes every step, like a scheduler. */
Test(optim, adamw_matches_double_reference_over_many_elements)
{
	enum { N = 10000, STEPS = 5 };
	ParamInfo info = {.name = "w",
	                  .ndim = 2,
	                  .shape = {100, 100},
	                  .numel = N,
	                  .kind = TRL_PARAM_MATRIX,
	                  .layer = 0};
	ParamTable t = {.p = &info, .n = 1, .total = N};
	static float p[N], g[N];
	static double rp[N], rm[N], rv[N];
	const double b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1;
	for (int i = 0; i < N; i++) {
		p[i] = (float)sin(0.37 * i);
		rp[i] = p[i];
		rm[i] = rv[i] = 0.0;
	}
	AdamW o;
	TrlErr err = {0};
	cr_assert_eq(adamw_init(&o, &t, 0, N, b1, b2, eps, wd, 0, &err), 0);
	for (int s = 1; s <= STEPS; s++) {
		double lr = 1e-3 * s;
		for (int i = 0; i < N; i++)
			g[i] = (float)(cos(0.11 * i * s) * (1 + i % 7));
		adamw_step(&o, p, g, lr);
		for (int i = 0; i < N; i++) {
			rp[i] *= 1.0 - lr * wd;
			rm[i] = b1 * rm[i] + (1 - b1) * g[i];
			rv[i] = b2 * rv[i] + (1 - b2) * (double)g[i] * g[i];
			double mh = rm[i] / (1 - pow(b1, s)),
			       vh = rv[i] / (1 - pow(b2, s));
			rp[i] -= lr * mh / (sqrt(vh) + eps);
		}
	}
	double maxerr = 0.0;
	for (int i = 0; i < N; i++)
		maxerr = fmax(maxerr, fabs(p[i] - rp[i]));
	cr_assert(maxerr < 1e-5, "max |p - reference| = %g", maxerr);
	adamw_free(&o);
}

Test(optim, decay_mask_follows_kinds_and_padding)
{
	build_table();
	for (int emb = 0; emb <= 1; emb++) {
		AdamW o;
		TrlErr err = {0};
		cr_assert_eq(
		    adamw_init(&o, &tbl, 0, tbl.total, 0.9, 0.999, 1e-8, 0.1, emb, &err),
		    0, "%s", err.msg);
		for (size_t i = 0; i < tbl.total; i++)
			cr_assert_eq(adamw_decays(&o, i), expect_decay(i, emb),
			             "decay_embeddings=%d float %zu", emb, i);
		adamw_free(&o);
	}
}

/* Shards that cut tensors anywhere (including inside padding and exactly at
 * tensor edges) see the same mask as the matching slice of the full range. */
Test(optim, decay_mask_of_any_subrange_is_the_slice)
{
	build_table();
	const size_t cuts[][2] = {{0, 96},  {10, 70}, {20, 32}, {33, 34}, {41, 81},
	                          {53, 67}, {0, 1},   {95, 96}, {48, 48}, {5, 90}};
	for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) {
		for (int emb = 0; emb <= 1; emb++) {
			size_t b = cuts[c][0], e = cuts[c][1];
			AdamW o;
			TrlErr err = {0};
			cr_assert_eq(
			    adamw_init(&o, &tbl, b, e, 0.9, 0.999, 1e-8, 0.1, emb, &err),
			    0, "%s", err.msg);
			cr_assert_eq(o.begin, b);
			cr_assert_eq(o.end, e);
			for (size_t i = b; i < e; i++)
				cr_assert_eq(adamw_decays(&o, i), expect_decay(i, emb),
				             "range [%zu,%zu) emb=%d float %zu", b, e,
				             emb, i);
			adamw_free(&o);
		}
	}
}

/* With zero gradients the Adam term is exactly 0, so a step only applies
 * weight decay: masked floats of the range shrink by (1 - lr*wd), everything
 * else (other kinds, padding, floats outside the range) is untouched. */
Test(optim, step_decays_only_masked_floats_inside_range)
{
	build_table();
	float p[96], g[96] = {0};
	const size_t b = 10, e = 85;
	const double lr = 0.5, wd = 0.2;
	for (int i = 0; i < 96; i++)
		p[i] = 1.0f + 0.01f * i;
	AdamW o;
	TrlErr err = {0};
	cr_assert_eq(adamw_init(&o, &tbl, b, e, 0.9, 0.999, 1e-8, wd, 0, &err), 0);
	adamw_step(&o, p, g, lr);
	for (size_t i = 0; i < 96; i++) {
		float p0 = 1.0f + 0.01f * i;
		int decayed = i >= b && i < e && expect_decay(i, 0);
		float want = decayed ? p0 * (float)(1.0 - lr * wd) : p0;
		cr_assert_float_eq(p[i], want, 1e-6, "float %zu: %g vs %g", i, p[i],
		                   want);
	}
	adamw_free(&o);
}

Test(optim, init_rejects_range_outside_slab)
{
	build_table();
	AdamW o;
	TrlErr err = {0};
	cr_assert_eq(adamw_init(&o, &tbl, 0, 97, 0.9, 0.999, 1e-8, 0.0, 0, &err),
	             TRL_EINVAL);
	cr_assert(strlen(err.msg) > 0);
	cr_assert_eq(adamw_init(&o, &tbl, 50, 40, 0.9, 0.999, 1e-8, 0.0, 0, &err),
	             TRL_EINVAL);
	adamw_free(&o);
}

Test(optim, free_is_safe_on_zeroed_struct)
{
	AdamW o;
	memset(&o, 0, sizeof o);
	adamw_free(&o);
	adamw_free(&o);
}

/* Independent transcription of transformers.optimization's lambdas. */
static double ref_lr(TrlScheduler k, double base, long step, long total, long warm)
{
	if (k == TRL_SCHED_CONSTANT)
		return base;
	if (step < warm)
		return base * (double)step / (double)(warm > 1 ? warm : 1);
	long span = total - warm > 1 ? total - warm : 1;
	if (k == TRL_SCHED_CONSTANT_WITH_WARMUP)
		return base;
	if (k == TRL_SCHED_LINEAR)
		return base * fmax(0.0, (double)(total - step) / (double)span);
	double progress = (double)(step - warm) / (double)span;
	return base * fmax(0.0, 0.5 * (1.0 + cos(acos(-1.0) * 2.0 * 0.5 * progress)));
}

static void expect_lr(TrlScheduler k, long step, long total, long warm, double want)
{
	double got = lr_at_step(k, 2e-3, step, total, warm);
	cr_assert(fabs(got - want) <= 1e-12,
	          "kind %d step %ld/%ld warmup %ld: %.15g vs %.15g", (int)k, step, total,
	          warm, got, want);
}

Test(optim, schedules_match_hugging_face_formulas)
{
	const long totals[] = {1, 2, 10, 100, 1001};
	const long warms[] = {0, 1, 3, 10};
	for (int k = TRL_SCHED_CONSTANT; k <= TRL_SCHED_COSINE; k++)
		for (size_t a = 0; a < sizeof totals / sizeof *totals; a++)
			for (size_t w = 0; w < sizeof warms / sizeof *warms; w++)
				for (long s = 0; s <= totals[a] + 2; s++)
					expect_lr((TrlScheduler)k, s, totals[a], warms[w],
					          ref_lr((TrlScheduler)k, 2e-3, s,
					                 totals[a], warms[w]));
}

/* Values a user would check by hand, written out as numbers. */
Test(optim, schedule_landmarks)
{
	const double base = 2e-3;
	/* "constant" ignores warmup, as Hugging Face's get_constant_schedule does. */
	expect_lr(TRL_SCHED_CONSTANT, 0, 100, 10, base);
	/* Warmup ramps linearly from 0 and reaches base at step == warmup. */
	expect_lr(TRL_SCHED_CONSTANT_WITH_WARMUP, 0, 100, 10, 0.0);
	expect_lr(TRL_SCHED_CONSTANT_WITH_WARMUP, 5, 100, 10, base * 0.5);
	expect_lr(TRL_SCHED_CONSTANT_WITH_WARMUP, 9, 100, 10, base * 0.9);
	expect_lr(TRL_SCHED_CONSTANT_WITH_WARMUP, 10, 100, 10, base);
	expect_lr(TRL_SCHED_CONSTANT_WITH_WARMUP, 99, 100, 10, base);
	expect_lr(TRL_SCHED_LINEAR, 3, 100, 10, base * 0.3);
	expect_lr(TRL_SCHED_LINEAR, 10, 100, 10, base);
	expect_lr(TRL_SCHED_LINEAR, 55, 100, 10, base * 0.5);
	expect_lr(TRL_SCHED_LINEAR, 99, 100, 10, base / 90.0);
	expect_lr(TRL_SCHED_LINEAR, 100, 100, 10, 0.0);
	expect_lr(TRL_SCHED_LINEAR, 120, 100, 10, 0.0);
	expect_lr(TRL_SCHED_LINEAR, 0, 100, 0, base);
	expect_lr(TRL_SCHED_COSINE, 10, 100, 10, base);
	expect_lr(TRL_SCHED_COSINE, 55, 100, 10, base * 0.5);
	expect_lr(TRL_SCHED_COSINE, 100, 100, 10, 0.0);
	expect_lr(TRL_SCHED_COSINE, 0, 4, 0, base);
	expect_lr(TRL_SCHED_COSINE, 1, 4, 0, base * 0.5 * (1.0 + sqrt(0.5)));
	expect_lr(TRL_SCHED_COSINE, 2, 4, 0, base * 0.5);
	expect_lr(TRL_SCHED_COSINE, 3, 4, 0, base * 0.5 * (1.0 - sqrt(0.5)));
	/* warmup >= total: still ramping, the ramp uses the warmup length. */
	expect_lr(TRL_SCHED_LINEAR, 4, 5, 8, base * 0.5);
}

Test(optim, grad_sumsq_and_scale)
{
	enum { N = 20001 };
	static float g[N];
	double want = 0.0;
	for (int i = 0; i < N; i++) {
		g[i] = (float)((i % 13) - 6) * 0.25f;
		want += (double)g[i] * g[i];
	}
	cr_assert(fabs(grad_sumsq(g, N) - want) <= 1e-12 * want, "%.17g vs %.17g",
	          grad_sumsq(g, N), want);
	cr_assert_eq(grad_sumsq(g, 0), 0.0);
	/* 3^2 + 4^2 = 25: the clipping norm of a tiny vector. */
	const float v[2] = {3.0f, -4.0f};
	cr_assert_eq(grad_sumsq(v, 2), 25.0);
	/* 2^24 + 1 is not a float: a float accumulator would stop at 2^24. */
	enum { M = (1 << 24) + 1 };
	float *ones = malloc(sizeof(float) * M);
	cr_assert_not_null(ones);
	for (long i = 0; i < M; i++)
		ones[i] = 1.0f;
	cr_assert_eq(grad_sumsq(ones, M), (double)M);
	free(ones);

	grad_scale(g, N, 0.5f);
	cr_assert(fabs(grad_sumsq(g, N) - 0.25 * want) <= 1e-12 * want);
	for (int i = 0; i < N; i++)
		cr_assert_eq(g[i], (float)((i % 13) - 6) * 0.125f);
	grad_scale(g, 0, 0.0f);
	cr_assert_eq(g[0], -0.75f);
}
