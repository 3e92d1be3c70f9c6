/* model_config.h - the shape of a decoder-only transformer, named as in Hugging
 * Face config.json (hidden_size, num_hidden_layers, ...), for every architecture. */
#ifndef TRL_MODEL_CONFIG_H
#define TRL_MODEL_CONFIG_H

#include <stddef.h>

typedef enum {
	TRL_ARCH_LLAMA =
	    0, /* RMSNorm, RoPE, SwiGLU, GQA; Qwen2 = llama + attention_bias */
	TRL_ARCH_GPT2 = 1, /* LayerNorm, learned positions, GELU-tanh, tied embeddings */
	TRL_ARCH_LFM2 = 2  /* Liquid AI's LFM2: gated short-convolution layers and GQA
	                    * layers with q/k layernorm, SwiGLU, RMSNorm; read from
	                    * config.json (planning with validate; no forward yet) */
} TrlArch;

/* Layers an LFM2 config may name in layer_types, and the longest short
 * convolution (conv_L_cache) a config may ask for (long kernels run on the
 * FFT path of shortconv_forward, shortconv.h). */
#define TRL_MAX_LAYERS 512
#define TRL_MAX_CONV_KERNEL 4096

/* The Hugging Face model_type (and architectures entry) a model reads from and
 * writes to config.json. TRL_HF_AUTO (zero) means the family's own: gpt2 for
 * TRL_ARCH_GPT2, qwen3 for a llama-family model with qk_norm, llama otherwise.
 * All but gpt2 are TRL_ARCH_LLAMA; they differ only in which tensors exist:
 * qwen2 always has q/k/v biases (no o_proj bias), qwen3 has q_norm/k_norm,
 * llama and qwen3 with attention_bias have q/k/v/o biases, mistral none. So
 * AUTO resolves to qwen2 when attention_bias is set, keeping the meaning
 * "Qwen2 = llama + attention_bias" of a model configured by hand. */
typedef enum {
	TRL_HF_AUTO = 0,
	TRL_HF_LLAMA,   /* LlamaForCausalLM */
	TRL_HF_QWEN2,   /* Qwen2ForCausalLM */
	TRL_HF_QWEN3,   /* Qwen3ForCausalLM */
	TRL_HF_MISTRAL, /* MistralForCausalLM */
	TRL_HF_GPT2,    /* GPT2LMHeadModel */
	TRL_HF_LFM2     /* Lfm2ForCausalLM */
} TrlHfType;

typedef struct ModelConfig {
	TrlArch arch;
	int vocab_size;
	int hidden_size;             /* C */
	int num_hidden_layers;       /* L */
	int num_attention_heads;     /* H */
	int num_key_value_heads;     /* KV; H % KV == 0 (llama only; gpt2 uses H) */
	int intermediate_size;       /* I; gpt2 uses 4C when 0 */
	int max_position_embeddings; /* gpt2: rows of wpe; llama: longest sequence */
	int tie_word_embeddings;     /* lm_head shares model.embed_tokens.weight */
	int attention_bias;          /* llama family: q/k/v projections have biases; llama
	                              * and qwen3 (as in Hugging Face) also o_proj, qwen2 not */
	int qk_norm;  /* qwen3: RMSNorm over head_dim of q and k before RoPE (q_norm,
	                 k_norm) */
	int head_dim; /* D; 0 = C / H. llama family may differ from C / H: q is
	               * (N, H*D), o_proj maps H*D back to C. */
	int sliding_window; /* mistral/qwen: attention window; 0 = none. A batch
	                     * longer than it is refused (no windowed kernel). */
	TrlHfType model_type;
	int num_labels;   /* 0: a causal LM (lm_head, vocab_size outputs); > 0: a
	                   * sequence classifier (<Arch>ForSequenceClassification):
	                   * score.weight (num_labels, C), never tied, read at the
	                   * last real token of each row (reward models) */
	int pad_token_id; /* classifiers: the id Hugging Face skips to find a row's
	                   * last token (written to config.json when >= 0) */
	                  /* lfm2 */
	int conv_L_cache; /* the short convolution's kernel length */
	int conv_bias;    /* biases on conv.in_proj, conv.conv and conv.out_proj */
	unsigned char attn_layer[TRL_MAX_LAYERS]; /* 1: full_attention, 0: conv */
	float rope_theta;
	float norm_eps; /* rms_norm_eps (llama), layer_norm_epsilon (gpt2), norm_eps
	                   (lfm2) */
	float initializer_range;
} ModelConfig;

/* Fills the derived fields (num_key_value_heads, head_dim, model_type,
 * intermediate_size for gpt2) and checks divisibility, ranges and that the
 * model_type agrees with the flags. Returns 0 or TRL_EINVAL with a message. */
struct TrlErr;
int model_config_check(ModelConfig *mc, struct TrlErr *err);

const char *model_arch_name(TrlArch a);

/* "llama", "qwen2", ... ("auto" for TRL_HF_AUTO), and the architectures entry
 * ("LlamaForCausalLM", ...). model_hf_type_parse returns -1 for an unknown
 * name. */
const char *model_hf_type_name(TrlHfType t);
const char *model_hf_arch_name(TrlHfType t);
/* "LlamaForSequenceClassification", ... */
const char *model_hf_cls_name(TrlHfType t);
/* Outputs per position: num_labels for a classifier, else vocab_size. */
int model_config_out_dim(const ModelConfig *mc);
int model_hf_type_parse(const char *name, TrlHfType *out);

/* Whether a llama-family o_proj has a bias (llama/qwen3 with attention_bias). */
int model_config_o_bias(const ModelConfig *mc);

/* Layer l is an lfm2 short-convolution layer (not attention). */
int model_config_conv_layer(const ModelConfig *mc, int l);

/* Parameters in the model, and those not in embeddings (for FLOP counts). */
size_t model_config_num_params(const ModelConfig *mc);
size_t model_config_num_nonembedding_params(const ModelConfig *mc);

/* Appends the config as a Hugging Face config.json object with the keys of
 * its model_type (GPT2LMHeadModel names for gpt2). torch_dtype is written as
 * given ("float32", "bfloat16"); NULL means "float32". mc must have passed
 * model_config_check. */
struct JsonBuf;
void model_config_hf_json(const ModelConfig *mc, const char *torch_dtype,
                          struct JsonBuf *out);

#endif
