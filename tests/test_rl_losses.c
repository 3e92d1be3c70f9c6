/* test_rl_losses.c - the GRPO, RLOO and PPO advantages and losses against the
 * PyTorch oracle's golden values (tests/data/rl_golden.json, from
 * tests/reference/rl_oracle.py), hand-computed values and finite differences
 * of every analytic gradient. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fd.h"
#include "golden.h"
#include "json.h"
#include "rl_losses.h"
#include "rng.h"

#define MAXN 256

/* Values computed in double agree with the float64 oracle to GOLD_RTOL and
 * GOLD_ATOL (golden.h); float outputs (gradients, weights, GAE) to float
 * rounding. GAE gets float32 rewards that the oracle holds in float64, hence
 * its absolute slack. */
#define F32_RTOL 2e-6
#define F32_ATOL 1e-9
#define GAE_ATOL 2e-6
/* Central differences of a loss computed in double from float inputs: the
 * truncation error is ~h^2 of the gradient scale. */
#define RL_FD_TOL 1e-4

/* ---------------------------------------------------------------- golden */

static int is_null(const JsonValue *obj, const char *key)
{
	const JsonValue *v = json_get(obj, key);
	return !v || v->type == JSON_NULL;
}

/* golden_nums into a buffer of MAXN values. */
static int nums(const JsonValue *obj, const char *key, double *out, int *rows,
                const char *name)
{
	return golden_nums(obj, key, out, MAXN, rows, name);
}

static void to_float(const double *x, float *y, int n)
{
	for (int i = 0; i < n; i++)
		y[i] = (float)x[i];
}

/* Reads a (n, T) array into floats; checks its size when want > 0. */
static int floats(const JsonValue *obj, const char *key, float *out, int want,
                  const char *name)
{
	double tmp[MAXN];
	int m = nums(obj, key, tmp, NULL, name);
	cr_assert_geq(m, 0, "%s: no %s", name, key);
	if (want > 0)
		cr_assert_eq(m, want, "%s: %s has %d values, want %d", name, key, m,
		             want);
	to_float(tmp, out, m);
	return m;
}

static void check_doubles(const char *name, const char *what, const double *got,
                          const JsonValue *ex, int n)
{
	double want[MAXN];
	cr_assert_eq(nums(ex, what, want, NULL, name), n, "%s: %s size", name, what);
	for (int i = 0; i < n; i++)
		cr_expect(golden_near(got[i], want[i], GOLD_RTOL, GOLD_ATOL),
		          "%s: %s[%d] = %.17g, oracle %.17g", name, what, i, got[i],
		          want[i]);
}

static void check_floats(const char *name, const char *what, const float *got,
                         const JsonValue *ex, int n, double atol)
{
	double want[MAXN];
	cr_assert_eq(nums(ex, what, want, NULL, name), n, "%s: %s size", name, what);
	for (int i = 0; i < n; i++)
		cr_expect(golden_near(got[i], want[i], F32_RTOL, atol),
		          "%s: %s[%d] = %.9g, oracle %.9g", name, what, i, (double)got[i],
		          want[i]);
}

#define CASE_PARTS(c)                                                                    \
	const char *name = json_str(json_get(c, "name"));                                \
	const JsonValue *o = json_get(c, "options");                                     \
	const JsonValue *in = json_get(c, "inputs");                                     \
	const JsonValue *ex = json_get(c, "expected");                                   \
	(void)o;                                                                         \
	(void)in;                                                                        \
	(void)ex

/* (n, T) of a nested input array. */
static void shape(const JsonValue *in, const char *key, int *n, int *T)
{
	const JsonValue *a = json_get(in, key);
	cr_assert(a && a->type == JSON_ARRAY && a->len > 0, "%s is not (n, T)", key);
	*n = (int)a->len;
	*T = (int)json_at(a, 0)->len;
}

Test(rl_losses, golden_combine_rewards)
{
	JsonValue *root = golden_load("rl_golden.json");
	const JsonValue *cases[8];
	int nc = golden_cases(root, "combine", cases, 8, 1);
	for (int c = 0; c < nc; c++) {
		CASE_PARTS(cases[c]);
		double r[MAXN], w[MAXN], out[MAXN];
		int n = 0;
		int nr = nums(in, "r", r, &n, name);
		int F = nums(in, "w", w, NULL, name);
		cr_assert_eq(nr, n * F);
		rl_combine_rewards(r, w, n, F, out);
		check_doubles(name, "out", out, ex, n);
	}
	json_free(root);
}

Test(rl_losses, golden_grpo_advantages)
{
	JsonValue *root = golden_load("rl_golden.json");
	const JsonValue *cases[32];
	int nc = golden_cases(root, "grpo_adv", cases, 32, 12);
	int scales[3] = {0}, with_nan = 0;
	for (int c = 0; c < nc; c++) {
		CASE_PARTS(cases[c]);
		double r[MAXN], adv[MAXN], std[MAXN];
		int n = nums(in, "r", r, NULL, name);
		int G = (int)golden_num(o, "num_generations", name);
		int scale =
		    rl_scale_rewards_parse(json_str(json_get(o, "scale_rewards")));
		cr_assert_geq(scale, 0, "%s", name);
		grpo_advantages(r, n, G, (TrlScaleRewards)scale, adv, std);
		check_doubles(name, "adv", adv, ex, n);
		check_doubles(name, "group_std", std, ex, n);
		scales[scale]++;
		for (int i = 0; i < n; i++)
			if (isnan(r[i])) {
				with_nan++;
				break;
			}
	}
	for (int s = 0; s < 3; s++)
		cr_expect_geq(scales[s], 3, "scale_rewards %d has %d cases", s,
		              scales[s]);
	cr_expect_geq(with_nan, 3, "no golden advantages with NaN rewards");
	json_free(root);
}

Test(rl_losses, golden_rloo_advantages)
{
	JsonValue *root = golden_load("rl_golden.json");
	const JsonValue *cases[32];
	int nc = golden_cases(root, "rloo_adv", cases, 32, 8);
	int norm[2] = {0};
	for (int c = 0; c < nc; c++) {
		CASE_PARTS(cases[c]);
		double r[MAXN], adv[MAXN];
		int n = nums(in, "r", r, NULL, name);
		int G = (int)golden_num(o, "num_generations", name);
		const JsonValue *nv = json_get(o, "normalize_advantages");
		cr_assert(nv && nv->type == JSON_BOOL);
		rloo_advantages(r, n, G, nv->boolean, adv);
		check_doubles(name, "adv", adv, ex, n);
		norm[nv->boolean]++;
	}
	cr_expect(norm[0] >= 3 && norm[1] >= 3, "normalize_advantages on/off: %d/%d",
	          norm[1], norm[0]);
	json_free(root);
}

/* TRL's None for the clip bounds. */
static double clip_min(const JsonValue *o)
{
	return is_null(o, "vllm_importance_sampling_clip_min")
	           ? 0.0
	           : golden_num(o, "vllm_importance_sampling_clip_min", "clip_min");
}

static double clip_max(const JsonValue *o)
{
	return is_null(o, "vllm_importance_sampling_clip_max")
	           ? INFINITY
	           : golden_num(o, "vllm_importance_sampling_clip_max", "clip_max");
}

static void check_is_stats(const char *name, const IsStats *s, const JsonValue *ex)
{
	golden_expect(name, ex, "logp_diff_mean",
	              s->tokens ? s->logp_diff_sum / s->tokens : 0.0);
	golden_expect(name, ex, "logp_diff_max", s->logp_diff_max);
	golden_expect(name, ex, "ratio_min", s->ratio_min);
	golden_expect(name, ex, "ratio_max", s->ratio_max);
	golden_expect(name, ex, "ratio_mean",
	              s->ratio_count ? s->ratio_sum / s->ratio_count : 0.0);
}

Test(rl_losses, golden_is_correction)
{
	JsonValue *root = golden_load("rl_golden.json");
	const JsonValue *cases[32];
	int nc = golden_cases(root, "is", cases, 32, 8);
	int modes[4] = {0};
	for (int c = 0; c < nc; c++) {
		CASE_PARTS(cases[c]);
		int n, T;
		shape(in, "mask", &n, &T);
		float old[MAXN], samp[MAXN], mask[MAXN], w[MAXN];
		floats(in, "old_lp", old, n * T, name);
		floats(in, "samp_lp", samp, n * T, name);
		floats(in, "mask", mask, n * T, name);
		int mode = rl_is_mode_parse(
		    json_str(json_get(o, "vllm_importance_sampling_mode")));
		cr_assert_geq(mode, 0, "%s", name);
		IsStats st;
		is_correction((TrlIsMode)mode, clip_min(o), clip_max(o), n, T, old, samp,
		              mask, w, &st);
		check_floats(name, "w", w, ex, n * T, F32_ATOL);
		check_is_stats(name, &st, ex);
		modes[mode]++;
	}
	for (int m = 0; m < 4; m++)
		cr_expect_geq(modes[m], 2, "IS mode %d has %d cases", m, modes[m]);
	json_free(root);
}

Test(rl_losses, golden_quantile)
{
	JsonValue *root = golden_load("rl_golden.json");
	const JsonValue *cases[16];
	int nc = golden_cases(root, "quantile", cases, 16, 4);
	for (int c = 0; c < nc; c++) {
		CASE_PARTS(cases[c]);
		double v[MAXN];
		int n = nums(in, "v", v, NULL, name);
		golden_expect(name, ex, "value",
		              rl_quantile(v, (size_t)n, golden_num(o, "q", name)));
	}
	json_free(root);
}

/* The GRPO inputs of a golden case, with the weights w built as a trainer
 * would: the IS correction from samp_lp, the entropy mask from entropies. */
typedef struct GrpoCase {
	GrpoOptions opt;
	int n, T, has_old, has_w;
	float lp[MAXN], old[MAXN], ref[MAXN], mask[MAXN], w[MAXN];
	double adv[MAXN], ga, norm;
	IsStats is;
	int has_is;
} GrpoCase;

static void grpo_case_read(GrpoCase *g, const JsonValue *o, const JsonValue *in,
                           const char *name)
{
	memset(g, 0, sizeof *g);
	int lt = rl_grpo_loss_parse(json_str(json_get(o, "loss_type")));
	cr_assert_geq(lt, 0, "%s", name);
	g->opt.loss_type = (TrlGrpoLoss)lt;
	g->opt.epsilon_low = golden_num(o, "epsilon", name);
	g->opt.epsilon_high = golden_num(o, "epsilon_high", name);
	g->opt.delta = is_null(o, "delta") ? 0.0 : golden_num(o, "delta", name);
	g->opt.sequence_level =
	    strcmp(json_str(json_get(o, "importance_sampling_level")), "sequence") == 0;
	g->opt.beta = golden_num(o, "beta", name);
	g->opt.max_completion_length = (int)golden_num(o, "max_completion_length", name);
	g->ga = golden_num(o, "gradient_accumulation_steps", name);
	double items = golden_num(in, "num_items_in_batch", name);
	g->norm = (items > 1.0 ? items : 1.0) / golden_num(o, "num_processes", name);

	shape(in, "mask", &g->n, &g->T);
	int N = g->n * g->T;
	floats(in, "lp", g->lp, N, name);
	floats(in, "mask", g->mask, N, name);
	floats(in, "ref_lp", g->ref, N, name);
	g->has_old = !is_null(in, "old_lp");
	if (g->has_old)
		floats(in, "old_lp", g->old, N, name);
	cr_assert_eq(nums(in, "adv", g->adv, NULL, name), g->n);

	for (int k = 0; k < N; k++)
		g->w[k] = 1.0f;
	if (!is_null(in, "samp_lp")) {
		float samp[MAXN];
		floats(in, "samp_lp", samp, N, name);
		int mode = rl_is_mode_parse(
		    json_str(json_get(o, "vllm_importance_sampling_mode")));
		cr_assert_geq(mode, 0);
		is_correction((TrlIsMode)mode, clip_min(o), clip_max(o), g->n, g->T,
		              g->old, samp, g->mask, g->w, &g->is);
		g->has_w = g->has_is = 1;
	}
	if (!is_null(in, "entropies")) {
		double ent[MAXN], active[MAXN];
		cr_assert_eq(nums(in, "entropies", ent, NULL, name), N);
		size_t na = 0;
		for (int k = 0; k < N; k++)
			if (g->mask[k] != 0.0f)
				active[na++] = (float)ent[k];
		double thr = rl_quantile(
		    active, na, 1.0 - golden_num(o, "top_entropy_quantile", name));
		for (int k = 0; k < N; k++)
			g->w[k] *=
			    (g->mask[k] != 0.0f && (float)ent[k] >= thr) ? 1.0f : 0.0f;
		g->has_w = 1;
	}
}

static double grpo_case_loss(const GrpoCase *g, float *dlp, GrpoStats *st)
{
	return grpo_loss(&g->opt, g->n, g->T, g->lp, g->has_old ? g->old : NULL, g->ref,
	                 g->has_w ? g->w : NULL, g->mask, g->adv, g->ga, g->norm, dlp,
	                 st);
}

Test(rl_losses, golden_grpo_loss)
{
	JsonValue *root = golden_load("rl_golden.json");
	const JsonValue *cases[96];
	int nc = golden_cases(root, "grpo", cases, 96, 32);
	/* loss_type x level x beta on/off x delta on/off */
	int seen[4][2][2][2] = {{{{0}}}};
	int is_cases = 0, ent_cases = 0, low = 0, high = 0;
	static GrpoCase g;
	for (int c = 0; c < nc; c++) {
		CASE_PARTS(cases[c]);
		grpo_case_read(&g, o, in, name);
		float dlp[MAXN];
		GrpoStats st;
		double loss = grpo_case_loss(&g, dlp, &st);
		golden_expect(name, ex, "loss", loss);
		check_floats(name, "dlp", dlp, ex, g.n * g.T, F32_ATOL);
		golden_expect(name, ex, "tokens", st.tokens);
		golden_expect(name, ex, "kl", st.kl);
		golden_expect(name, ex, "low_clipped", st.low_clipped);
		golden_expect(name, ex, "high_clipped", st.high_clipped);
		golden_expect(name, ex, "region_clipped", st.region_clipped);
		golden_expect(name, ex, "clip_count", st.clip_count);
		double lmin = golden_num(ex, "low_min", name),
		       hmax = golden_num(ex, "high_max", name);
		if (isnan(lmin))
			cr_expect(isinf(st.low_min) && st.low_min > 0, "%s: low_min",
			          name);
		else
			golden_check_value(name, "low_min", st.low_min, lmin);
		if (isnan(hmax))
			cr_expect(isinf(st.high_max) && st.high_max < 0, "%s: high_max",
			          name);
		else
			golden_check_value(name, "high_max", st.high_max, hmax);
		if (g.has_is)
			check_is_stats(name, &g.is, json_get(ex, "is"));
		seen[g.opt.loss_type][g.opt.sequence_level][g.opt.beta > 0]
		    [g.opt.delta > 0]++;
		is_cases += g.has_is;
		ent_cases += !is_null(in, "entropies");
		low += st.low_clipped > 0;
		high += st.high_clipped > 0;
	}
	for (int a = 0; a < 4; a++)
		for (int b = 0; b < 2; b++)
			for (int k = 0; k < 2; k++)
				for (int d = 0; d < 2; d++)
					cr_expect_geq(
					    seen[a][b][k][d], 1,
					    "no golden GRPO case for loss %d level %d "
					    "beta %d delta %d",
					    a, b, k, d);
	cr_expect_geq(is_cases, 4);
	cr_expect_geq(ent_cases, 2);
	cr_expect_geq(low, 10, "too few cases clip low");
	cr_expect_geq(high, 10, "too few cases clip high");
	json_free(root);
}

Test(rl_losses, golden_rloo_loss)
{
	JsonValue *root = golden_load("rl_golden.json");
	const JsonValue *cases[8];
	int nc = golden_cases(root, "rloo", cases, 8, 2);
	for (int c = 0; c < nc; c++) {
		CASE_PARTS(cases[c]);
		int n, T;
		shape(in, "mask", &n, &T);
		float lp[MAXN], old[MAXN], mask[MAXN], dlp[MAXN];
		double adv[MAXN];
		floats(in, "lp", lp, n * T, name);
		floats(in, "old_lp", old, n * T, name);
		floats(in, "mask", mask, n * T, name);
		cr_assert_eq(nums(in, "adv", adv, NULL, name), n);
		RlooStats st;
		double loss = rloo_loss(
		    golden_num(o, "epsilon", name), golden_num(o, "epsilon_high", name),
		    n, T, lp, old, mask, adv,
		    golden_num(o, "gradient_accumulation_steps", name), dlp, &st);
		golden_expect(name, ex, "loss", loss);
		check_floats(name, "dlp", dlp, ex, n * T, F32_ATOL);
		golden_expect(name, ex, "low_mean", st.low_clipped / st.seqs);
		golden_expect(name, ex, "high_mean", st.high_clipped / st.seqs);
		golden_expect(name, ex, "region_mean", st.region_clipped / st.seqs);
	}
	json_free(root);
}

Test(rl_losses, golden_kl_estimators)
{
	JsonValue *root = golden_load("rl_golden.json");
	const JsonValue *cases[4];
	golden_cases(root, "kl", cases, 4, 1);
	CASE_PARTS(cases[0]);
	double lp[MAXN], ref[MAXN], k1[MAXN], k3[MAXN];
	int n = nums(in, "lp", lp, NULL, name);
	cr_assert_eq(nums(in, "ref", ref, NULL, name), n);
	for (int i = 0; i < n; i++) {
		k1[i] = rl_kl_k1(lp[i], ref[i]);
		k3[i] = rl_kl_k3(lp[i], ref[i]);
	}
	check_doubles(name, "k1", k1, ex, n);
	check_doubles(name, "k3", k3, ex, n);
	json_free(root);
}

Test(rl_losses, golden_masked_whiten)
{
	JsonValue *root = golden_load("rl_golden.json");
	const JsonValue *cases[4];
	int nc = golden_cases(root, "whiten", cases, 4, 2);
	int shifts[2] = {0};
	for (int c = 0; c < nc; c++) {
		CASE_PARTS(cases[c]);
		int n, T;
		shape(in, "x", &n, &T);
		float x[MAXN], mask[MAXN];
		floats(in, "x", x, n * T, name);
		floats(in, "mask", mask, n * T, name);
		int shift = json_get(o, "shift_mean")->boolean;
		rl_masked_whiten(x, mask, (size_t)(n * T), shift);
		check_floats(name, "out", x, ex, n * T, 1e-7);
		shifts[shift]++;
	}
	cr_expect(shifts[0] && shifts[1], "shift_mean on and off");
	json_free(root);
}

/* TRL's masks from the last-token indices: policy t <= L, value t <= L + 1. */
static void ppo_masks(const double *L, int n, int T, float *pmask, float *vmask)
{
	for (int i = 0; i < n; i++)
		for (int t = 0; t < T; t++) {
			if (pmask)
				pmask[i * T + t] = t <= L[i] ? 1.0f : 0.0f;
			if (vmask)
				vmask[i * T + t] = t <= L[i] + 1 ? 1.0f : 0.0f;
		}
}

Test(rl_losses, golden_gae)
{
	JsonValue *root = golden_load("rl_golden.json");
	const JsonValue *cases[8];
	int nc = golden_cases(root, "gae", cases, 8, 3);
	int whitened = 0, discounted = 0;
	for (int c = 0; c < nc; c++) {
		CASE_PARTS(cases[c]);
		int n, T;
		shape(in, "values", &n, &T);
		double L[MAXN];
		cr_assert_eq(nums(in, "seqlen", L, NULL, name), n);
		float values[MAXN], rewards[MAXN], pmask[MAXN], vmask[MAXN], adv[MAXN],
		    ret[MAXN];
		floats(in, "values", values, n * T, name);
		ppo_masks(L, n, T, pmask, vmask);
		const JsonValue *wr = json_get(o, "whiten_rewards");
		if (wr->boolean) {
			floats(ex, "rewards_raw", rewards, n * T, name);
			rl_masked_whiten(rewards, vmask, (size_t)(n * T), 0);
			check_floats(name, "rewards", rewards, ex, n * T, GAE_ATOL);
			whitened++;
		}
		floats(ex, "rewards", rewards, n * T, name);
		/* Past the value mask the rewards must be ignored (TRL's are 0). */
		for (int k = 0; k < n * T; k++)
			if (vmask[k] == 0.0f)
				rewards[k] = 100.0f + k;
		double gamma = golden_num(o, "gamma", name),
		       lam = golden_num(o, "lam", name);
		ppo_gae(n, T, rewards, values, vmask, gamma, lam, adv, ret);
		check_floats(name, "adv", adv, ex, n * T, GAE_ATOL);
		check_floats(name, "ret", ret, ex, n * T, GAE_ATOL);
		rl_masked_whiten(adv, pmask, (size_t)(n * T), 1);
		check_floats(name, "adv_whitened", adv, ex, n * T, GAE_ATOL);
		discounted += gamma != 1.0 && lam != 1.0;
	}
	cr_expect_geq(whitened, 1);
	cr_expect_geq(discounted, 2);
	json_free(root);
}

Test(rl_losses, golden_ppo_policy_loss)
{
	JsonValue *root = golden_load("rl_golden.json");
	const JsonValue *cases[8];
	int nc = golden_cases(root, "ppo_policy", cases, 8, 2);
	for (int c = 0; c < nc; c++) {
		CASE_PARTS(cases[c]);
		int n, T;
		shape(in, "lp", &n, &T);
		double L[MAXN];
		cr_assert_eq(nums(in, "seqlen", L, NULL, name), n);
		float lp[MAXN], old[MAXN], adv[MAXN], pmask[MAXN], dlp[MAXN];
		floats(in, "lp", lp, n * T, name);
		floats(in, "old_lp", old, n * T, name);
		floats(in, "adv", adv, n * T, name);
		ppo_masks(L, n, T, pmask, NULL);
		PpoPolicyStats st;
		double loss =
		    ppo_policy_loss(golden_num(o, "cliprange", name), n, T, lp, old, adv,
		                    pmask, golden_num(o, "scale", name), dlp, &st);
		golden_expect(name, ex, "loss", loss);
		check_floats(name, "dlp", dlp, ex, n * T, F32_ATOL);
		golden_expect(name, ex, "clipfrac", st.clipfrac);
		golden_expect(name, ex, "approxkl", st.approxkl);
		golden_expect(name, ex, "ratio_mean", st.ratio_mean);
		cr_expect_gt(st.clipfrac, 0.0, "%s: nothing clipped", name);
	}
	json_free(root);
}

Test(rl_losses, golden_ppo_value_loss)
{
	JsonValue *root = golden_load("rl_golden.json");
	const JsonValue *cases[8];
	int nc = golden_cases(root, "ppo_value", cases, 8, 2);
	for (int c = 0; c < nc; c++) {
		CASE_PARTS(cases[c]);
		int n, T;
		shape(in, "v", &n, &T);
		double L[MAXN];
		cr_assert_eq(nums(in, "seqlen", L, NULL, name), n);
		float v[MAXN], old[MAXN], ret[MAXN], vmask[MAXN], dv[MAXN];
		floats(in, "v", v, n * T, name);
		floats(in, "old_v", old, n * T, name);
		floats(in, "ret", ret, n * T, name);
		ppo_masks(L, n, T, NULL, vmask);
		double clipfrac;
		double loss = ppo_value_loss(golden_num(o, "cliprange_value", name), n, T,
		                             v, old, ret, vmask,
		                             golden_num(o, "scale", name), dv, &clipfrac);
		golden_expect(name, ex, "loss", loss);
		check_floats(name, "dv", dv, ex, n * T, F32_ATOL);
		golden_expect(name, ex, "clipfrac", clipfrac);
		cr_expect_gt(clipfrac, 0.0, "%s: nothing clipped", name);
	}
	json_free(root);
}

/* ------------------------------------------------------ finite differences */

/* max |a - n| / max |n|: no floor, as the losses here are computed in double
 * and their central differences are accurate to ~h^2. */
static double fd_rel_error(const float *a, const double *num, size_t n, size_t *worst)
{
	double maxn = 0.0, maxd = 0.0;
	*worst = 0;
	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)a[i] - num[i]);
		if (!(d <= maxd)) {
			maxd = d;
			*worst = i;
		}
		maxn = fmax(maxn, fabs(num[i]));
	}
	if (isnan(maxd) || maxn == 0.0)
		return INFINITY;
	return maxd / maxn;
}

/* Whether rho is within 1% of a kink of the clipped surrogate. */
static int near_kink(double rho, double lo, double hi, double delta)
{
	double b[3] = {lo, hi, delta};
	for (int i = 0; i < 3; i++)
		if (b[i] > 0.0 && fabs(log(rho / b[i])) < 1e-2)
			return 1;
	return 0;
}

static GrpoCase fd_g;

static double grpo_fd_loss(void *ctx)
{
	(void)ctx;
	return grpo_case_loss(&fd_g, NULL, NULL);
}

/* Random GRPO inputs of both advantage signs, ratios on both sides of the
 * clip range and away from its kinks, one empty completion. */
static void grpo_fd_inputs(GrpoCase *g, Rng *r)
{
	g->n = 5;
	g->T = 7;
	double lo = 1.0 - g->opt.epsilon_low, hi = 1.0 + g->opt.epsilon_high;
	for (int i = 0; i < g->n; i++) {
		int len = i == 2 ? 0 : 1 + (int)(rng_uniform(r) * g->T);
		g->adv[i] = (i % 2 ? 1.0 : -1.0) * (0.3 + rng_uniform(r));
		for (;;) {
			double off = 0.8 * (rng_uniform(r) - 0.5), s = 0.0;
			int bad = 0;
			for (int t = 0; t < g->T; t++) {
				int k = i * g->T + t;
				g->mask[k] = t < len ? 1.0f : 0.0f;
				g->lp[k] = (float)(-0.1 - 3.0 * rng_uniform(r));
				double d = g->opt.sequence_level
				               ? off + 0.1 * rng_normal(r)
				               : 0.4 * rng_normal(r);
				g->old[k] = (float)(g->lp[k] - d);
				g->ref[k] = (float)(g->lp[k] + 0.4 * rng_normal(r));
				g->w[k] = (float)(0.5 + rng_uniform(r));
				double dd = (double)g->lp[k] - g->old[k];
				if (t < len) {
					s += dd;
					bad |= !g->opt.sequence_level &&
					       near_kink(exp(dd), lo, hi, g->opt.delta);
				}
			}
			if (g->opt.sequence_level && len)
				bad |= near_kink(exp(s / len), lo, hi, g->opt.delta);
			if (!bad)
				break;
		}
	}
	g->has_old = g->has_w = 1;
	g->ga = 2.0;
	g->norm = 13.5;
}

Test(rl_losses, grpo_loss_matches_fd)
{
	Rng r;
	rng_seed(&r, 71);
	for (int lt = 0; lt < 4; lt++)
		for (int seq = 0; seq < 2; seq++)
			for (int beta = 0; beta < 2; beta++)
				for (int delta = 0; delta < 2; delta++) {
					memset(&fd_g, 0, sizeof fd_g);
					fd_g.opt =
					    (GrpoOptions){.loss_type = (TrlGrpoLoss)lt,
					                  .epsilon_low = 0.2,
					                  .epsilon_high = 0.28,
					                  .delta = delta ? 1.5 : 0.0,
					                  .sequence_level = seq,
					                  .beta = beta ? 0.1 : 0.0,
					                  .max_completion_length = 9};
					grpo_fd_inputs(&fd_g, &r);
					int N = fd_g.n * fd_g.T;
					float dlp[MAXN];
					double numg[MAXN];
					grpo_case_loss(&fd_g, dlp, NULL);
					fd_numeric(numg, fd_g.lp, (size_t)N, FD_H,
					           grpo_fd_loss, NULL);
					size_t worst;
					double err =
					    fd_rel_error(dlp, numg, (size_t)N, &worst);
					cr_expect_leq(err, RL_FD_TOL,
					              "loss %d seq %d beta %d delta %d: "
					              "err %.3g at %zu "
					              "(analytic %.9g, numeric %.9g)",
					              lt, seq, beta, delta, err, worst,
					              (double)dlp[worst], numg[worst]);
				}
}

static struct {
	int n, T;
	float lp[MAXN], old[MAXN], mask[MAXN], v[MAXN], old_v[MAXN], ret[MAXN], adv[MAXN];
	double dadv[MAXN];
} fd_p;

static double rloo_fd_loss(void *ctx)
{
	(void)ctx;
	return rloo_loss(0.2, 0.28, fd_p.n, fd_p.T, fd_p.lp, fd_p.old, fd_p.mask,
	                 fd_p.dadv, 3.0, NULL, NULL);
}

Test(rl_losses, rloo_loss_matches_fd)
{
	Rng r;
	rng_seed(&r, 72);
	fd_p.n = 8;
	fd_p.T = 5;
	int clipped = 0;
	for (int i = 0; i < fd_p.n; i++) {
		int len = 1 + (int)(rng_uniform(&r) * fd_p.T);
		fd_p.dadv[i] = (i % 2 ? 1.0 : -1.0) * (0.3 + rng_uniform(&r));
		for (;;) {
			double s = 0.0, off = 0.12 * (rng_uniform(&r) - 0.5);
			for (int t = 0; t < fd_p.T; t++) {
				int k = i * fd_p.T + t;
				fd_p.mask[k] = t < len ? 1.0f : 0.0f;
				fd_p.lp[k] = (float)(-0.1 - 3.0 * rng_uniform(&r));
				fd_p.old[k] =
				    (float)(fd_p.lp[k] - off - 0.02 * rng_normal(&r));
				if (t < len)
					s += (double)fd_p.lp[k] - fd_p.old[k];
			}
			if (!near_kink(exp(s), 0.8, 1.28, 0.0)) {
				clipped += exp(s) < 0.8 || exp(s) > 1.28;
				break;
			}
		}
	}
	cr_assert_gt(clipped, 0, "no completion outside the clip range");
	int N = fd_p.n * fd_p.T;
	float dlp[MAXN];
	double numg[MAXN];
	rloo_loss(0.2, 0.28, fd_p.n, fd_p.T, fd_p.lp, fd_p.old, fd_p.mask, fd_p.dadv, 3.0,
	          dlp, NULL);
	fd_numeric(numg, fd_p.lp, (size_t)N, FD_H, rloo_fd_loss, NULL);
	size_t worst;
	double err = fd_rel_error(dlp, numg, (size_t)N, &worst);
	cr_expect_leq(err, RL_FD_TOL, "err %.3g at %zu (analytic %.9g, numeric %.9g)",
	              err, worst, (double)dlp[worst], numg[worst]);
}

static double ppo_policy_fd_loss(void *ctx)
{
	(void)ctx;
	return 0.5 * ppo_policy_loss(0.2, fd_p.n, fd_p.T, fd_p.lp, fd_p.old, fd_p.adv,
	                             fd_p.mask, 1.0, NULL, NULL);
}

Test(rl_losses, ppo_policy_loss_matches_fd)
{
	Rng r;
	rng_seed(&r, 73);
	fd_p.n = 4;
	fd_p.T = 6;
	int N = fd_p.n * fd_p.T;
	for (int k = 0; k < N; k++) {
		fd_p.mask[k] = (k % fd_p.T) <= 1 + k / fd_p.T ? 1.0f : 0.0f;
		fd_p.adv[k] = (float)rng_normal(&r);
		fd_p.lp[k] = (float)(-0.1 - 3.0 * rng_uniform(&r));
		do
			fd_p.old[k] = (float)(fd_p.lp[k] - 0.3 * rng_normal(&r));
		while (near_kink(exp((double)fd_p.lp[k] - fd_p.old[k]), 0.8, 1.2, 0.0));
	}
	float dlp[MAXN];
	double numg[MAXN];
	PpoPolicyStats st;
	ppo_policy_loss(0.2, fd_p.n, fd_p.T, fd_p.lp, fd_p.old, fd_p.adv, fd_p.mask, 0.5,
	                dlp, &st);
	cr_assert_gt(st.clipfrac, 0.0);
	fd_numeric(numg, fd_p.lp, (size_t)N, FD_H, ppo_policy_fd_loss, NULL);
	size_t worst;
	double err = fd_rel_error(dlp, numg, (size_t)N, &worst);
	cr_expect_leq(err, RL_FD_TOL, "err %.3g at %zu (analytic %.9g, numeric %.9g)",
	              err, worst, (double)dlp[worst], numg[worst]);
}

static double ppo_value_fd_loss(void *ctx)
{
	(void)ctx;
	return 0.1 * ppo_value_loss(0.2, fd_p.n, fd_p.T, fd_p.v, fd_p.old_v, fd_p.ret,
	                            fd_p.mask, 1.0, NULL, NULL);
}

Test(rl_losses, ppo_value_loss_matches_fd)
{
	Rng r;
	rng_seed(&r, 74);
	fd_p.n = 4;
	fd_p.T = 6;
	int N = fd_p.n * fd_p.T;
	for (int k = 0; k < N; k++) {
		fd_p.mask[k] = (k % fd_p.T) <= 2 + k / fd_p.T ? 1.0f : 0.0f;
		fd_p.old_v[k] = (float)rng_normal(&r);
		for (;;) {
			fd_p.v[k] = (float)(fd_p.old_v[k] + 0.4 * rng_normal(&r));
			fd_p.ret[k] = (float)(fd_p.old_v[k] + 0.8 * rng_normal(&r));
			double v = fd_p.v[k], lo = fd_p.old_v[k] - 0.2,
			       hi = fd_p.old_v[k] + 0.2;
			double vc = v < lo ? lo : (v > hi ? hi : v);
			double l1 = (v - fd_p.ret[k]) * (v - fd_p.ret[k]);
			double l2 = (vc - fd_p.ret[k]) * (vc - fd_p.ret[k]);
			/* away from the clip bounds and from l1 == l2 outside them */
			if (fabs(v - lo) > 1e-2 && fabs(v - hi) > 1e-2 &&
			    (vc == v || fabs(l1 - l2) > 1e-2))
				break;
		}
	}
	float dv[MAXN];
	double numg[MAXN], clipfrac;
	ppo_value_loss(0.2, fd_p.n, fd_p.T, fd_p.v, fd_p.old_v, fd_p.ret, fd_p.mask, 0.1,
	               dv, &clipfrac);
	cr_assert_gt(clipfrac, 0.0);
	fd_numeric(numg, fd_p.v, (size_t)N, FD_H, ppo_value_fd_loss, NULL);
	size_t worst;
	double err = fd_rel_error(dv, numg, (size_t)N, &worst);
	cr_expect_leq(err, RL_FD_TOL, "err %.3g at %zu (analytic %.9g, numeric %.9g)",
	              err, worst, (double)dv[worst], numg[worst]);
}

/* ---------------------------------------------------------- hand-computed */

Test(rl_losses, grpo_ratio_one_gives_minus_mean_advantage)
{
	/* On policy (old = lp): rho = 1, so grpo's loss is -mean_i(A_i) / ga and
	 * d loss / d lp_t = -A_i / (|o_i| n ga); bnpo weighs rows by length. */
	const int n = 3, T = 4;
	float lp[12], mask[12] = {1, 1, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0}, dlp[12];
	double adv[3] = {0.5, -1.5, 2.0};
	for (int k = 0; k < n * T; k++)
		lp[k] = -0.25f * (float)(k + 1);
	GrpoOptions o = {
	    .loss_type = TRL_GRPO_GRPO, .epsilon_low = 0.2, .epsilon_high = 0.2};
	GrpoStats st;
	double loss =
	    grpo_loss(&o, n, T, lp, NULL, NULL, NULL, mask, adv, 2.0, 1.0, dlp, &st);
	cr_expect(golden_near(loss, -(0.5 - 1.5 + 2.0) / 3.0 / 2.0, 1e-15, 1e-15),
	          "loss %.17g", loss);
	cr_expect(golden_near(dlp[0], 0.5 / -(2.0 * 3.0 * 2.0), 1e-7, 0.0), "dlp[0] %g",
	          dlp[0]);
	cr_expect(golden_near(dlp[4], 1.5 / (4.0 * 3.0 * 2.0), 1e-7, 0.0), "dlp[4] %g",
	          dlp[4]);
	cr_expect_eq(dlp[2], 0.0f);
	cr_expect_eq(st.tokens, 7.0);
	cr_expect_eq(st.region_clipped, 0.0);

	o.loss_type = TRL_GRPO_BNPO;
	loss = grpo_loss(&o, n, T, lp, NULL, NULL, NULL, mask, adv, 1.0, 1.0, dlp, NULL);
	cr_expect(golden_near(loss, -(0.5 * 2 - 1.5 * 4 + 2.0 * 1) / 7.0, 1e-15, 1e-15),
	          "bnpo %.17g", loss);
	o.loss_type = TRL_GRPO_DR_GRPO;
	o.max_completion_length = 10;
	loss = grpo_loss(&o, n, T, lp, NULL, NULL, NULL, mask, adv, 1.0, 1.0, dlp, NULL);
	cr_expect(golden_near(loss, -(0.5 * 2 - 1.5 * 4 + 2.0 * 1) / 30.0, 1e-15, 1e-15),
	          "dr %.17g", loss);
	o.loss_type = TRL_GRPO_DAPO;
	loss = grpo_loss(&o, n, T, lp, NULL, NULL, NULL, mask, adv, 7.0, 2.5, dlp, NULL);
	cr_expect(golden_near(loss, -(0.5 * 2 - 1.5 * 4 + 2.0 * 1) / 2.5, 1e-15, 1e-15),
	          "dapo %.17g", loss);
	/* The same on-policy batch at sequence level: the ratio is 1 too. */
	o.loss_type = TRL_GRPO_GRPO;
	o.sequence_level = 1;
	loss = grpo_loss(&o, n, T, lp, NULL, NULL, NULL, mask, adv, 1.0, 1.0, dlp, &st);
	cr_expect(golden_near(loss, -(0.5 - 1.5 + 2.0) / 3.0, 1e-15, 1e-15), "seq %.17g",
	          loss);
	cr_expect_eq(st.clip_count, 3.0);
}

Test(rl_losses, grpo_clipping_regions_by_hand)
{
	/* One token per completion: rho = 0.5 or 1.5 with A = +-1, eps 0.2. */
	const int n = 4, T = 1;
	float lp[4] = {-1, -1, -1, -1}, old[4], mask[4] = {1, 1, 1, 1}, dlp[4];
	double rho[4] = {0.5, 1.5, 0.5, 1.5}, adv[4] = {-1, 1, 1, -1};
	for (int i = 0; i < n; i++)
		old[i] = (float)(lp[i] - log(rho[i]));
	GrpoOptions o = {
	    .loss_type = TRL_GRPO_BNPO, .epsilon_low = 0.2, .epsilon_high = 0.2};
	GrpoStats st;
	double loss =
	    grpo_loss(&o, n, T, lp, old, NULL, NULL, mask, adv, 1.0, 1.0, dlp, &st);
	/* -min(rho A, clip A): 0.8, -1.2, -0.5, 1.5 */
	cr_expect(golden_near(loss, (0.8 - 1.2 - 0.5 + 1.5) / 4.0, 1e-6, 0.0),
	          "loss %.9g", loss);
	cr_expect_eq(st.low_clipped, 1.0);  /* rho 0.5 with A < 0 */
	cr_expect_eq(st.high_clipped, 1.0); /* rho 1.5 with A > 0 */
	cr_expect_eq(st.region_clipped, 2.0);
	cr_expect_eq(st.clip_count, 4.0);
	/* Clipped tokens get no gradient; the others -A rho / 4. */
	cr_expect_eq(dlp[0], 0.0f);
	cr_expect_eq(dlp[1], 0.0f);
	cr_expect(golden_near(dlp[2], -0.5 / 4.0, 1e-6, 0.0), "dlp[2] %g", dlp[2]);
	cr_expect(golden_near(dlp[3], 1.5 / 4.0, 1e-6, 0.0), "dlp[3] %g", dlp[3]);
	cr_expect_eq(st.low_min, 0.0);
	cr_expect_eq(st.high_max, 1.0);

	/* delta = 1.3 caps rho = 1.5 in the unclipped term for A < 0: the loss
	 * becomes 1.3 and its gradient 0. */
	o.delta = 1.3;
	loss = grpo_loss(&o, n, T, lp, old, NULL, NULL, mask, adv, 1.0, 1.0, dlp, &st);
	cr_expect(golden_near(loss, (0.8 - 1.2 - 0.5 + 1.3) / 4.0, 1e-6, 0.0),
	          "delta loss %.9g", loss);
	cr_expect_eq(dlp[3], 0.0f);
	/* delta below 1 + epsilon_high hides the high clip from the statistics,
	 * as TRL counts on the capped ratio. */
	o.delta = 1.1;
	grpo_loss(&o, n, T, lp, old, NULL, NULL, mask, adv, 1.0, 1.0, dlp, &st);
	cr_expect_eq(st.high_clipped, 0.0);
}

Test(rl_losses, grpo_weights_scale_policy_term_not_kl)
{
	/* w multiplies the policy term only: with A = 0 the loss is beta * kl
	 * whatever w is. */
	float lp[2] = {-1.0f, -2.0f}, ref[2] = {-1.5f, -1.0f}, mask[2] = {1, 1};
	float w0[2] = {0, 0}, w1[2] = {1, 1}, dlp[2];
	double adv[1] = {0.0};
	GrpoOptions o = {.loss_type = TRL_GRPO_BNPO,
	                 .epsilon_low = 0.2,
	                 .epsilon_high = 0.2,
	                 .beta = 0.5};
	double a = grpo_loss(&o, 1, 2, lp, NULL, ref, w0, mask, adv, 1.0, 1.0, dlp, NULL);
	double b = grpo_loss(&o, 1, 2, lp, NULL, ref, w1, mask, adv, 1.0, 1.0, dlp, NULL);
	double kl = (rl_kl_k3(-1.0, -1.5) + rl_kl_k3(-2.0, -1.0)) / 2.0;
	cr_expect(golden_near(a, 0.5 * kl, 1e-12, 0.0) &&
	              golden_near(b, 0.5 * kl, 1e-12, 0.0),
	          "%.17g %.17g want %.17g", a, b, 0.5 * kl);
}

Test(rl_losses, advantages_by_hand)
{
	double r[6] = {1, 2, 3, 10, 10, 10}, adv[6], std[6];
	grpo_advantages(r, 6, 3, TRL_SCALE_GROUP, adv, std);
	cr_expect(golden_near(adv[0], -1.0 / 1.0001, 1e-12, 0.0), "%.17g", adv[0]);
	cr_expect(golden_near(adv[2], 1.0 / 1.0001, 1e-12, 0.0));
	cr_expect_eq(adv[1], 0.0);
	cr_expect_eq(adv[4], 0.0);
	cr_expect_eq(std[0], 1.0);
	cr_expect_eq(std[3], 0.0); /* frac_reward_zero_std counts this group */
	grpo_advantages(r, 6, 3, TRL_SCALE_NONE, adv, NULL);
	cr_expect_eq(adv[0], -1.0);
	grpo_advantages(r, 6, 3, TRL_SCALE_BATCH, adv, std);
	double mean = 36.0 / 6.0, ss = 0.0;
	for (int i = 0; i < 6; i++)
		ss += (r[i] - mean) * (r[i] - mean);
	double bstd = sqrt(ss / 5.0);
	cr_expect(golden_near(adv[0], -1.0 / (bstd + 1e-4), 1e-12, 0.0));
	cr_expect(golden_near(std[5], bstd, 1e-12, 0.0));

	/* NaN (unscorable) rewards: out of the statistics, advantage 0. */
	double w[2] = {1.0, 2.0}, rf[6] = {1, NAN, NAN, NAN, 0.5, 0.25}, comb[3];
	rl_combine_rewards(rf, w, 3, 2, comb);
	cr_expect_eq(comb[0], 1.0);
	cr_expect(isnan(comb[1]));
	cr_expect_eq(comb[2], 1.0);
	double rn[4] = {1, NAN, 3, 5};
	grpo_advantages(rn, 4, 4, TRL_SCALE_GROUP, adv, std);
	cr_expect_eq(adv[1], 0.0);
	cr_expect(golden_near(adv[0], -2.0 / (2.0 + 1e-4), 1e-12, 0.0), "%.17g", adv[0]);
	cr_expect_eq(std[0], 2.0);

	/* RLOO: baseline of r_i is the mean of the others. */
	double rr[4] = {1, 2, 3, 6};
	rloo_advantages(rr, 4, 4, 0, adv);
	cr_expect(golden_near(adv[0], 1.0 - 11.0 / 3.0, 1e-15, 0.0));
	cr_expect(golden_near(adv[3], 6.0 - 2.0, 1e-15, 0.0));
	double rr2[4] = {1, NAN, 3, 6};
	rloo_advantages(rr2, 4, 4, 0, adv);
	cr_expect(golden_near(adv[0], 1.0 - 4.5, 1e-15, 0.0));
	cr_expect_eq(adv[1], 0.0);
	rloo_advantages(rr, 4, 2, 1, adv);
	/* raw: -1, 1, -3, 3: mean 0, std sqrt(20 / 3) */
	cr_expect(golden_near(adv[3], 3.0 / (sqrt(20.0 / 3.0) + 1e-4), 1e-12, 0.0),
	          "%.17g", adv[3]);
}

Test(rl_losses, rloo_loss_by_hand)
{
	/* Summed log-ratio: two tokens of +0.1 give rho = e^0.2 > 1.2 (clipped
	 * for A > 0). */
	float lp[4] = {-1, -1, -1, -1}, old[4] = {-1.1f, -1.1f, -1, -1},
	      mask[4] = {1, 1, 1, 0};
	float dlp[4];
	double adv[2] = {1.0, -2.0};
	RlooStats st;
	double loss = rloo_loss(0.2, 0.2, 2, 2, lp, old, mask, adv, 1.0, dlp, &st);
	double rho0 = exp((double)(-2.0f) - (double)(-1.1f - 1.1f));
	cr_expect(rho0 > 1.2);
	cr_expect(golden_near(loss, (-1.2 + 2.0) / 2.0, 1e-12, 0.0), "loss %.17g", loss);
	cr_expect_eq(st.high_clipped, 1.0);
	cr_expect_eq(st.seqs, 2.0);
	cr_expect_eq(dlp[0], 0.0f);
	cr_expect(golden_near(dlp[2], 2.0 / 2.0, 1e-7, 0.0), "dlp[2] %g", dlp[2]);
	cr_expect_eq(dlp[3], 0.0f);
}

Test(rl_losses, is_correction_by_hand)
{
	/* Token ratios e^1, e^0, e^-1; the masked position is 0. */
	float old[4] = {0, 0, 0, 0}, samp[4] = {-1, 0, 1, 5}, mask[4] = {1, 1, 1, 0},
	      w[4];
	IsStats st;
	is_correction(TRL_IS_TOKEN_TRUNCATE, 0.5, 2.0, 1, 4, old, samp, mask, w, &st);
	cr_expect(w[0] == 2.0f && w[1] == 1.0f && w[2] == 0.5f && w[3] == 0.0f);
	cr_expect_eq(st.tokens, 3.0);
	cr_expect_eq(st.logp_diff_max, 1.0);
	cr_expect_eq(st.ratio_sum, 3.5);
	is_correction(TRL_IS_TOKEN_MASK, 0.5, 2.0, 1, 4, old, samp, mask, w, &st);
	cr_expect(w[0] == 0.0f && w[1] == 1.0f && w[2] == 0.0f);
	cr_expect_eq(st.ratio_min, 0.0);
	/* Sequence: sum 0 -> ratio 1 at every active token. */
	is_correction(TRL_IS_SEQUENCE_MASK, 0.0, INFINITY, 1, 4, old, samp, mask, w, &st);
	cr_expect(w[0] == 1.0f && w[2] == 1.0f && w[3] == 0.0f);
	cr_expect_eq(st.ratio_count, 1.0);
	float samp2[4] = {-1, -1, 0, 0};
	is_correction(TRL_IS_SEQUENCE_TRUNCATE, 0.0, 3.0, 1, 4, old, samp2, mask, w, &st);
	cr_expect_eq(w[0], 3.0f); /* e^2 truncated */
}

Test(rl_losses, quantile_by_hand)
{
	double v[4] = {4, 1, 3, 2};
	cr_expect_eq(rl_quantile(v, 4, 0.25), 1.75);
	cr_expect_eq(rl_quantile(v, 4, 0.5), 2.5);
	cr_expect_eq(rl_quantile(v, 4, 1.0), 4.0);
	cr_expect_eq(rl_quantile(v, 4, 0.0), 1.0);
	double one[1] = {7};
	cr_expect_eq(rl_quantile(one, 1, 0.3), 7.0);
}

Test(rl_losses, gae_and_whiten_by_hand)
{
	/* One row, T = 3, the value mask ending at t = 1: r = (0, 1, junk),
	 * V = (0.5, 0.2, junk). delta_1 = 1 - 0.2 = 0.8, A_1 = 0.8;
	 * delta_0 = 0 + g 0.2 - 0.5, A_0 = delta_0 + g l 0.8. */
	float r[3] = {0, 1, 9}, v[3] = {0.5f, 0.2f, 9}, m[3] = {1, 1, 0}, adv[3], ret[3];
	double g = 0.9, l = 0.8;
	ppo_gae(1, 3, r, v, m, g, l, adv, ret);
	double a1 = 1.0 - (double)0.2f, a0 = g * (double)0.2f - 0.5 + g * l * a1;
	cr_expect_eq(adv[2], 0.0f);
	cr_expect_eq(ret[2], 0.0f);
	cr_expect(golden_near(adv[1], a1, 1e-7, 0.0), "A1 %g", adv[1]);
	cr_expect(golden_near(adv[0], a0, 1e-6, 0.0), "A0 %g want %g", adv[0], a0);
	cr_expect(golden_near(ret[0], a0 + 0.5, 1e-6, 0.0));

	/* Whitening {1, 3} (mean 2, unbiased var 2) and a masked junk value. */
	float x[3] = {1, 3, 50}, wm[3] = {1, 1, 0};
	rl_masked_whiten(x, wm, 3, 1);
	cr_expect(golden_near(x[0], -1.0 / sqrt(2.0 + 1e-8), 1e-7, 0.0), "%g", x[0]);
	cr_expect_eq(x[2], 0.0f);
	float y[3] = {1, 3, 50};
	rl_masked_whiten(y, wm, 3, 0);
	cr_expect(golden_near(y[1], 1.0 / sqrt(2.0 + 1e-8) + 2.0, 1e-7, 0.0), "%g", y[1]);
}

Test(rl_losses, ppo_losses_by_hand)
{
	/* rho = 1: pg = -mean(A) over the mask, d/dlp = -A / msum. */
	float lp[3] = {-1, -2, 7}, adv[3] = {1, -3, 100}, m[3] = {1, 1, 0}, dlp[3];
	PpoPolicyStats st;
	double pg = ppo_policy_loss(0.2, 1, 3, lp, lp, adv, m, 1.0, dlp, &st);
	cr_expect_eq(pg, 1.0);
	cr_expect_eq(dlp[0], -0.5f);
	cr_expect_eq(dlp[1], 1.5f);
	cr_expect_eq(dlp[2], 0.0f);
	cr_expect_eq(st.clipfrac, 0.0);
	cr_expect_eq(st.ratio_mean, 1.0);
	/* V = R: no loss; V far outside the clip range of Vold counts clipped. */
	float v[2] = {1.0f, 2.0f}, ov[2] = {1.0f, 0.0f}, R[2] = {1.0f, 0.0f},
	      mv[2] = {1, 1};
	float dv[2];
	double cf;
	double vf = ppo_value_loss(0.2, 1, 2, v, ov, R, mv, 1.0, dv, &cf);
	/* token 1: (2 - 0)^2 = 4 vs (0.2 - 0)^2: the unclipped term wins */
	cr_expect(golden_near(vf, 0.5 * 4.0 / 2.0, 1e-12, 0.0), "vf %.17g", vf);
	cr_expect_eq(cf, 0.0);
	cr_expect(golden_near(dv[1], 0.5 * 2.0 * 2.0 / 2.0, 1e-7, 0.0), "dv %g", dv[1]);
	float R2[2] = {1.0f, 3.0f};
	vf = ppo_value_loss(0.2, 1, 2, v, ov, R2, mv, 1.0, dv, &cf);
	/* token 1: (2 - 3)^2 = 1 vs (0.2 - 3)^2 = 7.84: clipped, no gradient */
	cr_expect(golden_near(vf, 0.5 * 7.84 / 2.0, 1e-6, 0.0), "vf %.17g", vf);
	cr_expect_eq(cf, 0.5);
	cr_expect_eq(dv[1], 0.0f);
}

Test(rl_losses, option_names_parse)
{
	cr_expect_eq(rl_scale_rewards_parse("group"), TRL_SCALE_GROUP);
	cr_expect_eq(rl_scale_rewards_parse("batch"), TRL_SCALE_BATCH);
	cr_expect_eq(rl_scale_rewards_parse("none"), TRL_SCALE_NONE);
	cr_expect_eq(rl_scale_rewards_parse("true"), TRL_SCALE_GROUP);
	cr_expect_eq(rl_scale_rewards_parse("false"), TRL_SCALE_NONE);
	cr_expect_eq(rl_scale_rewards_parse("Group"), -1);
	cr_expect_eq(rl_grpo_loss_parse("dr_grpo"), TRL_GRPO_DR_GRPO);
	cr_expect_eq(rl_grpo_loss_parse("dapo"), TRL_GRPO_DAPO);
	cr_expect_eq(rl_grpo_loss_parse("grpo"), TRL_GRPO_GRPO);
	cr_expect_eq(rl_grpo_loss_parse("bnpo"), TRL_GRPO_BNPO);
	cr_expect_eq(rl_grpo_loss_parse("cispo"), -1);
	cr_expect_eq(rl_grpo_loss_parse(NULL), -1);
	cr_expect_eq(rl_is_mode_parse("sequence_mask"), TRL_IS_SEQUENCE_MASK);
	cr_expect_eq(rl_is_mode_parse("token_truncate"), TRL_IS_TOKEN_TRUNCATE);
	cr_expect_eq(rl_is_mode_parse("token_mask"), TRL_IS_TOKEN_MASK);
	cr_expect_eq(rl_is_mode_parse("sequence_truncate"), TRL_IS_SEQUENCE_TRUNCATE);
	cr_expect_eq(rl_is_mode_parse("sequence"), -1);
}
