/* train_lora.c - LoRA in a run (use_peft): the frozen base (sharded under
 * stage 3, never checkpointed) with the adapters attached, whose ZeRO state
 * (tr->zero) is the run's trained state; exports as PEFT adapter folders. */
#include "trainer.h"

#include <stdlib.h>
#include <string.h>

#include "model_io.h"

/* The spec from the run's keys. */
static void spec_from_config(const Config *cfg, LoraSpec *s)
{
	lora_spec_defaults(s);
	s->r = cfg->lora_r;
	s->alpha = (float)cfg->lora_alpha;
	s->dropout = (float)cfg->lora_dropout;
	s->rslora = cfg->use_rslora;
	snprintf(s->targets, sizeof s->targets, "%s", cfg->lora_target_modules);
	snprintf(s->to_save, sizeof s->to_save, "%s", cfg->lora_modules_to_save);
}

int train_lora_spec(const Config *cfg, LoraSpec *s, char *base, size_t cap,
                    int *from_adapter, TrlErr *err)
{
	*from_adapter =
	    cfg->model_name_or_path[0] && lora_is_adapter_dir(cfg->model_name_or_path);
	if (!*from_adapter) {
		spec_from_config(cfg, s);
		snprintf(base, cap, "%s", cfg->model_name_or_path);
		return TRL_OK;
	}
	int rc = lora_read_config(cfg->model_name_or_path, s, base, cap, err);
	if (rc)
		return rc;
	if (cfg->base_model_name_or_path[0])
		snprintf(base, cap, "%s", cfg->base_model_name_or_path);
	if (!base[0])
		return trl_errf(
		    err, TRL_EINVAL,
		    "%s/adapter_config.json names no base_model_name_or_path: "
		    "set base_model_name_or_path to the base model's folder",
		    cfg->model_name_or_path);
	return TRL_OK;
}

int train_lora_load(Trainer *tr, TrlErr *err)
{
	const Config *cfg = tr->cfg;
	const Comm *c = tr->comm;
	int stage3 = cfg->zero_stage == 3, from_adapter = 0, head_new = 0, rc;
	int labels = tr->method->classifier ? 1 : 0;
	char base[TRL_PATH_MAX];
	LoraSpec spec;
	Model full;
	memset(&full, 0, sizeof full);
	float *start = NULL;
	
	rc = train_lora_spec(cfg, &spec, base, sizeof base, &from_adapter, err);
	if (rc)
		return rc;
	tr->peft = 1;
	snprintf(tr->lora_base, sizeof tr->lora_base, "%s", base);
	/* The frozen base: every rank reads it whole (the checkpoint holds only
	 * adapters); under stage 3 it is then sharded and the whole copy freed. */
	if (!base[0])
		return trl_errf(
		    err, TRL_EINVAL,
		    "use_peft: LoRA trains adapters on a pretrained base, and "
		    "model_name_or_path is empty: name the base model's "
		    "folder (or an adapter folder)");
	unsigned bflags = MODEL_FROZEN | (stage3 ? MODEL_NO_PARAMS : 0);
	rc = model_load_dir_flags(stage3 ? &full : &tr->model, base, labels,
	                          (uint64_t)cfg->seed, MODEL_FROZEN, &head_new, err);
	if (!rc && stage3)
		rc = model_init_flags(&tr->model, &full.cfg, bflags, err);
	const float *base_params = stage3 ? full.params : tr->model.params;
	char unmatched[256] = "";
	if (!rc)
		rc = lora_init(&tr->lora, &tr->model, &spec,
		               zero_model_flags(cfg->zero_stage), (uint64_t)cfg->seed,
		               unmatched, sizeof unmatched, err);
	if (!rc && stage3) {
		start = malloc(tr->lora.ad.table.total * sizeof *start);
		if (!start)
			rc = trl_errf(err, TRL_ENOMEM, "out of memory");
		else
			lora_initial_values(&tr->lora, &tr->model, base_params, start);
	}
	/* An adapter folder starts from its weights (a resumed run from the
	 * checkpoint's). */
	if (!rc && from_adapter && !tr->resume_path[0])
		rc = lora_load_weights(&tr->lora, cfg->model_name_or_path,
		                       stage3 ? start : tr->lora.ad.params, err);
	if (!rc && stage3)
		rc = zero_init_frozen(&tr->base_zero, &tr->model, c->world,
		                      cfg->stage3_param_persistence_threshold,
		                      cfg->overlap_comm, full.params,
		                      (unsigned long long)cfg->seed, err);
	if (!rc)
		rc = zero_init(&tr->zero, &tr->lora.ad, c->world, cfg->zero_stage,
		               cfg->stage3_param_persistence_threshold, cfg->overlap_comm,
		               start, (unsigned long long)cfg->seed, cfg->adam_beta1,
		               cfg->adam_beta2, cfg->adam_epsilon, cfg->weight_decay,
		               cfg->weight_decay_embeddings, err);
	free(start);
	model_free(&full);
	if (rc)
		return rc;
	lora_attach(&tr->model, &tr->lora);
	if (c->rank == 0) {
		if (head_new)
			printf("note: %s is a causal LM: the reward model's score head "
			       "starts from N(0, %g) and is trained whole beside the "
			       "adapters\n",
			       base, (double)tr->model.cfg.initializer_range);
		if (unmatched[0])
			printf("note: lora_target_modules: %s match%s no module of this "
			       "%s model (they adapt nothing)\n",
			       unmatched, strchr(unmatched, ',') ? "" : "es",
			       model_hf_type_name(tr->model.cfg.model_type));
	}
	return TRL_OK;
}

int train_lora_export(Trainer *tr, const char *dir, TrlErr *err)
{
	const Comm *c = tr->comm;
	float *whole = NULL;
	int rc = TRL_OK;
	ZeroStats kept = tr->zero.st;
	zero_flush(&tr->zero);
	if (tr->zero.stage == 3) {
		if (c->rank == 0 &&
		    !(whole = malloc(tr->lora.ad.table.total * sizeof *whole)))
			rc = trl_errf(err, TRL_ENOMEM, "out of memory");
		if ((rc = comm_agree(c, rc, err)))
			return rc;
		zero_gather_full(&tr->zero, whole, 0);
	}
	tr->zero.st = kept;
	if (c->rank == 0)
		rc = lora_save_dir(&tr->lora, whole ? whole : tr->lora.ad.params,
		                   tr->lora_base, dir, err);
	/* The tokenizer travels with the adapter, as TRL saves it. */
	if (!rc && c->rank == 0 && tr->lora_base[0])
		rc = model_io_copy_tokenizer(tr->lora_base, dir, err);
	free(whole);
	return comm_agree(c, rc, err);
}

void train_lora_free(Trainer *tr)
{
	if (!tr->peft)
		return;
	tr->model.lora = NULL;
	zero_free(&tr->base_zero);
	lora_free(&tr->lora);
}
