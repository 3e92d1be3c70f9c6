/* train_save.c - checkpoints (save, resume, the stop signals) and Hugging Face
 * exports of a run. */
#include "online.h"
#include "trainer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model_io.h"
#include "optim.h"

/* Writes the model as a Hugging Face folder: rank 0 writes, after every
 * rank has helped assemble the full weights under stage 3. The tokenizer files
 * of the model we started from travel with it, so the output loads as it came
 * in; save_dtype picks fp32 or bf16 weights. Collective; returns the agreed
 * status. */
int train_export_model(Trainer *tr, const char *dir, TrlErr *err)
{
	const Config *cfg = tr->cfg;
	const Comm *c = tr->comm;
	const Model *src = &tr->model;
	Model full;
	memset(&full, 0, sizeof full);
	int rc = tr->peft ? train_lora_export(tr, dir, err) : TRL_OK;
	if (tr->peft)
		goto yaml;
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
yaml:
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
volatile sig_atomic_t train_stop_signal;

void train_on_stop_signal(int sig)
{
	train_stop_signal = sig;
}

/* Samples of the global stream consumed before optimizer step `step`. */
long train_samples_before(const Trainer *tr, long step)
{
	/* Online methods take a round's prompts (rows_per_step) at the first of
	 * its online_steps_per_round steps, round g at stream position g * P. */
	if (tr->method->online) {
		long k = online_steps_per_round(tr);
		return (step + k - 1) / k * tr->rows_per_step;
	}
	return tr->sample_base + (step - tr->start_step) * tr->rows_per_step;
}

double train_epoch_at(const Trainer *tr, long step)
{
	return (double)train_samples_before(tr, step) / (double)tr->train_rows.n;
}

/* Writes <output_dir>/checkpoint-<step>.h5 and points `latest` at it; with
 * model_only, without the optimizer state. Collective; returns the agreed
 * status. */
int train_save_checkpoint(Trainer *tr, long step, int model_only, TrlErr *err)
{
	const Config *cfg = tr->cfg;
	const Comm *c = tr->comm;
	CkptState st;
	memset(&st, 0, sizeof st);
	st.global_step = step;
	st.total_steps = tr->total_steps;
	st.num_tokens = tr->total_tokens;
	st.epoch = train_epoch_at(tr, step);
	st.seed = cfg->seed;
	st.samples_seen = train_samples_before(tr, step);
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
	st.bco_mean = tr->bco.mean;
	st.bco_var = tr->bco.var;
	st.bco_count = tr->bco.count;
	st.bos_token_id = tr->tok.bos_id;
	st.eos_token_id = tr->tok.eos_id;
	snprintf(st.model_name_or_path, sizeof st.model_name_or_path, "%s",
	         cfg->model_name_or_path);
	memcpy(st.rng, tr->rng.s, sizeof st.rng);
	if (tr->peft) {
		lora_spec_format(&tr->lora.spec, st.lora, sizeof st.lora);
		snprintf(st.model_name_or_path, sizeof st.model_name_or_path, "%s",
		         tr->lora_base);
	}
	char name[64], path[TRL_PATH_MAX + 96];
	snprintf(name, sizeof name, "checkpoint-%ld.h5", step);
	snprintf(path, sizeof path, "%s/%s", cfg->output_dir, name);
	ZeroStats kept = tr->zero.st; /* the step figures leave saves out */
	CkptIo io;
	/* ppo's value model and its moments go beside it, written before the
	 * checkpoint that latest will name (so latest never names a
	 * checkpoint without one). */
	int rc = online_save_extra(tr, path, &st, err);
	if (!rc)
		rc = ckpt_save(path, &tr->zero, cfg, &st, &io, err);
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
void train_trim_metrics(const char *path, long step)
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
int train_resume(Trainer *tr, TrlErr *err)
{
	const Config *cfg = tr->cfg;
	CkptState st;
	CkptIo io;
	/* The adapters resumed must be the ones this run trains (checked
	 * before any tensor is read). */
	char mine[TRL_LORA_SPEC_MAX] = "";
	if (tr->peft)
		lora_spec_format(&tr->lora.spec, mine, sizeof mine);
	int rc = ckpt_read_state(tr->resume_path, &st, err);
	if (!rc && strcmp(mine, st.lora) != 0)
		return trl_errf(err, TRL_EINVAL,
		                "%s holds %s%s, this run trains %s%s: resume with the "
		                "checkpoint's use_peft and lora_* settings",
		                tr->resume_path,
		                st.lora[0] ? "LoRA adapters " : "a full model", st.lora,
		                mine[0] ? "LoRA adapters " : "the full model", mine);
	if (!rc)
		rc = ckpt_load(tr->resume_path, &tr->zero, &st, &io, err);
	if (!rc)
		rc = online_load_extra(tr, tr->resume_path, err);
	if (rc)
		return rc;
	tr->start_step = st.global_step;
	tr->sample_base = st.samples_seen;
	tr->total_tokens = st.num_tokens;
	if (st.rng[0] | st.rng[1] | st.rng[2] | st.rng[3])
		memcpy(tr->rng.s, st.rng, sizeof st.rng);
	if (st.bco_count > 0)
		tr->bco = (RunningMoments){st.bco_mean, st.bco_var, st.bco_count};
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
