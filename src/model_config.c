/* model_config.c - checks and derived sizes of a transformer shape. */
#include "model_config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "trl.h"

const char *model_arch_name(TrlArch a)
{
	switch (a) {
	case TRL_ARCH_LLAMA:
		return "llama";
	case TRL_ARCH_GPT2:
		return "gpt2";
	case TRL_ARCH_LFM2:
		return "lfm2";
	}
	return "unknown";
}

static const struct {
	const char *type, *arch;
} hf_names[] = {
    [TRL_HF_AUTO] = {"auto", "?"},
    [TRL_HF_LLAMA] = {"llama", "LlamaForCausalLM"},
    [TRL_HF_QWEN2] = {"qwen2", "Qwen2ForCausalLM"},
    [TRL_HF_QWEN3] = {"qwen3", "Qwen3ForCausalLM"},
    [TRL_HF_MISTRAL] = {"mistral", "MistralForCausalLM"},
    [TRL_HF_GPT2] = {"gpt2", "GPT2LMHeadModel"},
    [TRL_HF_LFM2] = {"lfm2", "Lfm2ForCausalLM"},
};
#define N_HF_TYPES ((int)(sizeof hf_names / sizeof hf_names[0]))

const char *model_hf_type_name(TrlHfType t)
{
	return (int)t >= 0 && (int)t < N_HF_TYPES ? hf_names[t].type : "unknown";
}

const char *model_hf_arch_name(TrlHfType t)
{
	return (int)t >= 0 && (int)t < N_HF_TYPES ? hf_names[t].arch : "unknown";
}

const char *model_hf_cls_name(TrlHfType t)
{
	static const char *const cls[] = {
	    [TRL_HF_AUTO] = "?",
	    [TRL_HF_LLAMA] = "LlamaForSequenceClassification",
	    [TRL_HF_QWEN2] = "Qwen2ForSequenceClassification",
	    [TRL_HF_QWEN3] = "Qwen3ForSequenceClassification",
	    [TRL_HF_MISTRAL] = "MistralForSequenceClassification",
	    [TRL_HF_GPT2] = "GPT2ForSequenceClassification",
	    [TRL_HF_LFM2] = "Lfm2ForSequenceClassification",
	};
	return (int)t >= 0 && (int)t < N_HF_TYPES ? cls[t] : "unknown";
}

int model_config_out_dim(const ModelConfig *mc)
{
	return mc->num_labels > 0 ? mc->num_labels : mc->vocab_size;
}

int model_hf_type_parse(const char *name, TrlHfType *out)
{
	for (int i = 1; i < N_HF_TYPES; i++)
		if (strcmp(name, hf_names[i].type) == 0) {
			*out = (TrlHfType)i;
			return 0;
		}
	return -1;
}

/* Resolves TRL_HF_AUTO and checks that model_type, arch and the flags agree. */
static int check_hf_type(ModelConfig *mc, TrlErr *err)
{
	if (mc->model_type == TRL_HF_AUTO)
		mc->model_type = mc->arch == TRL_ARCH_LFM2   ? TRL_HF_LFM2
		                 : mc->arch == TRL_ARCH_GPT2 ? TRL_HF_GPT2
		                 : mc->qk_norm               ? TRL_HF_QWEN3
		                 : mc->attention_bias        ? TRL_HF_QWEN2
		                                             : TRL_HF_LLAMA;
	TrlHfType t = mc->model_type;
	const char *name = model_hf_type_name(t);
	if ((int)t < 0 || (int)t >= N_HF_TYPES)
		return trl_errf(err, TRL_EINVAL, "model: unknown model_type %d", (int)t);
	if ((t == TRL_HF_GPT2) != (mc->arch == TRL_ARCH_GPT2) ||
	    (t == TRL_HF_LFM2) != (mc->arch == TRL_ARCH_LFM2))
		return trl_errf(err, TRL_EINVAL,
		                "model: model_type %s does not belong to architecture %s",
		                name, model_arch_name(mc->arch));
	if (t == TRL_HF_QWEN3 || t == TRL_HF_LFM2) /* lfm2: q/k_layernorm */
		mc->qk_norm = 1;
	else if (mc->qk_norm)
		return trl_errf(
		    err, TRL_EINVAL,
		    "model: qk_norm (q_norm/k_norm) exists only in model_type "
		    "qwen3 and lfm2, not %s",
		    name);
	if (t == TRL_HF_QWEN2)
		mc->attention_bias = 1;
	if (t == TRL_HF_MISTRAL && mc->attention_bias)
		return trl_errf(err, TRL_EINVAL,
		                "model: model_type mistral has no attention biases; "
		                "attention_bias must be false");
	if (t != TRL_HF_MISTRAL && t != TRL_HF_QWEN2 && t != TRL_HF_QWEN3)
		mc->sliding_window = 0;
	return TRL_OK;
}

int model_config_check(ModelConfig *mc, TrlErr *err)
{
	if (mc->arch != TRL_ARCH_LLAMA && mc->arch != TRL_ARCH_GPT2 &&
	    mc->arch != TRL_ARCH_LFM2)
		return trl_errf(err, TRL_EINVAL, "model.architecture: unknown value %d",
		                (int)mc->arch);
	if (mc->arch == TRL_ARCH_LFM2 &&
	    (mc->num_hidden_layers > TRL_MAX_LAYERS || mc->conv_L_cache < 1 ||
	     mc->conv_L_cache > TRL_MAX_CONV_KERNEL))
		return trl_errf(
		    err, TRL_EINVAL,
		    "model: lfm2 with %d layers (at most %d) and conv_L_cache %d "
		    "(1 to %d)",
		    mc->num_hidden_layers, TRL_MAX_LAYERS, mc->conv_L_cache,
		    TRL_MAX_CONV_KERNEL);
	if (mc->vocab_size < 2 || mc->hidden_size < 1 || mc->num_hidden_layers < 1 ||
	    mc->num_attention_heads < 1)
		return trl_errf(
		    err, TRL_EINVAL,
		    "model: vocab_size (%d), hidden_size (%d), num_hidden_layers "
		    "(%d) and num_attention_heads (%d) must be positive",
		    mc->vocab_size, mc->hidden_size, mc->num_hidden_layers,
		    mc->num_attention_heads);
	int rc = check_hf_type(mc, err);
	if (rc)
		return rc;
	if (mc->head_dim < 0)
		return trl_errf(err, TRL_EINVAL, "model.head_dim (%d) must be positive",
		                mc->head_dim);
	if (mc->arch == TRL_ARCH_GPT2 && mc->head_dim != 0 &&
	    mc->head_dim * mc->num_attention_heads != mc->hidden_size)
		return trl_errf(err, TRL_EINVAL,
		                "model: gpt2 needs head_dim (%d) = hidden_size (%d) / "
		                "num_attention_heads (%d)",
		                mc->head_dim, mc->hidden_size, mc->num_attention_heads);
	if (mc->head_dim == 0) {
		if (mc->hidden_size % mc->num_attention_heads != 0)
			return trl_errf(err, TRL_EINVAL,
			                "model.hidden_size (%d) must be a multiple of "
			                "model.num_attention_heads (%d)",
			                mc->hidden_size, mc->num_attention_heads);
		mc->head_dim = mc->hidden_size / mc->num_attention_heads;
	}
	if (mc->num_key_value_heads <= 0 || mc->arch == TRL_ARCH_GPT2)
		mc->num_key_value_heads = mc->num_attention_heads;
	if (mc->num_attention_heads % mc->num_key_value_heads != 0)
		return trl_errf(err, TRL_EINVAL,
		                "model.num_attention_heads (%d) must be a multiple of "
		                "model.num_key_value_heads (%d)",
		                mc->num_attention_heads, mc->num_key_value_heads);
	int D = mc->head_dim;
	if (D > 1024)
		return trl_errf(err, TRL_EUNSUPPORTED,
		                "model: head_dim = %d; at most 1024 is supported", D);
	if (mc->arch != TRL_ARCH_GPT2 && D % 2 != 0)
		return trl_errf(err, TRL_EINVAL,
		                "model: head_dim = %d must be even for rotary embeddings",
		                D);
	if (mc->intermediate_size <= 0)
		mc->intermediate_size = mc->arch == TRL_ARCH_GPT2
		                            ? 4 * mc->hidden_size
		                            : 8 * mc->hidden_size / 3;
	if (mc->max_position_embeddings < 1)
		return trl_errf(err, TRL_EINVAL,
		                "model.max_position_embeddings (%d) must be positive",
		                mc->max_position_embeddings);
	if (mc->sliding_window < 0)
		mc->sliding_window = 0;
	if (mc->arch == TRL_ARCH_GPT2) {
		mc->tie_word_embeddings = 1;
		mc->attention_bias = 1;
	}
	if (!(mc->norm_eps > 0))
		return trl_errf(err, TRL_EINVAL, "model.norm_eps (%g) must be positive",
		                (double)mc->norm_eps);
	if (!(mc->rope_theta > 0))
		return trl_errf(err, TRL_EINVAL, "model.rope_theta (%g) must be positive",
		                (double)mc->rope_theta);
	return TRL_OK;
}

int model_config_conv_layer(const ModelConfig *mc, int l)
{
	return mc->arch == TRL_ARCH_LFM2 && !mc->attn_layer[l];
}

/* Whether the llama-family o_proj has a bias: Hugging Face's llama and qwen3
 * give o_proj bias=attention_bias, qwen2 never does. */
int model_config_o_bias(const ModelConfig *mc)
{
	return mc->arch == TRL_ARCH_LLAMA && mc->attention_bias &&
	       mc->model_type != TRL_HF_QWEN2 && mc->model_type != TRL_HF_AUTO;
}

size_t model_config_num_nonembedding_params(const ModelConfig *mc)
{
	size_t C = (size_t)mc->hidden_size, I = (size_t)mc->intermediate_size;
	size_t D =
	    mc->head_dim > 0 ? (size_t)mc->head_dim : C / (size_t)mc->num_attention_heads;
	size_t QD = D * (size_t)mc->num_attention_heads;
	size_t KVD = D * (size_t)mc->num_key_value_heads;
	size_t per_layer;
	if (mc->arch == TRL_ARCH_LFM2) {
		/* norms and SwiGLU in every layer; attention (q/k layernorms over
		 * head_dim) or the short convolution (in_proj to 3C, a depthwise
		 * kernel of conv_L_cache, out_proj) */
		size_t n = 0, K = (size_t)mc->conv_L_cache;
		for (int l = 0; l < mc->num_hidden_layers; l++)
			n += 2 * C + 3 * C * I +
			     (mc->attn_layer[l] ? QD * C + 2 * KVD * C + C * QD + 2 * D
			                        : 3 * C * C + C * K + C * C +
			                              (mc->conv_bias ? 5 * C : 0));
		return n + C;
	}
	if (mc->arch == TRL_ARCH_GPT2)
		per_layer = 2 * C + (C * 3 * C + 3 * C) + (C * C + C) + 2 * C +
		            (C * I + I) + (I * C + C);
	else
		per_layer = C + QD * C + 2 * KVD * C + C * QD + C + 3 * C * I +
		            (mc->attention_bias ? QD + 2 * KVD : 0) +
		            (model_config_o_bias(mc) ? C : 0) + (mc->qk_norm ? 2 * D : 0);
	size_t final_norm = mc->arch == TRL_ARCH_GPT2 ? 2 * C : C;
	return per_layer * (size_t)mc->num_hidden_layers + final_norm;
}

size_t model_config_num_params(const ModelConfig *mc)
{
	size_t C = (size_t)mc->hidden_size, V = (size_t)mc->vocab_size;
	size_t n = model_config_num_nonembedding_params(mc) + V * C;
	if (mc->arch == TRL_ARCH_GPT2)
		n += (size_t)mc->max_position_embeddings * C;
	if (mc->num_labels > 0)
		n += (size_t)mc->num_labels * C;
	else if (!mc->tie_word_embeddings)
		n += V * C;
	return n;
}

/* The shortest decimal that reads back as the same float (1e-06, not
 * 9.99999997e-07), as Python writes the value Hugging Face loaded. */
static const char *float_str(char *buf, size_t cap, float x)
{
	for (int prec = 6; prec < 9; prec++) {
		snprintf(buf, cap, "%.*g", prec, (double)x);
		if (strtof(buf, NULL) == x)
			return buf;
	}
	snprintf(buf, cap, "%.9g", (double)x);
	return buf;
}

void model_config_hf_json(const ModelConfig *mc, const char *torch_dtype, JsonBuf *out)
{
	JsonBuf *b = out;
	char eps[32], theta[32], init[32];
	float_str(eps, sizeof eps, mc->norm_eps);
	float_str(theta, sizeof theta, mc->rope_theta);
	float_str(init, sizeof init, mc->initializer_range);
	TrlHfType t = mc->model_type;
	json_buf_puts(b, "{\n");
	json_buf_printf(b, "  \"architectures\": [\"%s\"],\n  \"model_type\": \"%s\",\n",
	                mc->num_labels > 0 ? model_hf_cls_name(t) : model_hf_arch_name(t),
	                model_hf_type_name(t));
	if (mc->num_labels > 0) {
		json_buf_puts(b, "  \"id2label\": {");
		for (int i = 0; i < mc->num_labels; i++)
			json_buf_printf(b, "%s\"%d\": \"LABEL_%d\"", i ? ", " : "", i, i);
		json_buf_puts(b, "},\n  \"label2id\": {");
		for (int i = 0; i < mc->num_labels; i++)
			json_buf_printf(b, "%s\"LABEL_%d\": %d", i ? ", " : "", i, i);
		json_buf_puts(b, "},\n");
		if (mc->pad_token_id >= 0)
			json_buf_printf(b, "  \"pad_token_id\": %d,\n", mc->pad_token_id);
	}
	if (t == TRL_HF_LFM2) {
		/* The effective FFN width, with Hugging Face's width adjustment off. */
		json_buf_printf(
		    b,
		    "  \"vocab_size\": %d,\n  \"hidden_size\": %d,\n"
		    "  \"num_hidden_layers\": %d,\n  \"num_attention_heads\": %d,\n"
		    "  \"num_key_value_heads\": %d,\n  \"intermediate_size\": %d,\n"
		    "  \"block_auto_adjust_ff_dim\": false,\n"
		    "  \"max_position_embeddings\": %d,\n  \"norm_eps\": %s,\n"
		    "  \"rope_theta\": %s,\n  \"conv_L_cache\": %d,\n  \"conv_bias\": "
		    "%s,\n"
		    "  \"layer_types\": [",
		    mc->vocab_size, mc->hidden_size, mc->num_hidden_layers,
		    mc->num_attention_heads, mc->num_key_value_heads,
		    mc->intermediate_size, mc->max_position_embeddings, eps, theta,
		    mc->conv_L_cache, mc->conv_bias ? "true" : "false");
		for (int l = 0; l < mc->num_hidden_layers; l++)
			json_buf_printf(b, "%s\"%s\"", l ? ", " : "",
			                mc->attn_layer[l] ? "full_attention" : "conv");
		json_buf_puts(b, "],\n");
	} else if (t == TRL_HF_GPT2) {
		json_buf_printf(
		    b,
		    "  \"vocab_size\": %d,\n  \"n_embd\": %d,\n  \"n_layer\": %d,\n"
		    "  \"n_head\": %d,\n  \"n_inner\": %d,\n  \"n_positions\": %d,\n"
		    "  \"activation_function\": \"gelu_new\",\n"
		    "  \"layer_norm_epsilon\": %s,\n",
		    mc->vocab_size, mc->hidden_size, mc->num_hidden_layers,
		    mc->num_attention_heads, mc->intermediate_size,
		    mc->max_position_embeddings, eps);
	} else {
		json_buf_printf(
		    b,
		    "  \"vocab_size\": %d,\n  \"hidden_size\": %d,\n"
		    "  \"num_hidden_layers\": %d,\n  \"num_attention_heads\": %d,\n"
		    "  \"num_key_value_heads\": %d,\n  \"head_dim\": %d,\n"
		    "  \"intermediate_size\": %d,\n"
		    "  \"max_position_embeddings\": %d,\n  \"hidden_act\": \"silu\",\n"
		    "  \"rms_norm_eps\": %s,\n  \"rope_theta\": %s,\n"
		    "  \"rope_scaling\": null,\n",
		    mc->vocab_size, mc->hidden_size, mc->num_hidden_layers,
		    mc->num_attention_heads, mc->num_key_value_heads, mc->head_dim,
		    mc->intermediate_size, mc->max_position_embeddings, eps, theta);
		if (t != TRL_HF_QWEN2 && t != TRL_HF_MISTRAL)
			json_buf_printf(b, "  \"attention_bias\": %s,\n",
			                mc->attention_bias ? "true" : "false");
		if (t == TRL_HF_LLAMA)
			json_buf_puts(b, "  \"mlp_bias\": false,\n");
		if (t == TRL_HF_MISTRAL || t == TRL_HF_QWEN2 || t == TRL_HF_QWEN3) {
			if (mc->sliding_window > 0)
				json_buf_printf(b, "  \"sliding_window\": %d,\n",
				                mc->sliding_window);
			else
				json_buf_puts(b, "  \"sliding_window\": null,\n");
		}
		if (t == TRL_HF_QWEN2 || t == TRL_HF_QWEN3)
			json_buf_printf(b, "  \"use_sliding_window\": %s,\n",
			                mc->sliding_window > 0 ? "true" : "false");
	}
	json_buf_printf(b,
	                "  \"tie_word_embeddings\": %s,\n  \"initializer_range\": %s,\n"
	                "  \"torch_dtype\": \"%s\"\n}\n",
	                mc->tie_word_embeddings ? "true" : "false", init,
	                torch_dtype ? torch_dtype : "float32");
}
