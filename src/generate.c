/* generate.c - KV-cached forward, decode attention and sampling for generation. */
#define _GNU_SOURCE /* memmem */
#include "generate.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "layers.h"

void gen_config_defaults(GenConfig *gc)
{
	memset(gc, 0, sizeof *gc);
	gc->max_new_tokens = 16;
	gc->temperature = 1.0f;
	gc->top_p = 1.0f;
	gc->top_k = 0;
	gc->min_p = 0.0f;
	gc->repetition_penalty = 1.0f;
	gc->eos_id = -1;
}

void gen_output_free(GenOutput *out, int B)
{
	for (int b = 0; b < B; b++) {
		free(out[b].ids);
		free(out[b].logprobs);
		free(out[b].text);
		memset(&out[b], 0, sizeof out[b]);
	}
}

/* ---- allocation ------------------------------------------------------------ */

/* The head dimension D: head_dim, or C / H when the config leaves it 0. */
static int head_dim(const ModelConfig *mc)
{
	return mc->head_dim > 0 ? mc->head_dim
	                        : mc->hidden_size / mc->num_attention_heads;
}

static size_t carve(Generator *g, float *base)
{
	const ModelConfig *mc = &g->m->cfg;
	size_t C = (size_t)mc->hidden_size, H = (size_t)mc->num_attention_heads;
	size_t D = (size_t)head_dim(mc), QD = H * D,
	       KVD = D * (size_t)mc->num_key_value_heads;
	size_t I = (size_t)mc->intermediate_size, V = (size_t)mc->vocab_size;
	size_t N = (size_t)g->chunk, La = 0, Lc = 0;
	for (int l = 0; l < mc->num_hidden_layers; l++)
		*(model_config_conv_layer(mc, l) ? &Lc : &La) += 1;
	size_t cache = La * (size_t)g->maxB * (size_t)g->maxT * KVD;
	size_t K1 = Lc ? (size_t)mc->conv_L_cache - 1 : 0;
	size_t big = 3 * C > 2 * I ? 3 * C : 2 * I;
	TrlCarver cv = {base, 0};
	g->k_cache = trl_carve(&cv, cache);
	g->v_cache = trl_carve(&cv, cache);
	g->conv_state = trl_carve(&cv, Lc * (size_t)g->maxB * K1 * C);
	g->x = trl_carve(&cv, N * C);
	g->xn = trl_carve(&cv, N * C);
	g->q = trl_carve(&cv, N * QD);
	g->k = trl_carve(&cv, N * KVD);
	g->v = trl_carve(&cv, N * KVD);
	g->atty = trl_carve(&cv, N * QD);
	g->big = trl_carve(&cv, N * big);
	g->h = trl_carve(&cv, N * I);
	g->stat = trl_carve(&cv, N * (H + 2));
	g->att = trl_carve(&cv, (size_t)g->threads * (size_t)g->maxT);
	g->hlast = trl_carve(&cv, (size_t)g->maxB * C);
	g->logits = trl_carve(&cv, (size_t)g->maxB * V);
	return cv.off;
}

int generator_init(Generator *g, const Model *m, int maxB, int maxT, TrlErr *err)
{
	memset(g, 0, sizeof *g);
	const ModelConfig *mc = &m->cfg;
	if (maxB < 1 || maxT < 1)
		return trl_errf(err, TRL_EINVAL,
		                "generation needs at least one row and one position "
		                "(got %d rows, %d positions)",
		                maxB, maxT);
	if (mc->arch == TRL_ARCH_GPT2 && maxT > mc->max_position_embeddings)
		return trl_errf(
		    err, TRL_EINVAL,
		    "prompt plus max_new_tokens (%d positions) exceeds the "
		    "model's max_position_embeddings (%d): shorten the prompt "
		    "or lower max_new_tokens",
		    maxT, mc->max_position_embeddings);
	if (mc->sliding_window > 0 && maxT > mc->sliding_window)
		return trl_errf(err, TRL_EUNSUPPORTED,
		                "prompt plus max_new_tokens (%d positions) exceeds the "
		                "model's sliding_window (%d), and windowed attention is "
		                "not implemented: shorten the prompt or lower "
		                "max_new_tokens",
		                maxT, mc->sliding_window);
	g->m = m;
	g->maxB = maxB;
	g->maxT = maxT;
	/* Prefill runs in chunks of this many tokens: large enough for sgemm to
	 * reach its speed, small enough that the (chunk, I) buffers stay cheap. */
	long tokens = (long)maxB * maxT;
	g->chunk = tokens < 512 ? (int)tokens : 512;
	if (g->chunk < maxB)
		g->chunk = maxB;
	g->threads = omp_get_max_threads();
	size_t floats = carve(g, NULL);
	size_t V = (size_t)mc->vocab_size;
	g->slab = trl_alloc(floats * sizeof(float));
	g->len = trl_alloc((size_t)maxB * sizeof(int));
	g->ids = trl_alloc((size_t)g->chunk * sizeof(int32_t));
	g->pos = trl_alloc((size_t)g->chunk * sizeof(int32_t));
	g->row = trl_alloc((size_t)g->chunk * sizeof(int32_t));
	g->slot = trl_alloc((size_t)mc->num_hidden_layers * sizeof(int));
	g->sort_idx = trl_alloc((size_t)maxB * V * sizeof(int32_t));
	g->seen = trl_alloc((size_t)maxB * V);
	if (!g->slab || !g->len || !g->ids || !g->pos || !g->row || !g->slot ||
	    !g->sort_idx || !g->seen) {
		generator_free(g);
		return trl_errf(err, TRL_ENOMEM,
		                "out of memory for the generation cache of %d rows x %d "
		                "positions (%.1f MiB): lower the batch or max_new_tokens",
		                maxB, maxT, floats * 4.0 / 1048576.0);
	}
	carve(g, g->slab);
	int na = 0, nc = 0;
	for (int l = 0; l < mc->num_hidden_layers; l++)
		g->slot[l] = model_config_conv_layer(mc, l) ? nc++ : na++;
	return TRL_OK;
}

void generator_free(Generator *g)
{
	trl_free(g->slab);
	trl_free(g->len);
	trl_free(g->ids);
	trl_free(g->pos);
	trl_free(g->row);
	trl_free(g->slot);
	trl_free(g->sort_idx);
	trl_free(g->seen);
	memset(g, 0, sizeof *g);
}

void generator_reset(Generator *g)
{
	memset(g->len, 0, (size_t)g->maxB * sizeof(int));
}

/* ---- decode attention ------------------------------------------------------ */

void gen_attention_naive(float *out, const float *q, const float *kc, const float *vc,
                         const int32_t *rows, const int32_t *pos, int n, int maxT, int H,
                         int KV, int D)
{
	int HD = H * D, KD = KV * D, group = H / KV;
	double scale = 1.0 / sqrt((double)D);
	for (int i = 0; i < n; i++)
		for (int h = 0; h < H; h++) {
			const float *qh = q + (size_t)i * HD + (size_t)h * D;
			size_t base =
			    (size_t)rows[i] * maxT * KD + (size_t)(h / group) * D;
			int P = pos[i] + 1;
			double mx = -HUGE_VAL, sum = 0.0;
			double *sc = malloc((size_t)P * sizeof *sc);
			for (int s = 0; s < P; s++) {
				double d = 0.0;
				for (int c = 0; c < D; c++)
					d +=
					    (double)qh[c] * kc[base + (size_t)s * KD + c];
				sc[s] = d * scale;
				if (sc[s] > mx)
					mx = sc[s];
			}
			for (int s = 0; s < P; s++) {
				sc[s] = exp(sc[s] - mx);
				sum += sc[s];
			}
			for (int c = 0; c < D; c++) {
				double acc = 0.0;
				for (int s = 0; s < P; s++)
					acc += sc[s] * vc[base + (size_t)s * KD + c];
				out[(size_t)i * HD + (size_t)h * D + c] =
				    (float)(acc / sum);
			}
			free(sc);
		}
}

void gen_attention(float *out, float *scratch, int threads, const float *q,
                   const float *kc, const float *vc, const int32_t *rows,
                   const int32_t *pos, int n, int maxT, int H, int KV, int D)
{
	int HD = H * D, KD = KV * D, group = H / KV;
	float scale = 1.0f / sqrtf((float)D);
	/* One task per (query, head): a decode step has B*H of them, each reading
	 * its row's cached keys and values once; the loop is memory-bound. */
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
	for (int ih = 0; ih < n * H; ih++) {
		int i = ih / H, h = ih % H;
		float *sc = scratch + (size_t)omp_get_thread_num() * maxT;
		const float *qh = q + (size_t)i * HD + (size_t)h * D;
		const float *kb =
		    kc + (size_t)rows[i] * maxT * KD + (size_t)(h / group) * D;
		const float *vb =
		    vc + (size_t)rows[i] * maxT * KD + (size_t)(h / group) * D;
		float *o = out + (size_t)i * HD + (size_t)h * D;
		int P = pos[i] + 1;
		float mx = -INFINITY;
		for (int s = 0; s < P; s++) {
			const float *ks = kb + (size_t)s * KD;
			float d = 0.0f;
#pragma omp simd reduction(+ : d)
			for (int c = 0; c < D; c++)
				d += qh[c] * ks[c];
			sc[s] = d * scale;
			mx = sc[s] > mx ? sc[s] : mx;
		}
		float sum = 0.0f;
		for (int s = 0; s < P; s++) {
			sc[s] = expf(sc[s] - mx);
			sum += sc[s];
		}
		float inv = 1.0f / sum;
		for (int c = 0; c < D; c++)
			o[c] = 0.0f;
		for (int s = 0; s < P; s++) {
			const float *vs = vb + (size_t)s * KD;
			float w = sc[s] * inv;
#pragma omp simd
			for (int c = 0; c < D; c++)
				o[c] += w * vs[c];
		}
	}
}

/* ---- small-batch matmul ---------------------------------------------------- */

void gen_matmul(float *out, const float *in, const float *w, const float *bias, int N,
                int IC, int OC, TrlWLayout layout, int accumulate)
{
	if (N > TRL_GEN_GEMV_MAX_ROWS) {
		if (accumulate)
			matmul_forward_add(out, in, w, bias, N, IC, OC, layout);
		else
			matmul_forward(out, in, w, bias, N, IC, OC, layout);
		return;
	}
	if (layout == TRL_W_OUT_IN) {
		/* W (OC, IC): each thread streams whole weight rows once and dots
		 * them with the N input rows, which stay in L1. */
#pragma omp parallel for schedule(static)
		for (int o = 0; o < OC; o++) {
			const float *wr = w + (size_t)o * IC;
			for (int n = 0; n < N; n++) {
				const float *x = in + (size_t)n * IC;
				float d = 0.0f;
#pragma omp simd reduction(+ : d)
				for (int i = 0; i < IC; i++)
					d += x[i] * wr[i];
				float *y = out + (size_t)n * OC + o;
				d += bias ? bias[o] : 0.0f;
				*y = accumulate ? *y + d : d;
			}
		}
		return;
	}
	/* W (IC, OC): blocks of 64 output columns; for each input index the
	 * block's weight segment is read once and added into N accumulators. */
	int nblk = (OC + 63) / 64;
#pragma omp parallel for schedule(static)
	for (int bk = 0; bk < nblk; bk++) {
		int c0 = bk * 64, nc = OC - c0 < 64 ? OC - c0 : 64;
		/* rows == N (N > TRL_GEN_GEMV_MAX_ROWS returned above); the explicit
		 * bound lets the compiler see acc is never overrun. */
		int rows = N < TRL_GEN_GEMV_MAX_ROWS ? N : TRL_GEN_GEMV_MAX_ROWS;
		float acc[TRL_GEN_GEMV_MAX_ROWS][64];
		for (int n = 0; n < rows; n++)
			for (int j = 0; j < nc; j++)
				acc[n][j] = bias ? bias[c0 + j] : 0.0f;
		for (int i = 0; i < IC; i++) {
			const float *wr = w + (size_t)i * OC + c0;
			for (int n = 0; n < rows; n++) {
				float a = in[(size_t)n * IC + i];
				float *ac = acc[n];
#pragma omp simd
				for (int j = 0; j < nc; j++)
					ac[j] += a * wr[j];
			}
		}
		for (int n = 0; n < rows; n++) {
			float *y = out + (size_t)n * OC + c0;
			for (int j = 0; j < nc; j++)
				y[j] = accumulate ? y[j] + acc[n][j] : acc[n][j];
		}
	}
}

/* ---- cached forward -------------------------------------------------------- */

static void norm(const Generator *g, float *out, const float *in, const float *w,
                 const float *b, int N)
{
	const ModelConfig *mc = &g->m->cfg;
	if (mc->arch == TRL_ARCH_GPT2)
		layernorm_forward(out, g->stat, g->stat + g->chunk, in, w, b, N,
		                  mc->hidden_size, mc->norm_eps);
	else
		rmsnorm_forward(out, g->stat, in, w, N, mc->hidden_size, mc->norm_eps);
}

/* lfm2's conv block for the N tokens of a chunk, from g->xn (the normed
 * input) into g->x: in_proj, the gated convolution against each row's rolling
 * state, out_proj. A row's tokens arrive in position order; at position 0 its
 * state starts from zeros, as model_forward's does for a new document. */
static void conv_step(Generator *g, const LayerPtrs *p, int slot, int N)
{
	const ModelConfig *mc = &g->m->cfg;
	int C = mc->hidden_size, K = mc->conv_L_cache, K1 = K - 1;
	size_t C3 = 3 * (size_t)C;
	float *proj = g->big; /* (N, 3C): b, c, x */
	gen_matmul(proj, g->xn, p->in_w, p->in_b, N, C, 3 * C, TRL_W_OUT_IN, 0);
	float *state = g->conv_state + (size_t)slot * g->maxB * K1 * C;
	/* Tiles of channels, tokens in order within a tile (a row's state
	 * carries from token to token), so each token reads a contiguous run of
	 * its projection row rather than one float per row. */
	enum { CT = 64 };
#pragma omp parallel for schedule(static)
	for (int c0 = 0; c0 < C; c0 += CT) {
		int c1 = c0 + CT < C ? c0 + CT : C;
		for (int n = 0; n < N; n++) {
			float *st = state + (size_t)g->row[n] * K1 * C; /* (K1, C) */
			const float *pr = proj + (size_t)n * C3;
			for (int ch = c0; ch < c1; ch++) {
				const float *wc = p->conv_w + (size_t)ch * K;
				if (g->pos[n] == 0)
					for (int k = 0; k < K1; k++)
						st[(size_t)k * C + ch] = 0.0f;
				float bx = pr[ch] * pr[2 * (size_t)C + ch];
				float z = wc[K1] * bx;
				for (int k = 0; k < K1; k++)
					z += wc[k] * st[(size_t)k * C + ch];
				if (p->conv_b)
					z += p->conv_b[ch];
				for (int k = 0; k + 1 < K1; k++)
					st[(size_t)k * C + ch] =
					    st[(size_t)(k + 1) * C + ch];
				if (K1)
					st[(size_t)(K1 - 1) * C + ch] = bx;
				g->xn[(size_t)n * C + ch] = pr[C + ch] * z;
			}
		}
	}
	gen_matmul(g->x, g->xn, p->cout_w, p->cout_b, N, C, C, TRL_W_OUT_IN, 1);
}

/* The attention block for the N tokens of a chunk, from g->xn into g->x: q,
 * k, v (qwen3/lfm2 per-head norms, RoPE), the keys and values appended to
 * cache slot `slot`, attention over the cached row, o_proj. */
static void attention_step(Generator *g, const LayerPtrs *p, int slot, int N)
{
	const ModelConfig *mc = &g->m->cfg;
	int C = mc->hidden_size, H = mc->num_attention_heads,
	    KV = mc->num_key_value_heads;
	int D = head_dim(mc), QD = H * D, KVD = KV * D, gpt2 = mc->arch == TRL_ARCH_GPT2;
	size_t layer_cache = (size_t)g->maxB * g->maxT * KVD;
	float *kc = g->k_cache + slot * layer_cache,
	      *vc = g->v_cache + slot * layer_cache;
	if (gpt2) {
		gen_matmul(g->big, g->xn, p->qkv_w, p->qkv_b, N, C, 3 * C, TRL_W_IN_OUT,
		           0);
		for (int n = 0; n < N; n++) {
			const float *r = g->big + (size_t)n * 3 * C;
			memcpy(g->q + (size_t)n * C, r, (size_t)C * sizeof(float));
			memcpy(g->k + (size_t)n * C, r + C, (size_t)C * sizeof(float));
			memcpy(g->v + (size_t)n * C, r + 2 * C,
			       (size_t)C * sizeof(float));
		}
	} else {
		gen_matmul(g->q, g->xn, p->q_w, p->q_b, N, C, QD, TRL_W_OUT_IN, 0);
		gen_matmul(g->k, g->xn, p->k_w, p->k_b, N, C, KVD, TRL_W_OUT_IN, 0);
		gen_matmul(g->v, g->xn, p->v_w, p->v_b, N, C, KVD, TRL_W_OUT_IN, 0);
		/* qwen3, lfm2: RMSNorm of every q and k head over D, before RoPE. */
		if (p->q_norm)
			rmsnorm_forward(g->q, g->stat, g->q, p->q_norm, N * H, D,
			                mc->norm_eps);
		if (p->k_norm)
			rmsnorm_forward(g->k, g->stat, g->k, p->k_norm, N * KV, D,
			                mc->norm_eps);
		rope_forward(g->q, g->pos, N, H, D, mc->rope_theta);
		rope_forward(g->k, g->pos, N, KV, D, mc->rope_theta);
	}
	for (int n = 0; n < N; n++) {
		size_t at = ((size_t)g->row[n] * g->maxT + g->pos[n]) * KVD;
		memcpy(kc + at, g->k + (size_t)n * KVD, (size_t)KVD * sizeof(float));
		memcpy(vc + at, g->v + (size_t)n * KVD, (size_t)KVD * sizeof(float));
	}
	gen_attention(g->atty, g->att, g->threads, g->q, kc, vc, g->row, g->pos, N,
	              g->maxT, H, KV, D);
	gen_matmul(g->x, g->atty, p->o_w, p->o_b, N, QD, C,
	           gpt2 ? TRL_W_IN_OUT : TRL_W_OUT_IN, 1);
}

/* Runs N tokens (g->ids, g->pos, g->row) through every layer, leaving the
 * residual stream after the last layer in g->x, and writes their keys and
 * values into the cache. The math is model_forward's, layer by layer. */
static void forward_chunk(Generator *g, int N)
{
	const ModelConfig *mc = &g->m->cfg;
	const ModelPtrs *w = &g->m->w;
	int C = mc->hidden_size, I = mc->intermediate_size;
	int L = mc->num_hidden_layers, gpt2 = mc->arch == TRL_ARCH_GPT2;

	embedding_forward(g->x, g->ids, g->pos, w->wte, gpt2 ? w->wpe : NULL, N, C);
	for (int l = 0; l < L; l++) {
		const LayerPtrs *p = &w->layer[l];

		norm(g, g->xn, g->x, p->ln1_w, p->ln1_b, N);
		if (model_config_conv_layer(mc, l))
			conv_step(g, p, g->slot[l], N);
		else
			attention_step(g, p, g->slot[l], N);

		norm(g, g->xn, g->x, p->ln2_w, p->ln2_b, N);
		if (gpt2) {
			gen_matmul(g->h, g->xn, p->fc_w, p->fc_b, N, C, I, TRL_W_IN_OUT,
			           0);
			gelu_forward(g->h, g->h, (size_t)N * I);
			gen_matmul(g->x, g->h, p->proj_w, p->proj_b, N, I, C,
			           TRL_W_IN_OUT, 1);
		} else {
			float *gate = g->big, *up = g->big + (size_t)N * I;
			gen_matmul(gate, g->xn, p->gate_w, NULL, N, C, I, TRL_W_OUT_IN,
			           0);
			gen_matmul(up, g->xn, p->up_w, NULL, N, C, I, TRL_W_OUT_IN, 0);
			swiglu_forward(g->h, gate, up, (size_t)N * I);
			gen_matmul(g->x, g->h, p->down_w, NULL, N, I, C, TRL_W_OUT_IN, 1);
		}
	}
}

int generator_forward(Generator *g, int nrows, const int *rows, const int *n,
                      const int32_t *ids, TrlErr *err)
{
	const ModelConfig *mc = &g->m->cfg;
	int C = mc->hidden_size, V = mc->vocab_size;
	if (nrows < 1 || nrows > g->maxB)
		return trl_errf(err, TRL_EINVAL,
		                "generator_forward: %d rows (cache has %d)", nrows,
		                g->maxB);
	long total = 0;
	for (int i = 0; i < nrows; i++) {
		int r = rows[i];
		if (r < 0 || r >= g->maxB || n[i] < 1)
			return trl_errf(err, TRL_EINVAL,
			                "generator_forward: bad row %d or token count %d",
			                r, n[i]);
		for (int j = 0; j < i; j++)
			if (rows[j] == r)
				return trl_errf(err, TRL_EINVAL,
				                "generator_forward: row %d given twice",
				                r);
		if (g->len[r] + n[i] > g->maxT)
			return trl_errf(err, TRL_EINVAL,
			                "row %d: %d cached + %d new tokens exceed the "
			                "cache's %d positions",
			                r, g->len[r], n[i], g->maxT);
		for (int j = 0; j < n[i]; j++)
			if (ids[total + j] < 0 || ids[total + j] >= V)
				return trl_errf(
				    err, TRL_EINVAL,
				    "row %d: token id %d is outside the model's "
				    "vocabulary of %d",
				    r, (int)ids[total + j], V);
		total += n[i];
	}

	/* Stream the tokens row after row through chunks of g->chunk tokens; the
	 * keys of a row's earlier chunk are in the cache before a later chunk's
	 * queries read them. */
	int i = 0, j = 0, N = 0;
	long t = 0;
	while (t < total) {
		N = 0;
		int first_row = i, first_j = j;
		while (N < g->chunk && i < nrows) {
			g->ids[N] = ids[t];
			g->pos[N] = g->len[rows[i]] + j;
			g->row[N] = rows[i];
			N++;
			t++;
			if (++j == n[i]) {
				i++;
				j = 0;
			}
		}
		forward_chunk(g, N);
		/* Keep the residual of each row's last token. */
		int ri = first_row, rj = first_j;
		for (int k = 0; k < N; k++) {
			if (rj == n[ri] - 1)
				memcpy(g->hlast + (size_t)ri * C, g->x + (size_t)k * C,
				       (size_t)C * sizeof(float));
			if (++rj == n[ri]) {
				ri++;
				rj = 0;
			}
		}
	}
	for (int r = 0; r < nrows; r++)
		g->len[rows[r]] += n[r];
	norm(g, g->xn, g->hlast, g->m->w.lnf_w, g->m->w.lnf_b, nrows);
	gen_matmul(g->logits, g->xn, g->m->w.lm_head, NULL, nrows, C, V, TRL_W_OUT_IN, 0);
	return TRL_OK;
}

/* ---- sampling -------------------------------------------------------------- */

void sampling_rng(Rng *r, uint64_t seed, int row)
{
	rng_seed(r, seed ^ (0x9E3779B97F4A7C15ULL * (uint64_t)(row + 1)));
}

/* Sifts idx[i] down a heap of n entries ordered so that the root has the
 * SMALLEST key (ties broken by the larger index, so heapsort is deterministic). */
static int key_less(const float *key, int32_t a, int32_t b)
{
	return key[a] < key[b] || (key[a] == key[b] && a > b);
}

static void sift_down(int32_t *idx, int n, int i, const float *key)
{
	for (;;) {
		int c = 2 * i + 1;
		if (c >= n)
			return;
		if (c + 1 < n && key_less(key, idx[c + 1], idx[c]))
			c++;
		if (!key_less(key, idx[c], idx[i]))
			return;
		int32_t tmp = idx[i];
		idx[i] = idx[c];
		idx[c] = tmp;
		i = c;
	}
}

/* Heapsort of idx[0..n) by key, descending (a min-heap drained to the back). */
static void sort_desc(int32_t *idx, int n, const float *key)
{
	for (int i = n / 2 - 1; i >= 0; i--)
		sift_down(idx, n, i, key);
	for (int end = n - 1; end > 0; end--) {
		int32_t tmp = idx[0];
		idx[0] = idx[end];
		idx[end] = tmp;
		sift_down(idx, end, 0, key);
	}
}

void sampling_process(float *logits, int V, const GenConfig *gc, const uint8_t *seen,
                      int32_t *idx)
{
	float rp = gc->repetition_penalty;
	if (seen && rp > 0.0f && rp != 1.0f)
		for (int t = 0; t < V; t++)
			if (seen[t])
				logits[t] =
				    logits[t] > 0.0f ? logits[t] / rp : logits[t] * rp;
	if (gc->temperature > 0.0f && gc->temperature != 1.0f)
		for (int t = 0; t < V; t++)
			logits[t] /= gc->temperature;
	if (gc->top_k > 0 && gc->top_k < V) {
		/* The k-th largest logit is the root of a min-heap of the k largest;
		 * like Hugging Face, every logit equal to it is kept. */
		int k = gc->top_k;
		for (int t = 0; t < k; t++)
			idx[t] = t;
		for (int i = k / 2 - 1; i >= 0; i--)
			sift_down(idx, k, i, logits);
		for (int t = k; t < V; t++)
			if (logits[t] > logits[idx[0]]) {
				idx[0] = t;
				sift_down(idx, k, 0, logits);
			}
		float thr = logits[idx[0]];
		for (int t = 0; t < V; t++)
			if (logits[t] < thr)
				logits[t] = -INFINITY;
	}
	if (gc->top_p > 0.0f && gc->top_p < 1.0f) {
		int m = 0;
		for (int t = 0; t < V; t++)
			if (logits[t] > -INFINITY)
				idx[m++] = t;
		sort_desc(idx, m, logits);
		float mx = logits[idx[0]];
		double sum = 0.0;
		for (int i = 0; i < m; i++)
			sum += exp((double)logits[idx[i]] - mx);
		/* Keep tokens while the mass before them is below top_p: the
		 * smallest prefix whose mass reaches top_p (HF's TopPLogitsWarper). */
		double before = 0.0;
		for (int i = 0; i < m; i++) {
			double p = exp((double)logits[idx[i]] - mx) / sum;
			if (i > 0 && before >= gc->top_p)
				logits[idx[i]] = -INFINITY;
			before += p;
		}
	}
	if (gc->min_p > 0.0f) {
		/* p_t < min_p * p_max  <=>  l_t < l_max + log(min_p). */
		float mx = -INFINITY;
		for (int t = 0; t < V; t++)
			mx = logits[t] > mx ? logits[t] : mx;
		float thr = mx + logf(gc->min_p);
		for (int t = 0; t < V; t++)
			if (logits[t] < thr)
				logits[t] = -INFINITY;
	}
}

int32_t sampling_pick(const float *logits, int V, const GenConfig *gc, Rng *r,
                      float *logprob)
{
	int32_t best = 0;
	for (int t = 1; t < V; t++)
		if (logits[t] > logits[best])
			best = t;
	float mx = logits[best];
	double sum = 0.0;
	for (int t = 0; t < V; t++)
		sum += exp((double)logits[t] - mx);
	int32_t tok = best;
	if (gc->temperature > 0.0f) {
		double u = rng_uniform(r) * sum, acc = 0.0;
		int32_t last = best;
		tok = -1;
		for (int t = 0; t < V && tok < 0; t++) {
			if (logits[t] == -INFINITY)
				continue;
			acc += exp((double)logits[t] - mx);
			last = t;
			if (u < acc)
				tok = t;
		}
		if (tok < 0) /* u rounded past the total */
			tok = last;
	}
	if (logprob)
		*logprob = (float)((double)logits[tok] - mx - log(sum));
	return tok;
}

/* ---- generate -------------------------------------------------------------- */

/* Decodes out->ids into out->text, growing the buffer as needed. */
static int decode_text(const Tokenizer *tok, GenOutput *o, size_t *cap)
{
	size_t need = tokenizer_decode(tok, o->ids, o->n, 1, o->text, *cap);
	if (need + 1 > *cap) {
		size_t nc = *cap;
		while (nc < need + 1)
			nc *= 2;
		char *p = realloc(o->text, nc);
		if (!p)
			return TRL_ENOMEM;
		o->text = p;
		*cap = nc;
		tokenizer_decode(tok, o->ids, o->n, 1, o->text, *cap);
	}
	o->text_len = need;
	return TRL_OK;
}

/* The offset of the earliest stop string in text, or -1. */
static long find_stop(const GenConfig *gc, const char *text, size_t len)
{
	long at = -1;
	for (int s = 0; s < gc->n_stop; s++) {
		size_t sl = strlen(gc->stop[s]);
		if (sl == 0)
			continue;
		const char *p = memmem(text, len, gc->stop[s], sl);
		if (p && (at < 0 || p - text < at))
			at = p - text;
	}
	return at;
}

static int check_config(const GenConfig *gc, TrlErr *err)
{
	if (gc->max_new_tokens < 0)
		return trl_errf(err, TRL_EINVAL, "max_new_tokens must be >= 0, got %d",
		                gc->max_new_tokens);
	if (!(gc->temperature >= 0.0f))
		return trl_errf(err, TRL_EINVAL, "temperature must be >= 0, got %g",
		                gc->temperature);
	if (!(gc->top_p > 0.0f && gc->top_p <= 1.0f))
		return trl_errf(err, TRL_EINVAL, "top_p must be in (0, 1], got %g",
		                gc->top_p);
	if (!(gc->min_p >= 0.0f && gc->min_p <= 1.0f))
		return trl_errf(err, TRL_EINVAL, "min_p must be in [0, 1], got %g",
		                gc->min_p);
	if (!(gc->repetition_penalty > 0.0f))
		return trl_errf(err, TRL_EINVAL, "repetition_penalty must be > 0, got %g",
		                gc->repetition_penalty);
	if (gc->n_stop < 0 || gc->n_stop > TRL_GEN_MAX_STOP)
		return trl_errf(err, TRL_EINVAL, "at most %d stop strings, got %d",
		                TRL_GEN_MAX_STOP, gc->n_stop);
	return TRL_OK;
}

int generate(Generator *g, const Tokenizer *tok, const GenConfig *gc,
             const int32_t *const *prompts, const int *prompt_lens, int B, GenOutput *out,
             TrlErr *err)
{
	int V = g->m->cfg.vocab_size, rc = check_config(gc, err);
	if (rc)
		return rc;
	if (B < 1 || B > g->maxB)
		return trl_errf(err, TRL_EINVAL,
		                "%d prompts, but the generator has %d rows", B, g->maxB);
	long total = 0;
	for (int b = 0; b < B; b++) {
		if (prompt_lens[b] < 1 || prompt_lens[b] > g->maxT)
			return trl_errf(err, TRL_EINVAL,
			                "prompt %d has %d tokens; it needs 1 to %d", b,
			                prompt_lens[b], g->maxT);
		total += prompt_lens[b];
	}
	/* The weights are fixed for the whole call: bf16 rounds each once, not
	 * once per token. */
	gemm_scope_begin();
	memset(out, 0, (size_t)B * sizeof *out);
	int32_t *flat = malloc((size_t)total * sizeof *flat);
	int *rows = malloc((size_t)B * sizeof *rows);
	int *ones = malloc((size_t)B * sizeof *ones);
	int *active = malloc((size_t)B * sizeof *active);
	int32_t *next = malloc((size_t)B * sizeof *next);
	size_t *cap = malloc((size_t)B * sizeof *cap);
	Rng *rng = malloc((size_t)B * sizeof *rng);
	int ok = flat && rows && ones && active && next && cap && rng;
	int room = gc->max_new_tokens > 0 ? gc->max_new_tokens : 1;
	for (int b = 0; b < B && ok; b++) {
		out[b].ids = malloc((size_t)room * sizeof(int32_t));
		out[b].logprobs = malloc((size_t)room * sizeof(float));
		cap[b] = 64;
		out[b].text = malloc(cap[b]);
		ok = out[b].ids && out[b].logprobs && out[b].text;
		if (ok)
			out[b].text[0] = 0;
	}
	if (!ok) {
		rc = trl_errf(err, TRL_ENOMEM, "out of memory for %d completions", B);
		goto fail;
	}

	generator_reset(g);
	memset(g->seen, 0, (size_t)B * V);
	total = 0;
	for (int b = 0; b < B; b++) {
		rows[b] = b;
		ones[b] = 1;
		active[b] = b;
		sampling_rng(&rng[b], gc->seed, b);
		for (int j = 0; j < prompt_lens[b]; j++) {
			int32_t id = prompts[b][j];
			if (id >= 0 && id < V)
				g->seen[(size_t)b * V + id] = 1;
			flat[total++] = id;
		}
	}
	int na = gc->max_new_tokens > 0 ? B : 0;
	if (na) {
		rc = generator_forward(g, B, rows, prompt_lens, flat, err);
		if (rc)
			goto fail;
	}
	while (na > 0) {
		/* g->logits row k belongs to cache row active[k]. */
#pragma omp parallel for schedule(dynamic, 1)
		for (int k = 0; k < na; k++) {
			int b = active[k];
			float *lg = g->logits + (size_t)k * V;
			sampling_process(lg, V, gc, g->seen + (size_t)b * V,
			                 g->sort_idx + (size_t)b * V);
			float lp;
			int32_t id = sampling_pick(lg, V, gc, &rng[b], &lp);
			out[b].ids[out[b].n] = id;
			out[b].logprobs[out[b].n] = lp;
			out[b].n++;
			g->seen[(size_t)b * V + id] = 1;
		}
		int nn = 0;
		for (int k = 0; k < na; k++) {
			int b = active[k];
			GenOutput *o = &out[b];
			int32_t id = o->ids[o->n - 1];
			if (gc->eos_id >= 0 && id == gc->eos_id) {
				o->finish = TRL_GEN_EOS;
				continue;
			}
			if (gc->n_stop > 0) {
				if (decode_text(tok, o, &cap[b])) {
					rc = trl_errf(err, TRL_ENOMEM,
					              "out of memory for text");
					goto fail;
				}
				if (find_stop(gc, o->text, o->text_len) >= 0) {
					o->finish = TRL_GEN_STOP;
					continue;
				}
			}
			if (o->n == gc->max_new_tokens || g->len[b] >= g->maxT) {
				o->finish = TRL_GEN_LENGTH;
				continue;
			}
			active[nn] = b;
			next[nn] = id;
			nn++;
		}
		na = nn;
		if (g->progress)
			g->progress(g->progress_ctx);
		if (na > 0) {
			rc = generator_forward(g, na, active, ones, next, err);
			if (rc)
				goto fail;
		}
	}
	for (int b = 0; b < B; b++) {
		if (decode_text(tok, &out[b], &cap[b])) {
			rc = trl_errf(err, TRL_ENOMEM, "out of memory for text");
			goto fail;
		}
		long at = find_stop(gc, out[b].text, out[b].text_len);
		if (out[b].finish == TRL_GEN_STOP && at >= 0) {
			out[b].text_len = (size_t)at;
			out[b].text[at] = 0;
		}
	}
	rc = TRL_OK;
	goto done;
fail:
	gen_output_free(out, B);
done:
	gemm_scope_end();
	free(flat);
	free(rows);
	free(ones);
	free(active);
	free(next);
	free(cap);
	free(rng);
	return rc;
}
