/* trainer.h - the state of one training run, shared by the parts of the loop
 * (internal to mpi/: train.c the set-up and the steps, train_data.c the
 * tokenizer, data and sampler, train_eval.c evaluation, train_save.c
 * checkpoints and exports).
 *
 * Every function here is called by every rank of tr->comm at the same point;
 * those that return int return the status agreed over the ranks, except the
 * set-up loaders (train_load_*, train_check_ids), whose caller agrees.
 */
#ifndef TRL_TRAINER_H
#define TRL_TRAINER_H

#include <signal.h>
#include <stdio.h>

#include "comm.h"
#include "config.h"
#include "ckpt_h5.h"
#include "dataset.h"
#include "model.h"
#include "tokenizer.h"
#include "zero.h"
#include "rng.h"

#include "layers.h"
#include "lora.h"
#include "losses.h"

/* The figures a method logs, TRL's names ("eval_" prefixed in evaluation).
 * A micro-step's metric is a sum and a count over the ranks; as in TRL, each
 * micro-step (each evaluation batch) gives one value, sum / count, and the
 * log shows the mean of the values of the window. sft pools the sums of the
 * window instead (its loss is the mean over every target token). */
enum {
	MET_LOSS,
	MET_REWARDS_CHOSEN,
	MET_REWARDS_REJECTED,
	MET_REWARDS_ACCURACIES,
	MET_REWARDS_MARGINS,
	MET_LOGPS_CHOSEN,
	MET_LOGPS_REJECTED,
	MET_LOGITS_CHOSEN,
	MET_LOGITS_REJECTED,
	MET_NLL_LOSS,
	MET_LOG_ODDS_RATIO,
	MET_LOG_ODDS_CHOSEN,
	MET_KL,
	MET_DELTA,
	MET_ACCURACY,
	MET_MIN_REWARD,
	MET_MEAN_REWARD,
	MET_MAX_REWARD,
	MET_MARGIN,
	MET_ENTROPY,
	MET_MEAN_TOKEN_ACCURACY,
	MET_N
};
typedef struct Metrics {
	double sum[MET_N], cnt[MET_N];
	double min_reward, max_reward; /* reward: of the micro-step's scores */
} Metrics;
void metrics_clear(Metrics *m);
void metrics_add(Metrics *m, int k, double sum, double cnt);
/* Sums every rank's metrics into m, and with minmax (reward) also takes the
 * extremes of the reward range (collective). */
void metrics_reduce(Metrics *m, int minmax, const Comm *c);
/* Adds src's sums into dst (sft), or src's values sum / count as one entry
 * each (the others). */
void metrics_merge(Metrics *dst, const Metrics *src);
void metrics_merge_values(Metrics *dst, const Metrics *src);
/* Whether metric k has a value to log: a figure with none in the window
 * (kto's rewards/chosen when every micro-batch was undesirable) is left out,
 * as TRL leaves it out; kto's margin is the difference of the two means. */
int metrics_has(const Metrics *m, int k);
extern const char *const metric_names[MET_N];

struct Trainer;

/* A method plugs into the one training loop with this table: the data it
 * reads, the rows it puts in a micro-batch, and one micro-step (its forward
 * passes, its loss from src/losses.h, its backward, its metrics). */
typedef struct Method {
	const char *name;
	TrlDataFormat formats_ok[3];
	int n_formats;
	int rows_per_example; /* micro-batch rows per example: 2 for pairs */
	int uses_ref;         /* needs reference log-probs */
	int classifier;       /* the model is a sequence classifier (num_labels 1) */
	int eval_collective;  /* its micro-step all-reduces in evaluation too (kto's
	                       * z0): every rank calls it in every round */
	unsigned metrics;     /* bit k: logs metric k */
	int main_metric;      /* shown on the console beside the loss */
	/* Fills b with the n examples idx[0..n) of d (split 0 train, 1 test);
	 * returns the number of target tokens. */
	long (*fill)(struct Trainer *tr, Batch *b, int split, const int *idx, int n);
	/* Forward passes, loss and (backward) the backward of the micro-batch b
	 * filled by fill. scale: the loss's weight in the step (1 / targets of
	 * the global batch for sft, 1 / micro-batches of the global batch for the
	 * others). A rank with no examples left in evaluation calls it with
	 * count 0: the same forwards run (collectives under stage 3) but nothing
	 * is added. Collective when it all-reduces (kto's KL estimate). */
	void (*micro)(struct Trainer *tr, Batch *b, int split, const int *idx, int n,
	              double scale, int backward, int count, Metrics *acc);
	/* Online methods (grpo, rloo): step_begin replaces fill for training: it
	 * fetches the round's rollouts, scores them and fills the micro-batches,
	 * setting counts[0] to the active completion tokens and counts[1] to the
	 * real tokens; returns the status agreed by the trainers. step_end runs
	 * after each optimizer step (the weight push); log appends the method's
	 * own figures to the metrics line. Their micro takes scale = 1 / ranks:
	 * the losses of rl_losses.h divide by the accumulation themselves. */
	int (*step_begin)(struct Trainer *tr, long step, long counts[2], TrlErr *err);
	void (*step_end)(struct Trainer *tr, long done);
	void (*log)(struct Trainer *tr, FILE *f);
	int online;
} Method;

/* Splits a comma-separated list into its items (spaces trimmed); returns
 * how many there were (at most cap are stored). */
int method_split_list(const char *s, char items[][32], int cap);

/* Where a sequence classifier's score of row i of b is read: its last token
 * that is not the pad token, as Hugging Face finds it (with pad = EOS the
 * appended EOS is skipped). The reward method and the online rewards share
 * it, so a reward model is read where it was trained. */
int batch_score_position(const Batch *b, int i, int pad);

/* Writes `, "key": v` to a metrics line, null when v is not finite (JSON
 * has no NaN: a step whose loss diverged still leaves a readable line). */
void metrics_put(FILE *f, const char *key, double v);

/* The table of method m. */
const Method *method_of(TrlMethod m);

/* The method named by cfg->method; checks its keys (loss types and their
 * combinations) and fills tr's loss options. */
int method_select(struct Trainer *tr, TrlErr *err);

struct Online;

typedef struct Trainer {
	const Config *cfg;
	const Comm *comm;
	const Method *method;
	Tokenizer tok;
	Dataset train, test;
	RowSet train_rows, test_rows;
	int has_test;
	Model model; /* the model trained; under LoRA the frozen base */
	Zero zero;   /* the trained state's shards: the model's, or the adapters' */
	/* LoRA (use_peft): adapters on tr->model, whose own shards are zero */
	int peft;
	Lora lora;
	Zero base_zero;               /* stage 3: the frozen base's shards */
	char lora_base[TRL_PATH_MAX]; /* the base's folder ("" = a new model) */
	int ref_is_base;              /* the reference is the base, adapters off */
	int sync_forwards; /* stage 3 on several ranks: every rank runs each forward */
	Batch *mb;         /* (gradient_accumulation_steps) micro-batches of this rank */
	Batch eval;
	int maxT;
	long total_steps, rows_per_step;
	long start_step;   /* 0, or the step of the checkpoint resumed from */
	long sample_base;  /* samples of the stream consumed before start_step */
	long total_tokens; /* real tokens trained on since step 0 */
	long warmup;       /* warmup steps of the learning-rate schedule */
	long last_saved;   /* step of the newest full checkpoint this run wrote, or -1 */
	char resume_path[TRL_PATH_MAX + 64]; /* "" unless resuming */
	Rng rng; /* this rank's generator, saved in checkpoints */
	int *perm[2];
	long perm_epoch[2];
	int *idx;
	int cache_hits[2]; /* train, test came from the tokenized-dataset cache */
	int *gen_len, *gen_done, *gen_match, *gen_ex; /* (per_device_eval_batch_size) */
	FILE *metrics;
	double t_start;
	double step_s;  /* seconds in optimizer steps (compute and communication) */
	long steps_run; /* optimizer steps that updated the weights, after the first */
	int first_step_done;
	/* Preference methods. */
	DpoOptions dpo;
	KtoOptions kto;
	CpoOptions cpo;
	RunningMoments bco; /* bco: the running moments of the rewards */
	Model ref;          /* the reference model, when one is held */
	Zero ref_zero;      /* stage 3: its shards */
	int has_ref;
	double *pre[2][2]; /* precomputed reference log-probs [split][chosen/KL or
	                      rejected], per example */
	int *partner[2]; /* kto: [split] the example whose completion makes the KL row */
	double *margin[2]; /* reward: [split] the margin column per example, or NULL */
	Batch klb;         /* kto: the mismatched rows of a micro-batch */
	TokenStats ts;     /* per-token figures of the current micro-batch */
	float *coef;       /* (rows * T) d loss / d token log-prob */
	double *rowbuf;    /* (10 rows_cap) per-row scratch, AOT sorts at 8 */
	int *ibuf;         /* (2 rows_cap) per-row scratch */
	int32_t *tbuf;     /* (rows_cap * T) orpo: targets over prompt + chosen */
	int *mb_idx;       /* (n_mb, B) the examples of each micro-batch */
	int n_mb;          /* micro-batches allocated: GA, ppo: GA * num_mini_batches */
	int mb_base;       /* the step trains on mb[mb_base .. mb_base + GA) */
	int rows_cap;      /* rows the activations were allocated for */
	Metrics window;    /* the logging window's figures */
	Metrics *micro_m;  /* (GA) each micro-step's figures */
	int need_ref;      /* the method holds a reference model (grpo: beta > 0) */
	/* Online methods. */
	struct Online *on;
	struct RolloutLink *link; /* generation ranks, or NULL (colocated) */
	int grpo_loss;            /* rl_losses.h's TrlGrpoLoss */
	double reward_clip[2];    /* rloo's reward_clip_range, (-inf, inf) when unset */
	long weights_version;     /* optimizer steps behind the current weights */
} Trainer;

/* train_data.c */
int train_load_tokenizer(Trainer *tr, TrlErr *err);
int train_load_data(Trainer *tr, TrlErr *err);
int train_check_ids(const Dataset *d, int V, const char *split, TrlErr *err);
/* Row at position p of the global sample stream. */
int train_stream_row(Trainer *tr, long p);
/* After loading: what the method adds to the data (kto: unpairing and the
 * KL partners; reward: the margin column). */
int train_prepare_method_data(Trainer *tr, TrlErr *err);
/* The longest micro-batch row the method makes (rejected, KL rows). */
int train_max_method_len(const Trainer *tr);

/* train_eval.c */
void train_dummy_forward(Trainer *tr);
/* Evaluates on the test split (when there is one) and logs the figures. */
void train_run_eval(Trainer *tr, long step, const char *when);

/* ref_model.c */
/* Builds the reference model (stage 3: sharded like the policy) when the
 * method needs one and precompute_ref_log_probs is off; with it on, builds
 * it, computes every example's reference log-probs and frees it. */
int ref_setup(Trainer *tr, TrlErr *err);
/* Reference summed log-probs of the rows of b (filled by the method) into
 * out (b->B), with LD-DPO's ld_alpha weighting for pairs. */
void ref_logps(Trainer *tr, Batch *b, int pairs, double *out);
/* TR-DPO: ref = alpha * policy + (1 - alpha) * ref, every ref_model_sync_steps. */
void ref_sync(Trainer *tr, long done);
void ref_free(Trainer *tr);

/* method.c: the summed completion log-probs of the rows of b from logits
 * (the current tr->ts), weighted for pairs by ld_alpha past the shorter
 * completion; also the completion token counts. */
void rows_logps(Trainer *tr, const Batch *b, int pairs, double *lp, double *ntok);

/* train_lora.c */
/* The adapters' spec (from the run's lora_* keys, or from the adapter folder
 * model_name_or_path names) and the base's folder into base. */
int train_lora_spec(const Config *cfg, LoraSpec *s, char *base, size_t cap,
                    int *from_adapter, TrlErr *err);
/* Loads the frozen base (stage 3: sharded in base_zero), builds the adapters
 * and their ZeRO state in tr->zero, and attaches them. */
int train_lora_load(Trainer *tr, TrlErr *err);
/* Writes the adapters as a PEFT folder. Collective. */
int train_lora_export(Trainer *tr, const char *dir, TrlErr *err);
void train_lora_free(Trainer *tr);

/* train_save.c */
extern volatile sig_atomic_t train_stop_signal;
void train_on_stop_signal(int sig);
long train_samples_before(const Trainer *tr, long step);
double train_epoch_at(const Trainer *tr, long step);
int train_export_model(Trainer *tr, const char *dir, TrlErr *err);
int train_save_checkpoint(Trainer *tr, long step, int model_only, TrlErr *err);
void train_trim_metrics(const char *path, long step);
int train_resume(Trainer *tr, TrlErr *err);

#endif
