/* method.c - the methods that plug into the training loop: sft, and the
 * offline preference and reward methods (dpo, orpo, cpo, kto, bco, reward),
 * each a fill and a micro-step around the losses of src/losses.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "layers.h"
#include "trainer.h"
#include "online.h"
#include "rl_losses.h"

const char *const metric_names[MET_N] = {
    [MET_LOSS] = "loss",
    [MET_REWARDS_CHOSEN] = "rewards/chosen",
    [MET_REWARDS_REJECTED] = "rewards/rejected",
    [MET_REWARDS_ACCURACIES] = "rewards/accuracies",
    [MET_REWARDS_MARGINS] = "rewards/margins",
    [MET_LOGPS_CHOSEN] = "logps/chosen",
    [MET_LOGPS_REJECTED] = "logps/rejected",
    [MET_LOGITS_CHOSEN] = "logits/chosen",
    [MET_LOGITS_REJECTED] = "logits/rejected",
    [MET_NLL_LOSS] = "nll_loss",
    [MET_LOG_ODDS_RATIO] = "log_odds_ratio",
    [MET_LOG_ODDS_CHOSEN] = "log_odds_chosen",
    [MET_KL] = "kl",
    [MET_DELTA] = "delta",
    [MET_ACCURACY] = "accuracy",
    [MET_MIN_REWARD] = "min_reward",
    [MET_MEAN_REWARD] = "mean_reward",
    [MET_MAX_REWARD] = "max_reward",
    [MET_MARGIN] = "margin",
    [MET_ENTROPY] = "entropy",
    [MET_MEAN_TOKEN_ACCURACY] = "mean_token_accuracy",
};

void metrics_clear(Metrics *m)
{
	memset(m, 0, sizeof *m);
	m->min_reward = INFINITY;
	m->max_reward = -INFINITY;
}

void metrics_add(Metrics *m, int k, double sum, double cnt)
{
	m->sum[k] += sum;
	m->cnt[k] += cnt;
}

void metrics_merge(Metrics *dst, const Metrics *src)
{
	for (int k = 0; k < MET_N; k++) {
		dst->sum[k] += src->sum[k];
		dst->cnt[k] += src->cnt[k];
	}
	dst->min_reward = fmin(dst->min_reward, src->min_reward);
	dst->max_reward = fmax(dst->max_reward, src->max_reward);
}

void metrics_merge_values(Metrics *dst, const Metrics *src)
{
	for (int k = 0; k < MET_N; k++)
		if (src->cnt[k] > 0) {
			dst->sum[k] += src->sum[k] / src->cnt[k];
			dst->cnt[k] += 1.0;
		}
	if (src->cnt[MET_MEAN_REWARD] > 0) {
		metrics_add(dst, MET_MIN_REWARD, src->min_reward, 1.0);
		metrics_add(dst, MET_MAX_REWARD, src->max_reward, 1.0);
	}
}

int metrics_has(const Metrics *m, int k)
{
	if (k == MET_REWARDS_MARGINS && m->cnt[k] == 0)
		return m->cnt[MET_REWARDS_CHOSEN] > 0 && m->cnt[MET_REWARDS_REJECTED] > 0;
	return m->cnt[k] > 0;
}

void metrics_reduce(Metrics *m, int minmax, const Comm *c)
{
	double buf[2 * MET_N];
	memcpy(buf, m->sum, sizeof m->sum);
	memcpy(buf + MET_N, m->cnt, sizeof m->cnt);
	comm_sum_double(c, buf, 2 * MET_N);
	memcpy(m->sum, buf, sizeof m->sum);
	memcpy(m->cnt, buf + MET_N, sizeof m->cnt);
	if (!minmax)
		return;
	double mm[2] = {-m->min_reward, m->max_reward};
	MPI_Allreduce(MPI_IN_PLACE, mm, 2, MPI_DOUBLE, MPI_MAX, c->world);
	m->min_reward = -mm[0];
	m->max_reward = mm[1];
}

/* ---- per-row log-probs ---------------------------------------------------------- */

void rows_logps(Trainer *tr, const Batch *b, int pairs, double *lp, double *ntok)
{
	int R = b->B, T = b->T, n = R / 2;
	const float *tl = tr->ts.lp;
	for (int r = 0; r < R; r++) {
		double c = 0.0;
		for (int t = 0; t < T; t++)
			c += b->targets[(size_t)r * T + t] >= 0;
		ntok[r] = c;
	}
	double a = tr->cfg->ld_alpha;
	int ld = pairs && tr->cfg->method == TRL_METHOD_DPO && a != 1.0;
	for (int r = 0; r < R; r++) {
		/* LD-DPO: the first min(N_c, N_r) completion tokens of either
		 * completion count fully, the rest with weight ld_alpha. */
		double shared = ld ? fmin(ntok[r % n], ntok[r % n + n]) : INFINITY;
		double s = 0.0;
		int k = 0;
		for (int t = 0; t < T; t++) {
			size_t o = (size_t)r * T + t;
			if (b->targets[o] < 0)
				continue;
			k++;
			s += (k > shared ? a : 1.0) * tl[o];
		}
		lp[r] = s;
	}
}

/* The coefficient of every token log-prob in the loss: g[r] for the
 * completion tokens of row r (ld_alpha past the shorter completion, as in
 * rows_logps), plus nll_coef for the chosen rows 0..nll_rows). */
static void token_coefs(Trainer *tr, const Batch *b, int pairs, const double *g,
                        const double *ntok, int nll_rows, double nll_coef, double scale)
{
	int R = b->B, T = b->T, n = R / 2;
	double a = tr->cfg->ld_alpha;
	int ld = pairs && tr->cfg->method == TRL_METHOD_DPO && a != 1.0;
	for (int r = 0; r < R; r++) {
		double shared = ld ? fmin(ntok[r % n], ntok[r % n + n]) : INFINITY;
		int k = 0;
		for (int t = 0; t < T; t++) {
			size_t o = (size_t)r * T + t;
			if (b->targets[o] < 0) {
				tr->coef[o] = 0.0f;
				continue;
			}
			k++;
			double c = g[r] * (k > shared ? a : 1.0);
			if (r < nll_rows)
				c += nll_coef;
			tr->coef[o] = (float)(scale * c);
		}
	}
}

/* Sums of the per-token figures over the target tokens of rows [r0, r1). */
static void token_sums(const Trainer *tr, const Batch *b, int r0, int r1, double *logit,
                       double *entropy, double *correct, double *tokens)
{
	int T = b->T;
	for (int r = r0; r < r1; r++)
		for (int t = 0; t < T; t++) {
			size_t o = (size_t)r * T + t;
			if (b->targets[o] < 0)
				continue;
			*logit += tr->ts.mean_logit[o];
			*entropy += tr->ts.entropy[o];
			*correct += tr->ts.correct[o];
			*tokens += 1.0;
		}
}

/* The policy's forward and the per-token figures at the targets tg (the
 * batch's own, or orpo's wider set). */
static void forward_stats(Trainer *tr, const Batch *b, const int32_t *tg)
{
	Model *m = &tr->model;
	model_forward(m, b);
	tokens_logprob_forward(&tr->ts, m->logits, tg, b->B * b->T,
	                       model_config_out_dim(&m->cfg));
}

static void backward_coefs(Trainer *tr, const Batch *b, const int32_t *tg)
{
	Model *m = &tr->model;
	tokens_logprob_backward(m->logits, tg, tr->ts.lse, tr->coef, b->B * b->T,
	                        model_config_out_dim(&m->cfg));
	model_backward(m, b);
}

/* ---- sft ------------------------------------------------------------------------ */

static long sft_fill(Trainer *tr, Batch *b, int split, const int *idx, int n)
{
	return batch_fill(b, split ? &tr->test : &tr->train,
	                  split ? &tr->test_rows : &tr->train_rows, idx, n,
	                  tr->tok.pad_id);
}

static void sft_micro(Trainer *tr, Batch *b, int split, const int *idx, int n,
                      double scale, int backward, int count, Metrics *acc)
{
	(void)split, (void)idx, (void)n;
	Model *m = &tr->model;
	long targets = 0, correct = 0;
	model_forward(m, b);
	double loss = crossentropy_forward_backward(
	    m->logits, b->targets, b->B * b->T, m->cfg.vocab_size,
	    backward ? (float)scale : 0.0f, &targets, &correct);
	if (backward)
		model_backward(m, b);
	if (count) {
		metrics_add(acc, MET_LOSS, loss, (double)targets);
		metrics_add(acc, MET_MEAN_TOKEN_ACCURACY, (double)correct,
		            (double)targets);
	}
}

/* ---- pairs: dpo, orpo, cpo -------------------------------------------------------- */

static long pair_fill(Trainer *tr, Batch *b, int split, const int *idx, int n)
{
	return batch_fill_pairs(b, split ? &tr->test : &tr->train, idx, n,
	                        tr->tok.pad_id);
}

static void pair_micro(Trainer *tr, Batch *b, int split, const int *idx, int n,
                       double scale, int backward, int count, Metrics *acc)
{
	const Config *cfg = tr->cfg;
	int R = b->B, T = b->T;
	double *lp = tr->rowbuf, *nt = lp + R, *ref = nt + R, *wt = ref + R, *g = wt + R;
	if (tr->method->uses_ref) {
		if (tr->pre[split][0]) {
			for (int i = 0; i < n; i++) {
				ref[i] = tr->pre[split][0][idx[i]];
				ref[n + i] = tr->pre[split][1][idx[i]];
			}
		} else {
			ref_logps(tr, b, 1, ref);
		}
	}
	/* The NLL term: F.cross_entropy over the chosen completions' tokens
	 * (dpo's sft loss, cpo), or over every token of prompt + chosen (orpo,
	 * as TRL's ORPOTrainer computes it). */
	const int32_t *tg = b->targets;
	int orpo = cfg->method == TRL_METHOD_ORPO;
	if (orpo) {
		memcpy(tr->tbuf, b->targets, (size_t)R * T * sizeof *tr->tbuf);
		for (int r = 0; r < n; r++)
			for (int t = 0; t + 1 < T; t++) {
				size_t o = (size_t)r * T + t;
				if (b->doc[o] >= 0 && b->doc[o + 1] >= 0)
					tr->tbuf[o] = b->ids[o + 1];
			}
		tg = tr->tbuf;
	}
	forward_stats(tr, b, tg);
	rows_logps(tr, b, 1, lp, nt);
	double nll_sum = 0.0, nll_tok = 0.0;
	for (int r = 0; r < n; r++)
		for (int t = 0; t < T; t++) {
			size_t o = (size_t)r * T + t;
			if (tg[o] >= 0) {
				nll_sum -= tr->ts.lp[o];
				nll_tok += 1.0;
			}
		}
	double nll = nll_tok > 0 ? nll_sum / nll_tok : 0.0;
	int weighted = cfg->method == TRL_METHOD_DPO && cfg->use_weighting;
	if (weighted)
		for (int r = 0; r < R; r++) {
			double s = 0.0;
			for (int t = 0; t < T; t++) {
				size_t o = (size_t)r * T + t;
				if (b->targets[o] >= 0)
					s += (double)tr->ts.lp[o] - (double)tr->ts.wpo[o];
			}
			wt[r] = dpo_wpo_weight(s, nt[r]);
		}
	double *cnt = g + R; /* counts of at least 1, as TRL clamps them */
	for (int r = 0; r < R; r++)
		cnt[r] = nt[r] > 1.0 ? nt[r] : 1.0;
	PairBatch pb = {.n = n,
	                .pc = lp,
	                .pr = lp + n,
	                .rc = tr->method->uses_ref ? ref : NULL,
	                .rr = tr->method->uses_ref ? ref + n : NULL,
	                .nc = cnt,
	                .nr = cnt + n,
	                .wc = weighted ? wt : NULL,
	                .wr = weighted ? wt + n : NULL,
	                .nll = nll,
	                .scratch = tr->rowbuf + 8 * (size_t)tr->rows_cap};
	double dnll = 0.0, lor = 0.0, loc = 0.0, loss;
	if (cfg->method == TRL_METHOD_DPO)
		loss = dpo_loss(&tr->dpo, &pb, g, g + n, &dnll);
	else if (cfg->method == TRL_METHOD_ORPO)
		loss = orpo_loss(cfg->beta, &pb, g, g + n, &dnll, &lor, &loc);
	else
		loss = cpo_loss(&tr->cpo, &pb, g, g + n, &dnll);
	if (backward) {
		double nc = nll_tok > 0 ? -dnll / nll_tok : 0.0;
		token_coefs(tr, b, 1, g, nt, n, nc, scale);
		for (int r = 0; orpo && r < n; r++) /* orpo's NLL on the prompt too */
			for (int t = 0; t < T; t++) {
				size_t o = (size_t)r * T + t;
				if (tg[o] >= 0 && b->targets[o] < 0)
					tr->coef[o] = (float)(scale * nc);
			}
		backward_coefs(tr, b, tg);
	}
	if (!count)
		return;
	metrics_add(acc, MET_LOSS, loss, 1.0);
	for (int i = 0; i < n; i++) {
		double rc, rr, lc = lp[i], lr = lp[n + i];
		if (cfg->method == TRL_METHOD_DPO) {
			rc = cfg->beta * (lp[i] - ref[i]);
			rr = cfg->beta * (lp[n + i] - ref[n + i]);
		} else if (cfg->method == TRL_METHOD_ORPO) {
			lc = lp[i] / cnt[i];
			lr = lp[n + i] / cnt[n + i];
			rc = cfg->beta * lc;
			rr = cfg->beta * lr;
		} else {
			cpo_rewards(&tr->cpo, lp[i], lp[n + i], cnt[i], cnt[n + i], &rc,
			            &rr);
			if (tr->cpo.type == TRL_CPO_IPO ||
			    tr->cpo.type == TRL_CPO_SIMPO) {
				lc = lp[i] / cnt[i];
				lr = lp[n + i] / cnt[n + i];
			}
		}
		metrics_add(acc, MET_REWARDS_CHOSEN, rc, 1.0);
		metrics_add(acc, MET_REWARDS_REJECTED, rr, 1.0);
		metrics_add(acc, MET_REWARDS_ACCURACIES, rc > rr, 1.0);
		metrics_add(acc, MET_REWARDS_MARGINS, rc - rr, 1.0);
		metrics_add(acc, MET_LOGPS_CHOSEN, lc, 1.0);
		metrics_add(acc, MET_LOGPS_REJECTED, lr, 1.0);
	}
	double lg[2] = {0, 0}, en = 0, cor[2] = {0, 0}, tok[2] = {0, 0};
	token_sums(tr, b, 0, n, &lg[0], &en, &cor[0], &tok[0]);
	token_sums(tr, b, n, R, &lg[1], &en, &cor[1], &tok[1]);
	metrics_add(acc, MET_LOGITS_CHOSEN, lg[0], tok[0]);
	metrics_add(acc, MET_LOGITS_REJECTED, lg[1], tok[1]);
	metrics_add(acc, MET_ENTROPY, en, tok[0] + tok[1]);
	metrics_add(acc, MET_MEAN_TOKEN_ACCURACY, cor[0], tok[0]);
	/* CPOTrainer does not compute (and logs 0 for) the NLL at cpo_alpha 0. */
	if (cfg->method != TRL_METHOD_DPO)
		metrics_add(acc, MET_NLL_LOSS,
		            cfg->method == TRL_METHOD_CPO && cfg->cpo_alpha == 0.0 ? 0.0
		                                                                   : nll,
		            1.0);
	if (cfg->method == TRL_METHOD_ORPO) {
		metrics_add(acc, MET_LOG_ODDS_RATIO, lor, 1.0);
		metrics_add(acc, MET_LOG_ODDS_CHOSEN, loc, 1.0);
	}
}

/* ---- kto -------------------------------------------------------------------------- */

static long kto_fill(Trainer *tr, Batch *b, int split, const int *idx, int n)
{
	/* batch_fill_mismatched with each example its own partner is the plain
	 * prompt + completion row. */
	return batch_fill_mismatched(b, split ? &tr->test : &tr->train, idx, idx, n, 0,
	                             tr->tok.pad_id);
}

/* kto and bco: the reference's log-probs of the n rows (precomputed or a
 * forward), the policy's forward, its summed log-probs and token counts, and
 * the examples' labels. */
static void unpaired_forward(Trainer *tr, Batch *b, int split, const int *idx, int n,
                             double *lp, double *nt, double *ref, int *lab)
{
	const Dataset *d = split ? &tr->test : &tr->train;
	if (tr->pre[split][0]) {
		for (int i = 0; i < n; i++)
			ref[i] = tr->pre[split][0][idx[i]];
	} else {
		ref_logps(tr, b, 0, ref);
	}
	forward_stats(tr, b, b->targets);
	rows_logps(tr, b, 0, lp, nt);
	for (int i = 0; i < n; i++)
		lab[i] = d->ex[idx[i]].label;
}

static void kto_micro(Trainer *tr, Batch *b, int split, const int *idx, int n,
                      double scale, int backward, int count, Metrics *acc)
{
	const Config *cfg = tr->cfg;
	const Dataset *d = split ? &tr->test : &tr->train;
	int R = b->B;
	double *lp = tr->rowbuf, *nt = lp + R, *ref = nt + R, *g = ref + R, *kl = g + R;
	int *lab = tr->ibuf, *partner = tr->ibuf + R;
	double z0 = 0.0;
	if (tr->kto.type == TRL_KTO_KTO) {
		/* The KL estimate z0: the policy's and the reference's log-probs of
		 * mismatched (prompt, completion) rows, averaged over every rank's
		 * micro-batch, clamped at 0, without gradient. */
		for (int i = 0; i < n; i++)
			partner[i] = tr->partner[split][idx[i]];
		batch_fill_mismatched(&tr->klb, d, idx, partner, n, cfg->max_length,
		                      tr->tok.pad_id);
		double *kref = kl + R;
		if (tr->pre[split][1]) {
			for (int i = 0; i < n; i++)
				kref[i] = tr->pre[split][1][idx[i]];
		} else {
			ref_logps(tr, &tr->klb, 0, kref);
		}
		forward_stats(tr, &tr->klb, tr->klb.targets);
		rows_logps(tr, &tr->klb, 0, kl, nt);
		double s[2] = {0.0, 0.0};
		for (int i = 0; i < n && count; i++)
			s[0] += kl[i] - kref[i];
		s[1] = count ? 1.0 : 0.0;
		/* TRL gathers each rank's mean and averages them. */
		s[0] = count && n > 0 ? s[0] / n : 0.0;
		comm_sum_double(tr->comm, s, 2);
		z0 = s[1] > 0 ? fmax(0.0, s[0] / s[1]) : 0.0;
	}
	unpaired_forward(tr, b, split, idx, n, lp, nt, ref, lab);
	double loss = kto_loss(&tr->kto, n, lp, ref, lab, z0, g);
	if (backward) {
		token_coefs(tr, b, 0, g, nt, 0, 0.0, scale);
		backward_coefs(tr, b, b->targets);
	}
	if (count) {
		metrics_add(acc, MET_LOSS, loss, 1.0);
		if (tr->kto.type == TRL_KTO_KTO)
			metrics_add(acc, MET_KL, z0, 1.0);
		for (int i = 0; i < n; i++) {
			double r = cfg->beta * (lp[i] - ref[i]);
			metrics_add(acc,
			            lab[i] ? MET_REWARDS_CHOSEN : MET_REWARDS_REJECTED, r,
			            1.0);
			metrics_add(acc, lab[i] ? MET_LOGPS_CHOSEN : MET_LOGPS_REJECTED,
			            lp[i], 1.0);
		}
		for (int i = 0; i < n; i++) {
			double lg = 0, en = 0, cor = 0, tok = 0;
			token_sums(tr, b, i, i + 1, &lg, &en, &cor, &tok);
			metrics_add(acc, lab[i] ? MET_LOGITS_CHOSEN : MET_LOGITS_REJECTED,
			            lg, tok);
			metrics_add(acc, MET_ENTROPY, en, tok);
		}
	}
}

/* ---- bco -------------------------------------------------------------------------- */

static void bco_micro(Trainer *tr, Batch *b, int split, const int *idx, int n,
                      double scale, int backward, int count, Metrics *acc)
{
	const Config *cfg = tr->cfg;
	int R = b->B;
	double *lp = tr->rowbuf, *nt = lp + R, *ref = nt + R, *g = ref + R;
	int *lab = tr->ibuf;
	unpaired_forward(tr, b, split, idx, n, lp, nt, ref, lab);
	if (backward) {
		/* Training merges the micro-step's rewards, over every rank, into
		 * the running moments before the loss (TRL's do_train). */
		double s[3] = {0.0, 0.0, 0.0};
		for (int i = 0; i < n && count; i++)
			s[0] += cfg->beta * (lp[i] - ref[i]);
		s[2] = count ? n : 0;
		comm_sum_double(tr->comm, s, 3);
		double mean = s[2] > 0 ? s[0] / s[2] : 0.0;
		for (int i = 0; i < n && count; i++) {
			double dr = cfg->beta * (lp[i] - ref[i]) - mean;
			s[1] += dr * dr;
		}
		comm_sum_double(tr->comm, s + 1, 1);
		if (s[2] > 0)
			running_moments_update(&tr->bco, mean, s[1] / s[2], s[2]);
	}
	double delta = tr->bco.mean;
	double loss = bco_loss(cfg->beta, n, lp, ref, lab, delta, g);
	if (backward) {
		token_coefs(tr, b, 0, g, nt, 0, 0.0, scale);
		backward_coefs(tr, b, b->targets);
	}
	if (!count)
		return;
	metrics_add(acc, MET_LOSS, loss, 1.0);
	metrics_add(acc, MET_DELTA, delta, 1.0);
	for (int i = 0; i < n; i++) {
		double r = cfg->beta * (lp[i] - ref[i]);
		metrics_add(acc, lab[i] ? MET_REWARDS_CHOSEN : MET_REWARDS_REJECTED, r,
		            1.0);
		metrics_add(acc, lab[i] ? MET_LOGPS_CHOSEN : MET_LOGPS_REJECTED, lp[i],
		            1.0);
		double lg = 0, en = 0, cor = 0, tok = 0;
		token_sums(tr, b, i, i + 1, &lg, &en, &cor, &tok);
		metrics_add(acc, lab[i] ? MET_LOGITS_CHOSEN : MET_LOGITS_REJECTED, lg,
		            tok);
	}
}

/* ---- reward ----------------------------------------------------------------------- */

static void reward_micro(Trainer *tr, Batch *b, int split, const int *idx, int n,
                         double scale, int backward, int count, Metrics *acc)
{
	Model *m = &tr->model;
	int R = b->B, T = b->T;
	double *r = tr->rowbuf, *dr = r + R, *mg = dr + R;
	int *last = (int *)(mg + R);
	model_forward(m, b);
	for (int i = 0; i < R; i++) {
		last[i] = batch_score_position(b, i, tr->tok.pad_id);
		r[i] = m->logits[(size_t)i * T + last[i]];
	}
	const double *margin = NULL;
	if (tr->margin[split]) {
		for (int i = 0; i < n; i++)
			mg[i] = tr->margin[split][idx[i]];
		margin = mg;
	}
	double loss = reward_loss(n, r, r + n, margin,
	                          tr->cfg->center_rewards_coefficient, dr, dr + n);
	if (backward) {
		memset(m->logits, 0, (size_t)R * T * sizeof *m->logits);
		for (int i = 0; i < R; i++)
			m->logits[(size_t)i * T + last[i]] = (float)(scale * dr[i]);
		model_backward(m, b);
	}
	if (!count)
		return;
	metrics_add(acc, MET_LOSS, loss, 1.0);
	for (int i = 0; i < n; i++) {
		metrics_add(acc, MET_ACCURACY, r[i] > r[n + i], 1.0);
		metrics_add(acc, MET_MARGIN, r[i] - r[n + i], 1.0);
	}
	for (int i = 0; i < R; i++) {
		metrics_add(acc, MET_MEAN_REWARD, r[i], 1.0);
		acc->min_reward = fmin(acc->min_reward, r[i]);
		acc->max_reward = fmax(acc->max_reward, r[i]);
	}
}

/* ---- the table -------------------------------------------------------------------- */

#define BIT(k) (1u << (k))
#define PAIR_METRICS                                                                     \
	(BIT(MET_LOSS) | BIT(MET_REWARDS_CHOSEN) | BIT(MET_REWARDS_REJECTED) |           \
	 BIT(MET_REWARDS_ACCURACIES) | BIT(MET_REWARDS_MARGINS) |                        \
	 BIT(MET_LOGPS_CHOSEN) | BIT(MET_LOGPS_REJECTED) | BIT(MET_LOGITS_CHOSEN) |      \
	 BIT(MET_LOGITS_REJECTED) | BIT(MET_ENTROPY) | BIT(MET_MEAN_TOKEN_ACCURACY))

/* kto and bco: the reward figures split by label. */
#define UNPAIRED_METRICS                                                                 \
	(BIT(MET_LOSS) | BIT(MET_REWARDS_CHOSEN) | BIT(MET_REWARDS_REJECTED) |           \
	 BIT(MET_REWARDS_MARGINS) | BIT(MET_LOGPS_CHOSEN) | BIT(MET_LOGPS_REJECTED) |    \
	 BIT(MET_LOGITS_CHOSEN) | BIT(MET_LOGITS_REJECTED))

/* grpo, rloo and ppo share the online plug-in (online.c, ppo.c); the
 * reference model they need follows from beta (method_select). */
#define ONLINE_METHOD(nm, extra)                                                         \
	{                                                                                \
		.name = nm,                                                              \
		.formats_ok = {TRL_FMT_PROMPT_ONLY, TRL_FMT_PROMPT_COMPLETION},          \
		.n_formats = 2, .rows_per_example = 1,                                   \
		.metrics = BIT(MET_LOSS) | BIT(MET_ENTROPY) | (extra),                   \
		.main_metric = MET_ENTROPY, .micro = online_micro,                       \
		.step_begin = online_step_begin, .step_end = online_step_end,            \
		.log = online_log, .online = 1                                           \
	}

static const Method methods[] = {
    [TRL_METHOD_SFT] = {.name = "sft",
                        .formats_ok = {TRL_FMT_LANGUAGE_MODELING,
                                       TRL_FMT_PROMPT_COMPLETION},
                        .n_formats = 2,
                        .rows_per_example = 1,
                        .metrics = BIT(MET_LOSS) | BIT(MET_MEAN_TOKEN_ACCURACY),
                        .main_metric = MET_MEAN_TOKEN_ACCURACY,
                        .fill = sft_fill,
                        .micro = sft_micro},
    [TRL_METHOD_REWARD] = {.name = "reward",
                           .formats_ok = {TRL_FMT_PREFERENCE},
                           .n_formats = 1,
                           .rows_per_example = 2,
                           .classifier = 1,
                           .metrics = BIT(MET_LOSS) | BIT(MET_ACCURACY) |
                                      BIT(MET_MIN_REWARD) | BIT(MET_MEAN_REWARD) |
                                      BIT(MET_MAX_REWARD) | BIT(MET_MARGIN),
                           .main_metric = MET_ACCURACY,
                           .fill = pair_fill,
                           .micro = reward_micro},
    [TRL_METHOD_DPO] = {.name = "dpo",
                        .formats_ok = {TRL_FMT_PREFERENCE},
                        .n_formats = 1,
                        .rows_per_example = 2,
                        .uses_ref = 1,
                        .metrics = PAIR_METRICS,
                        .main_metric = MET_REWARDS_ACCURACIES,
                        .fill = pair_fill,
                        .micro = pair_micro},
    [TRL_METHOD_KTO] = {.name = "kto",
                        .formats_ok = {TRL_FMT_UNPAIRED_PREFERENCE, TRL_FMT_PREFERENCE},
                        .n_formats = 2,
                        .rows_per_example = 1,
                        .uses_ref = 1,
                        .eval_collective = 1,
                        .metrics = UNPAIRED_METRICS | BIT(MET_KL) | BIT(MET_ENTROPY),
                        .main_metric = MET_KL,
                        .fill = kto_fill,
                        .micro = kto_micro},
    [TRL_METHOD_ORPO] = {.name = "orpo",
                         .formats_ok = {TRL_FMT_PREFERENCE},
                         .n_formats = 1,
                         .rows_per_example = 2,
                         .metrics = PAIR_METRICS | BIT(MET_NLL_LOSS) |
                                    BIT(MET_LOG_ODDS_RATIO) | BIT(MET_LOG_ODDS_CHOSEN),
                         .main_metric = MET_REWARDS_ACCURACIES,
                         .fill = pair_fill,
                         .micro = pair_micro},
    [TRL_METHOD_CPO] = {.name = "cpo",
                        .formats_ok = {TRL_FMT_PREFERENCE},
                        .n_formats = 1,
                        .rows_per_example = 2,
                        .metrics = PAIR_METRICS | BIT(MET_NLL_LOSS),
                        .main_metric = MET_REWARDS_ACCURACIES,
                        .fill = pair_fill,
                        .micro = pair_micro},
    [TRL_METHOD_BCO] = {.name = "bco",
                        .formats_ok = {TRL_FMT_UNPAIRED_PREFERENCE, TRL_FMT_PREFERENCE},
                        .n_formats = 2,
                        .rows_per_example = 1,
                        .uses_ref = 1,
                        .metrics = UNPAIRED_METRICS | BIT(MET_DELTA),
                        .main_metric = MET_REWARDS_MARGINS,
                        .fill = kto_fill,
                        .micro = bco_micro},
    [TRL_METHOD_GRPO] = ONLINE_METHOD("grpo", BIT(MET_KL)),
    [TRL_METHOD_RLOO] = ONLINE_METHOD("rloo", 0),
    [TRL_METHOD_PPO] = ONLINE_METHOD("ppo", 0),
};

const Method *method_of(TrlMethod m)
{
	return &methods[m];
}

int batch_score_position(const Batch *b, int i, int pad)
{
	int T = b->T, t = T - 1;
	while (t > 0 &&
	       (b->doc[(size_t)i * T + t] < 0 || b->ids[(size_t)i * T + t] == pad))
		t--;
	return t;
}

void metrics_put(FILE *f, const char *key, double v)
{
	if (isfinite(v))
		fprintf(f, ", \"%s\": %.7g", key, v);
	else
		fprintf(f, ", \"%s\": null", key);
}

int method_split_list(const char *s, char items[][32], int cap)
{
	int n = 0;
	while (*s && n < cap) {
		while (*s == ' ')
			s++;
		const char *e = strchr(s, ',');
		size_t len = e ? (size_t)(e - s) : strlen(s);
		while (len > 0 && s[len - 1] == ' ')
			len--;
		snprintf(items[n], 32, "%.*s", (int)len, s);
		n++;
		if (!e)
			break;
		s = e + 1;
	}
	return n;
}

int method_select(Trainer *tr, TrlErr *err)
{
	const Config *cfg = tr->cfg;
	tr->method = method_of(cfg->method);
	char items[TRL_MAX_LOSS_TYPES + 1][32];
	int n = method_split_list(cfg->loss_type, items, TRL_MAX_LOSS_TYPES + 1);
	if (cfg->packing && cfg->method != TRL_METHOD_SFT)
		return trl_errf(
		    err, TRL_EINVAL,
		    "packing: %s does not pack sequences (set packing: false)",
		    tr->method->name);
	running_moments_init(&tr->bco);
	switch (cfg->method) {
	case TRL_METHOD_GRPO: {
		int t = n == 1 ? rl_grpo_loss_parse(items[0]) : -1;
		if (t < 0)
			return trl_errf(
			    err, TRL_EINVAL,
			    "loss_type '%s': grpo takes grpo, bnpo, dr_grpo or dapo",
			    cfg->loss_type);
		tr->grpo_loss = t;
		break;
	}
	case TRL_METHOD_RLOO:
		tr->reward_clip[0] = -INFINITY;
		tr->reward_clip[1] = INFINITY;
		if (cfg->reward_clip_range[0]) {
			char r[3][32];
			char *e0 = NULL, *e1 = NULL;
			int nr = method_split_list(cfg->reward_clip_range, r, 3);
			double lo = nr == 2 ? strtod(r[0], &e0) : 0;
			double hi = nr == 2 ? strtod(r[1], &e1) : 0;
			if (nr != 2 || *e0 || *e1 || e0 == r[0] || e1 == r[1] ||
			    !(lo < hi))
				return trl_errf(err, TRL_EINVAL,
				                "reward_clip_range '%s': give two "
				                "numbers [low, high] "
				                "with low < high",
				                cfg->reward_clip_range);
			tr->reward_clip[0] = lo;
			tr->reward_clip[1] = hi;
		}
		/* RLOO's loss is one clipped ratio per completion: weights that
		 * differ from token to token have no place in it. */
		if (cfg->vllm_importance_sampling_correction &&
		    cfg->vllm_importance_sampling_mode < 2)
			return trl_errf(
			    err, TRL_EINVAL,
			    "vllm_importance_sampling_mode %s: rloo's loss is per "
			    "completion, so it takes sequence_truncate or "
			    "sequence_mask (or set "
			    "vllm_importance_sampling_correction: false)",
			    cfg->vllm_importance_sampling_mode == 0 ? "token_truncate"
			                                            : "token_mask");
		if (cfg->top_entropy_quantile < 1.0)
			return trl_errf(
			    err, TRL_EINVAL,
			    "top_entropy_quantile %g: the entropy mask is grpo's; "
			    "rloo's loss is per completion (leave it at 1)",
			    cfg->top_entropy_quantile);
		/* fall through */
	case TRL_METHOD_PPO:
		if (cfg->loss_type[0])
			return trl_errf(
			    err, TRL_EINVAL,
			    "loss_type '%s': method %s has no loss_type (leave "
			    "it empty)",
			    cfg->loss_type, tr->method->name);
		break;
	case TRL_METHOD_SFT:
	case TRL_METHOD_REWARD:
	case TRL_METHOD_ORPO:
	case TRL_METHOD_BCO:
		if (cfg->loss_type[0])
			return trl_errf(
			    err, TRL_EINVAL,
			    "loss_type '%s': method %s has no loss_type (leave "
			    "it empty)",
			    cfg->loss_type, tr->method->name);
		break;
	case TRL_METHOD_DPO: {
		DpoOptions *o = &tr->dpo;
		memset(o, 0, sizeof *o);
		if (n > TRL_MAX_LOSS_TYPES)
			return trl_errf(err, TRL_EINVAL,
			                "loss_type: at most %d loss types",
			                TRL_MAX_LOSS_TYPES);
		o->n_types = n;
		for (int i = 0; i < n; i++) {
			int t = dpo_loss_parse(items[i]);
			if (t < 0)
				return trl_errf(
				    err, TRL_EINVAL,
				    "loss_type: '%s' is not a dpo loss type (sigmoid, "
				    "hinge, ipo, exo_pair, nca_pair, robust, "
				    "bco_pair, sppo_hard, aot, aot_unpaired, "
				    "apo_zero, apo_down, discopop, sft, "
				    "sigmoid_norm)",
				    items[i]);
			o->types[i] = (TrlDpoLoss)t;
			o->weights[i] = 1.0;
			if (cfg->use_weighting &&
			    (t == TRL_DPO_AOT || t == TRL_DPO_AOT_UNPAIRED))
				return trl_errf(
				    err, TRL_EINVAL,
				    "use_weighting: WPO weights do not apply to "
				    "loss_type %s (TRL refuses the combination)",
				    items[i]);
			if (t == TRL_DPO_ROBUST && cfg->label_smoothing >= 0.5)
				return trl_errf(
				    err, TRL_EINVAL,
				    "label_smoothing %g: the robust loss needs a "
				    "flip rate in [0, 0.5)",
				    cfg->label_smoothing);
			if (t == TRL_DPO_EXO_PAIR && cfg->label_smoothing <= 0.0)
				return trl_errf(
				    err, TRL_EINVAL,
				    "loss_type exo_pair needs label_smoothing > 0 "
				    "(its epsilon; 1e-3 suggested)");
		}
		if (cfg->loss_weights[0]) {
			char w[TRL_MAX_LOSS_TYPES + 1][32];
			int nw = method_split_list(cfg->loss_weights, w,
			                           TRL_MAX_LOSS_TYPES + 1);
			if (nw != n)
				return trl_errf(
				    err, TRL_EINVAL,
				    "loss_weights has %d entries but loss_type %d: "
				    "give one weight per loss type",
				    nw, n);
			for (int i = 0; i < nw; i++) {
				char *end;
				o->weights[i] = strtod(w[i], &end);
				if (end == w[i] || *end || !isfinite(o->weights[i]))
					return trl_errf(
					    err, TRL_EINVAL,
					    "loss_weights: '%s' is not a number", w[i]);
			}
		}
		o->beta = cfg->beta;
		o->label_smoothing = cfg->label_smoothing;
		o->discopop_tau = cfg->discopop_tau;
		o->f_divergence = (TrlFDivergence)cfg->f_divergence_type;
		o->f_alpha_divergence_coef = cfg->f_alpha_divergence_coef;
		break;
	}
	case TRL_METHOD_KTO:
		if (n != 1 ||
		    (strcmp(items[0], "kto") && strcmp(items[0], "apo_zero_unpaired")))
			return trl_errf(
			    err, TRL_EINVAL,
			    "loss_type '%s': kto takes kto or apo_zero_unpaired",
			    cfg->loss_type);
		tr->kto.type =
		    strcmp(items[0], "kto") ? TRL_KTO_APO_ZERO_UNPAIRED : TRL_KTO_KTO;
		tr->kto.beta = cfg->beta;
		tr->kto.desirable_weight = cfg->desirable_weight;
		tr->kto.undesirable_weight = cfg->undesirable_weight;
		if (tr->kto.type == TRL_KTO_KTO &&
		    cfg->train_sampling_strategy != TRL_SAMPLING_SEQUENTIAL)
			return trl_errf(
			    err, TRL_EINVAL,
			    "train_sampling_strategy random: kto's KL term pairs "
			    "each example with its neighbour in file order, so it "
			    "needs sequential (TRL's default for kto)");
		if (tr->kto.type == TRL_KTO_KTO && cfg->per_device_train_batch_size < 2)
			return trl_errf(
			    err, TRL_EINVAL,
			    "per_device_train_batch_size 1: kto's KL term needs at "
			    "least 2 examples per micro-batch");
		break;
	case TRL_METHOD_CPO: {
		static const char *const names[] = {"sigmoid", "hinge", "ipo", "simpo"};
		int t = -1;
		for (int i = 0; i < 4 && n == 1; i++)
			if (strcmp(items[0], names[i]) == 0)
				t = i;
		if (t < 0)
			return trl_errf(
			    err, TRL_EINVAL,
			    "loss_type '%s': cpo takes sigmoid, hinge, ipo or simpo",
			    cfg->loss_type);
		tr->cpo =
		    (CpoOptions){(TrlCpoLoss)t,  cfg->beta,        cfg->label_smoothing,
		                 cfg->cpo_alpha, cfg->simpo_gamma, cfg->alpha};
		break;
	}
	}
	tr->need_ref = tr->method->uses_ref || cfg->method == TRL_METHOD_PPO ||
	               (tr->method->online && cfg->beta > 0);
	if (tr->method->online) {
		int G = cfg->num_generations;
		long per_step = (long)cfg->per_device_train_batch_size *
		                cfg->gradient_accumulation_steps;
		if (cfg->precompute_ref_log_probs)
			return trl_errf(
			    err, TRL_EINVAL,
			    "precompute_ref_log_probs: %s samples new completions "
			    "every step, so there is nothing to precompute",
			    tr->method->name);
		long N = per_step * tr->comm->size;
		if (cfg->method != TRL_METHOD_PPO && N % G != 0)
			return trl_errf(
			    err, TRL_EINVAL,
			    "num_generations %d does not divide the %ld completions of a "
			    "step "
			    "(per_device_train_batch_size %d x "
			    "gradient_accumulation_steps %d "
			    "x %d trainer rank%s): each prompt's group must be whole",
			    G, N, cfg->per_device_train_batch_size,
			    cfg->gradient_accumulation_steps, tr->comm->size,
			    tr->comm->size > 1 ? "s" : "");
	}
	if (!tr->need_ref && (cfg->precompute_ref_log_probs ||
	                      cfg->ref_model_name_or_path[0] || cfg->sync_ref_model))
		return trl_errf(err, TRL_EINVAL, "%s: method %s uses no reference model",
		                cfg->precompute_ref_log_probs ? "precompute_ref_log_probs"
		                : cfg->sync_ref_model         ? "sync_ref_model"
		                                              : "ref_model_name_or_path",
		                tr->method->name);
	if (cfg->sync_ref_model && cfg->precompute_ref_log_probs)
		return trl_errf(
		    err, TRL_EINVAL,
		    "sync_ref_model and precompute_ref_log_probs: a reference "
		    "that changes cannot be precomputed");
	return TRL_OK;
}
