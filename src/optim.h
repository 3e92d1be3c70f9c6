/* optim.h - AdamW over an index range of the parameter slab, learning-rate
 * schedules and gradient-norm clipping.
 *
 * AdamW works on [begin, end) of the slab so that a ZeRO shard is just a range;
 * the moment buffers are indexed from begin (length end - begin). Weight decay
 * is decoupled (p -= lr * wd * p) and applies only inside the decay spans, the
 * parts of the range covered by decayed tensors (a few per tensor, not a byte
 * per float: the optimizer state is exactly the two moments).
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
	size_t (*decay)[2];  /* (n_decay) [lo, hi) spans, from begin, that decay */
	int n_decay;
	long step;           /* updates done so far */
	double beta1, beta2, eps, weight_decay;
} AdamW;

/* Allocates moments for [begin, end) and the decay spans from the table:
 * matrices decay; embeddings decay only when decay_embeddings; norms, biases
 * and alignment padding never. */
int adamw_init(AdamW *o, const ParamTable *t, size_t begin, size_t end, double beta1,
               double beta2, double eps, double weight_decay, int decay_embeddings,
               TrlErr *err);
void adamw_free(AdamW *o);

/* One update of params[begin, end) from grads[begin, end), with bias
 * correction: p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p). */
void adamw_step(AdamW *o, float *params, const float *grads, double lr);

/* The same update where p and g hold only the range: p[0] is slab float begin
 * (a ZeRO shard kept in its own buffer). */
void adamw_step_local(AdamW *o, float *p, const float *g, double lr);

/* 1 when weight decay applies to slab float i (begin <= i < end). */
int adamw_decays(const AdamW *o, size_t i);

/* Learning rate at optimizer step `step` (0-based) of `total`, as the Hugging
 * Face schedulers compute it (warmup linear from 0). */
double lr_at_step(TrlScheduler kind, double base_lr, long step, long total,
                  long warmup_steps);

/* Sum of squares of g[0..n), in double. */
double grad_sumsq(const float *g, size_t n);
/* g *= s over n values. */
void grad_scale(float *g, size_t n, float s);

#endif
