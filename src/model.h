/* model.h - a decoder-only transformer (llama family, gpt2, lfm2) over one parameter
 * slab: forward to logits, hand-written backward into the gradient slab.
 *
 * Usage:
 *     Model m; model_init(&m, &mc, &err);       // slabs from the parameter table
 *     model_init_weights(&m, seed);             // or load tensors into m.params
 *     model_alloc_activations(&m, B, T, &err);  // once per run: the largest batch
 *     model_forward(&m, &batch);                // logits in m.logits (B, T, V)
 *     crossentropy_forward_backward(m.logits, batch.targets, ...); // loss, dlogits
 *     model_backward(&m, &batch);               // grads += d loss / d params
 * A batch may be smaller than the allocation (any B' <= B, T' <= T); buffers are
 * used as (B', T', ...) contiguous arrays. model_free releases everything.
 *
 * Sharded use (ZeRO, mpi/zero.c): the model is cut into units, each one
 * contiguous slab range: unit 0 the embeddings (wte, gpt2's wpe), units 1..L
 * the transformer layers, unit L+1 the final norm and an untied lm_head. A
 * model made with MODEL_NO_PARAMS / MODEL_NO_GRADS has no full slab; its
 * owner points each unit at a buffer holding that unit (model_bind_unit) and
 * sets hooks, which forward and backward call around each unit's use.
 */
#ifndef TRL_MODEL_H
#define TRL_MODEL_H

#include <stdint.h>

#include "model_config.h"
#include "params.h"
#include "trl.h"

/* One micro-batch of token rows. All arrays (B, T). */
typedef struct Batch {
	int B, T;
	int32_t *ids;     /* input token ids (padding: the pad id, any valid id) */
	int32_t *pos;     /* position ids; reset to 0 at each packed document */
	int32_t *doc;     /* document id within the row, -1 for padding */
	int32_t *targets; /* next-token target, -1 where no loss is taken */
} Batch;

int batch_alloc(Batch *b, int B, int T, TrlErr *err);
void batch_free(Batch *b);

/* Linear modules of a layer LoRA can adapt (lora.h's LoraModule). */
#define TRL_LORA_NMOD 12

/* Pointers into the slab for one transformer layer (NULL where the
 * architecture has no such tensor). */
typedef struct LayerPtrs {
	float *ln1_w, *ln1_b; /* (C) */
	float *q_w, *k_w, *v_w,
	    *o_w;               /* llama: (H*D, C), (KV*D, C), (KV*D, C), (C, H*D) */
	float *q_b, *k_b, *v_b; /* llama attention_bias */
	float *q_norm, *k_norm; /* qwen3: (D) RMSNorm of each q, k head before RoPE */
	float *qkv_w, *qkv_b;   /* gpt2 c_attn: (C, 3C), (3C) */
	float *o_b;             /* gpt2 c_proj bias (C) */
	float *ln2_w, *ln2_b;   /* (C) */
	float *gate_w, *up_w, *down_w; /* llama: (I, C), (I, C), (C, I) */
	float *fc_w, *fc_b;            /* gpt2: (C, I), (I) */
	float *proj_w, *proj_b;        /* gpt2: (I, C), (C) */
	float *in_w, *in_b;            /* lfm2 conv.in_proj: (3C, C), (3C) */
	float *conv_w, *conv_b;        /* lfm2 conv.conv: (C, K) depthwise kernel, (C) */
	float *cout_w, *cout_b;        /* lfm2 conv.out_proj: (C, C), (C) */
	/* an adapter model (lora.h): lora_A (r, in), lora_B (out, r) per module */
	float *lora_a[TRL_LORA_NMOD], *lora_b[TRL_LORA_NMOD];
} LayerPtrs;

typedef struct ModelPtrs {
	float *wte;           /* (V, C) */
	float *wpe;           /* gpt2 (P, C) */
	float *lnf_w, *lnf_b; /* (C) */
	float *lm_head;       /* (V, C); equals wte when tied */
	LayerPtrs *layer;     /* (L) */
} ModelPtrs;

/* Activations kept for backward, per layer. Sizes for the allocated B, T. */
typedef struct LayerActs {
	float *x_in; /* (N, C) residual stream entering the layer */
	float *ln1, *ln1_mean, *ln1_rstd;
	float *q, *k, *v;     /* (N, H*D), (N, KV*D), (N, KV*D), q and k after RoPE; gpt2:
	                       * column blocks of one (N, 3C) c_attn output, rows 3C apart */
	float *q_raw, *k_raw; /* qwen3: (N, H*D), (N, KV*D) projections before q/k norm */
	float *q_rstd, *k_rstd; /* qwen3: (N*H), (N*KV) per-head RMSNorm statistics */
	float *att;             /* (B, H, T) each row's log-sum-exp of scores */
	float *atty;            /* (N, H*D) attention output before o_proj; lfm2 conv
	                         * layer: (N, C) convolution output before out_proj */
	float *proj, *bx; /* lfm2 conv layer: (N, 3C) in_proj output, (N, C) b * x */
	float *lora_v[TRL_LORA_NMOD]; /* with adapters: (N, r) scale * A drop(x) */
	float *x_mid;                 /* (N, C) residual after attention */
	float *ln2, *ln2_mean, *ln2_rstd;
	float *h1, *h2; /* llama: gate, up (N, I); gpt2: fc pre-activation (N, I) */
	float *hact;    /* (N, I) activation output */
} LayerActs;

/* Calls made by model_forward / model_backward for a sharded model. Order in
 * forward: weights(0), done(0), then per layer weights(l), done(l), then
 * weights(L+1) and, with tied embeddings, weights(0) again for lm_head.
 * Backward: weights(L+1) [and weights(0) when tied] with grads of the same
 * units, then each layer from the last: weights(l), grads(l), grads_done(l);
 * the embedding backward needs no weights: grads(0), grads_done(0) last. */
typedef struct ModelHooks {
	void *ctx;
	/* Before the weights of unit u are read in pass 0 (forward) or 1
	 * (backward); done_weights when the pass reads them no more. */
	void (*weights)(void *ctx, int u, int pass);
	void (*done_weights)(void *ctx, int u, int pass);
	/* Before the first gradient of unit u is added in a backward, and once
	 * that unit's gradient for the micro-batch is complete. */
	void (*grads)(void *ctx, int u);
	void (*grads_done)(void *ctx, int u);
	/* Between kernels: a chance to progress outstanding communication. */
	void (*poll)(void *ctx);
} ModelHooks;

/* MODEL_FROZEN: no gradient slab and no weight gradients at all: backward
 * computes only what flows to the inputs (a base model under LoRA). */
enum { MODEL_NO_PARAMS = 1, MODEL_NO_GRADS = 2, MODEL_FROZEN = 4 };

struct Lora;

typedef struct Model {
	ModelConfig cfg;
	ParamTable table;
	float *params; /* (table.total) */
	float *grads;  /* (table.total) */
	ModelPtrs w, g;
	/* activations */
	int maxB, maxT;
	LayerActs *acts;
	float *x_final; /* (N, C) residual after the last layer */
	float *lnf, *lnf_mean, *lnf_rstd;
	float *logits;             /* (N, V); crossentropy turns it into dlogits */
	float *dres, *dtmp, *dbig; /* backward scratch */
	float *dq, *dk, *dv, *att_scratch;
	float *act_slab; /* one allocation behind all of the above */
	size_t act_floats;
	int threads; /* OpenMP threads the backward scratch was sized for */
	/* units */
	int n_units;
	size_t *unit_begin, *unit_end; /* (n_units) slab ranges */
	float **unit_w, **unit_g;      /* (n_units) buffer each unit is bound to */
	void *reserve;                 /* address space standing in for no slab */
	size_t reserve_bytes;
	const ModelHooks *hooks; /* NULL: a plain, unsharded model */
	int frozen;              /* MODEL_FROZEN */
	struct Lora *lora; /* adapters added to the linears (lora_attach), or NULL */
	float *lora_dv, *lora_xd; /* backward scratch (N, r), (N, widest input) */
} Model;

int model_init(Model *m, const ModelConfig *mc, TrlErr *err);

/* model_init without the parameter and/or gradient slab (flags MODEL_NO_*):
 * m->params / m->grads are NULL, and every unit must be bound to real memory
 * before it is used (an unbound unit points at inaccessible addresses). */
int model_init_flags(Model *m, const ModelConfig *mc, unsigned flags, TrlErr *err);

/* A model of adapters (lora.h): the table t (ownership taken) holds lora_A
 * and lora_B tensors named base_model.model.<module>.lora_{A,B}.weight and
 * copies of heads (base_model.model.score.weight), laid out in mc's units;
 * the LayerPtrs' lora_a / lora_b (and lm_head for a copied head) point at
 * them. flags as model_init_flags. */
int model_init_adapters(Model *m, const ModelConfig *mc, ParamTable *t, unsigned flags,
                        TrlErr *err);

/* Points unit u's weight (w) and/or gradient (g) tensors at a buffer holding
 * the unit's slab range [unit_begin[u], unit_end[u]); NULL leaves one as is. */
void model_bind_unit(Model *m, int u, float *w, float *g);

/* Writes the seeded initial values (model_init_weights) of slab range
 * [begin, end) into dst, where dst[0] is slab float begin. */
void model_init_weights_range(const Model *m, uint64_t seed, float *dst, size_t begin,
                              size_t end);
void model_free(Model *m);

/* GPT-2 style init from a seed: matrices and embeddings N(0, initializer_range),
 * output projections of each block N(0, initializer_range / sqrt(2 L)), norm
 * scales 1, biases and norm shifts 0. Deterministic for a seed. */
void model_init_weights(Model *m, uint64_t seed);

int model_alloc_activations(Model *m, int B, int T, TrlErr *err);

/* Forward pass of b; fills m->logits (b->B*b->T, V) and the saved activations. */
void model_forward(Model *m, const Batch *b);

/* Backward from the dlogits left in m->logits by crossentropy_forward_backward;
 * ADDS the parameter gradients into m->grads. */
void model_backward(Model *m, const Batch *b);

/* Lends owner's activation memory to m (which then owns none): for a model
 * whose forward's results are read before owner's next forward (a reference
 * model run just before the policy). Falls back to model_alloc_activations
 * when owner's slab is smaller than m needs. owner must outlive m's use. */
int model_share_activations(Model *m, const Model *owner, int B, int T, TrlErr *err);

/* Bytes of activations for a (B, T) allocation, for memory estimates. */
size_t model_activation_bytes(const ModelConfig *mc, int B, int T);

/* FLOPs per token of one training step (forward + backward), as in the
 * PaLM/llm.c estimate: 6 N_nonembedding + 6 L T C + 6 C V. */
double model_flops_per_token(const ModelConfig *mc, int T);

#endif
