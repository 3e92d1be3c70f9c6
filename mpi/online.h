/* online.h - the online methods' plug-in (internal to mpi/): grpo and rloo
 * rounds, rewards, advantages and losses for the training loop in train.c.
 *
 * Every function is called by every trainer at the same point. */
#ifndef TRL_ONLINE_H
#define TRL_ONLINE_H

#include <stdio.h>

#include "rollout.h"
#include "trainer.h"

/* The longest micro-batch row: the longest prompt (capped at
 * max_prompt_length) plus max_completion_length. */
int online_max_len(const Trainer *tr);
/* After the data, the model and the reference are set up: buffers, rewards
 * (the reward program is started here), the colocated generator. link is
 * NULL or has K = 0 when the trainers generate themselves. */
int online_setup(Trainer *tr, RolloutLink *link, TrlErr *err);
/* Sends the plan to the generators (status != 0: the set-up failed). */
void online_start(Trainer *tr, RolloutLink *link, int status);
/* Before the first step: the messages of the first max_staleness + 1 rounds. */
void online_begin(Trainer *tr);
/* The Method hooks (see trainer.h). */
int online_step_begin(Trainer *tr, long step, long counts[2], TrlErr *err);
void online_micro(Trainer *tr, Batch *b, int split, const int *idx, int n, double scale,
                  int backward, int count, Metrics *acc);
void online_step_end(Trainer *tr, long done);
void online_log(Trainer *tr, FILE *f);
/* The mean reward of the logging window, for the console line. */
double online_console_reward(const Trainer *tr);
void online_clear_window(Trainer *tr);
void online_free(Trainer *tr);

#endif
