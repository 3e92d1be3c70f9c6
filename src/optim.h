/* optim.h - AdamW over an index range of the parameter slab, learning-rate
 * schedules and gradient-norm clipping.
 *
 * AdamW works on [begin, end) of the slab so that a ZeRO shard is just a range;
 * the moment buffers are indexed from begin (length end - begin). Weight decay
 * is decoupled (p -= lr * wd * p) and applies only where decay_mask is 1.
 */
#ifndef TRL_OPTIM_H
#define TRL_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "params.h"

typedef struct AdamW {
	size_t begin, end;
	float *m, *v;        /* (end - begin) first and second moments */
	uint8_t *decay_mask; /* (end - begin) 1 where weight decay applies */
	long step;           /* updates done so far */
	double beta1, beta2, eps, weight_decay;
} AdamW;

/* Allocates moments for [begin, end) and the decay mask from the table: matrices
 * decay; embeddings decay only when decay_embeddings; norms and biases never. */
int adamw_init(AdamW *o, const ParamTable *t, size_t begin, size_t end, double beta1,
               double beta2, double eps, double weight_decay, int decay_embeddings,
               TrlErr *err);
void adamw_free(AdamW *o);

/* One update of params[begin, end) from grads[begin, end), with bias
 * correction: p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p). */
void adamw_step(AdamW *o, float *params, const float *grads, double lr);

/* Learning rate at optimizer step `step` (0-based) of `total`, as the Hugging
 * Face schedulers compute it (warmup linear from 0). */
double lr_at_step(TrlScheduler kind, double base_lr, long step, long total,
                  long warmup_steps);

/* Sum of squares of g[0..n), in double. */
double grad_sumsq(const float *g, size_t n);
/* g *= s over n values. */
void grad_scale(float *g, size_t n, float s);

#endif
