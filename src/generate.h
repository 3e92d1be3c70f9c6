/* generate.h - autoregressive generation with a KV cache and TRL/vLLM-style
 * sampling (temperature, top_k, top_p, min_p, repetition_penalty).
 *
 * Usage:
 *     Generator g;
 *     generator_init(&g, &model, maxB, maxT, &err);   // every buffer, once
 *     GenConfig gc; gen_config_defaults(&gc); gc.max_new_tokens = 64; ...
 *     GenOutput out[B];
 *     generate(&g, &tok, &gc, prompts, prompt_lens, B, out, &err);
 *     ... out[b].ids, out[b].logprobs, out[b].text ...
 *     gen_output_free(out, B);
 *     generator_free(&g);
 * The Generator borrows the Model (which must outlive it and must not change
 * while a generation runs) and owns the cache: per attention layer K and V
 * of shape (maxB, maxT, KV*D), per lfm2 conv layer a rolling state of the last
 * conv_L_cache - 1 convolution inputs of each row (maxB, K-1, C). Nothing is allocated
 * per token: generate allocates the outputs once per call, the rest was allocated by
 * generator_init.
 *
 * Rows of a batch are independent: each row's tokens sit at positions 0, 1,
 * ... of its own cache row, prompts of different lengths are packed without
 * padding (so padding is never attended), and each row samples from its own
 * Rng seeded from (seed, row index). A row's result therefore does not depend
 * on the other prompts in the batch (up to float rounding of the matmuls).
 */
#ifndef TRL_GENERATE_H
#define TRL_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "layers.h"
#include "model.h"
#include "rng.h"
#include "tokenizer.h"
#include "trl.h"

#define TRL_GEN_MAX_STOP 8

/* Sampling parameters, named as in TRL / vLLM SamplingParams. */
typedef struct GenConfig {
	int max_new_tokens;
	float temperature; /* 0: greedy (argmax) */
	float top_p;       /* 1: off; keep the smallest top set with mass >= top_p */
	int top_k;         /* 0 or -1: off; keep the top_k largest logits */
	float min_p;       /* 0: off; drop p < min_p * max p */
	float repetition_penalty; /* 1: off; HF semantics, see sampling_process */
	uint64_t seed;
	int eos_id; /* -1: never stop on a token */
	int n_stop;
	const char *stop[TRL_GEN_MAX_STOP]; /* stop strings on the decoded text */
} GenConfig;

/* max_new_tokens 16, temperature 1, top_p 1, top_k 0, min_p 0,
 * repetition_penalty 1, seed 0, eos_id -1, no stop strings. */
void gen_config_defaults(GenConfig *gc);

typedef enum {
	TRL_GEN_LENGTH = 0, /* max_new_tokens reached (or the cache row is full) */
	TRL_GEN_EOS = 1,    /* the EOS token was sampled (it is in ids) */
	TRL_GEN_STOP = 2    /* a stop string appeared in the text */
} TrlGenFinish;

/* One row's completion. ids and logprobs hold n entries; the token that ended
 * the row (EOS, or the one completing a stop string) is included. text is the
 * decoded completion without special tokens, NUL-terminated, text_len bytes
 * (it may contain NUL bytes when the model emits byte 0), truncated before the
 * first stop string as vLLM does. logprobs[i] is the log-probability of ids[i]
 * under the PROCESSED distribution it was sampled from: log-softmax of the
 * logits after repetition_penalty, temperature and the top_k / top_p / min_p
 * filters (vLLM's logprobs_mode "processed_logprobs"). With temperature 0 the
 * same is reported with temperature 1 (the token is the argmax). */
typedef struct GenOutput {
	int n;
	int32_t *ids;    /* (n) */
	float *logprobs; /* (n) */
	char *text;      /* (text_len + 1) */
	size_t text_len;
	TrlGenFinish finish;
} GenOutput;

/* Frees what generate allocated in out[0..B); safe on zeroed outputs. */
void gen_output_free(GenOutput *out, int B);

typedef struct Generator {
	const Model *m;
	int maxB, maxT;           /* cache rows and positions per row */
	int chunk;                /* tokens per forward chunk (>= maxB) */
	int threads;              /* OpenMP threads the attention scratch was sized for */
	float *k_cache, *v_cache; /* (La, maxB, maxT, KV*D), La attention layers */
	float *conv_state;        /* lfm2: (Lc, maxB, K-1, C) for the Lc conv layers:
	                           * the last K-1 values of b * x of each row */
	int *slot;                /* (L) layer l's index among its kind's layers */
	int *len;                 /* (maxB) tokens cached in each row */
	/* per-chunk activations, (chunk, ...) */
	int32_t *ids, *pos, *row; /* (chunk) */
	float *x, *xn;            /* (chunk, C) */
	float *q, *k, *v, *atty;  /* (chunk, H*D), (chunk, KV*D) x2, (chunk, H*D) */
	float *big;               /* (chunk, max(3C, 2I)) */
	float *h;                 /* (chunk, I) */
	float *stat;              /* (chunk * H) norm statistics */
	float *att;               /* (threads, maxT) attention scores */
	float *hlast;             /* (maxB, C) final hidden state of each row */
	float *logits;            /* (maxB, V) next-token logits of each row */
	/* sampling scratch */
	int32_t *sort_idx; /* (maxB, V) */
	uint8_t *seen;     /* (maxB, V) tokens seen in each row */
	void *slab;        /* one allocation behind the float buffers */
	/* When set, called once per decoding step (between tokens): a rank that
	 * generates while a transfer is in flight moves it on here. */
	void (*progress)(void *ctx);
	void *progress_ctx;
} Generator;

/* Allocates the cache for maxB rows of maxT tokens and every scratch buffer.
 * For gpt2 maxT must not exceed max_position_embeddings. */
int generator_init(Generator *g, const Model *m, int maxB, int maxT, TrlErr *err);
void generator_free(Generator *g);

/* Empties every cache row. */
void generator_reset(Generator *g);

/* The cached forward pass: appends n[i] tokens (ids, concatenated over i) to
 * cache row rows[i], i < nrows, at positions len[rows[i]], ..., and writes the
 * next-token logits after the last appended token of row i into
 * g->logits + i * V. Rows must be distinct, n[i] >= 1, and the row must have
 * room. Prefill is one call with the prompts; decode calls with n[i] = 1. */
int generator_forward(Generator *g, int nrows, const int *rows, const int *n,
                      const int32_t *ids, TrlErr *err);

/* Generates completions of B prompts (prompts[b] has prompt_lens[b] >= 1 ids)
 * into out[0..B) (allocated here; free with gen_output_free). Rows stop on
 * EOS, a stop string, max_new_tokens, or a full cache row. tok decodes the
 * text (and for stop strings). Resets the cache first. */
int generate(Generator *g, const Tokenizer *tok, const GenConfig *gc,
             const int32_t *const *prompts, const int *prompt_lens, int B, GenOutput *out,
             TrlErr *err);

/* ---- sampling, exposed for tests ------------------------------------------- */

/* The Rng of row `row` for a seed: independent of the batch it is in. */
void sampling_rng(Rng *r, uint64_t seed, int row);

/* Turns logits (V) into the processed logits, in place, in Hugging Face
 * order: repetition_penalty over the tokens with seen[t] != 0 (a logit l
 * becomes l / p if l > 0, else l * p), temperature (division; skipped when
 * temperature <= 0), then top_k (drop logits below the k-th largest), top_p
 * (sort descending, keep tokens while the mass before them is < top_p; at
 * least one), min_p (drop p < min_p * max p). Dropped logits become -INFINITY.
 * idx (V) is scratch. seen may be NULL. */
void sampling_process(float *logits, int V, const GenConfig *gc, const uint8_t *seen,
                      int32_t *idx);

/* Picks a token from processed logits (V): the argmax when temperature <= 0,
 * else a draw from softmax(logits) with one rng_uniform. Writes the token's
 * log-softmax value to *logprob when logprob is not NULL. */
int32_t sampling_pick(const float *logits, int V, const GenConfig *gc, Rng *r,
                      float *logprob);

/* Up to this many rows, gen_matmul uses its own weight-streaming kernel;
 * above it, CBLAS sgemm (matmul_forward). A decode step of one row is
 * memory-bound, and OpenBLAS 0.3.21's sgemm copies (packs) the whole weight
 * matrix on every call, which took 70% of a batch-1 step; from about 4 rows
 * on, sgemm's register blocking wins (measured on the tiny benchmark). */
#define TRL_GEN_GEMV_MAX_ROWS 2

/* out (N, OC) = in (N, IC) . W (+ bias), or out += ... when accumulate;
 * matmul_forward's layouts and results (matmul_forward_naive is the
 * reference the tests compare against). */
void gen_matmul(float *out, const float *in, const float *w, const float *bias, int N,
                int IC, int OC, TrlWLayout layout, int accumulate);

/* Reference decode attention (naive, double accumulation) for tests: for each
 * of n queries q (n, H*D) of row rows[i] at position pos[i], attends keys and
 * values 0..pos[i] of that row in kc, vc (maxB, maxT, KV*D); out (n, H*D). */
void gen_attention_naive(float *out, const float *q, const float *kc, const float *vc,
                         const int32_t *rows, const int32_t *pos, int n, int maxT, int H,
                         int KV, int D);
/* The fast version used by generator_forward (OpenMP over (query, head));
 * scratch holds threads * maxT floats. */
void gen_attention(float *out, float *scratch, int threads, const float *q,
                   const float *kc, const float *vc, const int32_t *rows,
                   const int32_t *pos, int n, int maxT, int H, int KV, int D);

#endif
