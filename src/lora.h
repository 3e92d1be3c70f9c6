/* lora.h - LoRA adapters on a frozen base model, as PEFT's LoraModel: which
 * linear modules are adapted, the adapters' own parameter slab, their
 * forward and backward, merging, and PEFT's adapter files.
 *
 * Usage:
 *     LoraSpec s; lora_spec_from(&s, r, alpha, dropout, rslora, "q_proj,v_proj", "");
 *     Lora lo; lora_init(&lo, &base, &s, flags, &err);  // base: model_init_flags
 *                                                       // with MODEL_FROZEN
 *     lora_attach(&base, &lo);            // model_forward / backward now add
 *                                         // scale * B A x to each adapted linear
 *     model_alloc_activations(&base, B, T, &err);
 *     ... train lo.ad (a Model holding only the adapters; ZeRO shards it) ...
 *     lora_save_dir(&lo, &base, base_path, dir, &err);  // adapter_config.json,
 *                                                       // adapter_model.safetensors
 *     lora_free(&lo);
 *
 * The adapters form a Model of their own (lo.ad): its parameter table holds
 * lora_A (r, in) and lora_B (out, r) of every adapted module under PEFT's
 * saved names (base_model.model.<module>.lora_A.weight), plus full copies of
 * lora_modules_to_save (base_model.model.score.weight), and its units parallel
 * the base's: unit 0 (nothing; the embeddings are never adapted), one unit per
 * layer with that layer's adapters, and the last unit with the copied heads.
 * A unit may be empty. So ZeRO, the optimizer and checkpoints treat it as any
 * model, and the base's hooks and the adapters' hooks are called together.
 *
 * Each adapted linear y = W x (+ b) becomes y = W x (+ b) + scale B A drop(x)
 * with scale = alpha / r (alpha / sqrt(r) with use_rslora), A initialised
 * Kaiming-uniform U(-1/sqrt(in), 1/sqrt(in)) and B zero (PEFT's default), so
 * a new adapter leaves the model unchanged. Dropout (training forwards only)
 * draws its mask from (seed, forward counter, layer, module, element), so the
 * backward regenerates it instead of storing it.
 */
#ifndef TRL_LORA_H
#define TRL_LORA_H

#include <stdint.h>

#include "model.h"
#include "trl.h"

#define TRL_LORA_LIST_MAX 512
#define TRL_LORA_SPEC_MAX 1200

typedef struct LoraSpec {
	int r;
	float alpha, dropout;
	int rslora;
	char targets[TRL_LORA_LIST_MAX]; /* comma-separated names, or all-linear */
	char to_save[TRL_LORA_LIST_MAX]; /* comma-separated modules_to_save */
} LoraSpec;

/* The modules of a layer LoRA can adapt (LayerPtrs' linear weights). */
typedef enum {
	LORA_Q = 0,
	LORA_K,
	LORA_V,
	LORA_O,    /* o_proj, lfm2 self_attn.out_proj, gpt2 attn.c_proj */
	LORA_GATE, /* mlp.gate_proj, lfm2 feed_forward.w1 */
	LORA_UP,   /* mlp.up_proj, lfm2 w3 */
	LORA_DOWN, /* mlp.down_proj, lfm2 w2 */
	LORA_QKV,  /* gpt2 attn.c_attn */
	LORA_FC,   /* gpt2 mlp.c_fc */
	LORA_PROJ, /* gpt2 mlp.c_proj */
	LORA_IN,   /* lfm2 conv.in_proj */
	LORA_COUT, /* lfm2 conv.out_proj */
	LORA_NMOD
} LoraModule;

typedef struct Lora {
	Model ad; /* the adapters as a model (see above) */
	LoraSpec spec;
	float scale; /* alpha / r, or alpha / sqrt(r) */
	int off;     /* 1: every forward runs the base alone (the reference) */
	int train;   /* 1: dropout is applied (training forwards) */
	uint64_t seed;
	uint64_t draw;      /* forward counter: the dropout masks of the last forward */
	float p_fwd;        /* the dropout rate the last forward applied */
	int n_adapted;      /* modules adapted */
	size_t n_trainable; /* floats in the adapters and the copied heads */
	int head_copy;      /* the last unit holds a copy of lm_head / score */
} Lora;

/* Defaults of TRL's ModelConfig: r 16, alpha 32, dropout 0.05. */
void lora_spec_defaults(LoraSpec *s);

/* One line naming every field ("r=16 alpha=32 dropout=0.05 rslora=0
 * targets=q_proj,v_proj save="), as checkpoints record it, and back. */
void lora_spec_format(const LoraSpec *s, char *buf, size_t cap);
int lora_spec_parse(LoraSpec *s, const char *text, TrlErr *err);

/* The module path of mod in layer l ("model.layers.3.self_attn.q_proj"), or
 * 0 when layer l has no such module. Writes (in, out) features. */
int lora_module_path(const ModelConfig *mc, int l, LoraModule mod, char *buf, size_t cap,
                     int *in, int *out);

/* PEFT's defaults when no targets are given (its per-model_type table:
 * q_proj,v_proj for the llama family, c_attn for gpt2), or NULL (lfm2 has
 * none: targets must be named). */
const char *lora_default_targets(const ModelConfig *mc);

/* Builds the adapters for base (whose cfg and table they follow) with the
 * adapter model's flags (model_init_flags' MODEL_NO_*). Every target must
 * match at least one module altogether (a name matching none is reported in
 * *unmatched, comma-separated, when not NULL). With the slab present,
 * initialises A, B as PEFT does from seed and copies the heads to save from
 * base->params (when base has them). */
int lora_init(Lora *lo, const Model *base, const LoraSpec *s, unsigned flags,
              uint64_t seed, char *unmatched, size_t unmatched_cap, TrlErr *err);
void lora_free(Lora *lo);

/* The adapters' starting values into dst (lo->ad.table.total floats): A and B
 * as PEFT initialises them (from lo->seed), and the heads to save copied from
 * base_params (base's whole slab; NULL leaves them seeded). */
void lora_initial_values(const Lora *lo, const Model *base, const float *base_params,
                         float *dst);

/* Connects the adapters to base's forward and backward (base->lora). */
void lora_attach(Model *base, Lora *lo);

/* Writes what PEFT's print_trainable_parameters prints, plus the adapted
 * modules grouped by name, into buf. */
void lora_describe(const Lora *lo, const Model *base, char *buf, size_t cap);

/* ---- kernels (model.c calls them; the tests check them alone) ------------- */

/* out (N, OC) += scale * B (A drop(x))^T rows, x (N, IC), A (r, IC), B (OC, r).
 * v (N, r) keeps scale * A drop(x) for the backward; xd (N, IC) is scratch
 * for the dropped input (unused when p == 0). Mask element (n, i) is drawn
 * from key: kept with probability 1 - p and then scaled by 1 / (1 - p). */
void lora_forward(float *out, float *v, float *xd, const float *x, const float *A,
                  const float *B, float scale, float p, uint64_t key, int N, int IC,
                  int OC, int r);
/* dx (N, IC) +=, dA (r, IC) +=, dB (OC, r) += from dout (N, OC); dv (N, r) and
 * xd (N, IC) are scratch. dx or the gradients may be NULL (skipped). */
void lora_backward(float *dx, float *dA, float *dB, float *dv, float *xd,
                   const float *dout, const float *x, const float *v, const float *A,
                   const float *B, float scale, float p, uint64_t key, int N, int IC,
                   int OC, int r);
/* The dropout mask's key of (layer, module) in the forward numbered draw. */
uint64_t lora_mask_key(uint64_t seed, uint64_t draw, int l, int mod);

/* ---- merging and files ----------------------------------------------------- */

/* W += scale * B A for every adapted module of base (whose params must be
 * whole), and the saved heads copied in: base then computes alone what base
 * plus adapters computed. */
void lora_merge(Model *base, const Lora *lo);
/* The same into base from the unmerged weights of src (base's shape): each
 * adapted module's W = W_src + scale * B A; base's other tensors are left as
 * they are (a copy of src made once stays valid: the base is frozen). */
void lora_merge_from(Model *base, const Model *src, const Lora *lo);

/* adapter_config.json (PEFT's keys, base_model_name_or_path = base_path) and
 * adapter_model.safetensors (float32, PEFT's names) of the adapters whose
 * whole slab is at params (lo->ad.table.total floats) into dir. */
int lora_save_dir(const Lora *lo, const float *params, const char *base_path,
                  const char *dir, TrlErr *err);

/* The base of the adapter folder dir (base_dir, or its adapter_config.json's
 * base_model_name_or_path) loaded into m with the adapters merged in: what
 * base plus adapters compute. Arguments after base_dir as
 * model_load_dir_flags. */
int lora_load_merged(Model *m, const char *dir, const char *base_dir, int num_labels,
                     uint64_t seed, unsigned flags, int *head_initialized, TrlErr *err);

/* Whether dir holds adapter_config.json. */
int lora_is_adapter_dir(const char *dir);

/* Reads dir/adapter_config.json into *s and its base_model_name_or_path into
 * base (cap bytes). */
int lora_read_config(const char *dir, LoraSpec *s, char *base, size_t cap, TrlErr *err);

/* Loads dir/adapter_model.safetensors into dst (lo->ad.table.total floats,
 * the adapters' slab layout); every tensor of the table must be there with
 * its shape. */
int lora_load_weights(const Lora *lo, const char *dir, float *dst, TrlErr *err);

#endif
