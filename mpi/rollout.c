/* rollout.c - generation ranks: the rank split, the generators' loop, the
 * packed weight push and the rollout messages (see rollout.h). */
#include "rollout.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer.h"

enum { TAG_FIN = 30000 };

/* Round message header, in 4-byte slots before the prompts. */
enum { H_ROUND = 0, H_VERSION = 2, H_STOP = 4, H_P = 6, H_SLOTS = 8 };

static void put64(float *slot, long v)
{
	int64_t x = v;
	memcpy(slot, &x, sizeof x);
}

static long get64(const float *slot)
{
	int64_t x;
	memcpy(&x, slot, sizeof x);
	return (long)x;
}

int rollout_link_init(RolloutLink *l, MPI_Comm world, int K, TrlErr *err)
{
	memset(l, 0, sizeof *l);
	int rank, size;
	MPI_Comm_rank(world, &rank);
	MPI_Comm_size(world, &size);
	l->K = K;
	l->trainers = size - K;
	l->sync = l->trainers_comm = l->job = MPI_COMM_NULL;
	l->out_req = MPI_REQUEST_NULL;
	if (K > 0 && l->trainers < 1)
		return trl_errf(
		    err, TRL_EINVAL,
		    "generation_ranks: %d leaves no trainer among the %d ranks "
		    "of the job: lower it below %d",
		    K, size, size);
	l->is_generator = rank >= l->trainers;
	l->gen_index = l->is_generator ? rank - l->trainers : -1;
	MPI_Comm_dup(world, &l->job);
	MPI_Comm_split(world, l->is_generator ? 1 : 0, rank, &l->trainers_comm);
	if (l->is_generator) {
		MPI_Comm_free(&l->trainers_comm);
		l->trainers_comm = MPI_COMM_NULL;
	}
	if (K > 0) {
		int in = rank == 0 || l->is_generator;
		MPI_Comm_split(world, in ? 0 : MPI_UNDEFINED, rank, &l->sync);
	}
	return TRL_OK;
}

void rollout_link_free(RolloutLink *l)
{
	if (l->out_req != MPI_REQUEST_NULL)
		MPI_Wait(&l->out_req, MPI_STATUS_IGNORE);
	if (l->sync != MPI_COMM_NULL)
		MPI_Comm_free(&l->sync);
	if (l->trainers_comm != MPI_COMM_NULL)
		MPI_Comm_free(&l->trainers_comm);
	if (l->job != MPI_COMM_NULL)
		MPI_Comm_free(&l->job);
	free(l->out);
	memset(l, 0, sizeof *l);
}

int rollout_round_has_weights(const RolloutPlan *p, long round)
{
	long m = round - p->start_round;
	return m == 0 || m > p->staleness;
}

static size_t round_floats(const RolloutPlan *p, int with_weights, size_t n_weights)
{
	size_t P = (size_t)p->chunks * p->rows / p->group;
	return H_SLOTS + P + P * p->max_prompt + (with_weights ? n_weights : 0);
}

/* ---- chunks ------------------------------------------------------------------ */

enum { C_HEAD = 32, C_MSG = 512 };

int rollout_chunk_alloc(RolloutChunk *c, const RolloutPlan *p, TrlErr *err)
{
	memset(c, 0, sizeof *c);
	size_t R = (size_t)p->rows, L = (size_t)p->max_new;
	c->bytes = C_HEAD + C_MSG + 2 * R * 4 + 2 * R * L * 4;
	c->buf = calloc(1, c->bytes);
	if (!c->buf)
		return trl_errf(err, TRL_ENOMEM, "out of memory for a rollout buffer");
	char *b = (char *)c->buf + C_HEAD + C_MSG;
	c->n = (int *)b;
	c->finish = c->n + R;
	c->ids = (int32_t *)(c->finish + R);
	c->logprobs = (float *)(c->ids + R * L);
	c->rows = p->rows;
	return TRL_OK;
}

void rollout_chunk_free(RolloutChunk *c)
{
	free(c->buf);
	memset(c, 0, sizeof *c);
}

static void chunk_pack_head(RolloutChunk *c)
{
	int64_t h[4] = {c->status, c->round, c->version, c->rows};
	memcpy(c->buf, h, sizeof h);
	memcpy((char *)c->buf + C_HEAD, c->msg, C_MSG);
}

static void chunk_unpack_head(RolloutChunk *c)
{
	int64_t h[4];
	memcpy(h, c->buf, sizeof h);
	c->status = (int)h[0];
	c->round = (long)h[1];
	c->version = (long)h[2];
	c->rows = (int)h[3];
	memcpy(c->msg, (char *)c->buf + C_HEAD, C_MSG);
	c->msg[C_MSG - 1] = 0;
}

static uint64_t mix64(uint64_t x)
{
	x += 0x9E3779B97F4A7C15ull;
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
	return x ^ (x >> 31);
}

int rollout_generate_chunk(Generator *g, const Tokenizer *tok, const RolloutPlan *p,
                           long round, int k, const int32_t *prompts, const int *plen,
                           RolloutChunk *c, TrlErr *err)
{
	int R = p->rows;
	const int32_t *rows_ids[R > 0 ? R : 1];
	int lens[R > 0 ? R : 1];
	for (int i = 0; i < R; i++) {
		long q = ((long)k * R + i) / p->group;
		rows_ids[i] = prompts + (size_t)q * p->max_prompt;
		lens[i] = plen[q];
	}
	GenConfig gc;
	gen_config_defaults(&gc);
	gc.max_new_tokens = p->max_new;
	gc.temperature = p->temperature;
	gc.top_p = p->top_p;
	gc.top_k = p->top_k;
	gc.min_p = p->min_p;
	gc.repetition_penalty = p->repetition_penalty;
	gc.eos_id = p->eos_id;
	gc.seed =
	    mix64(p->seed ^ mix64((uint64_t)round * 0x100000001B3ull + (uint64_t)k));
	GenOutput out[R > 0 ? R : 1];
	memset(out, 0, sizeof out);
	int rc = generate(g, tok, &gc, rows_ids, lens, R, out, err);
	c->round = round;
	c->rows = R;
	c->status = rc;
	c->msg[0] = 0;
	size_t L = (size_t)p->max_new;
	for (int i = 0; i < R && !rc; i++) {
		int n = out[i].n < p->max_new ? out[i].n : p->max_new;
		c->n[i] = n;
		c->finish[i] = out[i].finish;
		memcpy(c->ids + i * L, out[i].ids, (size_t)n * sizeof(int32_t));
		memcpy(c->logprobs + i * L, out[i].logprobs, (size_t)n * sizeof(float));
	}
	if (rc)
		snprintf(c->msg, sizeof c->msg, "%.500s", err->msg);
	gen_output_free(out, R);
	return rc;
}

/* ---- trainers ---------------------------------------------------------------- */

void rollout_send_plan(RolloutLink *l, const RolloutPlan *p)
{
	l->plan = *p;
	if (l->sync != MPI_COMM_NULL)
		MPI_Bcast(&l->plan, (int)sizeof l->plan, MPI_BYTE, 0, l->sync);
}

static int ensure_out(RolloutLink *l, size_t n)
{
	if (n <= l->out_cap)
		return 0;
	float *b = realloc(l->out, n * sizeof(float));
	if (!b)
		return -1;
	l->out = b;
	l->out_cap = n;
	return 0;
}

/* MPI counts are int: a model above 2^31 floats goes as 2^20-float blocks. */
static MPI_Datatype block_type(void)
{
	static MPI_Datatype t = MPI_DATATYPE_NULL;
	if (t == MPI_DATATYPE_NULL) {
		MPI_Type_contiguous(1 << 20, MPI_FLOAT, &t);
		MPI_Type_commit(&t);
	}
	return t;
}

static void ibcast_floats(float *buf, size_t n, MPI_Comm comm, MPI_Request *req)
{
	/* Rounded up to whole blocks when large: both sides size the buffer the
	 * same way (round_floats plus slack). */
	if (n < ((size_t)1 << 30))
		MPI_Ibcast(buf, (int)n, MPI_FLOAT, 0, comm, req);
	else
		MPI_Ibcast(buf, (int)((n + (1u << 20) - 1) >> 20), block_type(), 0, comm,
		           req);
}

static size_t padded(size_t n)
{
	return n < ((size_t)1 << 30) ? n : ((n + (1u << 20) - 1) >> 20) << 20;
}

void rollout_send_round(RolloutLink *l, long round, const int32_t *prompts,
                        const int *plen, int P, const float *weights, size_t n_weights,
                        long version)
{
	const RolloutPlan *p = &l->plan;
	double t0 = trl_now();
	if (l->out_req != MPI_REQUEST_NULL)
		MPI_Wait(&l->out_req, MPI_STATUS_IGNORE);
	/* The size follows the round, never the call: a stop message (no
	 * prompts, no weights) takes the place of a round's message whose
	 * receive the generators have posted at that round's size. */
	int ww = rollout_round_has_weights(p, round);
	size_t n = round_floats(p, ww, p->n_weights);
	COMM_ASSERT(!prompts || (weights != NULL) == ww);
	COMM_ASSERT(!weights || n_weights == p->n_weights);
	if (ensure_out(l, padded(n)) != 0) {
		/* Out of memory on trainer 0 mid-run: MPI_Abort is the only way
		 * that cannot strand the generators in their broadcast. */
		fprintf(stderr, "trl-hpc: error: out of memory for the weight push\n");
		MPI_Abort(MPI_COMM_WORLD, 1);
	}
	float *b = l->out;
	memset(b, 0, H_SLOTS * sizeof(float));
	put64(b + H_ROUND, round);
	put64(b + H_VERSION, version);
	put64(b + H_STOP, prompts == NULL);
	put64(b + H_P, P);
	if (prompts) {
		memcpy(b + H_SLOTS, plen, (size_t)P * sizeof(int));
		memcpy(b + H_SLOTS + P, prompts,
		       (size_t)P * p->max_prompt * sizeof(int32_t));
	}
	if (weights)
		memcpy(b + H_SLOTS + P + (size_t)P * p->max_prompt, weights,
		       n_weights * sizeof(float));
	ibcast_floats(b, n, l->sync, &l->out_req);
	l->sent++;
	l->sync_s += trl_now() - t0;
	l->sync_bytes += (double)n * sizeof(float) * l->K;
}

void rollout_recv_chunk(RolloutLink *l, int j, RolloutChunk *c)
{
	int rank;
	MPI_Comm_rank(l->job, &rank);
	int k = j * l->trainers + rank;
	int src = l->trainers + k % l->K;
	MPI_Recv(c->buf, (int)c->bytes, MPI_BYTE, src, j, l->job, MPI_STATUS_IGNORE);
	chunk_unpack_head(c);
}

/* The job's one status, trainers and generators together: the first
 * failure (the most negative code, then the lowest rank) with its message. */
static int job_agree(RolloutLink *l, int rc, TrlErr *err)
{
	int rank;
	MPI_Comm_rank(l->job, &rank);
	struct {
		int code, rank;
	} mine = {rc ? rc : INT_MAX, rank}, first;
	MPI_Allreduce(&mine, &first, 1, MPI_2INT, MPI_MINLOC, l->job);
	if (first.code == INT_MAX)
		return TRL_OK;
	char msg[sizeof err->msg];
	memcpy(msg, err->msg, sizeof msg);
	MPI_Bcast(msg, (int)sizeof msg, MPI_CHAR, first.rank, l->job);
	err->code = first.code;
	memcpy(err->msg, msg, sizeof msg);
	err->msg[sizeof err->msg - 1] = 0;
	return first.code;
}

int rollout_finish(RolloutLink *l, int rc, TrlErr *err)
{
	const RolloutPlan *p = &l->plan;
	int rank;
	MPI_Comm_rank(l->job, &rank);
	if (l->K > 0 && p->status == 0) {
		long expected = p->end_round - p->start_round;
		if (rank == 0 && l->sent < expected)
			rollout_send_round(l, p->start_round + l->sent, NULL, NULL, 0,
			                   NULL, 0, 0);
		if (rank == 0 && l->out_req != MPI_REQUEST_NULL)
			MPI_Wait(&l->out_req, MPI_STATUS_IGNORE);
		/* Drain: chunks a generator sent ahead, then its FIN. */
		RolloutChunk c;
		TrlErr e2;
		if (rollout_chunk_alloc(&c, p, &e2) != 0) {
			fprintf(stderr, "trl-hpc: error: %s\n", e2.msg);
			MPI_Abort(MPI_COMM_WORLD, 1);
		}
		for (int fins = 0; fins < l->K;) {
			MPI_Status st;
			MPI_Recv(c.buf, (int)c.bytes, MPI_BYTE, MPI_ANY_SOURCE,
			         MPI_ANY_TAG, l->job, &st);
			fins += st.MPI_TAG == TAG_FIN;
		}
		rollout_chunk_free(&c);
	}
	/* One status for the whole job: the trainers' (agreed among them), or a
	 * generator's own failure. */
	return job_agree(l, rc, err);
}

/* ---- generators -------------------------------------------------------------- */

static void progress_request(void *ctx)
{
	int done;
	MPI_Test((MPI_Request *)ctx, &done, MPI_STATUS_IGNORE);
}

void rollout_progress(RolloutLink *l)
{
	if (l && l->out_req != MPI_REQUEST_NULL)
		progress_request(&l->out_req);
}

int rollout_serve(const Config *cfg, RolloutLink *l, TrlErr *err)
{
	RolloutPlan *p = &l->plan;
	MPI_Bcast(p, (int)sizeof *p, MPI_BYTE, 0, l->sync);
	if (p->status != 0) {
		/* The trainers failed to set up; their message wins the tie. */
		err->msg[0] = 0;
		return job_agree(l, p->status, err);
	}
	Trainer tr; /* only for the tokenizer loader */
	memset(&tr, 0, sizeof tr);
	tr.cfg = cfg;
	Model m;
	Generator g;
	memset(&m, 0, sizeof m);
	memset(&g, 0, sizeof g);
	/* The message buffers first: without them this rank could not even
	 * answer with an error, so their lack aborts the job. */
	size_t P = (size_t)p->chunks * p->rows / p->group;
	int mine = (p->chunks + l->K - 1 - l->gen_index) / l->K; /* chunks per round */
	int slots = p->staleness + 1, nbuf = slots * (mine > 0 ? mine : 1);
	RolloutChunk *out = calloc((size_t)nbuf, sizeof *out);
	MPI_Request *sreq = malloc((size_t)nbuf * sizeof *sreq);
	int32_t *prompts = malloc(P * p->max_prompt * sizeof(int32_t) + 1);
	int *plen = malloc(P * sizeof(int) + 1);
	int rc = out && sreq && prompts && plen ? TRL_OK : TRL_ENOMEM;
	for (int i = 0; !rc && i < nbuf; i++) {
		rc = rollout_chunk_alloc(&out[i], p, err);
		sreq[i] = MPI_REQUEST_NULL;
	}
	if (rc) {
		fprintf(stderr, "trl-hpc: error: generation rank %d: out of memory\n",
		        l->trainers + l->gen_index);
		MPI_Abort(MPI_COMM_WORLD, 1);
	}
	rc = train_load_tokenizer(&tr, err);
	if (!rc)
		rc = model_init_flags(&m, &p->mc, MODEL_NO_GRADS, err);
	if (!rc)
		rc = generator_init(&g, &m, p->rows, p->max_prompt + p->max_new, err);
	size_t nw = p->n_weights;
	if (!rc && m.table.total != nw)
		rc = trl_errf(err, TRL_EINTERNAL,
		              "the model has %zu parameters here, %zu on the trainers",
		              m.table.total, nw);
	size_t cap = padded(round_floats(p, 1, nw));
	float *in = malloc(cap * sizeof(float));
	if (!in) {
		fprintf(stderr, "trl-hpc: error: generation rank %d: out of memory\n",
		        l->trainers + l->gen_index);
		MPI_Abort(MPI_COMM_WORLD, 1);
	}
	/* A generator that cannot start still takes part in every message and
	 * answers each chunk with its error (see rollout.h). */
	int failed = rc;
	char why[512];
	snprintf(why, sizeof why, "generation rank %d: %.400s",
	         l->trainers + l->gen_index, rc ? err->msg : "");
	long expected = p->end_round - p->start_round;
	MPI_Request req = MPI_REQUEST_NULL;
	long version = -1;
	/* The next message is posted as soon as this one is unpacked, and the
	 * decoding loop tests it between tokens, so the weights of the next
	 * round travel while this one is sampled. */
	g.progress = progress_request;
	g.progress_ctx = &req;
	if (expected > 0)
		ibcast_floats(
		    in, round_floats(p, rollout_round_has_weights(p, p->start_round), nw),
		    l->sync, &req);
	for (long msg = 0; msg < expected; msg++) {
		long round = p->start_round + msg;
		int ww = rollout_round_has_weights(p, round);
		MPI_Wait(&req, MPI_STATUS_IGNORE);
		if (get64(in + H_STOP))
			break;
		if (ww) {
			if (!failed)
				memcpy(m.params, in + H_SLOTS + P + P * p->max_prompt,
				       nw * sizeof(float));
			version = get64(in + H_VERSION);
		}
		if (!failed) {
			memcpy(plen, in + H_SLOTS, P * sizeof(int));
			memcpy(prompts, in + H_SLOTS + P,
			       P * p->max_prompt * sizeof(int32_t));
		}
		if (msg + 1 < expected)
			ibcast_floats(
			    in,
			    round_floats(p, rollout_round_has_weights(p, round + 1), nw),
			    l->sync, &req);
		int slot = (int)(msg % slots);
		for (int i = 0; i < mine; i++) {
			int k = l->gen_index + i * l->K;
			RolloutChunk *c = &out[(size_t)slot * mine + i];
			MPI_Request *r = &sreq[(size_t)slot * mine + i];
			if (*r != MPI_REQUEST_NULL)
				MPI_Wait(r, MPI_STATUS_IGNORE);
			if (!failed &&
			    rollout_generate_chunk(&g, &tr.tok, p, round, k, prompts,
			                           plen, c, err) != 0) {
				failed = c->status;
				snprintf(why, sizeof why, "generation rank %d: %.400s",
				         l->trainers + l->gen_index, err->msg);
			}
			c->version = version;
			if (failed) {
				c->status = failed;
				snprintf(c->msg, sizeof c->msg, "%s", why);
			}
			chunk_pack_head(c);
			int dst = k % l->trainers, j = k / l->trainers;
			MPI_Isend(c->buf, (int)c->bytes, MPI_BYTE, dst, j, l->job, r);
		}
	}
	char fin = 0;
	for (int t = 0; t < l->trainers; t++)
		MPI_Send(&fin, 1, MPI_CHAR, t, TAG_FIN, l->job);
	for (int i = 0; i < nbuf; i++)
		if (sreq[i] != MPI_REQUEST_NULL)
			MPI_Wait(&sreq[i], MPI_STATUS_IGNORE);
	if (failed)
		snprintf(err->msg, sizeof err->msg, "%s", why);
	int agreed = job_agree(l, failed, err);
	for (int i = 0; i < nbuf; i++)
		rollout_chunk_free(&out[i]);
	free(out);
	free(sreq);
	free(in);
	free(prompts);
	free(plen);
	generator_free(&g);
	model_free(&m);
	tokenizer_free(&tr.tok);
	return agreed;
}
