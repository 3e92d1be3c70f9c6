/* layers.h - forward/backward pairs of every transformer layer.
 *
 * Conventions: row-major, last dimension contiguous; N = B*T rows. Arguments
 * come in one order: outputs, (saved statistics), inputs, weights, sizes.
 * Every *_backward ACCUMULATES (+=) into its gradient outputs, both weight
 * gradients and input gradients, so residual branches and tied weights add up;
 * a NULL gradient pointer skips that gradient. All matmuls go through CBLAS
 * sgemm; other loops are OpenMP-parallel. Nothing here allocates. LFM2's
 * short convolution is in shortconv.h.
 */
#ifndef TRL_LAYERS_H
#define TRL_LAYERS_H

#include <stddef.h>
#include <stdint.h>

/* Weight layouts: Hugging Face nn.Linear stores (OC, IC) and computes x W^T;
 * GPT-2's Conv1D stores (IC, OC) and computes x W. */
typedef enum { TRL_W_OUT_IN = 0, TRL_W_IN_OUT = 1 } TrlWLayout;

/* out (N, OC) = in (N, IC) . W (+ bias (OC)). out is overwritten. */
void matmul_forward(float *out, const float *in, const float *w, const float *bias, int N,
                    int IC, int OC, TrlWLayout layout);
/* out (N, OC) += in . W (+ bias): the residual form, out holds the residual. */
void matmul_forward_add(float *out, const float *in, const float *w, const float *bias,
                        int N, int IC, int OC, TrlWLayout layout);
/* din (N, IC) += dout W^T-ish; dw += ...; dbias (OC) += column sums of dout. */
void matmul_backward(float *din, float *dw, float *dbias, const float *dout,
                     const float *in, const float *w, int N, int IC, int OC,
                     TrlWLayout layout);

/* out (N, C) = wte[ids] (+ wpe[pos] when wpe is not NULL). */
void embedding_forward(float *out, const int32_t *ids, const int32_t *pos,
                       const float *wte, const float *wpe, int N, int C);
void embedding_backward(float *dwte, float *dwpe, const float *dout, const int32_t *ids,
                        const int32_t *pos, int N, int C);

/* RMSNorm (llama): out = in * rstd * w, rstd (N) = 1/sqrt(mean(in^2) + eps). */
void rmsnorm_forward(float *out, float *rstd, const float *in, const float *w, int N,
                     int C, float eps);
void rmsnorm_backward(float *din, float *dw, const float *dout, const float *in,
                      const float *w, const float *rstd, int N, int C);

/* LayerNorm (gpt2): mean, rstd (N). */
void layernorm_forward(float *out, float *mean, float *rstd, const float *in,
                       const float *w, const float *b, int N, int C, float eps);
void layernorm_backward(float *din, float *dw, float *db, const float *dout,
                        const float *in, const float *w, const float *mean,
                        const float *rstd, int N, int C);

/* Rotary embedding in place on x (N, H, D), Hugging Face rotate_half layout
 * (pairs are (i, i + D/2)), angle pos[n] * theta^(-2i/D). Backward rotates the
 * gradient by the inverse angle, in place (it overwrites, it does not add). */
void rope_forward(float *x, const int32_t *pos, int N, int H, int D, float theta);
void rope_backward(float *dx, const int32_t *pos, int N, int H, int D, float theta);

/* GELU, tanh approximation (gpt2 "gelu_new"). */
void gelu_forward(float *out, const float *in, size_t n);
void gelu_backward(float *din, const float *dout, const float *in, size_t n);

/* SwiGLU: out = silu(gate) * up, elementwise over n values. */
void swiglu_forward(float *out, const float *gate, const float *up, size_t n);
void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                     const float *up, size_t n);

/* Causal self-attention with grouped-query heads and document masking.
 * q (B, T, H*D), k and v (B, T, KV*D), out (B, T, H*D); lse (B, H, T) keeps
 * each row's log-sum-exp of scores for the backward. doc (B, T): query t
 * attends key s iff s <= t and doc[s] == doc[t], or s == t (so padding, doc =
 * -1, sees only itself and nothing sees padding). Query head h reads
 * key/value head h / (H / KV). Scores are scaled by 1/sqrt(D). Blocked, with
 * an online softmax (the FlashAttention scheme): no (T, T) matrix is stored,
 * memory is linear in T, and tiles above the diagonal or without a visible
 * pair are skipped. */
void attention_forward(float *out, float *lse, const float *q, const float *k,
                       const float *v, const int32_t *doc, int B, int T, int H, int KV,
                       int D);
/* The same with explicit row strides (in floats): q and dq rows are ldq
 * apart, k, v, dk, dv rows ldkv apart, so q, k and v can be column blocks of
 * one fused (N, 3C) projection output (gpt2's c_attn) without copies. */
void attention_forward_strided(float *out, float *lse, const float *q, const float *k,
                               const float *v, int ldq, int ldkv, const int32_t *doc,
                               int B, int T, int H, int KV, int D);
/* Backward from dout, the forward's out and lse (probabilities recomputed
 * tile by tile). scratch: n_scratch blocks of attention_scratch_floats()
 * floats; it runs on at most n_scratch threads, one block each. */
void attention_backward_strided(float *dq, float *dk, float *dv, float *scratch,
                                int n_scratch, const float *dout, const float *q,
                                const float *k, const float *v, int ldq, int ldkv,
                                const float *out, const float *lse, const int32_t *doc,
                                int B, int T, int H, int KV, int D);
size_t attention_scratch_floats(void);
void attention_backward(float *dq, float *dk, float *dv, float *scratch, int n_scratch,
                        const float *dout, const float *q, const float *k, const float *v,
                        const float *out, const float *lse, const int32_t *doc, int B,
                        int T, int H, int KV, int D);

/* Cross-entropy over rows of logits (N, V) with targets (N), -1 = ignored.
 * Returns the SUM of -log p(target) over non-ignored rows (in double), adds the
 * number of target rows to *count and of rows whose argmax equals the target
 * to *correct (either may be NULL). When grad_scale != 0 the logits are
 * replaced IN PLACE by grad_scale * (softmax - onehot) for target rows and by
 * 0 for ignored rows, which is d(grad_scale * sum loss)/d(logits). */
double crossentropy_forward_backward(float *logits, const int32_t *targets, int N, int V,
                                     float grad_scale, long *count, long *correct);

/* Per-token figures of rows of logits (N, V) at targets (N), -1 = ignored
 * (every output is 0 there): lp = log softmax(z)[target], lse =
 * logsumexp(z) (kept for tokens_logprob_backward), and, when not NULL, wpo =
 * logsumexp(2 z) - 2 logsumexp(z) (WPO's log normaliser), mean_logit = the
 * mean of z over the vocabulary, entropy = -sum p log p, correct = argmax ==
 * target. Arrays (N); the logits are not changed. */
typedef struct TokenStats {
	float *lp, *lse;                   /* (N) required */
	float *wpo, *mean_logit, *entropy; /* (N) or NULL */
	uint8_t *correct;                  /* (N) or NULL */
} TokenStats;
void tokens_logprob_forward(const TokenStats *s, const float *logits,
                            const int32_t *targets, int N, int V);

/* Backward of loss = sum_n coef[n] * lp[n]: replaces the logits IN PLACE by
 * d loss / d z = coef[n] * (onehot(target) - softmax(z)), using the lse of
 * the forward; rows with target -1 or coef 0 become 0. */
void tokens_logprob_backward(float *logits, const int32_t *targets, const float *lse,
                             const float *coef, int N, int V);

/* Reference (naive, triple-loop, no BLAS) versions kept beside the fast ones
 * as the oracle for tests. */
void matmul_forward_naive(float *out, const float *in, const float *w, const float *bias,
                          int N, int IC, int OC, TrlWLayout layout);
void attention_forward_naive(float *out, float *att, const float *q, const float *k,
                             const float *v, const int32_t *doc, int B, int T, int H,
                             int KV, int D);

#endif
