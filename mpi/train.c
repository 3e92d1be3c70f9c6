/* train.c - the training loop: data-parallel micro-batches, loss normalised by
 * the global target-token count, AdamW, metrics and the final save. */
#define _GNU_SOURCE
#include "train.h"

#include <math.h>
#include <omp.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "gemm.h"
#include "layers.h"
#include "model_io.h"
#include "optim.h"
#include "online.h"
#include "rollout.h"
#include "trainer.h"

/* ---- threads ----------------------------------------------------------------- */

int trl_setup_threads(const Config *cfg, const Comm *comm)
{
	long online = sysconf(_SC_NPROCESSORS_ONLN);
	if (online < 1)
		online = 1;
	cpu_set_t set;
	CPU_ZERO(&set);
	int bound = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0;
	const char *env = getenv("OMP_NUM_THREADS");
	int want;
	if (cfg->threads_per_rank > 0)
		want = cfg->threads_per_rank;
	else if (env && atoi(env) > 0)
		want = atoi(env);
	else if (bound > 1)
		want = bound; /* the launcher (srun, --map-by ...:PE=n) chose the cores */
	else {
		int ranks = comm->local_size > 0 ? comm->local_size : 1;
		want = (int)(online / ranks) > 0 ? (int)(online / ranks) : 1;
	}
	if (bound > 0 && bound < want) {
		/* Open MPI binds each rank to one core by default when np <= 2, which
		 * would leave the other cores idle: give this rank its own block of
		 * cores. The kernel keeps only the CPUs a cgroup (Slurm) allows, so
		 * the mask is read back and the thread count never exceeds it. */
		cpu_set_t wide;
		CPU_ZERO(&wide);
		for (int i = 0; i < want; i++)
			CPU_SET((int)(((long)comm->local_rank * want + i) % online),
			        &wide);
		sched_setaffinity(0, sizeof wide, &wide);
		if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) < want)
			want = CPU_COUNT(&set) > 0 ? CPU_COUNT(&set) : 1;
	}
	omp_set_num_threads(want);
	return want;
}

/* The model, sharded as zero_stage says. Stages 0 and 1 keep full slabs;
 * stage 2 has no full gradient and stage 3 no full parameters either, so a
 * pretrained model is read whole once, handed over and freed (every rank
 * reads the folder itself). When resuming, the checkpoint brings the weights:
 * only the folder's config.json is read. */
static int load_model(Trainer *tr, TrlErr *err)
{
	const Config *cfg = tr->cfg;
	if (cfg->use_peft || (cfg->model_name_or_path[0] &&
	                      lora_is_adapter_dir(cfg->model_name_or_path))) {
		int rc = train_lora_load(tr, err);
		tr->sync_forwards = cfg->zero_stage == 3 && tr->comm->size > 1;
		if (!rc && tr->method->classifier)
			tr->model.cfg.pad_token_id = tr->tok.pad_id;
		return rc;
	}
	unsigned flags = zero_model_flags(cfg->zero_stage);
	Model full;
	memset(&full, 0, sizeof full);
	int rc, head_new = 0;
	/* A reward model is a sequence classifier with one label; the other
	 * methods train a causal LM whatever the folder holds. */
	int labels = tr->method->classifier ? 1 : 0;
	if (cfg->model_name_or_path[0] && tr->resume_path[0]) {
		char path[TRL_PATH_MAX + 16];
		ModelConfig mc;
		snprintf(path, sizeof path, "%s/config.json", cfg->model_name_or_path);
		rc = model_config_load_json(&mc, path, err);
		mc.num_labels = labels;
		if (!rc)
			rc = model_init_flags(&tr->model, &mc, flags, err);
	} else if (cfg->model_name_or_path[0]) {
		Model *dst = flags ? &full : &tr->model;
		/* The copy handed to a sharded model needs no gradients. */
		rc = model_load_dir_flags(dst, cfg->model_name_or_path, labels,
		                          (uint64_t)cfg->seed, flags ? MODEL_NO_GRADS : 0,
		                          &head_new, err);
		if (!rc && flags)
			rc = model_init_flags(&tr->model, &full.cfg, flags, err);
		if (!rc && tr->model.params && flags)
			memcpy(tr->model.params, full.params,
			       full.table.total * sizeof(float));
		if (!rc && head_new && tr->comm->rank == 0)
			printf("note: %s is a causal LM: the reward model's score head "
			       "(score.weight) starts from N(0, %g) and its lm_head is "
			       "dropped\n",
			       cfg->model_name_or_path,
			       (double)tr->model.cfg.initializer_range);
	} else {
		ModelConfig mc = cfg->model;
		mc.num_labels = labels;
		rc = model_init_flags(&tr->model, &mc, flags, err);
		if (!rc && tr->model.params && !tr->resume_path[0])
			model_init_weights(&tr->model, (uint64_t)cfg->seed);
	}
	if (!rc)
		rc = zero_init(&tr->zero, &tr->model, tr->comm->world, cfg->zero_stage,
		               cfg->stage3_param_persistence_threshold, cfg->overlap_comm,
		               full.params, (unsigned long long)cfg->seed,
		               cfg->adam_beta1, cfg->adam_beta2, cfg->adam_epsilon,
		               cfg->weight_decay, cfg->weight_decay_embeddings, err);
	model_free(&full);
	tr->sync_forwards = cfg->zero_stage == 3 && tr->comm->size > 1;
	if (rc)
		return rc;
	if (tr->method->classifier)
		tr->model.cfg.pad_token_id = tr->tok.pad_id;
	if (tr->model.cfg.vocab_size < tr->tok.vocab_size)
		return trl_errf(err, TRL_EINVAL,
		                "model.vocab_size (%d) is smaller than the tokenizer's "
		                "vocabulary (%d): set model.vocab_size >= %d",
		                tr->model.cfg.vocab_size, tr->tok.vocab_size,
		                tr->tok.vocab_size);
	return TRL_OK;
}

static int alloc_buffers(Trainer *tr, TrlErr *err)
{
	const Config *cfg = tr->cfg;
	/* Greedy answers in evaluation stop at the reference's length, so the
	 * longest row of either split bounds every sequence. */
	int T = rows_max_len(&tr->train_rows);
	if (tr->has_test && rows_max_len(&tr->test_rows) > T)
		T = rows_max_len(&tr->test_rows);
	int Tm = train_max_method_len(tr);
	T = Tm > T ? Tm : T;
	if (T < 1)
		T = 1;
	if (T > tr->model.cfg.max_position_embeddings)
		return trl_errf(
		    err, TRL_EINVAL,
		    "rows of %d tokens exceed the model's max_position_embeddings "
		    "(%d): lower max_length to %d",
		    T, tr->model.cfg.max_position_embeddings,
		    tr->model.cfg.max_position_embeddings);
	tr->maxT = T;
	int B = cfg->per_device_train_batch_size;
	int Be = cfg->per_device_eval_batch_size;
	int f = tr->method->rows_per_example;
	tr->rows_cap = (B > Be ? B : Be) * f;
	int rc = model_alloc_activations(&tr->model, tr->rows_cap, T, err);
	if (rc)
		return rc;
	int GA = cfg->gradient_accumulation_steps;
	size_t NT = (size_t)tr->rows_cap * (size_t)T;
	/* ppo keeps every mini-batch of a round of rollouts. */
	tr->n_mb = GA * (cfg->method == TRL_METHOD_PPO ? cfg->num_mini_batches : 1);
	tr->mb = calloc((size_t)tr->n_mb, sizeof *tr->mb);
	tr->mb_idx = calloc((size_t)tr->n_mb * (size_t)B, sizeof *tr->mb_idx);
	tr->micro_m = calloc((size_t)GA, sizeof *tr->micro_m);
	tr->ts.lp = malloc(NT * sizeof(float));
	tr->ts.lse = malloc(NT * sizeof(float));
	tr->ts.wpo = malloc(NT * sizeof(float));
	tr->ts.mean_logit = malloc(NT * sizeof(float));
	tr->ts.entropy = malloc(NT * sizeof(float));
	tr->ts.correct = malloc(NT);
	tr->coef = malloc(NT * sizeof(float));
	tr->rowbuf = calloc(10 * (size_t)tr->rows_cap, sizeof(double));
	tr->ibuf = calloc(2 * (size_t)tr->rows_cap, sizeof(int));
	tr->tbuf = malloc(NT * sizeof *tr->tbuf);
	if (!tr->mb_idx || !tr->micro_m || !tr->ts.lp || !tr->ts.lse || !tr->ts.wpo ||
	    !tr->ts.mean_logit || !tr->ts.entropy || !tr->ts.correct || !tr->coef ||
	    !tr->rowbuf || !tr->ibuf || !tr->tbuf)
		return trl_errf(err, TRL_ENOMEM, "out of memory");
	if (cfg->method == TRL_METHOD_KTO)
		rc = batch_alloc(&tr->klb, tr->rows_cap, T, err);
	if (rc)
		return rc;
	tr->idx = calloc((size_t)(B > Be ? B : Be), sizeof *tr->idx);
	tr->gen_len = calloc((size_t)Be, sizeof(int));
	tr->gen_done = calloc((size_t)Be, sizeof(int));
	tr->gen_match = calloc((size_t)Be, sizeof(int));
	tr->gen_ex = calloc((size_t)Be, sizeof(int));
	if (!tr->mb || !tr->idx || !tr->gen_len || !tr->gen_done || !tr->gen_match ||
	    !tr->gen_ex)
		return trl_errf(err, TRL_ENOMEM, "out of memory");
	for (int j = 0; j < tr->n_mb && !rc; j++)
		rc = batch_alloc(&tr->mb[j], B * f, T, err);
	if (!rc)
		rc = batch_alloc(&tr->eval, Be * f, T, err);
	long n = tr->train_rows.n;
	for (int k = 0; k < 2 && !rc; k++) {
		tr->perm[k] = malloc((size_t)n * sizeof(int));
		tr->perm_epoch[k] = -1;
		if (!tr->perm[k])
			rc = trl_errf(err, TRL_ENOMEM, "out of memory");
	}
	return rc;
}

static void trainer_free(Trainer *tr)
{
	for (int j = 0; tr->mb && j < tr->n_mb; j++)
		batch_free(&tr->mb[j]);
	free(tr->mb);
	batch_free(&tr->eval);
	free(tr->idx);
	free(tr->gen_len);
	free(tr->gen_done);
	free(tr->gen_match);
	free(tr->gen_ex);
	free(tr->perm[0]);
	free(tr->perm[1]);
	free(tr->mb_idx);
	free(tr->micro_m);
	free(tr->ts.lp);
	free(tr->ts.lse);
	free(tr->ts.wpo);
	free(tr->ts.mean_logit);
	free(tr->ts.entropy);
	free(tr->ts.correct);
	free(tr->coef);
	free(tr->rowbuf);
	free(tr->ibuf);
	free(tr->tbuf);
	batch_free(&tr->klb);
	for (int s = 0; s < 2; s++) {
		free(tr->pre[s][0]);
		free(tr->pre[s][1]);
		free(tr->partner[s]);
		free(tr->margin[s]);
	}
	online_free(tr);
	ref_free(tr);
	zero_free(&tr->zero);
	train_lora_free(tr);
	model_free(&tr->model);
	rows_free(&tr->train_rows);
	rows_free(&tr->test_rows);
	dataset_free(&tr->train);
	dataset_free(&tr->test);
	tokenizer_free(&tr->tok);
	if (tr->metrics)
		fclose(tr->metrics);
}

/* ---- the loop ---------------------------------------------------------------- */

static void format_eta(char *buf, size_t cap, double s)
{
	long t = s > 0 && s < 1e8 ? (long)(s + 0.5) : 0;
	if (t >= 3600)
		snprintf(buf, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
	else
		snprintf(buf, cap, "%02ld:%02ld", t / 60, t % 60);
}

typedef struct LogWindow {
	double t0;
	long tokens;
} LogWindow;

/* One metrics.jsonl line and the console line of a logging window. */
static void log_step(Trainer *tr, long done, double gnorm, double lr, LogWindow *w,
                     int tty)
{
	const Config *cfg = tr->cfg;
	const Method *me = tr->method;
	const Metrics *mt = &tr->window;
	double now = trl_now(), dt = now - w->t0;
	double v[MET_N];
	for (int k = 0; k < MET_N; k++)
		v[k] = mt->cnt[k] > 0 ? mt->sum[k] / mt->cnt[k] : 0.0;
	/* KTO logs the margin as the difference of the two means. */
	if (mt->cnt[MET_REWARDS_MARGINS] == 0)
		v[MET_REWARDS_MARGINS] = v[MET_REWARDS_CHOSEN] - v[MET_REWARDS_REJECTED];
	double tps = dt > 0 ? w->tokens / dt : 0.0;
	/* The console's figure before the method's log empties its window. */
	double av = me->online ? online_console_reward(tr) : v[me->main_metric];
	double rate = (now - tr->t_start) / (done - tr->start_step);
	char eta[32];
	format_eta(eta, sizeof eta, rate * (tr->total_steps - done));
	if (tr->metrics) {
		fprintf(tr->metrics, "{\"step\": %ld, \"epoch\": %.4f", done,
		        train_epoch_at(tr, done));
		metrics_put(tr->metrics, "loss", v[MET_LOSS]);
		metrics_put(tr->metrics, "grad_norm", gnorm);
		fprintf(tr->metrics, ", \"learning_rate\": %.6e, \"num_tokens\": %ld", lr,
		        tr->total_tokens);
		for (int k = 1; k < MET_N; k++)
			if ((me->metrics & (1u << k)) && metrics_has(mt, k))
				metrics_put(tr->metrics, metric_names[k], v[k]);
		if (me->log)
			me->log(tr, tr->metrics);
		fprintf(tr->metrics, ", \"tokens_per_second\": %.1f}\n", tps);
		fflush(tr->metrics);
	}
	const char *an = me->online ? "reward"
	                 : me->main_metric == MET_MEAN_TOKEN_ACCURACY
	                     ? "acc"
	                     : metric_names[me->main_metric];
	if (tty) {
		fprintf(
		    stderr,
		    "\rstep %ld/%ld | loss %.4f | %s %.3f | lr %.2e | %.0f tok/s | ETA "
		    "%s   ",
		    done, tr->total_steps, v[MET_LOSS], an, av, lr, tps, eta);
		if (done == tr->total_steps)
			fputc('\n', stderr);
		fflush(stderr);
	} else if (!cfg->disable_tqdm) {
		printf("step %ld/%ld  loss %.4f  %s %.3f  grad_norm %.3f  lr %.2e  %.0f "
		       "tok/s  ETA %s\n",
		       done, tr->total_steps, v[MET_LOSS], an, av, gnorm, lr, tps, eta);
		fflush(stdout);
	}
	metrics_clear(&tr->window);
	online_clear_window(tr);
	*w = (LogWindow){now, 0};
}

/* Runs every optimizer step; returns the agreed status of the intermediate
 * exports and saves (every rank takes part in the agreement at the same
 * steps), or TRL_ESTOPPED after saving on a stop signal. */
static int train_loop(Trainer *tr, TrlErr *err)
{
	const Config *cfg = tr->cfg;
	const Comm *c = tr->comm;
	const Method *me = tr->method;
	int B = cfg->per_device_train_batch_size, GA = cfg->gradient_accumulation_steps;
	long nrows = tr->train_rows.n;
	int tty = isatty(STDERR_FILENO) && !cfg->disable_tqdm;
	LogWindow w = {trl_now(), 0};
	metrics_clear(&tr->window);

	for (long step = tr->start_step; step < tr->total_steps; step++) {
		/* Fill every micro-batch first: the loss of the whole accumulated global
		 * batch is normalised by its total number of target tokens (sft) or
		 * micro-batches (the others). The same sum carries the stop signals:
		 * every rank sees any rank's. */
		long counts[3] = {
		    0, 0, train_stop_signal != 0}; /* targets, real tokens, stop */
		if (me->step_begin) {
			int rc = me->step_begin(tr, step, counts, err);
			if (rc)
				return rc;
		}
		for (int j = 0; j < GA && !me->step_begin; j++) {
			long base = train_samples_before(tr, step) +
			            ((long)j * c->size + c->rank) * B;
			int *idx = tr->mb_idx + (size_t)j * B;
			for (int i = 0; i < B; i++)
				idx[i] = train_stream_row(tr, base + i);
			counts[0] += me->fill(tr, &tr->mb[j], 0, idx, B);
			const Batch *b = &tr->mb[j];
			for (int t = 0; t < b->B * b->T; t++)
				counts[1] += b->doc[t] >= 0;
		}
		comm_sum_long(c, counts, 3);
		if (counts[2] > 0) {
			/* Always with the optimizer state: the point is to resume. */
			int rc = tr->last_saved == step
			             ? TRL_OK
			             : train_save_checkpoint(tr, step, 0, err);
			if (rc)
				return rc;
			return trl_errf(err, TRL_ESTOPPED,
			                "stopped by SIGTERM or SIGUSR1 before step %ld; "
			                "%s/checkpoint-%ld.h5 holds the state: resume "
			                "with --resume_from_checkpoint latest",
			                step + 1, cfg->output_dir, step);
		}
		/* A global batch without a single target token (every completion
		 * truncated away) has no gradient: all ranks see the same count, so
		 * all skip the update together and the step still counts. */
		int skip = counts[0] == 0;
		double scale = cfg->method == TRL_METHOD_SFT
		                   ? (skip ? 0.0 : (double)(1.0f / (float)counts[0]))
		               : me->online ? 1.0 / c->size
		                            : 1.0 / ((double)GA * c->size);

		double t_step = trl_now();
		int pooled = cfg->method == TRL_METHOD_SFT;
		/* The weights stand still over the micro-batches of a step: each
		 * is rounded to bf16 once (gemm.h) for all of them. */
		gemm_scope_begin();
		for (int j = 0; j < GA && !skip; j++) {
			zero_begin_micro(&tr->zero, j == GA - 1);
			metrics_clear(&tr->micro_m[j]);
			/* LoRA's dropout acts in the training forwards only. */
			tr->lora.train = tr->peft && !cfg->disable_dropout;
			me->micro(tr, &tr->mb[tr->mb_base + j], 0,
			          tr->mb_idx + (size_t)(tr->mb_base + j) * B, B, scale, 1,
			          1, &tr->micro_m[j]);
			tr->lora.train = 0;
			if (pooled && j > 0)
				metrics_merge(&tr->micro_m[0], &tr->micro_m[j]);
		}
		gemm_scope_end();
		/* Data parallel: every rank's gradient is already divided by the
		 * global count, so their sum (reduced per unit during the backward)
		 * is the gradient of the mean loss. */
		double gnorm = 0.0;
		double lr = lr_at_step(cfg->lr_scheduler_type, cfg->learning_rate, step,
		                       tr->total_steps, tr->warmup);
		if (!skip) {
			/* sft's figures are pooled over the step; the others give one
			 * value per micro-step, as TRL logs them. */
			for (int j = 0; j < (pooled ? 1 : GA); j++) {
				metrics_reduce(&tr->micro_m[j], me->classifier, c);
				if (pooled)
					metrics_merge(&tr->window, &tr->micro_m[j]);
				else
					metrics_merge_values(&tr->window,
					                     &tr->micro_m[j]);
			}
			zero_step(&tr->zero, lr, cfg->max_grad_norm, &gnorm);
			tr->steps_run++;
			tr->step_s += trl_now() - t_step;
		}
		if (!tr->first_step_done && tr->steps_run == 1 && tr->total_steps > 1) {
			/* The per-step figures leave out the first step: it pays
			 * for page faults and for buffers filled the first time. */
			memset(&tr->zero.st, 0, sizeof tr->zero.st);
			tr->step_s = 0.0;
			tr->steps_run = 0;
			tr->first_step_done = 1;
		}

		tr->total_tokens += counts[1];
		w.tokens += counts[1];
		long done = step + 1;
		int last = done == tr->total_steps;
		if (me->step_end)
			me->step_end(tr, done);
		ref_sync(tr, done);
		if (done % cfg->logging_steps == 0 || last) {
			if (c->rank == 0) {
				log_step(tr, done, gnorm, lr, &w, tty);
			} else {
				metrics_clear(&tr->window);
				online_clear_window(tr);
			}
		}
		if (cfg->eval_steps > 0 && done % cfg->eval_steps == 0 && !last) {
			if (tty && c->rank == 0)
				fputc('\n', stderr);
			train_run_eval(tr, done, "");
			w.t0 = trl_now();
		}
		if (cfg->export_steps > 0 && done % cfg->export_steps == 0 && !last) {
			char dir[TRL_PATH_MAX + 32];
			snprintf(dir, sizeof dir, "%s/checkpoint-%ld", cfg->output_dir,
			         done);
			int rc = train_export_model(tr, dir, err);
			if (rc)
				return rc;
			if (c->rank == 0 && !tty)
				printf("exported %s\n", dir);
		}
		/* save_strategy epoch: after the step that completes an epoch. */
		int save = cfg->save_strategy == TRL_SAVE_STEPS
		               ? done % cfg->save_steps == 0
		               : cfg->save_strategy == TRL_SAVE_EPOCH &&
		                     train_samples_before(tr, done) / nrows >
		                         train_samples_before(tr, step) / nrows;
		if ((save || (last && cfg->save_strategy != TRL_SAVE_NO)) &&
		    tr->last_saved != done) {
			int rc =
			    train_save_checkpoint(tr, done, cfg->save_only_model, err);
			if (rc)
				return rc;
		}
	}
	return TRL_OK;
}

static int setup(Trainer *tr, TrlErr *err)
{
	const Config *cfg = tr->cfg;
	const Comm *c = tr->comm;
	int rc = TRL_OK;
	rc = method_select(tr, err);
	if (!rc && c->rank == 0)
		rc = trl_mkdirs(cfg->output_dir, err);
	/* Every rank checks the name; rank 0's answer is the one all open,
	 * should `latest` change in between. */
	if (!rc && cfg->resume_from_checkpoint[0])
		rc = ckpt_resolve(cfg->resume_from_checkpoint, cfg->output_dir,
		                  tr->resume_path, sizeof tr->resume_path, err);
	/* A TR-DPO reference has mixed in the policy since the start, and
	 * checkpoints do not hold it: resuming would silently reset it. */
	if (!rc && tr->resume_path[0] && cfg->sync_ref_model)
		rc =
		    trl_errf(err, TRL_EUNSUPPORTED,
		             "resume_from_checkpoint with sync_ref_model: checkpoints do "
		             "not hold the mixed reference model yet, so the resumed run "
		             "would train against the starting one; restart the run, or "
		             "resume with sync_ref_model false");
	if ((rc = comm_agree(c, rc, err)))
		return rc;
	MPI_Bcast(tr->resume_path, (int)sizeof tr->resume_path, MPI_CHAR, 0, c->world);
	if (c->rank == 0) {
		ckpt_remove_partial(cfg->output_dir);
		char latest[TRL_PATH_MAX + 16];
		snprintf(latest, sizeof latest, "%s/latest", cfg->output_dir);
		if (!tr->resume_path[0] && access(latest, F_OK) == 0)
			printf("note: %s holds checkpoints of an earlier run; this run "
			       "starts "
			       "at step 0, its first save repoints latest%s (add "
			       "--resume_from_checkpoint latest to continue that run "
			       "instead)\n",
			       cfg->output_dir,
			       cfg->save_total_limit > 0
			           ? " and save_total_limit deletes that run's files"
			           : "");
	}
	tr->last_saved = -1;
	/* A generator per rank for methods that sample; a checkpoint restores it. */
	rng_seed(&tr->rng,
	         (uint64_t)cfg->seed * 0x9E3779B97F4A7C15ull + (uint64_t)c->rank);
	rc = train_load_tokenizer(tr, err);
	if (!rc)
		rc = load_model(tr, err);
	if ((rc = comm_agree(c, rc, err)))
		return rc;
	rc = train_load_data(tr, err);
	if ((rc = comm_agree(c, rc, err)))
		return rc;
	/* Every rank read the files itself; the loop's collectives assume they
	 * saw the same data, so check that before the first step. */
	long mine[4] = {tr->has_test, tr->train_rows.n, tr->test.n, tr->train.n_tokens};
	long lo[4], hi[4];
	MPI_Allreduce(mine, lo, 4, MPI_LONG, MPI_MIN, c->world);
	MPI_Allreduce(mine, hi, 4, MPI_LONG, MPI_MAX, c->world);
	if (memcmp(lo, hi, sizeof lo) != 0)
		rc = trl_errf(err, TRL_EINVAL,
		              "ranks read different data from dataset_name '%s' (%ld-%ld "
		              "train rows, %ld-%ld test examples): it must be the same "
		              "file on every node",
		              cfg->dataset_name, lo[1], hi[1], lo[2], hi[2]);
	if (!rc)
		rc = train_check_ids(&tr->train, tr->model.cfg.vocab_size, "train", err);
	if (!rc && tr->has_test)
		rc = train_check_ids(&tr->test, tr->model.cfg.vocab_size, "test", err);
	long targets = 0;
	for (int i = 0; i < tr->train.n && !rc; i++)
		for (int t = 1; t < tr->train.ex[i].len; t++)
			targets += tr->train.ex[i].mask[t];
	if (!rc && tr->train_rows.n == 0)
		rc = trl_errf(err, TRL_EINVAL, "the training split has no rows");
	else if (!rc && targets == 0 && !tr->method->online)
		rc = trl_errf(err, TRL_EINVAL,
		              "no training example has a token to learn: every text is "
		              "shorter than 2 tokens or every completion was cut by "
		              "max_length (%d)",
		              cfg->max_length);
	if (!rc)
		rc = train_prepare_method_data(tr, err);
	if (!rc)
		rc = alloc_buffers(tr, err);
	if ((rc = comm_agree(c, rc, err)))
		return rc;
	if ((rc = ref_setup(tr, err)))
		return rc;
	if (tr->method->online) {
		rc = online_setup(tr, tr->link, err);
		if ((rc = comm_agree(c, rc, err)))
			return rc;
	}

	tr->rows_per_step = (long)cfg->per_device_train_batch_size *
	                    cfg->gradient_accumulation_steps * c->size;
	/* Online methods consume prompts: a round's, every
	 * online_steps_per_round steps. */
	if (tr->method->online)
		tr->rows_per_step = online_prompts_per_round(tr);
	if (tr->resume_path[0] && (rc = train_resume(tr, err)))
		return rc;
	/* From epochs: the steps that cover the remaining samples, at this
	 * run's global batch (a resumed run may have another). */
	if (cfg->max_steps > 0)
		tr->total_steps = cfg->max_steps;
	else if (tr->method->online)
		tr->total_steps =
		    (long)ceil(cfg->num_train_epochs * (double)tr->train_rows.n /
		               (double)tr->rows_per_step) *
		    online_steps_per_round(tr);
	else
		tr->total_steps =
		    tr->start_step +
		    (long)ceil((cfg->num_train_epochs * (double)tr->train_rows.n -
		                (double)tr->sample_base) /
		               (double)tr->rows_per_step);
	if (tr->total_steps < 1)
		tr->total_steps = 1;
	if (tr->total_steps < tr->start_step) /* max_steps below the checkpoint's step */
		tr->total_steps = tr->start_step;
	tr->warmup = cfg->warmup_steps > 0
	                 ? cfg->warmup_steps
	                 : (long)ceil(cfg->warmup_ratio * (double)tr->total_steps);
	if (c->rank == 0) {
		char path[TRL_PATH_MAX + 32];
		snprintf(path, sizeof path, "%s/metrics.jsonl", cfg->output_dir);
		if (tr->resume_path[0])
			train_trim_metrics(path, tr->start_step);
		tr->metrics = fopen(path, tr->resume_path[0] ? "a" : "w");
		if (!tr->metrics)
			rc = trl_errf(err, TRL_EIO, "cannot write %s", path);
	}
	return comm_agree(c, rc, err);
}

static double peak_rss_bytes(void)
{
	struct rusage ru;
	return getrusage(RUSAGE_SELF, &ru) == 0 ? 1024.0 * (double)ru.ru_maxrss : 0.0;
}

/* Every rank's memory and communication figures: one line per rank in
 * output_dir/ranks.jsonl and a summary on the console (rank 0). Collective. */
enum {
	REP_PARAMS,
	REP_GRADS,
	REP_OPTIM,
	REP_WORK,
	REP_BYTES,
	REP_WAIT,
	REP_STEP,
	REP_RSS,
	REP_COLL,
	REP_FROZEN,
	REP_N
};

static void report_ranks(Trainer *tr)
{
	const Comm *c = tr->comm;
	const Zero *z = &tr->zero;
	double steps = tr->steps_run > 0 ? (double)tr->steps_run : 1.0;
	/* Under LoRA z is the adapters'; the frozen base's weights are apart. */
	double frozen = !tr->peft ? 0.0
	                : z->stage == 3
	                    ? tr->base_zero.mem.params + tr->base_zero.mem.work
	                    : 4.0 * (double)tr->model.table.total;
	double mine[REP_N] = {z->mem.params,
	                      z->mem.grads,
	                      z->mem.optim,
	                      z->mem.work,
	                      z->st.bytes / steps,
	                      z->st.wait_s / steps,
	                      tr->step_s / steps,
	                      peak_rss_bytes(),
	                      (double)z->st.collectives / steps,
	                      frozen};
	double *all = c->rank == 0 ? malloc(sizeof mine * (size_t)c->size) : NULL;
	int have = c->rank != 0 || all; /* rank 0 could not allocate: no report */
	MPI_Bcast(&have, 1, MPI_INT, 0, c->world);
	if (!have)
		return;
	MPI_Gather(mine, REP_N, MPI_DOUBLE, all, REP_N, MPI_DOUBLE, 0, c->world);
	if (c->rank != 0)
		return;
	char path[TRL_PATH_MAX + 32];
	snprintf(path, sizeof path, "%s/ranks.jsonl", tr->cfg->output_dir);
	FILE *f = fopen(path, "w");
	double hi[REP_N] = {0};
	for (int r = 0; r < c->size; r++) {
		const double *x = all + (size_t)r * REP_N;
		for (int k = 0; k < REP_N; k++)
			hi[k] = x[k] > hi[k] ? x[k] : hi[k];
		if (f)
			fprintf(
			    f,
			    "{\"rank\": %d, \"ranks\": %d, \"zero_stage\": %d, "
			    "\"threads\": %d, \"param_bytes\": %.0f, "
			    "\"grad_bytes\": %.0f, \"optim_bytes\": %.0f, "
			    "\"work_bytes\": %.0f, \"model_state_bytes\": %.0f, "
			    "\"comm_bytes_per_step\": %.0f, "
			    "\"collectives_per_step\": %.1f, "
			    "\"mpi_wait_s_per_step\": %.6f, \"step_s\": %.6f, "
			    "\"peak_rss_bytes\": %.0f, \"num_params\": %zu, "
			    "\"frozen_param_bytes\": %.0f, \"trainable_params\": %zu}\n",
			    r, c->size, z->stage, omp_get_max_threads(), x[REP_PARAMS],
			    x[REP_GRADS], x[REP_OPTIM], x[REP_WORK],
			    x[REP_PARAMS] + x[REP_GRADS] + x[REP_OPTIM] + x[REP_WORK] +
			        x[REP_FROZEN],
			    x[REP_BYTES], x[REP_COLL], x[REP_WAIT], x[REP_STEP],
			    x[REP_RSS], tr->model.table.total, x[REP_FROZEN],
			    tr->peft ? tr->lora.n_trainable : tr->model.table.total);
	}
	if (f)
		fclose(f);
	double mib = 1.0 / 1048576.0;
	printf("zero stage %d: per step %.1f MiB sent per rank in %.0f collectives, MPI "
	       "wait %.1f ms of %.1f ms (%.1f%%); peak RSS %.1f MiB (largest rank)\n",
	       z->stage, hi[REP_BYTES] * mib, hi[REP_COLL], 1e3 * hi[REP_WAIT],
	       1e3 * hi[REP_STEP],
	       hi[REP_STEP] > 0 ? 100.0 * hi[REP_WAIT] / hi[REP_STEP] : 0.0,
	       hi[REP_RSS] * mib);
	fflush(stdout);
	free(all);
}

static void print_banner(const Trainer *tr)
{
	const Config *cfg = tr->cfg;
	const Model *m = &tr->model;
	printf("trl-hpc %s: %s on %d rank%s x %d thread%s\n", TRL_VERSION_STRING,
	       tr->method->name, tr->comm->size, tr->comm->size > 1 ? "s" : "",
	       omp_get_max_threads(), omp_get_max_threads() > 1 ? "s" : "");
	printf(
	    "model: %s, %zu parameters (%d layers, hidden %d, heads %d/%d, vocab %d)\n",
	    model_arch_name(m->cfg.arch), model_config_num_params(&m->cfg),
	    m->cfg.num_hidden_layers, m->cfg.hidden_size, m->cfg.num_attention_heads,
	    m->cfg.num_key_value_heads, m->cfg.vocab_size);
	printf(
	    "data: %d train rows (%d examples, %s%s), %d test examples; %d skipped, %d "
	    "truncated%s\n",
	    tr->train_rows.n, tr->train.n, dataset_format_name(tr->train.format),
	    cfg->packing ? ", packed" : "", tr->has_test ? tr->test.n : 0,
	    tr->train.n_skipped + tr->test.n_skipped,
	    tr->train.n_truncated + tr->test.n_truncated,
	    tr->cache_hits[0] ? "; tokenized data from the cache" : "");
	if (gemm_precision() == GEMM_BF16)
		printf("precision: bf16 matmul inputs, fp32 accumulation, weights, norms "
		       "and AdamW (oneDNN %s)\n",
		       gemm_impl(cfg->per_device_train_batch_size * cfg->max_length,
		                 m->cfg.hidden_size, m->cfg.hidden_size));
	else
		printf("precision: fp32 (cblas sgemm)\n");
	const ZeroMem *zm = &tr->zero.mem;
	double mib = 1.0 / 1048576.0;
	if (tr->peft) {
		char text[1024];
		lora_describe(&tr->lora, m, text, sizeof text);
		printf("%s\n", text);
	}
	/* Under LoRA: the adapters' states, then the frozen base's weights. */
	printf("zero stage %d: model states on rank 0: parameters %.1f MiB, gradients "
	       "%.1f MiB, optimizer %.1f MiB, gather/reduce buffers %.1f MiB\n",
	       tr->zero.stage, zm->params * mib, zm->grads * mib, zm->optim * mib,
	       zm->work * mib);
	if (tr->peft)
		printf("frozen base: %.1f MiB of weights on rank 0 (%s), no gradients or "
		       "optimizer state\n",
		       (tr->zero.stage == 3
		            ? tr->base_zero.mem.params + tr->base_zero.mem.work
		            : 4.0 * (double)m->table.total) *
		           mib,
		       tr->zero.stage == 3 ? "sharded" : "whole");
	if (tr->method->online) {
		int K = tr->link ? tr->link->K : 0;
		printf("steps: %ld (global batch %ld prompts x %d generations = %d "
		       "completions "
		       "per device x %d accumulation x %d trainer%s)\n",
		       tr->total_steps, tr->rows_per_step,
		       cfg->method == TRL_METHOD_PPO ? 1 : cfg->num_generations,
		       cfg->per_device_train_batch_size, cfg->gradient_accumulation_steps,
		       tr->comm->size, tr->comm->size > 1 ? "s" : "");
		if (K > 0)
			printf("rollouts: %d generation rank%s (world ranks %d-%d), "
			       "max_staleness "
			       "%d: one packed weight push of %.1f MiB per round\n",
			       K, K > 1 ? "s" : "", tr->comm->size,
			       tr->comm->size + K - 1, cfg->max_staleness,
			       tr->model.table.total * 4.0 / 1048576.0);
		else
			printf("rollouts: generated by the trainers between steps "
			       "(generation_ranks "
			       "0)\n");
	} else {
		printf("steps: %ld (global batch %ld rows = %d per device x %d "
		       "accumulation x "
		       "%d ranks)\n",
		       tr->total_steps, tr->rows_per_step,
		       cfg->per_device_train_batch_size, cfg->gradient_accumulation_steps,
		       tr->comm->size);
	}
	fflush(stdout);
}

int trl_train(const Config *cfg, const Comm *comm, TrlErr *err)
{
	Trainer tr;
	memset(&tr, 0, sizeof tr);
	tr.cfg = cfg;
	tr.comm = comm;
	/* SIGTERM (preemption, scancel) and SIGUSR1 (Slurm's --signal warning
	 * before the time limit) ask for a checkpoint and a clean stop. */
	struct sigaction sa, old_term, old_usr1;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = train_on_stop_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	train_stop_signal = 0;
	sigaction(SIGTERM, &sa, &old_term);
	sigaction(SIGUSR1, &sa, &old_usr1);
	/* Online methods with generation_ranks: the last K ranks serve rollouts
	 * and never return here until the job ends; the trainers run on their
	 * own communicator. */
	RolloutLink link;
	memset(&link, 0, sizeof link);
	/* Every rank, generation ranks too, takes the same precision; a build
	 * without oneDNN refuses bf16 on all of them alike. */
	int prc = gemm_set_precision(cfg->bf16 ? GEMM_BF16 : GEMM_FP32, err);
	if (prc) {
		sigaction(SIGTERM, &old_term, NULL);
		sigaction(SIGUSR1, &old_usr1, NULL);
		return prc;
	}
	Comm tcomm = *comm;
	int K = TRL_METHOD_IS_ONLINE(cfg->method) ? cfg->generation_ranks : 0;
	int rc;
	if (K > 0) {
		if ((rc = rollout_link_init(&link, comm->world, K, err)) != 0)
			goto out_link;
		if (link.is_generator) {
			rc = rollout_serve(cfg, &link, err);
			goto out_link;
		}
		tcomm.world = link.trainers_comm;
		MPI_Comm_rank(tcomm.world, &tcomm.rank);
		MPI_Comm_size(tcomm.world, &tcomm.size);
		tr.comm = &tcomm;
		tr.link = &link;
	}
	rc = setup(&tr, err);
	if (K > 0)
		online_start(&tr, &link, rc);
	if (rc)
		goto out;
	tr.weights_version = tr.start_step;
	online_begin(&tr);
	if (tr.comm->rank == 0)
		print_banner(&tr);
	if (!tr.resume_path[0])
		train_run_eval(&tr, 0, "before");
	memset(&tr.zero.st, 0, sizeof tr.zero.st);
	tr.t_start = trl_now();
	rc = train_loop(&tr, err);
	if (rc)
		goto out;
	double elapsed = trl_now() - tr.t_start;
	train_run_eval(&tr, tr.total_steps, "after");
	if (comm->rank == 0)
		printf("trained %ld steps in %.1f s\n", tr.total_steps - tr.start_step,
		       elapsed);
	report_ranks(&tr);
	rc = train_export_model(&tr, cfg->output_dir, err);
	if (!rc && comm->rank == 0 && tr.peft)
		printf("saved %s: adapter_model.safetensors (float32), "
		       "adapter_config.json (base %s), trl_config.yaml, metrics.jsonl, "
		       "ranks.jsonl\n",
		       cfg->output_dir, tr.lora_base);
	else if (!rc && comm->rank == 0)
		printf("saved %s: model.safetensors (%s), config.json, "
		       "trl_config.yaml, metrics.jsonl, ranks.jsonl\n",
		       cfg->output_dir, cfg->save_dtype == 1 ? "bfloat16" : "float32");
out:
	if (K > 0)
		rc = rollout_finish(&link, rc, err);
	trainer_free(&tr);
out_link:
	if (K > 0)
		rollout_link_free(&link);
	sigaction(SIGTERM, &old_term, NULL);
	sigaction(SIGUSR1, &old_usr1, NULL);
	return rc;
}
