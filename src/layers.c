/* layers.c - forward and backward of every transformer layer (gemm.h + OpenMP). */
#include "layers.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "gemm.h"

/* The block [*c0, *c1) of C columns that the calling OpenMP thread owns. Weight
 * gradients are summed over rows; splitting the columns instead of the rows
 * means no two threads ever add into the same entry. */
static void thread_columns(int C, int *c0, int *c1)
{
	int nt = omp_get_num_threads(), t = omp_get_thread_num();
	*c0 = (int)((long)C * t / nt);
	*c1 = (int)((long)C * (t + 1) / nt);
}

/* ---- matmul ---------------------------------------------------------------- */

static void add_bias_rows(float *out, const float *bias, int N, int OC)
{
#pragma omp parallel for schedule(static)
	for (int n = 0; n < N; n++) {
		float *o = out + (size_t)n * OC;
		for (int c = 0; c < OC; c++)
			o[c] += bias[c];
	}
}

static void gemm_xw(float *out, const float *in, const float *w, int N, int IC, int OC,
                    TrlWLayout layout, float beta)
{
	if (layout == TRL_W_OUT_IN)
		gemm(0, 1, N, OC, IC, in, IC, w, IC, beta, out, OC, 1);
	else
		gemm(0, 0, N, OC, IC, in, IC, w, OC, beta, out, OC, 1);
}

void matmul_forward(float *out, const float *in, const float *w, const float *bias, int N,
                    int IC, int OC, TrlWLayout layout)
{
	gemm_xw(out, in, w, N, IC, OC, layout, 0.0f);
	if (bias)
		add_bias_rows(out, bias, N, OC);
}

void matmul_forward_add(float *out, const float *in, const float *w, const float *bias,
                        int N, int IC, int OC, TrlWLayout layout)
{
	gemm_xw(out, in, w, N, IC, OC, layout, 1.0f);
	if (bias)
		add_bias_rows(out, bias, N, OC);
}

void matmul_backward(float *din, float *dw, float *dbias, const float *dout,
                     const float *in, const float *w, int N, int IC, int OC,
                     TrlWLayout layout)
{
	if (din) {
		if (layout == TRL_W_OUT_IN) /* din (N,IC) += dout (N,OC) W (OC,IC) */
			gemm(0, 0, N, IC, OC, dout, OC, w, IC, 1.0f, din, IC, 1);
		else /* din += dout W^T, W (IC,OC) */
			gemm(0, 1, N, IC, OC, dout, OC, w, OC, 1.0f, din, IC, 1);
	}
	if (dw) {
		if (layout == TRL_W_OUT_IN) /* dW (OC,IC) += dout^T in */
			gemm(1, 0, OC, IC, N, dout, OC, in, IC, 1.0f, dw, IC, 0);
		else /* dW (IC,OC) += in^T dout */
			gemm(1, 0, IC, OC, N, in, IC, dout, OC, 1.0f, dw, OC, 0);
	}
	if (dbias) {
#pragma omp parallel
		{
			int c0, c1;
			thread_columns(OC, &c0, &c1);
			for (int n = 0; n < N; n++) {
				const float *d = dout + (size_t)n * OC;
				for (int c = c0; c < c1; c++)
					dbias[c] += d[c];
			}
		}
	}
}

void matmul_forward_naive(float *out, const float *in, const float *w, const float *bias,
                          int N, int IC, int OC, TrlWLayout layout)
{
	for (int n = 0; n < N; n++)
		for (int o = 0; o < OC; o++) {
			double acc = bias ? bias[o] : 0.0;
			for (int i = 0; i < IC; i++) {
				float wv = layout == TRL_W_OUT_IN ? w[(size_t)o * IC + i]
				                                  : w[(size_t)i * OC + o];
				acc += (double)in[(size_t)n * IC + i] * wv;
			}
			out[(size_t)n * OC + o] = (float)acc;
		}
}

/* ---- embeddings ------------------------------------------------------------ */

void embedding_forward(float *out, const int32_t *ids, const int32_t *pos,
                       const float *wte, const float *wpe, int N, int C)
{
#pragma omp parallel for schedule(static)
	for (int n = 0; n < N; n++) {
		float *o = out + (size_t)n * C;
		const float *e = wte + (size_t)ids[n] * C;
		if (wpe) {
			const float *p = wpe + (size_t)pos[n] * C;
			for (int c = 0; c < C; c++)
				o[c] = e[c] + p[c];
		} else {
			memcpy(o, e, (size_t)C * sizeof *o);
		}
	}
}

void embedding_backward(float *dwte, float *dwpe, const float *dout, const int32_t *ids,
                        const int32_t *pos, int N, int C)
{
	/* Rows may repeat (the same token twice): threads split the channels. */
#pragma omp parallel
	{
		int c0, c1;
		thread_columns(C, &c0, &c1);
		for (int n = 0; n < N; n++) {
			const float *d = dout + (size_t)n * C;
			if (dwte) {
				float *g = dwte + (size_t)ids[n] * C;
				for (int c = c0; c < c1; c++)
					g[c] += d[c];
			}
			if (dwpe) {
				float *g = dwpe + (size_t)pos[n] * C;
				for (int c = c0; c < c1; c++)
					g[c] += d[c];
			}
		}
	}
}

/* ---- norms ----------------------------------------------------------------- */

void rmsnorm_forward(float *out, float *rstd, const float *in, const float *w, int N,
                     int C, float eps)
{
#pragma omp parallel for schedule(static)
	for (int n = 0; n < N; n++) {
		const float *x = in + (size_t)n * C;
		float *o = out + (size_t)n * C;
		double ss = 0.0;
		for (int c = 0; c < C; c++)
			ss += (double)x[c] * x[c];
		float r = (float)(1.0 / sqrt(ss / C + eps));
		rstd[n] = r;
		for (int c = 0; c < C; c++)
			o[c] = x[c] * r * w[c];
	}
}

void rmsnorm_backward(float *din, float *dw, const float *dout, const float *in,
                      const float *w, const float *rstd, int N, int C)
{
	/* y = w * x * r with r = (mean(x^2) + eps)^-1/2, so
	 * dx = r * (g - x * r^2 * mean(g * x)) where g = dy * w. */
	if (din) {
#pragma omp parallel for schedule(static)
		for (int n = 0; n < N; n++) {
			const float *x = in + (size_t)n * C, *d = dout + (size_t)n * C;
			float *dx = din + (size_t)n * C;
			float r = rstd[n];
			double dot = 0.0;
			for (int c = 0; c < C; c++)
				dot += (double)d[c] * w[c] * x[c];
			float k = (float)(dot / C) * r * r;
			for (int c = 0; c < C; c++)
				dx[c] += r * (d[c] * w[c] - x[c] * k);
		}
	}
	if (dw) {
#pragma omp parallel
		{
			int c0, c1;
			thread_columns(C, &c0, &c1);
			for (int n = 0; n < N; n++) {
				const float *x = in + (size_t)n * C,
				            *d = dout + (size_t)n * C;
				float r = rstd[n];
				for (int c = c0; c < c1; c++)
					dw[c] += d[c] * x[c] * r;
			}
		}
	}
}

void layernorm_forward(float *out, float *mean, float *rstd, const float *in,
                       const float *w, const float *b, int N, int C, float eps)
{
#pragma omp parallel for schedule(static)
	for (int n = 0; n < N; n++) {
		const float *x = in + (size_t)n * C;
		float *o = out + (size_t)n * C;
		double s = 0.0;
		for (int c = 0; c < C; c++)
			s += x[c];
		double mu = s / C, v = 0.0;
		for (int c = 0; c < C; c++) {
			double dx = x[c] - mu;
			v += dx * dx;
		}
		float m = (float)mu, r = (float)(1.0 / sqrt(v / C + eps));
		mean[n] = m;
		rstd[n] = r;
		for (int c = 0; c < C; c++)
			o[c] = (x[c] - m) * r * w[c] + b[c];
	}
}

void layernorm_backward(float *din, float *dw, float *db, const float *dout,
                        const float *in, const float *w, const float *mean,
                        const float *rstd, int N, int C)
{
	/* xhat = (x - mean) r; g = dy * w;
	 * dx = r * (g - mean(g) - xhat * mean(g * xhat)). */
	if (din) {
#pragma omp parallel for schedule(static)
		for (int n = 0; n < N; n++) {
			const float *x = in + (size_t)n * C, *d = dout + (size_t)n * C;
			float *dx = din + (size_t)n * C;
			float m = mean[n], r = rstd[n];
			double sg = 0.0, sgx = 0.0;
			for (int c = 0; c < C; c++) {
				float g = d[c] * w[c];
				sg += g;
				sgx += (double)g * (x[c] - m) * r;
			}
			float mg = (float)(sg / C), mgx = (float)(sgx / C);
			for (int c = 0; c < C; c++) {
				float xhat = (x[c] - m) * r;
				dx[c] += r * (d[c] * w[c] - mg - xhat * mgx);
			}
		}
	}
	if (dw || db) {
#pragma omp parallel
		{
			int c0, c1;
			thread_columns(C, &c0, &c1);
			for (int n = 0; n < N; n++) {
				const float *x = in + (size_t)n * C,
				            *d = dout + (size_t)n * C;
				float m = mean[n], r = rstd[n];
				for (int c = c0; c < c1; c++) {
					if (dw)
						dw[c] += d[c] * (x[c] - m) * r;
					if (db)
						db[c] += d[c];
				}
			}
		}
	}
}

/* ---- rotary embeddings ----------------------------------------------------- */

/* Rotates every head of each row by its position's angles; sign = +1 forward,
 * -1 for the inverse rotation (the backward of a rotation is its transpose). */
static void rope_apply(float *x, const int32_t *pos, int N, int H, int D, float theta,
                       float sign)
{
	int half = D / 2;
#pragma omp parallel
	{
		/* D is a head dimension (<= 256 in practice); the table of one row's
		 * cos/sin is shared by all H heads of that row. */
		float cs[512], sn[512];
#pragma omp for schedule(static)
		for (int n = 0; n < N; n++) {
			for (int i = 0; i < half && i < 512; i++) {
				double inv = pow((double)theta, -2.0 * i / D);
				double a = (double)pos[n] * inv;
				cs[i] = (float)cos(a);
				sn[i] = sign * (float)sin(a);
			}
			for (int h = 0; h < H; h++) {
				float *v = x + ((size_t)n * H + h) * D;
				for (int i = 0; i < half; i++) {
					float x1 = v[i], x2 = v[i + half];
					v[i] = x1 * cs[i] - x2 * sn[i];
					v[i + half] = x2 * cs[i] + x1 * sn[i];
				}
			}
		}
	}
}

void rope_forward(float *x, const int32_t *pos, int N, int H, int D, float theta)
{
	rope_apply(x, pos, N, H, D, theta, 1.0f);
}

void rope_backward(float *dx, const int32_t *pos, int N, int H, int D, float theta)
{
	rope_apply(dx, pos, N, H, D, theta, -1.0f);
}

/* ---- activations ----------------------------------------------------------- */

#define GELU_K 0.7978845608028654f /* sqrt(2 / pi) */

/* GELU with the tanh approximation, 0.5 x (1 + tanh(u)), u = K (x + 0.044715 x^3),
 * computed as x * sigmoid(2u): the same function (0.5 (1 + tanh(u)) equals
 * sigmoid(2u) exactly) with one expf instead of tanhf, which is several
 * times slower and was a fifth of a small model's step. */
void gelu_forward(float *out, const float *in, size_t n)
{
#pragma omp parallel for schedule(static)
	for (size_t i = 0; i < n; i++) {
		float x = in[i];
		float u = GELU_K * (x + 0.044715f * x * x * x);
		out[i] = x / (1.0f + expf(-2.0f * u));
	}
}

void gelu_backward(float *din, const float *dout, const float *in, size_t n)
{
	/* d/dx [x s(2u)] = s + x s (1 - s) 2 u'(x), s = sigmoid(2u). */
#pragma omp parallel for schedule(static)
	for (size_t i = 0; i < n; i++) {
		float x = in[i];
		float u = GELU_K * (x + 0.044715f * x * x * x);
		float s = 1.0f / (1.0f + expf(-2.0f * u));
		float du = GELU_K * (1.0f + 3.0f * 0.044715f * x * x);
		din[i] += dout[i] * (s + 2.0f * x * s * (1.0f - s) * du);
	}
}

void swiglu_forward(float *out, const float *gate, const float *up, size_t n)
{
#pragma omp parallel for schedule(static)
	for (size_t i = 0; i < n; i++) {
		float g = gate[i];
		out[i] = g / (1.0f + expf(-g)) * up[i];
	}
}

void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                     const float *up, size_t n)
{
#pragma omp parallel for schedule(static)
	for (size_t i = 0; i < n; i++) {
		float g = gate[i], s = 1.0f / (1.0f + expf(-g));
		float silu = g * s;
		if (dup)
			dup[i] += dout[i] * silu;
		if (dgate)
			dgate[i] += dout[i] * up[i] * s * (1.0f + g * (1.0f - s));
	}
}

/* ---- attention ------------------------------------------------------------- */

/* Key s is visible to query t: itself, or an earlier token of the same
 * document. Padding (doc -1) is no document, so a pad sees only itself. */
static inline int att_allowed(const int32_t *doc, int t, int s)
{
	return s == t || (s < t && doc[t] >= 0 && doc[s] == doc[t]);
}

void attention_forward(float *out, float *lse, const float *q, const float *k,
                       const float *v, const int32_t *doc, int B, int T, int H, int KV,
                       int D)
{
	attention_forward_strided(out, lse, q, k, v, H * D, KV * D, doc, B, T, H, KV, D);
}

/* Query and key blocks of the blocked kernels: a (ATT_BQ, ATT_BK) tile of
 * scores stays in L1/L2 while it is used. */
#define ATT_BQ 64
#define ATT_BK 64

/* Scores of the tile (rows t0.., keys s0..) of one head into S (nq, nk),
 * scaled, with -INFINITY where the mask forbids the pair; returns whether any
 * pair is allowed. */
static int att_tile_scores(float *S, const float *qh, int ldq, const float *kh, int ldkv,
                           const int32_t *db, int t0, int nq, int s0, int nk, int D,
                           float scale)
{
	/* The mask first (0 or -inf), so a tile with nothing visible (another
	 * packed document) costs no product; then S += scale Q K^T. */
	int any = 0;
	for (int i = 0; i < nq; i++)
		for (int j = 0; j < nk; j++) {
			int ok = att_allowed(db, t0 + i, s0 + j);
			any |= ok;
			S[(size_t)i * nk + j] = ok ? 0.0f : -INFINITY;
		}
	if (any)
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, D, scale,
		            qh + (size_t)t0 * ldq, ldq, kh + (size_t)s0 * ldkv, ldkv,
		            1.0f, S, nk);
	return any;
}

void attention_forward_strided(float *out, float *lse, const float *q, const float *k,
                               const float *v, int ldq, int ldkv, const int32_t *doc,
                               int B, int T, int H, int KV, int D)
{
	int HD = H * D, group = H / KV;
	float scale = 1.0f / sqrtf((float)D);
	/* Blocks of queries against the keys up to them, with a running max and
	 * sum per row (the online softmax): the (T, T) scores are never stored
	 * and the blocks above the diagonal are never computed. */
#pragma omp parallel for schedule(dynamic, 1)
	for (int task = 0; task < B * H * ((T + ATT_BQ - 1) / ATT_BQ); task++) {
		int nqb = (T + ATT_BQ - 1) / ATT_BQ;
		int bh = task / nqb, t0 = (task % nqb) * ATT_BQ;
		int b = bh / H, h = bh % H, kvh = h / group;
		int nq = T - t0 < ATT_BQ ? T - t0 : ATT_BQ;
		const float *qh = q + (size_t)b * T * ldq + (size_t)h * D;
		const float *kh = k + (size_t)b * T * ldkv + (size_t)kvh * D;
		const float *vh = v + (size_t)b * T * ldkv + (size_t)kvh * D;
		float *oh = out + (size_t)b * T * HD + (size_t)h * D;
		const int32_t *db = doc + (size_t)b * T;
		float S[ATT_BQ * ATT_BK], mx[ATT_BQ], sum[ATT_BQ];
		for (int i = 0; i < nq; i++) {
			mx[i] = -INFINITY;
			sum[i] = 0.0f;
			memset(oh + (size_t)(t0 + i) * HD, 0, (size_t)D * sizeof(float));
		}
		for (int s0 = 0; s0 < t0 + nq; s0 += ATT_BK) {
			int nk = t0 + nq - s0 < ATT_BK ? t0 + nq - s0 : ATT_BK;
			if (!att_tile_scores(S, qh, ldq, kh, ldkv, db, t0, nq, s0, nk, D,
			                     scale))
				continue;
			for (int i = 0; i < nq; i++) {
				float *r = S + (size_t)i * nk, m = mx[i];
				for (int j = 0; j < nk; j++)
					m = r[j] > m ? r[j] : m;
				if (m == -INFINITY)
					continue; /* nothing visible in this tile */
				float corr = expf(mx[i] - m), add = 0.0f;
				for (int j = 0; j < nk; j++) {
					r[j] = expf(r[j] - m);
					add += r[j];
				}
				sum[i] = sum[i] * corr + add;
				mx[i] = m;
				if (corr != 1.0f) {
					float *o = oh + (size_t)(t0 + i) * HD;
					for (int d = 0; d < D; d++)
						o[d] *= corr;
				}
			}
			/* Rows with nothing visible hold exp(-inf) = 0 in S. */
			for (int i = 0; i < nq; i++)
				if (mx[i] == -INFINITY)
					memset(S + (size_t)i * nk, 0,
					       (size_t)nk * sizeof(float));
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, D, nk,
			            1.0f, S, nk, vh + (size_t)s0 * ldkv, ldkv, 1.0f,
			            oh + (size_t)t0 * HD, HD);
		}
		for (int i = 0; i < nq; i++) {
			float inv = 1.0f / sum[i], *o = oh + (size_t)(t0 + i) * HD;
			for (int d = 0; d < D; d++)
				o[d] *= inv;
			lse[(size_t)bh * T + t0 + i] = mx[i] + logf(sum[i]);
		}
	}
}

size_t attention_scratch_floats(void)
{
	return 2 * (size_t)ATT_BQ * ATT_BK + ATT_BQ;
}

void attention_backward(float *dq, float *dk, float *dv, float *scratch, int n_scratch,
                        const float *dout, const float *q, const float *k, const float *v,
                        const float *out, const float *lse, const int32_t *doc, int B,
                        int T, int H, int KV, int D)
{
	attention_backward_strided(dq, dk, dv, scratch, n_scratch, dout, q, k, v, H * D,
	                           KV * D, out, lse, doc, B, T, H, KV, D);
}

void attention_backward_strided(float *dq, float *dk, float *dv, float *scratch,
                                int n_scratch, const float *dout, const float *q,
                                const float *k, const float *v, int ldq, int ldkv,
                                const float *out, const float *lse, const int32_t *doc,
                                int B, int T, int H, int KV, int D)
{
	int HD = H * D, group = H / KV;
	float scale = 1.0f / sqrtf((float)D);
	/* One task per (batch row, key/value head): the query heads that share a
	 * key/value head all add into the same dK, dV, so they stay in one task.
	 * Each tile's probabilities are recomputed from the scores and the
	 * forward's log-sum-exp. */
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_scratch)
	for (int bk = 0; bk < B * KV; bk++) {
		int b = bk / KV, kvh = bk % KV;
		float *P =
		    scratch + (size_t)omp_get_thread_num() * attention_scratch_floats();
		float *dP = P + (size_t)ATT_BQ * ATT_BK,
		      *drow = dP + (size_t)ATT_BQ * ATT_BK;
		const float *kh = k + (size_t)b * T * ldkv + (size_t)kvh * D;
		const float *vh = v + (size_t)b * T * ldkv + (size_t)kvh * D;
		float *dkh = dk + (size_t)b * T * ldkv + (size_t)kvh * D;
		float *dvh = dv + (size_t)b * T * ldkv + (size_t)kvh * D;
		const int32_t *db = doc + (size_t)b * T;
		for (int h = kvh * group; h < (kvh + 1) * group; h++) {
			int bh = b * H + h;
			const float *qh = q + (size_t)b * T * ldq + (size_t)h * D;
			const float *doh = dout + (size_t)b * T * HD + (size_t)h * D;
			const float *oh = out + (size_t)b * T * HD + (size_t)h * D;
			float *dqh = dq + (size_t)b * T * ldq + (size_t)h * D;
			const float *L = lse + (size_t)bh * T;
			for (int t0 = 0; t0 < T; t0 += ATT_BQ) {
				int nq = T - t0 < ATT_BQ ? T - t0 : ATT_BQ;
				/* D_t = dO_t . O_t, the softmax backward's row term */
				for (int i = 0; i < nq; i++) {
					const float *a = doh + (size_t)(t0 + i) * HD;
					const float *o = oh + (size_t)(t0 + i) * HD;
					double acc = 0.0;
					for (int d = 0; d < D; d++)
						acc += (double)a[d] * o[d];
					drow[i] = (float)acc;
				}
				for (int s0 = 0; s0 < t0 + nq; s0 += ATT_BK) {
					int nk =
					    t0 + nq - s0 < ATT_BK ? t0 + nq - s0 : ATT_BK;
					if (!att_tile_scores(P, qh, ldq, kh, ldkv, db, t0,
					                     nq, s0, nk, D, scale))
						continue;
					for (int i = 0; i < nq; i++)
						for (int j = 0; j < nk; j++) {
							float *x = P + (size_t)i * nk + j;
							*x = expf(*x - L[t0 + i]);
						}
					/* dV += P^T dO; dP = dO V^T */
					cblas_sgemm(CblasRowMajor, CblasTrans,
					            CblasNoTrans, nk, D, nq, 1.0f, P, nk,
					            doh + (size_t)t0 * HD, HD, 1.0f,
					            dvh + (size_t)s0 * ldkv, ldkv);
					cblas_sgemm(
					    CblasRowMajor, CblasNoTrans, CblasTrans, nq,
					    nk, D, 1.0f, doh + (size_t)t0 * HD, HD,
					    vh + (size_t)s0 * ldkv, ldkv, 0.0f, dP, nk);
					/* dS = P * (dP - D_t) * scale */
					for (int i = 0; i < nq; i++)
						for (int j = 0; j < nk; j++) {
							size_t x = (size_t)i * nk + j;
							dP[x] = P[x] * (dP[x] - drow[i]) *
							        scale;
						}
					/* dQ += dS K; dK += dS^T Q */
					cblas_sgemm(CblasRowMajor, CblasNoTrans,
					            CblasNoTrans, nq, D, nk, 1.0f, dP, nk,
					            kh + (size_t)s0 * ldkv, ldkv, 1.0f,
					            dqh + (size_t)t0 * ldq, ldq);
					cblas_sgemm(CblasRowMajor, CblasTrans,
					            CblasNoTrans, nk, D, nq, 1.0f, dP, nk,
					            qh + (size_t)t0 * ldq, ldq, 1.0f,
					            dkh + (size_t)s0 * ldkv, ldkv);
				}
			}
		}
	}
}

void attention_forward_naive(float *out, float *att, const float *q, const float *k,
                             const float *v, const int32_t *doc, int B, int T, int H,
                             int KV, int D)
{
	int HD = H * D, KD = KV * D, group = H / KV;
	double scale = 1.0 / sqrt((double)D);
	for (int b = 0; b < B; b++)
		for (int h = 0; h < H; h++) {
			int kh = h / group;
			const int32_t *db = doc + (size_t)b * T;
			for (int t = 0; t < T; t++) {
				float *a = att + (((size_t)b * H + h) * T + t) * T;
				double mx = -1e300;
				for (int s = 0; s < T; s++) {
					double sc = 0.0;
					for (int d = 0; d < D; d++)
						sc += (double)q[((size_t)b * T + t) * HD +
						                h * D + d] *
						      k[((size_t)b * T + s) * KD +
						        kh * D + d];
					a[s] = (float)(sc * scale);
					if (att_allowed(db, t, s) && a[s] > mx)
						mx = a[s];
				}
				double sum = 0.0;
				for (int s = 0; s < T; s++) {
					double e =
					    att_allowed(db, t, s) ? exp(a[s] - mx) : 0.0;
					a[s] = (float)e;
					sum += e;
				}
				for (int s = 0; s < T; s++)
					a[s] = (float)(a[s] / sum);
				for (int d = 0; d < D; d++) {
					double acc = 0.0;
					for (int s = 0; s < T; s++)
						acc += (double)a[s] *
						       v[((size_t)b * T + s) * KD +
						         kh * D + d];
					out[((size_t)b * T + t) * HD + h * D + d] =
					    (float)acc;
				}
			}
		}
}

/* ---- cross-entropy --------------------------------------------------------- */

/* The first index of the largest of l[0..V). */
static int row_argmax(const float *l, int V)
{
	int am = 0;
	for (int v = 1; v < V; v++)
		if (l[v] > l[am])
			am = v;
	return am;
}

void tokens_logprob_forward(const TokenStats *s, const float *logits,
                            const int32_t *targets, int N, int V)
{
#pragma omp parallel for schedule(static)
	for (int n = 0; n < N; n++) {
		const float *l = logits + (size_t)n * V;
		int tgt = targets[n];
		if (tgt < 0) {
			s->lp[n] = s->lse[n] = 0.0f;
			if (s->wpo)
				s->wpo[n] = 0.0f;
			if (s->mean_logit)
				s->mean_logit[n] = 0.0f;
			if (s->entropy)
				s->entropy[n] = 0.0f;
			if (s->correct)
				s->correct[n] = 0;
			continue;
		}
		int am = row_argmax(l, V);
		float mx = l[am];
		/* Sums in double: sum e^(z - max), sum e^(z - max) (z - max) for the
		 * entropy, sum e^(2 (z - max)) for WPO, sum z. */
		double se = 0.0, sez = 0.0, se2 = 0.0, sz = 0.0;
		for (int v = 0; v < V; v++) {
			double d = (double)l[v] - mx, e = exp(d);
			se += e;
			sez += e * d;
			se2 += e * e;
			sz += l[v];
		}
		double lse = mx + log(se);
		s->lp[n] = (float)((double)l[tgt] - lse);
		s->lse[n] = (float)lse;
		/* logsumexp(2z) - 2 logsumexp(z) = log se2 - 2 log se. */
		if (s->wpo)
			s->wpo[n] = (float)(log(se2) - 2.0 * log(se));
		if (s->mean_logit)
			s->mean_logit[n] = (float)(sz / V);
		/* H = lse - sum p z = log se - sez / se. */
		if (s->entropy)
			s->entropy[n] = (float)(log(se) - sez / se);
		if (s->correct)
			s->correct[n] = am == tgt;
	}
}

void tokens_logprob_backward(float *logits, const int32_t *targets, const float *lse,
                             const float *coef, int N, int V)
{
#pragma omp parallel for schedule(static)
	for (int n = 0; n < N; n++) {
		float *l = logits + (size_t)n * V;
		int tgt = targets[n];
		float c = tgt >= 0 ? coef[n] : 0.0f;
		if (c == 0.0f) {
			memset(l, 0, (size_t)V * sizeof *l);
			continue;
		}
		float m = lse[n];
		for (int v = 0; v < V; v++)
			l[v] = -c * expf(l[v] - m);
		l[tgt] += c;
	}
}

double crossentropy_forward_backward(float *logits, const int32_t *targets, int N, int V,
                                     float grad_scale, long *count, long *correct)
{
	/* Per-thread partial sums added in thread order: OpenMP's reduction clause
	 * combines in arrival order, which would make the logged loss differ in the
	 * last bits from run to run. */
	enum { MAXT = 256 };
	double part_loss[MAXT] = {0};
	long part_cnt[MAXT] = {0}, part_ok[MAXT] = {0};
	int nthreads = 1, want = omp_get_max_threads();
#pragma omp parallel num_threads(want < MAXT ? want : MAXT)
	{
		int tid = omp_get_thread_num(), nt = omp_get_num_threads();
#pragma omp single
		nthreads = nt;
		double loss = 0.0;
		long cnt = 0, ok = 0;
		int n0 = (int)((long)N * tid / nt), n1 = (int)((long)N * (tid + 1) / nt);
		for (int n = n0; n < n1; n++) {
			float *l = logits + (size_t)n * V;
			int tgt = targets[n];
			if (tgt < 0) {
				if (grad_scale != 0.0f)
					memset(l, 0, (size_t)V * sizeof *l);
				continue;
			}
			int am = row_argmax(l, V);
			float mx = l[am];
			float lt = l[tgt];
			double sum = 0.0;
			if (grad_scale != 0.0f) {
				for (int v = 0; v < V; v++) {
					float e = expf(l[v] - mx);
					l[v] = e;
					sum += e;
				}
				float s = (float)(grad_scale / sum);
				for (int v = 0; v < V; v++)
					l[v] *= s;
				l[tgt] -= grad_scale;
			} else {
				for (int v = 0; v < V; v++)
					sum += expf(l[v] - mx);
			}
			loss += log(sum) - (double)(lt - mx);
			cnt += 1;
			ok += am == tgt;
		}
		if (tid < MAXT) {
			part_loss[tid] = loss;
			part_cnt[tid] = cnt;
			part_ok[tid] = ok;
		}
	}
	double loss = 0.0;
	for (int t = 0; t < nthreads && t < MAXT; t++) {
		loss += part_loss[t];
		if (count)
			*count += part_cnt[t];
		if (correct)
			*correct += part_ok[t];
	}
	return loss;
}
