/* fd.h - finite-difference gradient checking helpers for the layer tests.
 *
 * Usage: write a loss callback that runs a layer's forward on the current
 * inputs and returns L = sum(G * output) in double for a fixed random upstream
 * gradient G; then the backward pass started from dout = G gives dL/dx, and
 *     fd_numeric(num, x, n, h, loss, ctx);
 *     double err = fd_error(analytic, num, n, &rep);
 * compares it with central differences taken for every element of x.
 *
 * Error metric (one number per tensor, scale-aware but never dividing by a
 * tiny gradient):
 *     err = max_i |a_i - n_i| / max(max_i |n_i|, FD_FLOOR)
 * Forward passes run in float, so each difference quotient carries rounding
 * noise of roughly 6e-8 * |output| / h; with h = 1e-3 and the small shapes of
 * the tests this stays near 1e-4 of the gradient scale, while a wrong term in a
 * backward pass gives errors of order 1e-1 or more. Tests assert err <= FD_TOL.
 *
 * Everything here is static: include it from exactly the tests that use it.
 */
#ifndef TRL_TESTS_FD_H
#define TRL_TESTS_FD_H

#include <math.h>
#include <stddef.h>
#include <stdlib.h>

#include "rng.h"

#define FD_H 1e-3f
#define FD_TOL 2e-3
#define FD_FLOOR 1e-1

/* L at the current values of the inputs that the callback's context points to. */
typedef double (*FdLossFn)(void *ctx);

/* Where the worst element of a comparison was, for the failure message. */
typedef struct FdReport {
	size_t worst;     /* index of the largest |a - n| */
	double analytic;  /* a[worst] */
	double numeric;   /* n[worst] */
	double max_abs_n; /* max |n| over the tensor */
} FdReport;

/* x[i] ~ scale * N(0, 1). */
static inline void fd_fill_normal(float *x, size_t n, Rng *r, double scale)
{
	for (size_t i = 0; i < n; i++)
		x[i] = (float)(scale * rng_normal(r));
}

/* x[i] ~ U[lo, hi). */
static inline void fd_fill_uniform(float *x, size_t n, Rng *r, double lo, double hi)
{
	for (size_t i = 0; i < n; i++)
		x[i] = (float)(lo + (hi - lo) * rng_uniform(r));
}

/* sum g[i] * y[i] in double: the scalar loss whose gradient wrt y is g. */
static inline double fd_dot(const float *g, const float *y, size_t n)
{
	double s = 0.0;
	for (size_t i = 0; i < n; i++)
		s += (double)g[i] * (double)y[i];
	return s;
}

/* num[i] = dL/dx[i] by central differences, for every i. The step actually
 * taken is (float)(x + h) - (float)(x - h), so rounding of the perturbed input
 * does not bias the quotient. x is restored bit-for-bit afterwards. */
static inline void fd_numeric(double *num, float *x, size_t n, float h, FdLossFn loss,
                              void *ctx)
{
	for (size_t i = 0; i < n; i++) {
		float x0 = x[i];
		float xp = x0 + h, xm = x0 - h;
		x[i] = xp;
		double lp = loss(ctx);
		x[i] = xm;
		double lm = loss(ctx);
		x[i] = x0;
		num[i] = (lp - lm) / ((double)xp - (double)xm);
	}
}

/* The metric described at the top of this file; fills rep when not NULL. */
static inline double fd_error(const float *a, const double *num, size_t n, FdReport *rep)
{
	double maxn = 0.0, maxd = 0.0;
	size_t worst = 0;
	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)a[i] - num[i]);
		if (!(d <= maxd)) { /* also catches NaN */
			maxd = d;
			worst = i;
		}
		if (fabs(num[i]) > maxn)
			maxn = fabs(num[i]);
	}
	if (rep) {
		rep->worst = worst;
		rep->analytic = n ? a[worst] : 0.0;
		rep->numeric = n ? num[worst] : 0.0;
		rep->max_abs_n = maxn;
	}
	if (isnan(maxd))
		return INFINITY;
	return maxd / (maxn > FD_FLOOR ? maxn : FD_FLOOR);
}

/* For the accumulation contract: after a backward pass into buffers that held
 * pre[i], the result acc[i] must equal pre[i] + fresh[i] (fresh = the same
 * backward pass into zeroed buffers). Returns the worst deviation relative to
 * 1 + |pre| + |fresh|, which is float rounding (~1e-7) when += is honoured and
 * order 1 when the buffer is overwritten. */
static inline double fd_accum_error(const float *acc, const float *pre,
                                    const float *fresh, size_t n)
{
	double worst = 0.0;
	for (size_t i = 0; i < n; i++) {
		double want = (double)pre[i] + (double)fresh[i];
		double d = fabs((double)acc[i] - want) /
		           (1.0 + fabs((double)pre[i]) + fabs((double)fresh[i]));
		if (!(d <= worst))
			worst = isnan(d) ? INFINITY : d;
	}
	return worst;
}

/* max |a - b| over n floats, NaN-aware (NaN gives INFINITY). */
static inline double fd_max_diff(const float *a, const float *b, size_t n)
{
	double worst = 0.0;
	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)a[i] - (double)b[i]);
		if (!(d <= worst))
			worst = isnan(d) ? INFINITY : d;
	}
	return worst;
}

#endif
