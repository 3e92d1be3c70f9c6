/* shortconv.h - LFM2's gated short convolution, forward and backward: a
 * direct kernel for the short kernels of released models and an FFT one
 * (FFTW) for long ones. Conventions as layers.h: row-major, outputs first,
 * backward accumulates (+=), a NULL gradient skips it.
 */
#ifndef TRL_SHORTCONV_H
#define TRL_SHORTCONV_H

#include <stddef.h>
#include <stdint.h>

/* LFM2's gated short convolution (Lfm2ShortConv between its in_proj and
 * out_proj). proj (B, T, 3C) is the in_proj output, each row split into
 * b = [0, C), c = [C, 2C), x = [2C, 3C); then per channel
 *     bx[t] = b[t] x[t]
 *     z[t]  = sum_{k<K} w[ch, k] bx[t - K + 1 + k] (+ bias[ch])
 *     out[t] = c[t] z[t]
 * with w (C, K) the depthwise kernel (Hugging Face's (C, 1, K) conv weight,
 * not flipped). The convolution is causal within each document: tap s of
 * row t counts only when doc[s] == doc[t] (a packed document starts from
 * zeros, as a new sequence does). K <= TRL_MAX_CONV_KERNEL (model_config.h).
 * bx (B, T, C) is saved for the backward.
 * out (B, T, C) is overwritten; bias may be NULL.
 *
 * Two kernels compute it: the direct one (K multiply-adds per row and
 * channel) and an FFT one (overlap-save with FFTW, O(log K) per row and
 * channel). shortconv_forward/backward take the direct kernel for
 * K < TRL_CONV_FFT_MIN_KERNEL, where it is faster, never calling FFTW, and
 * the FFT one from there on. The value is bench/bench_conv's crossover on
 * LFM2-1.2B's width (C = 2048, T = 512 and 2048, 2 threads): the paths tie
 * at K = 16, the FFT path is 1.1x faster at 20, 1.5x at 32, 2.4x at 64 and
 * 6x at 256; at the released K = 3 the direct kernel is 2x faster. The FFT
 * path allocates scratch for the call and keeps one FFTW plan per transform
 * length for the life of the process; the direct kernel allocates nothing. */
#define TRL_CONV_FFT_MIN_KERNEL 20
void shortconv_forward(float *out, float *bx, const float *proj, const float *w,
                       const float *bias, const int32_t *doc, int B, int T, int C, int K);
/* dproj (B, T, 3C) += d/d proj; dw (C, K) and dbias (C) += (NULL skips). */
void shortconv_backward(float *dproj, float *dw, float *dbias, const float *dout,
                        const float *proj, const float *bx, const float *w,
                        const float *bias, const int32_t *doc, int B, int T, int C,
                        int K);
/* Each kernel by name, for the tests and bench/bench_conv. The FFT ones
 * return 0, or -1 having written nothing when they cannot run: out of
 * memory, or a document id that comes back within K rows after another id
 * (the direct kernel joins the two runs, the FFT path sees one run at a
 * time); shortconv_forward/backward then take the direct kernel. */
void shortconv_forward_direct(float *out, float *bx, const float *proj, const float *w,
                              const float *bias, const int32_t *doc, int B, int T, int C,
                              int K);
void shortconv_backward_direct(float *dproj, float *dw, float *dbias, const float *dout,
                               const float *proj, const float *bx, const float *w,
                               const float *bias, const int32_t *doc, int B, int T, int C,
                               int K);
int shortconv_forward_fft(float *out, float *bx, const float *proj, const float *w,
                          const float *bias, const int32_t *doc, int B, int T, int C,
                          int K);
int shortconv_backward_fft(float *dproj, float *dw, float *dbias, const float *dout,
                           const float *proj, const float *bx, const float *w,
                           const float *bias, const int32_t *doc, int B, int T, int C,
                           int K);
/* The loop-by-loop reference (double accumulation) for the tests. */
void shortconv_forward_naive(float *out, const float *proj, const float *w,
                             const float *bias, const int32_t *doc, int B, int T, int C,
                             int K);

#endif
