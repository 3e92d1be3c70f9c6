/* test_losses.c - the preference and reward losses against the PyTorch oracle's
 * golden values (tests/data/losses_golden.json, from
 * tests/reference/losses_oracle.py), hand-computed values and finite
 * differences of every analytic gradient. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden.h"
#include "json.h"
#include "losses.h"
#include "rng.h"

#define MAXN 64
#define LOG2 0.69314718055994530942

/* ---------------------------------------------------------------- golden */

/* Reads array obj[key] into out, which holds MAXN values; returns its length,
 * or -1 when absent. */
static int nums(const JsonValue *obj, const char *key, double *out, const char *name)
{
	return golden_nums(obj, key, out, MAXN, NULL, name);
}

static int need_nums(const JsonValue *obj, const char *key, double *out, int n,
                     const char *name)
{
	int m = nums(obj, key, out, name);
	cr_assert_eq(m, n, "%s: %s has %d values, want %d", name, key, m, n);
	return m;
}

static void check_array(const char *name, const char *what, const double *got,
                        const JsonValue *expected, int n)
{
	double want[MAXN];
	need_nums(expected, what, want, n, name);
	for (int i = 0; i < n; i++)
		cr_expect(golden_near(got[i], want[i], GOLD_RTOL, GOLD_ATOL),
		          "%s: d loss / d %s[%d] = %.17g, oracle %.17g", name, what, i,
		          got[i], want[i]);
}

static TrlFDivergence fdiv_parse(const char *s)
{
	if (strcmp(s, "reverse_kl") == 0)
		return TRL_FDIV_REVERSE_KL;
	if (strcmp(s, "forward_kl") == 0)
		return TRL_FDIV_FORWARD_KL;
	if (strcmp(s, "js_divergence") == 0)
		return TRL_FDIV_JS;
	if (strcmp(s, "alpha_divergence") == 0)
		return TRL_FDIV_ALPHA;
	cr_assert_fail("unknown f_divergence_type %s", s);
	return TRL_FDIV_REVERSE_KL;
}

Test(losses, golden_dpo_matches_oracle)
{
	JsonValue *root = golden_load("losses_golden.json");
	const JsonValue *cases[128];
	int nc = golden_cases(root, "dpo", cases, 128, 30);
	int alone[TRL_DPO_LOSS_COUNT] = {0}, fdivs[4] = {0}, weighted = 0;
	for (int c = 0; c < nc; c++) {
		const char *name = json_str(json_get(cases[c], "name"));
		const JsonValue *o = json_get(cases[c], "options");
		const JsonValue *in = json_get(cases[c], "inputs");
		const JsonValue *ex = json_get(cases[c], "expected");
		DpoOptions opt = {0};
		const JsonValue *types = json_get(o, "loss_type");
		cr_assert(types && types->len >= 1 && types->len <= TRL_MAX_LOSS_TYPES,
		          "%s", name);
		opt.n_types = (int)types->len;
		for (int k = 0; k < opt.n_types; k++) {
			int t = dpo_loss_parse(json_str(json_at(types, (size_t)k)));
			cr_assert_geq(t, 0, "%s: loss_type %d", name, k);
			opt.types[k] = (TrlDpoLoss)t;
		}
		cr_assert_eq(nums(o, "loss_weights", opt.weights, name), opt.n_types);
		opt.beta = golden_num(o, "beta", name);
		opt.label_smoothing = golden_num(o, "label_smoothing", name);
		opt.discopop_tau = golden_num(o, "discopop_tau", name);
		opt.f_divergence = fdiv_parse(json_str(json_get(o, "f_divergence_type")));
		opt.f_alpha_divergence_coef =
		    golden_num(o, "f_alpha_divergence_coef", name);

		double pc[MAXN], pr[MAXN], rc[MAXN], rr[MAXN], cnt_c[MAXN], cnt_r[MAXN];
		double wc[MAXN], wr[MAXN];
		int n = nums(in, "pc", pc, name);
		need_nums(in, "pr", pr, n, name);
		need_nums(in, "rc", rc, n, name);
		need_nums(in, "rr", rr, n, name);
		need_nums(in, "nc", cnt_c, n, name);
		need_nums(in, "nr", cnt_r, n, name);
		int has_w = nums(in, "wc", wc, name) >= 0;
		if (has_w)
			need_nums(in, "wr", wr, n, name);
		PairBatch b = {.n = n,
		               .pc = pc,
		               .pr = pr,
		               .rc = rc,
		               .rr = rr,
		               .nc = cnt_c,
		               .nr = cnt_r,
		               .wc = has_w ? wc : NULL,
		               .wr = has_w ? wr : NULL,
		               .nll = golden_num(in, "nll", name)};
		double dpc[MAXN], dpr[MAXN], dnll = NAN;
		double loss = dpo_loss(&opt, &b, dpc, dpr, &dnll);
		golden_expect(name, ex, "loss", loss);
		check_array(name, "pc", dpc, ex, n);
		check_array(name, "pr", dpr, ex, n);
		golden_check_value(name, "d loss / d nll", dnll,
		                   golden_num(ex, "nll", name));

		if (opt.n_types == 1 && opt.f_divergence == TRL_FDIV_REVERSE_KL)
			alone[opt.types[0]]++;
		fdivs[opt.f_divergence]++;
		weighted += has_w;
	}
	for (int t = 0; t < TRL_DPO_LOSS_COUNT; t++)
		cr_expect_geq(alone[t], 1, "no golden case for loss_type %s alone",
		              dpo_loss_name((TrlDpoLoss)t));
	for (int f = 0; f < 4; f++)
		cr_expect_geq(fdivs[f], 2, "f_divergence %d has %d golden cases", f,
		              fdivs[f]);
	cr_expect_geq(weighted, 2, "use_weighting has %d golden cases", weighted);
	json_free(root);
}

Test(losses, golden_wpo_weight_matches_oracle)
{
	JsonValue *root = golden_load("losses_golden.json");
	const JsonValue *cases[32];
	int nc = golden_cases(root, "wpo", cases, 32, 3);
	for (int c = 0; c < nc; c++) {
		const char *name = json_str(json_get(cases[c], "name"));
		const JsonValue *in = json_get(cases[c], "inputs");
		double w = dpo_wpo_weight(golden_num(in, "sum_aligned", name),
		                          golden_num(in, "count", name));
		golden_expect(name, json_get(cases[c], "expected"), "weight", w);
	}
	json_free(root);
}

/* BCO: the running moments' update (when the case says so), then the loss and
 * its gradient at the updated mean. */
Test(losses, golden_bco_matches_oracle)
{
	JsonValue *root = golden_load("losses_golden.json");
	const JsonValue *cases[8];
	int nc = golden_cases(root, "bco", cases, 8, 3);
	for (int c = 0; c < nc; c++) {
		const char *name = json_str(json_get(cases[c], "name"));
		const JsonValue *o = json_get(cases[c], "options");
		const JsonValue *in = json_get(cases[c], "inputs");
		const JsonValue *ex = json_get(cases[c], "expected");
		double lp[MAXN], ref[MAXN], dlp[MAXN], rs[3], want[3];
		int label[MAXN];
		int n = nums(in, "lp", lp, name);
		need_nums(in, "ref", ref, n, name);
		need_nums(in, "running", rs, 3, name);
		need_nums(ex, "running", want, 3, name);
		const JsonValue *lab = json_get(in, "label");
		for (int i = 0; i < n; i++) {
			int64_t v;
			cr_assert_eq(json_int(json_at(lab, (size_t)i), &v), 0);
			label[i] = (int)v;
		}
		double beta = golden_num(o, "beta", name);
		RunningMoments m = {rs[0], rs[1], rs[2]};
		if (json_get(o, "update")->boolean) {
			double r[MAXN], mean = 0.0, var = 0.0;
			for (int i = 0; i < n; i++)
				mean += (r[i] = beta * (lp[i] - ref[i])) / n;
			for (int i = 0; i < n; i++)
				var += (r[i] - mean) * (r[i] - mean) / n;
			running_moments_update(&m, mean, var, n);
		}
		golden_check_value(name, "running mean", m.mean, want[0]);
		golden_check_value(name, "running var", m.var, want[1]);
		golden_check_value(name, "running count", m.count, want[2]);
		double loss = bco_loss(beta, n, lp, ref, label, m.mean, dlp);
		golden_expect(name, ex, "loss", loss);
		check_array(name, "lp", dlp, ex, n);
	}
	RunningMoments fresh;
	running_moments_init(&fresh);
	cr_expect(fresh.mean == 0.0 && fresh.var == 1.0 && fresh.count == 1e-24);
	json_free(root);
}

Test(losses, golden_kto_matches_oracle)
{
	JsonValue *root = golden_load("losses_golden.json");
	const JsonValue *cases[32];
	int nc = golden_cases(root, "kto", cases, 32, 4);
	int types[2] = {0};
	for (int c = 0; c < nc; c++) {
		const char *name = json_str(json_get(cases[c], "name"));
		const JsonValue *o = json_get(cases[c], "options");
		const JsonValue *in = json_get(cases[c], "inputs");
		const JsonValue *ex = json_get(cases[c], "expected");
		const char *type = json_str(json_get(o, "loss_type"));
		KtoOptions opt = {
		    .beta = golden_num(o, "beta", name),
		    .desirable_weight = golden_num(o, "desirable_weight", name),
		    .undesirable_weight = golden_num(o, "undesirable_weight", name)};
		if (strcmp(type, "kto") == 0)
			opt.type = TRL_KTO_KTO;
		else if (strcmp(type, "apo_zero_unpaired") == 0)
			opt.type = TRL_KTO_APO_ZERO_UNPAIRED;
		else
			cr_assert_fail("%s: loss_type %s", name, type);
		types[opt.type]++;
		double lp[MAXN], ref[MAXN], dlp[MAXN];
		int label[MAXN];
		int n = nums(in, "lp", lp, name);
		need_nums(in, "ref", ref, n, name);
		const JsonValue *lab = json_get(in, "label");
		cr_assert_eq(lab->len, (size_t)n, "%s: label", name);
		for (int i = 0; i < n; i++) {
			int64_t v;
			cr_assert_eq(json_int(json_at(lab, (size_t)i), &v), 0);
			label[i] = (int)v;
		}
		double loss =
		    kto_loss(&opt, n, lp, ref, label, golden_num(in, "z0", name), dlp);
		golden_expect(name, ex, "loss", loss);
		check_array(name, "lp", dlp, ex, n);
	}
	cr_expect(types[0] >= 3 && types[1] >= 1, "kto %d, apo_zero_unpaired %d cases",
	          types[0], types[1]);
	json_free(root);
}

/* Reads the fields ORPO and CPO cases share into b (arrays owned by the caller). */
static int read_policy_pairs(const JsonValue *in, const char *name, double *pc,
                             double *pr, double *cnt_c, double *cnt_r, PairBatch *b)
{
	int n = nums(in, "pc", pc, name);
	need_nums(in, "pr", pr, n, name);
	need_nums(in, "nc", cnt_c, n, name);
	need_nums(in, "nr", cnt_r, n, name);
	*b = (PairBatch){.n = n,
	                 .pc = pc,
	                 .pr = pr,
	                 .nc = cnt_c,
	                 .nr = cnt_r,
	                 .nll = golden_num(in, "nll", name)};
	return n;
}

Test(losses, golden_orpo_matches_oracle)
{
	JsonValue *root = golden_load("losses_golden.json");
	const JsonValue *cases[16];
	int nc = golden_cases(root, "orpo", cases, 16, 2);
	for (int c = 0; c < nc; c++) {
		const char *name = json_str(json_get(cases[c], "name"));
		const JsonValue *ex = json_get(cases[c], "expected");
		double pc[MAXN], pr[MAXN], cnt_c[MAXN], cnt_r[MAXN], dpc[MAXN], dpr[MAXN];
		PairBatch b;
		int n = read_policy_pairs(json_get(cases[c], "inputs"), name, pc, pr,
		                          cnt_c, cnt_r, &b);
		double dnll, lor, loc;
		double loss =
		    orpo_loss(golden_num(json_get(cases[c], "options"), "beta", name), &b,
		              dpc, dpr, &dnll, &lor, &loc);
		golden_expect(name, ex, "loss", loss);
		check_array(name, "pc", dpc, ex, n);
		check_array(name, "pr", dpr, ex, n);
		golden_check_value(name, "d loss / d nll", dnll,
		                   golden_num(ex, "nll", name));
		golden_expect(name, ex, "log_odds_ratio", lor);
		golden_expect(name, ex, "log_odds_chosen", loc);
	}
	json_free(root);
}

Test(losses, golden_cpo_matches_oracle)
{
	static const char *const names[] = {"sigmoid", "hinge", "ipo", "simpo"};
	JsonValue *root = golden_load("losses_golden.json");
	const JsonValue *cases[32];
	int nc = golden_cases(root, "cpo", cases, 32, 6);
	int seen[4] = {0}, alphapo = 0;
	for (int c = 0; c < nc; c++) {
		const char *name = json_str(json_get(cases[c], "name"));
		const JsonValue *o = json_get(cases[c], "options");
		const JsonValue *ex = json_get(cases[c], "expected");
		const char *type = json_str(json_get(o, "loss_type"));
		CpoOptions opt = {.beta = golden_num(o, "beta", name),
		                  .label_smoothing =
		                      golden_num(o, "label_smoothing", name),
		                  .cpo_alpha = golden_num(o, "cpo_alpha", name),
		                  .simpo_gamma = golden_num(o, "simpo_gamma", name),
		                  .alpha = golden_num(o, "alpha", name)};
		int t = -1;
		for (int k = 0; k < 4; k++)
			if (strcmp(type, names[k]) == 0)
				t = k;
		cr_assert_geq(t, 0, "%s: loss_type %s", name, type);
		opt.type = (TrlCpoLoss)t;
		seen[t]++;
		alphapo += opt.alpha != 0.0;
		double pc[MAXN], pr[MAXN], cnt_c[MAXN], cnt_r[MAXN], dpc[MAXN], dpr[MAXN];
		PairBatch b;
		int n = read_policy_pairs(json_get(cases[c], "inputs"), name, pc, pr,
		                          cnt_c, cnt_r, &b);
		double dnll;
		double loss = cpo_loss(&opt, &b, dpc, dpr, &dnll);
		golden_expect(name, ex, "loss", loss);
		check_array(name, "pc", dpc, ex, n);
		check_array(name, "pr", dpr, ex, n);
		golden_check_value(name, "d loss / d nll", dnll,
		                   golden_num(ex, "nll", name));
		double want_c[MAXN], want_r[MAXN];
		need_nums(ex, "rewards_chosen", want_c, n, name);
		need_nums(ex, "rewards_rejected", want_r, n, name);
		for (int i = 0; i < n; i++) {
			double rwc, rwr;
			cpo_rewards(&opt, pc[i], pr[i], cnt_c[i], cnt_r[i], &rwc, &rwr);
			golden_check_value(name, "rewards/chosen", rwc, want_c[i]);
			golden_check_value(name, "rewards/rejected", rwr, want_r[i]);
		}
	}
	for (int k = 0; k < 4; k++)
		cr_expect_geq(seen[k], 1, "no golden case for CPO %s", names[k]);
	cr_expect_geq(alphapo, 2, "AlphaPO has %d golden cases", alphapo);
	json_free(root);
}

Test(losses, golden_reward_matches_oracle)
{
	JsonValue *root = golden_load("losses_golden.json");
	const JsonValue *cases[16];
	int nc = golden_cases(root, "reward", cases, 16, 3);
	for (int c = 0; c < nc; c++) {
		const char *name = json_str(json_get(cases[c], "name"));
		const JsonValue *o = json_get(cases[c], "options");
		const JsonValue *in = json_get(cases[c], "inputs");
		const JsonValue *ex = json_get(cases[c], "expected");
		const JsonValue *coef = json_get(o, "center_rewards_coefficient");
		cr_assert(coef, "%s: no center_rewards_coefficient", name);
		double cf = 0.0;
		if (coef->type != JSON_NULL)
			cf = golden_num(o, "center_rewards_coefficient", name);
		double rc[MAXN], rr[MAXN], m[MAXN], drc[MAXN], drr[MAXN];
		int n = nums(in, "rc", rc, name);
		need_nums(in, "rr", rr, n, name);
		int has_m = nums(in, "margin", m, name) >= 0;
		double loss = reward_loss(n, rc, rr, has_m ? m : NULL, cf, drc, drr);
		golden_expect(name, ex, "loss", loss);
		check_array(name, "rc", drc, ex, n);
		check_array(name, "rr", drr, ex, n);
	}
	json_free(root);
}

/* ----------------------------------------------------------- hand values */

Test(losses, names_round_trip)
{
	static const char *const trl[] = {
	    "sigmoid",  "hinge",    "ipo",       "exo_pair", "nca_pair",
	    "robust",   "bco_pair", "sppo_hard", "aot",      "aot_unpaired",
	    "apo_zero", "apo_down", "discopop",  "sft",      "sigmoid_norm"};
	for (int t = 0; t < TRL_DPO_LOSS_COUNT; t++) {
		cr_assert_str_eq(dpo_loss_name((TrlDpoLoss)t), trl[t]);
		cr_assert_eq(dpo_loss_parse(trl[t]), t);
	}
	cr_assert_null(dpo_loss_name(TRL_DPO_LOSS_COUNT));
	cr_assert_null(dpo_loss_name((TrlDpoLoss)-1));
	cr_assert_eq(dpo_loss_parse("aot_pair"), -1,
	             "TRL renamed aot_pair to aot_unpaired");
	cr_assert_eq(dpo_loss_parse("Sigmoid"), -1);
	cr_assert_eq(dpo_loss_parse(""), -1);
	cr_assert_eq(dpo_loss_parse(NULL), -1);
}

/* A batch of n pairs whose policy equals the reference (every log-ratio 0). */
typedef struct ZeroBatch {
	double pc[4], pr[4], rc[4], rr[4], nc[4], nr[4];
	PairBatch b;
} ZeroBatch;

static void zero_batch(ZeroBatch *z, double nll)
{
	static const double lp[4] = {-12.5, -3.0, -40.25, -7.0};
	for (int i = 0; i < 4; i++) {
		z->pc[i] = z->rc[i] = lp[i];
		z->pr[i] = z->rr[i] = lp[3 - i] - 1.0;
		z->nc[i] = 5.0 + i;
		z->nr[i] = 9.0 - i;
	}
	z->b = (PairBatch){.n = 4,
	                   .pc = z->pc,
	                   .pr = z->pr,
	                   .rc = z->rc,
	                   .rr = z->rr,
	                   .nc = z->nc,
	                   .nr = z->nr,
	                   .nll = nll};
}

static DpoOptions one_loss(TrlDpoLoss t, double beta)
{
	DpoOptions o = {.n_types = 1, .beta = beta, .discopop_tau = 0.05};
	o.types[0] = t;
	o.weights[0] = 1.0;
	return o;
}

Test(losses, every_dpo_loss_at_zero_log_ratios)
{
	const double beta = 0.25, ls = 0.2, nll = 1.75;
	const double q = 1.0 / (2.0 * beta);
	/* Each loss at delta = 0 and zero scores, written out from its formula. */
	const double want[TRL_DPO_LOSS_COUNT] = {
	    [TRL_DPO_SIGMOID] = LOG2,
	    [TRL_DPO_HINGE] = 1.0,
	    [TRL_DPO_IPO] = q * q,
	    [TRL_DPO_EXO_PAIR] = -LOG2 - 0.5 * log(ls * (1.0 - ls)),
	    [TRL_DPO_NCA_PAIR] = 2.0 * LOG2,
	    [TRL_DPO_ROBUST] = LOG2,
	    [TRL_DPO_BCO_PAIR] = 2.0 * LOG2,
	    [TRL_DPO_SPPO_HARD] = 2.0 * q * q,
	    [TRL_DPO_AOT] = LOG2,
	    [TRL_DPO_AOT_UNPAIRED] = LOG2,
	    [TRL_DPO_APO_ZERO] = 1.0,
	    [TRL_DPO_APO_DOWN] = 1.0,
	    [TRL_DPO_DISCOPOP] = 0.5 * (LOG2 + 1.0),
	    [TRL_DPO_SFT] = nll,
	    [TRL_DPO_SIGMOID_NORM] = LOG2,
	};
	ZeroBatch z;
	zero_batch(&z, nll);
	for (int t = 0; t < TRL_DPO_LOSS_COUNT; t++) {
		DpoOptions o = one_loss((TrlDpoLoss)t, beta);
		o.label_smoothing = ls;
		double dpc[4], dpr[4], dnll;
		double l = dpo_loss(&o, &z.b, dpc, dpr, &dnll);
		cr_expect(golden_near(l, want[t], 1e-14, 1e-15),
		          "%s at zero: %.17g, want %.17g", dpo_loss_name((TrlDpoLoss)t),
		          l, want[t]);
		cr_expect_eq(dnll, t == TRL_DPO_SFT ? 1.0 : 0.0, "%s: d/d nll = %g",
		             dpo_loss_name((TrlDpoLoss)t), dnll);
	}
	/* sigmoid: d/d pc_i = -beta sigmoid(0) / n. */
	DpoOptions o = one_loss(TRL_DPO_SIGMOID, beta);
	double dpc[4], dpr[4], dnll;
	dpo_loss(&o, &z.b, dpc, dpr, &dnll);
	for (int i = 0; i < 4; i++) {
		cr_expect(golden_near(dpc[i], -beta * 0.5 / 4, 1e-15, 0), "dpc[%d] = %g",
		          i, dpc[i]);
		cr_expect(golden_near(dpr[i], beta * 0.5 / 4, 1e-15, 0), "dpr[%d] = %g",
		          i, dpr[i]);
	}
}

Test(losses, hinge_is_flat_past_the_margin)
{
	/* beta delta = 1.02: relu(1 - 1.02) = 0 with zero gradient; at 0.98 the
	 * loss is 0.02 and d/d pc = -beta / n. */
	double pc[2] = {-10.0, -10.0}, pr[2] = {-20.2, -19.8}, zero[2] = {0.0, 0.0};
	double cnt[2] = {4.0, 4.0};
	PairBatch b = {
	    .n = 2, .pc = pc, .pr = pr, .rc = zero, .rr = zero, .nc = cnt, .nr = cnt};
	DpoOptions o = one_loss(TRL_DPO_HINGE, 0.1);
	double dpc[2], dpr[2];
	double l = dpo_loss(&o, &b, dpc, dpr, NULL);
	cr_expect(golden_near(l, 0.02 / 2, 1e-12, 0), "dpo hinge: %.17g", l);
	cr_expect(dpc[0] == 0.0 && dpr[0] == 0.0, "%g %g", dpc[0], dpr[0]);
	cr_expect(golden_near(dpc[1], -0.1 / 2, 1e-15, 0) &&
	          golden_near(dpr[1], 0.1 / 2, 1e-15, 0));
	CpoOptions c = {.type = TRL_CPO_HINGE, .beta = 0.1};
	b.nc = b.nr = cnt;
	l = cpo_loss(&c, &b, dpc, dpr, NULL);
	cr_expect(golden_near(l, 0.02 / 2, 1e-12, 0), "cpo hinge: %.17g", l);
	cr_expect(dpc[0] == 0.0 && dpr[0] == 0.0, "%g %g", dpc[0], dpr[0]);
	cr_expect(golden_near(dpc[1], -0.1 / 2, 1e-15, 0) &&
	          golden_near(dpr[1], 0.1 / 2, 1e-15, 0));
}

Test(losses, label_smoothing_only_where_trl_uses_it)
{
	ZeroBatch z;
	zero_batch(&z, 1.0);
	z.pc[0] += 3.0; /* a nonzero margin, where smoothing would show */
	z.pr[2] -= 1.5;
	for (int t = 0; t < TRL_DPO_LOSS_COUNT; t++) {
		if (t == TRL_DPO_EXO_PAIR)
			continue; /* epsilon = 0 is outside exo_pair's domain */
		DpoOptions o = one_loss((TrlDpoLoss)t, 0.3);
		double plain = dpo_loss(&o, &z.b, NULL, NULL, NULL);
		o.label_smoothing = 0.1;
		double smoothed = dpo_loss(&o, &z.b, NULL, NULL, NULL);
		int uses =
		    t == TRL_DPO_ROBUST || t == TRL_DPO_AOT || t == TRL_DPO_AOT_UNPAIRED;
		if (uses)
			cr_expect(fabs(plain - smoothed) > 1e-6,
			          "%s ignores label_smoothing",
			          dpo_loss_name((TrlDpoLoss)t));
		else
			cr_expect_eq(plain, smoothed, "%s uses label_smoothing",
			             dpo_loss_name((TrlDpoLoss)t));
	}
}

Test(losses, loss_list_is_the_weighted_sum_of_means)
{
	ZeroBatch z;
	zero_batch(&z, 2.5);
	/* MPO at zero log-ratios: 0.8 log 2 + 0.2 (2 log 2) + 1 nll. */
	DpoOptions o = {.n_types = 3,
	                .beta = 0.1,
	                .types = {TRL_DPO_SIGMOID, TRL_DPO_BCO_PAIR, TRL_DPO_SFT},
	                .weights = {0.8, 0.2, 1.0}};
	double dnll;
	double l = dpo_loss(&o, &z.b, NULL, NULL, &dnll);
	cr_expect(golden_near(l, 0.8 * LOG2 + 0.4 * LOG2 + 2.5, 1e-15, 0), "MPO: %.17g",
	          l);
	cr_expect_eq(dnll, 1.0);
	/* RPO ["sigmoid", "sft"] with [1, 0.5]: d/d nll = 0.5. */
	DpoOptions r = {.n_types = 2,
	                .beta = 0.1,
	                .types = {TRL_DPO_SIGMOID, TRL_DPO_SFT},
	                .weights = {1.0, 0.5}};
	l = dpo_loss(&r, &z.b, NULL, NULL, &dnll);
	cr_expect(golden_near(l, LOG2 + 1.25, 1e-15, 0), "RPO: %.17g", l);
	cr_expect_eq(dnll, 0.5);
}

Test(losses, wpo_weights_scale_every_term_including_sft)
{
	ZeroBatch z;
	zero_batch(&z, 2.0);
	double wc[4] = {0.5, 1.0, 2.0, 0.25}, wr[4] = {2.0, 3.0, 0.5, 4.0};
	z.b.wc = wc;
	z.b.wr = wr;
	/* w = wc wr = {1, 3, 1, 1}: mean 1.5. */
	DpoOptions o = {.n_types = 2,
	                .beta = 0.1,
	                .types = {TRL_DPO_SIGMOID, TRL_DPO_SFT},
	                .weights = {1.0, 0.5}};
	double dpc[4], dpr[4], dnll;
	double l = dpo_loss(&o, &z.b, dpc, dpr, &dnll);
	cr_expect(golden_near(l, 1.5 * LOG2 + 0.5 * 1.5 * 2.0, 1e-15, 0), "WPO: %.17g",
	          l);
	cr_expect(golden_near(dnll, 0.75, 1e-15, 0), "d/d nll = %.17g", dnll);
	cr_expect(golden_near(dpc[1], 3.0 * -0.1 * 0.5 / 4, 1e-15, 0), "dpc[1] = %.17g",
	          dpc[1]);
	cr_expect(golden_near(dpc[0], 1.0 * -0.1 * 0.5 / 4, 1e-15, 0), "dpc[0] = %.17g",
	          dpc[0]);
	cr_expect(golden_near(dpo_wpo_weight(-6.0, 3.0), exp(-2.0), 1e-15, 0));
	cr_expect(golden_near(dpo_wpo_weight(-0.5, 0.0), exp(-0.5), 1e-15, 0),
	          "a zero count is clamped at 1, as TRL does");
}

Test(losses, stable_far_from_zero)
{
	/* beta delta = -800: log(1 + e^800) overflows; the loss is 800. */
	double pc[2] = {-8000.0, -1.0}, pr[2] = {0.0, -8001.0}, zero[2] = {0.0, 0.0};
	double cnt[2] = {10.0, 10.0};
	PairBatch b = {
	    .n = 2, .pc = pc, .pr = pr, .rc = zero, .rr = zero, .nc = cnt, .nr = cnt};
	DpoOptions o = one_loss(TRL_DPO_SIGMOID, 0.1);
	double dpc[2], dpr[2];
	double l = dpo_loss(&o, &b, dpc, dpr, NULL);
	cr_expect(golden_near(l, 800.0 / 2, 1e-15, 0), "sigmoid at -800 and +800: %.17g",
	          l);
	cr_expect(golden_near(dpc[0], -0.1 / 2, 1e-15, 0) && fabs(dpc[1]) < 1e-300,
	          "%g %g", dpc[0], dpc[1]);
	/* DiscoPOP at z = -800: e^800 overflows while sigmoid(z / tau) underflows. */
	o = one_loss(TRL_DPO_DISCOPOP, 0.1);
	l = dpo_loss(&o, &b, dpc, dpr, NULL);
	cr_expect(isfinite(l) && golden_near(l, 800.0 / 2, 1e-12, 0), "discopop: %.17g",
	          l);
	cr_expect(isfinite(dpc[0]) && isfinite(dpr[0]), "%g %g", dpc[0], dpr[0]);
	/* A reward gap of 2000 and ORPO near log-prob 0. */
	double rc[1] = {-1000.0}, rr[1] = {1000.0}, drc, drr;
	cr_expect(
	    golden_near(reward_loss(1, rc, rr, NULL, 0.0, &drc, &drr), 2000.0, 1e-15, 0));
	cr_expect(golden_near(drc, -1.0, 1e-15, 0) && golden_near(drr, 1.0, 1e-15, 0));
}

Test(losses, alpha_divergence_clamps_at_80)
{
	/* a = 0.5: t = -u / 2, clamped above 80, i.e. for u < -160; pair 0 has
	 * u_c = -161, t = 80.5. */
	double pc[2] = {-191.0, -10.0}, pr[2] = {-20.0, -12.0}, rc[2] = {-30.0, -9.0},
	       rr[2] = {-21.0, -11.5}, cnt[2] = {8.0, 8.0};
	PairBatch b = {
	    .n = 2, .pc = pc, .pr = pr, .rc = rc, .rr = rr, .nc = cnt, .nr = cnt};
	DpoOptions o = one_loss(TRL_DPO_BCO_PAIR, 0.1);
	o.f_divergence = TRL_FDIV_ALPHA;
	o.f_alpha_divergence_coef = 0.5;
	double dpc[2], dpr[2];
	double l = dpo_loss(&o, &b, dpc, dpr, NULL);
	/* Pair 0's chosen score is exp(80) / -0.5, as for any u below -160. */
	double sc0 = -2.0 * exp(80.0), sr0 = -2.0 * exp(-0.5), sc1 = -2.0 * exp(0.5),
	       sr1 = -2.0 * exp(0.25);
	double bco0 = -(0.1 * sc0) + log1p(exp(0.1 * sr0));
	double want = 0.5 * (bco0 + log1p(exp(-0.1 * sc1)) + log1p(exp(0.1 * sr1)));
	cr_expect(golden_near(l, want, 1e-14, 0), "%.17g, want %.17g", l, want);
	cr_expect_eq(dpc[0], 0.0, "no gradient through the clamp: %g", dpc[0]);
	cr_expect(dpc[1] != 0.0 && dpr[0] != 0.0);
	/* Within 1e-6 of a = 1, the score is the log-ratio itself. */
	o.f_alpha_divergence_coef = 1.0 + 5e-7;
	double l1 = dpo_loss(&o, &b, NULL, NULL, NULL);
	o.f_divergence = TRL_FDIV_REVERSE_KL;
	cr_expect_eq(l1, dpo_loss(&o, &b, NULL, NULL, NULL));
}

Test(losses, aot_gradients_follow_the_sort)
{
	const double beta = 0.5, s = 1.0 / (1.0 + exp(beta)); /* sigmoid(-beta) */
	/* aot_unpaired: u_c = {2, 0} sorts as pair (1, 0); u_r = {0, 1} as (0, 1).
	 * delta = {0 - 0, 2 - 1}: rank 0 pairs chosen 1 with rejected 0, rank 1
	 * chosen 0 with rejected 1. */
	double pc[2] = {-8.0, -5.0}, rc[2] = {-10.0, -5.0}, pr[2] = {-7.0, -6.0},
	       rr[2] = {-7.0, -7.0}, cnt[2] = {4.0, 4.0};
	PairBatch b = {
	    .n = 2, .pc = pc, .pr = pr, .rc = rc, .rr = rr, .nc = cnt, .nr = cnt};
	DpoOptions o = one_loss(TRL_DPO_AOT_UNPAIRED, beta);
	double dpc[2], dpr[2];
	double l = dpo_loss(&o, &b, dpc, dpr, NULL);
	cr_expect(golden_near(l, 0.5 * (LOG2 + log1p(exp(-beta))), 1e-15, 0), "%.17g", l);
	cr_expect(golden_near(dpc[1], -beta * 0.5 / 2, 1e-15, 0), "dpc[1] = %g", dpc[1]);
	cr_expect(golden_near(dpr[0], beta * 0.5 / 2, 1e-15, 0), "dpr[0] = %g", dpr[0]);
	cr_expect(golden_near(dpc[0], -beta * s / 2, 1e-15, 0), "dpc[0] = %g", dpc[0]);
	cr_expect(golden_near(dpr[1], beta * s / 2, 1e-15, 0), "dpr[1] = %g", dpr[1]);
	/* aot: pc - pr = {-1, 1} against rc - rr = {-3, 2}, in the same order:
	 * delta = {2, -1}. */
	o = one_loss(TRL_DPO_AOT, beta);
	l = dpo_loss(&o, &b, dpc, dpr, NULL);
	double want = 0.5 * (log1p(exp(-2.0 * beta)) + log1p(exp(beta)));
	cr_expect(golden_near(l, want, 1e-15, 0), "aot: %.17g, want %.17g", l, want);
	/* rc - rr = {5, 2} orders the pairs the other way: x sorted is
	 * {-1 (pair 0), 1 (pair 1)}, y sorted {2, 5}, so delta = {-3, -4}
	 * where the unsorted pairing would give {-6, -1}. */
	rc[0] = -2.0;
	rc[1] = -5.0;
	l = dpo_loss(&o, &b, dpc, dpr, NULL);
	want = 0.5 * (log1p(exp(3.0 * beta)) + log1p(exp(4.0 * beta)));
	cr_expect(golden_near(l, want, 1e-15, 0), "aot: %.17g, want %.17g", l, want);
	double s3 = 1.0 / (1.0 + exp(-3.0 * beta)), s4 = 1.0 / (1.0 + exp(-4.0 * beta));
	cr_expect(golden_near(dpc[0], -beta * s3 / 2, 1e-14, 0), "dpc[0] = %g", dpc[0]);
	cr_expect(golden_near(dpc[1], -beta * s4 / 2, 1e-14, 0), "dpc[1] = %g", dpc[1]);
	cr_expect(golden_near(dpr[0], -dpc[0], 1e-15, 0) &&
	          golden_near(dpr[1], -dpc[1], 1e-15, 0));
}

Test(losses, kto_weights_enter_before_the_plain_mean)
{
	/* r = z0 everywhere: each loss is 1/2 before weighting. With weights 2
	 * and 1, TRL's plain mean gives (2 + 1) / 2 / 2 = 0.75, where a
	 * weight-normalised mean would give 0.5. */
	double lp[2] = {-10.0, -20.0}, ref[2] = {-10.5, -20.5};
	int label[2] = {1, 0};
	KtoOptions o = {.type = TRL_KTO_KTO,
	                .beta = 0.1,
	                .desirable_weight = 2.0,
	                .undesirable_weight = 1.0};
	double dlp[2];
	double l = kto_loss(&o, 2, lp, ref, label, 0.5, dlp);
	cr_expect(golden_near(l, 0.75, 1e-15, 0), "%.17g", l);
	cr_expect(golden_near(dlp[0], -2.0 * 0.1 * 0.25 / 2, 1e-15, 0), "dlp[0] = %g",
	          dlp[0]);
	cr_expect(golden_near(dlp[1], 1.0 * 0.1 * 0.25 / 2, 1e-15, 0), "dlp[1] = %g",
	          dlp[1]);
	/* apo_zero_unpaired ignores z0: r = 0.5 gives sigmoid(-0.05), sigmoid(0.05). */
	o.type = TRL_KTO_APO_ZERO_UNPAIRED;
	l = kto_loss(&o, 2, lp, ref, label, 7.0, NULL);
	double sg = 1.0 / (1.0 + exp(-0.05));
	cr_expect(golden_near(l, (2.0 * (1.0 - sg) + sg) / 2, 1e-15, 0), "%.17g", l);
}

Test(losses, orpo_cpo_reward_hand_values)
{
	/* ORPO with equal average log-probs: log_odds = 0, loss = nll + beta log 2. */
	double pc[2] = {-4.0, -30.0}, pr[2] = {-6.0, -15.0}, nc[2] = {2.0, 10.0},
	       nr[2] = {3.0, 5.0};
	PairBatch b = {.n = 2, .pc = pc, .pr = pr, .nc = nc, .nr = nr, .nll = 1.5};
	double dnll, lor, loc;
	double l = orpo_loss(0.2, &b, NULL, NULL, &dnll, &lor, &loc);
	cr_expect(golden_near(l, 1.5 + 0.2 * LOG2, 1e-15, 0), "orpo: %.17g", l);
	cr_expect(golden_near(lor, -LOG2, 1e-15, 0) && loc == 0.0 && dnll == 1.0);

	/* CPO simpo on equal averages: -logsigmoid(-gamma), no nll with
	 * cpo_alpha 0; rewards are beta times the averages. */
	CpoOptions c = {.type = TRL_CPO_SIMPO, .beta = 2.0, .simpo_gamma = 0.5};
	l = cpo_loss(&c, &b, NULL, NULL, &dnll);
	cr_expect(golden_near(l, log1p(exp(0.5)), 1e-15, 0), "simpo: %.17g", l);
	cr_expect_eq(dnll, 0.0);
	double rwc, rwr;
	cpo_rewards(&c, pc[0], pr[0], nc[0], nr[0], &rwc, &rwr);
	cr_expect(golden_near(rwc, -4.0, 1e-15, 0) && golden_near(rwr, -4.0, 1e-15, 0),
	          "%g %g", rwc, rwr);
	/* sigmoid works on sums: pc - pr = {2, -15}; plus cpo_alpha nll. */
	c = (CpoOptions){.type = TRL_CPO_SIGMOID, .beta = 0.1, .cpo_alpha = 1.0};
	l = cpo_loss(&c, &b, NULL, NULL, &dnll);
	cr_expect(
	    golden_near(l, 0.5 * (log1p(exp(-0.2)) + log1p(exp(1.5))) + 1.5, 1e-15, 0),
	    "cpo sigmoid: %.17g", l);
	cpo_rewards(&c, pc[1], pr[1], nc[1], nr[1], &rwc, &rwr);
	cr_expect(golden_near(rwc, -3.0, 1e-15, 0) && golden_near(rwr, -1.5, 1e-15, 0),
	          "%g %g", rwc, rwr);
	/* AlphaPO: reward (1 - p^-alpha) / alpha with p = e^x. */
	c.alpha = 0.5;
	cpo_rewards(&c, -2.0, -1.0, 1.0, 1.0, &rwc, &rwr);
	cr_expect(golden_near(rwc, 0.1 * (1.0 - exp(1.0)) / 0.5, 1e-14, 0), "%.17g", rwc);
	cr_expect(golden_near(rwr, 0.1 * (1.0 - exp(0.5)) / 0.5, 1e-14, 0), "%.17g", rwr);

	/* Reward: equal rewards give log 2; centring adds c mean((rc + rr)^2). */
	double r1[2] = {1.0, -0.5}, m[2] = {1.0, 0.0};
	double drc[2], drr[2];
	l = reward_loss(2, r1, r1, NULL, 0.01, drc, drr);
	cr_expect(golden_near(l, LOG2 + 0.01 * (4.0 + 1.0) / 2, 1e-15, 0),
	          "reward: %.17g", l);
	cr_expect(golden_near(drc[0], -0.25 + 0.01 * 2.0 * 2.0 / 2, 1e-15, 0), "%g",
	          drc[0]);
	l = reward_loss(2, r1, r1, m, 0.0, NULL, NULL);
	cr_expect(golden_near(l, 0.5 * (log1p(exp(1.0)) + LOG2), 1e-15, 0),
	          "margin: %.17g", l);
}

Test(losses, null_outputs_are_skipped)
{
	ZeroBatch z;
	zero_batch(&z, 1.0);
	z.pc[1] += 2.0;
	DpoOptions o = {.n_types = 3,
	                .beta = 0.1,
	                .types = {TRL_DPO_AOT, TRL_DPO_SIGMOID, TRL_DPO_SFT},
	                .weights = {1.0, 1.0, 1.0}};
	double dpc[4], dpr[4], dnll;
	double l = dpo_loss(&o, &z.b, dpc, dpr, &dnll);
	cr_expect_eq(dpo_loss(&o, &z.b, NULL, NULL, NULL), l);
	cr_expect_eq(dpo_loss(&o, &z.b, dpc, NULL, NULL), l);
	cr_expect_eq(dpo_loss(&o, &z.b, NULL, dpr, NULL), l);
}

/* ------------------------------------------------------ finite differences */

/* Central differences of a loss over a set of inputs, in double: with
 * h = 1e-6 (1 + |x|) the truncation error is ~h^2 and the rounding error
 * ~1e-16 |L| / h, both far below the 1e-6 tolerance; a wrong term in an
 * analytic gradient is off by order 1e-2 or more of the gradient's scale. */
#define FDD_TOL 1e-6
#define FDD_FLOOR 1e-3

typedef double (*LossFn)(void *ctx);

static double fd_at(double *x, LossFn f, void *ctx)
{
	double x0 = *x, h = 1e-6 * (1.0 + fabs(x0));
	*x = x0 + h;
	double lp = f(ctx);
	*x = x0 - h;
	double lm = f(ctx);
	*x = x0;
	return (lp - lm) / (2.0 * h);
}

/* The numeric gradient of f over the m inputs at ptrs[] against ana[]:
 * max |a - n| / max(max |n|, FDD_FLOOR). */
static double fd_error(double *const *ptrs, const double *ana, int m, LossFn f, void *ctx,
                       int *worst)
{
	double maxn = 0.0, maxd = 0.0;
	*worst = 0;
	for (int i = 0; i < m; i++) {
		double g = fd_at(ptrs[i], f, ctx);
		double d = fabs(ana[i] - g);
		if (!(d <= maxd)) {
			maxd = d;
			*worst = i;
		}
		if (fabs(g) > maxn)
			maxn = fabs(g);
	}
	return isnan(maxd) ? INFINITY : maxd / fmax(maxn, FDD_FLOOR);
}

enum { FD_N = 6 };

typedef struct FdPairs {
	double pc[FD_N], pr[FD_N], rc[FD_N], rr[FD_N], nc[FD_N], nr[FD_N];
	double wc[FD_N], wr[FD_N];
	PairBatch b;
	DpoOptions dpo;
	CpoOptions cpo;
	double orpo_beta;
} FdPairs;

/* Random pairs with log-ratios in (-2, 2) and average log-probs in
 * (-3, -0.05), away from every kink. */
static void fd_pairs(FdPairs *p, Rng *r, int weighted)
{
	for (int i = 0; i < FD_N; i++) {
		p->nc[i] = 2.0 + (double)rng_below(r, 40);
		p->nr[i] = 2.0 + (double)rng_below(r, 40);
		p->pc[i] = -p->nc[i] * (0.05 + 2.95 * rng_uniform(r));
		p->pr[i] = -p->nr[i] * (0.05 + 2.95 * rng_uniform(r));
		p->rc[i] = p->pc[i] - (4.0 * rng_uniform(r) - 2.0);
		p->rr[i] = p->pr[i] - (4.0 * rng_uniform(r) - 2.0);
		p->wc[i] = 0.2 + rng_uniform(r);
		p->wr[i] = 0.2 + rng_uniform(r);
	}
	p->b = (PairBatch){.n = FD_N,
	                   .pc = p->pc,
	                   .pr = p->pr,
	                   .rc = p->rc,
	                   .rr = p->rr,
	                   .nc = p->nc,
	                   .nr = p->nr,
	                   .nll = 1.0 + rng_uniform(r)};
	if (weighted) {
		p->b.wc = p->wc;
		p->b.wr = p->wr;
	}
}

/* The inputs that get gradients: pc, pr, then nll. */
static int fd_inputs(FdPairs *p, double **ptrs)
{
	int m = 0;
	for (int i = 0; i < FD_N; i++)
		ptrs[m++] = &p->pc[i];
	for (int i = 0; i < FD_N; i++)
		ptrs[m++] = &p->pr[i];
	ptrs[m++] = &p->b.nll;
	return m;
}

static double fd_dpo(void *ctx)
{
	FdPairs *p = ctx;
	return dpo_loss(&p->dpo, &p->b, NULL, NULL, NULL);
}

Test(losses, dpo_gradients_match_finite_differences)
{
	static const struct {
		TrlFDivergence f;
		double a;
	} fdivs[] = {{TRL_FDIV_REVERSE_KL, 0.5}, {TRL_FDIV_FORWARD_KL, 0.5},
	             {TRL_FDIV_JS, 0.5},         {TRL_FDIV_ALPHA, 0.5},
	             {TRL_FDIV_ALPHA, 1.0},      {TRL_FDIV_ALPHA, 1.7}};
	Rng r;
	rng_seed(&r, 42);
	for (size_t f = 0; f < sizeof fdivs / sizeof fdivs[0]; f++)
		for (int t = 0; t < TRL_DPO_LOSS_COUNT; t++)
			for (int weighted = 0; weighted < 2; weighted++) {
				int aot = t == TRL_DPO_AOT || t == TRL_DPO_AOT_UNPAIRED;
				if (weighted && aot)
					continue;
				FdPairs p;
				fd_pairs(&p, &r, weighted);
				p.dpo =
				    one_loss((TrlDpoLoss)t, 0.1 + 0.5 * rng_uniform(&r));
				p.dpo.label_smoothing =
				    t == TRL_DPO_EXO_PAIR ? 1e-3 : 0.15;
				p.dpo.discopop_tau = 0.3;
				p.dpo.f_divergence = fdivs[f].f;
				p.dpo.f_alpha_divergence_coef = fdivs[f].a;
				double ana[2 * FD_N + 1], *ptrs[2 * FD_N + 1];
				dpo_loss(&p.dpo, &p.b, ana, ana + FD_N, ana + 2 * FD_N);
				int m = fd_inputs(&p, ptrs), worst;
				double err = fd_error(ptrs, ana, m, fd_dpo, &p, &worst);
				cr_expect(err <= FDD_TOL,
				          "%s, f-divergence %d (a = %g)%s: FD error %.3g "
				          "at input %d",
				          dpo_loss_name((TrlDpoLoss)t), (int)fdivs[f].f,
				          fdivs[f].a, weighted ? ", WPO" : "", err,
				          worst);
			}
	/* A list with every loss type but one (the limit is 8 per list), twice. */
	for (int start = 0; start < 2; start++) {
		FdPairs p;
		fd_pairs(&p, &r, 0);
		p.dpo = (DpoOptions){.n_types = 0,
		                     .beta = 0.2,
		                     .label_smoothing = 0.05,
		                     .discopop_tau = 0.1,
		                     .f_divergence = TRL_FDIV_JS};
		for (int t = start; t < TRL_DPO_LOSS_COUNT; t += 2) {
			p.dpo.types[p.dpo.n_types] = (TrlDpoLoss)t;
			p.dpo.weights[p.dpo.n_types++] = 0.3 + rng_uniform(&r);
		}
		double ana[2 * FD_N + 1], *ptrs[2 * FD_N + 1];
		dpo_loss(&p.dpo, &p.b, ana, ana + FD_N, ana + 2 * FD_N);
		int m = fd_inputs(&p, ptrs), worst;
		double err = fd_error(ptrs, ana, m, fd_dpo, &p, &worst);
		cr_expect(err <= FDD_TOL, "list from %d: FD error %.3g at input %d",
		          start, err, worst);
	}
}

typedef struct FdKto {
	KtoOptions o;
	double lp[FD_N], ref[FD_N], z0;
	int label[FD_N];
} FdKto;

static double fd_kto(void *ctx)
{
	FdKto *k = ctx;
	return kto_loss(&k->o, FD_N, k->lp, k->ref, k->label, k->z0, NULL);
}

Test(losses, kto_gradients_match_finite_differences)
{
	Rng r;
	rng_seed(&r, 7);
	for (int type = 0; type < 2; type++) {
		FdKto k = {.o = {.type = (TrlKtoLoss)type,
		                 .beta = 0.4,
		                 .desirable_weight = 1.3,
		                 .undesirable_weight = 0.7},
		           .z0 = 0.8};
		for (int i = 0; i < FD_N; i++) {
			k.lp[i] = -100.0 * rng_uniform(&r);
			k.ref[i] = k.lp[i] - (6.0 * rng_uniform(&r) - 3.0);
			k.label[i] = i % 3 != 0;
		}
		double ana[FD_N], *ptrs[FD_N];
		kto_loss(&k.o, FD_N, k.lp, k.ref, k.label, k.z0, ana);
		for (int i = 0; i < FD_N; i++)
			ptrs[i] = &k.lp[i];
		int worst;
		double err = fd_error(ptrs, ana, FD_N, fd_kto, &k, &worst);
		cr_expect(err <= FDD_TOL, "kto type %d: FD error %.3g at %d", type, err,
		          worst);
	}
}

static double fd_bco(void *ctx)
{
	FdKto *k = ctx;
	return bco_loss(k->o.beta, FD_N, k->lp, k->ref, k->label, k->z0, NULL);
}

/* BCO's delta (z0 here) is a running statistic: no gradient flows into it. */
Test(losses, bco_gradients_match_finite_differences)
{
	Rng r;
	rng_seed(&r, 8);
	FdKto k = {.o = {.beta = 0.3}, .z0 = -0.4};
	for (int i = 0; i < FD_N; i++) {
		k.lp[i] = -80.0 * rng_uniform(&r);
		k.ref[i] = k.lp[i] - (8.0 * rng_uniform(&r) - 4.0);
		k.label[i] = i % 2;
	}
	double ana[FD_N], *ptrs[FD_N];
	bco_loss(k.o.beta, FD_N, k.lp, k.ref, k.label, k.z0, ana);
	for (int i = 0; i < FD_N; i++)
		ptrs[i] = &k.lp[i];
	int worst;
	double err = fd_error(ptrs, ana, FD_N, fd_bco, &k, &worst);
	cr_expect(err <= FDD_TOL, "bco: FD error %.3g at %d", err, worst);
	/* At r = delta every example costs log 2. */
	double lp[2] = {-3.0, -5.0}, ref[2] = {-3.0, -5.0};
	int lab[2] = {1, 0};
	cr_expect(fabs(bco_loss(0.1, 2, lp, ref, lab, 0.0, NULL) - log(2.0)) < 1e-15);
}

static double fd_orpo(void *ctx)
{
	FdPairs *p = ctx;
	return orpo_loss(p->orpo_beta, &p->b, NULL, NULL, NULL, NULL, NULL);
}

static double fd_cpo(void *ctx)
{
	FdPairs *p = ctx;
	return cpo_loss(&p->cpo, &p->b, NULL, NULL, NULL);
}

Test(losses, orpo_cpo_gradients_match_finite_differences)
{
	Rng r;
	rng_seed(&r, 11);
	FdPairs p;
	fd_pairs(&p, &r, 0);
	p.b.rc = p.b.rr = NULL;
	p.orpo_beta = 0.3;
	double ana[2 * FD_N + 1], *ptrs[2 * FD_N + 1];
	orpo_loss(p.orpo_beta, &p.b, ana, ana + FD_N, ana + 2 * FD_N, NULL, NULL);
	int m = fd_inputs(&p, ptrs), worst;
	double err = fd_error(ptrs, ana, m, fd_orpo, &p, &worst);
	cr_expect(err <= FDD_TOL, "orpo: FD error %.3g at %d", err, worst);

	for (int t = 0; t < 4; t++)
		for (int alphapo = 0; alphapo < 2; alphapo++) {
			fd_pairs(&p, &r, 0);
			p.b.rc = p.b.rr = NULL;
			int avg = t == TRL_CPO_IPO || t == TRL_CPO_SIMPO;
			/* Sums of a few tokens, so that AlphaPO's e^(-alpha x) stays
			 * moderate on the summed forms. */
			for (int i = 0; !avg && i < FD_N; i++) {
				p.pc[i] = -0.5 - 6.0 * rng_uniform(&r);
				p.pr[i] = -0.5 - 6.0 * rng_uniform(&r);
			}
			p.cpo = (CpoOptions){.type = (TrlCpoLoss)t,
			                     .beta = avg ? 1.5 : 0.3,
			                     .label_smoothing = 0.1,
			                     .cpo_alpha = 0.7,
			                     .simpo_gamma = 0.4,
			                     .alpha = alphapo ? 0.3 : 0.0};
			cpo_loss(&p.cpo, &p.b, ana, ana + FD_N, ana + 2 * FD_N);
			m = fd_inputs(&p, ptrs);
			err = fd_error(ptrs, ana, m, fd_cpo, &p, &worst);
			cr_expect(err <= FDD_TOL,
			          "cpo type %d alpha %g: FD error %.3g at %d", t,
			          p.cpo.alpha, err, worst);
		}
}

typedef struct FdReward {
	double rc[FD_N], rr[FD_N], m[FD_N], coef;
} FdReward;

static double fd_reward(void *ctx)
{
	FdReward *w = ctx;
	return reward_loss(FD_N, w->rc, w->rr, w->m, w->coef, NULL, NULL);
}

Test(losses, reward_gradients_match_finite_differences)
{
	Rng r;
	rng_seed(&r, 3);
	FdReward w = {.coef = 0.02};
	for (int i = 0; i < FD_N; i++) {
		w.rc[i] = 3.0 * rng_normal(&r);
		w.rr[i] = 3.0 * rng_normal(&r);
		w.m[i] = rng_uniform(&r);
	}
	double ana[2 * FD_N], *ptrs[2 * FD_N];
	reward_loss(FD_N, w.rc, w.rr, w.m, w.coef, ana, ana + FD_N);
	for (int i = 0; i < FD_N; i++) {
		ptrs[i] = &w.rc[i];
		ptrs[FD_N + i] = &w.rr[i];
	}
	int worst;
	double err = fd_error(ptrs, ana, 2 * FD_N, fd_reward, &w, &worst);
	cr_expect(err <= FDD_TOL, "reward: FD error %.3g at %d", err, worst);
}
