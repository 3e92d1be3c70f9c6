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

/* What a method declares to the loop: its name and the data formats it reads.
 * SFT's loss, next-token cross-entropy on the masked targets, is the loop's
 * own; methods with reference passes and other losses extend this table. */
typedef struct Method {
	const char *name;
	TrlDataFormat formats_ok[2];
	int n_formats;
} Method;

typedef struct Trainer {
	const Config *cfg;
	const Comm *comm;
	const Method *method;
	Tokenizer tok;
	Dataset train, test;
	RowSet train_rows, test_rows;
	int has_test;
	Model model;
	Zero zero;
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
} Trainer;

/* train_data.c */
int train_load_tokenizer(Trainer *tr, TrlErr *err);
int train_load_data(Trainer *tr, TrlErr *err);
int train_check_ids(const Dataset *d, int V, const char *split, TrlErr *err);
/* Row at position p of the global sample stream. */
int train_stream_row(Trainer *tr, long p);

/* train_eval.c */
void train_dummy_forward(Trainer *tr);
/* Evaluates on the test split (when there is one) and logs the figures. */
void train_run_eval(Trainer *tr, long step, const char *when);

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
