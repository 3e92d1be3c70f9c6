/* train_data.c - the tokenizer, the datasets and the sample stream of a run. */
#include "online.h"
#include "trainer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dataset_cache.h"
#include "json.h"

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

int train_load_data(Trainer *tr, TrlErr *err)
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
int train_load_tokenizer(Trainer *tr, TrlErr *err)
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
int train_check_ids(const Dataset *d, int V, const char *split, TrlErr *err)
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

/* ---- sampler ----------------------------------------------------------------- */

/* Row at position p of the global sample stream: epoch p / n, shuffled by the
 * (seed, epoch) permutation. The stream does not depend on the rank count, so
 * the global batch of a step is the same for any number of ranks. */
int train_stream_row(Trainer *tr, long p)
{
	long n = tr->train_rows.n, epoch = p / n;
	if (tr->cfg->train_sampling_strategy == TRL_SAMPLING_SEQUENTIAL)
		return (int)(p % n);
	int k = (int)(epoch & 1);
	if (tr->perm_epoch[k] != epoch) {
		sampler_permutation(tr->perm[k], (int)n, (uint64_t)tr->cfg->seed, epoch);
		tr->perm_epoch[k] = epoch;
	}
	return tr->perm[k][p % n];
}

/* kto: the KL row of an example takes the completion of the one before it
 * within its chunk of per_device_train_batch_size examples in file order
 * (the first takes the chunk's last), as TRL's KTOTrainer rotates them. */
static int kto_partners(Trainer *tr, int split, TrlErr *err)
{
	const Dataset *d = split ? &tr->test : &tr->train;
	int B = tr->cfg->per_device_train_batch_size, n = d->n;
	int *p = malloc((size_t)(n > 0 ? n : 1) * sizeof *p);
	if (!p)
		return trl_errf(err, TRL_ENOMEM, "out of memory");
	for (int c0 = 0; c0 < n; c0 += B) {
		int c1 = c0 + B < n ? c0 + B : n;
		for (int i = c0; i < c1; i++)
			p[i] = i == c0 ? c1 - 1 : i - 1;
	}
	tr->partner[split] = p;
	return TRL_OK;
}

/* reward: the optional margin column of each row (TRL's RewardTrainer
 * subtracts it inside the logsigmoid); NULL when no row has one. */
static int reward_margins(Trainer *tr, int split, TrlErr *err)
{
	const Dataset *d = split ? &tr->test : &tr->train;
	double *m = NULL;
	for (int i = 0; i < d->n; i++) {
		if (!strstr(d->ex[i].extra, "\"margin\""))
			continue;
		JsonValue *root = NULL;
		JsonError je;
		double v = 0.0;
		int parsed =
		    json_parse(d->ex[i].extra, strlen(d->ex[i].extra), &root, &je) == 0;
		if (parsed && !json_get(root, "margin")) { /* "margin" was a value */
			json_free(root);
			continue;
		}
		if (!parsed || json_num(json_get(root, "margin"), &v) != 0 ||
		    !isfinite(v)) {
			json_free(root);
			free(m);
			return trl_errf(
			    err, TRL_EINVAL,
			    "%s split, line %d: the margin column must be a number",
			    split ? "test" : "train", d->ex[i].line);
		}
		json_free(root);
		if (!m && !(m = calloc((size_t)d->n, sizeof *m)))
			return trl_errf(err, TRL_ENOMEM, "out of memory");
		m[i] = v;
	}
	tr->margin[split] = m;
	return TRL_OK;
}

/* Whether a sequence has a token to learn: a masked target after its first. */
static int has_target(const uint8_t *mask, int len)
{
	for (int t = 1; t < len; t++)
		if (mask[t])
			return 1;
	return 0;
}

/* Drops the examples whose completion (or, for pairs, either completion)
 * max_length cut away entirely, as TRL's DPO and KTO trainers drop those
 * whose prompt fills max_length: they carry no log-prob to compare (ORPO's
 * odds would be log 0). Returns the number dropped. */
static int drop_empty(Dataset *d)
{
	int k = 0;
	for (int i = 0; i < d->n; i++) {
		const Example *e = &d->ex[i];
		int ok =
		    has_target(e->mask, e->len) &&
		    (!e->rejected_ids || has_target(e->rejected_mask, e->rejected_len));
		if (ok)
			d->ex[k++] = *e;
	}
	int dropped = d->n - k;
	d->n = k;
	return dropped;
}

int train_prepare_method_data(Trainer *tr, TrlErr *err)
{
	int rc = TRL_OK;
	TrlMethod me = tr->cfg->method;
	int dropped[2] = {0, 0};
	for (int s = 0; s < 1 + tr->has_test && !rc; s++) {
		Dataset *d = s ? &tr->test : &tr->train;
		if (tr->method->formats_ok[0] == TRL_FMT_UNPAIRED_PREFERENCE) {
			/* Paired data is unpaired as TRL does; the rows follow. */
			if (d->format == TRL_FMT_PREFERENCE) {
				rc = dataset_unpair(d, err);
				RowSet *rs = s ? &tr->test_rows : &tr->train_rows;
				rows_free(rs);
				if (!rc)
					rc = rows_unpacked(rs, d, err);
			}
		}
		if (!rc && me != TRL_METHOD_SFT && me != TRL_METHOD_REWARD &&
		    (dropped[s] = drop_empty(d)) > 0) {
			RowSet *rs = s ? &tr->test_rows : &tr->train_rows;
			rows_free(rs);
			rc = rows_unpacked(rs, d, err);
		}
		if (!rc && me == TRL_METHOD_KTO && tr->kto.type == TRL_KTO_KTO)
			rc = kto_partners(tr, s, err);
		if (!rc && me == TRL_METHOD_REWARD)
			rc = reward_margins(tr, s, err);
	}
	if (!rc && tr->comm->rank == 0 && dropped[0] + dropped[1] > 0)
		printf("note: dropped %d train and %d test examples whose completion "
		       "max_length (%d) cut away, as TRL does\n",
		       dropped[0], dropped[1], tr->cfg->max_length);
	if (!rc && tr->train.n == 0)
		rc = trl_errf(err, TRL_EINVAL,
		              "no training example keeps a completion token within "
		              "max_length (%d): raise max_length",
		              tr->cfg->max_length);
	return rc;
}

int train_max_method_len(const Trainer *tr)
{
	int T = 0;
	if (tr->method->online)
		return online_max_len(tr);
	for (int s = 0; s < 1 + tr->has_test; s++) {
		const Dataset *d = s ? &tr->test : &tr->train;
		int pmax = 0, cmax = 0;
		for (int i = 0; i < d->n; i++) {
			const Example *e = &d->ex[i];
			T = e->len > T ? e->len : T;
			T = e->rejected_len > T ? e->rejected_len : T;
			pmax = e->prompt_len > pmax ? e->prompt_len : pmax;
			cmax =
			    e->len - e->prompt_len > cmax ? e->len - e->prompt_len : cmax;
		}
		if (tr->partner[s]) {
			int kl = pmax + cmax;
			kl = kl > tr->cfg->max_length ? tr->cfg->max_length : kl;
			T = kl > T ? kl : T;
		}
	}
	return T;
}
