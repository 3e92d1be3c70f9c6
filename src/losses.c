/* losses.c - TRL's preference and reward losses with analytic gradients. */
#include "losses.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* TRL's loss_type strings, indexed by TrlDpoLoss. */
static const char *const dpo_names[TRL_DPO_LOSS_COUNT] = {
    "sigmoid",  "hinge",    "ipo",       "exo_pair", "nca_pair",
    "robust",   "bco_pair", "sppo_hard", "aot",      "aot_unpaired",
    "apo_zero", "apo_down", "discopop",  "sft",      "sigmoid_norm"};

const char *dpo_loss_name(TrlDpoLoss t)
{
	if ((int)t < 0 || t >= TRL_DPO_LOSS_COUNT)
		return NULL;
	return dpo_names[t];
}

int dpo_loss_parse(const char *s)
{
	if (!s)
		return -1;
	for (int i = 0; i < TRL_DPO_LOSS_COUNT; i++)
		if (strcmp(s, dpo_names[i]) == 0)
			return i;
	return -1;
}

/* sigmoid(x) = 1 / (1 + e^-x), evaluated so that the exponential never
 * overflows: for x < 0 it is e^x / (1 + e^x). */
static double sigmoid(double x)
{
	if (x >= 0.0)
		return 1.0 / (1.0 + exp(-x));
	double e = exp(x);
	return e / (1.0 + e);
}

/* logsigmoid(x) = -log(1 + e^-x) = min(x, 0) - log1p(e^-|x|). This form is
 * exact to rounding for every finite x, where log(sigmoid(x)) underflows to
 * -inf below x = -745 and log(1 + e^-x) overflows. */
static double log_sigmoid(double x)
{
	return (x < 0.0 ? x : 0.0) - log1p(exp(-fabs(x)));
}

/* sigmoid'(x) = sigmoid(x) * sigmoid(-x). */
static double sigmoid_grad(double x)
{
	return sigmoid(x) * sigmoid(-x);
}

/* log(1 - e^x) for x <= 0. Above -ln 2, 1 - e^x is computed as -expm1(x)
 * without cancellation; below it log1p(-e^x) is the accurate form. */
static double log1mexp(double x)
{
	if (x < -0.6931471805599453)
		return log1p(-exp(x));
	return log(-expm1(x));
}

/* The f-divergence score of a log-ratio u = lp - ref_lp, and d score / d u
 * in *deriv. reverse_kl: u. forward_kl: -e^-u. js_divergence: logsigmoid(u).
 * alpha_divergence with coefficient a: e^t / (a - 1) with t = (a - 1) u, where
 * TRL clamps t at 80 so that e^t stays finite in float32 (the clamped branch
 * has zero gradient); within 1e-6 of a = 1 the limit is reverse_kl. */
static double fdiv_score(const DpoOptions *o, double u, double *deriv)
{
	switch (o->f_divergence) {
	case TRL_FDIV_FORWARD_KL: {
		double e = exp(-u);
		*deriv = e;
		return -e;
	}
	case TRL_FDIV_JS:
		*deriv = sigmoid(-u);
		return log_sigmoid(u);
	case TRL_FDIV_ALPHA: {
		double am1 = o->f_alpha_divergence_coef - 1.0;
		if (fabs(am1) < 1e-6)
			break;
		double t = am1 * u;
		if (t > 80.0) {
			*deriv = 0.0;
			return exp(80.0) / am1;
		}
		double e = exp(t);
		*deriv = e;
		return e / am1;
	}
	case TRL_FDIV_REVERSE_KL:
		break;
	}
	*deriv = 1.0;
	return u;
}

/* The smoothed logistic loss of AOT and of CPO's sigmoid form,
 * -(1 - ls) logsigmoid(z) - ls logsigmoid(-z), and its derivative in z. */
static double smoothed_logistic(double z, double ls, double *dz)
{
	*dz = -(1.0 - ls) * sigmoid(-z) + ls * sigmoid(z);
	return -(1.0 - ls) * log_sigmoid(z) - ls * log_sigmoid(-z);
}

/* What a pair's loss depends on, chosen (c) and rejected (r) side. */
typedef struct PairTerm {
	double sc, sr; /* f-divergence scores */
	double uc, ur; /* log-ratios lp - ref_lp */
	double nc, nr; /* token counts, clamped at 1 as TRL does */
} PairTerm;

/* One pair's per-sequence loss for every loss type that is a function of the
 * pair alone (all but aot, aot_unpaired and sft). Writes the partial
 * derivatives in the scores (dsc, dsr) and in the raw log-ratios (duc, dur),
 * which apo_zero and apo_down use whatever the f-divergence. */
static double pair_loss(const DpoOptions *o, TrlDpoLoss t, const PairTerm *p, double *dsc,
                        double *dsr, double *duc, double *dur)
{
	const double beta = o->beta, ls = o->label_smoothing;
	const double delta = p->sc - p->sr;
	const double z = beta * delta;
	double g, loss;
	*dsc = *dsr = *duc = *dur = 0.0;
	switch (t) {
	case TRL_DPO_SIGMOID:
		/* -logsigmoid(beta delta), delta = score_c - score_r. */
		g = -beta * sigmoid(-z);
		*dsc = g;
		*dsr = -g;
		return -log_sigmoid(z);
	case TRL_DPO_HINGE:
		/* relu(1 - beta delta); relu' is 0 at the kink, as in torch. */
		if (1.0 - z > 0.0) {
			*dsc = -beta;
			*dsr = beta;
			return 1.0 - z;
		}
		return 0.0;
	case TRL_DPO_IPO: {
		/* (score_c / n_c - score_r / n_r - 1 / (2 beta))^2: IPO on the
		 * token-averaged scores. */
		double q = p->sc / p->nc - p->sr / p->nr - 1.0 / (2.0 * beta);
		*dsc = 2.0 * q / p->nc;
		*dsr = -2.0 * q / p->nr;
		return q * q;
	}
	case TRL_DPO_EXO_PAIR: {
		/* With q = sigmoid(z) and eps = label_smoothing, the KL from
		 * (q, 1 - q) to (1 - eps, eps):
		 * q (logsigmoid(z) - log(1 - eps)) + (1 - q) (logsigmoid(-z) - log eps).
		 * Its derivative in z simplifies to q (1 - q) (z - log((1 - eps) / eps)).
		 */
		double q = sigmoid(z), qn = sigmoid(-z);
		double log_pw = log1p(-ls), log_pl = log(ls);
		loss = q * (log_sigmoid(z) - log_pw) + qn * (log_sigmoid(-z) - log_pl);
		g = beta * q * qn * (z - log_pw + log_pl);
		*dsc = g;
		*dsr = -g;
		return loss;
	}
	case TRL_DPO_NCA_PAIR: {
		/* With r_c = beta score_c, r_r = beta score_r:
		 * -logsigmoid(r_c) - logsigmoid(-r_c) / 2 - logsigmoid(-r_r) / 2. */
		double rc = beta * p->sc, rr = beta * p->sr;
		*dsc = beta * (-sigmoid(-rc) + 0.5 * sigmoid(rc));
		*dsr = beta * 0.5 * sigmoid(rr);
		return -log_sigmoid(rc) - 0.5 * log_sigmoid(-rc) - 0.5 * log_sigmoid(-rr);
	}
	case TRL_DPO_ROBUST:
		/* (-(1 - ls) logsigmoid(z) + ls logsigmoid(-z)) / (1 - 2 ls): the
		 * unbiased loss under a label flip rate ls. */
		g = beta * (-(1.0 - ls) * sigmoid(-z) - ls * sigmoid(z)) /
		    (1.0 - 2.0 * ls);
		*dsc = g;
		*dsr = -g;
		return (-(1.0 - ls) * log_sigmoid(z) + ls * log_sigmoid(-z)) /
		       (1.0 - 2.0 * ls);
	case TRL_DPO_BCO_PAIR: {
		/* -logsigmoid(beta score_c) - logsigmoid(-beta score_r). */
		double rc = beta * p->sc, rr = beta * p->sr;
		*dsc = -beta * sigmoid(-rc);
		*dsr = beta * sigmoid(rr);
		return -log_sigmoid(rc) - log_sigmoid(-rr);
	}
	case TRL_DPO_SPPO_HARD: {
		/* (score_c - 1 / (2 beta))^2 + (score_r + 1 / (2 beta))^2: SPPO with
		 * the winner's probability set to 1 and the loser's to 0. */
		double ec = p->sc - 0.5 / beta, er = p->sr + 0.5 / beta;
		*dsc = 2.0 * ec;
		*dsr = 2.0 * er;
		return ec * ec + er * er;
	}
	case TRL_DPO_APO_ZERO:
		/* 1 - sigmoid(beta u_c) + sigmoid(beta u_r), on the raw log-ratios
		 * whatever the f-divergence. */
		*duc = -beta * sigmoid_grad(beta * p->uc);
		*dur = beta * sigmoid_grad(beta * p->ur);
		return sigmoid(-beta * p->uc) + sigmoid(beta * p->ur);
	case TRL_DPO_APO_DOWN:
		/* sigmoid(beta u_c) + 1 - sigmoid(beta delta): the first term on the
		 * raw chosen log-ratio, the second on the scores. */
		*duc = beta * sigmoid_grad(beta * p->uc);
		g = -beta * sigmoid_grad(z);
		*dsc = g;
		*dsr = -g;
		return sigmoid(beta * p->uc) + sigmoid(-z);
	case TRL_DPO_DISCOPOP: {
		/* With z = beta delta and m = sigmoid(z / tau), the blend
		 * (1 - m) (-logsigmoid(z)) + m e^-z. The products m e^-z and
		 * m' e^-z are formed in log space, so a large negative z, where
		 * e^-z overflows while m underflows, gives their true value
		 * instead of inf * 0. */
		double tau = o->discopop_tau;
		double lm = log_sigmoid(z / tau), lmn = log_sigmoid(-z / tau);
		double m = exp(lm), mn = exp(lmn);
		double lsg = log_sigmoid(z);
		double m_exp = exp(lm - z);              /* m e^-z */
		double dm_exp = exp(lm + lmn - z) / tau; /* m' e^-z */
		double dm = m * mn / tau;                /* m' */
		loss = -lsg * mn + m_exp;
		g = beta * (-sigmoid(-z) * mn + lsg * dm - m_exp + dm_exp);
		*dsc = g;
		*dsr = -g;
		return loss;
	}
	case TRL_DPO_SIGMOID_NORM: {
		/* -logsigmoid(beta (score_c / n_c - score_r / n_r)). */
		double zn = beta * (p->sc / p->nc - p->sr / p->nr);
		g = -beta * sigmoid(-zn);
		*dsc = g / p->nc;
		*dsr = -g / p->nr;
		return -log_sigmoid(zn);
	}
	case TRL_DPO_AOT:
	case TRL_DPO_AOT_UNPAIRED:
	case TRL_DPO_SFT:
	case TRL_DPO_LOSS_COUNT:
		break;
	}
	return NAN;
}

/* A value and where it came from, for sorting with its permutation. */
typedef struct Ranked {
	double v;
	int i;
} Ranked;

/* Ascending by value; ties by index so that the permutation is deterministic. */
static int ranked_cmp(const void *a, const void *b)
{
	const Ranked *x = a, *y = b;
	if (x->v < y->v)
		return -1;
	if (x->v > y->v)
		return 1;
	return (x->i > y->i) - (x->i < y->i);
}

/* The AOT terms. aot: x = pc - pr and y = rc - rr are sorted separately
 * across the micro-batch and paired by rank, delta_j = sort(x)_j - sort(y)_j.
 * aot_unpaired: x = pc - rc, y = pr - rr, likewise. Each delta_j gets the
 * smoothed logistic loss; its gradient goes back to the pair(s) that landed at
 * rank j. Adds scale * sum_j L_j to *loss and its gradients to dpc, dpr.
 * Returns -1 when the scratch cannot be allocated. */
static int aot_terms(const DpoOptions *o, TrlDpoLoss t, const PairBatch *b, double scale,
                     double *loss, double *dpc, double *dpr)
{
	const int n = b->n;
	_Static_assert(sizeof(Ranked) <= 2 * sizeof(double), "PairBatch.scratch fits 2n");
	Ranked *x = b->scratch ? (Ranked *)b->scratch : malloc(2 * (size_t)n * sizeof *x);
	if (!x)
		return -1;
	Ranked *y = x + n;
	for (int i = 0; i < n; i++) {
		double rc = b->rc ? b->rc[i] : 0.0, rr = b->rr ? b->rr[i] : 0.0;
		if (t == TRL_DPO_AOT) {
			x[i].v = b->pc[i] - b->pr[i];
			y[i].v = rc - rr;
		} else {
			x[i].v = b->pc[i] - rc;
			y[i].v = b->pr[i] - rr;
		}
		x[i].i = y[i].i = i;
	}
	qsort(x, (size_t)n, sizeof *x, ranked_cmp);
	qsort(y, (size_t)n, sizeof *y, ranked_cmp);
	for (int j = 0; j < n; j++) {
		double dz;
		double l = smoothed_logistic(o->beta * (x[j].v - y[j].v),
		                             o->label_smoothing, &dz);
		double g = scale * o->beta * dz;
		*loss += scale * l;
		if (dpc)
			dpc[x[j].i] += g;
		if (t == TRL_DPO_AOT) {
			if (dpr)
				dpr[x[j].i] -= g;
		} else if (dpr) {
			dpr[y[j].i] -= g;
		}
	}
	if (!b->scratch)
		free(x);
	return 0;
}

/* Each type's term is weights[k] * mean_i(w_i L_k(i)), w_i = wc_i wr_i (1
 * without WPO). For sft, L_k(i) = nll for every i, so the term is
 * weights[k] * nll * mean_i(w_i). */
double dpo_loss(const DpoOptions *o, const PairBatch *b, double *dpc, double *dpr,
                double *dnll)
{
	const int n = b->n;
	double total = 0.0, gnll = 0.0;
	if (dpc)
		memset(dpc, 0, (size_t)(n > 0 ? n : 0) * sizeof *dpc);
	if (dpr)
		memset(dpr, 0, (size_t)(n > 0 ? n : 0) * sizeof *dpr);
	if (n <= 0) {
		if (dnll)
			*dnll = 0.0;
		return 0.0;
	}
	for (int k = 0; k < o->n_types; k++) {
		const TrlDpoLoss t = o->types[k];
		const double scale = o->weights[k] / n;
		if (t == TRL_DPO_AOT || t == TRL_DPO_AOT_UNPAIRED) {
			if (aot_terms(o, t, b, scale, &total, dpc, dpr) < 0)
				return NAN;
			continue;
		}
		for (int i = 0; i < n; i++) {
			double w = (b->wc ? b->wc[i] : 1.0) * (b->wr ? b->wr[i] : 1.0);
			if (t == TRL_DPO_SFT) {
				total += scale * w * b->nll;
				gnll += scale * w;
				continue;
			}
			PairTerm p;
			double dsc_du, dsr_du, dsc, dsr, duc, dur;
			p.uc = b->pc[i] - (b->rc ? b->rc[i] : 0.0);
			p.ur = b->pr[i] - (b->rr ? b->rr[i] : 0.0);
			p.sc = fdiv_score(o, p.uc, &dsc_du);
			p.sr = fdiv_score(o, p.ur, &dsr_du);
			p.nc = b->nc[i] > 1.0 ? b->nc[i] : 1.0;
			p.nr = b->nr[i] > 1.0 ? b->nr[i] : 1.0;
			double l = pair_loss(o, t, &p, &dsc, &dsr, &duc, &dur);
			total += scale * w * l;
			if (dpc)
				dpc[i] += scale * w * (dsc * dsc_du + duc);
			if (dpr)
				dpr[i] += scale * w * (dsr * dsr_du + dur);
		}
	}
	if (dnll)
		*dnll = gnll;
	return total;
}

/* WPO (Eq. 2 of the paper): exp of the mean over completion tokens of
 * lp_t - log sum_v p_v^2, where log sum_v p_v^2 = logsumexp(2 z) - 2 logsumexp(z);
 * TRL clamps the token count at 1. */
double dpo_wpo_weight(double sum_aligned, double count)
{
	return exp(sum_aligned / (count > 1.0 ? count : 1.0));
}

/* KTO, with r = lp - ref and beta b: desirable 1 - sigmoid(b (r - z0)),
 * undesirable 1 - sigmoid(b (z0 - r)); apo_zero_unpaired: desirable
 * 1 - sigmoid(b r), undesirable sigmoid(b r). TRL multiplies each loss by
 * desirable_weight or undesirable_weight and then takes the plain mean over
 * all n examples (not a weight-normalised mean). 1 - sigmoid(x) is computed
 * as sigmoid(-x). */
double kto_loss(const KtoOptions *o, int n, const double *lp, const double *ref,
                const int *label, double z0, double *dlp)
{
	if (n <= 0)
		return 0.0;
	const double beta = o->beta;
	double total = 0.0;
	for (int i = 0; i < n; i++) {
		double r = lp[i] - (ref ? ref[i] : 0.0);
		double x, l, g;
		if (o->type == TRL_KTO_KTO)
			x = label[i] ? beta * (r - z0) : beta * (z0 - r);
		else
			x = label[i] ? beta * r : -beta * r;
		l = sigmoid(-x);
		/* dl/dr = -sigmoid'(x) dx/dr, with dx/dr = +beta or -beta. */
		g = -sigmoid_grad(x) * (label[i] ? beta : -beta);
		double w = label[i] ? o->desirable_weight : o->undesirable_weight;
		total += w * l;
		if (dlp)
			dlp[i] = w * g / n;
	}
	return total / n;
}

/* ORPO on the average log-probs a = lp / count:
 * log_odds = (a_c - a_r) - (log(1 - e^a_c) - log(1 - e^a_r)),
 * loss = nll - beta mean(logsigmoid(log_odds)).
 * d log_odds / d a_c = 1 / (1 - e^a_c) = -1 / expm1(a_c), and symmetrically. */
double orpo_loss(double beta, const PairBatch *b, double *dpc, double *dpr, double *dnll,
                 double *log_odds_ratio, double *log_odds_chosen)
{
	const int n = b->n;
	double sum_ratio = 0.0, sum_odds = 0.0;
	for (int i = 0; i < n; i++) {
		double ac = b->pc[i] / b->nc[i], ar = b->pr[i] / b->nr[i];
		double lo = (ac - ar) - (log1mexp(ac) - log1mexp(ar));
		sum_ratio += log_sigmoid(lo);
		sum_odds += lo;
		double g = -beta * sigmoid(-lo) / n;
		if (dpc)
			dpc[i] = g * (-1.0 / expm1(ac)) / b->nc[i];
		if (dpr)
			dpr[i] = g * (1.0 / expm1(ar)) / b->nr[i];
	}
	if (dnll)
		*dnll = 1.0;
	if (log_odds_ratio)
		*log_odds_ratio = n > 0 ? sum_ratio / n : 0.0;
	if (log_odds_chosen)
		*log_odds_chosen = n > 0 ? sum_odds / n : 0.0;
	return b->nll - (n > 0 ? beta * sum_ratio / n : 0.0);
}

/* The policy reward of one CPO sequence: x itself, or with AlphaPO's
 * alpha != 0, (1 - p^-alpha) / alpha with p = e^x, written as
 * -expm1(-alpha x) / alpha so that it stays accurate where e^x underflows
 * (TRL forms p first). *deriv = d reward / d x = e^(-alpha x). */
static double cpo_reward(double alpha, double x, double *deriv)
{
	if (alpha == 0.0) {
		*deriv = 1.0;
		return x;
	}
	*deriv = exp(-alpha * x);
	return -expm1(-alpha * x) / alpha;
}

/* ipo and simpo use the token-averaged log-probs; sigmoid and hinge the sums. */
static int cpo_averages(TrlCpoLoss t)
{
	return t == TRL_CPO_IPO || t == TRL_CPO_SIMPO;
}

/* With x = pc or pc / nc (likewise for the rejected side) and
 * l = reward(x_c) - reward(x_r):
 * sigmoid: -(1 - ls) logsigmoid(beta l) - ls logsigmoid(-beta l);
 * simpo: the same with l - simpo_gamma / beta; hinge: relu(1 - beta l);
 * ipo: (l - 1 / (2 beta))^2. loss = mean + cpo_alpha nll. */
double cpo_loss(const CpoOptions *o, const PairBatch *b, double *dpc, double *dpr,
                double *dnll)
{
	const int n = b->n;
	const int avg = cpo_averages(o->type);
	const double beta = o->beta;
	double total = 0.0;
	for (int i = 0; i < n; i++) {
		double xc = avg ? b->pc[i] / b->nc[i] : b->pc[i];
		double xr = avg ? b->pr[i] / b->nr[i] : b->pr[i];
		double drc, drr, l, dl = 0.0;
		double lg =
		    cpo_reward(o->alpha, xc, &drc) - cpo_reward(o->alpha, xr, &drr);
		switch (o->type) {
		case TRL_CPO_SIMPO:
			lg -= o->simpo_gamma / beta;
			/* fall through */
		case TRL_CPO_SIGMOID:
			l = smoothed_logistic(beta * lg, o->label_smoothing, &dl);
			dl *= beta;
			break;
		case TRL_CPO_HINGE:
			l = 1.0 - beta * lg > 0.0 ? 1.0 - beta * lg : 0.0;
			dl = l > 0.0 ? -beta : 0.0;
			break;
		case TRL_CPO_IPO: {
			double q = lg - 1.0 / (2.0 * beta);
			l = q * q;
			dl = 2.0 * q;
			break;
		}
		default:
			l = NAN;
			break;
		}
		total += l;
		if (dpc)
			dpc[i] = dl * drc / n / (avg ? b->nc[i] : 1.0);
		if (dpr)
			dpr[i] = -dl * drr / n / (avg ? b->nr[i] : 1.0);
	}
	if (dnll)
		*dnll = o->cpo_alpha;
	/* TRL does not compute the NLL when cpo_alpha is 0; neither term enters. */
	double nll_term = o->cpo_alpha != 0.0 ? o->cpo_alpha * b->nll : 0.0;
	return (n > 0 ? total / n : 0.0) + nll_term;
}

/* CPOTrainer logs beta * reward(x) for each side, x as in cpo_loss (sum or
 * average by loss type); SimPO's gamma does not enter. */
void cpo_rewards(const CpoOptions *o, double pc, double pr, double nc, double nr,
                 double *chosen, double *rejected)
{
	const int avg = cpo_averages(o->type);
	double d;
	if (chosen)
		*chosen = o->beta * cpo_reward(o->alpha, avg ? pc / nc : pc, &d);
	if (rejected)
		*rejected = o->beta * cpo_reward(o->alpha, avg ? pr / nr : pr, &d);
}

/* Bradley-Terry: mean(-logsigmoid(r_c - r_r - m)) + c mean((r_c + r_r)^2). */
double reward_loss(int n, const double *r_c, const double *r_r, const double *margin,
                   double center_rewards_coefficient, double *dr_c, double *dr_r)
{
	if (n <= 0)
		return 0.0;
	const double c = center_rewards_coefficient;
	double bt = 0.0, center = 0.0;
	for (int i = 0; i < n; i++) {
		double d = r_c[i] - r_r[i] - (margin ? margin[i] : 0.0);
		double s = r_c[i] + r_r[i];
		bt += -log_sigmoid(d);
		center += s * s;
		double g = -sigmoid(-d) / n, gc = c != 0.0 ? 2.0 * c * s / n : 0.0;
		if (dr_c)
			dr_c[i] = g + gc;
		if (dr_r)
			dr_r[i] = -g + gc;
	}
	return bt / n + (c != 0.0 ? c * center / n : 0.0);
}

double bco_loss(double beta, int n, const double *lp, const double *ref, const int *label,
                double delta, double *dlp)
{
	if (n <= 0)
		return 0.0;
	double total = 0.0;
	for (int i = 0; i < n; i++) {
		double r = beta * (lp[i] - (ref ? ref[i] : 0.0));
		/* x = r - delta (desirable) or delta - r: loss -logsigmoid(x),
		 * d loss / d x = -sigmoid(-x), dx / d lp = +beta or -beta. */
		double x = label[i] ? r - delta : delta - r;
		total -= log_sigmoid(x);
		if (dlp)
			dlp[i] = -sigmoid(-x) * (label[i] ? beta : -beta) / n;
	}
	return total / n;
}

void running_moments_init(RunningMoments *r)
{
	r->mean = 0.0;
	r->var = 1.0;
	r->count = 1e-24;
}

/* Chan et al.'s merge of two sets' moments: the new mean moves by
 * delta * n / (count + n); the summed squared deviations add, with the
 * old set's corrected for the new mean. */
void running_moments_update(RunningMoments *r, double xs_mean, double xs_var,
                            double xs_count)
{
	double delta = xs_mean - r->mean, tot = r->count + xs_count;
	double new_sum = xs_var * xs_count;
	double old_sum = r->var * r->count + delta * delta * r->count * xs_count / tot;
	r->mean += delta * xs_count / tot;
	r->var = (old_sum + new_sum) / tot;
	r->count = tot;
}
