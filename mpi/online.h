/* online.h - the online methods' plug-in (internal to mpi/): grpo and rloo
 * rounds, rewards, advantages and losses for the training loop in train.c.
 *
 * Every function is called by every trainer at the same point. */
#ifndef TRL_ONLINE_H
#define TRL_ONLINE_H

#include <stdio.h>

#include "rewards.h"
#include "rl_losses.h"
#include "rollout.h"
#include "trainer.h"

/* The state of an online run, shared by online.c (rounds, rewards, grpo and
 * rloo) and ppo.c. */
enum { RW_ACCURACY, RW_FORMAT, RW_THINK, RW_SOFT, RW_MODEL, RW_COMMAND };
#define MAX_REWARDS 8

/* Figures of one optimizer step, logged as the mean over the window (min and
 * max figures: their extreme). */
enum {
	OS_LEN_MEAN,
	OS_LEN_MIN,
	OS_LEN_MAX,
	OS_TERM_MEAN,
	OS_TERM_MIN,
	OS_TERM_MAX,
	OS_CLIPPED,
	OS_REWARD,
	OS_REWARD_STD,
	OS_ZERO_STD,
	OS_LOW_MEAN,
	OS_LOW_MIN,
	OS_HIGH_MEAN,
	OS_HIGH_MAX,
	OS_REGION,
	OS_LOGP_DIFF_MEAN,
	OS_LOGP_DIFF_MAX,
	OS_IS_MIN,
	OS_IS_MEAN,
	OS_IS_MAX,
	OS_STALE_MEAN,
	OS_STALE_MAX,
	OS_SYNC_S,
	OS_SYNC_BYTES,
	OS_WAIT,
	OS_PPO_KL,
	OS_PPO_NSR,
	OS_PPO_SCORES,
	OS_PPO_RLHF,
	OS_PPO_EOS,
	OS_PPO_PG,
	OS_PPO_VF,
	OS_PPO_CLIP,
	OS_PPO_VCLIP,
	OS_PPO_APPROXKL,
	OS_PPO_RATIO,
	OS_PPO_RATIO_VAR,
	OS_PPO_ENT,
	OS_PPO_VNORM,
	OS_N
};
typedef struct Online {
	RolloutLink *link; /* NULL: colocated */
	RolloutPlan plan;
	int Ntr, rank, GA, B, G, Lp, Lc, N, P;
	int grpo; /* else rloo */
	int ppo;
	int GAR; /* micro-batches per trainer per round: GA, ppo: GA * num_mini_batches */
	int iters;           /* optimizer steps per round: num_iterations, ppo: epochs *
	                        mini-batches */
	long round;          /* the round the micro-batches hold, -1 before the first */
	RolloutChunk *chunk; /* (GA) */
	/* colocated generation */
	Generator gen;
	Model full;      /* stage 3: a gathered copy of the policy; LoRA: the base with
	                  * the adapters merged in (what sampling runs) */
	Lora lo_whole;   /* LoRA, stage 3: trainer 0's whole copy of the adapters */
	int base_copied; /* LoRA, stages 0-2: full holds the base's other tensors */
	int gen_ready;
	int32_t *prompts; /* (P, Lp) the round's prompts, right-padded */
	int *plen;        /* (P) */
	int *prompt_ex;   /* (P) their examples */
	/* rewards */
	int F;
	int kind[MAX_REWARDS];
	char name[MAX_REWARDS][64];
	double weight[MAX_REWARDS];
	RewardRegex fmt, think;
	int fmt_ok, think_ok;
	RewardProc proc;
	Model rm; /* reward model */
	int has_rm;
	Model rm_full; /* stage 3: the loaded weights until they are sharded */
	Zero rmz;      /* stage 3: its shards */
	int has_rmz;
	double *r_local; /* (GA * B, F) this trainer's completions */
	double *r_all;   /* (N, F) every completion of the round, in round order */
	double *r_sum, *adv, *gstd; /* (N) */
	double *kl_seq;             /* (N) rloo: sum_t (old - ref) */
	/* per micro-batch (B, Lc) */
	float *lp, *samp, *mask, *w, *dlp, *refb;
	float *old_round, *ref_round;   /* (GA, B, Lc) or NULL */
	float *mask_round, *samp_round; /* (GA, B, Lc) */
	double norm; /* dapo: active tokens of the step over the trainers */
	GrpoOptions go;
	/* the step's figures */
	double clip[6]; /* low, high, region clipped, their count, low_min, high_max */
	double isst[7]; /* diff sum, diff max, ratio min, ratio sum, ratio max, tokens,
	                 * ratio count */
	double stale, stale_max, wait_s;
	double step_fig[OS_N];
	int step_has[OS_N];
	/* the window */
	double win[OS_N];
	double win_n[OS_N];
	double rw_sum[MAX_REWARDS], rw_sq[MAX_REWARDS], rw_n[MAX_REWARDS];
	double rw_mean_acc[MAX_REWARDS], rw_std_acc[MAX_REWARDS], rw_steps[MAX_REWARDS];
	/* ppo */
	Model vm; /* the value model (a sequence classifier read per token) */
	Zero vz;
	int has_vm;
	float *val_round, *adv_round, *ret_round, *vmask_round; /* (GAR, B, Lc) */
	float *vbuf, *dvbuf;                                    /* (B, Lc) */
	double *score;                                          /* (GAR * B) */
	int *mb_order;      /* (num_mini_batches) this epoch's order */
	double ppo_acc[16]; /* the step's sums (ppo.c) */
	/* Per training example, made once: the accuracy reward's solution and
	 * the extra columns a reward program gets (NULL when unused). */
	char **solution, **req_extra;
	/* Scratch of a round, allocated with the rest so the step allocates
	 * nothing: the gathered rewards (trainers * GAR * B * F), lengths and
	 * ends (GAR * B * 2 here, N * 2 gathered, N * 2 in round order), rloo's
	 * per-sequence KL (GAR * B here, N gathered), trainer 0's prompts for a
	 * push (P * Lp, P), the entropy quantile's values (B * Lc here, trainers
	 * * B * Lc gathered; counts and offsets per trainer), the reward
	 * program's requests and answers (B), ppo's per-token rewards (GAR * B * Lc). */
	double *g_rew, *g_kl_mine, *g_kl;
	int *g_len_mine, *g_len, *g_len_c;
	int32_t *push_ids;
	int *push_plen;
	double *ent_mine, *ent_all;
	int *ent_cnt, *ent_dsp;
	char **req;
	double *vals;
	float *gae;
	FILE *completions;
	char *text;
	size_t text_cap;
} Online;

/* A buffer of the online state: the field that holds it and its size in
 * bytes (0: this run does not need it). ONLINE_BUF(field, count) names one. */
typedef struct OnlineBuf {
	void **at;
	size_t bytes;
} OnlineBuf;
#define ONLINE_BUF(field, count)                                                         \
	{                                                                                \
		(void **)&(field), (size_t)(count) * sizeof *(field)                     \
	}
/* Allocates every buffer of list[0..n) that has a size, zeroed; returns 0 or
 * TRL_ENOMEM (what was made is freed by online_bufs_free). */
int online_bufs_alloc(const OnlineBuf *list, int n, TrlErr *err);
/* Frees every buffer of the list and clears its field. */
void online_bufs_free(const OnlineBuf *list, int n);

/* The longest micro-batch row: the longest prompt (capped at
 * max_prompt_length) plus max_completion_length. */
int online_max_len(const Trainer *tr);
/* After the data, the model and the reference are set up: buffers, rewards
 * (the reward program is started here), the colocated generator. link is
 * NULL or has K = 0 when the trainers generate themselves. */
int online_setup(Trainer *tr, RolloutLink *link, TrlErr *err);
/* Prompts a round consumes, and the optimizer steps it feeds. */
long online_prompts_per_round(const Trainer *tr);
int online_steps_per_round(const Trainer *tr);
/* Checkpoints: ppo writes its value model (parameters and AdamW moments)
 * to <path without .h5>.value.h5 and reads it back on resume; the other
 * methods have nothing to add. Collective. */
int online_save_extra(Trainer *tr, const char *path, const CkptState *st, TrlErr *err);
int online_load_extra(Trainer *tr, const char *path, TrlErr *err);
/* Sends the plan to the generators (status != 0: the set-up failed). */
void online_start(Trainer *tr, RolloutLink *link, int status);
/* Before the first step: the messages of the first max_staleness + 1 rounds. */
void online_begin(Trainer *tr);
/* The Method hooks (see trainer.h). */
int online_step_begin(Trainer *tr, long step, long counts[2], TrlErr *err);
void online_micro(Trainer *tr, Batch *b, int split, const int *idx, int n, double scale,
                  int backward, int count, Metrics *acc);
void online_step_end(Trainer *tr, long done);
void online_log(Trainer *tr, FILE *f);
/* The mean reward of the logging window, for the console line. */
double online_console_reward(const Trainer *tr);
void online_clear_window(Trainer *tr);
void online_free(Trainer *tr);

/* online.c, for ppo.c */
void online_step_fig(Online *o, int k, double v);
/* Forward of m on b: the completion-token log-probs at the sampling
 * temperature into out (B, Lc); the logits stay scaled in m->logits. */
void online_forward_lp(Trainer *tr, Model *m, const Batch *b, float *out);
/* Backward of sum scale * dlp (B, Lc) . lp through m's scaled logits. */
void online_backward_lp(Trainer *tr, Model *m, const Batch *b, const float *dlp,
                        double scale);
/* Completion-token positions of row i of b: the first target position. */
int online_first_target(const Batch *b, int i);

/* ppo.c */
int ppo_setup(Trainer *tr, Online *o, TrlErr *err);
/* After a round's rollouts are in: old, reference and value forwards, the
 * per-token rewards, GAE and whitening. */
void ppo_round(Trainer *tr, Online *o);
/* The step's mini-batch: sets tr->mb_base. */
void ppo_pick_minibatch(Trainer *tr, Online *o, long step);
void ppo_micro(Trainer *tr, Batch *b, const int *idx, double scale, int backward,
               int count, Metrics *acc);
/* After the policy's optimizer step: the value model's, and the figures. */
void ppo_step_end(Trainer *tr, Online *o, double lr);
void ppo_free(Online *o);

#endif
