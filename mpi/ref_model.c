/* ref_model.c - the reference model of the preference methods: a frozen copy
 * of the starting weights (or ref_model_name_or_path), sharded like the
 * policy under ZeRO-3; its log-probs precomputed before training with
 * precompute_ref_log_probs; TR-DPO's mixing with the policy. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "layers.h"
#include "model_io.h"
#include "trainer.h"

/* Whether a and b have the same parameters: names, shapes and offsets. */
static int same_table(const Model *a, const Model *b)
{
	if (a->table.n != b->table.n || a->table.total != b->table.total)
		return 0;
	for (int i = 0; i < a->table.n; i++) {
		const ParamInfo *p = &a->table.p[i], *q = &b->table.p[i];
		if (strcmp(p->name, q->name) || p->shape[0] != q->shape[0] ||
		    p->shape[1] != q->shape[1] || p->offset != q->offset)
			return 0;
	}
	return 1;
}

/* The reference's weights: the folder named by ref_model_name_or_path, else
 * the folder training started from, else the seeded initial weights (the
 * policy's own start, so a resumed run rebuilds the same reference). */
static int ref_build(Trainer *tr, TrlErr *err)
{
	const Config *cfg = tr->cfg;
	/* LoRA without a named reference: the base with the adapters off (as
	 * TRL's DPO with a peft_config), no second copy of the model. */
	if (tr->peft && !cfg->ref_model_name_or_path[0]) {
		if (cfg->sync_ref_model)
			return trl_errf(
			    err, TRL_EUNSUPPORTED,
			    "sync_ref_model with use_peft: the reference is the "
			    "base model with the adapters off, which TR-DPO "
			    "cannot mix into (as in TRL); drop one of them");
		tr->ref_is_base = 1;
		tr->has_ref = 1;
		return TRL_OK;
	}
	const char *dir = cfg->ref_model_name_or_path[0] ? cfg->ref_model_name_or_path
	                                                 : cfg->model_name_or_path;
	int stage3 = cfg->zero_stage == 3;
	Model full;
	memset(&full, 0, sizeof full);
	int rc;
	if (dir[0]) {
		rc = model_load_dir_flags(stage3 ? &full : &tr->ref, dir,
		                          tr->model.cfg.num_labels, (uint64_t)cfg->seed,
		                          MODEL_NO_GRADS, NULL, err);
		if (rc && cfg->ref_model_name_or_path[0]) {
			char msg[sizeof err->msg];
			snprintf(msg, sizeof msg, "%s", err->msg);
			trl_errf(err, rc, "ref_model_name_or_path: %s", msg);
		}
		if (!rc && stage3)
			rc = model_init_flags(&tr->ref, &full.cfg,
			                      MODEL_NO_PARAMS | MODEL_NO_GRADS, err);
	} else {
		rc = model_init_flags(
		    &tr->ref, &tr->model.cfg,
		    stage3 ? MODEL_NO_PARAMS | MODEL_NO_GRADS : MODEL_NO_GRADS, err);
		if (!rc && !stage3)
			model_init_weights(&tr->ref, (uint64_t)cfg->seed);
	}
	/* Any reference that scores the same tokens will do (as in TRL), except
	 * that TR-DPO mixes weights tensor by tensor: that needs the same
	 * table. */
	if (!rc && tr->ref.cfg.vocab_size != tr->model.cfg.vocab_size)
		rc = trl_errf(
		    err, TRL_EINVAL,
		    "%s: the reference model's vocab_size is %d, the policy's %d: "
		    "it must score the same tokens",
		    dir, tr->ref.cfg.vocab_size, tr->model.cfg.vocab_size);
	if (!rc && cfg->sync_ref_model && !same_table(&tr->ref, &tr->model))
		rc =
		    trl_errf(err, TRL_EINVAL,
		             "%s: the reference model's tensors differ from the policy's "
		             "(%zu parameters, the policy %zu): sync_ref_model needs a "
		             "reference of the policy's architecture",
		             dir, tr->ref.table.total, tr->model.table.total);
	if (!rc && tr->ref.cfg.max_position_embeddings < tr->maxT)
		rc = trl_errf(err, TRL_EINVAL,
		              "%s: the reference model takes at most %d positions, the "
		              "longest row has %d: lower max_length",
		              dir, tr->ref.cfg.max_position_embeddings, tr->maxT);
	/* Stage 3: the reference's shards follow the policy's cut, so TR-DPO's
	 * mixing is local to each rank; it has no gradients or optimizer. */
	if (!rc && stage3)
		rc = zero_init_frozen(&tr->ref_zero, &tr->ref, tr->comm->world,
		                      cfg->stage3_param_persistence_threshold,
		                      cfg->overlap_comm, dir[0] ? full.params : NULL,
		                      (unsigned long long)cfg->seed, err);
	model_free(&full);
	/* Every reference forward is read (ref_logps) before the policy's next
	 * forward, so the two share one activation slab. */
	if (!rc)
		rc = model_share_activations(&tr->ref, &tr->model, tr->rows_cap, tr->maxT,
		                             err);
	tr->has_ref = 1;
	return rc;
}

void ref_logps(Trainer *tr, Batch *b, int pairs, double *out)
{
	Model *m = tr->ref_is_base ? &tr->model : &tr->ref;
	if (tr->ref_is_base)
		tr->lora.off = 1;
	model_forward(m, b);
	tr->lora.off = 0;
	tokens_logprob_forward(&tr->ts, m->logits, b->targets, b->B * b->T,
	                       model_config_out_dim(&m->cfg));
	rows_logps(tr, b, pairs, out, tr->rowbuf + 7 * (size_t)tr->rows_cap);
}

/* Every example's reference log-probs of one split: rank r takes the chunks
 * r, r + size, ...; the sums over ranks then hold each value once. Under
 * stage 3 every rank runs as many forwards as the busiest (on example 0). */
static int precompute_split(Trainer *tr, int split, TrlErr *err)
{
	const Comm *c = tr->comm;
	const Dataset *d = split ? &tr->test : &tr->train;
	int kto = tr->method->rows_per_example == 1; /* kto, bco: one row an example */
	int n = d->n;
	int B = tr->cfg->per_device_train_batch_size;
	int kl = tr->cfg->method == TRL_METHOD_KTO && tr->kto.type == TRL_KTO_KTO;
	int rc = TRL_OK;
	for (int k = 0; k < 2 && !rc; k++) {
		tr->pre[split][k] = calloc((size_t)(n > 0 ? n : 1), sizeof(double));
		if (!tr->pre[split][k])
			rc = trl_errf(err, TRL_ENOMEM, "out of memory");
	}
	Batch b;
	memset(&b, 0, sizeof b);
	if (!rc)
		rc = batch_alloc(&b, tr->rows_cap, tr->maxT, err);
	/* The forwards below are collective under stage 3: start them only if
	 * every rank could allocate. */
	if ((rc = comm_agree(c, rc, err))) {
		batch_free(&b);
		return rc;
	}
	int *idx = tr->ibuf, *partner = tr->ibuf + tr->rows_cap;
	double *out = tr->rowbuf;
	long rounds = ((long)n + (long)c->size * B - 1) / ((long)c->size * B);
	for (long i = 0; i < rounds && !rc; i++) {
		int first = (int)((i * c->size + c->rank) * B);
		int k = first >= n ? 0 : n - first < B ? n - first : B;
		if (k == 0 && !tr->sync_forwards)
			continue;
		int m = k > 0 ? k : 1;
		for (int j = 0; j < m; j++)
			idx[j] = k > 0 ? first + j : 0;
		if (kto) {
			batch_fill_mismatched(&b, d, idx, idx, m, 0, tr->tok.pad_id);
			ref_logps(tr, &b, 0, out);
			for (int j = 0; j < k; j++)
				tr->pre[split][0][idx[j]] = out[j];
			if (kl) {
				for (int j = 0; j < m; j++)
					partner[j] = tr->partner[split][idx[j]];
				batch_fill_mismatched(&b, d, idx, partner, m,
				                      tr->cfg->max_length,
				                      tr->tok.pad_id);
				ref_logps(tr, &b, 0, out);
				for (int j = 0; j < k; j++)
					tr->pre[split][1][idx[j]] = out[j];
			}
		} else {
			batch_fill_pairs(&b, d, idx, m, tr->tok.pad_id);
			ref_logps(tr, &b, 1, out);
			for (int j = 0; j < k; j++) {
				tr->pre[split][0][idx[j]] = out[j];
				tr->pre[split][1][idx[j]] = out[m + j];
			}
		}
	}
	batch_free(&b);
	for (int k = 0; k < 2 && !rc && n > 0; k++)
		MPI_Allreduce(MPI_IN_PLACE, tr->pre[split][k], n, MPI_DOUBLE, MPI_SUM,
		              c->world);
	return rc;
}

int ref_setup(Trainer *tr, TrlErr *err)
{
	const Config *cfg = tr->cfg;
	if (!tr->need_ref)
		return TRL_OK;
	int rc = ref_build(tr, err);
	if ((rc = comm_agree(tr->comm, rc, err)))
		return rc;
	if (!cfg->precompute_ref_log_probs)
		return TRL_OK;
	double t0 = trl_now();
	rc = precompute_split(tr, 0, err);
	if (!rc && tr->has_test)
		rc = precompute_split(tr, 1, err);
	ref_free(tr);
	if (!rc && tr->comm->rank == 0) {
		printf("precompute_ref_log_probs: reference log-probs of %d train and %d "
		       "test examples in %.1f s; no reference model is held while "
		       "training\n",
		       tr->train.n, tr->has_test ? tr->test.n : 0, trl_now() - t0);
		fflush(stdout);
	}
	return comm_agree(tr->comm, rc, err);
}

void ref_sync(Trainer *tr, long done)
{
	const Config *cfg = tr->cfg;
	if (!cfg->sync_ref_model || !tr->has_ref || done % cfg->ref_model_sync_steps != 0)
		return;
	double a = cfg->ref_model_mixup_alpha;
	int stage3 = cfg->zero_stage == 3;
	zero_flush(&tr->zero);
	if (stage3)
		zero_flush(&tr->ref_zero);
	for (int u = 0; u < tr->zero.U; u++) {
		size_t b, e, rb, re;
		float *p = zero_region(&tr->zero, u, ZERO_PARAMS, 0, &b, &e);
		float *r = stage3
		               ? zero_region(&tr->ref_zero, u, ZERO_PARAMS, 0, &rb, &re)
		               : tr->ref.params + b;
		for (size_t i = 0; i < e - b; i++)
			r[i] = (float)(a * p[i] + (1.0 - a) * r[i]);
		if (stage3)
			tr->ref_zero.valid[u] = 0;
	}
	if (stage3)
		tr->ref_zero.wslot_unit[0] = tr->ref_zero.wslot_unit[1] = -1;
}

void ref_free(Trainer *tr)
{
	if (tr->ref_is_base) {
		tr->ref_is_base = 0;
		tr->has_ref = 0;
		return;
	}
	if (!tr->has_ref)
		return;
	if (tr->cfg->zero_stage == 3)
		zero_free(&tr->ref_zero);
	model_free(&tr->ref);
	memset(&tr->ref, 0, sizeof tr->ref);
	memset(&tr->ref_zero, 0, sizeof tr->ref_zero);
	tr->has_ref = 0;
}
