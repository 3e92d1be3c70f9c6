/* model_config.c - checks and derived sizes of a transformer shape. */
#include "model_config.h"

#include <stdio.h>

#include "json.h"
#include "trl.h"

const char *model_arch_name(TrlArch a)
{
	switch (a) {
	case TRL_ARCH_LLAMA:
		return "llama";
	case TRL_ARCH_GPT2:
		return "gpt2";
	}
	return "unknown";
}

int model_config_check(ModelConfig *mc, TrlErr *err)
{
	if (mc->arch != TRL_ARCH_LLAMA && mc->arch != TRL_ARCH_GPT2)
		return trl_errf(err, TRL_EINVAL, "model.architecture: unknown value %d",
		                (int)mc->arch);
	if (mc->vocab_size < 2 || mc->hidden_size < 1 || mc->num_hidden_layers < 1 ||
	    mc->num_attention_heads < 1)
		return trl_errf(
		    err, TRL_EINVAL,
		    "model: vocab_size (%d), hidden_size (%d), num_hidden_layers "
		    "(%d) and num_attention_heads (%d) must be positive",
		    mc->vocab_size, mc->hidden_size, mc->num_hidden_layers,
		    mc->num_attention_heads);
	if (mc->hidden_size % mc->num_attention_heads != 0)
		return trl_errf(err, TRL_EINVAL,
		                "model.hidden_size (%d) must be a multiple of "
		                "model.num_attention_heads (%d)",
		                mc->hidden_size, mc->num_attention_heads);
	if (mc->num_key_value_heads <= 0 || mc->arch == TRL_ARCH_GPT2)
		mc->num_key_value_heads = mc->num_attention_heads;
	if (mc->num_attention_heads % mc->num_key_value_heads != 0)
		return trl_errf(err, TRL_EINVAL,
		                "model.num_attention_heads (%d) must be a multiple of "
		                "model.num_key_value_heads (%d)",
		                mc->num_attention_heads, mc->num_key_value_heads);
	int D = mc->hidden_size / mc->num_attention_heads;
	if (D > 1024)
		return trl_errf(
		    err, TRL_EUNSUPPORTED,
		    "model: head_dim = hidden_size / num_attention_heads = %d; at "
		    "most 1024 is supported",
		    D);
	if (mc->arch == TRL_ARCH_LLAMA && D % 2 != 0)
		return trl_errf(
		    err, TRL_EINVAL,
		    "model: head_dim = hidden_size / num_attention_heads = %d must "
		    "be even for rotary embeddings",
		    D);
	if (mc->intermediate_size <= 0)
		mc->intermediate_size = mc->arch == TRL_ARCH_GPT2
		                            ? 4 * mc->hidden_size
		                            : 8 * mc->hidden_size / 3;
	if (mc->max_position_embeddings < 1)
		return trl_errf(err, TRL_EINVAL,
		                "model.max_position_embeddings (%d) must be positive",
		                mc->max_position_embeddings);
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

size_t model_config_num_nonembedding_params(const ModelConfig *mc)
{
	size_t C = (size_t)mc->hidden_size, I = (size_t)mc->intermediate_size;
	size_t D = C / (size_t)mc->num_attention_heads;
	size_t KVD = D * (size_t)mc->num_key_value_heads;
	size_t per_layer;
	if (mc->arch == TRL_ARCH_GPT2)
		per_layer = 2 * C + (C * 3 * C + 3 * C) + (C * C + C) + 2 * C +
		            (C * I + I) + (I * C + C);
	else
		per_layer = C + C * C + 2 * KVD * C + C * C + C + 3 * C * I +
		            (mc->attention_bias ? C + 2 * KVD : 0);
	size_t final_norm = mc->arch == TRL_ARCH_GPT2 ? 2 * C : C;
	return per_layer * (size_t)mc->num_hidden_layers + final_norm;
}

size_t model_config_num_params(const ModelConfig *mc)
{
	size_t C = (size_t)mc->hidden_size, V = (size_t)mc->vocab_size;
	size_t n = model_config_num_nonembedding_params(mc) + V * C;
	if (mc->arch == TRL_ARCH_GPT2)
		n += (size_t)mc->max_position_embeddings * C;
	if (!mc->tie_word_embeddings)
		n += V * C;
	return n;
}

void model_config_hf_json(const ModelConfig *mc, JsonBuf *out)
{
	JsonBuf *b = out;
	int gpt2 = mc->arch == TRL_ARCH_GPT2;
	json_buf_puts(b, "{\n");
	if (gpt2) {
		json_buf_printf(
		    b,
		    "  \"architectures\": [\"GPT2LMHeadModel\"],\n"
		    "  \"model_type\": \"gpt2\",\n"
		    "  \"vocab_size\": %d,\n  \"n_embd\": %d,\n  \"n_layer\": %d,\n"
		    "  \"n_head\": %d,\n  \"n_inner\": %d,\n  \"n_positions\": %d,\n"
		    "  \"activation_function\": \"gelu_new\",\n"
		    "  \"layer_norm_epsilon\": %.9g,\n",
		    mc->vocab_size, mc->hidden_size, mc->num_hidden_layers,
		    mc->num_attention_heads, mc->intermediate_size,
		    mc->max_position_embeddings, (double)mc->norm_eps);
	} else {
		json_buf_printf(
		    b,
		    "  \"architectures\": [\"LlamaForCausalLM\"],\n"
		    "  \"model_type\": \"llama\",\n"
		    "  \"vocab_size\": %d,\n  \"hidden_size\": %d,\n"
		    "  \"num_hidden_layers\": %d,\n  \"num_attention_heads\": %d,\n"
		    "  \"num_key_value_heads\": %d,\n  \"intermediate_size\": %d,\n"
		    "  \"max_position_embeddings\": %d,\n  \"hidden_act\": \"silu\",\n"
		    "  \"rms_norm_eps\": %.9g,\n  \"rope_theta\": %.9g,\n"
		    "  \"attention_bias\": %s,\n",
		    mc->vocab_size, mc->hidden_size, mc->num_hidden_layers,
		    mc->num_attention_heads, mc->num_key_value_heads,
		    mc->intermediate_size, mc->max_position_embeddings,
		    (double)mc->norm_eps, (double)mc->rope_theta,
		    mc->attention_bias ? "true" : "false");
	}
	json_buf_printf(b,
	                "  \"tie_word_embeddings\": %s,\n  \"initializer_range\": %.9g,\n"
	                "  \"torch_dtype\": \"float32\"\n}\n",
	                mc->tie_word_embeddings ? "true" : "false",
	                (double)mc->initializer_range);
}
