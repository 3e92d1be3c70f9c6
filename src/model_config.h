/* model_config.h - the shape of a decoder-only transformer, named as in Hugging
 * Face config.json (hidden_size, num_hidden_layers, ...), for every architecture. */
#ifndef TRL_MODEL_CONFIG_H
#define TRL_MODEL_CONFIG_H

#include <stddef.h>

typedef enum {
	TRL_ARCH_LLAMA =
	    0,            /* RMSNorm, RoPE, SwiGLU, GQA; Qwen2 = llama + attention_bias */
	TRL_ARCH_GPT2 = 1 /* LayerNorm, learned positions, GELU-tanh, tied embeddings */
} TrlArch;

typedef struct ModelConfig {
	TrlArch arch;
	int vocab_size;
	int hidden_size;             /* C */
	int num_hidden_layers;       /* L */
	int num_attention_heads;     /* H; head_dim D = C / H */
	int num_key_value_heads;     /* KV; H % KV == 0 (llama only; gpt2 uses H) */
	int intermediate_size;       /* I; gpt2 uses 4C when 0 */
	int max_position_embeddings; /* gpt2: rows of wpe; llama: longest sequence */
	int tie_word_embeddings;     /* lm_head shares model.embed_tokens.weight */
	int attention_bias;          /* llama family: q/k/v projections have biases */
	int qk_norm; /* qwen3: RMSNorm over head_dim of q and k before RoPE (q_norm, k_norm) */
	float rope_theta;
	float norm_eps; /* rms_norm_eps (llama) or layer_norm_epsilon (gpt2) */
	float initializer_range;
} ModelConfig;

/* Fills the derived fields (num_key_value_heads, intermediate_size for gpt2)
 * and checks divisibility and ranges. Returns 0 or TRL_EINVAL with a message. */
struct TrlErr;
int model_config_check(ModelConfig *mc, struct TrlErr *err);

const char *model_arch_name(TrlArch a);

/* Parameters in the model, and those not in embeddings (for FLOP counts). */
size_t model_config_num_params(const ModelConfig *mc);
size_t model_config_num_nonembedding_params(const ModelConfig *mc);

/* Appends the config as a Hugging Face config.json object (model_type llama
 * with LlamaForCausalLM keys, or gpt2 with GPT2LMHeadModel keys). */
struct JsonBuf;
void model_config_hf_json(const ModelConfig *mc, struct JsonBuf *out);

#endif
