/* test_layers.c - each layer vs an independent reference and finite differences. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fd.h"
#include "gemm.h"
#include "layers.h"
#include "shortconv.h"
#include "rng.h"

/* Accumulation is float addition of two finite numbers: far below this. */
#define ACCUM_TOL 1e-5

static float *falloc(size_t n)
{
	float *p = calloc(n ? n : 1, sizeof(float));
	cr_assert_not_null(p);
	return p;
}

static float *fdup(const float *x, size_t n)
{
	float *p = falloc(n);
	memcpy(p, x, n * sizeof(float));
	return p;
}

static float *fnan(size_t n)
{
	float *p = falloc(n);
	for (size_t i = 0; i < n; i++)
		p[i] = NAN;
	return p;
}

/* Asserts that `analytic` is dL/dx for the loss callback, element by element. */
static void expect_fd(const char *what, const char *shape, float *x, size_t n,
                      const float *analytic, FdLossFn loss, void *ctx)
{
	double *num = malloc((n ? n : 1) * sizeof(double));
	cr_assert_not_null(num);
	fd_numeric(num, x, n, FD_H, loss, ctx);
	FdReport rep;
	double err = fd_error(analytic, num, n, &rep);
	free(num);
	cr_assert(err <= FD_TOL,
	          "%s [%s]: gradient error %.3g > %.3g (element %zu: analytic %.7g, "
	          "numeric %.7g; max |numeric| %.3g)",
	          what, shape, err, FD_TOL, rep.worst, rep.analytic, rep.numeric,
	          rep.max_abs_n);
}

/* Asserts that a backward pass into pre-filled buffers added to them. */
static void expect_accum(const char *what, const char *shape, const float *acc,
                         const float *pre, const float *fresh, size_t n)
{
	double e = fd_accum_error(acc, pre, fresh, n);
	cr_assert(e <= ACCUM_TOL,
	          "%s [%s]: backward does not accumulate (+=): error %.3g", what, shape,
	          e);
}

static void expect_close(const char *what, const char *shape, const float *a,
                         const float *b, size_t n, double tol)
{
	double d = fd_max_diff(a, b, n);
	cr_assert(d <= tol, "%s [%s]: max |difference| %.3g > %.3g", what, shape, d, tol);
}

/* ---------------------------------------------------------------- matmul */

typedef struct MatmulShape {
	int N, IC, OC;
} MatmulShape;

typedef struct MatmulCtx {
	float *out;           /* (N, OC) */
	float *in, *w, *bias; /* (N, IC), (OC, IC) or (IC, OC), (OC) or NULL */
	const float *G;       /* (N, OC) upstream gradient */
	int N, IC, OC;
	TrlWLayout layout;
} MatmulCtx;

static double matmul_loss(void *p)
{
	MatmulCtx *c = p;
	matmul_forward(c->out, c->in, c->w, c->bias, c->N, c->IC, c->OC, c->layout);
	return fd_dot(c->G, c->out, (size_t)c->N * c->OC);
}

/* out = in . W (+ bias) in double, reading W in the given layout. */
static void matmul_ref(float *out, const float *in, const float *w, const float *bias,
                       int N, int IC, int OC, TrlWLayout layout)
{
	for (int n = 0; n < N; n++)
		for (int o = 0; o < OC; o++) {
			double s = bias ? bias[o] : 0.0;
			for (int i = 0; i < IC; i++) {
				float wv = layout == TRL_W_OUT_IN ? w[(size_t)o * IC + i]
				                                  : w[(size_t)i * OC + o];
				s += (double)in[(size_t)n * IC + i] * wv;
			}
			out[(size_t)n * OC + o] = (float)s;
		}
}

ParameterizedTestParameters(layers, matmul_matches_reference_and_fd)
{
	static MatmulShape s[] = {
	    {1, 1, 1}, {1, 3, 5}, {5, 4, 3}, {6, 7, 2}, {10, 16, 12}};
	return cr_make_param_array(MatmulShape, s, sizeof s / sizeof s[0]);
}

ParameterizedTest(MatmulShape *s, layers, matmul_matches_reference_and_fd)
{
	const int N = s->N, IC = s->IC, OC = s->OC;
	const size_t nin = (size_t)N * IC, nw = (size_t)IC * OC, nout = (size_t)N * OC;
	for (int layout = TRL_W_OUT_IN; layout <= TRL_W_IN_OUT; layout++)
		for (int has_bias = 0; has_bias <= 1; has_bias++) {
			char shape[96];
			snprintf(shape, sizeof shape, "N=%d IC=%d OC=%d %s %s", N, IC, OC,
			         layout == TRL_W_OUT_IN ? "(OC,IC)" : "(IC,OC)",
			         has_bias ? "bias" : "no bias");
			Rng r;
			rng_seed(&r, 1000 + 10 * layout + has_bias);
			float *in = falloc(nin), *w = falloc(nw), *b = falloc(OC);
			float *G = falloc(nout), *out = falloc(nout);
			float *out_naive = falloc(nout), *out_ref = falloc(nout);
			fd_fill_normal(in, nin, &r, 1.0);
			fd_fill_normal(w, nw, &r, 1.0);
			fd_fill_normal(b, OC, &r, 1.0);
			fd_fill_normal(G, nout, &r, 1.0);
			float *bias = has_bias ? b : NULL;
			TrlWLayout lay = (TrlWLayout)layout;

			/* out is overwritten, not accumulated: start it dirty. */
			for (size_t i = 0; i < nout; i++)
				out[i] = out_naive[i] = 123.0f;
			matmul_forward(out, in, w, bias, N, IC, OC, lay);
			matmul_forward_naive(out_naive, in, w, bias, N, IC, OC, lay);
			matmul_ref(out_ref, in, w, bias, N, IC, OC, lay);
			double ftol = 1e-5 * (1.0 + sqrt((double)IC));
			expect_close("matmul_forward vs double reference", shape, out,
			             out_ref, nout, ftol);
			expect_close("matmul_forward_naive vs double reference", shape,
			             out_naive, out_ref, nout, ftol);
			expect_close("matmul_forward vs matmul_forward_naive", shape, out,
			             out_naive, nout, ftol);

			float *din = falloc(nin), *dw = falloc(nw);
			float *db = has_bias ? falloc(OC) : NULL;
			matmul_backward(din, dw, db, G, in, w, N, IC, OC, lay);

			MatmulCtx c = {out, in, w, bias, G, N, IC, OC, lay};
			expect_fd("matmul d(in)", shape, in, nin, din, matmul_loss, &c);
			expect_fd("matmul d(w)", shape, w, nw, dw, matmul_loss, &c);
			if (has_bias)
				expect_fd("matmul d(bias)", shape, b, OC, db, matmul_loss,
				          &c);

			/* += into pre-filled buffers. */
			float *pin = falloc(nin), *pw = falloc(nw), *pb = falloc(OC);
			fd_fill_normal(pin, nin, &r, 1.0);
			fd_fill_normal(pw, nw, &r, 1.0);
			fd_fill_normal(pb, OC, &r, 1.0);
			float *ain = fdup(pin, nin), *aw = fdup(pw, nw),
			      *ab = fdup(pb, OC);
			matmul_backward(ain, aw, has_bias ? ab : NULL, G, in, w, N, IC,
			                OC, lay);
			expect_accum("matmul d(in)", shape, ain, pin, din, nin);
			expect_accum("matmul d(w)", shape, aw, pw, dw, nw);
			if (has_bias)
				expect_accum("matmul d(bias)", shape, ab, pb, db, OC);

			/* A NULL gradient pointer skips only that gradient. */
			float *dw_only = falloc(nw);
			matmul_backward(NULL, dw_only, NULL, G, in, w, N, IC, OC, lay);
			expect_close("matmul d(w) with din = NULL", shape, dw_only, dw,
			             nw, 1e-6 * (1.0 + N));
			float *din_only = falloc(nin);
			matmul_backward(din_only, NULL, NULL, G, in, w, N, IC, OC, lay);
			expect_close("matmul d(in) with dw = NULL", shape, din_only, din,
			             nin, 1e-6 * (1.0 + OC));

			free(in), free(w), free(b), free(G), free(out), free(out_naive);
			free(out_ref), free(din), free(dw), free(db), free(pin), free(pw);
			free(pb), free(ain), free(aw), free(ab), free(dw_only),
			    free(din_only);
		}
}

/* ------------------------------------------------------------- embedding */

typedef struct EmbShape {
	int B, T, C, V;
} EmbShape;

typedef struct EmbCtx {
	float *out;
	const int32_t *ids, *pos;
	float *wte, *wpe; /* (V, C), (T, C) or NULL */
	const float *G;
	int N, C;
} EmbCtx;

static double emb_loss(void *p)
{
	EmbCtx *c = p;
	embedding_forward(c->out, c->ids, c->pos, c->wte, c->wpe, c->N, c->C);
	return fd_dot(c->G, c->out, (size_t)c->N * c->C);
}

ParameterizedTestParameters(layers, embedding_matches_reference_and_fd)
{
	static EmbShape s[] = {{1, 1, 1, 1}, {1, 5, 3, 3}, {2, 5, 4, 7}, {2, 3, 6, 2}};
	return cr_make_param_array(EmbShape, s, sizeof s / sizeof s[0]);
}

ParameterizedTest(EmbShape *s, layers, embedding_matches_reference_and_fd)
{
	const int N = s->B * s->T, C = s->C, V = s->V, T = s->T;
	const size_t nout = (size_t)N * C, nte = (size_t)V * C, npe = (size_t)T * C;
	for (int with_wpe = 0; with_wpe <= 1; with_wpe++) {
		char shape[96];
		snprintf(shape, sizeof shape, "B=%d T=%d C=%d V=%d %s", s->B, T, C, V,
		         with_wpe ? "wte+wpe" : "wte only");
		Rng r;
		rng_seed(&r, 2000 + with_wpe);
		int32_t *ids = calloc(N, sizeof(int32_t)),
		        *pos = calloc(N, sizeof(int32_t));
		for (int n = 0; n < N; n++) {
			ids[n] = (int32_t)rng_below(&r, V);
			pos[n] = n % T;
		}
		/* A repeated id: its gradient row must collect both uses. */
		if (N > 1)
			ids[N - 1] = ids[0];
		float *wte = falloc(nte), *wpe = with_wpe ? falloc(npe) : NULL;
		float *G = falloc(nout), *out = falloc(nout);
		fd_fill_normal(wte, nte, &r, 1.0);
		if (wpe)
			fd_fill_normal(wpe, npe, &r, 1.0);
		fd_fill_normal(G, nout, &r, 1.0);

		embedding_forward(out, ids, pos, wte, wpe, N, C);
		for (int n = 0; n < N; n++)
			for (int c = 0; c < C; c++) {
				float want = wte[(size_t)ids[n] * C + c];
				if (wpe)
					want += wpe[(size_t)pos[n] * C + c];
				cr_assert_float_eq(out[(size_t)n * C + c], want, 1e-6,
				                   "embedding_forward [%s] row %d col %d",
				                   shape, n, c);
			}

		float *dte = falloc(nte), *dpe = with_wpe ? falloc(npe) : NULL;
		embedding_backward(dte, dpe, G, ids, pos, N, C);
		EmbCtx c = {out, ids, pos, wte, wpe, G, N, C};
		expect_fd("embedding d(wte)", shape, wte, nte, dte, emb_loss, &c);
		if (wpe)
			expect_fd("embedding d(wpe)", shape, wpe, npe, dpe, emb_loss, &c);
		/* Exact statement of the repeated-id rule. */
		if (N > 1 && ids[0] == ids[N - 1])
			for (int k = 0; k < C; k++) {
				double want = 0.0;
				for (int n = 0; n < N; n++)
					if (ids[n] == ids[0])
						want += G[(size_t)n * C + k];
				cr_assert(
				    fabs(dte[(size_t)ids[0] * C + k] - want) < 1e-5,
				    "embedding d(wte) [%s]: repeated id %d col %d: %g "
				    "vs %g",
				    shape, ids[0], k, dte[(size_t)ids[0] * C + k], want);
			}

		float *pte = falloc(nte), *ppe = falloc(npe);
		fd_fill_normal(pte, nte, &r, 1.0);
		fd_fill_normal(ppe, npe, &r, 1.0);
		float *ate = fdup(pte, nte), *ape = fdup(ppe, npe);
		embedding_backward(ate, with_wpe ? ape : NULL, G, ids, pos, N, C);
		expect_accum("embedding d(wte)", shape, ate, pte, dte, nte);
		if (with_wpe)
			expect_accum("embedding d(wpe)", shape, ape, ppe, dpe, npe);

		free(ids), free(pos), free(wte), free(wpe), free(G), free(out), free(dte);
		free(dpe), free(pte), free(ppe), free(ate), free(ape);
	}
}

/* ----------------------------------------------------- rmsnorm, layernorm */

typedef struct NormShape {
	int N, C;
} NormShape;

ParameterizedTestParameters(layers, rmsnorm_matches_reference_and_fd)
{
	static NormShape s[] = {{1, 1}, {1, 4}, {3, 6}, {5, 3}, {4, 16}, {2, 2}};
	return cr_make_param_array(NormShape, s, sizeof s / sizeof s[0]);
}

typedef struct NormCtx {
	float *out, *mean, *rstd;
	float *in, *w, *b;
	const float *G;
	int N, C;
	float eps;
} NormCtx;

static double rmsnorm_loss(void *p)
{
	NormCtx *c = p;
	rmsnorm_forward(c->out, c->rstd, c->in, c->w, c->N, c->C, c->eps);
	return fd_dot(c->G, c->out, (size_t)c->N * c->C);
}

static double layernorm_loss(void *p)
{
	NormCtx *c = p;
	layernorm_forward(c->out, c->mean, c->rstd, c->in, c->w, c->b, c->N, c->C,
	                  c->eps);
	return fd_dot(c->G, c->out, (size_t)c->N * c->C);
}

ParameterizedTest(NormShape *s, layers, rmsnorm_matches_reference_and_fd)
{
	const int N = s->N, C = s->C;
	const size_t n = (size_t)N * C;
	const float eps = 1e-5f;
	char shape[64];
	snprintf(shape, sizeof shape, "N=%d C=%d", N, C);
	Rng r;
	rng_seed(&r, 3000);
	float *in = falloc(n), *w = falloc(C), *G = falloc(n), *out = falloc(n);
	float *rstd = falloc(N);
	fd_fill_normal(in, n, &r, 1.0);
	fd_fill_uniform(w, C, &r, 0.5, 1.5);
	fd_fill_normal(G, n, &r, 1.0);

	rmsnorm_forward(out, rstd, in, w, N, C, eps);
	for (int i = 0; i < N; i++) {
		double ss = 0.0;
		for (int j = 0; j < C; j++)
			ss += (double)in[i * C + j] * in[i * C + j];
		double rs = 1.0 / sqrt(ss / C + eps);
		cr_assert(fabs(rstd[i] - rs) <= 1e-5 * rs,
		          "rmsnorm rstd [%s] row %d: %g vs %g", shape, i, rstd[i], rs);
		for (int j = 0; j < C; j++) {
			double want = in[i * C + j] * rs * w[j];
			cr_assert(fabs(out[i * C + j] - want) <=
			              1e-5 * (1.0 + fabs(want)),
			          "rmsnorm_forward [%s] (%d,%d): %g vs %g", shape, i, j,
			          out[i * C + j], want);
		}
	}

	float *din = falloc(n), *dw = falloc(C);
	rmsnorm_backward(din, dw, G, in, w, rstd, N, C);
	NormCtx c = {out, NULL, rstd, in, w, NULL, G, N, C, eps};
	expect_fd("rmsnorm d(in)", shape, in, n, din, rmsnorm_loss, &c);
	expect_fd("rmsnorm d(w)", shape, w, C, dw, rmsnorm_loss, &c);

	rmsnorm_forward(out, rstd, in, w, N, C, eps);
	float *pin = falloc(n), *pw = falloc(C);
	fd_fill_normal(pin, n, &r, 1.0);
	fd_fill_normal(pw, C, &r, 1.0);
	float *ain = fdup(pin, n), *aw = fdup(pw, C);
	rmsnorm_backward(ain, aw, G, in, w, rstd, N, C);
	expect_accum("rmsnorm d(in)", shape, ain, pin, din, n);
	expect_accum("rmsnorm d(w)", shape, aw, pw, dw, C);

	free(in), free(w), free(G), free(out), free(rstd), free(din), free(dw);
	free(pin), free(pw), free(ain), free(aw);
}

ParameterizedTestParameters(layers, layernorm_matches_reference_and_fd)
{
	static NormShape s[] = {{1, 1}, {1, 4}, {3, 6}, {5, 3}, {4, 16}, {2, 2}};
	return cr_make_param_array(NormShape, s, sizeof s / sizeof s[0]);
}

ParameterizedTest(NormShape *s, layers, layernorm_matches_reference_and_fd)
{
	const int N = s->N, C = s->C;
	const size_t n = (size_t)N * C;
	const float eps = 1e-5f;
	char shape[64];
	snprintf(shape, sizeof shape, "N=%d C=%d", N, C);
	Rng r;
	rng_seed(&r, 4000);
	float *in = falloc(n), *w = falloc(C), *b = falloc(C), *G = falloc(n);
	float *out = falloc(n), *mean = falloc(N), *rstd = falloc(N);
	fd_fill_normal(in, n, &r, 1.0);
	/* Shift rows away from zero mean so a missing mean term shows. */
	for (size_t i = 0; i < n; i++)
		in[i] += 0.7f;
	fd_fill_uniform(w, C, &r, 0.5, 1.5);
	fd_fill_normal(b, C, &r, 1.0);
	fd_fill_normal(G, n, &r, 1.0);

	layernorm_forward(out, mean, rstd, in, w, b, N, C, eps);
	for (int i = 0; i < N; i++) {
		double mu = 0.0, var = 0.0;
		for (int j = 0; j < C; j++)
			mu += in[i * C + j];
		mu /= C;
		for (int j = 0; j < C; j++)
			var += (in[i * C + j] - mu) * (in[i * C + j] - mu);
		var /= C; /* biased, as torch.nn.LayerNorm */
		double rs = 1.0 / sqrt(var + eps);
		cr_assert(fabs(mean[i] - mu) <= 1e-5 * (1.0 + fabs(mu)),
		          "layernorm mean [%s] row %d: %g vs %g", shape, i, mean[i], mu);
		cr_assert(fabs(rstd[i] - rs) <= 1e-4 * rs,
		          "layernorm rstd [%s] row %d: %g vs %g", shape, i, rstd[i], rs);
		for (int j = 0; j < C; j++) {
			double want = (in[i * C + j] - mu) * rs * w[j] + b[j];
			cr_assert(fabs(out[i * C + j] - want) <=
			              1e-4 * (1.0 + fabs(want)),
			          "layernorm_forward [%s] (%d,%d): %g vs %g", shape, i, j,
			          out[i * C + j], want);
		}
	}

	float *din = falloc(n), *dw = falloc(C), *db = falloc(C);
	layernorm_backward(din, dw, db, G, in, w, mean, rstd, N, C);
	NormCtx c = {out, mean, rstd, in, w, b, G, N, C, eps};
	expect_fd("layernorm d(in)", shape, in, n, din, layernorm_loss, &c);
	expect_fd("layernorm d(w)", shape, w, C, dw, layernorm_loss, &c);
	expect_fd("layernorm d(b)", shape, b, C, db, layernorm_loss, &c);

	layernorm_forward(out, mean, rstd, in, w, b, N, C, eps);
	float *pin = falloc(n), *pw = falloc(C), *pb = falloc(C);
	fd_fill_normal(pin, n, &r, 1.0);
	fd_fill_normal(pw, C, &r, 1.0);
	fd_fill_normal(pb, C, &r, 1.0);
	float *ain = fdup(pin, n), *aw = fdup(pw, C), *ab = fdup(pb, C);
	layernorm_backward(ain, aw, ab, G, in, w, mean, rstd, N, C);
	expect_accum("layernorm d(in)", shape, ain, pin, din, n);
	expect_accum("layernorm d(w)", shape, aw, pw, dw, C);
	expect_accum("layernorm d(b)", shape, ab, pb, db, C);

	free(in), free(w), free(b), free(G), free(out), free(mean), free(rstd);
	free(din), free(dw), free(db), free(pin), free(pw), free(pb), free(ain);
	free(aw), free(ab);
}

/* ------------------------------------------------------------------ rope */

typedef struct RopeShape {
	int N, H, D;
	float theta;
} RopeShape;

typedef struct RopeCtx {
	float *x, *work; /* (N, H, D) input and the rotated copy */
	const int32_t *pos;
	const float *G;
	int N, H, D;
	float theta;
} RopeCtx;

static double rope_loss(void *p)
{
	RopeCtx *c = p;
	size_t n = (size_t)c->N * c->H * c->D;
	memcpy(c->work, c->x, n * sizeof(float));
	rope_forward(c->work, c->pos, c->N, c->H, c->D, c->theta);
	return fd_dot(c->G, c->work, n);
}

ParameterizedTestParameters(layers, rope_matches_rotate_half_and_fd)
{
	static RopeShape s[] = {{1, 1, 2, 10000.0f},
	                        {5, 1, 4, 10000.0f},
	                        {5, 3, 6, 10000.0f},
	                        {4, 2, 8, 500000.0f},
	                        {3, 4, 4, 10.0f}};
	return cr_make_param_array(RopeShape, s, sizeof s / sizeof s[0]);
}

ParameterizedTest(RopeShape *s, layers, rope_matches_rotate_half_and_fd)
{
	const int N = s->N, H = s->H, D = s->D, half = s->D / 2;
	const size_t n = (size_t)N * H * D;
	char shape[96];
	snprintf(shape, sizeof shape, "N=%d H=%d D=%d theta=%g", N, H, D, s->theta);
	Rng r;
	rng_seed(&r, 5000);
	int32_t *pos = calloc(N, sizeof(int32_t));
	/* Not 0..N-1: positions restart inside packed sequences. */
	for (int i = 0; i < N; i++)
		pos[i] = (int32_t)((i * 7 + 3) % 41);
	float *x = falloc(n), *y = falloc(n), *G = falloc(n);
	fd_fill_normal(x, n, &r, 1.0);
	fd_fill_normal(G, n, &r, 1.0);

	/* Hugging Face: inv_freq[i] = theta^(-2i/D); emb = cat(freqs, freqs);
	 * out = x * cos(emb) + rotate_half(x) * sin(emb), rotate_half(x) =
	 * cat(-x[D/2:], x[:D/2]). */
	memcpy(y, x, n * sizeof(float));
	rope_forward(y, pos, N, H, D, s->theta);
	for (int i = 0; i < N; i++)
		for (int h = 0; h < H; h++)
			for (int j = 0; j < D; j++) {
				const float *xr = x + ((size_t)i * H + h) * D;
				double ang =
				    pos[i] * pow(s->theta, -2.0 * (j % half) / D);
				double rot = j < half ? -xr[j + half] : xr[j - half];
				double want = xr[j] * cos(ang) + rot * sin(ang);
				double got = y[((size_t)i * H + h) * D + j];
				cr_assert(
				    fabs(got - want) <= 2e-5,
				    "rope_forward [%s] (n=%d h=%d d=%d pos=%d): %.7g vs "
				    "%.7g",
				    shape, i, h, j, pos[i], got, want);
			}

	/* rope_backward overwrites dx with the gradient wrt the unrotated x. */
	float *dx = fdup(G, n), *work = falloc(n);
	rope_backward(dx, pos, N, H, D, s->theta);
	RopeCtx c = {x, work, pos, G, N, H, D, s->theta};
	expect_fd("rope d(x)", shape, x, n, dx, rope_loss, &c);

	/* A rotation: backward undoes forward. */
	rope_backward(y, pos, N, H, D, s->theta);
	expect_close("rope_backward(rope_forward(x)) == x", shape, y, x, n, 1e-5);

	free(pos), free(x), free(y), free(G), free(dx), free(work);
}

/* ---------------------------------------------------------- gelu, swiglu */

typedef struct EltShape {
	size_t n;
} EltShape;

typedef struct EltCtx {
	float *out, *a, *b;
	const float *G;
	size_t n;
} EltCtx;

static double gelu_loss(void *p)
{
	EltCtx *c = p;
	gelu_forward(c->out, c->a, c->n);
	return fd_dot(c->G, c->out, c->n);
}

static double swiglu_loss(void *p)
{
	EltCtx *c = p;
	swiglu_forward(c->out, c->a, c->b, c->n);
	return fd_dot(c->G, c->out, c->n);
}

ParameterizedTestParameters(layers, gelu_matches_formula_and_fd)
{
	static EltShape s[] = {{1}, {7}, {64}, {257}};
	return cr_make_param_array(EltShape, s, sizeof s / sizeof s[0]);
}

ParameterizedTest(EltShape *s, layers, gelu_matches_formula_and_fd)
{
	const size_t n = s->n;
	char shape[32];
	snprintf(shape, sizeof shape, "n=%zu", n);
	Rng r;
	rng_seed(&r, 6000);
	float *in = falloc(n), *out = falloc(n), *G = falloc(n);
	fd_fill_uniform(in, n, &r, -5.0, 5.0);
	fd_fill_normal(G, n, &r, 1.0);
	gelu_forward(out, in, n);
	for (size_t i = 0; i < n; i++) {
		double x = in[i];
		double want =
		    0.5 * x *
		    (1.0 + tanh(sqrt(2.0 / acos(-1.0)) * (x + 0.044715 * x * x * x)));
		cr_assert(fabs(out[i] - want) <= 1e-6 * (1.0 + fabs(want)),
		          "gelu_forward [%s] x=%g: %.8g vs %.8g", shape, x, out[i], want);
	}
	float *din = falloc(n);
	gelu_backward(din, G, in, n);
	EltCtx c = {out, in, NULL, G, n};
	expect_fd("gelu d(in)", shape, in, n, din, gelu_loss, &c);

	float *pre = falloc(n);
	fd_fill_normal(pre, n, &r, 1.0);
	float *acc = fdup(pre, n);
	gelu_backward(acc, G, in, n);
	expect_accum("gelu d(in)", shape, acc, pre, din, n);
	free(in), free(out), free(G), free(din), free(pre), free(acc);
}

ParameterizedTestParameters(layers, swiglu_matches_formula_and_fd)
{
	static EltShape s[] = {{1}, {7}, {64}, {257}};
	return cr_make_param_array(EltShape, s, sizeof s / sizeof s[0]);
}

ParameterizedTest(EltShape *s, layers, swiglu_matches_formula_and_fd)
{
	const size_t n = s->n;
	char shape[32];
	snprintf(shape, sizeof shape, "n=%zu", n);
	Rng r;
	rng_seed(&r, 7000);
	float *gate = falloc(n), *up = falloc(n), *out = falloc(n), *G = falloc(n);
	fd_fill_uniform(gate, n, &r, -6.0, 6.0);
	fd_fill_normal(up, n, &r, 1.0);
	fd_fill_normal(G, n, &r, 1.0);
	swiglu_forward(out, gate, up, n);
	for (size_t i = 0; i < n; i++) {
		double g = gate[i];
		double want = g / (1.0 + exp(-g)) * up[i];
		cr_assert(fabs(out[i] - want) <= 1e-6 * (1.0 + fabs(want)),
		          "swiglu_forward [%s] gate=%g up=%g: %.8g vs %.8g", shape, g,
		          up[i], out[i], want);
	}
	float *dg = falloc(n), *du = falloc(n);
	swiglu_backward(dg, du, G, gate, up, n);
	EltCtx c = {out, gate, up, G, n};
	expect_fd("swiglu d(gate)", shape, gate, n, dg, swiglu_loss, &c);
	expect_fd("swiglu d(up)", shape, up, n, du, swiglu_loss, &c);

	float *pg = falloc(n), *pu = falloc(n);
	fd_fill_normal(pg, n, &r, 1.0);
	fd_fill_normal(pu, n, &r, 1.0);
	float *ag = fdup(pg, n), *au = fdup(pu, n);
	swiglu_backward(ag, au, G, gate, up, n);
	expect_accum("swiglu d(gate)", shape, ag, pg, dg, n);
	expect_accum("swiglu d(up)", shape, au, pu, du, n);
	free(gate), free(up), free(out), free(G), free(dg), free(du), free(pg), free(pu);
	free(ag), free(au);
}

/* ------------------------------------------------------------- attention */

typedef struct AttnShape {
	int B, T, H, KV, D;
} AttnShape;

enum { MASK_CAUSAL = 0, MASK_PACKED, MASK_PADDED, MASK_COUNT };
static const char *mask_names[MASK_COUNT] = {"causal", "packed", "padded"};

/* Document ids of one row of the batch: all 0 (causal); packed documents of
 * lengths 3, 2, 1, ... (batch row 1 uses 1, 2, 3, ...), e.g. [0,0,0,1,1,2];
 * or packed documents followed by (T+1)/2 padding positions (doc = -1). */
static void fill_doc(int32_t *doc, int B, int T, int mode)
{
	for (int b = 0; b < B; b++) {
		int32_t *d = doc + (size_t)b * T;
		int npad = mode == MASK_PADDED ? (T + 1) / 2 : 0;
		int id = 0, left = b % 2 ? 1 : 3;
		for (int t = 0; t < T; t++) {
			if (mode == MASK_CAUSAL) {
				d[t] = 0;
				continue;
			}
			if (t >= T - npad) {
				d[t] = -1;
				continue;
			}
			if (left == 0) {
				id++;
				left = b % 2 ? 1 + id % 3 : 3 - id % 3;
			}
			d[t] = id;
			left--;
		}
	}
}

/* The masking rule of layers.h, written out: query t sees key s iff s == t,
 * or s < t within the same real document (padding sees only itself). */
static int attn_allowed(const int32_t *d, int t, int s)
{
	return s == t || (s < t && d[t] >= 0 && d[s] == d[t]);
}

/* Attention in double: out (B,T,H*D), att (B,H,T,T) with 0 where masked. */
static void attention_ref(float *out, float *att, float *lse, const float *q,
                          const float *k, const float *v, const int32_t *doc, int B,
                          int T, int H, int KV, int D)
{
	const int C = H * D, KC = KV * D, grp = H / KV;
	double *p = malloc(sizeof(double) * T);
	for (int b = 0; b < B; b++)
		for (int h = 0; h < H; h++) {
			int kh = h / grp;
			const int32_t *d = doc + (size_t)b * T;
			for (int t = 0; t < T; t++) {
				const float *qt = q + ((size_t)b * T + t) * C + h * D;
				double mx = -INFINITY, sum = 0.0;
				for (int s = 0; s < T; s++) {
					p[s] = -INFINITY;
					if (!attn_allowed(d, t, s))
						continue;
					const float *ks =
					    k + ((size_t)b * T + s) * KC + kh * D;
					double dot = 0.0;
					for (int i = 0; i < D; i++)
						dot += (double)qt[i] * ks[i];
					p[s] = dot / sqrt((double)D);
					if (p[s] > mx)
						mx = p[s];
				}
				for (int s = 0; s < T; s++) {
					p[s] = isinf(p[s]) ? 0.0 : exp(p[s] - mx);
					sum += p[s];
				}
				float *ot = out + ((size_t)b * T + t) * C + h * D;
				float *at = att + (((size_t)b * H + h) * T + t) * T;
				for (int i = 0; i < D; i++) {
					double o = 0.0;
					for (int s = 0; s < T; s++)
						o += p[s] / sum *
						     v[((size_t)b * T + s) * KC + kh * D +
						       i];
					ot[i] = (float)o;
				}
				for (int s = 0; s < T; s++)
					at[s] = (float)(p[s] / sum);
				lse[((size_t)b * H + h) * T + t] = (float)(mx + log(sum));
			}
		}
	free(p);
}

typedef struct AttnCtx {
	float *out, *att;
	float *q, *k, *v;
	const int32_t *doc;
	const float *G;
	int B, T, H, KV, D;
} AttnCtx;

static double attn_loss(void *p)
{
	AttnCtx *c = p;
	attention_forward(c->out, c->att, c->q, c->k, c->v, c->doc, c->B, c->T, c->H,
	                  c->KV, c->D);
	return fd_dot(c->G, c->out, (size_t)c->B * c->T * c->H * c->D);
}

static float *attn_scratch(void)
{
	return falloc(attention_scratch_floats() * (size_t)omp_get_max_threads());
}

ParameterizedTestParameters(layers, attention_matches_reference_and_fd)
{
	/* T = 70 and 131: several query and key blocks, none of them full. */
	static AttnShape s[] = {{1, 1, 1, 1, 2}, {1, 5, 1, 1, 4},  {2, 5, 4, 2, 2},
	                        {2, 6, 4, 1, 4}, {1, 6, 2, 2, 6},  {2, 3, 3, 3, 2},
	                        {1, 7, 4, 2, 4}, {1, 70, 2, 1, 4}, {1, 131, 2, 2, 2}};
	return cr_make_param_array(AttnShape, s, sizeof s / sizeof s[0]);
}

ParameterizedTest(AttnShape *s, layers, attention_matches_reference_and_fd)
{
	const int B = s->B, T = s->T, H = s->H, KV = s->KV, D = s->D;
	const size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KV * D;
	const size_t natt = (size_t)B * H * T * T;
	for (int mode = 0; mode < MASK_COUNT; mode++) {
		char shape[128];
		snprintf(shape, sizeof shape, "B=%d T=%d H=%d KV=%d D=%d %s", B, T, H, KV,
		         D, mask_names[mode]);
		Rng r;
		rng_seed(&r, 8000 + mode);
		int32_t *doc = calloc((size_t)B * T, sizeof(int32_t));
		fill_doc(doc, B, T, mode);
		float *q = falloc(nq), *k = falloc(nk), *v = falloc(nk), *G = falloc(nq);
		fd_fill_normal(q, nq, &r, 1.0);
		fd_fill_normal(k, nk, &r, 1.0);
		fd_fill_normal(v, nk, &r, 1.0);
		fd_fill_normal(G, nq, &r, 1.0);

		/* lse starts as NaN: every entry backward may read must be written. */
		const size_t nl = (size_t)B * H * T;
		float *out = fnan(nq), *att = fnan(nl);
		float *out_n = fnan(nq), *att_n = fnan(natt);
		float *out_r = falloc(nq), *att_r = falloc(natt), *lse_r = falloc(nl);
		attention_forward(out, att, q, k, v, doc, B, T, H, KV, D);
		attention_forward_naive(out_n, att_n, q, k, v, doc, B, T, H, KV, D);
		attention_ref(out_r, att_r, lse_r, q, k, v, doc, B, T, H, KV, D);
		expect_close("attention_forward vs double reference", shape, out, out_r,
		             nq, 2e-5);
		expect_close("attention_forward_naive vs double reference", shape, out_n,
		             out_r, nq, 2e-5);
		expect_close("attention_forward vs attention_forward_naive", shape, out,
		             out_n, nq, 2e-5);
		expect_close("attention lse (log-sum-exp of each row)", shape, att, lse_r,
		             nl, 1e-6);
		expect_close("attention_forward_naive att", shape, att_n, att_r, natt,
		             1e-6);

		float *dq = falloc(nq), *dk = falloc(nk), *dv = falloc(nk);
		float *scratch = attn_scratch();
		attention_backward(dq, dk, dv, scratch, omp_get_max_threads(), G, q, k, v,
		                   out, att, doc, B, T, H, KV, D);
		AttnCtx c = {out, att, q, k, v, doc, G, B, T, H, KV, D};
		expect_fd("attention d(q)", shape, q, nq, dq, attn_loss, &c);
		expect_fd("attention d(k)", shape, k, nk, dk, attn_loss, &c);
		expect_fd("attention d(v)", shape, v, nk, dv, attn_loss, &c);

		attention_forward(out, att, q, k, v, doc, B, T, H, KV, D);
		float *pq = falloc(nq), *pk = falloc(nk), *pv = falloc(nk);
		fd_fill_normal(pq, nq, &r, 1.0);
		fd_fill_normal(pk, nk, &r, 1.0);
		fd_fill_normal(pv, nk, &r, 1.0);
		float *aq = fdup(pq, nq), *ak = fdup(pk, nk), *av = fdup(pv, nk);
		/* Scratch left dirty by the previous call must not matter. */
		attention_backward(aq, ak, av, scratch, omp_get_max_threads(), G, q, k, v,
		                   out, att, doc, B, T, H, KV, D);
		expect_accum("attention d(q)", shape, aq, pq, dq, nq);
		expect_accum("attention d(k)", shape, ak, pk, dk, nk);
		expect_accum("attention d(v)", shape, av, pv, dv, nk);

		free(doc), free(q), free(k), free(v), free(G), free(out), free(att);
		free(out_n), free(att_n), free(out_r), free(att_r), free(lse_r), free(dq);
		free(dk);
		free(dv), free(scratch), free(pq), free(pk), free(pv), free(aq), free(ak);
		free(av);
	}
}

/* Packed documents behave exactly like separate sequences: each document's
 * output equals attention over that document alone, does not move when other
 * documents' tokens change, and sends no gradient to other documents. */
Test(layers, attention_packed_documents_are_independent)
{
	enum { T = 6, H = 4, KV = 2, D = 4, C = H * D, KC = KV * D };
	const int32_t doc[T] = {0, 0, 0, 1, 1, 2};
	const int start[3] = {0, 3, 5}, len[3] = {3, 2, 1};
	Rng r;
	rng_seed(&r, 9000);
	float q[T * C], k[T * KC], v[T * KC], out[T * C], att[H * T * T];
	fd_fill_normal(q, T * C, &r, 1.0);
	fd_fill_normal(k, T * KC, &r, 1.0);
	fd_fill_normal(v, T * KC, &r, 1.0);
	attention_forward(out, att, q, k, v, doc, 1, T, H, KV, D);

	for (int d = 0; d < 3; d++) {
		float o1[T * C], a1[H * T * T];
		int32_t zeros[T] = {0};
		attention_forward(o1, a1, q + start[d] * C, k + start[d] * KC,
		                  v + start[d] * KC, zeros, 1, len[d], H, KV, D);
		for (int i = 0; i < len[d] * C; i++)
			cr_assert(fabs(out[start[d] * C + i] - o1[i]) <= 1e-6,
			          "document %d: packed output differs from the document "
			          "alone at %d: %g vs %g",
			          d, i, out[start[d] * C + i], o1[i]);
	}

	/* Change every token of document 1; documents 0 and 2 must not move. */
	float q2[T * C], k2[T * KC], v2[T * KC], out2[T * C], att2[H * T * T];
	memcpy(q2, q, sizeof q), memcpy(k2, k, sizeof k), memcpy(v2, v, sizeof v);
	for (int t = 3; t < 5; t++) {
		for (int i = 0; i < C; i++)
			q2[t * C + i] += 3.0f;
		for (int i = 0; i < KC; i++)
			k2[t * KC + i] -= 2.0f, v2[t * KC + i] *= -5.0f;
	}
	attention_forward(out2, att2, q2, k2, v2, doc, 1, T, H, KV, D);
	for (int t = 0; t < T; t++) {
		double dmax = fd_max_diff(out + t * C, out2 + t * C, C);
		if (doc[t] == 1)
			cr_assert(dmax > 1e-3,
			          "changing document 1 did not change its output");
		else
			cr_assert(dmax <= 1e-6,
			          "token %d (document %d) changed by %g when document 1 "
			          "changed",
			          t, doc[t], dmax);
	}

	/* Upstream gradient only on document 0: nothing reaches documents 1, 2. */
	float G[T * C] = {0}, dq[T * C] = {0}, dk[T * KC] = {0}, dv[T * KC] = {0};
	for (int i = 0; i < 3 * C; i++)
		G[i] = (float)rng_normal(&r);
	float *scratch = attn_scratch();
	attention_backward(dq, dk, dv, scratch, omp_get_max_threads(), G, q, k, v, out,
	                   att, doc, 1, T, H, KV, D);
	for (int t = 3; t < T; t++) {
		for (int i = 0; i < C; i++)
			cr_assert_eq(dq[t * C + i], 0.0f, "dq leaked into token %d", t);
		for (int i = 0; i < KC; i++) {
			cr_assert_eq(dk[t * KC + i], 0.0f, "dk leaked into token %d", t);
			cr_assert_eq(dv[t * KC + i], 0.0f, "dv leaked into token %d", t);
		}
	}
	free(scratch);
}

/* Padding (doc = -1) sees only itself and nobody sees it: outputs stay finite,
 * a padding row's output is its own value vector, and real tokens ignore any
 * values in padding positions. */
Test(layers, attention_padding_rows_are_finite_and_isolated)
{
	enum { B = 2, T = 5, H = 4, KV = 2, D = 2, C = H * D, KC = KV * D };
	const int32_t doc[B * T] = {0, 0, 0, -1, -1, 0, 0, 1, 1, -1};
	Rng r;
	rng_seed(&r, 9100);
	float q[B * T * C], k[B * T * KC], v[B * T * KC], out[B * T * C];
	float att[B * H * T * T];
	fd_fill_normal(q, B * T * C, &r, 1.0);
	fd_fill_normal(k, B * T * KC, &r, 1.0);
	fd_fill_normal(v, B * T * KC, &r, 1.0);
	attention_forward(out, att, q, k, v, doc, B, T, H, KV, D);
	for (int i = 0; i < B * T * C; i++)
		cr_assert(isfinite(out[i]), "out[%d] = %g is not finite", i, out[i]);
	for (int bt = 0; bt < B * T; bt++) {
		if (doc[bt] >= 0)
			continue;
		int b = bt / T, t = bt % T;
		for (int h = 0; h < H; h++) {
			int kh = h / (H / KV);
			for (int i = 0; i < D; i++)
				cr_assert_float_eq(
				    out[bt * C + h * D + i], v[bt * KC + kh * D + i],
				    1e-6,
				    "padding token (b=%d t=%d) head %d should "
				    "output its own v",
				    b, t, h);
		}
	}

	float k2[B * T * KC], v2[B * T * KC], out2[B * T * C], att2[B * H * T * T];
	memcpy(k2, k, sizeof k), memcpy(v2, v, sizeof v);
	for (int bt = 0; bt < B * T; bt++)
		if (doc[bt] < 0)
			for (int i = 0; i < KC; i++)
				k2[bt * KC + i] = 50.0f, v2[bt * KC + i] = 1e4f;
	attention_forward(out2, att2, q, k2, v2, doc, B, T, H, KV, D);
	for (int bt = 0; bt < B * T; bt++)
		if (doc[bt] >= 0)
			cr_assert(
			    fd_max_diff(out + bt * C, out2 + bt * C, C) <= 1e-6,
			    "real token %d changed when padding keys/values changed", bt);

	float G[B * T * C], dq[B * T * C] = {0}, dk[B * T * KC] = {0};
	float dv[B * T * KC] = {0};
	fd_fill_normal(G, B * T * C, &r, 1.0);
	float *scratch = attn_scratch();
	attention_backward(dq, dk, dv, scratch, omp_get_max_threads(), G, q, k, v, out,
	                   att, doc, B, T, H, KV, D);
	for (int i = 0; i < B * T * C; i++)
		cr_assert(isfinite(dq[i]), "dq[%d] not finite", i);
	for (int i = 0; i < B * T * KC; i++)
		cr_assert(isfinite(dk[i]) && isfinite(dv[i]), "dk/dv[%d] not finite", i);
	free(scratch);
}

/* ---------------------------------------------------------- cross-entropy */

typedef struct CeShape {
	int N, V;
} CeShape;

typedef struct CeCtx {
	float *logits, *work;
	const int32_t *targets;
	int N, V;
	float scale;
} CeCtx;

/* grad_scale * (sum of losses), computed without touching the logits. */
static double ce_loss(void *p)
{
	CeCtx *c = p;
	size_t n = (size_t)c->N * c->V;
	memcpy(c->work, c->logits, n * sizeof(float));
	return c->scale * crossentropy_forward_backward(c->work, c->targets, c->N, c->V,
	                                                0.0f, NULL, NULL);
}

ParameterizedTestParameters(layers, crossentropy_matches_reference_and_fd)
{
	static CeShape s[] = {{1, 1}, {1, 5}, {6, 3}, {7, 11}, {16, 32}};
	return cr_make_param_array(CeShape, s, sizeof s / sizeof s[0]);
}

ParameterizedTest(CeShape *s, layers, crossentropy_matches_reference_and_fd)
{
	const int N = s->N, V = s->V;
	const size_t n = (size_t)N * V;
	const float scale = 0.37f;
	char shape[48];
	snprintf(shape, sizeof shape, "N=%d V=%d", N, V);
	Rng r;
	rng_seed(&r, 10000);
	float *logits = falloc(n);
	int32_t *tg = calloc(N, sizeof(int32_t));
	fd_fill_normal(logits, n, &r, 2.0);
	/* A row far from 0 checks the max-subtraction (exp(200) overflows float). */
	if (N > 2)
		for (int j = 0; j < V; j++)
			logits[2 * V + j] += 200.0f;
	/* Targets: row 1 ignored, every third row at its argmax, others random. */
	for (int i = 0; i < N; i++) {
		int am = 0;
		for (int j = 1; j < V; j++)
			if (logits[i * V + j] > logits[i * V + am])
				am = j;
		tg[i] = i % 3 == 0 ? am : (int32_t)rng_below(&r, V);
	}
	if (N > 1)
		tg[1] = -1;

	/* Reference in double: -log softmax, count and argmax hits. */
	double want = 0.0;
	long want_count = 0, want_correct = 0;
	double *grad_ref = calloc(n, sizeof(double));
	for (int i = 0; i < N; i++) {
		if (tg[i] < 0)
			continue;
		const float *row = logits + (size_t)i * V;
		double mx = row[0], sum = 0.0;
		int am = 0;
		for (int j = 1; j < V; j++)
			if (row[j] > row[am])
				am = j;
		mx = row[am];
		for (int j = 0; j < V; j++)
			sum += exp(row[j] - mx);
		want += log(sum) - (row[tg[i]] - mx);
		want_count++;
		want_correct += am == tg[i];
		for (int j = 0; j < V; j++)
			grad_ref[(size_t)i * V + j] =
			    scale * (exp(row[j] - mx) / sum - (j == tg[i]));
	}

	/* grad_scale = 0: loss only, logits untouched; counters add to their values. */
	float *copy = fdup(logits, n);
	long count = 5, correct = 2;
	double loss =
	    crossentropy_forward_backward(copy, tg, N, V, 0.0f, &count, &correct);
	cr_assert(fabs(loss - want) <= 1e-5 * (1.0 + fabs(want)),
	          "crossentropy loss [%s]: %.9g vs %.9g", shape, loss, want);
	cr_assert_eq(count, 5 + want_count, "count [%s]: %ld, want %ld", shape, count,
	             5 + want_count);
	cr_assert_eq(correct, 2 + want_correct, "correct [%s]: %ld, want %ld", shape,
	             correct, 2 + want_correct);
	cr_assert(fd_max_diff(copy, logits, n) == 0.0,
	          "crossentropy with grad_scale = 0 modified the logits [%s]", shape);

	/* grad_scale != 0: same loss, logits replaced by the gradient. */
	double loss2 = crossentropy_forward_backward(copy, tg, N, V, scale, NULL, NULL);
	cr_assert(fabs(loss2 - loss) <= 1e-6 * (1.0 + fabs(loss)),
	          "crossentropy loss changes with grad_scale [%s]: %.9g vs %.9g", shape,
	          loss2, loss);
	for (size_t i = 0; i < n; i++)
		cr_assert(fabs(copy[i] - grad_ref[i]) <= 1e-6,
		          "crossentropy gradient [%s] element %zu: %.8g vs %.8g", shape,
		          i, copy[i], grad_ref[i]);
	if (N > 1)
		for (int j = 0; j < V; j++)
			cr_assert_eq(copy[V + j], 0.0f, "ignored row gradient must be 0");

	float *work = falloc(n);
	CeCtx c = {logits, work, tg, N, V, scale};
	expect_fd("crossentropy d(logits)", shape, logits, n, copy, ce_loss, &c);

	free(logits), free(tg), free(grad_ref), free(copy), free(work);
}

Test(layers, crossentropy_all_ignored_is_zero)
{
	float logits[6] = {1, 2, 3, 4, 5, 6};
	int32_t tg[2] = {-1, -1};
	long count = 0, correct = 0;
	double loss =
	    crossentropy_forward_backward(logits, tg, 2, 3, 1.0f, &count, &correct);
	cr_assert_eq(loss, 0.0);
	cr_assert_eq(count, 0);
	cr_assert_eq(correct, 0);
	for (int i = 0; i < 6; i++)
		cr_assert_eq(logits[i], 0.0f);
}

/* tokens_logprob_*: per-token log-probs and the other figures against a
 * double-precision reference, and the backward of sum_n coef[n] lp[n]
 * against finite differences. */
typedef struct LpCtx {
	const float *logits;
	float *work;
	const int32_t *targets;
	const float *coef;
	int N, V;
	TokenStats s;
} LpCtx;

static double lp_loss(void *ctx)
{
	LpCtx *c = ctx;
	tokens_logprob_forward(&c->s, c->logits, c->targets, c->N, c->V);
	double L = 0.0;
	for (int n = 0; n < c->N; n++)
		L += (double)c->coef[n] * c->s.lp[n];
	return L;
}

Test(layers, token_logprobs_match_reference_and_fd)
{
	const int N = 9, V = 13;
	const size_t n = (size_t)N * V;
	Rng r;
	rng_seed(&r, 4242);
	float *logits = falloc(n), *work = falloc(n), *coef = falloc(N);
	int32_t tg[9];
	fd_fill_normal(logits, n, &r, 2.0);
	for (int j = 0; j < V; j++)
		logits[4 * V + j] += 150.0f; /* exp overflows float without the max */
	for (int i = 0; i < N; i++) {
		tg[i] = (int32_t)rng_below(&r, V);
		coef[i] = (float)(rng_normal(&r) * 0.7);
	}
	tg[2] = -1;
	coef[6] = 0.0f;
	float lp[9], lse[9], wpo[9], ml[9], ent[9];
	uint8_t ok[9];
	LpCtx c = {logits, work, tg, coef, N, V, {lp, lse, wpo, ml, ent, ok}};
	lp_loss(&c);
	for (int i = 0; i < N; i++) {
		const float *l = logits + (size_t)i * V;
		if (tg[i] < 0) {
			cr_assert(lp[i] == 0.0f && ent[i] == 0.0f && ok[i] == 0);
			continue;
		}
		double mx = l[0], s = 0, s2 = 0, sz = 0, h = 0;
		int am = 0;
		for (int v = 1; v < V; v++)
			if (l[v] > mx)
				mx = l[v], am = v;
		for (int v = 0; v < V; v++) {
			s += exp(l[v] - mx);
			s2 += exp(2.0 * (l[v] - mx));
			sz += l[v];
		}
		for (int v = 0; v < V; v++) {
			double p = exp(l[v] - mx) / s;
			h -= p * log(p);
		}
		double want = l[tg[i]] - mx - log(s);
		cr_assert(fabs(lp[i] - want) < 1e-5 * (1 + fabs(want)), "lp[%d] %g vs %g",
		          i, (double)lp[i], want);
		cr_assert(fabs(lse[i] - (mx + log(s))) < 1e-5 * (1 + fabs(mx)));
		cr_assert(fabs(wpo[i] - (log(s2) - 2 * log(s))) < 1e-5, "wpo[%d]", i);
		cr_assert(fabs(ml[i] - sz / V) < 1e-4 * (1 + fabs(sz / V)),
		          "mean_logit[%d]", i);
		cr_assert(fabs(ent[i] - h) < 1e-5, "entropy[%d] %g vs %g", i,
		          (double)ent[i], h);
		cr_assert_eq(ok[i], am == tg[i]);
	}
	/* Backward: analytic d L / d z against central differences. */
	memcpy(work, logits, n * sizeof(float));
	tokens_logprob_backward(work, tg, lse, coef, N, V);
	double *num = calloc(n, sizeof(double));
	fd_numeric(num, logits, n, FD_H, lp_loss, &c);
	FdReport rep;
	double err = fd_error(work, num, n, &rep);
	cr_assert(err <= FD_TOL, "token logprob backward: err %g at %zu (%g vs %g)", err,
	          rep.worst, rep.analytic, rep.numeric);
	for (int v = 0; v < V; v++) {
		cr_assert_eq(work[2 * V + v], 0.0f, "ignored row has no gradient");
		cr_assert_eq(work[6 * V + v], 0.0f, "coef 0 row has no gradient");
	}
	free(num);
	free(logits);
	free(work);
	free(coef);
}

/* ---- short convolution (lfm2) ------------------------------------------------- */

typedef struct ConvShape {
	int B, T, C, K, bias,
	    packed; /* packed: two documents in row 0, padding in row 1 */
} ConvShape;

typedef struct ConvCtx {
	float *out, *bx, *proj, *w, *bias;
	const int32_t *doc;
	const float *G;
	int B, T, C, K;
} ConvCtx;

static double conv_loss(void *p)
{
	ConvCtx *c = p;
	shortconv_forward(c->out, c->bx, c->proj, c->w, c->bias, c->doc, c->B, c->T, c->C,
	                  c->K);
	return fd_dot(c->G, c->out, (size_t)c->B * c->T * c->C);
}

ParameterizedTestParameters(layers, shortconv_matches_naive_and_fd)
{
	static ConvShape s[] = {{1, 5, 3, 3, 0, 0},
	                        {2, 7, 4, 3, 1, 1},
	                        {2, 6, 5, 1, 0, 1},
	                        {1, 4, 2, 6, 1, 0},
	                        {3, 9, 8, 4, 0, 1}};
	return cr_make_param_array(ConvShape, s, sizeof s / sizeof s[0]);
}

ParameterizedTest(ConvShape *s, layers, shortconv_matches_naive_and_fd)
{
	int B = s->B, T = s->T, C = s->C, K = s->K;
	size_t N = (size_t)B * T;
	char shape[64];
	snprintf(shape, sizeof shape, "B=%d T=%d C=%d K=%d bias=%d packed=%d", B, T, C, K,
	         s->bias, s->packed);
	Rng r;
	rng_seed(&r, 7100 + (uint64_t)(B * 1000 + T * 100 + C * 10 + K));
	float *proj = falloc(N * 3 * C), *w = falloc((size_t)C * K), *bias = falloc(C);
	float *out = falloc(N * C), *bx = falloc(N * C), *ref = falloc(N * C),
	      *G = falloc(N * C);
	int32_t *doc = calloc(N, sizeof *doc);
	fd_fill_normal(proj, N * 3 * C, &r, 1.0);
	fd_fill_normal(w, (size_t)C * K, &r, 0.7);
	fd_fill_normal(bias, C, &r, 0.5);
	fd_fill_normal(G, N * C, &r, 1.0);
	for (int b = 0; b < B; b++)
		for (int t = 0; t < T; t++)
			doc[(size_t)b * T + t] = !s->packed   ? 0
			                         : b == 0     ? (t >= T / 2)
			                         : t >= T - 2 ? -1
			                                      : 0;
	float *bp = s->bias ? bias : NULL;
	shortconv_forward(out, bx, proj, w, bp, doc, B, T, C, K);
	shortconv_forward_naive(ref, proj, w, bp, doc, B, T, C, K);
	cr_assert_leq(fd_max_diff(out, ref, N * C), 1e-5,
	              "shortconv_forward [%s] vs naive", shape);
	/* Gated by hand at one entry: the first row sees only itself. */
	double want = proj[C + 0] * ((double)w[K - 1] * proj[0] * proj[2 * C] +
	                             (s->bias ? bias[0] : 0.0));
	cr_assert(fabs(out[0] - want) <= 1e-5 * (1.0 + fabs(want)),
	          "[%s] row 0: %g vs %g", shape, out[0], want);
	float *dproj = falloc(N * 3 * C), *dw = falloc((size_t)C * K), *db = falloc(C);
	shortconv_backward(dproj, dw, s->bias ? db : NULL, G, proj, bx, w, bp, doc, B, T,
	                   C, K);
	ConvCtx c = {out, bx, proj, w, bp, doc, G, B, T, C, K};
	expect_fd("shortconv d(proj)", shape, proj, N * 3 * C, dproj, conv_loss, &c);
	expect_fd("shortconv d(w)", shape, w, (size_t)C * K, dw, conv_loss, &c);
	if (s->bias)
		expect_fd("shortconv d(bias)", shape, bias, C, db, conv_loss, &c);
	/* The backward adds into what the buffers held. */
	float *pre = falloc(N * 3 * C), *prew = falloc((size_t)C * K);
	fd_fill_normal(pre, N * 3 * C, &r, 1.0);
	fd_fill_normal(prew, (size_t)C * K, &r, 1.0);
	float *acc = fdup(pre, N * 3 * C), *accw = fdup(prew, (size_t)C * K);
	shortconv_forward(out, bx, proj, w, bp, doc, B, T, C, K);
	shortconv_backward(acc, accw, NULL, G, proj, bx, w, bp, doc, B, T, C, K);
	expect_accum("shortconv d(proj)", shape, acc, pre, dproj, N * 3 * C);
	expect_accum("shortconv d(w)", shape, accw, prew, dw, (size_t)C * K);
	free(proj), free(w), free(bias), free(out), free(bx), free(ref), free(G),
	    free(doc);
	free(dproj), free(dw), free(db), free(pre), free(prew), free(acc), free(accw);
}

/* A packed second document starts from zeros: its outputs equal the same
 * tokens run alone as their own row. */
Test(layers, shortconv_packed_documents_are_independent)
{
	const int T = 8, C = 3, K = 3, T2 = 5;
	Rng r;
	rng_seed(&r, 7200);
	float proj[8 * 9], w[9], out[8 * 3], bx[8 * 3], alone[5 * 3], bx2[5 * 3];
	int32_t doc[8] = {0, 0, 0, 1, 1, 1, 1, 1}, doc2[5] = {0};
	fd_fill_normal(proj, sizeof proj / sizeof *proj, &r, 1.0);
	fd_fill_normal(w, 9, &r, 1.0);
	shortconv_forward(out, bx, proj, w, NULL, doc, 1, T, C, K);
	shortconv_forward(alone, bx2, proj + 3 * 9, w, NULL, doc2, 1, T2, C, K);
	cr_assert_leq(fd_max_diff(out + 3 * 3, alone, (size_t)T2 * C), 0.0,
	              "the second document saw the first");
}

/* max |a - b| / max |b|: the error of a relative to the scale of b. */
static double rel_max_diff(const float *a, const float *b, size_t n)
{
	double scale = 0.0;
	for (size_t i = 0; i < n; i++)
		scale = fmax(scale, fabs((double)b[i]));
	return fd_max_diff(a, b, n) / (scale > 0.0 ? scale : 1.0);
}

static double conv_fft_loss(void *p)
{
	ConvCtx *c = p;
	cr_assert_eq(shortconv_forward_fft(c->out, c->bx, c->proj, c->w, c->bias, c->doc,
	                                   c->B, c->T, c->C, c->K),
	             0);
	return fd_dot(c->G, c->out, (size_t)c->B * c->T * c->C);
}

/* The FFT path against the naive forward and the direct backward, on
 * kernels from 1 tap to longer than a document, with documents longer than
 * one overlap-save block (K = 3, 17), packed documents, padding and B > 1;
 * its backward also against finite differences of its own forward. K = 200
 * also takes the direct kernel through several chunks of taps. */
ParameterizedTestParameters(layers, shortconv_fft_matches_direct_and_fd)
{
	static ConvShape s[] = {{1, 12, 3, 1, 0, 0},    {2, 300, 4, 3, 1, 1},
	                        {2, 400, 3, 17, 0, 1},  {3, 100, 4, 64, 1, 1},
	                        {2, 260, 2, 200, 1, 1}, {1, 90, 3, 200, 0, 0}};
	return cr_make_param_array(ConvShape, s, sizeof s / sizeof s[0]);
}

ParameterizedTest(ConvShape *s, layers, shortconv_fft_matches_direct_and_fd)
{
	int B = s->B, T = s->T, C = s->C, K = s->K;
	size_t N = (size_t)B * T, NW = (size_t)C * K;
	char shape[64];
	snprintf(shape, sizeof shape, "B=%d T=%d C=%d K=%d bias=%d packed=%d", B, T, C, K,
	         s->bias, s->packed);
	Rng r;
	rng_seed(&r, 7300 + (uint64_t)(B * 100000 + T * 100 + C * 10 + K));
	float *proj = falloc(N * 3 * C), *w = falloc(NW), *bias = falloc(C);
	float *out = falloc(N * C), *bx = falloc(N * C), *ref = falloc(N * C),
	      *G = falloc(N * C);
	int32_t *doc = calloc(N, sizeof *doc);
	fd_fill_normal(proj, N * 3 * C, &r, 1.0);
	fd_fill_normal(w, NW, &r, 0.7 / sqrt((double)K));
	fd_fill_normal(bias, C, &r, 0.5);
	fd_fill_normal(G, N * C, &r, 1.0);
	for (int b = 0; b < B; b++)
		for (int t = 0; t < T; t++)
			doc[(size_t)b * T + t] = !s->packed   ? 0
			                         : b == 0     ? (t >= T / 2)
			                         : t >= T - 2 ? -1
			                                      : 0;
	float *bp = s->bias ? bias : NULL;
	shortconv_forward_naive(ref, proj, w, bp, doc, B, T, C, K);
	cr_assert_eq(shortconv_forward_fft(out, bx, proj, w, bp, doc, B, T, C, K), 0,
	             "[%s] the FFT path declined", shape);
	double e = rel_max_diff(out, ref, N * C);
	cr_assert(e <= 1e-5, "shortconv_forward_fft [%s] vs naive: relative error %.3g",
	          shape, e);
	shortconv_forward_direct(out, bx, proj, w, bp, doc, B, T, C, K);
	e = rel_max_diff(out, ref, N * C);
	cr_assert(e <= 1e-5,
	          "shortconv_forward_direct [%s] vs naive: relative error %.3g", shape,
	          e);
	shortconv_forward(out, bx, proj, w, bp, doc, B, T, C, K);
	e = rel_max_diff(out, ref, N * C);
	cr_assert(e <= 1e-5, "shortconv_forward [%s] vs naive: relative error %.3g",
	          shape, e);

	float *dproj = falloc(N * 3 * C), *dw = falloc(NW), *db = falloc(C);
	float *rproj = falloc(N * 3 * C), *rw = falloc(NW), *rb = falloc(C);
	cr_assert_eq(
	    shortconv_backward_fft(dproj, dw, db, G, proj, bx, w, bp, doc, B, T, C, K),
	    0);
	shortconv_backward_direct(rproj, rw, rb, G, proj, bx, w, bp, doc, B, T, C, K);
	e = rel_max_diff(dproj, rproj, N * 3 * C);
	cr_assert(e <= 1e-5, "shortconv_backward_fft d(proj) [%s] vs direct: %.3g", shape,
	          e);
	e = rel_max_diff(dw, rw, NW);
	cr_assert(e <= 1e-5, "shortconv_backward_fft d(w) [%s] vs direct: %.3g", shape,
	          e);
	e = rel_max_diff(db, rb, C);
	cr_assert(e <= 1e-5, "shortconv_backward_fft d(bias) [%s] vs direct: %.3g", shape,
	          e);

	ConvCtx c = {out, bx, proj, w, bp, doc, G, B, T, C, K};
	expect_fd("shortconv_fft d(proj)", shape, proj, N * 3 * C, dproj, conv_fft_loss,
	          &c);
	expect_fd("shortconv_fft d(w)", shape, w, NW, dw, conv_fft_loss, &c);
	if (s->bias)
		expect_fd("shortconv_fft d(bias)", shape, bias, C, db, conv_fft_loss, &c);

	/* The backward adds into what the buffers held; NULL skips a gradient. */
	float *pre = falloc(N * 3 * C), *prew = falloc(NW);
	fd_fill_normal(pre, N * 3 * C, &r, 1.0);
	fd_fill_normal(prew, NW, &r, 1.0);
	float *acc = fdup(pre, N * 3 * C), *accw = fdup(prew, NW);
	shortconv_forward_fft(out, bx, proj, w, bp, doc, B, T, C, K);
	shortconv_backward_fft(acc, NULL, NULL, G, proj, bx, w, bp, doc, B, T, C, K);
	shortconv_backward_fft(NULL, accw, NULL, G, proj, bx, w, bp, doc, B, T, C, K);
	expect_accum("shortconv_fft d(proj)", shape, acc, pre, dproj, N * 3 * C);
	expect_accum("shortconv_fft d(w)", shape, accw, prew, dw, NW);
	free(proj), free(w), free(bias), free(out), free(bx), free(ref), free(G),
	    free(doc);
	free(dproj), free(dw), free(db), free(rproj), free(rw), free(rb);
	free(pre), free(prew), free(acc), free(accw);
}

/* A document id that comes back within K rows after another id: the direct
 * kernel joins the two runs, so the FFT path declines (writing nothing) and
 * shortconv_forward/backward take the direct kernel. */
Test(layers, shortconv_fft_declines_resumed_documents)
{
	const int T = 8, C = 2, K = TRL_CONV_FFT_MIN_KERNEL;
	Rng r;
	rng_seed(&r, 7400);
	float proj[8 * 6], out[8 * 2], bx[8 * 2], ref[8 * 2], *w = falloc((size_t)C * K);
	int32_t doc[8] = {0, 0, 0, 1, 1, 0, 0, 0};
	fd_fill_normal(proj, sizeof proj / sizeof *proj, &r, 1.0);
	fd_fill_normal(w, (size_t)C * K, &r, 1.0);
	for (int i = 0; i < T * C; i++)
		out[i] = bx[i] = 42.0f;
	cr_assert_eq(shortconv_forward_fft(out, bx, proj, w, NULL, doc, 1, T, C, K), -1);
	for (int i = 0; i < T * C; i++)
		cr_assert(out[i] == 42.0f && bx[i] == 42.0f, "declined but wrote row %d",
		          i / C);
	shortconv_forward(out, bx, proj, w, NULL, doc, 1, T, C, K);
	shortconv_forward_naive(ref, proj, w, NULL, doc, 1, T, C, K);
	cr_assert_leq(rel_max_diff(out, ref, (size_t)T * C), 1e-5,
	              "shortconv_forward did not fall back to the direct kernel");
	float dproj[8 * 6] = {0};
	cr_assert_eq(shortconv_backward_fft(dproj, NULL, NULL, out, proj, bx, w, NULL,
	                                    doc, 1, T, C, K),
	             -1);
	for (int i = 0; i < T * 3 * C; i++)
		cr_assert_eq(dproj[i], 0.0f, "declined backward wrote dproj");
	free(w);
}

/* ---- gemm.h: bf16 products ------------------------------------------------ */

/* C = op(A) op(B) (+ C) in double from bf16-rounded inputs: what a bf16 gemm
 * must give up to fp32 summation. */
static void gemm_ref_bf16(int ta, int tb, int M, int N, int K, const float *A, int lda,
                          const float *B, int ldb, float beta, double *C, int ldc)
{
	for (int i = 0; i < M; i++)
		for (int j = 0; j < N; j++) {
			double s = beta != 0.0f ? C[(size_t)i * ldc + j] : 0.0;
			for (int k = 0; k < K; k++) {
				float a =
				    ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
				float b =
				    tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
				s += (double)gemm_bf16_round(a) * gemm_bf16_round(b);
			}
			C[(size_t)i * ldc + j] = s;
		}
}

Test(layers, bf16_round_is_nearest_even)
{
	cr_assert_eq(gemm_bf16_round(1.0f), 1.0f);
	/* 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to even (1). */
	cr_assert_eq(gemm_bf16_round(1.0f + 0x1p-8f), 1.0f);
	cr_assert_eq(gemm_bf16_round(1.0f + 0x1p-8f + 0x1p-20f), 1.0f + 0x1p-7f);
	cr_assert_eq(gemm_bf16_round(1.0f + 3 * 0x1p-8f), 1.0f + 0x1p-6f);
	cr_assert(isnan(gemm_bf16_round(NAN)));
	cr_assert(isinf(gemm_bf16_round(INFINITY)));
}

Test(layers, bf16_gemm_matches_rounded_reference)
{
	if (!gemm_have_dnnl())
		cr_skip_test("built without oneDNN");
	TrlErr err = {0};
	cr_assert_eq(gemm_set_precision(GEMM_BF16, &err), 0, "%s", err.msg);
	/* Odd sizes, padded leading dimensions, every transpose, both betas. */
	const int M = 37, N = 29, K = 53, pad = 3;
	Rng r;
	rng_seed(&r, 5);
	size_t big = (size_t)(K + pad) * (M + N + pad);
	float *A = malloc(big * sizeof *A), *B = malloc(big * sizeof *B);
	float *C = malloc((size_t)M * (N + pad) * sizeof *C);
	double *R = malloc((size_t)M * (N + pad) * sizeof *R);
	for (size_t i = 0; i < big; i++) {
		A[i] = (float)rng_normal(&r);
		B[i] = (float)rng_normal(&r);
	}
	for (int ta = 0; ta < 2; ta++)
		for (int tb = 0; tb < 2; tb++)
			for (int acc = 0; acc < 2; acc++) {
				int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad,
				    ldc = N + pad;
				for (int i = 0; i < M * ldc; i++)
					R[i] = C[i] = (float)(i % 7) - 3.0f;
				gemm(ta, tb, M, N, K, A, lda, B, ldb, acc ? 1.0f : 0.0f,
				     C, ldc, 0);
				gemm_ref_bf16(ta, tb, M, N, K, A, lda, B, ldb,
				              acc ? 1.0f : 0.0f, R, ldc);
				double worst = 0;
				for (int i = 0; i < M; i++)
					for (int j = 0; j < N; j++) {
						double d =
						    fabs(C[i * ldc + j] - R[i * ldc + j]);
						worst = d > worst ? d : worst;
					}
				/* fp32 sums of 53 products of size ~1: ~1e-5 */
				cr_assert(worst < 1e-4, "ta %d tb %d beta %d: off by %g",
				          ta, tb, acc, worst);
				/* The padding columns of C are never written. */
				for (int i = 0; i < M; i++)
					for (int j = N; j < ldc; j++)
						cr_assert_eq(C[i * ldc + j],
						             (float)((i * ldc + j) % 7) -
						                 3.0f);
			}
	/* Not fp32: the rounding shows against an fp32 product. */
	float c32 = 0, cb = 0;
	gemm(0, 1, 1, 1, K, A, K, B, K, 0.0f, &cb, 1, 0);
	for (int k = 0; k < K; k++)
		c32 += A[k] * B[k];
	cr_assert(fabsf(c32 - cb) > 1e-6f, "bf16 gave the fp32 product %g", c32);
	gemm_set_precision(GEMM_FP32, &err);
	free(A);
	free(B);
	free(C);
	free(R);
}

/* Inside a scope a weight is rounded once: a change to it shows only after
 * gemm_forget; outside scopes every call sees the current values. */
Test(layers, bf16_weight_scope_keeps_and_forgets)
{
	if (!gemm_have_dnnl())
		cr_skip_test("built without oneDNN");
	TrlErr err = {0};
	cr_assert_eq(gemm_set_precision(GEMM_BF16, &err), 0, "%s", err.msg);
	float x[4] = {1, 2, 3, 4}, w[8] = {1, 1, 1, 1, 0, 0, 0, 1}, y[2];
	gemm_scope_begin();
	gemm(0, 1, 1, 2, 4, x, 4, w, 4, 0.0f, y, 2, 1);
	cr_assert(y[0] == 10 && y[1] == 4);
	w[0] = 5; /* the promise is broken on purpose: the kept copy is used */
	gemm(0, 1, 1, 2, 4, x, 4, w, 4, 0.0f, y, 2, 1);
	cr_assert_eq(y[0], 10);
	cr_assert(gemm_cache_bytes() >= 8 * sizeof(uint16_t));
	gemm_forget(w + 2, 1);
	gemm(0, 1, 1, 2, 4, x, 4, w, 4, 0.0f, y, 2, 1);
	cr_assert_eq(y[0], 14);
	w[0] = 1;
	gemm_forget_all();
	gemm(0, 1, 1, 2, 4, x, 4, w, 4, 0.0f, y, 2, 1);
	cr_assert_eq(y[0], 10);
	gemm_scope_end();
	w[0] = 2;
	gemm(0, 1, 1, 2, 4, x, 4, w, 4, 0.0f, y, 2, 1);
	cr_assert_eq(y[0], 11);
	gemm_set_precision(GEMM_FP32, &err);
}

Test(layers, bf16_refused_without_dnnl)
{
	if (gemm_have_dnnl())
		cr_skip_test("built with oneDNN");
	TrlErr err = {0};
	cr_assert_eq(gemm_set_precision(GEMM_BF16, &err), TRL_EUNSUPPORTED);
	cr_assert(strstr(err.msg, "libdnnl-dev"), "got: %s", err.msg);
	cr_assert_eq(gemm_precision(), GEMM_FP32);
}
