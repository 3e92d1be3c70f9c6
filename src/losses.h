/* losses.h - the losses of the offline preference and reward methods (TRL's
 * DPO family, KTO, ORPO, CPO/SimPO/AlphaPO, reward modelling) as pure
 * functions of sequence log-probs and rewards, with their gradients.
 *
 * Every function works on one micro-batch of n examples and returns that
 * micro-batch's loss as TRL computes it (a mean over the micro-batch). The
 * training loop averages micro-batch losses over gradient accumulation and
 * ranks, as DDP does, and turns the gradients returned here into gradients of
 * the token log-probs (d lp / d logits = onehot - softmax).
 *
 * Inputs are sums over completion tokens: pc, pr = policy log-probs of the
 * chosen and rejected completions; rc, rr = the reference's; nc, nr = their
 * completion token counts (>= 1). nll = the token-mean negative log-likelihood
 * of the chosen completions of the micro-batch (F.cross_entropy over them).
 * Gradient outputs (dpc, dpr, ...) are d loss / d input and are written, not
 * accumulated; a NULL output is skipped. Reference log-probs get no gradient.
 */
#ifndef TRL_LOSSES_H
#define TRL_LOSSES_H

/* DPO loss_type values, in TRL's order. */
typedef enum {
	TRL_DPO_SIGMOID = 0,
	TRL_DPO_HINGE,
	TRL_DPO_IPO,
	TRL_DPO_EXO_PAIR,
	TRL_DPO_NCA_PAIR,
	TRL_DPO_ROBUST,
	TRL_DPO_BCO_PAIR,
	TRL_DPO_SPPO_HARD,
	TRL_DPO_AOT,
	TRL_DPO_AOT_UNPAIRED,
	TRL_DPO_APO_ZERO,
	TRL_DPO_APO_DOWN,
	TRL_DPO_DISCOPOP,
	TRL_DPO_SFT,
	TRL_DPO_SIGMOID_NORM,
	TRL_DPO_LOSS_COUNT
} TrlDpoLoss;

/* f_divergence_type: how each log-ratio u = lp - ref_lp becomes a score. */
typedef enum {
	TRL_FDIV_REVERSE_KL = 0, /* u */
	TRL_FDIV_FORWARD_KL,     /* -exp(-u) */
	TRL_FDIV_JS,             /* logsigmoid(u) */
	TRL_FDIV_ALPHA           /* exp((a-1) u) / (a-1), u when a == 1 */
} TrlFDivergence;

#define TRL_MAX_LOSS_TYPES 8

/* "sigmoid", ... ; NULL for an unknown value. */
const char *dpo_loss_name(TrlDpoLoss t);
/* The TrlDpoLoss named by s, or -1. */
int dpo_loss_parse(const char *s);

typedef struct DpoOptions {
	int n_types;                          /* 1..TRL_MAX_LOSS_TYPES */
	TrlDpoLoss types[TRL_MAX_LOSS_TYPES]; /* loss_type (a list: MPO, RPO) */
	double weights[TRL_MAX_LOSS_TYPES];   /* loss_weights; 1 each when not given */
	double beta;
	double
	    label_smoothing; /* robust: flip rate; exo_pair: epsilon; aot*: smoothing */
	double discopop_tau;
	TrlFDivergence f_divergence;
	double f_alpha_divergence_coef;
} DpoOptions;

/* One micro-batch of n preference pairs. wc, wr: WPO weights (use_weighting),
 * computed without gradient by dpo_wpo_weight, or NULL for none. */
typedef struct PairBatch {
	int n;
	const double *pc, *pr; /* (n) policy */
	const double *rc, *rr; /* (n) reference; NULL for methods without one */
	const double *nc, *nr; /* (n) completion token counts */
	const double *wc, *wr; /* (n) or NULL */
	double nll;            /* token-mean NLL of the chosen completions */
	double *scratch;       /* (4 n) room for AOT's sorts, or NULL: dpo_loss
	                        * allocates it (a training loop passes its own) */
} PairBatch;

/* sum_k weights[k] * mean_i L_k(i) (TRL's DPOTrainer). AOT sorts within the
 * micro-batch. Writes dpc, dpr (n each) and *dnll (the sft term).
 * A NULL rc or rr counts as zeros. ipo and sigmoid_norm clamp nc, nr at 1.
 * AOT breaks ties in its sort by pair index, and wc, wr are not applied to
 * its terms (TRL rejects use_weighting with aot and aot_unpaired). Returns
 * NaN when AOT's scratch is NULL and cannot be allocated. */
double dpo_loss(const DpoOptions *o, const PairBatch *b, double *dpc, double *dpr,
                double *dnll);

/* WPO's weight of one sequence from its per-token values: the mean over its
 * completion tokens of lp_t - (logsumexp(2 z_t) - 2 logsumexp(z_t)), then exp.
 * sum_aligned = that sum over the tokens, count = the tokens. */
double dpo_wpo_weight(double sum_aligned, double count);

/* KTO. lp, ref: (n) summed log-probs; label: (n) 1 desirable, 0 undesirable;
 * z0: the KL estimate (already clamped at 0; 0 for apo_zero_unpaired). The
 * loss is the mean over all n of the weighted per-example losses (0 for
 * n = 0). Writes dlp (n). */
typedef enum { TRL_KTO_KTO = 0, TRL_KTO_APO_ZERO_UNPAIRED } TrlKtoLoss;
typedef struct KtoOptions {
	TrlKtoLoss type;
	double beta, desirable_weight, undesirable_weight;
} KtoOptions;
double kto_loss(const KtoOptions *o, int n, const double *lp, const double *ref,
                const int *label, double z0, double *dlp);

/* ORPO: nll - beta * mean(logsigmoid(log_odds)), on the average log-probs
 * pc/nc and pr/nr (which must be < 0). Writes dpc, dpr, *dnll;
 * *log_odds_ratio and *log_odds_chosen get the micro-batch means TRL logs
 * (NULL: skipped): mean(logsigmoid(log_odds)) and mean(log_odds). TRL's ORPO
 * takes its nll over the prompt and the completion of the chosen sequences. */
double orpo_loss(double beta, const PairBatch *b, double *dpc, double *dpr, double *dnll,
                 double *log_odds_ratio, double *log_odds_chosen);

/* CPO, SimPO, AlphaPO (TRL's CPOTrainer): loss_type sigmoid, hinge, ipo or
 * simpo; mean + cpo_alpha * nll. alpha != 0 is AlphaPO's reward transform.
 * ipo and simpo work on the average log-probs pc/nc, pr/nr; sigmoid and hinge
 * on the sums. label_smoothing applies to sigmoid and simpo. */
typedef enum {
	TRL_CPO_SIGMOID = 0,
	TRL_CPO_HINGE,
	TRL_CPO_IPO,
	TRL_CPO_SIMPO
} TrlCpoLoss;
typedef struct CpoOptions {
	TrlCpoLoss type;
	double beta, label_smoothing, cpo_alpha, simpo_gamma, alpha;
} CpoOptions;
double cpo_loss(const CpoOptions *o, const PairBatch *b, double *dpc, double *dpr,
                double *dnll);
/* The rewards CPOTrainer logs for one pair (rewards/chosen, rewards/rejected):
 * beta times the (AlphaPO-transformed) sum or average log-prob, without
 * SimPO's gamma. */
void cpo_rewards(const CpoOptions *o, double pc, double pr, double nc, double nr,
                 double *chosen, double *rejected);

/* BCO (TRL's BCOTrainer, without UDM weights): r = beta (lp - ref), and with
 * delta the running mean of the rewards, a desirable example's loss is
 * -logsigmoid(r - delta), an undesirable one's -logsigmoid(delta - r); the
 * mean over all n. label: 1 desirable, 0 undesirable. delta gets no
 * gradient. */
double bco_loss(double beta, int n, const double *lp, const double *ref, const int *label,
                double delta, double *dlp);

/* BCO's running moments of the rewards (TRL's RunningMoments): starts at
 * mean 0, var 1, count 1e-24; each update merges a batch's mean, population
 * variance and count (over every rank). */
typedef struct RunningMoments {
	double mean, var, count;
} RunningMoments;
void running_moments_init(RunningMoments *r);
void running_moments_update(RunningMoments *r, double xs_mean, double xs_var,
                            double xs_count);

/* Reward modelling (Bradley-Terry): mean(-logsigmoid(r_c - r_r - margin)) +
 * center_rewards_coefficient * mean((r_c + r_r)^2); margin NULL = 0. */
double reward_loss(int n, const double *r_c, const double *r_r, const double *margin,
                   double center_rewards_coefficient, double *dr_c, double *dr_r);

#endif
