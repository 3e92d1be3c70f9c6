/* optim.c - AdamW over a slab range, Hugging Face LR schedules, gradient norms. */
#include "optim.h"

#include <math.h>
#include <string.h>

/* Below this many floats a parallel region costs more than the loop. */
#define OPTIM_PAR_MIN 4096
/* M_PI is not in strict C11. */
#define OPTIM_PI 3.14159265358979323846

/* Marks decay_mask[i - begin] = 1 for every float of [begin, end) that belongs
 * to a decayed tensor. Tensors are cut at the range edges; alignment padding
 * belongs to no tensor and stays 0 (trl_alloc zero-fills). */
static void fill_decay_mask(uint8_t *mask, const ParamTable *t, size_t begin, size_t end,
                            int decay_embeddings)
{
	for (int i = 0; i < t->n; i++) {
		const ParamInfo *pi = &t->p[i];
		int decays = pi->kind == TRL_PARAM_MATRIX ||
		             (pi->kind == TRL_PARAM_EMBEDDING && decay_embeddings);
		if (!decays)
			continue;
		size_t lo = pi->offset > begin ? pi->offset : begin;
		size_t hi = pi->offset + pi->numel < end ? pi->offset + pi->numel : end;
		if (lo < hi)
			memset(mask + (lo - begin), 1, hi - lo);
	}
}

int adamw_init(AdamW *o, const ParamTable *t, size_t begin, size_t end, double beta1,
               double beta2, double eps, double weight_decay, int decay_embeddings,
               TrlErr *err)
{
	memset(o, 0, sizeof *o);
	if (begin > end || end > t->total)
		return trl_errf(
		    err, TRL_EINVAL,
		    "adamw_init: range [%zu, %zu) is not inside the parameter "
		    "slab of %zu floats",
		    begin, end, t->total);
	if (!(beta1 >= 0.0 && beta1 < 1.0) || !(beta2 >= 0.0 && beta2 < 1.0))
		return trl_errf(
		    err, TRL_EINVAL,
		    "adam_beta1 = %g and adam_beta2 = %g must both be in [0, 1)", beta1,
		    beta2);
	if (!(eps >= 0.0))
		return trl_errf(err, TRL_EINVAL, "adam_epsilon = %g must be >= 0", eps);
	size_t n = end - begin;
	o->m = trl_alloc(n * sizeof(float));
	o->v = trl_alloc(n * sizeof(float));
	o->decay_mask = trl_alloc(n);
	if (!o->m || !o->v || !o->decay_mask) {
		adamw_free(o);
		return trl_errf(err, TRL_ENOMEM,
		                "adamw_init: cannot allocate optimizer state for %zu "
		                "parameters (%zu MiB); use more ranks or a smaller model",
		                n, (n * 9) >> 20);
	}
	fill_decay_mask(o->decay_mask, t, begin, end, decay_embeddings);
	o->begin = begin;
	o->end = end;
	o->beta1 = beta1;
	o->beta2 = beta2;
	o->eps = eps;
	o->weight_decay = weight_decay;
	return TRL_OK;
}

void adamw_free(AdamW *o)
{
	trl_free(o->m);
	trl_free(o->v);
	trl_free(o->decay_mask);
	o->m = o->v = NULL;
	o->decay_mask = NULL;
}

/* Follows torch.optim.AdamW (single-tensor path) operation by operation so the
 * float rounding matches: p *= 1 - lr*wd; m = b1 m + (1-b1) g;
 * v = b2 v + (1-b2) g^2; p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps).
 * The bias corrections bc = 1 - beta^t are computed in double, because
 * beta2^t in float loses most of its digits when beta2 = 0.999. */
void adamw_step(AdamW *o, float *params, const float *grads, double lr)
{
	o->step++;
	double bc1 = 1.0 - pow(o->beta1, (double)o->step);
	double bc2 = 1.0 - pow(o->beta2, (double)o->step);
	const float step_size = (float)(lr / bc1);
	const float bc2_sqrt = (float)sqrt(bc2);
	const float decay = (float)(1.0 - lr * o->weight_decay);
	const float b1 = (float)o->beta1, b2 = (float)o->beta2;
	const float one_m_b1 = (float)(1.0 - o->beta1),
	            one_m_b2 = (float)(1.0 - o->beta2);
	const float eps = (float)o->eps;
	const long n = (long)(o->end - o->begin);
	float *p = params + o->begin;
	const float *g = grads + o->begin;
	float *m = o->m, *v = o->v;
	const uint8_t *mask = o->decay_mask;

#pragma omp parallel for schedule(static) if (n > OPTIM_PAR_MIN)
	for (long i = 0; i < n; i++) {
		float pi = p[i], gi = g[i];
		if (mask[i])
			pi *= decay;
		float mi = b1 * m[i] + one_m_b1 * gi;
		float vi = b2 * v[i] + one_m_b2 * gi * gi;
		m[i] = mi;
		v[i] = vi;
		p[i] = pi - step_size * (mi / (sqrtf(vi) / bc2_sqrt + eps));
	}
}

double lr_at_step(TrlScheduler kind, double base_lr, long step, long total,
                  long warmup_steps)
{
	double s = (double)step, w = (double)warmup_steps, tot = (double)total;
	if (kind == TRL_SCHED_CONSTANT)
		return base_lr;
	if (step < warmup_steps)
		return base_lr * s / (w > 1.0 ? w : 1.0);
	double span = tot - w > 1.0 ? tot - w : 1.0;
	double f;
	switch (kind) {
	case TRL_SCHED_LINEAR:
		f = (tot - s) / span;
		break;
	case TRL_SCHED_COSINE:
		/* num_cycles = 0.5: half a cosine from 1 down to 0 over the span. */
		f = 0.5 * (1.0 + cos(OPTIM_PI * (s - w) / span));
		break;
	case TRL_SCHED_CONSTANT_WITH_WARMUP:
	default:
		f = 1.0;
		break;
	}
	return base_lr * (f > 0.0 ? f : 0.0);
}

double grad_sumsq(const float *g, size_t n)
{
	/* At most 64 fixed blocks, whose bounds depend only on n, summed in block
	 * order: the same bits for any thread count and any run, which the
	 * clipping (and so the weights) of a reproducible run depends on. An
	 * OpenMP reduction clause would combine the threads' sums in arrival
	 * order. */
	enum { MAXB = 64 };
	size_t block = (n + MAXB - 1) / MAXB;
	if (block < 4096)
		block = 4096;
	const long nb = (long)((n + block - 1) / block);
	double part[MAXB];
#pragma omp parallel for schedule(static) if (nb > 1)
	for (long b = 0; b < nb; b++) {
		size_t lo = (size_t)b * block, hi = lo + block < n ? lo + block : n;
		double s = 0.0;
		for (size_t i = lo; i < hi; i++)
			s += (double)g[i] * (double)g[i];
		part[b] = s;
	}
	double s = 0.0;
	for (long b = 0; b < nb; b++)
		s += part[b];
	return s;
}

void grad_scale(float *g, size_t n, float s)
{
	const long len = (long)n;
#pragma omp parallel for schedule(static) if (len > OPTIM_PAR_MIN)
	for (long i = 0; i < len; i++)
		g[i] *= s;
}
