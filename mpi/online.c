/* online.c - the online methods (grpo, rloo) as plug-ins of the training loop:
 * each round's rollouts (from the generation ranks or sampled in place), their
 * rewards, the group advantages, the clipped policy loss and TRL's metrics. */
#include "online.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "model_io.h"
#include "rewards.h"
#include "rl_losses.h"
#include "optim.h"
#include "rollout.h"

static const char *const os_names[OS_N] = {
    "completions/mean_length",
    "completions/min_length",
    "completions/max_length",
    "completions/mean_terminated_length",
    "completions/min_terminated_length",
    "completions/max_terminated_length",
    "completions/clipped_ratio",
    "reward",
    "reward_std",
    "frac_reward_zero_std",
    "clip_ratio/low_mean",
    "clip_ratio/low_min",
    "clip_ratio/high_mean",
    "clip_ratio/high_max",
    "clip_ratio/region_mean",
    "sampling/sampling_logp_difference/mean",
    "sampling/sampling_logp_difference/max",
    "sampling/importance_sampling_ratio/min",
    "sampling/importance_sampling_ratio/mean",
    "sampling/importance_sampling_ratio/max",
    "staleness/mean",
    "staleness/max",
    "sync/seconds",
    "sync/bytes",
    "timing/wait_rollouts",
    "objective/kl",
    "objective/non_score_reward",
    "objective/scores",
    "objective/rlhf_reward",
    "val/num_eos_tokens",
    "loss/policy_avg",
    "loss/value_avg",
    "policy/clipfrac_avg",
    "val/clipfrac_avg",
    "policy/approxkl_avg",
    "val/ratio",
    "val/ratio_var",
    "policy/entropy_avg",
    "val/grad_norm",
};
/* How a figure combines over the steps of a window: 0 mean, 1 min, 2 max. */
static const char os_kind[OS_N] = {
    [OS_LEN_MIN] = 1, [OS_LEN_MAX] = 2,   [OS_TERM_MIN] = 1, [OS_TERM_MAX] = 2,
    [OS_LOW_MIN] = 1, [OS_HIGH_MAX] = 2,  [OS_IS_MIN] = 1,   [OS_LOGP_DIFF_MAX] = 2,
    [OS_IS_MAX] = 2,  [OS_STALE_MAX] = 2,
};

/* ---- set-up ------------------------------------------------------------------- */

static int add_reward(Online *o, int kind, const char *name, TrlErr *err)
{
	if (o->F >= MAX_REWARDS)
		return trl_errf(err, TRL_EINVAL, "reward_funcs: at most %d rewards",
		                MAX_REWARDS);
	for (int i = 0; i < o->F; i++)
		if (strcmp(o->name[i], name) == 0)
			return trl_errf(err, TRL_EINVAL,
			                "reward_funcs: '%s' is listed twice", name);
	o->kind[o->F] = kind;
	snprintf(o->name[o->F], sizeof o->name[0], "%s", name);
	o->weight[o->F] = 1.0;
	o->F++;
	return TRL_OK;
}

static int setup_rewards(Trainer *tr, Online *o, TrlErr *err)
{
	const Config *cfg = tr->cfg;
	char items[MAX_REWARDS + 1][32];
	int n = method_split_list(cfg->reward_funcs, items, MAX_REWARDS + 1);
	int rc = TRL_OK;
	for (int i = 0; i < n && !rc; i++) {
		const char *s = items[i];
		if (strcmp(s, "accuracy") == 0 || strcmp(s, "accuracy_reward") == 0)
			rc = add_reward(o, RW_ACCURACY, "accuracy", err);
		else if (strcmp(s, "format") == 0)
			rc = add_reward(o, RW_FORMAT, "format", err);
		else if (strcmp(s, "think_format") == 0 ||
		         strcmp(s, "think_format_reward") == 0)
			rc = add_reward(o, RW_THINK, "think_format", err);
		else if (strcmp(s, "soft_overlong") == 0 || strcmp(s, "length") == 0 ||
		         strcmp(s, "soft_overlong_punishment") == 0)
			rc = add_reward(o, RW_SOFT, "soft_overlong", err);
		else
			rc =
			    trl_errf(err, TRL_EINVAL,
			             "reward_funcs: '%s' is not a built-in reward "
			             "(accuracy, format, think_format, soft_overlong); a "
			             "model goes in reward_model, a program in "
			             "reward_command",
			             s);
	}
	if (!rc && cfg->reward_model[0]) {
		const char *b = strrchr(cfg->reward_model, '/');
		char nm[64];
		snprintf(nm, sizeof nm, "%.60s", b && b[1] ? b + 1 : cfg->reward_model);
		rc = add_reward(o, RW_MODEL, nm, err);
	}
	if (!rc && cfg->reward_command[0])
		rc = add_reward(o, RW_COMMAND, "reward_command", err);
	if (!rc && o->F == 0)
		rc = trl_errf(err, TRL_EINVAL,
		              "no reward: reward_funcs is empty and neither reward_model "
		              "nor reward_command is set");
	if (!rc && cfg->reward_weights[0]) {
		char w[MAX_REWARDS + 1][32];
		int nw = method_split_list(cfg->reward_weights, w, MAX_REWARDS + 1);
		if (nw != o->F)
			rc = trl_errf(
			    err, TRL_EINVAL,
			    "reward_weights has %d entries for %d rewards (%s%s%s): "
			    "give one weight per reward",
			    nw, o->F, o->name[0], o->F > 1 ? ", " : "",
			    o->F > 1 ? o->name[1] : "");
		for (int i = 0; i < nw && !rc; i++) {
			char *end;
			o->weight[i] = strtod(w[i], &end);
			if (end == w[i] || *end || !isfinite(o->weight[i]))
				rc = trl_errf(err, TRL_EINVAL,
				              "reward_weights: '%s' is not a number",
				              w[i]);
		}
	}
	for (int i = 0; i < o->F && !rc; i++) {
		if (o->kind[i] == RW_FORMAT && !o->fmt_ok) {
			rc = reward_regex_init(&o->fmt,
			                       cfg->format_pattern[0]
			                           ? cfg->format_pattern
			                           : reward_think_format_pattern,
			                       err);
			o->fmt_ok = !rc;
		}
		if (o->kind[i] == RW_THINK && !o->think_ok) {
			rc = reward_regex_init(&o->think, reward_think_format_pattern,
			                       err);
			o->think_ok = !rc;
		}
		if (o->kind[i] == RW_MODEL) {
			/* Under stage 3 on several trainers the reward model is
			 * sharded like the policy (gathered unit by unit in its
			 * forward, which every trainer runs for every chunk). */
			int shard = tr->sync_forwards;
			Model full;
			memset(&full, 0, sizeof full);
			rc = model_load_dir_flags(
			    shard ? &full : &o->rm, cfg->reward_model, 1,
			    (uint64_t)cfg->seed, MODEL_NO_GRADS, NULL, err);
			if (rc) {
				char msg[sizeof err->msg];
				snprintf(msg, sizeof msg, "%s", err->msg);
				trl_errf(err, rc, "reward_model: %s", msg);
			}
			if (shard) {
				/* Sharded by online_setup once every trainer has it. */
				if (!rc)
					rc = model_init_flags(
					    &o->rm, &full.cfg,
					    MODEL_NO_PARAMS | MODEL_NO_GRADS, err);
				o->rm_full = full;
			}
			o->has_rm = !rc;
			if (!rc)
				rc = model_share_activations(&o->rm, &tr->model, o->B,
				                             o->Lp + o->Lc, err);
			if (!rc && o->rm.cfg.vocab_size < tr->tok.vocab_size)
				rc = trl_errf(
				    err, TRL_EINVAL,
				    "reward_model %s: its vocab_size %d does not "
				    "cover the tokenizer's %d",
				    cfg->reward_model, o->rm.cfg.vocab_size,
				    tr->tok.vocab_size);
		}
		if (o->kind[i] == RW_COMMAND)
			rc = reward_proc_start(&o->proc, cfg->reward_command,
			                       cfg->reward_timeout, err);
	}
	return rc;
}

/* The longest prompt of the data, capped at max_prompt_length. */
static int longest_prompt(const Trainer *tr)
{
	int L = 1;
	for (int s = 0; s < 1 + tr->has_test; s++) {
		const Dataset *d = s ? &tr->test : &tr->train;
		for (int i = 0; i < d->n; i++)
			L = d->ex[i].prompt_len > L ? d->ex[i].prompt_len : L;
	}
	return L < tr->cfg->max_prompt_length ? L : tr->cfg->max_prompt_length;
}

int online_max_len(const Trainer *tr)
{
	return longest_prompt(tr) + tr->cfg->max_completion_length;
}

static int prepare_examples(Trainer *tr, Online *o, TrlErr *err);

int online_bufs_alloc(const OnlineBuf *list, int n, TrlErr *err)
{
	for (int i = 0; i < n; i++)
		if (list[i].bytes && !(*list[i].at = calloc(1, list[i].bytes)))
			return trl_errf(err, TRL_ENOMEM, "out of memory");
	return TRL_OK;
}

void online_bufs_free(const OnlineBuf *list, int n)
{
	for (int i = 0; i < n; i++) {
		free(*list[i].at);
		*list[i].at = NULL;
	}
}

enum { ONLINE_NBUF = 40 };

/* Every buffer online_setup allocates, with its size for this run. */
static int online_buffers(Online *o, const Config *cfg, OnlineBuf *b)
{
	size_t BL = (size_t)o->B * o->Lc, RL = BL * o->GAR, GB = (size_t)o->GAR * o->B;
	size_t N = (size_t)o->N, P = (size_t)o->P, T = (size_t)o->Ntr;
	/* ppo.c holds its own round buffers; rloo with a KL and num_iterations
	 * > 1 need the old (and rloo the reference) log-probs of the round. */
	int old = !o->ppo && (cfg->num_iterations > 1 || (!o->grpo && cfg->beta > 0));
	int ref = !o->ppo && !o->grpo && cfg->beta > 0;
	int ent = cfg->top_entropy_quantile < 1.0;
	OnlineBuf list[] = {
	    ONLINE_BUF(o->chunk, o->GAR),
	    ONLINE_BUF(o->prompts, P * o->Lp),
	    ONLINE_BUF(o->plen, P),
	    ONLINE_BUF(o->prompt_ex, P),
	    ONLINE_BUF(o->r_local, GB * MAX_REWARDS),
	    ONLINE_BUF(o->r_all, N * MAX_REWARDS),
	    ONLINE_BUF(o->r_sum, N),
	    ONLINE_BUF(o->adv, N),
	    ONLINE_BUF(o->gstd, N),
	    ONLINE_BUF(o->kl_seq, N),
	    ONLINE_BUF(o->lp, BL),
	    ONLINE_BUF(o->samp, BL),
	    ONLINE_BUF(o->mask, BL),
	    ONLINE_BUF(o->w, BL),
	    ONLINE_BUF(o->dlp, BL),
	    ONLINE_BUF(o->refb, BL),
	    ONLINE_BUF(o->mask_round, RL),
	    ONLINE_BUF(o->samp_round, RL),
	    ONLINE_BUF(o->old_round, old ? RL : 0),
	    ONLINE_BUF(o->ref_round, ref ? RL : 0),
	    ONLINE_BUF(o->g_rew, GB * T * MAX_REWARDS),
	    ONLINE_BUF(o->g_len_mine, GB * 2),
	    ONLINE_BUF(o->g_len, N * 2),
	    ONLINE_BUF(o->g_len_c, N * 2),
	    ONLINE_BUF(o->g_kl_mine, GB),
	    ONLINE_BUF(o->g_kl, N),
	    ONLINE_BUF(o->push_ids, P * o->Lp),
	    ONLINE_BUF(o->push_plen, P),
	    ONLINE_BUF(o->req, o->B),
	    ONLINE_BUF(o->vals, o->B),
	    ONLINE_BUF(o->ent_mine, ent ? BL : 0),
	    ONLINE_BUF(o->ent_all, ent ? BL * T : 0),
	    ONLINE_BUF(o->ent_cnt, ent ? T : 0),
	    ONLINE_BUF(o->ent_dsp, ent ? T : 0),
	};
	int n = (int)(sizeof list / sizeof list[0]);
	COMM_ASSERT(n <= ONLINE_NBUF);
	memcpy(b, list, sizeof list);
	return n;
}

int online_setup(Trainer *tr, RolloutLink *link, TrlErr *err)
{
	const Config *cfg = tr->cfg;
	Online *o = calloc(1, sizeof *o);
	/* Every trainer passes the same agreements below whatever failed on
	 * it, so the collective set-ups (the sharded reward model, ppo's value
	 * model) start on all trainers or on none. */
	if (!o)
		return comm_agree(tr->comm, trl_errf(err, TRL_ENOMEM, "out of memory"),
		                  err);
	tr->on = o;
	o->link = link && link->K > 0 ? link : NULL;
	o->Ntr = tr->comm->size;
	o->rank = tr->comm->rank;
	o->GA = cfg->gradient_accumulation_steps;
	o->ppo = cfg->method == TRL_METHOD_PPO;
	o->GAR = o->GA * (o->ppo ? cfg->num_mini_batches : 1);
	o->iters =
	    o->ppo ? cfg->num_ppo_epochs * cfg->num_mini_batches : cfg->num_iterations;
	o->B = cfg->per_device_train_batch_size;
	o->G =
	    o->ppo ? 1 : cfg->num_generations; /* ppo samples one completion a prompt */
	o->Lp = longest_prompt(tr);
	o->Lc = cfg->max_completion_length;
	o->N = o->Ntr * o->GAR * o->B;
	o->P = o->N / o->G;
	o->grpo = cfg->method == TRL_METHOD_GRPO;
	o->round = -1;
	int rc = TRL_OK;
	/* A completion is sampled after its prompt's last token: an empty
	 * prompt has none (TRL needs one too). */
	for (int i = 0; i < tr->train.n && !rc; i++)
		if (tr->train.ex[i].prompt_len < 1)
			rc = trl_errf(
			    err, TRL_EINVAL,
			    "%s: line %d: the prompt is empty after tokenization: "
			    "the online methods sample a completion after the prompt; "
			    "drop the row or give it a prompt",
			    cfg->dataset_name, tr->train.ex[i].line);
	if (o->ppo && !cfg->reward_model[0])
		return comm_agree(
		    tr->comm,
		    trl_errf(err, TRL_EINVAL,
		             "ppo needs reward_model (reward_model_path): the "
		             "folder of a sequence-classification model, e.g. "
		             "one trained with method reward"),
		    err);
	o->go = (GrpoOptions){.loss_type = (TrlGrpoLoss)tr->grpo_loss,
	                      .epsilon_low = cfg->epsilon,
	                      .epsilon_high = cfg->epsilon_high > 0 ? cfg->epsilon_high
	                                                            : cfg->epsilon,
	                      .delta = cfg->delta,
	                      .sequence_level = cfg->importance_sampling_level == 1,
	                      .beta = o->grpo ? cfg->beta : 0.0,
	                      .max_completion_length = cfg->max_completion_length};
	OnlineBuf bufs[ONLINE_NBUF];
	int nbuf = online_buffers(o, cfg, bufs);
	if (!rc)
		rc = online_bufs_alloc(bufs, nbuf, err);
	RolloutPlan *p = &o->plan;
	memset(p, 0, sizeof *p);
	p->iterations = o->iters;
	p->chunks = o->Ntr * o->GAR;
	p->rows = o->B;
	p->group = o->G;
	p->max_prompt = o->Lp;
	p->max_new = o->Lc;
	p->staleness = cfg->max_staleness;
	p->seed = (uint64_t)cfg->seed;
	p->temperature = (float)cfg->temperature;
	p->top_p = (float)cfg->top_p;
	p->top_k = cfg->top_k;
	p->min_p = (float)cfg->min_p;
	p->repetition_penalty = (float)cfg->repetition_penalty;
	p->eos_id = tr->tok.eos_id;
	p->mc = tr->model.cfg;
	p->n_weights = tr->model.table.total;
	for (int j = 0; !rc && j < o->GAR; j++)
		rc = rollout_chunk_alloc(&o->chunk[j], p, err);
	if (!rc)
		rc = setup_rewards(tr, o, err);
	if (!rc)
		rc = prepare_examples(tr, o, err);
	rc = comm_agree(tr->comm, rc, err);
	if (!rc && o->rm_full.params) {
		rc = zero_init_frozen(&o->rmz, &o->rm, tr->comm->world,
		                      cfg->stage3_param_persistence_threshold,
		                      cfg->overlap_comm, o->rm_full.params,
		                      (unsigned long long)cfg->seed, err);
		o->has_rmz = !rc;
		rc = comm_agree(tr->comm, rc, err);
	}
	model_free(&o->rm_full);
	if (!rc && o->ppo)
		rc = ppo_setup(tr, o, err);
	if (!rc && !o->link) {
		/* Colocated: the trainers sample with the policy itself (stage 3:
		 * with a full copy gathered once per round, as TRL's
		 * ds3_gather_for_generation). */
		Model *gm = &tr->model;
		if (cfg->zero_stage == 3 || tr->peft) {
			rc = model_init_flags(&o->full, &tr->model.cfg, MODEL_NO_GRADS,
			                      err);
			gm = &o->full;
		}
		if (!rc)
			rc = generator_init(&o->gen, gm, o->B, o->Lp + o->Lc, err);
		o->gen_ready = !rc;
	}
	/* LoRA: sampling runs a merged copy (base + adapters), on every trainer
	 * when colocated, on trainer 0 for the generation ranks' push. */
	if (!rc && tr->peft && o->link && o->rank == 0)
		rc = model_init_flags(&o->full, &tr->model.cfg, MODEL_NO_GRADS, err);
	/* Stage 3: trainer 0 gathers the adapters whole into a copy to merge. */
	if (!rc && tr->peft && cfg->zero_stage == 3 && o->rank == 0)
		rc =
		    lora_init(&o->lo_whole, &o->full, &tr->lora.spec, 0, 0, NULL, 0, err);
	if (!rc && o->lo_whole.ad.params &&
	    o->lo_whole.ad.table.total != tr->lora.ad.table.total)
		rc = trl_errf(err, TRL_EINTERNAL, "the adapters' copy differs in layout");
	if (!rc && cfg->log_completions && o->rank == 0) {
		char path[TRL_PATH_MAX + 32];
		snprintf(path, sizeof path, "%s/completions.jsonl", cfg->output_dir);
		o->completions = fopen(path, tr->resume_path[0] ? "a" : "w");
		if (!o->completions)
			rc = trl_errf(err, TRL_EIO, "cannot write %s", path);
	}
	return rc;
}

long online_prompts_per_round(const Trainer *tr)
{
	return tr->on->P;
}

int online_steps_per_round(const Trainer *tr)
{
	return tr->on->iters;
}

void online_start(Trainer *tr, RolloutLink *link, int status)
{
	Online *o = tr->on;
	if (!link || link->K == 0)
		return;
	RolloutPlan p;
	if (o && status == 0) {
		p = o->plan;
		int mu = o->iters;
		p.start_round = tr->start_step / mu;
		p.end_round = (tr->total_steps + mu - 1) / mu;
		o->plan = p;
	} else {
		memset(&p, 0, sizeof p);
		p.status = status ? status : TRL_EINTERNAL;
	}
	rollout_send_plan(link, &p);
}

void online_free(Trainer *tr)
{
	Online *o = tr->on;
	if (!o)
		return;
	for (int j = 0; o->chunk && j < o->GAR; j++)
		rollout_chunk_free(&o->chunk[j]);
	ppo_free(o);
	generator_free(&o->gen);
	lora_free(&o->lo_whole);
	model_free(&o->full);
	if (o->fmt_ok)
		reward_regex_free(&o->fmt);
	if (o->think_ok)
		reward_regex_free(&o->think);
	reward_proc_stop(&o->proc);
	if (o->has_rmz)
		zero_free(&o->rmz);
	if (o->has_rm)
		model_free(&o->rm);
	OnlineBuf bufs[ONLINE_NBUF];
	online_bufs_free(bufs, online_buffers(o, tr->cfg, bufs));
	for (int e = 0; e < tr->train.n; e++) {
		free(o->solution ? o->solution[e] : NULL);
		free(o->req_extra ? o->req_extra[e] : NULL);
	}
	free(o->solution);
	free(o->req_extra);
	free(o->text);
	if (o->completions)
		fclose(o->completions);
	free(o);
	tr->on = NULL;
}

/* ---- rounds -------------------------------------------------------------------- */

/* The prompts of round g: positions g * P .. of the sample stream, each cut
 * to its last Lp tokens. */
static void round_prompts(Trainer *tr, long g, int32_t *ids, int *plen, int *ex)
{
	Online *o = tr->on;
	for (int q = 0; q < o->P; q++) {
		const RowSet *rs = &tr->train_rows;
		int e = rs->items[rs->rows[train_stream_row(tr, g * o->P + q)].first];
		const Example *x = &tr->train.ex[e];
		int n = x->prompt_len, skip = n > o->Lp ? n - o->Lp : 0;
		n -= skip;
		if (ex)
			ex[q] = e;
		plen[q] = n;
		memcpy(ids + (size_t)q * o->Lp, x->ids + skip,
		       (size_t)n * sizeof(int32_t));
		for (int t = n; t < o->Lp; t++)
			ids[(size_t)q * o->Lp + t] = tr->tok.pad_id;
	}
}

/* LoRA: the policy as sampling runs it, the frozen base with the current
 * adapters merged in, into o->full: on every trainer under stages 0-2 (each
 * holds both whole), else on trainer 0 (gathered collectively). Generators
 * get these merged weights, so they need nothing of LoRA. Under stages 0-2
 * the base is copied once; later rounds redo only the adapted tensors. */
static void merge_policy(Trainer *tr)
{
	Online *o = tr->on;
	if (tr->zero.stage == 3) {
		zero_gather_full(&tr->base_zero, o->rank == 0 ? o->full.params : NULL, 0);
		zero_gather_full(&tr->zero, o->rank == 0 ? o->lo_whole.ad.params : NULL,
		                 0);
		if (o->rank == 0)
			lora_merge(&o->full, &o->lo_whole);
		return;
	}
	zero_flush(&tr->zero);
	if (!o->full.params)
		return;
	if (!o->base_copied)
		memcpy(o->full.params, tr->model.params,
		       tr->model.table.total * sizeof(float));
	o->base_copied = 1;
	lora_merge_from(&o->full, &tr->model, &tr->lora);
}

/* Trainer 0 sends the message of round g (every trainer calls: under stage
 * 3 the weights are gathered collectively). */
static void push_round(Trainer *tr, long g, int with_weights)
{
	Online *o = tr->on;
	RolloutLink *l = o->link;
	const float *wts = NULL;
	float *buf = NULL;
	if (with_weights && tr->peft) {
		merge_policy(tr);
		wts = o->full.params;
	} else if (with_weights) {
		if (tr->cfg->zero_stage == 3) {
			if (o->rank == 0 && !o->full.params) {
				TrlErr e2;
				if (model_init_flags(&o->full, &tr->model.cfg,
				                     MODEL_NO_GRADS, &e2)) {
					fprintf(stderr, "trl-hpc: error: %s\n", e2.msg);
					MPI_Abort(MPI_COMM_WORLD, 1);
				}
			}
			buf = o->rank == 0 ? o->full.params : NULL;
			zero_gather_full(&tr->zero, buf, 0);
			wts = buf;
		} else {
			zero_flush(&tr->zero);
			wts = tr->model.params;
		}
	}
	if (o->rank != 0)
		return;
	round_prompts(tr, g, o->push_ids, o->push_plen, NULL);
	rollout_send_round(l, g, o->push_ids, o->push_plen, o->P, wts,
	                   with_weights ? o->plan.n_weights : 0, tr->weights_version);
}

void online_begin(Trainer *tr)
{
	Online *o = tr->on;
	if (!o || !o->link)
		return;
	const RolloutPlan *p = &o->plan;
	for (long g = p->start_round;
	     g <= p->start_round + p->staleness && g < p->end_round; g++)
		push_round(tr, g, g == p->start_round);
}

/* Colocated: samples this trainer's chunks of round g with the current
 * weights. */
static int generate_here(Trainer *tr, long g, TrlErr *err)
{
	Online *o = tr->on;
	if (tr->peft)
		merge_policy(tr);
	else if (tr->cfg->zero_stage == 3)
		zero_gather_full(&tr->zero, o->rank == 0 ? o->full.params : NULL, 0);
	if (tr->cfg->zero_stage == 3) {
		/* MPI counts are int: 2^28-float slices. */
		const size_t slice = (size_t)1 << 28;
		for (size_t at = 0; at < o->plan.n_weights; at += slice) {
			size_t k = o->plan.n_weights - at < slice ? o->plan.n_weights - at
			                                          : slice;
			MPI_Bcast(o->full.params + at, (int)k, MPI_FLOAT, 0,
			          tr->comm->world);
		}
	} else {
		zero_flush(&tr->zero);
	}
	int rc = TRL_OK;
	for (int j = 0; j < o->GAR && !rc; j++) {
		int k = j * o->Ntr + o->rank;
		rc = rollout_generate_chunk(&o->gen, &tr->tok, &o->plan, g, k, o->prompts,
		                            o->plen, &o->chunk[j], err);
		o->chunk[j].version = tr->weights_version;
	}
	return rc;
}

/* Decoded text of ids into o->text (NUL-terminated); returns its length. */
static size_t decode(Trainer *tr, const int32_t *ids, int n)
{
	Online *o = tr->on;
	size_t need = tokenizer_decode(&tr->tok, ids, n, 1, o->text, o->text_cap);
	if (need + 1 > o->text_cap) {
		size_t cap = need + 256;
		char *t = realloc(o->text, cap);
		if (!t)
			return 0;
		o->text = t;
		o->text_cap = cap;
		need = tokenizer_decode(&tr->tok, ids, n, 1, o->text, o->text_cap);
	}
	return need;
}

/* The solution of example e for the accuracy reward: the configured column,
 * else solution, else answer, else (prompt-completion data) the completion. */
static char *solution_of(Trainer *tr, const Example *x)
{
	const Config *cfg = tr->cfg;
	const char *cols[3] = {cfg->solution_column[0] ? cfg->solution_column
	                                               : "solution",
	                       cfg->solution_column[0] ? NULL : "answer", NULL};
	JsonValue *root = NULL;
	JsonError je;
	char *out = NULL;
	if (x->extra && x->extra[0] == '{' && x->extra[1] != '}' &&
	    json_parse(x->extra, strlen(x->extra), &root, &je) == 0) {
		for (int i = 0; i < 2 && cols[i] && !out; i++) {
			const JsonValue *v = json_get(root, cols[i]);
			if (v && v->type == JSON_STRING)
				out = strdup(v->str);
			else if (v && v->type == JSON_NUMBER) {
				char b[64];
				snprintf(b, sizeof b, "%.17g", v->num);
				out = strdup(b);
			}
		}
	}
	json_free(root);
	if (!out && x->len > x->prompt_len) {
		int n = x->len - x->prompt_len;
		if (x->ids[x->len - 1] == tr->tok.eos_id)
			n--;
		decode(tr, x->ids + x->prompt_len, n);
		out = strdup(tr->on->text ? tr->on->text : "");
	}
	return out ? out : strdup("");
}

/* The extra columns a reward program sees: the row's own, and for
 * prompt-completion data without a solution column the reference completion
 * as "solution" (the completion column itself is what the program scores). */
static char *request_extra(Trainer *tr, const Example *x)
{
	const char *ex = x->extra ? x->extra : "{}";
	if (tr->train.format != TRL_FMT_PROMPT_COMPLETION || strstr(ex, "\"solution\""))
		return strdup(ex);
	char *sol = solution_of(tr, x);
	JsonBuf jb = {0};
	size_t n = strlen(ex);
	while (n > 0 && ex[n - 1] != '}')
		n--;
	int empty = 1;
	for (size_t i = 1; i + 1 < n && empty; i++)
		empty = ex[i] == ' ' || ex[i] == '\n' || ex[i] == '\t';
	json_buf_put(&jb, ex, n > 0 ? n - 1 : 0);
	if (n == 0)
		json_buf_puts(&jb, "{");
	json_buf_puts(&jb, empty ? "\"solution\": " : ", \"solution\": ");
	json_buf_string(&jb, sol ? sol : "", sol ? strlen(sol) : 0);
	json_buf_puts(&jb, "}");
	free(sol);
	if (jb.oom) {
		json_buf_free(&jb);
		return NULL;
	}
	return jb.p;
}

/* What the rewards read of each training example, worked out once. */
static int prepare_examples(Trainer *tr, Online *o, TrlErr *err)
{
	int sol = 0, cmd = 0, n = tr->train.n;
	for (int f = 0; f < o->F; f++) {
		sol |= o->kind[f] == RW_ACCURACY;
		cmd |= o->kind[f] == RW_COMMAND;
	}
	if (sol)
		o->solution = calloc((size_t)n, sizeof *o->solution);
	if (cmd)
		o->req_extra = calloc((size_t)n, sizeof *o->req_extra);
	if ((sol && !o->solution) || (cmd && !o->req_extra))
		return trl_errf(err, TRL_ENOMEM, "out of memory");
	for (int e = 0; e < n; e++) {
		const Example *x = &tr->train.ex[e];
		if (sol && !(o->solution[e] = solution_of(tr, x)))
			return trl_errf(err, TRL_ENOMEM, "out of memory");
		if (cmd && !(o->req_extra[e] = request_extra(tr, x)))
			return trl_errf(err, TRL_ENOMEM, "out of memory");
	}
	return TRL_OK;
}

/* Scores the completions of micro-batch j with every reward; NaN = None. */
/* With model_only (another chunk already failed here) only the reward
 * model's forward runs: under ZeRO-3 it gathers collectively, so every
 * trainer runs it for every chunk. */
static int score_chunk(Trainer *tr, int j, int model_only, TrlErr *err)
{
	Online *o = tr->on;
	const RolloutChunk *c = &o->chunk[j];
	int B = o->B, F = o->F, k = j * o->Ntr + o->rank;
	double *r = o->r_local + (size_t)j * B * F;
	int rc = TRL_OK;
	for (int i = 0; i < B && !model_only; i++) {
		int q = (k * B + i) / o->G;
		const int32_t *ids = c->ids + (size_t)i * o->Lc;
		for (int f = 0; f < F; f++) {
			double v = NAN;
			switch (o->kind[f]) {
			case RW_ACCURACY: {
				decode(tr, ids, c->n[i]);
				v = reward_accuracy(o->text ? o->text : "",
				                    o->solution[o->prompt_ex[q]]);
				break;
			}
			case RW_FORMAT:
			case RW_THINK: {
				size_t len = decode(tr, ids, c->n[i]);
				v = reward_format(o->kind[f] == RW_FORMAT ? &o->fmt
				                                          : &o->think,
				                  o->text ? o->text : "", len);
				break;
			}
			case RW_SOFT: {
				int cache = tr->cfg->soft_punish_cache > 0
				                ? tr->cfg->soft_punish_cache
				                : o->Lc / 4;
				v = reward_soft_overlong(c->n[i], o->Lc,
				                         cache > 0 ? cache : 1);
				break;
			}
			default:
				continue; /* the model and the program score the batch
				             below */
			}
			r[(size_t)i * F + f] = v;
		}
	}
	for (int f = 0; f < F; f++) {
		if (o->kind[f] == RW_MODEL) {
			/* prompt + completion through the reward model, its score read
			 * where the reward method trains it. */
			Batch *b = &tr->mb[j];
			model_forward(&o->rm, b);
			for (int i = 0; i < B; i++)
				r[(size_t)i * F + f] =
				    o->rm.logits[(size_t)i * b->T +
				                 batch_score_position(b, i,
				                                      tr->tok.pad_id)];
		} else if (o->kind[f] == RW_COMMAND && !rc && !model_only) {
			char **req = o->req;
			for (int i = 0; i < B && !rc; i++) {
				int q = (k * B + i) / o->G;
				/* Both decodes reuse o->text: the prompt is copied
				 * before the completion is decoded. */
				decode(tr, o->prompts + (size_t)q * o->Lp, o->plen[q]);
				char *prompt = strdup(o->text ? o->text : "");
				const int32_t *ids = c->ids + (size_t)i * o->Lc;
				size_t len = decode(tr, ids, c->n[i]);
				req[i] = reward_request_json(
				    prompt ? prompt : "", o->text ? o->text : "", len,
				    ids, c->n[i], i, B, o->req_extra[o->prompt_ex[q]]);
				free(prompt);
				if (!req[i])
					rc = trl_errf(err, TRL_ENOMEM, "out of memory");
			}
			if (!rc)
				rc = reward_proc_score(&o->proc, B, req, o->vals, err);
			for (int i = 0; i < B && !rc; i++)
				r[(size_t)i * F + f] = o->vals[i];
			for (int i = 0; i < B; i++) {
				free(req[i]);
				req[i] = NULL;
			}
		}
	}
	return rc;
}

/* Builds micro-batch j from its chunk: rows prompt + completion, targets on
 * the completion tokens; the per-token sampling log-probs and the loss mask
 * (B, Lc). Returns the active tokens. */
static long build_batch(Trainer *tr, int j)
{
	Online *o = tr->on;
	const RolloutChunk *c = &o->chunk[j];
	Batch *b = &tr->mb[j];
	int B = o->B, k = j * o->Ntr + o->rank, T = 1;
	for (int i = 0; i < B; i++) {
		int q = (k * B + i) / o->G;
		int L = o->plen[q] + c->n[i];
		T = L > T ? L : T;
	}
	b->B = B;
	b->T = T;
	float *mask = o->mask_round + (size_t)j * B * o->Lc;
	float *samp = o->samp_round + (size_t)j * B * o->Lc;
	long active = 0;
	for (int i = 0; i < B; i++) {
		int q = (k * B + i) / o->G, pl = o->plen[q], n = c->n[i];
		const int32_t *pid = o->prompts + (size_t)q * o->Lp;
		const int32_t *cid = c->ids + (size_t)i * o->Lc;
		/* mask_truncated_completions: a completion that ran out of tokens
		 * without EOS leaves the loss. */
		int keep =
		    !(tr->cfg->mask_truncated_completions && c->finish[i] != TRL_GEN_EOS);
		for (int t = 0; t < T; t++) {
			size_t x = (size_t)i * T + t;
			int real = t < pl + n;
			b->ids[x] = t < pl ? pid[t] : real ? cid[t - pl] : tr->tok.pad_id;
			b->pos[x] = t;
			b->doc[x] = real ? 0 : -1;
			b->targets[x] =
			    t >= pl - 1 && t < pl + n - 1 ? cid[t - pl + 1] : -1;
		}
		for (int t = 0; t < o->Lc; t++) {
			size_t y = (size_t)i * o->Lc + t;
			mask[y] = t < n && keep ? 1.0f : 0.0f;
			samp[y] = t < n ? c->logprobs[y] : 0.0f;
			active += t < n && keep;
		}
		tr->mb_idx[(size_t)j * B + i] = k * B + i;
	}
	return active;
}

int online_first_target(const Batch *b, int i)
{
	int t0 = 0;
	while (t0 < b->T && b->targets[(size_t)i * b->T + t0] < 0)
		t0++;
	return t0;
}

void online_backward_lp(Trainer *tr, Model *m, const Batch *b, const float *dlp,
                        double scale)
{
	const Online *o = tr->on;
	int T = b->T, Lc = o->Lc;
	/* d lp / d logits carries the 1 / temperature of the scaled logits. */
	float s = (float)(scale / tr->cfg->temperature);
	for (int i = 0; i < b->B; i++) {
		int t0 = online_first_target(b, i);
		for (int t = 0; t < T; t++)
			tr->coef[(size_t)i * T + t] = 0.0f;
		for (int t = 0; t < Lc && t0 + t < T; t++)
			if (b->targets[(size_t)i * T + t0 + t] >= 0)
				tr->coef[(size_t)i * T + t0 + t] =
				    s * dlp[(size_t)i * Lc + t];
	}
	tokens_logprob_backward(m->logits, b->targets, tr->ts.lse, tr->coef, b->B * T,
	                        model_config_out_dim(&m->cfg));
	model_backward(m, b);
}

/* The completion-token log-probs of b (already forwarded, logits / temperature
 * in place) into out (B, Lc). */
static void gather_lp(const Trainer *tr, const Batch *b, const float *tok_lp, float *out)
{
	const Online *o = tr->on;
	int T = b->T;
	for (int i = 0; i < b->B; i++) {
		int t0 = online_first_target(b, i);
		for (int t = 0; t < o->Lc; t++) {
			int x = t0 + t;
			out[(size_t)i * o->Lc + t] =
			    x < T && b->targets[(size_t)i * T + x] >= 0
			        ? tok_lp[(size_t)i * T + x]
			        : 0.0f;
		}
	}
}

static void scale_logits(float *logits, size_t n, double temperature)
{
	if (temperature == 1.0)
		return;
	float s = (float)(1.0 / temperature);
#pragma omp parallel for schedule(static)
	for (size_t i = 0; i < n; i++)
		logits[i] *= s;
}

/* Forward of model m on b: the per-token completion log-probs at the
 * sampling temperature into out (B, Lc). */
void online_forward_lp(Trainer *tr, Model *m, const Batch *b, float *out)
{
	/* LoRA's reference is the base: the policy with the adapters off. */
	int base_ref = m == &tr->ref && tr->ref_is_base;
	if (base_ref) {
		m = &tr->model;
		tr->lora.off = 1;
	}
	int V = model_config_out_dim(&m->cfg);
	model_forward(m, b);
	tr->lora.off = 0;
	scale_logits(m->logits, (size_t)b->B * b->T * V, tr->cfg->temperature);
	tokens_logprob_forward(&tr->ts, m->logits, b->targets, b->B * b->T, V);
	gather_lp(tr, b, tr->ts.lp, out);
}

void online_step_fig(Online *o, int k, double v)
{
	o->step_fig[k] = v;
	o->step_has[k] = 1;
}

/* Completion lengths and the reward figures of the round (every trainer
 * holds every reward after the all-gather). */
static void round_figures(Trainer *tr, const int *lens, const int *term)
{
	Online *o = tr->on;
	int N = o->N;
	double s = 0, mn = INFINITY, mx = 0, ts = 0, tmn = INFINITY, tmx = 0, tn = 0;
	for (int c = 0; c < N; c++) {
		s += lens[c];
		mn = fmin(mn, lens[c]);
		mx = fmax(mx, lens[c]);
		if (term[c]) {
			ts += lens[c];
			tmn = fmin(tmn, lens[c]);
			tmx = fmax(tmx, lens[c]);
			tn++;
		}
	}
	online_step_fig(o, OS_LEN_MEAN, s / N);
	online_step_fig(o, OS_LEN_MIN, mn);
	online_step_fig(o, OS_LEN_MAX, mx);
	online_step_fig(o, OS_TERM_MEAN, tn > 0 ? ts / tn : 0.0);
	online_step_fig(o, OS_TERM_MIN, tn > 0 ? tmn : 0.0);
	online_step_fig(o, OS_TERM_MAX, tn > 0 ? tmx : 0.0);
	online_step_fig(o, OS_CLIPPED, 1.0 - tn / N);
	double rs = 0, rn = 0;
	for (int c = 0; c < N; c++)
		if (!isnan(o->r_sum[c])) {
			rs += o->r_sum[c];
			rn++;
		}
	online_step_fig(o, OS_REWARD, rn > 0 ? rs / rn : 0.0);
	/* reward_std: the std of every reward of the batch; frac_reward_zero_std:
	 * the share of completions whose group (under scale_rewards batch: the
	 * batch) has std 0, as TRL logs them. */
	double m = rn > 0 ? rs / rn : 0.0, v = 0;
	for (int c = 0; c < N; c++)
		if (!isnan(o->r_sum[c]))
			v += (o->r_sum[c] - m) * (o->r_sum[c] - m);
	online_step_fig(o, OS_REWARD_STD, rn > 1 ? sqrt(v / (rn - 1)) : 0.0);
	if (o->grpo) {
		double z = 0;
		for (int c = 0; c < N; c++)
			z += fabs(o->gstd[c]) <= 1e-8;
		online_step_fig(o, OS_ZERO_STD, z / N);
	}
	for (int f = 0; f < o->F; f++) {
		double a = 0, q = 0, n = 0;
		for (int c = 0; c < N; c++) {
			double v = o->r_all[(size_t)c * o->F + f];
			if (isnan(v))
				continue;
			a += v;
			q += v * v;
			n++;
		}
		if (n == 0)
			continue;
		double m = a / n,
		       sd = n > 1 ? sqrt(fmax(0.0, (q - n * m * m) / (n - 1))) : 0.0;
		o->rw_mean_acc[f] += m;
		o->rw_std_acc[f] += sd;
		o->rw_steps[f] += 1;
	}
}

int online_step_begin(Trainer *tr, long step, long counts[2], TrlErr *err)
{
	Online *o = tr->on;
	const Config *cfg = tr->cfg;
	int mu = o->iters, GA = o->GAR, B = o->B;
	long g = step / mu;
	int rc = TRL_OK;
	memset(o->step_has, 0, sizeof o->step_has);
	memset(o->clip, 0, sizeof o->clip);
	o->clip[4] = INFINITY;
	o->clip[5] = -INFINITY;
	memset(o->isst, 0, sizeof o->isst);
	o->isst[2] = INFINITY;
	if (g != o->round) {
		o->round = g;
		round_prompts(tr, g, o->prompts, o->plen, o->prompt_ex);
		double t0 = trl_now();
		if (o->link) {
			for (int j = 0; j < GA; j++)
				rollout_recv_chunk(o->link, j, &o->chunk[j]);
		} else {
			rc = generate_here(tr, g, err);
		}
		double waited = trl_now() - t0;
		for (int j = 0; j < GA && !rc; j++)
			if (o->chunk[j].status) {
				rc = trl_errf(err, o->chunk[j].status, "%s",
				              o->chunk[j].msg);
			}
		if ((rc = comm_agree(tr->comm, rc, err)))
			return rc;
		/* staleness in optimizer steps: the weights behind the rollouts */
		double st = 0, stm = 0;
		for (int j = 0; j < GA; j++) {
			double s = (double)(step - o->chunk[j].version);
			st += s;
			stm = fmax(stm, s);
		}
		double sm[2] = {st, waited}, smx[2] = {stm, waited};
		MPI_Allreduce(MPI_IN_PLACE, sm, 2, MPI_DOUBLE, MPI_SUM, tr->comm->world);
		MPI_Allreduce(MPI_IN_PLACE, smx, 2, MPI_DOUBLE, MPI_MAX, tr->comm->world);
		online_step_fig(o, OS_STALE_MEAN, sm[0] / (GA * o->Ntr));
		online_step_fig(o, OS_STALE_MAX, smx[0]);
		online_step_fig(o, OS_WAIT, sm[1] / o->Ntr);
		long active = 0;
		for (int j = 0; j < GA; j++)
			active += build_batch(tr, j);
		(void)active;
		for (int j = 0; j < GA; j++) {
			TrlErr later;
			int r2 = score_chunk(tr, j, rc != 0, rc ? &later : err);
			rc = rc ? rc : r2;
		}
		if ((rc = comm_agree(tr->comm, rc, err)))
			return rc;
		/* Every completion's rewards on every trainer: trainer r's micro-batch
		 * j holds round rows ((j * Ntr + r) * B ...). */
		int F = o->F;
		size_t mine = (size_t)GA * B * F;
		double *all = o->g_rew;
		int *lens = o->g_len, *loc = o->g_len_mine, *len_c = o->g_len_c;
		MPI_Allgather(o->r_local, (int)mine, MPI_DOUBLE, all, (int)mine,
		              MPI_DOUBLE, tr->comm->world);
		for (int j = 0; j < GA; j++)
			for (int i = 0; i < B; i++) {
				loc[((size_t)j * B + i) * 2] = o->chunk[j].n[i];
				loc[((size_t)j * B + i) * 2 + 1] =
				    o->chunk[j].finish[i] == TRL_GEN_EOS;
			}
		MPI_Allgather(loc, GA * B * 2, MPI_INT, lens, GA * B * 2, MPI_INT,
		              tr->comm->world);
		for (int r = 0; r < o->Ntr; r++)
			for (int j = 0; j < GA; j++)
				for (int i = 0; i < B; i++) {
					size_t src =
					    ((size_t)r * GA * B + (size_t)j * B + i);
					size_t c = ((size_t)j * o->Ntr + r) * B + i;
					memcpy(o->r_all + c * F, all + src * F,
					       (size_t)F * sizeof(double));
					len_c[c] = lens[src * 2];
					len_c[o->N + c] = lens[src * 2 + 1];
				}
		rl_combine_rewards(o->r_all, o->weight, o->N, F, o->r_sum);
		/* rloo: the old and reference log-probs of the round for the KL in
		 * the reward (and the old ones for num_iterations > 1). */
		if (o->old_round && !o->ppo) {
			for (int j = 0; j < GA; j++) {
				Batch *b = &tr->mb[j];
				size_t off = (size_t)j * B * o->Lc;
				if (o->ref_round)
					online_forward_lp(tr, &tr->ref, b,
					                  o->ref_round + off);
				online_forward_lp(tr, &tr->model, b, o->old_round + off);
			}
		}
		if (o->ppo) {
			ppo_round(tr, o);
		} else if (o->grpo) {
			grpo_advantages(o->r_sum, o->N, o->G,
			                (TrlScaleRewards)cfg->scale_rewards, o->adv,
			                o->gstd);
		} else {
			double *klr = o->g_kl_mine, *kla = o->g_kl;
			memset(klr, 0, (size_t)GA * B * sizeof *klr);
			for (int j = 0; j < GA && o->ref_round; j++)
				for (int i = 0; i < B; i++) {
					size_t off = ((size_t)j * B + i) * o->Lc;
					double s = 0;
					for (int t = 0; t < o->Lc; t++)
						s += o->mask_round[off + t] *
						     ((double)o->old_round[off + t] -
						      o->ref_round[off + t]);
					klr[(size_t)j * B + i] = s;
				}
			MPI_Allgather(klr, GA * B, MPI_DOUBLE, kla, GA * B, MPI_DOUBLE,
			              tr->comm->world);
			for (int r = 0; r < o->Ntr; r++)
				for (int j = 0; j < GA; j++)
					for (int i = 0; i < B; i++)
						o->kl_seq[((size_t)j * o->Ntr + r) * B +
						          i] = kla[(size_t)r * GA * B +
						                   (size_t)j * B + i];
			double lo = tr->reward_clip[0], hi = tr->reward_clip[1];
			/* A completion no reward applied to stays NaN (its advantage
			 * becomes 0 and its group's baseline leaves it out). */
			for (int c = 0; c < o->N; c++) {
				double r = o->r_sum[c];
				if (!isnan(r))
					o->r_sum[c] = fmin(fmax(r, lo), hi) -
					              cfg->beta * o->kl_seq[c];
			}
			rloo_advantages(o->r_sum, o->N, o->G, cfg->normalize_advantages,
			                o->adv);
		}
		round_figures(tr, len_c, len_c + o->N);
		if (o->completions) {
			for (int c = 0; c < o->N && c < 64; c++) {
				int r = (c / B) % o->Ntr;
				if (r != 0)
					continue; /* rank 0 holds the text of its own rows
					           */
				int j = (c / B) / o->Ntr, i = c % B;
				JsonBuf jb = {0};
				json_buf_printf(&jb,
				                "{\"step\": %ld, \"prompt\": ", step);
				int q = c / o->G;
				decode(tr, o->prompts + (size_t)q * o->Lp, o->plen[q]);
				json_buf_string(&jb, o->text, strlen(o->text));
				json_buf_puts(&jb, ", \"completion\": ");
				size_t len =
				    decode(tr, o->chunk[j].ids + (size_t)i * o->Lc,
				           o->chunk[j].n[i]);
				json_buf_string(&jb, o->text, len);
				/* A reward nothing applied to is TRL's None. */
				if (isnan(o->r_sum[c]))
					json_buf_puts(&jb, ", \"reward\": null");
				else
					json_buf_printf(&jb, ", \"reward\": %.7g",
					                o->r_sum[c]);
				json_buf_printf(&jb, ", \"advantage\": %.7g}\n",
				                o->adv[c]);
				if (jb.p)
					fputs(jb.p, o->completions);
				json_buf_free(&jb);
			}
			fflush(o->completions);
		}
	} else {
		/* num_iterations: the same micro-batches again; the metrics of the
		 * round were logged at its first step. */
	}
	if (o->ppo)
		ppo_pick_minibatch(tr, o, step);
	/* Active tokens (dapo's normaliser) and the loop's counts, over this
	 * step's micro-batches. */
	long act = 0, real = 0;
	for (int j = tr->mb_base; j < tr->mb_base + o->GA; j++) {
		const float *m = o->mask_round + (size_t)j * B * o->Lc;
		for (size_t t = 0; t < (size_t)B * o->Lc; t++)
			act += m[t] > 0;
		const Batch *b = &tr->mb[j];
		for (int t = 0; t < b->B * b->T; t++)
			real += b->doc[t] >= 0;
	}
	double na = (double)act;
	MPI_Allreduce(MPI_IN_PLACE, &na, 1, MPI_DOUBLE, MPI_SUM, tr->comm->world);
	o->norm = na / o->Ntr;
	counts[0] = act;
	counts[1] = real;
	return TRL_OK;
}

/* top_entropy_quantile: zeroes in w the tokens whose entropy is below the
 * (1 - q) quantile of the micro-batch's active entropies over every trainer
 * (the mask multiplies the policy term, as TRL applies it). */
static void entropy_mask(Trainer *tr, const Batch *b, const float *mask, float *w)
{
	Online *o = tr->on;
	float *ent = o->dlp; /* free until the loss */
	gather_lp(tr, b, tr->ts.entropy, ent);
	int n = 0;
	size_t BL = (size_t)o->B * o->Lc;
	double *mine = o->ent_mine, *all = o->ent_all;
	int *cnt = o->ent_cnt, *dsp = o->ent_dsp;
	for (size_t t = 0; t < BL; t++)
		if (mask[t] > 0)
			mine[n++] = ent[t];
	MPI_Allgather(&n, 1, MPI_INT, cnt, 1, MPI_INT, tr->comm->world);
	int tot = 0;
	for (int r = 0; r < o->Ntr; r++) {
		dsp[r] = tot;
		tot += cnt[r];
	}
	MPI_Allgatherv(mine, n, MPI_DOUBLE, all, cnt, dsp, MPI_DOUBLE, tr->comm->world);
	if (tot > 0) {
		double thr =
		    rl_quantile(all, (size_t)tot, 1.0 - tr->cfg->top_entropy_quantile);
		for (size_t t = 0; t < BL; t++)
			if (mask[t] > 0 && ent[t] < thr)
				w[t] = 0.0f;
	}
}

void online_micro(Trainer *tr, Batch *b, int split, const int *idx, int n, double scale,
                  int backward, int count, Metrics *acc)
{
	(void)split, (void)n;
	Online *o = tr->on;
	const Config *cfg = tr->cfg;
	/* Trainer 0's weight push moves on only inside MPI calls: one test
	 * per micro-step keeps it going while the step computes. */
	rollout_progress(o->link);
	if (o->ppo) {
		ppo_micro(tr, b, idx, scale, backward, count, acc);
		return;
	}
	int B = o->B, Lc = o->Lc;
	int j = (idx[0] / B) / o->Ntr;
	size_t BL = (size_t)B * Lc, off = (size_t)j * BL;
	float *mask = o->mask;
	memcpy(mask, o->mask_round + off, BL * sizeof(float));
	const float *samp = o->samp_round + off;
	const float *ref = NULL;
	if (o->go.beta > 0) {
		online_forward_lp(tr, &tr->ref, b, o->refb);
		ref = o->refb;
	}
	Model *m = &tr->model;
	online_forward_lp(tr, m, b, o->lp);
	const float *old = o->old_round ? o->old_round + off : o->lp;
	const float *w = NULL;
	for (size_t t = 0; t < BL; t++)
		o->w[t] = 1.0f;
	if (cfg->vllm_importance_sampling_correction) {
		IsStats is;
		is_correction((TrlIsMode)cfg->vllm_importance_sampling_mode,
		              cfg->vllm_importance_sampling_clip_min,
		              cfg->vllm_importance_sampling_clip_max, B, Lc, old, samp,
		              mask, o->w, &is);
		w = o->w;
		o->isst[0] += is.logp_diff_sum;
		o->isst[1] = fmax(o->isst[1], is.logp_diff_max);
		if (is.tokens > 0) {
			o->isst[2] = fmin(o->isst[2], is.ratio_min);
			o->isst[4] = fmax(o->isst[4], is.ratio_max);
		}
		o->isst[3] += is.ratio_sum;
		o->isst[5] += is.tokens;
		o->isst[6] += is.ratio_count;
	}
	if (cfg->top_entropy_quantile < 1.0) {
		entropy_mask(tr, b, mask, o->w);
		w = o->w;
	}
	const double *adv = o->adv + idx[0];
	double loss;
	double tokens = 0, kl = 0;
	if (o->grpo) {
		GrpoStats st;
		loss = grpo_loss(&o->go, B, Lc, o->lp, old, ref, w, mask, adv, o->GA,
		                 o->norm, o->dlp, &st);
		o->clip[0] += st.low_clipped;
		o->clip[1] += st.high_clipped;
		o->clip[2] += st.region_clipped;
		o->clip[3] += st.clip_count;
		o->clip[4] = fmin(o->clip[4], st.low_min);
		o->clip[5] = fmax(o->clip[5], st.high_max);
		tokens = st.tokens;
		kl = st.kl;
	} else {
		RlooStats st;
		loss = rloo_loss(cfg->epsilon, o->go.epsilon_high, B, Lc, o->lp, old,
		                 mask, adv, o->GA, o->dlp, &st);
		if (w) /* the IS weights scale each completion's gradient */
			for (size_t t = 0; t < BL; t++)
				o->dlp[t] *= w[t];
		o->clip[0] += st.low_clipped;
		o->clip[1] += st.high_clipped;
		o->clip[2] += st.region_clipped;
		o->clip[3] += st.seqs;
		for (size_t t = 0; t < BL; t++)
			tokens += mask[t];
	}
	if (backward)
		online_backward_lp(tr, m, b, o->dlp, scale);
	if (!count)
		return;
	/* TRL logs the sum over the accumulation of each rank's loss, averaged
	 * over the ranks; the window here averages per micro-step values. */
	metrics_add(acc, MET_LOSS, loss * o->GA, 1.0);
	double es = 0;
	float *ent = o->refb; /* free again after the loss */
	gather_lp(tr, b, tr->ts.entropy, ent);
	for (size_t t = 0; t < BL; t++)
		es += o->mask[t] * ent[t];
	metrics_add(acc, MET_ENTROPY, es, tokens);
	if (o->go.beta > 0)
		metrics_add(acc, MET_KL, kl, tokens);
}

void online_step_end(Trainer *tr, long done)
{
	Online *o = tr->on;
	const Config *cfg = tr->cfg;
	int mu = o->iters;
	tr->weights_version = done;
	if (o->ppo)
		ppo_step_end(tr, o,
		             lr_at_step(cfg->lr_scheduler_type, cfg->learning_rate,
		                        done - 1, tr->total_steps, tr->warmup));
	/* The step's clipping and importance-sampling figures over the trainers. */
	if (o->ppo)
		goto push;
	double loc[3] = {o->clip[3] > 0 ? o->clip[0] / o->clip[3] : 0.0,
	                 o->clip[3] > 0 ? o->clip[1] / o->clip[3] : 0.0,
	                 o->clip[3] > 0 ? o->clip[2] / o->clip[3] : 0.0};
	double sum[3], lo = o->clip[4], hi = o->clip[5];
	MPI_Allreduce(loc, sum, 3, MPI_DOUBLE, MPI_SUM, tr->comm->world);
	MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_DOUBLE, MPI_MIN, tr->comm->world);
	MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_DOUBLE, MPI_MAX, tr->comm->world);
	online_step_fig(o, OS_LOW_MEAN, sum[0] / o->Ntr);
	online_step_fig(o, OS_HIGH_MEAN, sum[1] / o->Ntr);
	online_step_fig(o, OS_REGION, sum[2] / o->Ntr);
	if (o->grpo && isfinite(lo))
		online_step_fig(o, OS_LOW_MIN, lo);
	if (o->grpo && isfinite(hi))
		online_step_fig(o, OS_HIGH_MAX, hi);
	if (cfg->vllm_importance_sampling_correction) {
		double s[4] = {o->isst[0], o->isst[3], o->isst[5], o->isst[6]};
		double e[2] = {o->isst[1], o->isst[4]}, lo = o->isst[2];
		MPI_Allreduce(MPI_IN_PLACE, s, 4, MPI_DOUBLE, MPI_SUM, tr->comm->world);
		MPI_Allreduce(MPI_IN_PLACE, e, 2, MPI_DOUBLE, MPI_MAX, tr->comm->world);
		MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_DOUBLE, MPI_MIN, tr->comm->world);
		if (s[2] > 0) {
			online_step_fig(o, OS_LOGP_DIFF_MEAN, s[0] / s[2]);
			online_step_fig(o, OS_LOGP_DIFF_MAX, e[0]);
			online_step_fig(o, OS_IS_MIN, lo);
			online_step_fig(o, OS_IS_MEAN, s[3] > 0 ? s[1] / s[3] : 0.0);
			online_step_fig(o, OS_IS_MAX, e[1]);
		}
	}
push:
	/* The weight push: after the last step of round g the generators get
	 * the message of round g + 1 + max_staleness. */
	if (o->link && done % mu == 0) {
		RolloutLink *l = o->link;
		long next = done / mu + o->plan.staleness;
		l->sync_s = l->sync_bytes = 0;
		if (next < o->plan.end_round)
			push_round(tr, next, 1);
		double sy[2] = {l->sync_s, l->sync_bytes};
		MPI_Bcast(sy, 2, MPI_DOUBLE, 0, tr->comm->world);
		online_step_fig(o, OS_SYNC_S, sy[0]);
		online_step_fig(o, OS_SYNC_BYTES, sy[1]);
	}
	for (int k = 0; k < OS_N; k++) {
		if (!o->step_has[k])
			continue;
		double v = o->step_fig[k];
		if (os_kind[k] == 0) {
			o->win[k] += v;
		} else if (o->win_n[k] == 0) {
			o->win[k] = v;
		} else {
			o->win[k] =
			    os_kind[k] == 1 ? fmin(o->win[k], v) : fmax(o->win[k], v);
		}
		o->win_n[k] += 1;
	}
}

void online_log(Trainer *tr, FILE *f)
{
	Online *o = tr->on;
	for (int f2 = 0; f2 < o->F; f2++) {
		if (o->rw_steps[f2] == 0)
			continue;
		char key[96];
		snprintf(key, sizeof key, "rewards/%s/mean", o->name[f2]);
		metrics_put(f, key, o->rw_mean_acc[f2] / o->rw_steps[f2]);
		snprintf(key, sizeof key, "rewards/%s/std", o->name[f2]);
		metrics_put(f, key, o->rw_std_acc[f2] / o->rw_steps[f2]);
		o->rw_mean_acc[f2] = o->rw_std_acc[f2] = o->rw_steps[f2] = 0;
	}
	for (int k = 0; k < OS_N; k++) {
		if (o->win_n[k] == 0)
			continue;
		double v = os_kind[k] == 0 ? o->win[k] / o->win_n[k] : o->win[k];
		metrics_put(f, os_names[k], v);
		o->win[k] = o->win_n[k] = 0;
	}
}

double online_console_reward(const Trainer *tr)
{
	const Online *o = tr->on;
	return o && o->win_n[OS_REWARD] > 0 ? o->win[OS_REWARD] / o->win_n[OS_REWARD]
	                                    : 0.0;
}

void online_clear_window(Trainer *tr)
{
	Online *o = tr->on;
	if (!o)
		return;
	memset(o->win, 0, sizeof o->win);
	memset(o->win_n, 0, sizeof o->win_n);
	memset(o->rw_mean_acc, 0, sizeof o->rw_mean_acc);
	memset(o->rw_std_acc, 0, sizeof o->rw_std_acc);
	memset(o->rw_steps, 0, sizeof o->rw_steps);
}
