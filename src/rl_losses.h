/* rl_losses.h - advantages and losses of the online RL methods (TRL's GRPO,
 * RLOO and PPO) as pure functions of per-token log-probs, rewards and values,
 * with their gradients.
 *
 * Shapes: a micro-batch holds n completions of up to T tokens; per-token
 * arrays are (n, T) row-major, token t of completion i at [i * T + t]. mask
 * is TRL's loss mask: 1.0 for a completion token that counts (inside the
 * completion and, with tools, not a tool-output token; mask_truncated_completions
 * zeroes whole rows), else 0.0; values at masked positions are ignored. The
 * entropy-quantile and off-policy masks are not part of mask: TRL applies them
 * to the policy term only, so they go into grpo_loss's per-token weights w.
 * Log-probs are of the logits divided by the sampling temperature. Gradients
 * (dlp, dv) are d loss / d input, written (not accumulated) at every position,
 * 0 where the mask is 0. Reference and old-policy log-probs, importance
 * weights, advantages and returns get no gradient (they are detached in TRL).
 * Sums run in double. Nothing here allocates or fails; sizes are >= 1.
 */
#ifndef TRL_RL_LOSSES_H
#define TRL_RL_LOSSES_H

#include <stddef.h>

/* scale_rewards */
typedef enum {
	TRL_SCALE_GROUP = 0, /* divide by the group's std + 1e-4 (TRL's default, true) */
	TRL_SCALE_BATCH,     /* by the std of the whole batch + 1e-4 */
	TRL_SCALE_NONE       /* no division (Dr. GRPO; false) */
} TrlScaleRewards;

/* GRPO loss_type */
typedef enum {
	TRL_GRPO_GRPO = 0,
	TRL_GRPO_BNPO,
	TRL_GRPO_DR_GRPO,
	TRL_GRPO_DAPO
} TrlGrpoLoss;

/* vllm_importance_sampling_mode */
typedef enum {
	TRL_IS_TOKEN_TRUNCATE = 0,
	TRL_IS_TOKEN_MASK,
	TRL_IS_SEQUENCE_TRUNCATE,
	TRL_IS_SEQUENCE_MASK
} TrlIsMode;

/* The enum value named by s, or -1: scale_rewards "group", "batch", "none"
 * (and "true" / "false", which TRL maps to "group" / "none"); loss_type
 * "grpo", "bnpo", "dr_grpo", "dapo"; vllm_importance_sampling_mode
 * "token_truncate", "token_mask", "sequence_truncate", "sequence_mask". */
int rl_scale_rewards_parse(const char *s);
int rl_grpo_loss_parse(const char *s);
int rl_is_mode_parse(const char *s);

/* ---- rewards and advantages --------------------------------------------------- */

/* r (n, F): reward function k's reward of completion i at [i * F + k], NaN
 * where the function did not apply (TRL's None). out[i] = the nansum over k
 * of w[k] * r[i * F + k]; NaN when every value of row i is NaN: TRL marks such
 * a completion unscorable, leaves it out of the group statistics and gives it
 * advantage 0 (grpo_advantages and rloo_advantages do both). */
void rl_combine_rewards(const double *r, const double *w, int n, int F, double *out);

/* GRPO advantages of n = groups * G rewards (groups of G consecutive
 * completions of one prompt): adv[i] = r[i] - mean of i's group, divided by
 * std + 1e-4 per scale (std with Bessel's correction, as TRL's nanstd; the
 * group std for "group", the std of all n rewards for "batch"). NaN rewards
 * are left out of every mean and std, and a NaN advantage (an unscorable
 * completion, a group or batch with fewer than two scorable rewards when
 * scaling) becomes 0, as TRL's nan_to_num. When group_std is not NULL,
 * group_std[i] is the std TRL compares with 0 for frac_reward_zero_std: that
 * of i's group for "group" and "none", that of the batch for "batch"; NaN
 * with fewer than two scorable values, 0 when G (or n, for "batch") is 1. */
void grpo_advantages(const double *r, int n, int G, TrlScaleRewards scale, double *adv,
                     double *group_std);

/* RLOO: the baseline of i is the mean of the other scorable (non-NaN)
 * rewards of its group; adv = r - baseline; with normalize, adv is then
 * standardised over the scorable completions of the n as TRL's
 * normalize_advantages does: (adv - mean) / (std + 1e-4), Bessel std. NaN
 * results (unscorable, or alone in its group) become 0; G == 1 gives 0. The
 * reward's KL penalty and reward_clip_range are applied by the caller. */
void rloo_advantages(const double *r, int n, int G, int normalize, double *adv);

/* ---- GRPO ---------------------------------------------------------------------- */

typedef struct GrpoOptions {
	TrlGrpoLoss loss_type;
	double epsilon_low, epsilon_high; /* clip(rho, 1 - low, 1 + high) */
	double delta;                     /* > 0: caps rho in the unclipped term */
	int sequence_level;        /* importance_sampling_level "sequence" (GSPO) */
	double beta;               /* > 0: + beta * k3 KL against ref_lp */
	int max_completion_length; /* dr_grpo's normaliser */
} GrpoOptions;

/* Sums over the micro-batch written by grpo_loss; TRL's metrics are ratios
 * of their sums over ranks: kl = kl / tokens, clip_ratio/{low,high,region}_mean
 * = *_clipped / clip_count. */
typedef struct GrpoStats {
	double tokens;         /* sum of mask */
	double kl;             /* sum of mask * the k3 KL (beta > 0, else 0) */
	double low_clipped;    /* rho < 1 - epsilon_low with A < 0 */
	double high_clipped;   /* rho > 1 + epsilon_high with A > 0 */
	double region_clipped; /* either */
	/* The clip sums count active tokens at token level and completions (all
	 * n, active or not) at sequence level; clip_count is that count. */
	double clip_count;
	/* Over the completions: min of the per-completion fraction of low-clipped
	 * tokens and max of the high-clipped one (clip_ratio/low_min, high_max,
	 * reduced over ranks with min / max). Completions without an active token
	 * are skipped at token level (TRL's NaN); +inf / -inf when none is left. */
	double low_min, high_max;
} GrpoStats;

/* TRL's GRPO _compute_loss for one micro-batch on one rank. The ratio is
 * rho = exp(lp - old_lp) per token, or at sequence level one ratio per
 * completion, exp(sum_t (lp - old_lp) m / max(sum_t m, 1)), whose gradient
 * flows to every active token of the completion. Per token
 *   l = w * -min(rho' A, clip(rho, 1 - low, 1 + high) A) + beta * kl,
 * rho' = min(rho, delta) when delta > 0 (else rho), kl the k3 estimator
 * exp(ref - lp) - (ref - lp) - 1; w (n, T) multiplies the policy term only
 * (the importance-sampling weights of is_correction times the entropy and
 * off-policy masks; NULL for 1). The clip statistics look at rho' (TRL
 * reassigns coef_1 before counting). Aggregation per loss_type (m = mask):
 *   grpo     mean_i(sum_t l m / max(sum_t m, 1)) / ga
 *   bnpo     sum(l m) / max(sum(m), 1) / ga
 *   dr_grpo  sum(l m) / (n * max_completion_length) / ga
 *   dapo     sum(l m) / norm, norm = max(active tokens of the whole generation
 *            batch, every micro-batch of every rank, 1) / ranks; ga unused
 * Returns that loss (TRL's logged policy_loss is it times ga, except dapo);
 * the caller averages the ranks' gradients (DDP). lp (n, T); old_lp (n, T),
 * NULL for old = lp (TRL's detached lp: rho = 1); ref_lp (n, T) read only
 * when beta > 0; adv (n). dlp (n, T) may be NULL; st may be NULL. */
double grpo_loss(const GrpoOptions *o, int n, int T, const float *lp, const float *old_lp,
                 const float *ref_lp, const float *w, const float *mask,
                 const double *adv, double ga, double norm, float *dlp, GrpoStats *st);

/* ---- importance sampling --------------------------------------------------------- */

/* Figures of the importance-sampling correction. TRL logs, per rank then
 * averaged (mean, of the per-rank means) or reduced (min, max) over ranks:
 * sampling_logp_difference/{mean,max} = logp_diff_sum / tokens, logp_diff_max;
 * importance_sampling_ratio/{min,mean,max} = ratio_min, ratio_sum /
 * ratio_count, ratio_max. Every figure is 0 when its count is 0. */
typedef struct IsStats {
	double logp_diff_sum, logp_diff_max;    /* |old - sampling| over active tokens */
	double ratio_min, ratio_max, ratio_sum; /* of the applied ratio */
	double tokens; /* active tokens: the count of logp_diff */
	/* The count behind the ratio figures: active tokens in token modes, all
	 * n completions (active or not) in sequence modes. */
	double ratio_count;
} IsStats;

/* vLLM-style importance-sampling correction from the trainer's old_lp and the
 * generator's sampling log-probs samp_lp (n, T): the ratio exp(old - samp)
 * per token (token modes) or exp(sum_t (old - samp) m) per completion
 * (sequence modes); truncate clamps it to [cmin, cmax], mask replaces a ratio
 * outside [cmin, cmax] by 0. TRL's None is cmin <= 0 (no lower bound) and
 * cmax = INFINITY (no upper bound). Writes the applied ratio into w (n, T),
 * the completion's ratio at each of its tokens in sequence modes, 0 where
 * mask is 0. st may be NULL. */
void is_correction(TrlIsMode mode, double cmin, double cmax, int n, int T,
                   const float *old_lp, const float *samp_lp, const float *mask, float *w,
                   IsStats *st);

/* The q-quantile of v[0..n) with linear interpolation (torch.quantile's
 * default, including its lerp rounding); sorts v in place. n >= 1. GRPO's
 * top_entropy_quantile = p keeps the active tokens whose entropy is >= the
 * (1 - p)-quantile of the active entropies of all ranks. */
double rl_quantile(double *v, size_t n, double q);

/* ---- RLOO ------------------------------------------------------------------------ */

/* Counts over the micro-batch's completions; TRL's clip_ratio/{low,high,region}_mean are
 * the sums over ranks divided by the summed seqs, low_min is 1 only when every completion
 * is low-clipped, high_max 1 when any is high-clipped. */
typedef struct RlooStats {
	double seqs; /* n: TRL counts every completion, active or not */
	double low_clipped, high_clipped, region_clipped; /* counted per completion */
} RlooStats;

/* TRL's RLOO loss for one micro-batch: the sequence ratio
 * rho = exp(sum_t (lp - old_lp) m) (the log-probs are summed, not averaged),
 * -min(rho A, clip(rho, 1 - low, 1 + high) A) averaged over the n
 * completions, divided by ga (TRL returns the mean; the Trainer divides it by
 * the accumulation steps). lp, old_lp (n, T); adv (n). dlp may be NULL, st
 * may be NULL. */
double rloo_loss(double epsilon_low, double epsilon_high, int n, int T, const float *lp,
                 const float *old_lp, const float *mask, const double *adv, double ga,
                 float *dlp, RlooStats *st);

/* ---- PPO -------------------------------------------------------------------------- */

/* Per-token KL estimators of lp against ref: k1 = lp - ref,
 * k3 = (exp(ref - lp) - 1) - (ref - lp). */
double rl_kl_k1(double lp, double ref);
double rl_kl_k3(double lp, double ref);

/* PPO masks, as TRL's experimental PPOTrainer builds them from L_i, the index
 * of the last response token of row i: the policy mask is 1 at t <= L_i (TRL's
 * ~padding_mask), the value mask 1 at t <= L_i + 1 (~padding_mask_p1: one
 * more position, where the score is placed when L_i + 1 < T). */

/* Generalised advantage estimation over the response positions of n rows,
 * TRL's reversed loop: for t = T-1 down to 0,
 *   delta_t = r_t + gamma V_{t+1} - V_t   (V_T = 0),
 *   A_t = delta_t + gamma lam A_{t+1}     (A_T = 0),  ret_t = A_t + V_t.
 * rewards, values, mask (n, T): mask is the value mask; positions where it is
 * 0 count as reward 0 and value 0 (TRL fills values past L_i + 1 with 0, and
 * its rewards there are 0), so with TRL's masks every position past the end
 * gets A = ret = 0. adv and ret (n, T) are written at every position; whiten
 * adv afterwards with rl_masked_whiten over the policy mask. */
void ppo_gae(int n, int T, const float *rewards, const float *values, const float *mask,
             double gamma, double lam, float *adv, float *ret);

/* TRL's masked_whiten of x[0..N) in place: mean = sum(x m) / sum(m),
 * var = sum((x - mean)^2 m) / sum(m) * sum(m) / (sum(m) - 1) (unbiased),
 * x = (x - mean) / sqrt(var + 1e-8), plus mean again unless shift_mean.
 * Positions where mask is 0 are set to 0, as TRL does right after each call
 * (advantages over the policy mask, whiten_rewards over the value mask).
 * Needs sum(m) >= 2 (TRL raises for 0 and divides by 0 for 1). */
void rl_masked_whiten(float *x, const float *mask, size_t N, int shift_mean);

/* What TRL logs of a PPO micro-batch's policy term. */
typedef struct PpoPolicyStats {
	double clipfrac;   /* masked mean of [clipped term > unclipped]
	                      (policy/clipfrac_avg) */
	double approxkl;   /* 0.5 mean over all n T of (lp - old)^2, 0 where masked */
	double ratio_mean; /* mean of rho over all n T, 1 where masked (val/ratio) */
} PpoPolicyStats;

/* PPO's clipped policy loss of one micro-batch: with rho = exp(lp - old_lp),
 *   pg = masked mean of max(-A rho, -A clip(rho, 1 - cliprange, 1 + cliprange))
 * over the policy mask. lp, old_lp, adv, mask (n, T). Returns pg as TRL logs
 * it (loss/policy_avg); dlp (n, T) gets d (scale * pg) / d lp, scale = 1 / ga
 * for Accelerate's division of the loss by the accumulation steps. An empty
 * mask gives 0 and a zero gradient (TRL: NaN). dlp and st may be NULL. */
double ppo_policy_loss(double cliprange, int n, int T, const float *lp,
                       const float *old_lp, const float *adv, const float *mask,
                       double scale, float *dlp, PpoPolicyStats *st);

/* PPO's clipped value loss of one micro-batch:
 *   vf = 0.5 masked mean of max((V - R)^2, (clip(V, Vold - c, Vold + c) - R)^2)
 * over the value mask, c = cliprange_value. v (the value head's new
 * predictions), old_v (the rollout's), ret (the returns R), mask (n, T).
 * Returns vf as TRL logs it (loss/value_avg); dv (n, T) gets
 * d (scale * vf) / d v, scale = vf_coef / ga. clipfrac (may be NULL) gets the
 * masked mean of [clipped term > unclipped] (val/clipfrac_avg). An empty mask
 * gives 0. */
double ppo_value_loss(double cliprange_value, int n, int T, const float *v,
                      const float *old_v, const float *ret, const float *mask,
                      double scale, float *dv, double *clipfrac);

#endif
