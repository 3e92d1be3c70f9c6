/* optim.c - AdamW over a slab range, Hugging Face LR schedules, gradient norms. */
#include "optim.h"

#include <math.h>
#include <omp.h>
#include <string.h>

/* Below this many floats a parallel region costs more than the loop. */
#define OPTIM_PAR_MIN 4096
/* M_PI is not in strict C11. */
#define OPTIM_PI 3.14159265358979323846

/* The spans of [begin, end) covered by decayed tensors, relative to begin,
 * in slab order. Tensors are cut at the range edges; alignment padding belongs
 * to no tensor and never decays. With spans NULL only counts them. */
static int decay_spans(size_t (*spans)[2], const ParamTable *t, size_t begin, size_t end,
                       int decay_embeddings)
{
	int n = 0;
	for (int i = 0; i < t->n; i++) {
		const ParamInfo *pi = &t->p[i];
		int decays = pi->kind == TRL_PARAM_MATRIX ||
		             pi->kind == TRL_PARAM_LORA_A ||
		             pi->kind == TRL_PARAM_LORA_B ||
		             (pi->kind == TRL_PARAM_EMBEDDING && decay_embeddings);
		size_t lo = pi->offset > begin ? pi->offset : begin;
		size_t hi = pi->offset + pi->numel < end ? pi->offset + pi->numel : end;
		if (!decays || lo >= hi)
			continue;
		if (spans && n > 0 && spans[n - 1][1] == lo - begin)
			spans[n - 1][1] = hi - begin; /* adjacent tensors: one span */
		else if (spans) {
			spans[n][0] = lo - begin;
			spans[n++][1] = hi - begin;
		} else
			n++;
	}
	return n;
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
	int ns = decay_spans(NULL, t, begin, end, decay_embeddings);
	o->m = trl_alloc(n * sizeof(float));
	o->v = trl_alloc(n * sizeof(float));
	o->decay = trl_alloc((size_t)ns * sizeof *o->decay);
	if (!o->m || !o->v || !o->decay) {
		adamw_free(o);
		return trl_errf(err, TRL_ENOMEM,
		                "adamw_init: cannot allocate optimizer state for %zu "
		                "parameters (%zu MiB); use more ranks or a smaller model",
		                n, (n * 8) >> 20);
	}
	o->n_decay = decay_spans(o->decay, t, begin, end, decay_embeddings);
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
	trl_free(o->decay);
	o->m = o->v = NULL;
	o->decay = NULL;
	o->n_decay = 0;
}

int adamw_decays(const AdamW *o, size_t i)
{
	for (int k = 0; k < o->n_decay; k++)
		if (i - o->begin >= o->decay[k][0] && i - o->begin < o->decay[k][1])
			return i >= o->begin;
	return 0;
}

/* Follows torch.optim.AdamW (single-tensor path) operation by operation so the
 * float rounding matches: p *= 1 - lr*wd; m = b1 m + (1-b1) g;
 * v = b2 v + (1-b2) g^2; p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps).
 * The bias corrections bc = 1 - beta^t are computed in double, because
 * beta2^t in float loses most of its digits when beta2 = 0.999. */
void adamw_step(AdamW *o, float *params, const float *grads, double lr)
{
	adamw_step_local(o, params + o->begin, grads + o->begin, lr);
}

typedef struct AdamConsts {
	float step_size, bc2_sqrt, b1, b2, one_m_b1, one_m_b2, eps;
} AdamConsts;

static void adam_span(float *p, const float *g, float *m, float *v, size_t lo, size_t hi,
                      float decay, const AdamConsts *k)
{
	for (size_t i = lo; i < hi; i++) {
		float pi = p[i] * decay, gi = g[i];
		float mi = k->b1 * m[i] + k->one_m_b1 * gi;
		float vi = k->b2 * v[i] + k->one_m_b2 * gi * gi;
		m[i] = mi;
		v[i] = vi;
		p[i] = pi - k->step_size * (mi / (sqrtf(vi) / k->bc2_sqrt + k->eps));
	}
}

void adamw_step_local(AdamW *o, float *p, const float *g, double lr)
{
	o->step++;
	double bc1 = 1.0 - pow(o->beta1, (double)o->step);
	double bc2 = 1.0 - pow(o->beta2, (double)o->step);
	const AdamConsts k = {
	    (float)(lr / bc1), (float)sqrt(bc2),        (float)o->beta1,
	    (float)o->beta2,   (float)(1.0 - o->beta1), (float)(1.0 - o->beta2),
	    (float)o->eps};
	const float decay = (float)(1.0 - lr * o->weight_decay);
	const size_t n = o->end - o->begin;
	float *m = o->m, *v = o->v;

	/* Each thread takes one contiguous block of the range and walks the
	 * decay spans that cross it: one parallel region however many tensors
	 * the range holds. Decay multiplies by exactly 1.0f outside the spans. */
#pragma omp parallel if (n > OPTIM_PAR_MIN)
	{
		size_t nt = (size_t)omp_get_num_threads(),
		       id = (size_t)omp_get_thread_num();
		size_t lo = n * id / nt, hi = n * (id + 1) / nt, at = lo;
		for (int s = 0; s < o->n_decay && at < hi; s++) {
			size_t a = o->decay[s][0], b = o->decay[s][1];
			if (b <= at)
				continue;
			if (a > at) {
				size_t e = a < hi ? a : hi;
				adam_span(p, g, m, v, at, e, 1.0f, &k);
				at = e;
			}
			size_t e = b < hi ? b : hi;
			if (at < e) {
				adam_span(p, g, m, v, at, e, decay, &k);
				at = e;
			}
		}
		if (at < hi)
			adam_span(p, g, m, v, at, hi, 1.0f, &k);
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
