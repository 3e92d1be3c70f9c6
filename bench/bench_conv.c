/* bench_conv.c - times LFM2's short convolution (forward + backward) with the
 * direct kernel and with the FFT path as the kernel grows, and prints where
 * the FFT path overtakes; prints figures, never a verdict on the code.
 *
 * Usage: bench_conv [--channels C] [--runs N] [--budget S] [--seed S]
 * Defaults: C = 2048 (LFM2-1.2B's hidden size), 5 runs, a budget of 2 s per
 * cell. Shapes: B = 1, one document, T in {512, 2048}, K in {2, 3, 4, 8, 16,
 * 20, 24, 32, 64, 128, 256} (20 and 24 narrow down the crossover), no bias
 * (LFM2's conv_bias is false). A cell is the median over runs of one
 * shortconv forward plus one backward (into dproj and dw) per path, after a
 * warm-up step of each; the two paths take turns, and a cell stops after 3
 * runs once its runs have taken the budget. Threads come from
 * OMP_NUM_THREADS. Prints one row per (T, K),
 *     T K direct_ms fft_ms direct/fft max_rel_diff
 * where max_rel_diff compares the two paths' outputs and gradients, then the
 * crossover of each T: the smallest K of the list from which the FFT path is
 * faster at every larger K of the list (TRL_CONV_FFT_MIN_KERNEL in layers.h
 * is set from it).
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers.h"
#include "shortconv.h"
#include "rng.h"
#include "trl.h"

static const int Ts[] = {512, 2048};
static const int Ks[] = {2, 3, 4, 8, 16, 20, 24, 32, 64, 128, 256};
#define NT ((int)(sizeof Ts / sizeof Ts[0]))
#define NK ((int)(sizeof Ks / sizeof Ks[0]))

typedef struct Bufs {
	float *proj, *w, *out, *bx, *dout, *dproj, *dw; /* (T, 3C), (C, K), ... */
	int32_t *doc;
} Bufs;

/* One forward and one backward by the chosen path; 0, or -1 when the FFT
 * path declined. */
static int conv_step(Bufs *m, int fft, int T, int C, int K)
{
	memset(m->dproj, 0, sizeof(float) * (size_t)T * 3 * C);
	memset(m->dw, 0, sizeof(float) * (size_t)C * K);
	if (!fft) {
		shortconv_forward_direct(m->out, m->bx, m->proj, m->w, NULL, m->doc, 1, T,
		                         C, K);
		shortconv_backward_direct(m->dproj, m->dw, NULL, m->dout, m->proj, m->bx,
		                          m->w, NULL, m->doc, 1, T, C, K);
		return 0;
	}
	if (shortconv_forward_fft(m->out, m->bx, m->proj, m->w, NULL, m->doc, 1, T, C, K))
		return -1;
	return shortconv_backward_fft(m->dproj, m->dw, NULL, m->dout, m->proj, m->bx,
	                              m->w, NULL, m->doc, 1, T, C, K);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median(double *ms, int n)
{
	qsort(ms, (size_t)n, sizeof ms[0], cmp_double);
	return n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
}

/* Median ms of each path over up to `runs` steps (at least 3), stopping once
 * the steps have taken `budget` seconds. The two paths take turns, so that
 * load from other processes falls on both alike. */
static void time_cell(Bufs *m, int T, int C, int K, int runs, double budget, double *td,
                      double *tf)
{
	double ms[2][64], spent = 0.0;
	int n = 0;
	while (n < runs && n < 64 && (n < 3 || spent < budget)) {
		for (int fft = 0; fft < 2; fft++) {
			double t0 = trl_now();
			conv_step(m, fft, T, C, K);
			double dt = trl_now() - t0;
			spent += dt;
			ms[fft][n] = 1e3 * dt;
		}
		n++;
	}
	*td = median(ms[0], n);
	*tf = median(ms[1], n);
}

/* max |a - b| / max(max |b|, 1e-30). */
static double rel_diff(const float *a, const float *b, size_t n)
{
	double d = 0.0, s = 0.0;
	for (size_t i = 0; i < n; i++) {
		d = fmax(d, fabs((double)a[i] - b[i]));
		s = fmax(s, fabs((double)b[i]));
	}
	return d / fmax(s, 1e-30);
}

static float *falloc(size_t n)
{
	float *p = calloc(n ? n : 1, sizeof(float));
	if (!p) {
		fprintf(stderr, "bench_conv: out of memory (%zu floats)\n", n);
		exit(1);
	}
	return p;
}

static void usage(FILE *f, const char *prog)
{
	fprintf(f,
	        "usage: %s [--channels C] [--runs N] [--budget SECONDS] [--seed S]\n"
	        "Times the direct and the FFT short convolution; threads from "
	        "OMP_NUM_THREADS.\n",
	        prog);
}

int main(int argc, char **argv)
{
	int C = 2048, runs = 5;
	double budget = 2.0;
	unsigned long long seed = 1234;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout, argv[0]);
			return 0;
		}
		if (i + 1 >= argc || (strcmp(a, "--channels") && strcmp(a, "--runs") &&
		                      strcmp(a, "--budget") && strcmp(a, "--seed"))) {
			fprintf(stderr, "bench_conv: unknown or incomplete option '%s'\n",
			        a);
			usage(stderr, argv[0]);
			return 2;
		}
		char *end;
		double v = strtod(argv[++i], &end);
		if (*end || !(v > 0.0) || v > 1e9) {
			fprintf(stderr,
			        "bench_conv: %s needs a positive number, got '%s'\n", a,
			        argv[i]);
			return 2;
		}
		if (strcmp(a, "--channels") == 0)
			C = (int)v;
		else if (strcmp(a, "--runs") == 0)
			runs = (int)v;
		else if (strcmp(a, "--budget") == 0)
			budget = v;
		else
			seed = (unsigned long long)v;
	}

	printf("# shortconv forward+backward, B=1, one document, C=%d, threads=%d, "
	       "median of up to %d runs (budget %.1f s per cell)\n",
	       C, omp_get_max_threads(), runs, budget);
	printf("%6s %5s %11s %11s %10s %12s\n", "T", "K", "direct_ms", "fft_ms",
	       "direct/fft", "max_rel_diff");
	int crossover[NT];
	for (int it = 0; it < NT; it++) {
		int T = Ts[it];
		size_t N = (size_t)T;
		Rng r;
		rng_seed(&r, seed + (unsigned long long)T);
		Bufs m = {falloc(N * 3 * C),
		          NULL,
		          falloc(N * C),
		          falloc(N * C),
		          falloc(N * C),
		          falloc(N * 3 * C),
		          NULL,
		          calloc(N, sizeof(int32_t))};
		float *ref_out = falloc(N * C), *ref_dproj = falloc(N * 3 * C);
		if (!m.doc) {
			fprintf(stderr, "bench_conv: out of memory\n");
			return 1;
		}
		for (size_t i = 0; i < N * 3 * C; i++)
			m.proj[i] = (float)rng_normal(&r);
		for (size_t i = 0; i < N * C; i++)
			m.dout[i] = (float)rng_normal(&r);
		double ratio[NK];
		for (int ik = 0; ik < NK; ik++) {
			int K = Ks[ik];
			m.w = falloc((size_t)C * K);
			m.dw = falloc((size_t)C * K);
			float *ref_dw = falloc((size_t)C * K);
			for (size_t i = 0; i < (size_t)C * K; i++)
				m.w[i] = (float)(rng_normal(&r) / sqrt((double)K));
			/* A warm-up step of each path, and how far apart they are. */
			conv_step(&m, 0, T, C, K);
			memcpy(ref_out, m.out, sizeof(float) * N * C);
			memcpy(ref_dproj, m.dproj, sizeof(float) * N * 3 * C);
			memcpy(ref_dw, m.dw, sizeof(float) * (size_t)C * K);
			if (conv_step(&m, 1, T, C, K)) {
				fprintf(stderr,
				        "bench_conv: the FFT path declined T=%d K=%d\n",
				        T, K);
				return 1;
			}
			double diff = fmax(rel_diff(m.out, ref_out, N * C),
			                   fmax(rel_diff(m.dproj, ref_dproj, N * 3 * C),
			                        rel_diff(m.dw, ref_dw, (size_t)C * K)));
			double td, tf;
			time_cell(&m, T, C, K, runs, budget, &td, &tf);
			ratio[ik] = td / tf;
			printf("%6d %5d %11.2f %11.2f %10.2f %12.2e\n", T, K, td, tf,
			       ratio[ik], diff);
			fflush(stdout);
			free(m.w), free(m.dw), free(ref_dw);
		}
		crossover[it] = 0;
		for (int ik = NK - 1; ik >= 0 && ratio[ik] > 1.0; ik--)
			crossover[it] = Ks[ik];
		free(m.proj), free(m.out), free(m.bx), free(m.dout), free(m.dproj),
		    free(m.doc), free(ref_out), free(ref_dproj);
	}
	int worst = 0, never = 0;
	for (int it = 0; it < NT; it++) {
		if (crossover[it])
			printf("crossover T=%d: FFT faster from K=%d on\n", Ts[it],
			       crossover[it]);
		else
			printf("crossover T=%d: FFT not faster at K=%d\n", Ts[it],
			       Ks[NK - 1]);
		never |= !crossover[it];
		if (crossover[it] > worst)
			worst = crossover[it];
	}
	if (never)
		printf("crossover: beyond K=%d for some T", Ks[NK - 1]);
	else
		printf("crossover (largest over T): K=%d", worst);
	printf("; TRL_CONV_FFT_MIN_KERNEL is %d\n", TRL_CONV_FFT_MIN_KERNEL);
	return 0;
}
