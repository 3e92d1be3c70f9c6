/* rollout.h - the generation ranks of the online methods and the trainers'
 * side of their protocol: the rank layout, the packed weight push and the
 * rollout messages.
 *
 * Layout: with generation_ranks K, world ranks W-K .. W-1 are generators and
 * the others trainers; the trainers get their own communicator (ZeRO runs
 * there), so variable-length decoding never meets a trainer collective.
 *
 * Work: training step s belongs to round s / num_iterations. The completions
 * of a round are numbered c = 0 .. N-1 (prompt c / num_generations) and cut
 * into chunks of per_device_train_batch_size rows; chunk k is micro-batch
 * k / trainers of trainer k % trainers, and generator k % K samples it. Each
 * chunk is generated in one call with its own seed (seed, round, k), so the
 * completions do not depend on who generates them.
 *
 * Messages (one packed MPI_Ibcast from trainer 0 to every generator on the
 * sync communicator): message m asks for round start + m; it carries the
 * round's prompts and, for m == 0 and m > max_staleness, the trainers'
 * current weights with their version (optimizer steps taken). Messages 0 ..
 * max_staleness are sent at the start, message m + max_staleness + 1 when
 * round start + m has been trained: round g is sampled with the weights of
 * round g - max_staleness, so with staleness 1 generation of round g + 1
 * overlaps training on round g, and with 0 the two alternate. A generator's
 * chunks go point to point to their trainer (tag: micro-batch index), with
 * the weight version and the per-token sampling log-probs.
 *
 * End: a generator stops after the last round or on a stop message (a
 * trainer failed or was signalled); it then sends FIN to every trainer, which
 * drains what is left, and all ranks end on one all-reduced status. A
 * generator that fails answers every chunk it owes with its error, so every
 * trainer stops at the same round with the generator's message.
 */
#ifndef TRL_ROLLOUT_H
#define TRL_ROLLOUT_H

#include <mpi.h>
#include <stdint.h>

#include "comm.h"
#include "config.h"
#include "generate.h"
#include "model.h"

/* Everything a generator needs to know, sent once by trainer 0. */
typedef struct RolloutPlan {
	int status;                  /* 0, or the trainers' set-up error code */
	long start_round, end_round; /* rounds [start_round, end_round) */
	int iterations;              /* optimizer steps per round */
	int chunks;              /* per round: trainers * gradient_accumulation_steps */
	int rows;                /* per chunk: per_device_train_batch_size */
	int group;               /* num_generations */
	int max_prompt, max_new; /* tokens */
	int staleness;
	uint64_t seed;
	float temperature, top_p, min_p, repetition_penalty;
	int top_k, eos_id;
	size_t n_weights; /* floats of the parameter slab */
	ModelConfig mc;
} RolloutPlan;

/* A chunk's completions. */
typedef struct RolloutChunk {
	int status; /* 0, or the generator's error code (msg says why) */
	long round, version;
	int rows;
	int *n;          /* (rows) tokens, the ending EOS included */
	int *finish;     /* (rows) TrlGenFinish */
	int32_t *ids;    /* (rows, max_new) */
	float *logprobs; /* (rows, max_new) processed sampling log-probs */
	char msg[512];
	void *buf; /* the packed message the arrays point into */
	size_t bytes;
} RolloutChunk;

typedef struct RolloutLink {
	int K;        /* generator ranks; 0 = colocated */
	int trainers; /* world size - K */
	int is_generator;
	int gen_index; /* 0 .. K-1 on a generator */
	MPI_Comm job;  /* a copy of the world for rollout messages */
	MPI_Comm sync; /* trainer 0 + generators (MPI_COMM_NULL elsewhere) */
	MPI_Comm
	    trainers_comm; /* the trainers' communicator (MPI_COMM_NULL on generators) */
	RolloutPlan plan;
	/* trainer 0: the message in flight */
	float *out;
	size_t out_cap;
	MPI_Request out_req;
	long sent;                 /* messages sent */
	double sync_s, sync_bytes; /* since the last rollout_take_sync */
} RolloutLink;

/* Splits world (collective): K = generation_ranks; fills l. */
int rollout_link_init(RolloutLink *l, MPI_Comm world, int K, TrlErr *err);
void rollout_link_free(RolloutLink *l);

/* Generator ranks: serves rounds until the end or a stop message, then the
 * closing handshake. Returns the job's agreed status; err holds this rank's
 * message when it failed itself. */
int rollout_serve(const Config *cfg, RolloutLink *l, TrlErr *err);

/* Trainers (every trainer calls these at the same points). */
/* Sends the plan (status != 0: the trainers failed and the generators stop). */
void rollout_send_plan(RolloutLink *l, const RolloutPlan *p);
/* Trainer 0 sends message for round `round` with the prompts (P, max_prompt)
 * of lengths plen (P), and when weights is not NULL the full weights
 * (table.total floats) of version `version`. Only trainer 0 calls it; it
 * waits for the previous message first. */
void rollout_send_round(RolloutLink *l, long round, const int32_t *prompts,
                        const int *plen, int P, const float *weights, size_t n_weights,
                        long version);
/* Whether message for round `round` carries weights. */
int rollout_round_has_weights(const RolloutPlan *p, long round);
/* Trainer 0: moves the weight message in flight on (call between kernels). */
void rollout_progress(RolloutLink *l);
/* Receives micro-batch j of the current round (blocking). */
int rollout_chunk_alloc(RolloutChunk *c, const RolloutPlan *p, TrlErr *err);
void rollout_chunk_free(RolloutChunk *c);
void rollout_recv_chunk(RolloutLink *l, int j, RolloutChunk *c);
/* Stops the generators if they still wait for messages, drains, and agrees
 * on the job's status (collective over the whole job). */
int rollout_finish(RolloutLink *l, int rc, TrlErr *err);

/* Generates chunk k of round `round` with model m into c (used by the
 * generators and by colocated trainers alike). prompts (P, max_prompt). */
int rollout_generate_chunk(Generator *g, const Tokenizer *tok, const RolloutPlan *p,
                           long round, int k, const int32_t *prompts, const int *plen,
                           RolloutChunk *c, TrlErr *err);

#endif
