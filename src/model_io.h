/* model_io.h - Hugging Face model folders in and out: config.json,
 * model.safetensors (or shards), generation_config.json, tokenizer files.
 *
 * Reading (model_load_dir): DIR/config.json with model_type llama, qwen2,
 * qwen3, mistral or gpt2 (architectures LlamaForCausalLM, Qwen2ForCausalLM,
 * Qwen3ForCausalLM, MistralForCausalLM, GPT2LMHeadModel), then the weights
 * from DIR/model.safetensors or, when that is absent, from every shard named
 * in DIR/model.safetensors.index.json's weight_map. F32, BF16, F16 and F64
 * tensors are converted to float32. Tensors the model does not use are
 * ignored; a missing or mis-shaped tensor, an unsupported architecture,
 * rope_scaling, mlp_bias or activation is an error naming it. The Model must
 * be uninitialised (model_load_dir calls model_init); on failure it is freed.
 *
 * Writing (model_export_dir): DIR/config.json with the model_type the model
 * was loaded as (ModelConfig.model_type), DIR/model.safetensors in float32 or
 * bfloat16 (round to nearest even), DIR/generation_config.json, and the
 * tokenizer files (tokenizer.json, tokenizer_config.json,
 * special_tokens_map.json) copied from a source folder when they exist there.
 * Each file is written to a temporary name, then renamed. Tensor names and
 * shapes are exactly Hugging Face's; tied models store no lm_head.weight.
 */
#ifndef TRL_MODEL_IO_H
#define TRL_MODEL_IO_H

#include "model.h"
#include "safetensors.h"
#include "trl.h"

typedef struct ModelExportOpts {
	StDtype dtype;             /* ST_F32 or ST_BF16 */
	const char *tokenizer_dir; /* copy tokenizer files from here; NULL: none */
	/* Ids for generation_config.json; < 0 is unknown (null). With both
	 * unknown, tokenizer_dir's generation_config.json is copied if present. */
	int bos_token_id, eos_token_id;
} ModelExportOpts;

#define MODEL_EXPORT_DEFAULTS                                                            \
	{                                                                                \
		ST_F32, NULL, -1, -1                                                     \
	}

/* Writes the folder described above; opts NULL means MODEL_EXPORT_DEFAULTS. */
int model_export_dir(const Model *m, const char *dir, const ModelExportOpts *opts,
                     TrlErr *err);

/* model_export_dir with the defaults: float32, no tokenizer, null ids. */
int model_save_dir(const Model *m, const char *dir, TrlErr *err);

int model_load_dir(Model *m, const char *dir, TrlErr *err);

/* model_load_dir with the head chosen by the caller: num_labels >= 0
 * overrides config.json's (0 a causal LM, > 0 a sequence classifier, -1 as
 * the folder says). A classifier read from a causal LM's folder has no
 * score.weight there: it is drawn from seed, N(0, initializer_range), and
 * *head_initialized (when not NULL) is set to 1; the folder's lm_head is
 * ignored. */
int model_load_dir_head(Model *m, const char *dir, int num_labels, uint64_t seed,
                        int *head_initialized, TrlErr *err);
/* The same with model_init_flags flags (MODEL_NO_GRADS for a model that only
 * runs forwards, or a full copy handed to ZeRO); MODEL_NO_PARAMS is not
 * allowed (the weights are read into the slab). */
int model_load_dir_flags(Model *m, const char *dir, int num_labels, uint64_t seed,
                         unsigned flags, int *head_initialized, TrlErr *err);

/* Reads a Hugging Face config.json into mc (architecture from model_type).
 * mc is not yet checked: model_init (or model_config_check) does that. */
int model_config_load_json(ModelConfig *mc, const char *path, TrlErr *err);

/* The same from config.json text[0..len); origin names it in messages. */
int model_config_parse_json(ModelConfig *mc, const char *text, size_t len,
                            const char *origin, TrlErr *err);

/* Writes len bytes to path through a temporary name and a rename, so a reader
 * never sees half a file. */
int model_io_write_file(const char *path, const char *data, size_t len, TrlErr *err);

/* Copies the tokenizer files (tokenizer.json, tokenizer_config.json,
 * special_tokens_map.json) that exist in folder from into dir. */
int model_io_copy_tokenizer(const char *from, const char *dir, TrlErr *err);

#endif
