/* rl_losses.c - TRL's GRPO, RLOO and PPO advantages and losses with analytic gradients.
 */
#include "rl_losses.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- option names ---------------------------------------------------------------- */

static int lookup(const char *s, const char *const *names, int count)
{
	if (!s)
		return -1;
	for (int i = 0; i < count; i++)
		if (strcmp(s, names[i]) == 0)
			return i;
	return -1;
}

int rl_scale_rewards_parse(const char *s)
{
	static const char *const names[] = {"group", "batch", "none"};
	if (s && strcmp(s, "true") == 0)
		return TRL_SCALE_GROUP;
	if (s && strcmp(s, "false") == 0)
		return TRL_SCALE_NONE;
	return lookup(s, names, 3);
}

int rl_grpo_loss_parse(const char *s)
{
	static const char *const names[] = {"grpo", "bnpo", "dr_grpo", "dapo"};
	return lookup(s, names, 4);
}

int rl_is_mode_parse(const char *s)
{
	static const char *const names[] = {"token_truncate", "token_mask",
	                                    "sequence_truncate", "sequence_mask"};
	return lookup(s, names, 4);
}

/* ---- rewards and advantages ------------------------------------------------------ */

void rl_combine_rewards(const double *r, const double *w, int n, int F, double *out)
{
	for (int i = 0; i < n; i++) {
		double s = 0.0;
		int scored = 0;
		for (int k = 0; k < F; k++) {
			double x = r[(size_t)i * F + k];
			if (isnan(x))
				continue;
			s += w[k] * x;
			scored = 1;
		}
		out[i] = scored ? s : NAN;
	}
}

/* nanmean and TRL's nanstd (Bessel-corrected; NaN with fewer than two
 * values) of x[0..n) with stride 1. */
static double nan_mean(const double *x, int n, int *count)
{
	double s = 0.0;
	int c = 0;
	for (int i = 0; i < n; i++)
		if (!isnan(x[i])) {
			s += x[i];
			c++;
		}
	if (count)
		*count = c;
	return c ? s / c : NAN;
}

static double nan_std(const double *x, int n)
{
	int c;
	double mean = nan_mean(x, n, &c);
	if (c < 2)
		return NAN;
	double s = 0.0;
	for (int i = 0; i < n; i++)
		if (!isnan(x[i]))
			s += (x[i] - mean) * (x[i] - mean);
	return sqrt(s / c * ((double)c / (c - 1)));
}

void grpo_advantages(const double *r, int n, int G, TrlScaleRewards scale, double *adv,
                     double *group_std)
{
	double batch_std = n > 1 ? nan_std(r, n) : 0.0;
	for (int g = 0; g < n / G; g++) {
		const double *rg = r + (size_t)g * G;
		double mean = nan_mean(rg, G, NULL);
		double std =
		    scale == TRL_SCALE_BATCH ? batch_std : (G > 1 ? nan_std(rg, G) : 0.0);
		for (int j = 0; j < G; j++) {
			size_t i = (size_t)g * G + j;
			double a = r[i] - mean;
			if (scale != TRL_SCALE_NONE)
				a /= std + 1e-4;
			adv[i] = isnan(a) ? 0.0 : a;
			if (group_std)
				group_std[i] = std;
		}
	}
}

void rloo_advantages(const double *r, int n, int G, int normalize, double *adv)
{
	for (int g = 0; g < n / G; g++) {
		const double *rg = r + (size_t)g * G;
		int count;
		double mean = nan_mean(rg, G, &count);
		double sum = count ? mean * count : 0.0;
		for (int j = 0; j < G; j++) {
			size_t i = (size_t)g * G + j;
			if (G == 1)
				adv[i] = 0.0;
			else if (isnan(r[i]) || count < 2)
				adv[i] = NAN;
			else
				adv[i] = r[i] - (sum - r[i]) / (count - 1);
		}
	}
	if (normalize) {
		double mean = nan_mean(adv, n, NULL), std = nan_std(adv, n);
		for (int i = 0; i < n; i++)
			adv[i] = (adv[i] - mean) / (std + 1e-4);
	}
	for (int i = 0; i < n; i++)
		if (isnan(adv[i]))
			adv[i] = 0.0;
}

/* ---- the clipped surrogate -------------------------------------------------------- */

/* -min(c1 A, clip(rho, lo, hi) A) with c1 = min(rho, delta) when delta > 0,
 * and its derivative in rho. torch.minimum splits the gradient evenly on a
 * tie (rho inside [lo, hi], where both terms agree); torch.clamp passes it at
 * the bounds. *c1_out gets c1, the ratio TRL's clip statistics look at. */
static double surrogate(double rho, double A, double lo, double hi, double delta,
                        double *dpol, double *c1_out)
{
	double c1 = rho, dc1 = 1.0;
	if (delta > 0.0 && rho > delta) {
		c1 = delta;
		dc1 = 0.0;
	}
	double c2 = rho < lo ? lo : (rho > hi ? hi : rho);
	double dc2 = (rho >= lo && rho <= hi) ? 1.0 : 0.0;
	double t1 = c1 * A, t2 = c2 * A;
	*c1_out = c1;
	if (t1 < t2) {
		*dpol = -A * dc1;
		return -t1;
	}
	if (t2 < t1) {
		*dpol = -A * dc2;
		return -t2;
	}
	*dpol = -0.5 * A * (dc1 + dc2);
	return -t1;
}

double rl_kl_k1(double lp, double ref)
{
	return lp - ref;
}

double rl_kl_k3(double lp, double ref)
{
	double logr = ref - lp;
	return (exp(logr) - 1.0) - logr;
}

/* ---- GRPO ---------------------------------------------------------------------------
 */

double grpo_loss(const GrpoOptions *o, int n, int T, const float *lp, const float *old_lp,
                 const float *ref_lp, const float *w, const float *mask,
                 const double *adv, double ga, double norm, float *dlp, GrpoStats *st)
{
	double lo = 1.0 - o->epsilon_low, hi = 1.0 + o->epsilon_high;
	double msum = 0.0;
	for (size_t k = 0; k < (size_t)n * T; k++)
		msum += mask[k];

	GrpoStats s = {.low_min = INFINITY, .high_max = -INFINITY};
	s.tokens = msum;
	s.clip_count = o->sequence_level ? n : msum;
	double loss = 0.0;
	for (int i = 0; i < n; i++) {
		const size_t row = (size_t)i * T;
		const double A = adv[i];
		double mi = 0.0;
		for (int t = 0; t < T; t++)
			mi += mask[row + t];
		double mi1 = mi > 1.0 ? mi : 1.0;

		/* c: d loss / d (l_t m_t) for this row, per loss_type. */
		double c;
		switch (o->loss_type) {
		case TRL_GRPO_GRPO:
			c = 1.0 / (mi1 * n * ga);
			break;
		case TRL_GRPO_BNPO:
			c = 1.0 / ((msum > 1.0 ? msum : 1.0) * ga);
			break;
		case TRL_GRPO_DR_GRPO:
			c = 1.0 / ((double)n * o->max_completion_length * ga);
			break;
		default:
			c = 1.0 / norm;
			break;
		}

		/* Sequence level: one ratio for the row from the mean log-ratio
		 * (1 without old_lp, whose gradient still reaches every token). */
		double seq_pol = 0.0, seq_dpol = 0.0, seq_rho = 1.0, seq_c1 = 1.0,
		       wsum = 0.0;
		if (o->sequence_level) {
			double sum = 0.0;
			for (int t = 0; t < T; t++) {
				double m = mask[row + t];
				if (m != 0.0 && old_lp)
					sum +=
					    ((double)lp[row + t] - old_lp[row + t]) * m;
			}
			seq_rho = exp(sum / mi1);
			seq_pol =
			    surrogate(seq_rho, A, lo, hi, o->delta, &seq_dpol, &seq_c1);
		}

		double low = 0.0, high = 0.0;
		for (int t = 0; t < T; t++) {
			const size_t k = row + t;
			double m = mask[k];
			if (m == 0.0) {
				if (dlp)
					dlp[k] = 0.0f;
				continue;
			}
			double wt = w ? w[k] : 1.0;
			double pol, dpol, c1, g = 0.0;
			if (o->sequence_level) {
				pol = seq_pol;
				wsum += c * m * wt;
			} else {
				double rho =
				    old_lp ? exp((double)lp[k] - old_lp[k]) : 1.0;
				pol = surrogate(rho, A, lo, hi, o->delta, &dpol, &c1);
				g = wt * dpol * rho;
				int lc = (c1 < lo) && (A < 0.0);
				int hc = (c1 > hi) && (A > 0.0);
				low += m * lc;
				high += m * hc;
				s.region_clipped += m * (lc || hc);
			}
			double l = wt * pol;
			if (o->beta > 0.0) {
				double logr = (double)ref_lp[k] - lp[k];
				double kl = exp(logr) - logr - 1.0;
				l += o->beta * kl;
				g += o->beta * (1.0 - exp(logr));
				s.kl += m * kl;
			}
			loss += c * m * l;
			if (dlp)
				dlp[k] = (float)(c * m * g);
		}

		if (o->sequence_level) {
			/* d loss / d lp_t = (sum_u c m_u w_u) dpol/drho rho m_t / max(M,
			 * 1). */
			double gs = wsum * seq_dpol * seq_rho / mi1;
			if (dlp)
				for (int t = 0; t < T; t++)
					if (mask[row + t] != 0.0)
						dlp[row + t] +=
						    (float)(gs * mask[row + t]);
			int lc = (seq_c1 < lo) && (A < 0.0);
			int hc = (seq_c1 > hi) && (A > 0.0);
			s.low_clipped += lc;
			s.high_clipped += hc;
			s.region_clipped += lc || hc;
			s.low_min = fmin(s.low_min, lc);
			s.high_max = fmax(s.high_max, hc);
		} else {
			s.low_clipped += low;
			s.high_clipped += high;
			if (mi != 0.0) {
				s.low_min = fmin(s.low_min, low / mi);
				s.high_max = fmax(s.high_max, high / mi);
			}
		}
	}
	if (st)
		*st = s;
	return loss;
}

/* ---- importance sampling ---------------------------------------------------------- */

/* The ratio after truncation or masking to [cmin, cmax]; cmin <= 0 is no
 * lower bound. */
static double is_apply(int truncate, double r, double cmin, double cmax)
{
	if (truncate) {
		if (cmin > 0.0 && r < cmin)
			r = cmin;
		return r > cmax ? cmax : r;
	}
	return ((cmin > 0.0 && r < cmin) || r > cmax) ? 0.0 : r;
}

void is_correction(TrlIsMode mode, double cmin, double cmax, int n, int T,
                   const float *old_lp, const float *samp_lp, const float *mask, float *w,
                   IsStats *st)
{
	int seq = mode == TRL_IS_SEQUENCE_TRUNCATE || mode == TRL_IS_SEQUENCE_MASK;
	int truncate = mode == TRL_IS_TOKEN_TRUNCATE || mode == TRL_IS_SEQUENCE_TRUNCATE;
	IsStats s = {.ratio_min = INFINITY, .ratio_max = -INFINITY};
	for (int i = 0; i < n; i++) {
		const size_t row = (size_t)i * T;
		double sum = 0.0;
		for (int t = 0; t < T; t++) {
			double m = mask[row + t];
			if (m == 0.0)
				continue;
			double d = (double)old_lp[row + t] - samp_lp[row + t];
			s.tokens += 1.0;
			s.logp_diff_sum += fabs(d);
			s.logp_diff_max = fmax(s.logp_diff_max, fabs(d));
			sum += d * m;
		}
		double rseq = is_apply(truncate, exp(sum), cmin, cmax);
		for (int t = 0; t < T; t++) {
			const size_t k = row + t;
			double m = mask[k];
			if (m == 0.0) {
				w[k] = 0.0f;
				continue;
			}
			double r = rseq;
			if (!seq) {
				double d = ((double)old_lp[k] - samp_lp[k]) * m;
				r = is_apply(truncate, exp(d), cmin, cmax);
				s.ratio_min = fmin(s.ratio_min, r);
				s.ratio_max = fmax(s.ratio_max, r);
				s.ratio_sum += r;
				s.ratio_count += 1.0;
			}
			w[k] = (float)r;
		}
		if (seq) {
			s.ratio_min = fmin(s.ratio_min, rseq);
			s.ratio_max = fmax(s.ratio_max, rseq);
			s.ratio_sum += rseq;
			s.ratio_count += 1.0;
		}
	}
	if (s.ratio_count == 0.0)
		s.ratio_min = s.ratio_max = 0.0;
	if (st)
		*st = s;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

double rl_quantile(double *v, size_t n, double q)
{
	qsort(v, n, sizeof *v, cmp_double);
	double rank = q * (double)(n - 1);
	size_t below = (size_t)rank;
	size_t above = (size_t)ceil(rank);
	if (above >= n)
		above = n - 1;
	double wt = rank - (double)below, a = v[below], b = v[above];
	/* torch.lerp's two-sided form, for its rounding. */
	return fabs(wt) < 0.5 ? a + wt * (b - a) : b - (b - a) * (1.0 - wt);
}

/* ---- RLOO ---------------------------------------------------------------------------
 */

double rloo_loss(double epsilon_low, double epsilon_high, int n, int T, const float *lp,
                 const float *old_lp, const float *mask, const double *adv, double ga,
                 float *dlp, RlooStats *st)
{
	double lo = 1.0 - epsilon_low, hi = 1.0 + epsilon_high;
	RlooStats s = {.seqs = n};
	double loss = 0.0;
	for (int i = 0; i < n; i++) {
		const size_t row = (size_t)i * T;
		/* TRL sums each side's log-probs first, then subtracts. */
		double new_sum = 0.0, old_sum = 0.0;
		for (int t = 0; t < T; t++) {
			double m = mask[row + t];
			if (m == 0.0)
				continue;
			new_sum += lp[row + t] * m;
			old_sum += old_lp[row + t] * m;
		}
		double rho = exp(new_sum - old_sum), dpol, c1;
		loss += surrogate(rho, adv[i], lo, hi, 0.0, &dpol, &c1) / (n * ga);
		int lc = (rho < lo) && (adv[i] < 0.0);
		int hc = (rho > hi) && (adv[i] > 0.0);
		s.low_clipped += lc;
		s.high_clipped += hc;
		s.region_clipped += lc || hc;
		if (dlp)
			for (int t = 0; t < T; t++)
				dlp[row + t] =
				    (float)(dpol * rho * mask[row + t] / (n * ga));
	}
	if (st)
		*st = s;
	return loss;
}

/* ---- PPO ------------------------------------------------------------------------------
 */

void ppo_gae(int n, int T, const float *rewards, const float *values, const float *mask,
             double gamma, double lam, float *adv, float *ret)
{
	for (int i = 0; i < n; i++) {
		const size_t row = (size_t)i * T;
		double next_v = 0.0, last = 0.0;
		for (int t = T - 1; t >= 0; t--) {
			const size_t k = row + t;
			int on = mask[k] != 0.0;
			double r = on ? rewards[k] : 0.0, v = on ? values[k] : 0.0;
			double delta = r + gamma * next_v - v;
			last = delta + gamma * lam * last;
			adv[k] = (float)last;
			ret[k] = (float)(last + v);
			next_v = v;
		}
	}
}

void rl_masked_whiten(float *x, const float *mask, size_t N, int shift_mean)
{
	double msum = 0.0, s = 0.0;
	for (size_t k = 0; k < N; k++) {
		if (mask[k] == 0.0)
			continue;
		msum += mask[k];
		s += (double)x[k] * mask[k];
	}
	double mean = s / msum, ss = 0.0;
	for (size_t k = 0; k < N; k++)
		if (mask[k] != 0.0)
			ss += ((double)x[k] - mean) * ((double)x[k] - mean) * mask[k];
	double var = ss / msum * (msum / (msum - 1.0));
	double inv = 1.0 / sqrt(var + 1e-8);
	for (size_t k = 0; k < N; k++) {
		if (mask[k] == 0.0) {
			x[k] = 0.0f;
			continue;
		}
		double y = ((double)x[k] - mean) * inv;
		x[k] = (float)(shift_mean ? y : y + mean);
	}
}

double ppo_policy_loss(double cliprange, int n, int T, const float *lp,
                       const float *old_lp, const float *adv, const float *mask,
                       double scale, float *dlp, PpoPolicyStats *st)
{
	const size_t N = (size_t)n * T;
	double lo = 1.0 - cliprange, hi = 1.0 + cliprange;
	double msum = 0.0;
	for (size_t k = 0; k < N; k++)
		msum += mask[k];
	double loss = 0.0, clipped = 0.0, sq = 0.0, ratio_sum = 0.0;
	for (size_t k = 0; k < N; k++) {
		double m = mask[k];
		if (m == 0.0) {
			if (dlp)
				dlp[k] = 0.0f;
			ratio_sum += 1.0;
			continue;
		}
		double d = (double)lp[k] - old_lp[k], rho = exp(d), A = adv[k];
		double rc = rho < lo ? lo : (rho > hi ? hi : rho);
		double in = (rho >= lo && rho <= hi) ? 1.0 : 0.0;
		double a = -A * rho, b = -A * rc, val, g;
		/* torch.maximum: the larger term's gradient, half of each on a tie. */
		if (a > b) {
			val = a;
			g = -A;
		} else if (b > a) {
			val = b;
			g = -A * in;
		} else {
			val = a;
			g = -0.5 * A * (1.0 + in);
		}
		loss += m * val;
		clipped += m * (b > a);
		sq += d * d;
		ratio_sum += rho;
		if (dlp)
			dlp[k] = msum > 0.0 ? (float)(scale * m * g * rho / msum) : 0.0f;
	}
	if (st) {
		st->clipfrac = msum > 0.0 ? clipped / msum : 0.0;
		st->approxkl = 0.5 * sq / (double)N;
		st->ratio_mean = ratio_sum / (double)N;
	}
	return msum > 0.0 ? loss / msum : 0.0;
}

double ppo_value_loss(double cliprange_value, int n, int T, const float *v,
                      const float *old_v, const float *ret, const float *mask,
                      double scale, float *dv, double *clipfrac)
{
	const size_t N = (size_t)n * T;
	double msum = 0.0;
	for (size_t k = 0; k < N; k++)
		msum += mask[k];
	double loss = 0.0, clipped = 0.0;
	for (size_t k = 0; k < N; k++) {
		double m = mask[k];
		if (m == 0.0) {
			if (dv)
				dv[k] = 0.0f;
			continue;
		}
		double x = v[k], R = ret[k];
		double lo = (double)old_v[k] - cliprange_value,
		       hi = (double)old_v[k] + cliprange_value;
		double xc = x < lo ? lo : (x > hi ? hi : x);
		double in = (x >= lo && x <= hi) ? 1.0 : 0.0;
		double l1 = (x - R) * (x - R), l2 = (xc - R) * (xc - R), val, g;
		if (l1 > l2) {
			val = l1;
			g = 2.0 * (x - R);
		} else if (l2 > l1) {
			val = l2;
			g = 2.0 * (xc - R) * in;
		} else {
			val = l1;
			g = (x - R) + (xc - R) * in;
		}
		loss += m * val;
		clipped += m * (l2 > l1);
		if (dv)
			dv[k] = msum > 0.0 ? (float)(scale * 0.5 * m * g / msum) : 0.0f;
	}
	if (clipfrac)
		*clipfrac = msum > 0.0 ? clipped / msum : 0.0;
	return msum > 0.0 ? 0.5 * loss / msum : 0.0;
}
