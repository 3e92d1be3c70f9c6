/* shortconv.c - LFM2's gated short convolution: the direct kernel (channel
 * tiles, row by row), the FFT path (overlap-save with FFTW) and the naive
 * reference. */
#include "shortconv.h"

#include <fftw3.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "model_config.h"

/* ---- short convolution (lfm2) ----------------------------------------------- */

/* bx (N, C) = b * x, the gated input of the convolution. */
static void shortconv_gate_input(float *bx, const float *proj, size_t N, int C)
{
	size_t C3 = 3 * (size_t)C;
#pragma omp parallel for schedule(static)
	for (size_t n = 0; n < N; n++)
		for (int ch = 0; ch < C; ch++)
			bx[n * C + ch] =
			    proj[n * C3 + ch] * proj[n * C3 + 2 * (size_t)C + ch];
}

/* The direct kernel walks the rows in order for a tile of CONV_CT adjacent
 * channels at a time (a thread owns a tile, so dw and dbias need no
 * reduction), so that every row of every (rows, C) array is read as whole
 * cache lines and the channel loops vectorise; walking one channel down all
 * the rows instead touches a new line and page per row. Taps go CONV_KCHUNK
 * at a time, so the tile of w (transposed, tap-major) and w's gradient
 * (summed in double) fit on the stack however long the kernel. */
#define CONV_CT 32
#define CONV_KCHUNK 64

static void conv_w_tile(float wt[][CONV_CT], const float *w, int K, int ch0, int nch,
                        int k0, int k1)
{
	for (int k = k0; k < k1; k++)
		for (int c = 0; c < nch; c++)
			wt[k - k0][c] = w[(size_t)(ch0 + c) * K + k];
}

void shortconv_forward_direct(float *out, float *bx, const float *proj, const float *w,
                              const float *bias, const int32_t *doc, int B, int T, int C,
                              int K)
{
	size_t C3 = 3 * (size_t)C;
	int ntiles = (C + CONV_CT - 1) / CONV_CT;
	shortconv_gate_input(bx, proj, (size_t)B * T, C);
#pragma omp parallel for schedule(static)
	for (int tile = 0; tile < ntiles; tile++) {
		int ch0 = tile * CONV_CT, nch = C - ch0 < CONV_CT ? C - ch0 : CONV_CT;
		for (int k0 = 0; k0 < K; k0 += CONV_KCHUNK) {
			int k1 = K - k0 < CONV_KCHUNK ? K : k0 + CONV_KCHUNK;
			float wt[CONV_KCHUNK][CONV_CT];
			conv_w_tile(wt, w, K, ch0, nch, k0, k1);
			for (int b = 0; b < B; b++) {
				const int32_t *db = doc + (size_t)b * T;
				for (int t = 0; t < T; t++) {
					size_t n = (size_t)b * T + t;
					float *o = out + n * C + ch0, z[CONV_CT];
					/* out holds z until the last chunk. */
					for (int c = 0; c < nch; c++)
						z[c] = k0     ? o[c]
						       : bias ? bias[ch0 + c]
						              : 0.0f;
					for (int k = k0; k < k1; k++) {
						int s = t - K + 1 + k;
						if (s < 0 || db[s] != db[t])
							continue;
						const float *xs =
						    bx + ((size_t)b * T + s) * C + ch0;
						for (int c = 0; c < nch; c++)
							z[c] += wt[k - k0][c] * xs[c];
					}
					const float *cr = proj + n * C3 + C + ch0;
					for (int c = 0; c < nch; c++)
						o[c] = k1 == K ? cr[c] * z[c] : z[c];
				}
			}
		}
	}
}

/* Taps [k0, k1) of the tile [ch0, ch0 + nch): their part of z times dout
 * into d c, dz's reach into w's gradient gw and into dbx (hence d b and
 * d x); the first chunk also adds dout * bias into d c and dz into gb. */
static void conv_direct_taps(float *dproj, double gw[][CONV_CT], double *gb,
                             const float *dout, const float *proj, const float *bx,
                             const float *w, const float *bias, const int32_t *doc, int B,
                             int T, int C, int K, int ch0, int nch, int k0, int k1)
{
	size_t C3 = 3 * (size_t)C;
	float wt[CONV_KCHUNK][CONV_CT];
	conv_w_tile(wt, w, K, ch0, nch, k0, k1);
	for (int b = 0; b < B; b++) {
		const int32_t *db = doc + (size_t)b * T;
		for (int t = 0; t < T; t++) {
			size_t n = (size_t)b * T + t;
			float go[CONV_CT], dz[CONV_CT], z[CONV_CT];
			for (int c = 0; c < nch; c++) {
				go[c] = dout[n * C + ch0 + c];
				dz[c] = go[c] * proj[n * C3 + C + ch0 + c];
				z[c] = k0 == 0 && bias ? bias[ch0 + c] : 0.0f;
				if (k0 == 0)
					gb[c] += dz[c];
			}
			for (int k = k0; k < k1; k++) {
				int s = t - K + 1 + k;
				if (s < 0 || db[s] != db[t])
					continue;
				size_t m = (size_t)b * T + s;
				const float *xs = bx + m * C + ch0;
				for (int c = 0; c < nch; c++) {
					z[c] += wt[k - k0][c] * xs[c];
					gw[k - k0][c] += (double)dz[c] * xs[c];
				}
				if (!dproj)
					continue;
				float *gbrow = dproj + m * C3 + ch0,
				      *gxrow = gbrow + 2 * (size_t)C;
				const float *brow = proj + m * C3 + ch0,
				            *xrow = brow + 2 * (size_t)C;
				for (int c = 0; c < nch; c++) {
					float dbx = dz[c] * wt[k - k0][c];
					gbrow[c] += dbx * xrow[c];
					gxrow[c] += dbx * brow[c];
				}
			}
			if (dproj)
				for (int c = 0; c < nch; c++)
					dproj[n * C3 + C + ch0 + c] += go[c] * z[c];
		}
	}
}

void shortconv_backward_direct(float *dproj, float *dw, float *dbias, const float *dout,
                               const float *proj, const float *bx, const float *w,
                               const float *bias, const int32_t *doc, int B, int T, int C,
                               int K)
{
	int ntiles = (C + CONV_CT - 1) / CONV_CT;
#pragma omp parallel for schedule(static)
	for (int tile = 0; tile < ntiles; tile++) {
		int ch0 = tile * CONV_CT, nch = C - ch0 < CONV_CT ? C - ch0 : CONV_CT;
		double gb[CONV_CT] = {0};
		for (int k0 = 0; k0 < K; k0 += CONV_KCHUNK) {
			int k1 = K - k0 < CONV_KCHUNK ? K : k0 + CONV_KCHUNK;
			double gw[CONV_KCHUNK][CONV_CT] = {{0}};
			conv_direct_taps(dproj, gw, gb, dout, proj, bx, w, bias, doc, B,
			                 T, C, K, ch0, nch, k0, k1);
			if (dw)
				for (int k = k0; k < k1; k++)
					for (int c = 0; c < nch; c++)
						dw[(size_t)(ch0 + c) * K + k] +=
						    (float)gw[k - k0][c];
		}
		if (dbias)
			for (int c = 0; c < nch; c++)
				dbias[ch0 + c] += (float)gb[c];
	}
}

/* The FFT path: overlap-save per channel and per document. A transform of n
 * points holds, for an output block of M = n - K + 1 rows starting at t0, the
 * inputs bx[t0 - K + 1, t0 + M) of the same document (zeros outside it). With
 * W the transform of w zero-padded to n (not flipped):
 *     z[t0 + i]            = IFFT(conj(W) BX)[i]        i < M (no wrap-around)
 *     dbx[t0 - K + 1 + i] += IFFT(W DZ)[i]              i < n (full linear conv)
 *     dw[k]               += IFFT(conj(DZ) BX)[k]       k < K
 * where DZ is the transform of dz on the block's M output rows. The last sum is
 * linear, so the spectra of all blocks are added and inverted once. */

/* FFTW plans, one r2c/c2r pair per transform length, made once per process
 * and kept. FFTW's planner is not thread-safe, so plans are made under a
 * lock and outside parallel regions; executing a plan on other arrays of
 * the same alignment (fftwf_execute_dft_*) is thread-safe, so the threads
 * share them. FFTW_ESTIMATE plans are made without timing runs and give the
 * same results on every run and rank. */
typedef struct ConvPlan {
	int n;
	fftwf_plan r2c, c2r;
} ConvPlan;

#define CONV_MAX_PLANS 64
static ConvPlan conv_plans[CONV_MAX_PLANS];
static int conv_nplans;
static pthread_mutex_t conv_plan_lock = PTHREAD_MUTEX_INITIALIZER;

static const ConvPlan *conv_plan_get(int n)
{
	const ConvPlan *p = NULL;
	pthread_mutex_lock(&conv_plan_lock);
	for (int i = 0; i < conv_nplans && !p; i++)
		if (conv_plans[i].n == n)
			p = &conv_plans[i];
	if (!p && conv_nplans < CONV_MAX_PLANS) {
		float *re = fftwf_malloc(sizeof(float) * (size_t)n);
		fftwf_complex *sp =
		    fftwf_malloc(sizeof(fftwf_complex) * (size_t)(n / 2 + 1));
		ConvPlan *q = &conv_plans[conv_nplans];
		if (re && sp) {
			q->r2c = fftwf_plan_dft_r2c_1d(n, re, sp, FFTW_ESTIMATE);
			q->c2r = fftwf_plan_dft_c2r_1d(n, sp, re, FFTW_ESTIMATE);
			if (q->r2c && q->c2r) {
				q->n = n;
				conv_nplans++;
				p = q;
			} else {
				if (q->r2c)
					fftwf_destroy_plan(q->r2c);
				if (q->c2r)
					fftwf_destroy_plan(q->c2r);
			}
		}
		fftwf_free(re);
		fftwf_free(sp);
	}
	pthread_mutex_unlock(&conv_plan_lock);
	return p;
}

/* Cost of one block, in units of a real-to-complex point-butterfly: the two
 * to four transforms, the gather/scatter of n rows and the call itself. */
static double conv_block_cost(long n)
{
	return (double)n * (log2((double)n) + 2.0) + 200.0;
}

/* The end of the run of rows with the document id of row s0. */
static int doc_run_end(const int32_t *db, int T, int s0)
{
	int s1 = s0 + 1;
	while (s1 < T && db[s1] == db[s0])
		s1++;
	return s1;
}

/* The transform length for kernel K over the documents (runs of one id) of
 * doc (B, T), the longest lmax rows: the cheapest of 2^a and 3 * 2^a
 * (FFTW's fastest radices), counting the blocks every document needs (a
 * short document still takes a whole block); at most one block for the
 * longest. */
static int conv_fft_size(const int32_t *doc, int B, int T, int K, int lmax)
{
	long best = 0;
	double best_cost = 0.0;
	for (long p = 8; p < 2L * (lmax + K) + 16 && p < (1L << 28); p *= 2)
		for (int three = 0; three < 2; three++) {
			long n = three ? 3 * p : 2 * p, M = n - K + 1, blocks = 0;
			if (M < 1)
				continue;
			for (int b = 0; b < B; b++) {
				const int32_t *db = doc + (size_t)b * T;
				for (int s0 = 0, s1; s0 < T; s0 = s1) {
					s1 = doc_run_end(db, T, s0);
					blocks += (s1 - s0 + M - 1) / M;
				}
			}
			double cost =
			    (double)blocks * conv_block_cost(n) * (three ? 1.15 : 1.0);
			if (!best || cost < best_cost)
				best = n, best_cost = cost;
		}
	return (int)best;
}

/* The longest run of one document id along the rows of doc (B, T), or -1
 * when some id comes back within K rows after another id: the direct kernel
 * would connect the two runs and the per-run FFT path would not. */
static int conv_doc_runs(const int32_t *doc, int B, int T, int K)
{
	int lmax = 0;
	for (int b = 0; b < B; b++) {
		const int32_t *db = doc + (size_t)b * T;
		for (int s0 = 0, s1; s0 < T; s0 = s1) {
			s1 = doc_run_end(db, T, s0);
			if (s1 - s0 > lmax)
				lmax = s1 - s0;
			for (int s = s0 - K + 1 > 0 ? s0 - K + 1 : 0; s < s0; s++)
				if (db[s] == db[s0])
					return -1;
		}
	}
	return lmax;
}

/* One call's arrays and sizes; the outputs not wanted are NULL. */
typedef struct ConvIo {
	float *out;                        /* (B, T, C) forward */
	float *dproj, *dw, *dbias;         /* (B, T, 3C), (C, K), (C) backward */
	const float *dout;                 /* (B, T, C) backward */
	const float *proj, *bx, *w, *bias; /* (B, T, 3C), (B, T, C), (C, K), (C) */
	const int32_t *doc;                /* (B, T) */
	int B, T, C, K;
} ConvIo;

/* Per-call plan and scratch. A thread owns a tile of ct channels at a time
 * and holds per channel two real vectors (RE_IN, a transform's input, and
 * RE_OUT) and up to four spectra (SP_W of w, SP_S for products, SP_BX of the
 * block's bx, SP_R the sum for dw). Every vector is padded to 16 floats so
 * that it keeps the alignment of the fftwf_malloc'd arrays the plans were
 * made with. Tiles of ct channels make the gathers and scatters read whole
 * cache lines of the (rows, C) arrays, and fewer pages per channel; ct
 * shrinks as n grows (ct * n <= CONV_FFT_TILE) so that a tile's vectors
 * stay near the L2 cache. 32 channels measured best on LFM2-1.2B's shape. */
#define CONV_FFT_CT 32
#define CONV_FFT_TILE 32768
enum { RE_IN, RE_OUT };
enum { SP_W, SP_S, SP_BX, SP_R };

typedef struct ConvFft {
	const ConvPlan *plan;
	int n, M, nc, ct, nsp; /* length, outputs per block, bins, channels per
	                          tile, spectra per channel */
	size_t re_len, sp_len, per_thread; /* in floats */
	float *scratch;
} ConvFft;

static size_t round16(size_t n)
{
	return (n + 15) & ~(size_t)15;
}

/* Plan and scratch for one call, or -1 (nothing allocated) when the FFT path
 * cannot run: a document that resumes (see conv_doc_runs), or no memory. */
static int conv_fft_setup(ConvFft *f, const ConvIo *io, int nsp)
{
	int lmax = conv_doc_runs(io->doc, io->B, io->T, io->K);
	if (lmax < 1)
		return -1;
	f->n = conv_fft_size(io->doc, io->B, io->T, io->K, lmax);
	f->M = f->n - io->K + 1;
	f->nc = f->n / 2 + 1;
	f->ct = CONV_FFT_TILE / f->n < 1             ? 1
	        : CONV_FFT_TILE / f->n > CONV_FFT_CT ? CONV_FFT_CT
	                                             : CONV_FFT_TILE / f->n;
	f->nsp = nsp;
	f->re_len = round16((size_t)f->n);
	f->sp_len = round16(2 * (size_t)f->nc);
	f->per_thread = (size_t)f->ct * (2 * f->re_len + (size_t)nsp * f->sp_len);
	f->plan = conv_plan_get(f->n);
	f->scratch = f->plan ? fftwf_malloc(sizeof(float) * f->per_thread *
	                                    (size_t)omp_get_max_threads())
	                     : NULL;
	return f->scratch ? 0 : -1;
}

static float *conv_re(const ConvFft *f, float *base, int which, int c)
{
	return base + ((size_t)which * f->ct + c) * f->re_len;
}

/* Spectra are kept as interleaved (re, im) floats: fftwf_complex is
 * float[2] or C99's float _Complex depending on whether <complex.h> came
 * first (cblas.h may include it), and both have this layout. */
static float *conv_sp(const ConvFft *f, float *base, int which, int c)
{
	return base + 2 * (size_t)f->ct * f->re_len +
	       ((size_t)which * f->ct + c) * f->sp_len;
}

static void conv_r2c(const ConvFft *f, float *re, float *sp)
{
	fftwf_execute_dft_r2c(f->plan->r2c, re, (fftwf_complex *)sp);
}

static void conv_c2r(const ConvFft *f, float *sp, float *re)
{
	fftwf_execute_dft_c2r(f->plan->c2r, (fftwf_complex *)sp, re);
}

/* s = s * conj(w) (conj = 1) or s * w (conj = 0), over nc bins. */
static void conv_spectrum_mul(float *s, const float *w, int nc, int conj)
{
	float sg = conj ? -1.0f : 1.0f;
	for (int j = 0; j < nc; j++) {
		float a = s[2 * j], b = s[2 * j + 1], c = w[2 * j], d = sg * w[2 * j + 1];
		s[2 * j] = a * c - b * d;
		s[2 * j + 1] = a * d + b * c;
	}
}

/* r += conj(d) * x over nc bins. */
static void conv_spectrum_acc(float *r, const float *d, const float *x, int nc)
{
	for (int j = 0; j < nc; j++) {
		r[2 * j] += d[2 * j] * x[2 * j] + d[2 * j + 1] * x[2 * j + 1];
		r[2 * j + 1] += d[2 * j] * x[2 * j + 1] - d[2 * j + 1] * x[2 * j];
	}
}

/* One tile: channels [ch0, ch0 + nch) and the rows of the block. */
typedef struct ConvBlock {
	int ch0, nch;
	int b, s0, s1, t0, mv; /* batch row, its document [s0, s1), block start,
	                          output rows */
} ConvBlock;

/* RE_IN = the block's inputs bx[t0 - K + 1 + i], i < n, of its document,
 * zeros outside the document. */
static void conv_fft_gather(const ConvFft *f, float *base, const ConvIo *io,
                            const ConvBlock *k)
{
	int p0 = k->t0 - io->K + 1;
	int lo = k->s0 - p0 > 0 ? k->s0 - p0 : 0;
	int hi = k->s1 - p0 < f->n ? k->s1 - p0 : f->n;
	for (int c = 0; c < k->nch; c++) {
		float *re = conv_re(f, base, RE_IN, c);
		memset(re, 0, sizeof(float) * (size_t)lo);
		memset(re + hi, 0, sizeof(float) * (size_t)(f->n - hi));
	}
	for (int i = lo; i < hi; i++) {
		const float *row =
		    io->bx + ((size_t)k->b * io->T + p0 + i) * io->C + k->ch0;
		for (int c = 0; c < k->nch; c++)
			conv_re(f, base, RE_IN, c)[i] = row[c];
	}
}

/* RE_OUT[i] = z[t0 + i] (without bias) for i < M; in the backward
 * (keep_bx) SP_BX keeps the transform of the inputs, and z is made only
 * when d c is wanted. */
static void conv_fft_z(const ConvFft *f, float *base, const ConvIo *io,
                       const ConvBlock *k, int keep_bx)
{
	conv_fft_gather(f, base, io, k);
	for (int c = 0; c < k->nch; c++) {
		float *s = conv_sp(f, base, SP_S, c);
		if (keep_bx) {
			float *x = conv_sp(f, base, SP_BX, c);
			conv_r2c(f, conv_re(f, base, RE_IN, c), x);
			if (!io->dproj)
				continue;
			memcpy(s, x, sizeof(float) * 2 * (size_t)f->nc);
		} else {
			conv_r2c(f, conv_re(f, base, RE_IN, c), s);
		}
		conv_spectrum_mul(s, conv_sp(f, base, SP_W, c), f->nc, 1);
		conv_c2r(f, s, conv_re(f, base, RE_OUT, c));
	}
}

static void conv_fft_forward_block(const ConvFft *f, float *base, const ConvIo *io,
                                   const ConvBlock *k)
{
	size_t C = (size_t)io->C;
	conv_fft_z(f, base, io, k, 0);
	for (int i = 0; i < k->mv; i++) {
		size_t n = (size_t)k->b * io->T + k->t0 + i;
		for (int c = 0; c < k->nch; c++) {
			int ch = k->ch0 + c;
			float z = conv_re(f, base, RE_OUT, c)[i] +
			          (io->bias ? io->bias[ch] : 0.0f);
			io->out[n * C + ch] = io->proj[n * 3 * C + C + ch] * z;
		}
	}
}

/* Adds the block's d c, d b and d x into dproj, its dz spectrum times the
 * inputs' into SP_R, and its dz into gb (per channel of the tile). */
static void conv_fft_backward_block(const ConvFft *f, float *base, const ConvIo *io,
                                    const ConvBlock *k, double *gb)
{
	size_t C = (size_t)io->C, C3 = 3 * C;
	conv_fft_z(f, base, io, k, 1);
	/* dz on the block's output rows into RE_IN, zeros after them. */
	for (int c = 0; c < k->nch; c++) {
		float *d = conv_re(f, base, RE_IN, c);
		memset(d + k->mv, 0, sizeof(float) * (size_t)(f->n - k->mv));
	}
	for (int i = 0; i < k->mv; i++) {
		size_t n = (size_t)k->b * io->T + k->t0 + i;
		for (int c = 0; c < k->nch; c++) {
			int ch = k->ch0 + c;
			float go = io->dout[n * C + ch],
			      dz = go * io->proj[n * C3 + C + ch];
			conv_re(f, base, RE_IN, c)[i] = dz;
			gb[c] += dz;
			if (io->dproj) /* d c */
				io->dproj[n * C3 + C + ch] +=
				    go * (conv_re(f, base, RE_OUT, c)[i] +
				          (io->bias ? io->bias[ch] : 0.0f));
		}
	}
	for (int c = 0; c < k->nch; c++) {
		float *s = conv_sp(f, base, SP_S, c);
		conv_r2c(f, conv_re(f, base, RE_IN, c), s);
		if (io->dw)
			conv_spectrum_acc(conv_sp(f, base, SP_R, c), s,
			                  conv_sp(f, base, SP_BX, c), f->nc);
		if (io->dproj) {
			conv_spectrum_mul(s, conv_sp(f, base, SP_W, c), f->nc, 0);
			conv_c2r(f, s, conv_re(f, base, RE_OUT, c));
		}
	}
	if (!io->dproj)
		return;
	/* dbx[t0 - K + 1 + i] for the rows of the document; earlier rows belong
	 * to another document and take nothing. */
	int p0 = k->t0 - io->K + 1, lo = k->s0 - p0 > 0 ? k->s0 - p0 : 0;
	for (int i = lo; i < k->t0 + k->mv - p0; i++) {
		size_t m = (size_t)k->b * io->T + p0 + i;
		for (int c = 0; c < k->nch; c++) {
			int ch = k->ch0 + c;
			float dbx = conv_re(f, base, RE_OUT, c)[i];
			io->dproj[m * C3 + ch] += dbx * io->proj[m * C3 + 2 * C + ch];
			io->dproj[m * C3 + 2 * C + ch] += dbx * io->proj[m * C3 + ch];
		}
	}
}

/* Runs one tile of channels through every block of every document. */
static void conv_fft_tile(const ConvFft *f, float *base, const ConvIo *io, int ch0,
                          int nch, int backward)
{
	ConvBlock k = {.ch0 = ch0, .nch = nch};
	double gb[CONV_FFT_CT] = {0};
	int K = io->K;
	/* SP_W = the transform of w / n, so that inverse transforms come out
	 * normalised (FFTW's are not). */
	for (int c = 0; c < nch; c++) {
		float *re = conv_re(f, base, RE_IN, c);
		for (int j = 0; j < f->n; j++)
			re[j] =
			    j < K ? io->w[(size_t)(ch0 + c) * K + j] / (float)f->n : 0.0f;
		conv_r2c(f, re, conv_sp(f, base, SP_W, c));
		if (backward && io->dw)
			memset(conv_sp(f, base, SP_R, c), 0,
			       sizeof(float) * 2 * (size_t)f->nc);
	}
	for (k.b = 0; k.b < io->B; k.b++) {
		const int32_t *db = io->doc + (size_t)k.b * io->T;
		for (k.s0 = 0; k.s0 < io->T; k.s0 = k.s1) {
			k.s1 = doc_run_end(db, io->T, k.s0);
			for (k.t0 = k.s0; k.t0 < k.s1; k.t0 += f->M) {
				k.mv = k.s1 - k.t0 < f->M ? k.s1 - k.t0 : f->M;
				if (backward)
					conv_fft_backward_block(f, base, io, &k, gb);
				else
					conv_fft_forward_block(f, base, io, &k);
			}
		}
	}
	if (!backward)
		return;
	for (int c = 0; c < nch; c++) {
		int ch = ch0 + c;
		if (io->dw) {
			float *r = conv_re(f, base, RE_OUT, c);
			conv_c2r(f, conv_sp(f, base, SP_R, c), r);
			for (int j = 0; j < K; j++)
				io->dw[(size_t)ch * K + j] += r[j] / (float)f->n;
		}
		if (io->dbias)
			io->dbias[ch] += (float)gb[c];
	}
}

/* The forward (bx_out = the bx to write) or the backward (bx_out NULL). */
static int conv_fft_run(const ConvIo *io, float *bx_out)
{
	int backward = bx_out == NULL;
	ConvFft f;
	if (conv_fft_setup(&f, io, backward ? 4 : 2))
		return -1;
	int ntiles = (io->C + f.ct - 1) / f.ct;
	if (bx_out)
		shortconv_gate_input(bx_out, io->proj, (size_t)io->B * io->T, io->C);
#pragma omp parallel
	{
		float *base = f.scratch + f.per_thread * (size_t)omp_get_thread_num();
#pragma omp for schedule(static)
		for (int tile = 0; tile < ntiles; tile++) {
			int ch0 = tile * f.ct;
			conv_fft_tile(&f, base, io, ch0,
			              io->C - ch0 < f.ct ? io->C - ch0 : f.ct, backward);
		}
	}
	fftwf_free(f.scratch);
	return 0;
}

int shortconv_forward_fft(float *out, float *bx, const float *proj, const float *w,
                          const float *bias, const int32_t *doc, int B, int T, int C,
                          int K)
{
	ConvIo io = {.out = out,
	             .proj = proj,
	             .bx = bx,
	             .w = w,
	             .bias = bias,
	             .doc = doc,
	             .B = B,
	             .T = T,
	             .C = C,
	             .K = K};
	return conv_fft_run(&io, bx);
}

int shortconv_backward_fft(float *dproj, float *dw, float *dbias, const float *dout,
                           const float *proj, const float *bx, const float *w,
                           const float *bias, const int32_t *doc, int B, int T, int C,
                           int K)
{
	ConvIo io = {.dproj = dproj,
	             .dw = dw,
	             .dbias = dbias,
	             .dout = dout,
	             .proj = proj,
	             .bx = bx,
	             .w = w,
	             .bias = bias,
	             .doc = doc,
	             .B = B,
	             .T = T,
	             .C = C,
	             .K = K};
	return conv_fft_run(&io, NULL);
}

void shortconv_forward(float *out, float *bx, const float *proj, const float *w,
                       const float *bias, const int32_t *doc, int B, int T, int C, int K)
{
	if (K < TRL_CONV_FFT_MIN_KERNEL ||
	    shortconv_forward_fft(out, bx, proj, w, bias, doc, B, T, C, K))
		shortconv_forward_direct(out, bx, proj, w, bias, doc, B, T, C, K);
}

void shortconv_backward(float *dproj, float *dw, float *dbias, const float *dout,
                        const float *proj, const float *bx, const float *w,
                        const float *bias, const int32_t *doc, int B, int T, int C, int K)
{
	if (K < TRL_CONV_FFT_MIN_KERNEL ||
	    shortconv_backward_fft(dproj, dw, dbias, dout, proj, bx, w, bias, doc, B, T,
	                           C, K))
		shortconv_backward_direct(dproj, dw, dbias, dout, proj, bx, w, bias, doc,
		                          B, T, C, K);
}

void shortconv_forward_naive(float *out, const float *proj, const float *w,
                             const float *bias, const int32_t *doc, int B, int T, int C,
                             int K)
{
	size_t C3 = 3 * (size_t)C;
	for (int b = 0; b < B; b++)
		for (int t = 0; t < T; t++)
			for (int ch = 0; ch < C; ch++) {
				double z = bias ? bias[ch] : 0.0;
				for (int k = 0; k < K; k++) {
					int s = t - K + 1 + k;
					if (s < 0 || doc[(size_t)b * T + s] !=
					                 doc[(size_t)b * T + t])
						continue;
					size_t m = (size_t)b * T + s;
					z += (double)w[(size_t)ch * K + k] *
					     proj[m * C3 + ch] *
					     proj[m * C3 + 2 * (size_t)C + ch];
				}
				size_t n = (size_t)b * T + t;
				out[n * C + ch] = (float)(proj[n * C3 + C + ch] * z);
			}
}

