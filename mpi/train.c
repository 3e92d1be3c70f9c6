/* train.c - the training loop: data-parallel micro-batches, loss normalised by
 * the global target-token count, AdamW, evaluation, metrics and the save. */
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

#include "ckpt_h5.h"
#include "dataset.h"
#include "dataset_cache.h"
#include "json.h"
#include "layers.h"
#include "model.h"
#include "model_io.h"
#include "optim.h"
#include "rng.h"
#include "tokenizer.h"
#include "zero.h"

/* What a method declares to the loop: its name and the data formats it reads.
 * SFT's loss, next-token cross-entropy on the masked targets, is the loop's
 * own; methods with reference passes and other losses extend this table. */
typedef struct Method {
	const char *name;
	TrlDataFormat formats_ok[2];
	int n_formats;
} Method;

static const Method METHOD_SFT = {
    "sft", {TRL_FMT_LANGUAGE_MODELING, TRL_FMT_PROMPT_COMPLETION}, 2};

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

/* ---- set-up ------------------------------------------------------------------ */

static int dataset_paths(const Config *cfg, char *train, char *test, size_t cap,
                         int *has_test, TrlErr *err)
{
	size_t n = strlen(cfg->dataset_name);
	if (n == 0)
		return trl_errf(err, TRL_EINVAL,
		                "dataset_name is not set: point it at a .jsonl file or a "
		                "folder holding %s.jsonl",
		                cfg->dataset_train_split);
	if (n > 6 && strcmp(cfg->dataset_name + n - 6, ".jsonl") == 0) {
		snprintf(train, cap, "%s", cfg->dataset_name);
		*has_test = 0;
	} else {
		snprintf(train, cap, "%s/%s.jsonl", cfg->dataset_name,
		         cfg->dataset_train_split);
		snprintf(test, cap, "%s/%s.jsonl", cfg->dataset_name,
		         cfg->dataset_test_split);
		*has_test = access(test, R_OK) == 0;
	}
	if (access(train, R_OK) != 0)
		return trl_errf(
		    err, TRL_EIO,
		    "dataset_name: cannot read '%s' (dataset_name = '%s'; expected a "
		    ".jsonl file or a folder with %s.jsonl)",
		    train, cfg->dataset_name, cfg->dataset_train_split);
	return TRL_OK;
}

_Static_assert((int)TRL_DATASET_FORMAT_UNPAIRED_PREFERENCE ==
                       (int)TRL_FMT_UNPAIRED_PREFERENCE &&
                   (int)TRL_DATASET_FORMAT_PROMPT_ONLY == (int)TRL_FMT_PROMPT_ONLY,
               "dataset_format values are TrlDataFormat values");

/* The chat template for conversational data: the chat_template key, else the
 * Jinja source in the model's tokenizer_config.json, else chatml. *root keeps
 * the parsed file alive while the returned string is in use. */
static const char *chat_template_source(const Config *cfg, JsonValue **root)
{
	*root = NULL;
	if (cfg->chat_template[0])
		return cfg->chat_template;
	if (cfg->model_name_or_path[0]) {
		char path[TRL_PATH_MAX + 32];
		snprintf(path, sizeof path, "%s/tokenizer_config.json",
		         cfg->model_name_or_path);
		TrlErr ignored;
		if (access(path, R_OK) == 0 &&
		    json_load_file(path, root, &ignored) == 0) {
			const char *s = json_str(json_get(*root, "chat_template"));
			if (s)
				return s;
		}
	}
	return "chatml";
}

/* Where tokenized datasets are kept: dataset_cache_dir, else the user's cache
 * folder; "none" (or no usable home) turns the cache off. */
static void cache_dir_of(const Config *cfg, char *buf, size_t cap)
{
	const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
	buf[0] = 0;
	if (strcmp(cfg->dataset_cache_dir, "none") == 0)
		return;
	if (cfg->dataset_cache_dir[0])
		snprintf(buf, cap, "%s", cfg->dataset_cache_dir);
	else if (xdg && xdg[0])
		snprintf(buf, cap, "%s/trl-hpc/datasets", xdg);
	else if (home && home[0])
		snprintf(buf, cap, "%s/.cache/trl-hpc/datasets", home);
}

static int load_data(Trainer *tr, TrlErr *err)
{
	const Config *cfg = tr->cfg;
	char train[TRL_PATH_MAX + 80], test[TRL_PATH_MAX + 80];
	int rc = dataset_paths(cfg, train, test, sizeof train, &tr->has_test, err);
	if (rc)
		return rc;
	JsonValue *tc = NULL;
	DatasetOptions o = {.text_field = cfg->dataset_text_field,
	                    .max_length = cfg->max_length,
	                    .keep_end = cfg->truncation_mode == TRL_TRUNC_KEEP_END,
	                    .completion_only_loss = cfg->completion_only_loss,
	                    .skip_invalid_rows = cfg->skip_invalid_rows,
	                    .format = (TrlDataFormat)cfg->dataset_format,
	                    .assistant_only_loss = cfg->assistant_only_loss,
	                    .chat_template = chat_template_source(cfg, &tc),
	                    .eos_token = cfg->eos_token};
	char cache[TRL_PATH_MAX + 32] = "";
	cache_dir_of(cfg, cache, sizeof cache);
	int write = tr->comm->rank == 0; /* one writer; the rename makes it atomic */
	rc = dataset_load_cached(&tr->train, train, &o, &tr->tok, cache, write,
	                         &tr->cache_hits[0], err);
	if (!rc)
		rc = dataset_check_method(&tr->train, train, tr->method->name,
		                          tr->method->formats_ok, tr->method->n_formats,
		                          err);
	if (!rc && tr->has_test)
		rc = dataset_load_cached(&tr->test, test, &o, &tr->tok, cache, write,
		                         &tr->cache_hits[1], err);
	if (!rc && tr->has_test)
		rc = dataset_check_method(&tr->test, test, tr->method->name,
		                          tr->method->formats_ok, tr->method->n_formats,
		                          err);
	json_free(tc);
	if (rc)
		return rc;
	rc = cfg->packing
	         ? rows_pack_bfd(&tr->train_rows, &tr->train, cfg->max_length, err)
	         : rows_unpacked(&tr->train_rows, &tr->train, err);
	if (!rc && tr->has_test)
		rc = rows_unpacked(&tr->test_rows, &tr->test, err);
	return rc;
}

/* The model folder's tokenizer.json when there is one, else the byte tokenizer;
 * eos_token replaces its EOS. */
static int load_tokenizer(Trainer *tr, TrlErr *err)
{
	const Config *cfg = tr->cfg;
	int rc = 0;
	char path[TRL_PATH_MAX + 32];
	snprintf(path, sizeof path, "%s/tokenizer.json", cfg->model_name_or_path);
	if (cfg->model_name_or_path[0] && access(path, R_OK) == 0)
		rc = tokenizer_load_dir(&tr->tok, cfg->model_name_or_path, err);
	else
		tokenizer_init_bytes(&tr->tok);
	int32_t eos;
	if (!rc && (rc = dataset_eos_id(&tr->tok, cfg->eos_token, &eos, err)) == 0)
		tr->tok.eos_id = eos;
	/* EOS ends every completion and pads the batches: a tokenizer that names
	 * none would put id -1 into the embedding. */
	if (!rc && tr->tok.eos_id < 0)
		rc = trl_errf(err, TRL_EINVAL,
		              "%s: the tokenizer names no EOS token (eos_token in "
		              "tokenizer_config.json): set eos_token in the config",
		              cfg->model_name_or_path);
	if (!rc && tr->tok.pad_id < 0)
		tr->tok.pad_id = tr->tok.eos_id;
	return rc;
}

/* Every token id of the data must have a row in the embedding (a tokenizer
 * with more added tokens than the model's vocab_size would index past it). */
static int check_ids(const Dataset *d, int V, const char *split, TrlErr *err)
{
	for (int i = 0; i < d->n; i++) {
		const Example *e = &d->ex[i];
		for (int pass = 0; pass < 2; pass++) {
			const int32_t *ids = pass ? e->rejected_ids : e->ids;
			int n = pass ? e->rejected_len : e->len;
			for (int t = 0; ids && t < n; t++)
				if (ids[t] < 0 || ids[t] >= V)
					return trl_errf(
					    err, TRL_EINVAL,
					    "%s split, line %d: token id %d is outside "
					    "the model's vocabulary (vocab_size %d)",
					    split, e->line, (int)ids[t], V);
		}
	}
	return TRL_OK;
}

/* The model, sharded as zero_stage says. Stages 0 and 1 keep full slabs;
 * stage 2 has no full gradient and stage 3 no full parameters either, so a
 * pretrained model is read whole once, handed over and freed (every rank
 * reads the folder itself). When resuming, the checkpoint brings the weights:
 * only the folder's config.json is read. */
static int load_model(Trainer *tr, TrlErr *err)
{
	const Config *cfg = tr->cfg;
	unsigned flags = zero_model_flags(cfg->zero_stage);
	Model full;
	memset(&full, 0, sizeof full);
	int rc;
	if (cfg->model_name_or_path[0] && tr->resume_path[0]) {
		char path[TRL_PATH_MAX + 16];
		ModelConfig mc;
		snprintf(path, sizeof path, "%s/config.json", cfg->model_name_or_path);
		rc = model_config_load_json(&mc, path, err);
		if (!rc)
			rc = model_init_flags(&tr->model, &mc, flags, err);
	} else if (cfg->model_name_or_path[0]) {
		Model *dst = flags ? &full : &tr->model;
		rc = model_load_dir(dst, cfg->model_name_or_path, err);
		if (!rc && flags)
			rc = model_init_flags(&tr->model, &full.cfg, flags, err);
		if (!rc && tr->model.params)
			memcpy(tr->model.params, full.params,
			       full.table.total * sizeof(float));
	} else {
		rc = model_init_flags(&tr->model, &cfg->model, flags, err);
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
	int rc = model_alloc_activations(&tr->model, B > Be ? B : Be, T, err);
	if (rc)
		return rc;
	int GA = cfg->gradient_accumulation_steps;
	tr->mb = calloc((size_t)GA, sizeof *tr->mb);
	tr->idx = calloc((size_t)(B > Be ? B : Be), sizeof *tr->idx);
	tr->gen_len = calloc((size_t)Be, sizeof(int));
	tr->gen_done = calloc((size_t)Be, sizeof(int));
	tr->gen_match = calloc((size_t)Be, sizeof(int));
	tr->gen_ex = calloc((size_t)Be, sizeof(int));
	if (!tr->mb || !tr->idx || !tr->gen_len || !tr->gen_done || !tr->gen_match ||
	    !tr->gen_ex)
		return trl_errf(err, TRL_ENOMEM, "out of memory");
	for (int j = 0; j < GA && !rc; j++)
		rc = batch_alloc(&tr->mb[j], B, T, err);
	if (!rc)
		rc = batch_alloc(&tr->eval, Be, T, err);
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
	for (int j = 0; tr->mb && j < tr->cfg->gradient_accumulation_steps; j++)
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
	zero_free(&tr->zero);
	model_free(&tr->model);
	rows_free(&tr->train_rows);
	rows_free(&tr->test_rows);
	dataset_free(&tr->train);
	dataset_free(&tr->test);
	tokenizer_free(&tr->tok);
	if (tr->metrics)
		fclose(tr->metrics);
}

/* ---- sampler ----------------------------------------------------------------- */

/* Row at position p of the global sample stream: epoch p / n, shuffled by the
 * (seed, epoch) permutation. The stream does not depend on the rank count, so
 * the global batch of a step is the same for any number of ranks. */
static int stream_row(Trainer *tr, long p)
{
	long n = tr->train_rows.n, epoch = p / n;
	int k = (int)(epoch & 1);
	if (tr->perm_epoch[k] != epoch) {
		sampler_permutation(tr->perm[k], (int)n, (uint64_t)tr->cfg->seed, epoch);
		tr->perm_epoch[k] = epoch;
	}
	return tr->perm[k][p % n];
}

/* ---- evaluation -------------------------------------------------------------- */

typedef struct EvalResult {
	double loss, accuracy, exact_match;
	long tokens, n_exact;
} EvalResult;

/* A forward on one padding token. Under stage 3 every forward gathers
 * parameters collectively, so a rank that has run out of evaluation rows
 * still runs one forward for each that another rank runs. */
static void dummy_forward(Trainer *tr)
{
	Batch *b = &tr->eval;
	b->B = b->T = 1;
	b->ids[0] = tr->tok.pad_id;
	b->pos[0] = b->doc[0] = 0;
	b->targets[0] = -1;
	model_forward(&tr->model, b);
}

static void eval_loss(Trainer *tr, EvalResult *r)
{
	const Comm *c = tr->comm;
	int Be = tr->cfg->per_device_eval_batch_size;
	double sums[1] = {0};
	long counts[2] = {0, 0};
	int n = tr->test_rows.n;
	if (tr->cfg->eval_max_samples > 0 && tr->cfg->eval_max_samples < n)
		n = tr->cfg->eval_max_samples;
	/* Rank r takes the chunks r, r + size, ...; every chunk is one batch. */
	long rounds = ((long)n + (long)c->size * Be - 1) / ((long)c->size * Be);
	for (long i = 0; i < rounds; i++) {
		int first = (int)((i * c->size + c->rank) * Be);
		if (first >= n) {
			if (tr->sync_forwards)
				dummy_forward(tr);
			continue;
		}
		int k = n - first < Be ? n - first : Be;
		for (int i = 0; i < k; i++)
			tr->idx[i] = first + i;
		batch_fill(&tr->eval, &tr->test, &tr->test_rows, tr->idx, k,
		           tr->tok.pad_id);
		model_forward(&tr->model, &tr->eval);
		sums[0] += crossentropy_forward_backward(
		    tr->model.logits, tr->eval.targets, tr->eval.B * tr->eval.T,
		    tr->model.cfg.vocab_size, 0.0f, &counts[0], &counts[1]);
	}
	comm_sum_double(c, sums, 1);
	comm_sum_long(c, counts, 2);
	r->tokens = counts[0];
	r->loss = counts[0] ? sums[0] / counts[0] : 0.0;
	r->accuracy = counts[0] ? (double)counts[1] / counts[0] : 0.0;
}

/* Greedy answers for the prompts of the k examples ex[0..k): the batch holds
 * every prompt right-padded; each step reads the logits at each row's last
 * real position. A row's answer is exact when the tokens generated before EOS
 * equal the reference completion (without its EOS). While an answer matches,
 * the tokens generated so far are the reference's own, so the rows are read
 * from the example; generation stops at the first wrong token. */
static long eval_exact_batch(Trainer *tr, const int *ex, int k)
{
	const Dataset *d = &tr->test;
	Batch *b = &tr->eval;
	int maxnew = tr->cfg->eval_max_new_tokens, V = tr->model.cfg.vocab_size;
	int *len = tr->gen_len, *done = tr->gen_done, *match = tr->gen_match;
	int T = 1;
	for (int i = 0; i < k; i++) {
		len[i] = d->ex[ex[i]].prompt_len; /* >= 1: empty prompts are not asked */
		done[i] = 0;
		match[i] = 1;
		T = len[i] > T ? len[i] : T;
	}
	for (int step = 0; step <= maxnew; step++) {
		int live = 0, any;
		for (int i = 0; i < k; i++)
			live += !done[i];
		any = live;
		if (tr->sync_forwards)
			MPI_Allreduce(&live, &any, 1, MPI_INT, MPI_MAX, tr->comm->world);
		if (!any)
			break;
		if (!live) {
			dummy_forward(tr);
			continue;
		}
		b->B = k;
		b->T = T;
		for (int i = 0; i < k; i++) {
			const Example *e = &d->ex[ex[i]];
			for (int t = 0; t < T; t++) {
				size_t o = (size_t)i * T + t;
				int real = t < len[i];
				b->ids[o] = real ? e->ids[t] : tr->tok.pad_id;
				b->pos[o] = t;
				b->doc[o] = real ? 0 : -1;
				b->targets[o] = -1;
			}
		}
		model_forward(&tr->model, b);
		int grow = 0;
		for (int i = 0; i < k; i++) {
			if (done[i])
				continue;
			const Example *e = &d->ex[ex[i]];
			const float *l =
			    tr->model.logits + ((size_t)i * T + len[i] - 1) * V;
			int am = 0;
			for (int v = 1; v < V; v++)
				if (l[v] > l[am])
					am = v;
			int ref_len = e->len - e->prompt_len;
			if (ref_len > 0 && e->ids[e->len - 1] == tr->tok.eos_id)
				ref_len--;
			int pos = len[i] - e->prompt_len; /* tokens generated so far */
			if (am == tr->tok.eos_id) {
				match[i] = pos == ref_len;
				done[i] = 1;
			} else if (pos >= ref_len || am != e->ids[e->prompt_len + pos] ||
			           step == maxnew) {
				match[i] =
				    0; /* longer than, or differs from, the answer */
				done[i] = 1;
			} else {
				len[i]++;
				grow |= len[i] > T;
			}
		}
		if (grow)
			T++;
	}
	long n = 0;
	for (int i = 0; i < k; i++)
		n += match[i] && done[i];
	return n;
}

static void eval_exact(Trainer *tr, EvalResult *r)
{
	const Comm *c = tr->comm;
	int Be = tr->cfg->per_device_eval_batch_size;
	int n = tr->test.n;
	if (tr->cfg->eval_max_samples > 0 && tr->cfg->eval_max_samples < n)
		n = tr->cfg->eval_max_samples;
	long counts[2] = {0, 0}; /* exact answers, questions asked */
	long rounds = ((long)n + (long)c->size * Be - 1) / ((long)c->size * Be);
	for (long r = 0; r < rounds; r++) {
		int first = (int)((r * c->size + c->rank) * Be);
		int k = 0, end = first >= n ? first : n - first < Be ? n : first + Be;
		for (int i = first; i < end; i++)
			if (tr->test.ex[i].prompt_len > 0)
				tr->gen_ex[k++] = i;
		if (k > 0 || tr->sync_forwards)
			counts[0] += eval_exact_batch(tr, tr->gen_ex, k);
		counts[1] += end - first; /* an empty prompt counts as a wrong answer */
	}
	comm_sum_long(c, counts, 2);
	r->n_exact = counts[1];
	r->exact_match = counts[1] ? (double)counts[0] / counts[1] : 0.0;
}

static void run_eval(Trainer *tr, long step, const char *when)
{
	if (!tr->has_test)
		return;
	EvalResult r = {0};
	double t0 = trl_now();
	ZeroStats kept = tr->zero.st; /* the step figures leave evaluation out */
	eval_loss(tr, &r);
	int exact = tr->cfg->eval_max_new_tokens > 0 &&
	            tr->test.format == TRL_FMT_PROMPT_COMPLETION;
	if (exact)
		eval_exact(tr, &r);
	tr->zero.st = kept;
	if (tr->comm->rank != 0)
		return;
	printf("eval %-6s step %ld: eval_loss %.4f  eval_mean_token_accuracy %.4f", when,
	       step, r.loss, r.accuracy);
	if (exact)
		printf("  eval_exact_match %.4f (%ld answers)", r.exact_match, r.n_exact);
	printf("  [%.1f s]\n", trl_now() - t0);
	fflush(stdout);
	if (tr->metrics) {
		fprintf(tr->metrics,
		        "{\"step\": %ld, \"eval_loss\": %.6f, "
		        "\"eval_mean_token_accuracy\": %.6f",
		        step, r.loss, r.accuracy);
		if (exact)
			fprintf(tr->metrics, ", \"eval_exact_match\": %.6f",
			        r.exact_match);
		fprintf(tr->metrics, "}\n");
		fflush(tr->metrics);
	}
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
	double loss_sum, t0;
	long targets, correct, tokens;
} LogWindow;

/* Writes the model as a Hugging Face folder: rank 0 writes, after every
 * rank has helped assemble the full weights under stage 3. The tokenizer files
 * of the model we started from travel with it, so the output loads as it came
 * in; save_dtype picks fp32 or bf16 weights. Collective; returns the agreed
 * status. */
static int export_model(Trainer *tr, const char *dir, TrlErr *err)
{
	const Config *cfg = tr->cfg;
	const Comm *c = tr->comm;
	const Model *src = &tr->model;
	Model full;
	memset(&full, 0, sizeof full);
	int rc = TRL_OK;
	ZeroStats kept = tr->zero.st; /* the step figures leave saves out */
	zero_flush(&tr->zero);
	if (tr->zero.stage == 3) {
		if (c->rank == 0)
			rc = model_init_flags(&full, &tr->model.cfg, MODEL_NO_GRADS, err);
		if ((rc = comm_agree(c, rc, err)))
			return rc;
		zero_gather_full(&tr->zero, c->rank == 0 ? full.params : NULL, 0);
		src = &full;
	}
	tr->zero.st = kept;
	if (c->rank == 0) {
		ModelExportOpts xo = MODEL_EXPORT_DEFAULTS;
		xo.dtype = cfg->save_dtype == 1 ? ST_BF16 : ST_F32;
		xo.tokenizer_dir =
		    cfg->model_name_or_path[0] ? cfg->model_name_or_path : NULL;
		xo.bos_token_id = tr->tok.bos_id;
		xo.eos_token_id = tr->tok.eos_id;
		rc = model_export_dir(src, dir, &xo, err);
	}
	if (!rc && c->rank == 0) {
		char path[TRL_PATH_MAX + 64];
		snprintf(path, sizeof path, "%s/trl_config.yaml", dir);
		FILE *f = fopen(path, "w");
		if (f) {
			config_write_yaml(cfg, f);
			if (fclose(f) != 0)
				f = NULL;
		}
		if (!f)
			rc = trl_errf(err, TRL_EIO, "cannot write %s", path);
	}
	model_free(&full);
	return comm_agree(c, rc, err);
}

/* ---- checkpoints ------------------------------------------------------------- */

/* Set by SIGTERM or SIGUSR1: the loop finishes its step, saves and stops. */
static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig)
{
	stop_signal = sig;
}

/* Samples of the global stream consumed before optimizer step `step`. */
static long samples_before(const Trainer *tr, long step)
{
	return tr->sample_base + (step - tr->start_step) * tr->rows_per_step;
}

static double epoch_at(const Trainer *tr, long step)
{
	return (double)samples_before(tr, step) / (double)tr->train_rows.n;
}

/* Writes <output_dir>/checkpoint-<step>.h5 and points `latest` at it; with
 * model_only, without the optimizer state. Collective; returns the agreed
 * status. */
static int save_checkpoint(Trainer *tr, long step, int model_only, TrlErr *err)
{
	const Config *cfg = tr->cfg;
	const Comm *c = tr->comm;
	CkptState st;
	memset(&st, 0, sizeof st);
	st.global_step = step;
	st.total_steps = tr->total_steps;
	st.num_tokens = tr->total_tokens;
	st.epoch = epoch_at(tr, step);
	st.seed = cfg->seed;
	st.samples_seen = samples_before(tr, step);
	st.rows_per_step = tr->rows_per_step;
	st.num_rows = tr->train_rows.n;
	st.lr_scheduler_type = cfg->lr_scheduler_type;
	st.learning_rate = cfg->learning_rate;
	st.last_lr = step > 0 ? lr_at_step(cfg->lr_scheduler_type, cfg->learning_rate,
	                                   step - 1, tr->total_steps, tr->warmup)
	                      : 0.0;
	st.warmup_steps = tr->warmup;
	st.world_size = c->size;
	st.zero_stage = cfg->zero_stage;
	st.save_only_model = model_only;
	st.adam_step = tr->zero.opt[0].step;
	st.bos_token_id = tr->tok.bos_id;
	st.eos_token_id = tr->tok.eos_id;
	snprintf(st.model_name_or_path, sizeof st.model_name_or_path, "%s",
	         cfg->model_name_or_path);
	memcpy(st.rng, tr->rng.s, sizeof st.rng);
	char name[64], path[TRL_PATH_MAX + 96];
	snprintf(name, sizeof name, "checkpoint-%ld.h5", step);
	snprintf(path, sizeof path, "%s/%s", cfg->output_dir, name);
	ZeroStats kept = tr->zero.st; /* the step figures leave saves out */
	CkptIo io;
	int rc = ckpt_save(path, &tr->zero, cfg, &st, &io, err);
	tr->zero.st = kept;
	if (!rc && c->rank == 0)
		rc = ckpt_publish(cfg->output_dir, name, cfg->save_total_limit, err);
	if ((rc = comm_agree(c, rc, err)))
		return rc;
	if (!model_only)
		tr->last_saved = step;
	double moved[2] = {io.bytes, io.seconds};
	comm_sum_double(c, moved, 1);
	if (c->rank == 0) {
		if (isatty(STDERR_FILENO) && !cfg->disable_tqdm)
			fputc('\n', stderr);
		printf("saved %s: %.1f MiB in %.2f s (%.0f MiB/s)\n", path,
		       moved[0] / 1048576.0, moved[1],
		       moved[1] > 0 ? moved[0] / 1048576.0 / moved[1] : 0.0);
		fflush(stdout);
	}
	return TRL_OK;
}

/* Keeps the lines of metrics.jsonl up to `step`: a resumed run writes the
 * steps after it again. */
static void trim_metrics(const char *path, long step)
{
	char *buf = NULL;
	size_t len = 0;
	TrlErr ignored;
	if (trl_read_file(path, &buf, &len, &ignored) != 0)
		return;
	char tmp[TRL_PATH_MAX + 48];
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	for (char *line = buf; f && line < buf + len;) {
		char *nl = memchr(line, '\n', (size_t)(buf + len - line));
		size_t n = nl ? (size_t)(nl - line) + 1 : (size_t)(buf + len - line);
		const char *k = strstr(line, "\"step\": ");
		if (k && k < line + n && strtol(k + 8, NULL, 10) <= step)
			fwrite(line, 1, n, f);
		line += n;
	}
	if (f && fclose(f) == 0)
		rename(tmp, path);
	trl_free(buf);
}

/* Loads the checkpoint named by resume_from_checkpoint into the model and
 * optimizer and continues the sample stream and counters from it. */
static int resume(Trainer *tr, TrlErr *err)
{
	const Config *cfg = tr->cfg;
	CkptState st;
	CkptIo io;
	int rc = ckpt_load(tr->resume_path, &tr->zero, &st, &io, err);
	if (rc)
		return rc;
	tr->start_step = st.global_step;
	tr->sample_base = st.samples_seen;
	tr->total_tokens = st.num_tokens;
	if (st.rng[0] | st.rng[1] | st.rng[2] | st.rng[3])
		memcpy(tr->rng.s, st.rng, sizeof st.rng);
	if (tr->comm->rank != 0)
		return TRL_OK;
	printf("resumed from %s: step %ld, epoch %.2f (saved by %d rank%s at zero_stage "
	       "%d; read in %.2f s)\n",
	       tr->resume_path, st.global_step, st.epoch, st.world_size,
	       st.world_size > 1 ? "s" : "", st.zero_stage, io.seconds);
	if (st.num_rows != tr->train_rows.n || st.seed != cfg->seed)
		printf("note: the checkpoint was trained on %ld rows with seed %ld, this "
		       "run has %d rows and seed %ld: the data order from here on is not "
		       "the one the first run would have seen\n",
		       st.num_rows, st.seed, tr->train_rows.n, cfg->seed);
	fflush(stdout);
	return TRL_OK;
}

/* Runs every optimizer step; returns the agreed status of the intermediate
 * exports and saves (every rank takes part in the agreement at the same
 * steps), or TRL_ESTOPPED after saving on a stop signal. */
static int train_loop(Trainer *tr, TrlErr *err)
{
	const Config *cfg = tr->cfg;
	const Comm *c = tr->comm;
	Model *m = &tr->model;
	int B = cfg->per_device_train_batch_size, GA = cfg->gradient_accumulation_steps;
	long nrows = tr->train_rows.n;
	int tty = isatty(STDERR_FILENO) && !cfg->disable_tqdm;
	LogWindow w = {0, trl_now(), 0, 0, 0};

	for (long step = tr->start_step; step < tr->total_steps; step++) {
		/* Fill every micro-batch first: the loss of the whole accumulated global
		 * batch is normalised by its total number of target tokens. The same
		 * sum carries the stop signals: every rank sees any rank's. */
		long counts[3] = {0, 0,
		                  stop_signal != 0}; /* targets, real tokens, stop */
		for (int j = 0; j < GA; j++) {
			long base =
			    samples_before(tr, step) + ((long)j * c->size + c->rank) * B;
			for (int i = 0; i < B; i++)
				tr->idx[i] = stream_row(tr, base + i);
			counts[0] += batch_fill(&tr->mb[j], &tr->train, &tr->train_rows,
			                        tr->idx, B, tr->tok.pad_id);
			const Batch *b = &tr->mb[j];
			for (int t = 0; t < b->B * b->T; t++)
				counts[1] += b->doc[t] >= 0;
		}
		comm_sum_long(c, counts, 3);
		if (counts[2] > 0) {
			/* Always with the optimizer state: the point is to resume. */
			int rc = tr->last_saved == step
			             ? TRL_OK
			             : save_checkpoint(tr, step, 0, err);
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
		float scale = counts[0] > 0 ? 1.0f / (float)counts[0] : 0.0f;
		int skip = counts[0] == 0;

		double loss_sum = 0.0, t_step = trl_now();
		long correct = 0, targets = 0;
		for (int j = 0; j < GA && !skip; j++) {
			Batch *b = &tr->mb[j];
			zero_begin_micro(&tr->zero, j == GA - 1);
			model_forward(m, b);
			loss_sum += crossentropy_forward_backward(
			    m->logits, b->targets, b->B * b->T, m->cfg.vocab_size, scale,
			    &targets, &correct);
			model_backward(m, b);
		}
		/* Data parallel: every rank's gradient is already divided by the
		 * global token count, so their sum (reduced per unit during the
		 * backward) is the gradient of the mean loss. */
		double stats[1] = {loss_sum};
		long cs[2] = {targets, correct};
		double gnorm = 0.0;
		double lr = lr_at_step(cfg->lr_scheduler_type, cfg->learning_rate, step,
		                       tr->total_steps, tr->warmup);
		if (!skip) {
			comm_sum_double(c, stats, 1);
			comm_sum_long(c, cs, 2);
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
		w.loss_sum += stats[0];
		w.targets += cs[0];
		w.correct += cs[1];
		w.tokens += counts[1];
		long done = step + 1;
		int last = done == tr->total_steps;
		if (c->rank == 0 && (done % cfg->logging_steps == 0 || last)) {
			double now = trl_now(), dt = now - w.t0;
			double loss = w.targets ? w.loss_sum / w.targets : 0.0;
			double acc = w.targets ? (double)w.correct / w.targets : 0.0;
			double tps = dt > 0 ? w.tokens / dt : 0.0;
			double epoch = epoch_at(tr, done);
			double rate = (now - tr->t_start) / (done - tr->start_step);
			char eta[32];
			format_eta(eta, sizeof eta, rate * (tr->total_steps - done));
			if (tr->metrics) {
				fprintf(
				    tr->metrics,
				    "{\"step\": %ld, \"epoch\": %.4f, \"loss\": %.6f, "
				    "\"grad_norm\": %.6f, \"learning_rate\": %.6e, "
				    "\"num_tokens\": %ld, \"mean_token_accuracy\": %.6f, "
				    "\"tokens_per_second\": %.1f}\n",
				    done, epoch, loss, gnorm, lr, tr->total_tokens, acc,
				    tps);
				fflush(tr->metrics);
			}
			if (tty) {
				fprintf(stderr,
				        "\rstep %ld/%ld | loss %.4f | acc %.3f | lr %.2e "
				        "| %.0f "
				        "tok/s | ETA %s   ",
				        done, tr->total_steps, loss, acc, lr, tps, eta);
				if (last)
					fputc('\n', stderr);
				fflush(stderr);
			} else if (!cfg->disable_tqdm) {
				printf("step %ld/%ld  loss %.4f  acc %.3f  grad_norm "
				       "%.3f  lr "
				       "%.2e  %.0f tok/s  ETA %s\n",
				       done, tr->total_steps, loss, acc, gnorm, lr, tps,
				       eta);
				fflush(stdout);
			}
			w = (LogWindow){0, now, 0, 0, 0};
		}
		if (cfg->eval_steps > 0 && done % cfg->eval_steps == 0 && !last) {
			if (tty && c->rank == 0)
				fputc('\n', stderr);
			run_eval(tr, done, "");
			w.t0 = trl_now();
		}
		if (cfg->export_steps > 0 && done % cfg->export_steps == 0 && !last) {
			char dir[TRL_PATH_MAX + 32];
			snprintf(dir, sizeof dir, "%s/checkpoint-%ld", cfg->output_dir,
			         done);
			int rc = export_model(tr, dir, err);
			if (rc)
				return rc;
			if (c->rank == 0 && !tty)
				printf("exported %s\n", dir);
		}
		/* save_strategy epoch: after the step that completes an epoch. */
		int save = cfg->save_strategy == TRL_SAVE_STEPS
		               ? done % cfg->save_steps == 0
		               : cfg->save_strategy == TRL_SAVE_EPOCH &&
		                     samples_before(tr, done) / nrows >
		                         samples_before(tr, step) / nrows;
		if ((save || (last && cfg->save_strategy != TRL_SAVE_NO)) &&
		    tr->last_saved != done) {
			int rc = save_checkpoint(tr, done, cfg->save_only_model, err);
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
	if (cfg->method != TRL_METHOD_SFT)
		rc = trl_errf(err, TRL_EUNSUPPORTED, "method: only sft is implemented");
	tr->method = &METHOD_SFT;
	if (!rc && c->rank == 0)
		rc = trl_mkdirs(cfg->output_dir, err);
	/* Every rank checks the name; rank 0's answer is the one all open,
	 * should `latest` change in between. */
	if (!rc && cfg->resume_from_checkpoint[0])
		rc = ckpt_resolve(cfg->resume_from_checkpoint, cfg->output_dir,
		                  tr->resume_path, sizeof tr->resume_path, err);
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
	rc = load_tokenizer(tr, err);
	if (!rc)
		rc = load_model(tr, err);
	if ((rc = comm_agree(c, rc, err)))
		return rc;
	rc = load_data(tr, err);
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
		rc = check_ids(&tr->train, tr->model.cfg.vocab_size, "train", err);
	if (!rc && tr->has_test)
		rc = check_ids(&tr->test, tr->model.cfg.vocab_size, "test", err);
	long targets = 0;
	for (int i = 0; i < tr->train.n && !rc; i++)
		for (int t = 1; t < tr->train.ex[i].len; t++)
			targets += tr->train.ex[i].mask[t];
	if (!rc && tr->train_rows.n == 0)
		rc = trl_errf(err, TRL_EINVAL, "the training split has no rows");
	else if (!rc && targets == 0)
		rc = trl_errf(err, TRL_EINVAL,
		              "no training example has a token to learn: every text is "
		              "shorter than 2 tokens or every completion was cut by "
		              "max_length (%d)",
		              cfg->max_length);
	if (!rc)
		rc = alloc_buffers(tr, err);
	if ((rc = comm_agree(c, rc, err)))
		return rc;

	tr->rows_per_step = (long)cfg->per_device_train_batch_size *
	                    cfg->gradient_accumulation_steps * c->size;
	if (tr->resume_path[0] && (rc = resume(tr, err)))
		return rc;
	/* From epochs: the steps that cover the remaining samples, at this
	 * run's global batch (a resumed run may have another). */
	if (cfg->max_steps > 0)
		tr->total_steps = cfg->max_steps;
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
			trim_metrics(path, tr->start_step);
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
	REP_N
};

static void report_ranks(Trainer *tr)
{
	const Comm *c = tr->comm;
	const Zero *z = &tr->zero;
	double steps = tr->steps_run > 0 ? (double)tr->steps_run : 1.0;
	double mine[REP_N] = {
	    z->mem.params,      z->mem.grads,        z->mem.optim,
	    z->mem.work,        z->st.bytes / steps, z->st.wait_s / steps,
	    tr->step_s / steps, peak_rss_bytes(),    (double)z->st.collectives / steps};
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
			fprintf(f,
			        "{\"rank\": %d, \"ranks\": %d, \"zero_stage\": %d, "
			        "\"threads\": %d, \"param_bytes\": %.0f, "
			        "\"grad_bytes\": %.0f, \"optim_bytes\": %.0f, "
			        "\"work_bytes\": %.0f, \"model_state_bytes\": %.0f, "
			        "\"comm_bytes_per_step\": %.0f, "
			        "\"collectives_per_step\": %.1f, "
			        "\"mpi_wait_s_per_step\": %.6f, \"step_s\": %.6f, "
			        "\"peak_rss_bytes\": %.0f, \"num_params\": %zu}\n",
			        r, c->size, z->stage, omp_get_max_threads(),
			        x[REP_PARAMS], x[REP_GRADS], x[REP_OPTIM], x[REP_WORK],
			        x[REP_PARAMS] + x[REP_GRADS] + x[REP_OPTIM] + x[REP_WORK],
			        x[REP_BYTES], x[REP_COLL], x[REP_WAIT], x[REP_STEP],
			        x[REP_RSS], tr->model.table.total);
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
	const ZeroMem *zm = &tr->zero.mem;
	double mib = 1.0 / 1048576.0;
	printf("zero stage %d: model states on rank 0: parameters %.1f MiB, gradients "
	       "%.1f MiB, optimizer %.1f MiB, gather/reduce buffers %.1f MiB\n",
	       tr->zero.stage, zm->params * mib, zm->grads * mib, zm->optim * mib,
	       zm->work * mib);
	printf("steps: %ld (global batch %ld rows = %d per device x %d accumulation x %d "
	       "ranks)\n",
	       tr->total_steps, tr->rows_per_step, cfg->per_device_train_batch_size,
	       cfg->gradient_accumulation_steps, tr->comm->size);
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
	sa.sa_handler = on_stop_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	stop_signal = 0;
	sigaction(SIGTERM, &sa, &old_term);
	sigaction(SIGUSR1, &sa, &old_usr1);
	int rc = setup(&tr, err);
	if (rc)
		goto out;
	if (comm->rank == 0)
		print_banner(&tr);
	if (!tr.resume_path[0])
		run_eval(&tr, 0, "before");
	memset(&tr.zero.st, 0, sizeof tr.zero.st);
	tr.t_start = trl_now();
	rc = train_loop(&tr, err);
	if (rc)
		goto out;
	double elapsed = trl_now() - tr.t_start;
	run_eval(&tr, tr.total_steps, "after");
	if (comm->rank == 0)
		printf("trained %ld steps in %.1f s\n", tr.total_steps - tr.start_step,
		       elapsed);
	report_ranks(&tr);
	rc = export_model(&tr, cfg->output_dir, err);
	if (!rc && comm->rank == 0)
		printf("saved %s: model.safetensors (%s), config.json, "
		       "trl_config.yaml, metrics.jsonl, ranks.jsonl\n",
		       cfg->output_dir, cfg->save_dtype == 1 ? "bfloat16" : "float32");
out:
	trainer_free(&tr);
	sigaction(SIGTERM, &old_term, NULL);
	sigaction(SIGUSR1, &old_usr1, NULL);
	return rc;
}

static void print_bytes(FILE *out, double b)
{
	if (b >= 1024.0 * 1024.0 * 1024.0)
		fprintf(out, "%9.2f GiB", b / (1024.0 * 1024.0 * 1024.0));
	else
		fprintf(out, "%9.1f MiB", b / (1024.0 * 1024.0));
}

int trl_validate(const Config *cfg, const Comm *comm, const ValidatePlan *plan, FILE *out,
                 TrlErr *err)
{
	ModelConfig mc = cfg->model;
	int rc = TRL_OK;
	if (cfg->model_name_or_path[0]) {
		char path[TRL_PATH_MAX + 32];
		snprintf(path, sizeof path, "%s/config.json", cfg->model_name_or_path);
		rc = model_config_load_json(&mc, path, err);
	}
	if (!rc)
		rc = model_config_check(&mc, err);
	ParamTable t;
	memset(&t, 0, sizeof t);
	if (!rc)
		rc = params_build(&t, &mc, err);
	if ((rc = comm_agree(comm, rc, err)) || comm->rank != 0) {
		params_free(&t);
		return rc;
	}
	config_write_yaml(cfg, out);
	int N = plan && plan->ranks > 0 ? plan->ranks : comm->size;
	double limit = plan ? plan->mem_per_rank : 0.0;
	int B = cfg->per_device_train_batch_size;
	int B2 =
	    cfg->per_device_eval_batch_size > B ? cfg->per_device_eval_batch_size : B;
	double act = (double)model_activation_bytes(&mc, B2, cfg->max_length);
	int GA = cfg->gradient_accumulation_steps;
	fprintf(out, "# model: %s, %zu parameters (%zu without embeddings)\n",
	        model_arch_name(mc.arch), model_config_num_params(&mc),
	        model_config_num_nonembedding_params(&mc));
	fprintf(out,
	        "# ZeRO plan for %d rank%s, fp32 AdamW, per rank (the largest shard); "
	        "activations for B=%d, T=%d; %d accumulation step%s\n",
	        N, N > 1 ? "s" : "", B2, cfg->max_length, GA, GA > 1 ? "s" : "");
	fprintf(out, "# stage   parameters    gradients    optimizer      buffers  "
	             "activations        total  sent per step\n");
	int fits = -1;
	for (int st = 0; st <= 3; st++) {
		ZeroMem zm;
		double sent;
		zero_estimate(&t, st, N, cfg->stage3_param_persistence_threshold, GA, &zm,
		              &sent);
		double total = zm.params + zm.grads + zm.optim + zm.work + act;
		fprintf(out, "# %5d", st);
		print_bytes(out, zm.params);
		print_bytes(out, zm.grads);
		print_bytes(out, zm.optim);
		print_bytes(out, zm.work);
		print_bytes(out, act);
		print_bytes(out, total);
		print_bytes(out, sent);
		int ok = limit > 0 && total <= limit;
		fprintf(out, "%s%s\n", st == cfg->zero_stage ? "  <- zero_stage" : "",
		        ok ? "  fits" : "");
		if (ok && fits < 0)
			fits = st;
	}
	if (limit > 0 && fits >= 0) {
		fprintf(out,
		        "# with %.2f GiB per rank, zero_stage %d is the lowest stage "
		        "that fits (the least sharding, the fewest bytes sent)\n",
		        limit / (1024.0 * 1024.0 * 1024.0), fits);
	} else if (limit > 0) {
		int need = 0;
		for (int n = N * 2; n <= (1 << 20) && !need; n *= 2) {
			ZeroMem zm;
			double sent;
			zero_estimate(&t, 3, n, cfg->stage3_param_persistence_threshold,
			              GA, &zm, &sent);
			if (zm.params + zm.grads + zm.optim + zm.work + act <= limit)
				need = n;
		}
		fprintf(out, "# with %.2f GiB per rank no stage fits on %d ranks",
		        limit / (1024.0 * 1024.0 * 1024.0), N);
		if (need)
			fprintf(out, "; zero_stage 3 fits on %d ranks", need);
		fprintf(out, "; a smaller per_device_train_batch_size or max_length "
		             "shrinks the activations\n");
	}
	params_free(&t);
	return TRL_OK;
}
