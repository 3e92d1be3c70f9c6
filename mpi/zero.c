/* zero.c - ZeRO stages 0-3: unit pieces, non-blocking per-unit reductions
 * and gathers driven by the model's hooks, and AdamW on the owned pieces. */
#include "zero.h"

#include "gemm.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { BUF_HEAD = 0, BUF_TAIL = 1, BUF_SLOT = 2 };

/* Rank r's piece of a unit [b, e): chunks of ceil(len / N) floats rounded up
 * to 16, so every piece but the last starts 64-byte aligned. Late ranks get
 * short or empty pieces when N does not divide the unit. */
static void cut_unit(size_t b, size_t e, int N, size_t *cut)
{
	size_t len = e - b, c = (len + (size_t)N - 1) / (size_t)N;
	c = (c + 15) & ~(size_t)15;
	for (int r = 0; r <= N; r++) {
		size_t x = (size_t)r * c;
		cut[r] = b + (x < len ? x : len);
	}
}

static size_t *cut_row(const Zero *z, int u)
{
	return z->cut + (size_t)u * (size_t)(z->N + 1);
}

static size_t unit_len(const Zero *z, int u)
{
	return z->m->unit_end[u] - z->m->unit_begin[u];
}

static size_t piece_begin(const Zero *z, int u)
{
	return cut_row(z, u)[z->rank];
}

static size_t piece_len(const Zero *z, int u)
{
	return cut_row(z, u)[z->rank + 1] - cut_row(z, u)[z->rank];
}

static int buf_of(const Zero *z, int u)
{
	if (u == 0)
		return BUF_HEAD;
	if (u == z->U - 1)
		return BUF_TAIL;
	return BUF_SLOT + (u - 1) % 2;
}

/* Floats of the four gather/reduce buffers (BUF_HEAD, BUF_TAIL and the two
 * layer slots) for units of these lengths and L layers: 0 where none is
 * needed, for a missing layer or a unit below thr that stays whole. */
static void buffer_lens(size_t head, size_t tail, size_t layer, int L, long thr,
                        size_t lens[4])
{
	lens[BUF_HEAD] = (long)head < thr ? 0 : head;
	lens[BUF_TAIL] = (long)tail < thr ? 0 : tail;
	lens[BUF_SLOT] = L >= 1 && (long)layer >= thr ? layer : 0;
	lens[BUF_SLOT + 1] = L >= 2 && (long)layer >= thr ? layer : 0;
}

/* The longest layer unit (of the sharded ones with sharded_only): the layer
 * slots hold any layer, and layers differ (lfm2's conv and attention layers,
 * LoRA adapters on some modules only). */
static size_t longest_layer(const Zero *z, int sharded_only)
{
	size_t n = 0;
	for (int u = 1; u <= z->U - 2; u++)
		if (!(sharded_only && z->persist[u]) && unit_len(z, u) > n)
			n = unit_len(z, u);
	return n;
}

/* ---- timed MPI ---------------------------------------------------------------- */

static void count(Zero *z, int u, double times)
{
	z->st.bytes += times * 4.0 * (double)(unit_len(z, u) - piece_len(z, u));
	z->st.collectives++;
}

static void wait_req(Zero *z, MPI_Request *r)
{
	if (*r == MPI_REQUEST_NULL)
		return;
	double t0 = MPI_Wtime();
	MPI_Wait(r, MPI_STATUS_IGNORE);
	z->st.wait_s += MPI_Wtime() - t0;
}

/* Moves a finished gradient reduction's result to where the optimizer reads
 * it: stage 1 reduces in place in the full gradient, whose piece lands at the
 * unit's start; stages 2 and 3 add it into the gradient shard (micro-batches
 * accumulate there), except the first reduction since the update, which
 * issue_reduce aimed at the shard itself. */
static void finish_grad(Zero *z, int u)
{
	if (!z->gpending[u])
		return;
	wait_req(z, &z->greq[u]);
	z->gpending[u] = 0;
	size_t b = z->m->unit_begin[u], p = piece_begin(z, u), n = piece_len(z, u);
	if (z->stage == 1 && p != b)
		memmove(z->m->grads + p, z->m->grads + b, n * sizeof(float));
	if (z->stage >= 2) {
		const float *src = z->gbuf[buf_of(z, u)];
		float *dst = z->shard_g + z->g_off[u];
		const long len = (long)n;
		if (z->g_fresh[u]) { /* the result is in the shard already */
			z->g_fresh[u] = 0;
		} else {
#pragma omp parallel for schedule(static) if (len > 65536)
			for (long i = 0; i < len; i++)
				dst[i] += src[i];
		}
	}
}

/* memset in parallel: the gradient buffers are as large as a layer. */
static void zero_floats(float *x, size_t n)
{
	const long chunks = (long)((n + 65535) / 65536);
#pragma omp parallel for schedule(static) if (chunks > 1)
	for (long c = 0; c < chunks; c++) {
		size_t lo = (size_t)c * 65536, hi = lo + 65536 < n ? lo + 65536 : n;
		memset(x + lo, 0, (hi - lo) * sizeof(float));
	}
}

static void issue_reduce(Zero *z, int u)
{
	double t0 = MPI_Wtime();
	int *cnt = z->counts + (size_t)u * z->N;
	size_t len = unit_len(z, u);
	if (z->stage == 0) {
		MPI_Iallreduce(MPI_IN_PLACE, z->m->grads + z->m->unit_begin[u], (int)len,
		               MPI_FLOAT, MPI_SUM, z->comm, &z->greq[u]);
		count(z, u, 2.0);
	} else if (z->stage == 1 || !z->g_fresh[u]) {
		/* In place: the whole unit is the input, my piece comes back at
		 * the start of the buffer (finish_grad moves or adds it). */
		float *buf = z->stage == 1 ? z->m->grads + z->m->unit_begin[u]
		                           : z->gbuf[buf_of(z, u)];
		MPI_Ireduce_scatter(MPI_IN_PLACE, buf, cnt, MPI_FLOAT, MPI_SUM, z->comm,
		                    &z->greq[u]);
		count(z, u, 1.0);
	} else {
		/* The first micro-batch since the update: my piece goes straight
		 * into the gradient shard. */
		MPI_Ireduce_scatter(z->gbuf[buf_of(z, u)], z->shard_g + z->g_off[u], cnt,
		                    MPI_FLOAT, MPI_SUM, z->comm, &z->greq[u]);
		count(z, u, 1.0);
	}
	z->gpending[u] = 1;
	z->st.wait_s += MPI_Wtime() - t0;
	if (!z->overlap)
		finish_grad(z, u);
}

/* All-gathers unit u's pieces into dst. src NULL: in place (my piece is
 * already at its place in dst). */
static void issue_gather(Zero *z, int u, const float *src, float *dst)
{
	double t0 = MPI_Wtime();
	int *cnt = z->counts + (size_t)u * z->N, *dsp = z->displs + (size_t)u * z->N;
	if (src)
		MPI_Iallgatherv(src, cnt[z->rank], MPI_FLOAT, dst, cnt, dsp, MPI_FLOAT,
		                z->comm, &z->wreq[u]);
	else
		MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, dst, cnt, dsp,
		                MPI_FLOAT, z->comm, &z->wreq[u]);
	count(z, u, 1.0);
	z->st.wait_s += MPI_Wtime() - t0;
	if (!z->overlap)
		wait_req(z, &z->wreq[u]);
}

/* ---- stage 3 gathers ------------------------------------------------------------ */

/* Starts gathering sharded unit u into its buffer, evicting the layer that
 * held the slot before, and points the model's weights at it. */
static void fetch(Zero *z, int u)
{
	int b = buf_of(z, u);
	if (b >= BUF_SLOT) {
		int *occ = &z->wslot_unit[b - BUF_SLOT];
		if (*occ >= 0 && *occ != u) {
			wait_req(z, &z->wreq[*occ]);
			z->valid[*occ] = 0;
		}
		*occ = u;
	}
	model_bind_unit(z->m, u, z->wbuf[b], NULL);
	/* The buffer gets new weights: a bf16 copy of the old ones is stale. */
	gemm_forget(z->wbuf[b], z->m->unit_end[u] - z->m->unit_begin[u]);
	issue_gather(z, u, z->shard_w + z->w_off[u], z->wbuf[b]);
	z->valid[u] = 1;
}

/* The unit the same pass reads after u, or -1: forward runs 0, 1..L, L+1;
 * backward L+1, L..1 (the embeddings' backward reads no weights). */
static int next_unit(const Zero *z, int u, int pass)
{
	if (pass == 0)
		return u + 1 < z->U ? u + 1 : -1;
	if (u == 0)
		return -1; /* lm_head of a tied model: the layers follow */
	if (u == z->U - 1)
		return z->U - 2 >= 1 ? z->U - 2 : -1;
	return u - 1 >= 1 ? u - 1 : -1;
}

static void hook_weights(void *ctx, int u, int pass)
{
	Zero *z = ctx;
	if (z->stage < 3 || z->persist[u]) {
		wait_req(z, &z->wreq[u]); /* the gather after the last update */
	} else {
		if (!z->valid[u])
			fetch(z, u);
		wait_req(z, &z->wreq[u]);
	}
	if (z->stage < 3) {
		z->last_u = u;
		z->last_pass = pass;
		return;
	}
	/* Prefetch the next unit of this pass while u computes. In the forward
	 * of a tied model unit 0 comes back for lm_head after L+1; prefetching
	 * unit 1 then would evict a layer the backward reads first. */
	int nx = next_unit(z, u, pass);
	int tied = z->m->w.lm_head == z->m->w.wte;
	if (tied && pass == 0 && u == 0 && z->last_pass == 0 && z->last_u == z->U - 1)
		nx = -1;
	z->last_u = u;
	z->last_pass = pass;
	if (nx >= 0 && !z->persist[nx] && !z->valid[nx])
		fetch(z, nx);
}

/* ---- gradient buckets ----------------------------------------------------------- */

static void hook_grads(void *ctx, int u)
{
	Zero *z = ctx;
	if (z->stage < 2)
		return;
	int b = buf_of(z, u);
	if (b >= BUF_SLOT) {
		int *occ = &z->gslot_unit[b - BUF_SLOT];
		if (*occ >= 0)
			finish_grad(z, *occ);
		*occ = u;
	} else {
		finish_grad(z, u);
	}
	zero_floats(z->gbuf[b], unit_len(z, u));
	model_bind_unit(z->m, u, NULL, z->gbuf[b]);
}

static void hook_grads_done(void *ctx, int u)
{
	Zero *z = ctx;
	if (z->reduce_now)
		issue_reduce(z, u);
}

static void hook_poll(void *ctx)
{
	Zero *z = ctx;
	double t0 = MPI_Wtime();
	int flag;
	MPI_Testall(z->U, z->greq, &flag, MPI_STATUSES_IGNORE);
	MPI_Testall(z->U, z->wreq, &flag, MPI_STATUSES_IGNORE);
	z->st.wait_s += MPI_Wtime() - t0;
}

/* ---- set-up --------------------------------------------------------------------- */

unsigned zero_model_flags(int stage)
{
	if (stage >= 3)
		return MODEL_NO_PARAMS | MODEL_NO_GRADS;
	return stage == 2 ? MODEL_NO_GRADS : 0;
}

static float *alloc_floats(size_t n, double *bytes)
{
	*bytes += 4.0 * (double)n;
	return trl_alloc(n * sizeof(float));
}

static int init(Zero *z, Model *m, MPI_Comm comm, int stage, long persistence_threshold,
                int overlap, const float *full, unsigned long long seed, double beta1,
                double beta2, double eps, double weight_decay, int decay_embeddings,
                int frozen, TrlErr *err)
{
	memset(z, 0, sizeof *z);
	z->stage = stage;
	z->frozen = frozen;
	z->m = m;
	z->comm = comm;
	z->overlap = overlap;
	z->U = m->n_units;
	MPI_Comm_size(comm, &z->N);
	MPI_Comm_rank(comm, &z->rank);
	int U = z->U, N = z->N, rc = TRL_OK;
	size_t total = m->table.total;
	for (int u = 0; u < U; u++)
		if (m->unit_end[u] - m->unit_begin[u] > (size_t)INT_MAX)
			return trl_errf(err, TRL_EUNSUPPORTED,
			                "zero_stage %d: unit %d of the model has %zu "
			                "parameters, more than one MPI message can "
			                "carry (%d)",
			                stage, u, m->unit_end[u] - m->unit_begin[u],
			                INT_MAX);
	z->cut = calloc((size_t)U * (N + 1), sizeof *z->cut);
	z->w_off = calloc((size_t)U, sizeof *z->w_off);
	z->g_off = calloc((size_t)U, sizeof *z->g_off);
	z->persist = calloc((size_t)U, sizeof *z->persist);
	z->whole = calloc((size_t)U, sizeof *z->whole);
	z->valid = calloc((size_t)U, sizeof *z->valid);
	z->wreq = malloc((size_t)U * sizeof *z->wreq);
	z->greq = malloc((size_t)U * sizeof *z->greq);
	for (int u = 0; u < U && z->wreq && z->greq; u++)
		z->wreq[u] = z->greq[u] = MPI_REQUEST_NULL;
	z->gpending = calloc((size_t)U, sizeof *z->gpending);
	z->g_fresh = calloc((size_t)U, sizeof *z->g_fresh);
	z->counts = calloc((size_t)U * N, sizeof *z->counts);
	z->displs = calloc((size_t)U * N, sizeof *z->displs);
	z->opt = calloc((size_t)U, sizeof *z->opt);
	if (!z->cut || !z->w_off || !z->g_off || !z->persist || !z->whole || !z->valid ||
	    !z->wreq || !z->greq || !z->gpending || !z->g_fresh || !z->counts ||
	    !z->displs || !z->opt)
		goto nomem;
	z->wslot_unit[0] = z->wslot_unit[1] = -1;
	for (int u = 0; u < U; u++)
		z->g_fresh[u] = 1;
	z->gslot_unit[0] = z->gslot_unit[1] = -1;
	for (int u = 0; u < U; u++) {
		z->wreq[u] = z->greq[u] = MPI_REQUEST_NULL;
		size_t *c = cut_row(z, u);
		cut_unit(m->unit_begin[u], m->unit_end[u], N, c);
		for (int r = 0; r < N; r++) {
			z->counts[(size_t)u * N + r] = (int)(c[r + 1] - c[r]);
			z->displs[(size_t)u * N + r] = (int)(c[r] - c[0]);
		}
		z->persist[u] =
		    stage == 3 && (long)unit_len(z, u) < persistence_threshold;
		z->g_off[u] = z->shard_g_n;
		z->shard_g_n += piece_len(z, u);
		if (stage == 3 && !z->persist[u]) {
			z->w_off[u] = z->shard_w_n;
			z->shard_w_n += piece_len(z, u);
		}
	}

	/* Model states: where the parameters and gradients live. */
	if (stage < 3) {
		z->mem.params = 4.0 * (double)total;
	} else {
		z->shard_w = alloc_floats(z->shard_w_n, &z->mem.params);
		if (!z->shard_w)
			goto nomem;
		for (int u = 0; u < U; u++) {
			if (!z->persist[u])
				continue;
			z->whole[u] = alloc_floats(unit_len(z, u), &z->mem.params);
			if (!z->whole[u])
				goto nomem;
			model_bind_unit(m, u, z->whole[u], NULL);
		}
		size_t lens[4];
		buffer_lens(unit_len(z, 0), unit_len(z, U - 1), longest_layer(z, 1),
		            U - 2, persistence_threshold, lens);
		for (int b = 0; b < 4; b++)
			if (lens[b] &&
			    !(z->wbuf[b] = alloc_floats(lens[b], &z->mem.work)))
				goto nomem;
	}
	if (frozen) {
		/* Forward only: no gradients, no optimizer. */
	} else if (stage < 2) {
		z->mem.grads = 4.0 * (double)total;
	} else {
		z->shard_g = alloc_floats(z->shard_g_n, &z->mem.grads);
		size_t lens[4];
		buffer_lens(unit_len(z, 0), unit_len(z, U - 1), longest_layer(z, 0),
		            U - 2, 0, lens);
		if (!z->shard_g)
			goto nomem;
		for (int b = 0; b < 4; b++)
			if (lens[b] &&
			    !(z->gbuf[b] = alloc_floats(lens[b], &z->mem.work)))
				goto nomem;
		/* Until a backward binds them, gradients point at the first
		 * buffers (never written before hook_grads zeroes them). */
		for (int u = 0; u < U; u++)
			model_bind_unit(m, u, NULL, z->gbuf[buf_of(z, u)]);
	}

	/* Optimizer: the whole slab at stage 0, my pieces otherwise. */
	for (int u = 0; u < U && !rc && !frozen; u++) {
		size_t b = stage == 0 ? m->unit_begin[u] : piece_begin(z, u);
		size_t e = stage == 0 ? m->unit_end[u] : b + piece_len(z, u);
		rc = adamw_init(&z->opt[u], &m->table, b, e, beta1, beta2, eps,
		                weight_decay, decay_embeddings, err);
		z->mem.optim += 8.0 * (double)(e - b);
	}
	if (rc) {
		zero_free(z);
		return rc;
	}

	/* Stage 3 weights: my pieces (or whole units) from the full slab given,
	 * else from the seeded initialisation, range by range. */
	for (int u = 0; u < U && stage == 3; u++) {
		size_t b = z->persist[u] ? m->unit_begin[u] : piece_begin(z, u);
		size_t n = z->persist[u] ? unit_len(z, u) : piece_len(z, u);
		float *dst = z->persist[u] ? z->whole[u] : z->shard_w + z->w_off[u];
		if (full)
			memcpy(dst, full + b, n * sizeof(float));
		else
			model_init_weights_range(m, seed, dst, b, b + n);
	}
	/* Bind every sharded layer to a slot so no pointer is left unbound. */
	for (int u = 1; stage == 3 && u <= U - 2; u++)
		if (!z->persist[u])
			model_bind_unit(m, u, z->wbuf[buf_of(z, u)], NULL);
	if (stage == 3) {
		if (!z->persist[0])
			model_bind_unit(m, 0, z->wbuf[BUF_HEAD], NULL);
		if (!z->persist[U - 1])
			model_bind_unit(m, U - 1, z->wbuf[BUF_TAIL], NULL);
	}
	/* A frozen model's backward (a LoRA base) reads weights but makes no
	 * gradients. */
	z->hooks = (ModelHooks){z,
	                        hook_weights,
	                        NULL,
	                        frozen ? NULL : hook_grads,
	                        frozen ? NULL : hook_grads_done,
	                        hook_poll};
	m->hooks = &z->hooks;
	z->reduce_now = 1;
	return TRL_OK;
nomem:
	zero_free(z);
	return trl_errf(err, TRL_ENOMEM,
	                "zero_stage %d: out of memory for this rank's shard of %zu "
	                "parameters over %d ranks; use more ranks or a higher stage",
	                stage, total, N);
}

int zero_init(Zero *z, Model *m, MPI_Comm comm, int stage, long persistence_threshold,
              int overlap, const float *full, unsigned long long seed, double beta1,
              double beta2, double eps, double weight_decay, int decay_embeddings,
              TrlErr *err)
{
	return init(z, m, comm, stage, persistence_threshold, overlap, full, seed, beta1,
	            beta2, eps, weight_decay, decay_embeddings, 0, err);
}

int zero_init_frozen(Zero *z, Model *m, MPI_Comm comm, long persistence_threshold,
                     int overlap, const float *full, unsigned long long seed, TrlErr *err)
{
	return init(z, m, comm, 3, persistence_threshold, overlap, full, seed, 0.9, 0.999,
	            1e-8, 0.0, 0, 1, err);
}

void zero_free(Zero *z)
{
	/* Collectives still in flight read and write the buffers freed below;
	 * every rank started the same ones, so every rank can wait for them. */
	for (int u = 0; z->wreq && z->greq && u < z->U; u++) {
		if (z->wreq[u] != MPI_REQUEST_NULL)
			MPI_Wait(&z->wreq[u], MPI_STATUS_IGNORE);
		if (z->greq[u] != MPI_REQUEST_NULL)
			MPI_Wait(&z->greq[u], MPI_STATUS_IGNORE);
	}
	if (z->m && z->m->hooks == &z->hooks)
		z->m->hooks = NULL;
	for (int u = 0; z->opt && u < z->U; u++)
		adamw_free(&z->opt[u]);
	for (int u = 0; z->whole && u < z->U; u++)
		trl_free(z->whole[u]);
	for (int b = 0; b < 4; b++) {
		trl_free(z->wbuf[b]);
		trl_free(z->gbuf[b]);
	}
	trl_free(z->shard_w);
	trl_free(z->shard_g);
	free(z->cut);
	free(z->w_off);
	free(z->g_off);
	free(z->persist);
	free(z->whole);
	free(z->valid);
	free(z->wreq);
	free(z->greq);
	free(z->gpending);
	free(z->g_fresh);
	free(z->counts);
	free(z->displs);
	free(z->opt);
	memset(z, 0, sizeof *z);
}

/* ---- the step ------------------------------------------------------------------- */

void zero_begin_micro(Zero *z, int last)
{
	z->reduce_now = z->stage >= 2 || last;
}

void zero_step(Zero *z, double lr, double max_grad_norm, double *gnorm)
{
	Model *m = z->m;
	size_t total = m->table.total;
	for (int u = 0; u < z->U; u++)
		finish_grad(z, u);

	/* The global gradient norm: stage 0 holds the whole reduced gradient on
	 * every rank; otherwise each rank sums the squares of its pieces. */
	double ss = 0.0;
	if (z->stage == 0) {
		ss = grad_sumsq(m->grads, total);
	} else {
		for (int u = 0; u < z->U; u++)
			ss += z->stage == 1
			          ? grad_sumsq(m->grads + piece_begin(z, u),
			                       piece_len(z, u))
			          : grad_sumsq(z->shard_g + z->g_off[u], piece_len(z, u));
		double t0 = MPI_Wtime();
		MPI_Allreduce(MPI_IN_PLACE, &ss, 1, MPI_DOUBLE, MPI_SUM, z->comm);
		z->st.wait_s += MPI_Wtime() - t0;
	}
	*gnorm = sqrt(ss);
	float clip = max_grad_norm > 0 && *gnorm > max_grad_norm
	                 ? (float)(max_grad_norm / (*gnorm + 1e-6))
	                 : 0.0f;

	for (int u = 0; u < z->U; u++) {
		size_t b = m->unit_begin[u], p = piece_begin(z, u);
		size_t n = z->stage == 0 ? unit_len(z, u) : piece_len(z, u);
		float *w, *g;
		if (z->stage == 0) {
			w = m->params + b;
			g = m->grads + b;
		} else if (z->stage < 3) {
			w = m->params + p;
			g = z->stage == 1 ? m->grads + p : z->shard_g + z->g_off[u];
		} else {
			w = z->persist[u] ? z->whole[u] + (p - b)
			                  : z->shard_w + z->w_off[u];
			g = z->shard_g + z->g_off[u];
		}
		if (clip > 0.0f)
			grad_scale(g, n, clip);
		adamw_step_local(&z->opt[u], w, g, lr);
		if (z->stage == 1 || z->stage == 2)
			issue_gather(z, u, NULL, m->params + b);
		else if (z->stage == 3 && z->persist[u])
			issue_gather(z, u, NULL, z->whole[u]);
		else if (z->stage == 3)
			z->valid[u] = 0;
	}
	/* Stages 2 and 3 overwrite the shard with the next reduction instead
	 * of clearing it here. */
	if (z->stage < 2)
		zero_floats(m->grads, total);
	for (int u = 0; u < z->U; u++)
		z->g_fresh[u] = 1;
	gemm_forget_all(); /* the weights moved */
}

void zero_flush(Zero *z)
{
	for (int u = 0; u < z->U; u++) {
		wait_req(z, &z->wreq[u]);
		finish_grad(z, u);
	}
}

void zero_gather_full(Zero *z, float *dst, int root)
{
	Model *m = z->m;
	zero_flush(z);
	if (z->stage < 3) {
		if (z->rank == root)
			memcpy(dst, m->params, m->table.total * sizeof(float));
		return;
	}
	for (int u = 0; u < z->U; u++) {
		size_t b = m->unit_begin[u];
		if (z->persist[u]) {
			if (z->rank == root)
				memcpy(dst + b, z->whole[u],
				       unit_len(z, u) * sizeof(float));
			continue;
		}
		int *cnt = z->counts + (size_t)u * z->N,
		    *dsp = z->displs + (size_t)u * z->N;
		MPI_Gatherv(z->shard_w + z->w_off[u], cnt[z->rank], MPI_FLOAT,
		            z->rank == root ? dst + b : NULL, cnt, dsp, MPI_FLOAT, root,
		            z->comm);
	}
}

/* ---- checkpoints ---------------------------------------------------------------- */

float *zero_region(Zero *z, int u, int which, int owned, size_t *b, size_t *e)
{
	size_t ub = z->m->unit_begin[u], pb = piece_begin(z, u);
	if (which != ZERO_PARAMS) {
		AdamW *o = &z->opt[u];
		*b = owned ? pb : o->begin;
		*e = owned ? pb + piece_len(z, u) : o->end;
		return (which == ZERO_EXP_AVG ? o->m : o->v) + (*b - o->begin);
	}
	int whole = z->stage < 3 || z->persist[u];
	*b = owned || !whole ? pb : ub;
	*e = owned || !whole ? pb + piece_len(z, u) : z->m->unit_end[u];
	if (z->stage < 3)
		return z->m->params + *b;
	return whole ? z->whole[u] + (*b - ub) : z->shard_w + z->w_off[u];
}

void zero_loaded(Zero *z, int with_optim, long adam_step)
{
	for (int u = 0; u < z->U; u++) {
		int *cnt = z->counts + (size_t)u * z->N,
		    *dsp = z->displs + (size_t)u * z->N;
		/* What the stage keeps whole, decided by the stage alone: every
		 * rank makes the same calls. */
		for (int which = 0; which < 3 && z->N > 1; which++) {
			int whole = which == ZERO_PARAMS ? z->stage < 3 || z->persist[u]
			                                 : with_optim && z->stage == 0;
			size_t b, e;
			float *p = zero_region(z, u, which, 0, &b, &e);
			if (whole)
				MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, p, cnt,
				               dsp, MPI_FLOAT, z->comm);
		}
		z->opt[u].step = adam_step;
		z->valid[u] = 0;
	}
	z->wslot_unit[0] = z->wslot_unit[1] = -1;
}

/* ---- the plan for validate ------------------------------------------------------ */

static void estimate(const ParamTable *t, int stage, int N, long persistence_threshold,
                     int ga, int frozen, ZeroMem *mem, double *bytes_per_step);

void zero_estimate(const ParamTable *t, int stage, int N, long persistence_threshold,
                   int ga, ZeroMem *mem, double *bytes_per_step)
{
	estimate(t, stage, N, persistence_threshold, ga, 0, mem, bytes_per_step);
}

void zero_estimate_frozen(const ParamTable *t, int N, long persistence_threshold, int ga,
                          ZeroMem *mem, double *bytes_per_step)
{
	estimate(t, 3, N, persistence_threshold, ga, 1, mem, bytes_per_step);
}

static void estimate(const ParamTable *t, int stage, int N, long persistence_threshold,
                     int ga, int frozen, ZeroMem *mem, double *bytes_per_step)
{
	int U = params_units(t, NULL, NULL), L = U - 2;
	size_t *b = calloc((size_t)U, sizeof *b), *e = calloc((size_t)U, sizeof *e);
	size_t *c = calloc((size_t)N + 1, sizeof *c);
	memset(mem, 0, sizeof *mem);
	*bytes_per_step = 0.0;
	if (!b || !e || !c)
		goto out;
	params_units(t, b, e);
	/* Memory: rank 0 holds the largest piece of every unit. Bytes: a rank
	 * sends what it does not own, so the rank with the smallest pieces (the
	 * last ones when N does not divide a unit) sends the most. */
	double *rs = calloc((size_t)N, sizeof *rs),
	       *gathered = calloc((size_t)N, sizeof *rs);
	if (!rs || !gathered) {
		free(rs);
		free(gathered);
		goto out;
	}
	for (int u = 0; u < U; u++) {
		double len = (double)(e[u] - b[u]);
		cut_unit(b[u], e[u], N, c);
		double mine = (double)(c[1] - c[0]);
		int persist = stage == 3 && len < (double)persistence_threshold;
		int layer = u >= 1 && u <= L;
		mem->optim += 8.0 * (stage == 0 ? len : mine);
		mem->params += 4.0 * (stage < 3 || persist ? len : mine);
		mem->grads += 4.0 * (stage < 2 ? len : mine);
		/* Stage 3 gathers a layer L + (2 ga - 1)(L - 2) times per L
		 * layers: all of them in the first forward after an update, then
		 * all but the two still held in the buffers in each later pass. */
		double times = 1.0;
		if (stage == 3 && layer && !persist)
			times = (double)(L + (2 * ga - 1) * (L > 2 ? L - 2 : 0)) / L;
		for (int r = 0; r < N; r++) {
			double other = len - (double)(c[r + 1] - c[r]);
			rs[r] += 4.0 * other;
			gathered[r] += times * 4.0 * other;
		}
	}
	for (int r = 0; r < N; r++) {
		double sent = frozen       ? gathered[r]
		              : stage == 0 ? 2.0 * rs[r]
		              : stage == 1 ? rs[r] + gathered[r]
		                           : (double)ga * rs[r] + gathered[r];
		if (sent > *bytes_per_step)
			*bytes_per_step = sent;
	}
	free(rs);
	free(gathered);
	size_t glen[4], wlen[4], lay = 0, lay_sharded = 0;
	for (int u = 1; u <= L; u++) {
		size_t n = e[u] - b[u];
		lay = n > lay ? n : lay;
		if ((long)n >= persistence_threshold && n > lay_sharded)
			lay_sharded = n;
	}
	buffer_lens(e[0] - b[0], e[U - 1] - b[U - 1], lay, L, 0, glen);
	buffer_lens(e[0] - b[0], e[U - 1] - b[U - 1], lay_sharded, L,
	            persistence_threshold, wlen);
	for (int k = 0; k < 4; k++) {
		mem->work += 4.0 * ((stage >= 2 && !frozen ? (double)glen[k] : 0.0) +
		                    (stage == 3 ? (double)wlen[k] : 0.0));
		mem->work_params += stage == 3 ? 4.0 * (double)wlen[k] : 0.0;
	}
	if (frozen)
		mem->grads = mem->optim = 0.0;
out:
	free(b);
	free(e);
	free(c);
}
