/* zero.h - ZeRO stages 0-3 over the trainers' communicator.
 *
 * The model is cut into units (params_units: embeddings, each layer, final
 * norm and lm_head). Every unit's slab range is split into N near-equal
 * pieces, 16-float aligned; rank r owns piece r of every unit. The cut depends
 * only on the slab offsets and N, never on anything else, so a shard is a set
 * of global ranges and a checkpoint can be cut again for another N.
 *
 *   stage 0  parameters, gradients and AdamW moments replicated; gradients
 *            all-reduced per unit during the last micro-batch's backward.
 *   stage 1  moments sharded: gradients reduce-scattered per unit during the
 *            last micro-batch's backward, each rank updates its pieces, the
 *            new pieces are all-gathered (waited for when next used).
 *   stage 2  gradients sharded too: each unit's gradient is reduced into the
 *            owners' pieces as soon as the backward finishes it, on every
 *            micro-batch, from two rotating layer buffers.
 *   stage 3  parameters sharded too: a unit is all-gathered before it is used
 *            and the next unit is prefetched; layers rotate through two
 *            buffers, the embeddings and the final unit have their own. Units
 *            under stage3_param_persistence_threshold floats stay whole.
 *
 * Collectives are non-blocking and tested between kernels (ModelHooks.poll),
 * so they run while the backward computes. Every rank issues the same
 * collectives in the same order: the order is the model's unit order, which
 * does not depend on the data, so all ranks must run the same number of
 * forward and backward passes (the train loop sees to that).
 *
 * Usage:
 *     Zero z; zero_init(&z, &model, comm, stage, ..., &err);  // after model_init_flags
 *     per micro-batch: zero_begin_micro(&z, last); forward; loss; backward
 *     zero_step(&z, lr, max_grad_norm, &gnorm);  // reduce, clip, AdamW, gather
 *     zero_free(&z);
 */
#ifndef TRL_ZERO_H
#define TRL_ZERO_H

#include <mpi.h>
#include <stddef.h>

#include "model.h"
#include "optim.h"

/* Bytes of model state on one rank. */
typedef struct ZeroMem {
	double params, grads, optim; /* the shards and anything kept whole */
	double work;                 /* gather and reduce buffers (stages 2, 3) */
	double work_params;          /* of work, the stage-3 parameter buffers */
} ZeroMem;

/* Counters since the last zero_stats_reset. Bytes follow the ring model
 * every MPI library approaches for large messages: a rank sends S - p floats
 * of an S-float unit whose piece p it owns for a reduce-scatter or an
 * all-gather, twice that for an all-reduce. */
typedef struct ZeroStats {
	double bytes;  /* bytes sent by this rank */
	double wait_s; /* seconds spent blocked waiting for collectives */
	long collectives;
} ZeroStats;

typedef struct Zero {
	int stage, N, rank, U;
	int frozen; /* zero_init_frozen: forward only */
	int overlap;
	MPI_Comm comm;
	Model *m;
	size_t *cut;    /* (U, N + 1) piece bounds, slab floats: row u is unit u */
	size_t *w_off;  /* (U) stage 3: offset of my piece in shard_w (sharded units) */
	size_t *g_off;  /* (U) stages 2, 3: offset of my piece in shard_g */
	int *persist;   /* (U) stage 3: unit kept whole on every rank */
	float *shard_w; /* stage 3: my pieces of the sharded units */
	float *shard_g; /* stages 2, 3: my pieces of every unit's gradient */
	size_t shard_w_n, shard_g_n;
	float **whole;  /* (U) stage 3: buffer of a unit kept whole, else NULL */
	float *wbuf[4]; /* stage 3: embeddings, final unit, layer slots 0, 1 */
	float *gbuf[4]; /* stages 2, 3: the same four for gradients */
	int *valid;     /* (U) stage 3: the gathered copy is current */
	int wslot_unit[2];
	int last_u, last_pass; /* the previous weights hook call */
	int gslot_unit[2];
	MPI_Request *wreq;    /* (U) a gather of the unit in flight */
	MPI_Request *greq;    /* (U) a reduction of the unit's gradient in flight */
	int *gpending;        /* (U) reduction issued, result not yet moved in place */
	int *g_fresh;         /* (U) stages 2, 3: no reduction landed since the update */
	int *counts, *displs; /* (U, N) MPI counts and displacements per unit */
	AdamW *opt;           /* (U) one optimizer per owned piece */
	int reduce_now;       /* this micro-batch's backward reduces gradients */
	ZeroStats st;
	ZeroMem mem;
	ModelHooks hooks;
} Zero;

/* Sets up stage 0-3 sharding for m, which was made with model_init_flags:
 * flags 0 for stages 0 and 1, MODEL_NO_GRADS for stage 2 and MODEL_NO_PARAMS
 * | MODEL_NO_GRADS for stage 3 (zero_model_flags). For stage 3 the initial
 * weights come from `full` (every rank's full slab, e.g. a loaded model)
 * when it is not NULL, else from model_init_weights_range(seed); for the
 * other stages they are in m->params already. Installs m->hooks. Collective.
 * adam_* and weight-decay arguments as adamw_init. */
int zero_init(Zero *z, Model *m, MPI_Comm comm, int stage, long persistence_threshold,
              int overlap, const float *full, unsigned long long seed, double beta1,
              double beta2, double eps, double weight_decay, int decay_embeddings,
              TrlErr *err);
/* A stage-3 model that only runs forwards (a reference model): its weights
 * sharded and gathered as zero_init's, no gradients and no optimizer state;
 * never call zero_step or a backward on it. Collective. */
int zero_init_frozen(Zero *z, Model *m, MPI_Comm comm, long persistence_threshold,
                     int overlap, const float *full, unsigned long long seed,
                     TrlErr *err);
void zero_free(Zero *z);

/* The model_init_flags flags a stage needs. */
unsigned zero_model_flags(int stage);

/* Before each micro-batch's forward: last is 1 on the last micro-batch of
 * the optimizer step (stages 0 and 1 reduce only then). */
void zero_begin_micro(Zero *z, int last);

/* Ends the optimizer step: waits for the gradient reductions, computes the
 * global gradient norm (returned in *gnorm), clips to max_grad_norm (> 0),
 * applies AdamW with lr to the owned pieces, starts the gathers of the new
 * pieces and zeroes the gradients. Collective. */
void zero_step(Zero *z, double lr, double max_grad_norm, double *gnorm);

/* Waits for every collective in flight (the parameters are then complete
 * wherever this stage keeps them whole). Collective only in that it waits. */
void zero_flush(Zero *z);

/* Stage 3: copies every unit's full parameters into dst (table.total floats)
 * on rank `root`; other ranks pass NULL. Stages 0-2: copies m->params on
 * root. Collective. */
void zero_gather_full(Zero *z, float *dst, int root);

/* Checkpoints: what this rank keeps of unit u. which is ZERO_PARAMS,
 * ZERO_EXP_AVG or ZERO_EXP_AVG_SQ. With owned, only my piece (ranks together
 * hold every float once); otherwise everything the stage keeps here (stage 0
 * whole units of all three, stages 1 and 2 whole units of the parameters,
 * stage 3 whole persistent units). Sets the slab range [*b, *e) and returns a
 * pointer to its first float. Call zero_flush before reading. */
enum { ZERO_PARAMS = 0, ZERO_EXP_AVG = 1, ZERO_EXP_AVG_SQ = 2 };
float *zero_region(Zero *z, int u, int which, int owned, size_t *b, size_t *e);

/* After each rank has filled its owned regions (of the parameters, and of
 * the moments when with_optim) from a checkpoint: all-gathers the rest of what
 * the stage keeps whole, sets every optimizer's step count to adam_step and
 * drops stage 3's gathered copies. Collective. */
void zero_loaded(Zero *z, int with_optim, long adam_step);

/* The plan without running it, for `validate`: per-rank model-state bytes
 * (the largest over ranks) and bytes sent per optimizer step with ga
 * micro-batches, from the table alone. */
void zero_estimate(const ParamTable *t, int stage, int N, long persistence_threshold,
                   int ga, ZeroMem *mem, double *bytes_per_step);
/* The same for a frozen model sharded at stage 3 (zero_init_frozen: a LoRA
 * base, a reference): its shards and gather buffers, and the gathers alone. */
void zero_estimate_frozen(const ParamTable *t, int N, long persistence_threshold, int ga,
                          ZeroMem *mem, double *bytes_per_step);

#endif
