/* ppo.c - TRL's PPO as an online method: a value model trained beside the
 * policy, the reward model's score at the end of each completion, a per-token
 * KL penalty, GAE and clipped policy and value losses over mini-batches. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt_h5.h"
#include "model_io.h"
#include "online.h"
#include "optim.h"

/* ppo_acc slots: the step's sums over its micro-batches (this rank). */
enum {
	PA_PG,       /* loss/policy_avg */
	PA_VF,       /* loss/value_avg */
	PA_CLIP,     /* policy/clipfrac_avg */
	PA_VCLIP,    /* val/clipfrac_avg */
	PA_APPROXKL, /* policy/approxkl_avg */
	PA_RATIO,    /* val/ratio */
	PA_RATIO_SQ, /* for val/ratio_var */
	PA_ENT,      /* policy/entropy_avg: masked entropy sum */
	PA_ENT_N,
	PA_MICRO, /* micro-batches */
	PA_N
};

enum { PPO_NBUF = 12 };

/* ppo's round buffers (the rollout's, the reference's and the value
 * model's per-token figures, rewards, advantages, returns, masks) and its
 * per-micro-batch ones. */
static int ppo_buffers(Online *o, int mini_batches, OnlineBuf *b)
{
	size_t RL = (size_t)o->GAR * o->B * o->Lc, BL = (size_t)o->B * o->Lc;
	OnlineBuf list[] = {
	    ONLINE_BUF(o->old_round, RL),
	    ONLINE_BUF(o->ref_round, RL),
	    ONLINE_BUF(o->val_round, RL),
	    ONLINE_BUF(o->adv_round, RL),
	    ONLINE_BUF(o->ret_round, RL),
	    ONLINE_BUF(o->vmask_round, RL),
	    ONLINE_BUF(o->gae, RL),
	    ONLINE_BUF(o->vbuf, BL),
	    ONLINE_BUF(o->dvbuf, BL),
	    ONLINE_BUF(o->score, (size_t)o->GAR * o->B),
	    ONLINE_BUF(o->mb_order, mini_batches),
	};
	int n = (int)(sizeof list / sizeof list[0]);
	COMM_ASSERT(n <= PPO_NBUF);
	memcpy(b, list, sizeof list);
	return n;
}

/* The value model: value_model_path, else the reward model, read as a
 * sequence classifier with one label and trained (ZeRO like the policy). */
int ppo_setup(Trainer *tr, Online *o, TrlErr *err)
{
	const Config *cfg = tr->cfg;
	const char *dir =
	    cfg->value_model_path[0] ? cfg->value_model_path : cfg->reward_model;
	unsigned flags = zero_model_flags(cfg->zero_stage);
	Model full;
	memset(&full, 0, sizeof full);
	int rc = model_load_dir_flags(flags ? &full : &o->vm, dir, 1, (uint64_t)cfg->seed,
	                              flags ? MODEL_NO_GRADS : 0, NULL, err);
	if (rc) {
		char msg[sizeof err->msg];
		snprintf(msg, sizeof msg, "%s", err->msg);
		trl_errf(err, rc, "%s: %s",
		         cfg->value_model_path[0] ? "value_model_path" : "reward_model",
		         msg);
	}
	if (!rc && flags)
		rc = model_init_flags(&o->vm, &full.cfg, flags, err);
	if (!rc && o->vm.params && flags)
		memcpy(o->vm.params, full.params, full.table.total * sizeof(float));
	/* zero_init is collective: only when every trainer has the model. */
	if ((rc = comm_agree(tr->comm, rc, err)) == 0)
		rc = zero_init(&o->vz, &o->vm, tr->comm->world, cfg->zero_stage,
		               cfg->stage3_param_persistence_threshold, cfg->overlap_comm,
		               full.params, (unsigned long long)cfg->seed,
		               cfg->adam_beta1, cfg->adam_beta2, cfg->adam_epsilon,
		               cfg->weight_decay, cfg->weight_decay_embeddings, err);
	model_free(&full);
	o->has_vm = 1; /* model_free and zero_free are safe on what did not start */
	if (!rc)
		rc = model_alloc_activations(&o->vm, tr->rows_cap, tr->maxT, err);
	OnlineBuf bufs[PPO_NBUF];
	int nbuf = ppo_buffers(o, cfg->num_mini_batches, bufs);
	if (!rc)
		rc = online_bufs_alloc(bufs, nbuf, err);
	return rc;
}

void ppo_free(Online *o)
{
	if (!o->ppo)
		return;
	if (o->has_vm) {
		zero_free(&o->vz);
		model_free(&o->vm);
	}
	OnlineBuf bufs[PPO_NBUF];
	online_bufs_free(bufs, ppo_buffers(o, 0, bufs));
}

/* The value model's prediction at each completion position (the hidden state
 * that predicts completion token t, as TRL slices full_value) into out (B, Lc). */
static void value_forward(Trainer *tr, Online *o, const Batch *b, float *out)
{
	model_forward(&o->vm, b);
	int T = b->T;
	for (int i = 0; i < b->B; i++) {
		int t0 = online_first_target(b, i);
		for (int t = 0; t < o->Lc; t++) {
			int x = t0 + t;
			out[(size_t)i * o->Lc + t] =
			    x < T ? o->vm.logits[(size_t)i * T + x] : 0.0f;
		}
	}
	(void)tr;
}

void ppo_round(Trainer *tr, Online *o)
{
	const Config *cfg = tr->cfg;
	int B = o->B, Lc = o->Lc;
	size_t BL = (size_t)B * Lc;
	/* The rollout's log-probs, the reference's and the values: forwards
	 * without gradients over every micro-batch of the round. */
	for (int j = 0; j < o->GAR; j++) {
		Batch *b = &tr->mb[j];
		size_t off = (size_t)j * BL;
		online_forward_lp(tr, &tr->ref, b, o->ref_round + off);
		online_forward_lp(tr, &tr->model, b, o->old_round + off);
		value_forward(tr, o, b, o->val_round + off);
	}
	/* Per-token rewards: -kl_coef * KL, plus the score one past the last
	 * completion token (the last one when the completion fills
	 * max_completion_length), as TRL places it; the value mask reaches one
	 * position past the completion (TRL's padding_mask_p1). */
	float *rew = o->gae; /* the per-token rewards, GAE's input */
	double kl_sum = 0, nsr_sum = 0, score_sum = 0, ent_n = 0, eos = 0;
	int k3 = cfg->kl_estimator == 1;
	for (int j = 0; j < o->GAR; j++) {
		const RolloutChunk *c = &o->chunk[j];
		for (int i = 0; i < B; i++) {
			size_t off = (size_t)j * BL + (size_t)i * Lc;
			int n = c->n[i], k = j * o->Ntr + o->rank;
			double score = o->r_sum[(size_t)k * B + i];
			int ended = c->finish[i] == TRL_GEN_EOS;
			eos += ended;
			if (!ended && cfg->missing_eos_penalty > 0)
				score -= cfg->missing_eos_penalty;
			o->score[(size_t)j * B + i] = score;
			double kls = 0;
			for (int t = 0; t < Lc; t++) {
				float m = o->mask_round[off + t];
				double lp = o->old_round[off + t],
				       rf = o->ref_round[off + t];
				double kl =
				    m > 0 ? (k3 ? rl_kl_k3(lp, rf) : rl_kl_k1(lp, rf))
				          : 0.0;
				rew[off + t] = (float)(-cfg->kl_coef * kl);
				kls += kl;
				o->vmask_round[off + t] = t <= n ? 1.0f : 0.0f;
			}
			int end = n < Lc ? n : Lc - 1;
			rew[off + end] += (float)score;
			kl_sum += kls;
			nsr_sum += -cfg->kl_coef * kls;
			score_sum += score;
			ent_n += 1;
		}
	}
	size_t RL = (size_t)o->GAR * BL;
	if (cfg->whiten_rewards)
		rl_masked_whiten(rew, o->vmask_round, RL, 0);
	/* GAE over each row, then the advantages whitened over this rank's
	 * round (TRL whitens per process). */
	ppo_gae(o->GAR * B, Lc, rew, o->val_round, o->vmask_round, cfg->gamma, cfg->lam,
	        o->adv_round, o->ret_round);
	rl_masked_whiten(o->adv_round, o->mask_round, RL, 1);
	double s[5] = {kl_sum, nsr_sum, score_sum, ent_n, eos};
	MPI_Allreduce(MPI_IN_PLACE, s, 5, MPI_DOUBLE, MPI_SUM, tr->comm->world);
	online_step_fig(o, OS_PPO_KL, s[0] / s[3]);
	online_step_fig(o, OS_PPO_NSR, s[1] / s[3]);
	online_step_fig(o, OS_PPO_SCORES, s[2] / s[3]);
	online_step_fig(o, OS_PPO_RLHF, (s[1] + s[2]) / s[3]);
	online_step_fig(o, OS_PPO_EOS, s[4]);
}

void ppo_pick_minibatch(Trainer *tr, Online *o, long step)
{
	const Config *cfg = tr->cfg;
	int mbs = cfg->num_mini_batches;
	long i = step % o->iters, epoch = i / mbs;
	/* Each epoch visits the mini-batches in its own seeded order (TRL
	 * shuffles rows; here whole mini-batches move, the same on every rank). */
	if (i % mbs == 0) {
		for (int m = 0; m < mbs; m++)
			o->mb_order[m] = m;
		Rng r;
		rng_seed(&r, (uint64_t)cfg->seed * 0x9E3779B97F4A7C15ull ^
		                 (uint64_t)(step / o->iters) * 1315423911ull ^
		                 (uint64_t)epoch);
		for (int m = mbs - 1; m > 0; m--) {
			int k = (int)(rng_next(&r) % (uint64_t)(m + 1));
			int t = o->mb_order[m];
			o->mb_order[m] = o->mb_order[k];
			o->mb_order[k] = t;
		}
	}
	tr->mb_base = o->mb_order[i % mbs] * o->GA;
	memset(o->ppo_acc, 0, sizeof o->ppo_acc);
}

void ppo_micro(Trainer *tr, Batch *b, const int *idx, double scale, int backward,
               int count, Metrics *acc)
{
	Online *o = tr->on;
	const Config *cfg = tr->cfg;
	int B = o->B, Lc = o->Lc, T = b->T;
	int j = (idx[0] / B) / o->Ntr;
	size_t BL = (size_t)B * Lc, off = (size_t)j * BL;
	const float *mask = o->mask_round + off, *vmask = o->vmask_round + off;
	zero_begin_micro(&o->vz, (j - tr->mb_base) == o->GA - 1);
	/* The value head first: its activations are its own, and its backward
	 * can run before the policy's forward overwrites nothing of it. */
	value_forward(tr, o, b, o->vbuf);
	double vclip = 0;
	double vf = ppo_value_loss(cfg->cliprange_value, B, Lc, o->vbuf,
	                           o->val_round + off, o->ret_round + off, vmask,
	                           cfg->vf_coef / o->GA, o->dvbuf, &vclip);
	if (backward) {
		memset(o->vm.logits, 0, (size_t)B * T * sizeof(float));
		for (int i = 0; i < B; i++) {
			int t0 = online_first_target(b, i);
			for (int t = 0; t < Lc && t0 + t < T; t++)
				o->vm.logits[(size_t)i * T + t0 + t] =
				    (float)(scale * o->dvbuf[(size_t)i * Lc + t]);
		}
		model_backward(&o->vm, b);
	}
	Model *m = &tr->model;
	online_forward_lp(tr, m, b, o->lp);
	PpoPolicyStats ps;
	double pg = ppo_policy_loss(cfg->cliprange, B, Lc, o->lp, o->old_round + off,
	                            o->adv_round + off, mask, 1.0 / o->GA, o->dlp, &ps);
	if (backward)
		online_backward_lp(tr, m, b, o->dlp, scale);
	if (!count)
		return;
	double es = 0, en = 0;
	for (int i = 0; i < B; i++) {
		int t0 = online_first_target(b, i);
		for (int t = 0; t < Lc && t0 + t < T; t++) {
			double w = mask[(size_t)i * Lc + t];
			es += w * tr->ts.entropy[(size_t)i * T + t0 + t];
			en += w;
		}
	}
	double *a = o->ppo_acc;
	a[PA_PG] += pg;
	a[PA_VF] += vf;
	a[PA_CLIP] += ps.clipfrac;
	a[PA_VCLIP] += vclip;
	a[PA_APPROXKL] += ps.approxkl;
	a[PA_RATIO] += ps.ratio_mean;
	a[PA_RATIO_SQ] += ps.ratio_mean * ps.ratio_mean;
	a[PA_ENT] += es;
	a[PA_ENT_N] += en;
	a[PA_MICRO] += 1;
	/* TRL's loss: pg + vf_coef * vf. */
	metrics_add(acc, MET_LOSS, pg + cfg->vf_coef * vf, 1.0);
	metrics_add(acc, MET_ENTROPY, es, en);
}

void ppo_step_end(Trainer *tr, Online *o, double lr)
{
	const Config *cfg = tr->cfg;
	double vnorm = 0;
	double *a = o->ppo_acc;
	/* The value model takes its own AdamW step at the policy's learning
	 * rate; its gradient is clipped on its own (TRL clips the pair's joint
	 * norm). A step the loop skipped (no target token on any rank, the same
	 * verdict everywhere) ran no micro-step: no update either. */
	if (a[PA_MICRO] > 0)
		zero_step(&o->vz, lr, cfg->max_grad_norm, &vnorm);
	MPI_Allreduce(MPI_IN_PLACE, a, PA_N, MPI_DOUBLE, MPI_SUM, tr->comm->world);
	double n = a[PA_MICRO] > 0 ? a[PA_MICRO] : 1;
	online_step_fig(o, OS_PPO_PG, a[PA_PG] / n);
	online_step_fig(o, OS_PPO_VF, a[PA_VF] / n);
	online_step_fig(o, OS_PPO_CLIP, a[PA_CLIP] / n);
	online_step_fig(o, OS_PPO_VCLIP, a[PA_VCLIP] / n);
	online_step_fig(o, OS_PPO_APPROXKL, a[PA_APPROXKL] / n);
	online_step_fig(o, OS_PPO_RATIO, a[PA_RATIO] / n);
	double mean = a[PA_RATIO] / n;
	online_step_fig(o, OS_PPO_RATIO_VAR,
	                n > 1 ? (a[PA_RATIO_SQ] - n * mean * mean) / (n - 1) : 0);
	online_step_fig(o, OS_PPO_ENT, a[PA_ENT_N] > 0 ? a[PA_ENT] / a[PA_ENT_N] : 0);
	online_step_fig(o, OS_PPO_VNORM, vnorm);
}

/* checkpoint-<step>.h5 -> checkpoint-<step>.value.h5 */
static void value_path(const char *path, char *out, size_t cap)
{
	size_t n = strlen(path);
	if (n > 3 && strcmp(path + n - 3, ".h5") == 0)
		n -= 3;
	snprintf(out, cap, "%.*s.value.h5", (int)n, path);
}

int online_save_extra(Trainer *tr, const char *path, const CkptState *st, TrlErr *err)
{
	Online *o = tr->on;
	if (!o || !o->ppo)
		return TRL_OK;
	char vp[TRL_PATH_MAX + 128];
	value_path(path, vp, sizeof vp);
	CkptState vs = *st;
	vs.adam_step = o->vz.opt[0].step;
	vs.save_only_model = 0; /* resuming needs the moments */
	ZeroStats kept = o->vz.st;
	CkptIo io;
	int rc = ckpt_save(vp, &o->vz, tr->cfg, &vs, &io, err);
	o->vz.st = kept;
	return rc;
}

int online_load_extra(Trainer *tr, const char *path, TrlErr *err)
{
	Online *o = tr->on;
	if (!o || !o->ppo)
		return TRL_OK;
	char vp[TRL_PATH_MAX + 128];
	value_path(path, vp, sizeof vp);
	CkptState st;
	CkptIo io;
	int rc = ckpt_load(vp, &o->vz, &st, &io, err);
	if (rc) {
		char msg[sizeof err->msg];
		snprintf(msg, sizeof msg, "%s", err->msg);
		return trl_errf(err, rc,
		                "resume_from_checkpoint with ppo: the value model %s: %s",
		                vp, msg);
	}
	return TRL_OK;
}
