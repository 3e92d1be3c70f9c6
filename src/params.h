/* params.h - the parameter table {name, shape, offset}: the one description of
 * the parameter slab, its gradient mirror, ZeRO shard ranges and the names in
 * checkpoints and model.safetensors (Hugging Face names, e.g.
 * model.layers.3.mlp.up_proj.weight, transformer.h.0.attn.c_attn.weight).
 *
 * Tensors are laid out in table order, each starting on a 16-float boundary;
 * all tensors of one transformer layer are contiguous, so a layer is one range
 * [layer_begin, layer_end) of the slab. Offsets do not depend on the number of
 * ranks.
 */
#ifndef TRL_PARAMS_H
#define TRL_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#include "model_config.h"
#include "trl.h"

#define TRL_PARAM_NAME_MAX 96

typedef enum {
	TRL_PARAM_MATRIX = 0, /* weight matrices: weight decay applies */
	TRL_PARAM_EMBEDDING,  /* token / position embeddings */
	TRL_PARAM_NORM,       /* norm scales and shifts: never decayed */
	TRL_PARAM_BIAS,       /* biases: never decayed */
	TRL_PARAM_LORA_A,     /* LoRA down-projection (r, in): decayed, Kaiming-uniform */
	TRL_PARAM_LORA_B      /* LoRA up-projection (out, r): decayed, zero at start */
} TrlParamKind;

typedef struct ParamInfo {
	char name[TRL_PARAM_NAME_MAX];
	int ndim;
	size_t shape[2];
	size_t offset; /* in floats from the start of the slab */
	size_t numel;
	TrlParamKind kind;
	int layer;       /* transformer layer index, -1 outside the layers */
	int conv_kernel; /* a depthwise conv kernel (C, K), (C, 1, K) in files */
} ParamInfo;

typedef struct ParamTable {
	ParamInfo *p;
	int n;
	size_t total; /* floats in the slab, including alignment padding */
	size_t *layer_begin, *layer_end; /* (L) slab ranges of each layer */
	int num_layers;
} ParamTable;

/* Builds the table for an architecture. params_free releases it (safe on a
 * zeroed table). */
int params_build(ParamTable *t, const ModelConfig *mc, TrlErr *err);
void params_free(ParamTable *t);

/* Appends tensor `name` (shape (d0), or (d0, d1) when d1 > 0) at the end of
 * a table being built elsewhere (lora.c's adapters): t->total grows; *cap is
 * the caller's count of allocated entries (0 for a zeroed table). */
int params_append(ParamTable *t, int *cap, TrlParamKind kind, int layer, size_t d0,
                  size_t d1, const char *name);

/* The units a sharded model gathers and reduces one at a time, in slab order:
 * the embeddings, each transformer layer, then the final norm (and an untied
 * lm_head). Writes the L + 2 ranges [begin[u], end[u]) when begin and end are
 * not NULL and returns L + 2. */
int params_units(const ParamTable *t, size_t *begin, size_t *end);

/* The shape of p in Hugging Face files (3-D for a conv kernel); returns ndim. */
int params_file_shape(const ParamInfo *p, int64_t shape[3]);

/* The entry with this name, or NULL. */
const ParamInfo *params_find(const ParamTable *t, const char *name);

#endif
