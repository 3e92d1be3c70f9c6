/* gemm.h - the one matrix product behind every linear layer: CBLAS sgemm in
 * fp32, or oneDNN's matmul primitive with bf16 inputs and fp32 accumulation.
 *
 * Row-major, C (M, N) = op(A) (M, K) op(B) (K, N) + beta C, beta 0 or 1, where
 * op(X) is X or its transpose (ta, tb) as in cblas_sgemm. A, B and C are fp32
 * in memory whatever the precision: in bf16 the operands are rounded to bf16
 * (round to nearest even) on the way in, the products are summed in fp32 and
 * C stays fp32, which is what torch.autocast does to a linear layer.
 *
 * The precision is process-wide (gemm_set_precision, once at start-up, before
 * any gemm call). Calls come from one thread at a time (the kernels
 * themselves use the OpenMP pool).
 *
 * Weight cache. Rounding a weight matrix to bf16 costs a pass over it on each
 * use; inside a weight scope (gemm_scope_begin .. gemm_scope_end, nestable)
 * a B operand passed as a weight (b_weight 1) is rounded once and kept,
 * keyed by its address and size. A scope promises that no weight changes
 * while it is open, except where the caller says so with gemm_forget (ZeRO-3
 * overwriting a gathered layer's buffer). Outside any scope nothing is kept,
 * so code that does not know about scopes is only slower, never wrong. */
#ifndef TRL_GEMM_H
#define TRL_GEMM_H

#include <stddef.h>
#include <stdint.h>

#include "trl.h"

typedef enum { GEMM_FP32 = 0, GEMM_BF16 = 1 } GemmPrecision;

/* 1 when this build has oneDNN (configure's --with-dnnl, the default when
 * libdnnl-dev is installed). */
int gemm_have_dnnl(void);

/* Sets the process-wide precision. GEMM_BF16 needs oneDNN: without it the
 * call fails with a message saying how to build it in. */
int gemm_set_precision(GemmPrecision p, TrlErr *err);
GemmPrecision gemm_precision(void);

/* The implementation oneDNN picks for an (M, K) x (K, N) bf16 product, as
 * its name ("brg:avx512_core_amx_bf16", ...), or "cblas sgemm" in fp32. The
 * string is static. */
const char *gemm_impl(int M, int N, int K);

void gemm(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B,
          int ldb, float beta, float *C, int ldc, int b_weight);

void gemm_scope_begin(void);
void gemm_scope_end(void);
/* Drops kept bf16 copies of any weight overlapping [p, p + n), or of all
 * weights (gemm_forget_all, after an optimizer step). */
void gemm_forget(const float *p, size_t n);
void gemm_forget_all(void);

/* Bytes held by kept bf16 weights and by the operand scratch. */
size_t gemm_cache_bytes(void);

/* fp32 -> bf16 (round to nearest even; NaN stays NaN) and back. */
void gemm_to_bf16(uint16_t *dst, const float *src, size_t n);
float gemm_bf16_round(float x);

#endif
