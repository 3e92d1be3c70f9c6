/* gemm.c - matrix products: CBLAS in fp32, oneDNN matmul with bf16 inputs. */
#include "gemm.h"

#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trl_build.h"

#ifdef HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
#endif

static GemmPrecision g_prec = GEMM_FP32;

int gemm_have_dnnl(void)
{
#ifdef HAVE_DNNL
	return 1;
#else
	return 0;
#endif
}

GemmPrecision gemm_precision(void)
{
	return g_prec;
}

/* Round to nearest even on the upper 16 bits; a NaN keeps a mantissa bit so
 * that it cannot round into an infinity. */
static inline uint16_t bf16_of(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu))
		return (uint16_t)((u >> 16) | 0x40);
	return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

float gemm_bf16_round(float x)
{
	uint32_t u = (uint32_t)bf16_of(x) << 16;
	float f;
	memcpy(&f, &u, 4);
	return f;
}

void gemm_to_bf16(uint16_t *dst, const float *src, size_t n)
{
#pragma omp parallel for schedule(static) if (n > 65536)
	for (size_t i = 0; i < n; i++)
		dst[i] = bf16_of(src[i]);
}

/* A stored (rows, cols) matrix with leading dimension ld, as a dense bf16
 * (rows, cols) one. */
static void to_bf16_dense(uint16_t *dst, const float *src, int rows, int cols, int ld)
{
	if (ld == cols) {
		gemm_to_bf16(dst, src, (size_t)rows * cols);
		return;
	}
#pragma omp parallel for schedule(static) if ((size_t)rows * cols > 65536)
	for (int r = 0; r < rows; r++)
		for (int c = 0; c < cols; c++)
			dst[(size_t)r * cols + c] = bf16_of(src[(size_t)r * ld + c]);
}

#ifdef HAVE_DNNL

/* ---- oneDNN primitives, one per shape ---------------------------------- */

typedef struct PrimKey {
	int M, N, K, ta, tb, lda, ldb, ldc, accumulate;
} PrimKey;

typedef struct Prim {
	PrimKey key;
	dnnl_primitive_t prim;
	dnnl_memory_t a, b, c;
	char impl[96];
} Prim;

#define GEMM_MAX_PRIMS 512
static Prim g_prims[GEMM_MAX_PRIMS];
static int g_nprims;
static dnnl_engine_t g_engine;
static dnnl_stream_t g_stream;
static int g_dnnl_broken; /* a primitive failed: fp32 CBLAS from then on */

static int dnnl_start(void)
{
	if (g_engine)
		return 0;
	if (dnnl_engine_create(&g_engine, dnnl_cpu, 0) != dnnl_success)
		return -1;
	if (dnnl_stream_create(&g_stream, g_engine, dnnl_stream_default_flags) !=
	    dnnl_success)
		return -1;
	return 0;
}

/* Operand (rows, cols) of logical shape (r, c): transposed storage gives the
 * strides (1, ld), plain storage (ld, 1). */
static int operand_desc(dnnl_memory_desc_t *d, int r, int c, int trans, int ld,
                        dnnl_data_type_t dt)
{
	dnnl_dims_t dims = {r, c};
	dnnl_dims_t strides = {trans ? 1 : ld, trans ? ld : 1};
	return dnnl_memory_desc_init_by_strides(d, 2, dims, dt, strides) == dnnl_success
	           ? 0
	           : -1;
}

static Prim *prim_get(const PrimKey *k)
{
	for (int i = 0; i < g_nprims; i++)
		if (!memcmp(&g_prims[i].key, k, sizeof *k))
			return &g_prims[i];
	if (g_nprims == GEMM_MAX_PRIMS || dnnl_start())
		return NULL;
	Prim *p = &g_prims[g_nprims];
	memset(p, 0, sizeof *p);
	p->key = *k;
	dnnl_memory_desc_t a, b, c;
	dnnl_matmul_desc_t md;
	dnnl_primitive_attr_t attr = NULL;
	dnnl_post_ops_t po = NULL;
	dnnl_primitive_desc_t pd = NULL;
	int ok = !operand_desc(&a, k->M, k->K, k->ta, k->lda, dnnl_bf16) &&
	         !operand_desc(&b, k->K, k->N, k->tb, k->ldb, dnnl_bf16) &&
	         !operand_desc(&c, k->M, k->N, 0, k->ldc, dnnl_f32) &&
	         dnnl_matmul_desc_init(&md, &a, &b, NULL, &c) == dnnl_success &&
	         dnnl_primitive_attr_create(&attr) == dnnl_success;
	if (ok && k->accumulate)
		ok = dnnl_post_ops_create(&po) == dnnl_success &&
		     dnnl_post_ops_append_sum(po, 1.0f) == dnnl_success &&
		     dnnl_primitive_attr_set_post_ops(attr, po) == dnnl_success;
	ok = ok &&
	     dnnl_primitive_desc_create(&pd, &md, attr, g_engine, NULL) == dnnl_success;
	const char *impl = NULL;
	ok = ok && dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) ==
	               dnnl_success;
	ok = ok && dnnl_primitive_create(&p->prim, pd) == dnnl_success;
	ok = ok &&
	     dnnl_memory_create(&p->a, &a, g_engine, DNNL_MEMORY_NONE) == dnnl_success &&
	     dnnl_memory_create(&p->b, &b, g_engine, DNNL_MEMORY_NONE) == dnnl_success &&
	     dnnl_memory_create(&p->c, &c, g_engine, DNNL_MEMORY_NONE) == dnnl_success;
	if (ok)
		snprintf(p->impl, sizeof p->impl, "%s", impl ? impl : "?");
	if (pd)
		dnnl_primitive_desc_destroy(pd);
	if (po)
		dnnl_post_ops_destroy(po);
	if (attr)
		dnnl_primitive_attr_destroy(attr);
	if (!ok) {
		if (p->prim)
			dnnl_primitive_destroy(p->prim);
		if (p->a)
			dnnl_memory_destroy(p->a);
		if (p->b)
			dnnl_memory_destroy(p->b);
		return NULL;
	}
	g_nprims++;
	return p;
}

static int prim_run(Prim *p, const uint16_t *A, const uint16_t *B, float *C)
{
	if (dnnl_memory_set_data_handle(p->a, (void *)A) != dnnl_success ||
	    dnnl_memory_set_data_handle(p->b, (void *)B) != dnnl_success ||
	    dnnl_memory_set_data_handle(p->c, C) != dnnl_success)
		return -1;
	dnnl_exec_arg_t args[3] = {
	    {DNNL_ARG_SRC, p->a}, {DNNL_ARG_WEIGHTS, p->b}, {DNNL_ARG_DST, p->c}};
	if (dnnl_primitive_execute(p->prim, g_stream, 3, args) != dnnl_success)
		return -1;
	return dnnl_stream_wait(g_stream) == dnnl_success ? 0 : -1;
}

#endif /* HAVE_DNNL */

/* ---- bf16 operands: scratch and the weight cache ----------------------- */

typedef struct Kept {
	const float *p;
	int rows, cols, ld;
	uint16_t *bf;
	size_t cap; /* elements allocated in bf */
	int valid;
} Kept;

#define GEMM_MAX_KEPT 4096
static Kept g_kept[GEMM_MAX_KEPT];
static int g_nkept, g_scope;
static uint16_t *g_scr[2];
static size_t g_scr_cap[2];

static uint16_t *scratch(int i, size_t n)
{
	if (n > g_scr_cap[i]) {
		trl_free(g_scr[i]);
		g_scr[i] = trl_alloc(n * sizeof(uint16_t));
		g_scr_cap[i] = g_scr[i] ? n : 0;
	}
	return g_scr[i];
}

static void kept_invalidate_all(void)
{
	for (int i = 0; i < g_nkept; i++)
		g_kept[i].valid = 0;
}

void gemm_scope_begin(void)
{
	if (g_scope++ == 0)
		kept_invalidate_all();
}

void gemm_scope_end(void)
{
	if (g_scope > 0 && --g_scope == 0)
		kept_invalidate_all();
}

void gemm_forget(const float *p, size_t n)
{
	for (int i = 0; i < g_nkept; i++) {
		Kept *e = &g_kept[i];
		const float *end = e->p + (size_t)(e->rows - 1) * e->ld + e->cols;
		if (e->valid && e->p < p + n && p < end)
			e->valid = 0;
	}
}

void gemm_forget_all(void)
{
	kept_invalidate_all();
}

size_t gemm_cache_bytes(void)
{
	size_t b = (g_scr_cap[0] + g_scr_cap[1]) * sizeof(uint16_t);
	for (int i = 0; i < g_nkept; i++)
		b += g_kept[i].cap * sizeof(uint16_t);
	return b;
}

/* The dense bf16 copy of a stored (rows, cols) operand: the kept one for a
 * weight inside a scope, else freshly rounded into scratch slot. */
static const uint16_t *operand_bf16(const float *x, int rows, int cols, int ld,
                                    int weight, int slot)
{
	size_t n = (size_t)rows * cols;
	if (!(weight && g_scope)) {
		uint16_t *s = scratch(slot, n);
		if (s)
			to_bf16_dense(s, x, rows, cols, ld);
		return s;
	}
	Kept *e = NULL;
	for (int i = 0; i < g_nkept && !e; i++)
		if (g_kept[i].p == x && g_kept[i].rows == rows &&
		    g_kept[i].cols == cols && g_kept[i].ld == ld)
			e = &g_kept[i];
	if (!e) {
		if (g_nkept == GEMM_MAX_KEPT)
			return operand_bf16(x, rows, cols, ld, 0, slot);
		e = &g_kept[g_nkept++];
		memset(e, 0, sizeof *e);
		e->p = x, e->rows = rows, e->cols = cols, e->ld = ld;
	}
	if (!e->valid) {
		if (e->cap < n) {
			trl_free(e->bf);
			e->bf = trl_alloc(n * sizeof(uint16_t));
			e->cap = e->bf ? n : 0;
			if (!e->bf)
				return NULL;
		}
		to_bf16_dense(e->bf, x, rows, cols, ld);
		e->valid = 1;
	}
	return e->bf;
}

/* ---- the product --------------------------------------------------------- */

static void gemm_blas(int ta, int tb, int M, int N, int K, const float *A, int lda,
                      const float *B, int ldb, float beta, float *C, int ldc)
{
	cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
	            tb ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, A, lda, B, ldb, beta,
	            C, ldc);
}

#ifdef HAVE_DNNL
static int gemm_dnnl(int ta, int tb, int M, int N, int K, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc, int b_weight)
{
	/* Stored shapes: A is (M, K), or (K, M) when transposed; B likewise. The
	 * bf16 copies are dense, so their leading dimension is the stored width. */
	int ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
	const uint16_t *a = operand_bf16(A, ar, ac, lda, 0, 0);
	const uint16_t *b = operand_bf16(B, br, bc, ldb, b_weight, 1);
	if (!a || !b)
		return -1;
	PrimKey k = {M, N, K, ta, tb, ac, bc, ldc, beta != 0.0f};
	Prim *p = prim_get(&k);
	return p ? prim_run(p, a, b, C) : -1;
}
#endif

void gemm(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B,
          int ldb, float beta, float *C, int ldc, int b_weight)
{
	if (M == 0 || N == 0)
		return;
#ifdef HAVE_DNNL
	if (g_prec == GEMM_BF16 && !g_dnnl_broken && K > 0) {
		if (!gemm_dnnl(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc, b_weight))
			return;
		/* set_precision proved a primitive works, so this is memory or a
		 * shape oneDNN refuses: say so once and go on in fp32. */
		fprintf(stderr,
		        "trl-hpc: warning: oneDNN bf16 matmul (%d x %d x %d) failed; "
		        "continuing with fp32 sgemm\n",
		        M, N, K);
		g_dnnl_broken = 1;
	}
#else
	(void)b_weight;
#endif
	gemm_blas(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
}

const char *gemm_impl(int M, int N, int K)
{
#ifdef HAVE_DNNL
	if (g_prec == GEMM_BF16) {
		PrimKey k = {M, N, K, 0, 1, K, K, N, 0};
		Prim *p = prim_get(&k);
		return p ? p->impl : "unavailable";
	}
#else
	(void)M, (void)N, (void)K;
#endif
	return "cblas sgemm";
}

int gemm_set_precision(GemmPrecision p, TrlErr *err)
{
	if (p == GEMM_FP32) {
		g_prec = p;
		return 0;
	}
#ifdef HAVE_DNNL
	g_prec = GEMM_BF16;
	/* One small product proves the library runs here before training counts
	 * on it. */
	PrimKey k = {16, 16, 16, 0, 1, 16, 16, 16, 0};
	if (!prim_get(&k)) {
		g_prec = GEMM_FP32;
		return trl_errf(
		    err, TRL_EUNSUPPORTED,
		    "bf16: oneDNN could not create a bf16 matmul on this CPU; "
		    "set bf16: false");
	}
	return 0;
#else
	return trl_errf(err, TRL_EUNSUPPORTED,
	                "bf16: true needs oneDNN, and this trl-hpc was built without it: "
	                "apt-get install libdnnl-dev, then configure and make again (or "
	                "set bf16: false)");
#endif
}
