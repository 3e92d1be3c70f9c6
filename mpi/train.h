/* train.h - the one training loop, and `validate`.
 *
 * trl_train runs a whole job on every rank of comm: set-up (config checks,
 * tokenizer, data, model) with status agreement after each phase, the
 * optimizer steps, evaluation, logging and the final save. A method (sft,
 * reward, dpo, kto, orpo, cpo) plugs in as a Method table (mpi/trainer.h):
 * the data it reads, its forwards, its loss and its metrics. Returns 0 or
 * the agreed error (same code on every rank).
 */
#ifndef TRL_TRAIN_H
#define TRL_TRAIN_H

#include <stdio.h>

#include "comm.h"
#include "config.h"
#include "trl.h"

int trl_train(const Config *cfg, const Comm *comm, TrlErr *err);

/* What `validate` plans for: the number of trainer ranks (0 = this job's) and
 * the memory each rank may use in bytes (0 = not given). */
typedef struct ValidatePlan {
	int ranks;
	double mem_per_rank;
} ValidatePlan;

/* Prints the resolved config, the parameter count and, for each ZeRO stage,
 * the memory per rank (model states and activations) and the bytes each rank
 * sends per optimizer step; with mem_per_rank, which stage fits (rank 0
 * writes to out). */
int trl_validate(const Config *cfg, const Comm *comm, const ValidatePlan *plan, FILE *out,
                 TrlErr *err);

/* Chooses and applies the OpenMP thread count for this rank (threads_per_rank,
 * or this rank's share of the node); widens a launcher's CPU binding that is
 * narrower than that. Returns the thread count. */
int trl_setup_threads(const Config *cfg, const Comm *comm);

#endif
