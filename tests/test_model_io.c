/* test_model_io.c - Hugging Face model folders: round trips per model_type, bf16
 * and f16 conversion, sharded checkpoints, and the errors a user sees for a
 * folder trl-hpc cannot load. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json.h"
#include "model.h"
#include "params.h"
#include "model_io.h"
#include "rng.h"
#include "safetensors.h"

static ModelConfig tiny(TrlHfType type)
{
	ModelConfig mc = {0};
	mc.arch = type == TRL_HF_GPT2 ? TRL_ARCH_GPT2 : TRL_ARCH_LLAMA;
	mc.model_type = type;
	mc.vocab_size = 19;
	mc.hidden_size = 16;
	mc.num_hidden_layers = 2;
	mc.num_attention_heads = 4;
	mc.num_key_value_heads = type == TRL_HF_GPT2 ? 0 : 2;
	mc.intermediate_size = 24;
	mc.max_position_embeddings = 16;
	mc.rope_theta = 10000.0f;
	mc.norm_eps = 1e-6f;
	mc.initializer_range = 0.02f;
	if (type == TRL_HF_QWEN3) {
		mc.head_dim = 8; /* != hidden / heads = 4 */
		mc.tie_word_embeddings = 1;
	}
	if (type == TRL_HF_LLAMA)
		mc.attention_bias = 1; /* q/k/v and o_proj biases */
	if (type == TRL_HF_MISTRAL)
		mc.sliding_window = 8;
	return mc;
}

/* Random values in every tensor; the alignment padding between tensors stays
 * zero, as in a loaded model. */
static void randomise(Model *m, uint64_t seed)
{
	Rng r;
	rng_seed(&r, seed);
	for (int i = 0; i < m->table.n; i++)
		for (size_t j = 0; j < m->table.p[i].numel; j++)
			m->params[m->table.p[i].offset + j] = (float)rng_normal(&r);
}

static char dir[64];

static void make_dir(void)
{
	snprintf(dir, sizeof dir, "/tmp/trl-model-io-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void remove_dir(void)
{
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(model_io, .init = make_dir, .fini = remove_dir);

static char *slurp(const char *path)
{
	char *buf;
	size_t len;
	TrlErr err;
	cr_assert_eq(trl_read_file(path, &buf, &len, &err), 0, "%s", err.msg);
	return buf;
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs(text, f);
	cr_assert_eq(fclose(f), 0);
}

/* Replaces the first occurrence of old in DIR/name by new. */
static void edit(const char *name, const char *old, const char *new)
{
	char path[256];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	char *s = slurp(path);
	char *at = strstr(s, old);
	cr_assert_not_null(at, "'%s' not in %s", old, path);
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f);
	fwrite(s, 1, (size_t)(at - s), f);
	fputs(new, f);
	fputs(at + strlen(old), f);
	cr_assert_eq(fclose(f), 0);
	trl_free(s);
}

static void save_tiny(TrlHfType type, Model *a)
{
	ModelConfig mc = tiny(type);
	TrlErr err;
	cr_assert_eq(model_init(a, &mc, &err), 0, "%s", err.msg);
	randomise(a, 7 + (uint64_t)type);
	cr_assert_eq(model_save_dir(a, dir, &err), 0, "%s", err.msg);
}

static void expect_load_error(const char *needle1, const char *needle2)
{
	Model b;
	TrlErr err = {0};
	cr_assert_neq(model_load_dir(&b, dir, &err), 0, "loading should fail");
	cr_assert(strstr(err.msg, needle1) != NULL, "message '%s' lacks '%s'", err.msg,
	          needle1);
	if (needle2)
		cr_assert(strstr(err.msg, needle2) != NULL, "message '%s' lacks '%s'",
		          err.msg, needle2);
}

/* ---- round trips ------------------------------------------------------------ */

static void check_round_trip(TrlHfType type, const char *model_type, const char *arch)
{
	Model a, b;
	TrlErr err;
	save_tiny(type, &a);
	char path[256];
	snprintf(path, sizeof path, "%s/config.json", dir);
	char *json = slurp(path);
	char want[128];
	snprintf(want, sizeof want, "\"model_type\": \"%s\"", model_type);
	cr_assert(strstr(json, want), "%s", json);
	snprintf(want, sizeof want, "[\"%s\"]", arch);
	cr_assert(strstr(json, want), "%s", json);
	trl_free(json);
	cr_assert_eq(model_load_dir(&b, dir, &err), 0, "%s", err.msg);
	cr_assert_eq(b.cfg.model_type, type);
	cr_assert_eq(memcmp(&a.cfg, &b.cfg, sizeof a.cfg), 0, "config.json round trip");
	cr_assert_eq(b.table.n, a.table.n);
	cr_assert_eq(memcmp(a.params, b.params, a.table.total * sizeof(float)), 0);
	model_free(&a);
	model_free(&b);
}

Test(model_io, llama_round_trip_is_exact)
{
	check_round_trip(TRL_HF_LLAMA, "llama", "LlamaForCausalLM");
}
Test(model_io, qwen2_round_trip_is_exact)
{
	check_round_trip(TRL_HF_QWEN2, "qwen2", "Qwen2ForCausalLM");
}
Test(model_io, qwen3_round_trip_is_exact)
{
	check_round_trip(TRL_HF_QWEN3, "qwen3", "Qwen3ForCausalLM");
}
Test(model_io, mistral_round_trip_is_exact)
{
	check_round_trip(TRL_HF_MISTRAL, "mistral", "MistralForCausalLM");
}
Test(model_io, gpt2_round_trip_is_exact)
{
	check_round_trip(TRL_HF_GPT2, "gpt2", "GPT2LMHeadModel");
}

Test(model_io, qwen3_has_hf_tensor_names_and_shapes)
{
	Model a;
	TrlErr err;
	save_tiny(TRL_HF_QWEN3, &a);
	StFile f = {0};
	char path[256];
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	cr_assert_eq(st_open(&f, path, &err), 0, "%s", err.msg);
	const StTensor *t = st_find(&f, "model.layers.1.self_attn.q_norm.weight");
	cr_assert_not_null(t);
	cr_assert(t->ndim == 1 && t->shape[0] == 8);
	t = st_find(&f, "model.layers.0.self_attn.q_proj.weight");
	cr_assert(t && t->shape[0] == 32 && t->shape[1] == 16, "q_proj is (H*D, C)");
	t = st_find(&f, "model.layers.0.self_attn.o_proj.weight");
	cr_assert(t && t->shape[0] == 16 && t->shape[1] == 32, "o_proj is (C, H*D)");
	cr_assert_null(st_find(&f, "lm_head.weight"), "tied: no lm_head.weight");
	cr_assert_null(st_find(&f, "model.layers.0.self_attn.q_proj.bias"));
	st_close(&f);
	model_free(&a);
}

Test(model_io, bf16_export_loads_as_rounded_weights)
{
	Model a, b;
	TrlErr err;
	ModelConfig mc = tiny(TRL_HF_QWEN2);
	cr_assert_eq(model_init(&a, &mc, &err), 0, "%s", err.msg);
	randomise(&a, 3);
	char src[128];
	snprintf(src, sizeof src, "%s/src", dir);
	cr_assert_eq(trl_mkdirs(src, &err), 0);
	char path[256];
	snprintf(path, sizeof path, "%s/tokenizer.json", src);
	write_text(path, "{\"model\": {}}\n");
	snprintf(path, sizeof path, "%s/special_tokens_map.json", src);
	write_text(path, "{}\n");
	ModelExportOpts o = MODEL_EXPORT_DEFAULTS;
	o.dtype = ST_BF16;
	o.tokenizer_dir = src;
	o.eos_token_id = 5;
	cr_assert_eq(model_export_dir(&a, dir, &o, &err), 0, "%s", err.msg);
	cr_assert_eq(model_load_dir(&b, dir, &err), 0, "%s", err.msg);
	for (size_t i = 0; i < a.table.total; i++)
		cr_assert_eq(b.params[i], st_bf16_to_f32(st_f32_to_bf16(a.params[i])),
		             "param %zu", i);
	snprintf(path, sizeof path, "%s/config.json", dir);
	char *s = slurp(path);
	cr_assert(strstr(s, "\"torch_dtype\": \"bfloat16\""), "%s", s);
	trl_free(s);
	snprintf(path, sizeof path, "%s/generation_config.json", dir);
	s = slurp(path);
	cr_assert(strstr(s, "\"bos_token_id\": null") && strstr(s, "\"eos_token_id\": 5"),
	          "%s", s);
	trl_free(s);
	snprintf(path, sizeof path, "%s/tokenizer.json", dir);
	s = slurp(path);
	cr_assert_str_eq(s, "{\"model\": {}}\n");
	trl_free(s);
	snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
	cr_assert_neq(access(path, F_OK), 0, "absent in the source, not created");
	model_free(&a);
	model_free(&b);
}

/* ---- half-precision conversion ---------------------------------------------- */

static float from_bits(uint32_t u)
{
	float f;
	memcpy(&f, &u, sizeof f);
	return f;
}

Test(model_io, bf16_rounds_to_nearest_even)
{
	cr_assert_eq(st_f32_to_bf16(1.0f), 0x3f80);
	cr_assert_eq(st_f32_to_bf16(-0.0f), 0x8000);
	/* Exactly half way: ties go to the even mantissa. */
	cr_assert_eq(st_f32_to_bf16(from_bits(0x3f808000u)), 0x3f80);
	cr_assert_eq(st_f32_to_bf16(from_bits(0x3f818000u)), 0x3f82);
	/* Just above / below half way. */
	cr_assert_eq(st_f32_to_bf16(from_bits(0x3f808001u)), 0x3f81);
	cr_assert_eq(st_f32_to_bf16(from_bits(0x3f807fffu)), 0x3f80);
	/* A carry into the exponent, and the largest float rounds to infinity. */
	cr_assert_eq(st_f32_to_bf16(from_bits(0x3fffffffu)), 0x4000);
	cr_assert_eq(st_f32_to_bf16(from_bits(0x7f7fffffu)), 0x7f80);
	/* Subnormals round like any other value. */
	cr_assert_eq(st_f32_to_bf16(from_bits(0x00018000u)), 0x0002);
	cr_assert_eq(st_f32_to_bf16(INFINITY), 0x7f80);
	cr_assert_eq(st_f32_to_bf16(-INFINITY), 0xff80);
	/* NaN stays NaN even when its payload lives only in the dropped bits. */
	uint16_t n = st_f32_to_bf16(from_bits(0x7f800001u));
	cr_assert(isnan(st_bf16_to_f32(n)), "0x%04x", n);
	n = st_f32_to_bf16(from_bits(0xffc00000u));
	cr_assert(isnan(st_bf16_to_f32(n)) && (n & 0x8000), "sign kept: 0x%04x", n);
	/* Every bf16 value converts to float and back unchanged. */
	for (uint32_t h = 0; h < 0x10000; h++) {
		float f = st_bf16_to_f32((uint16_t)h);
		if (!isnan(f))
			cr_assert_eq(st_f32_to_bf16(f), h, "0x%04x", h);
	}
}

Test(model_io, f16_converts_exactly)
{
	cr_assert_eq(st_f16_to_f32(0x3c00), 1.0f);
	cr_assert_eq(st_f16_to_f32(0xc000), -2.0f);
	cr_assert_eq(st_f16_to_f32(0x7bff), 65504.0f);
	cr_assert_eq(st_f16_to_f32(0x0001), ldexpf(1.0f, -24));
	cr_assert_eq(st_f16_to_f32(0x03ff), ldexpf(1023.0f, -24));
	cr_assert_eq(st_f16_to_f32(0x0400), ldexpf(1.0f, -14));
	cr_assert_eq(st_f16_to_f32(0x7c00), INFINITY);
	cr_assert_eq(st_f16_to_f32(0xfc00), -INFINITY);
	cr_assert(isnan(st_f16_to_f32(0x7e00)));
	cr_assert(signbit(st_f16_to_f32(0x8000)));
}

Test(model_io, tensor_to_f32_reads_misaligned_half_data)
{
	unsigned char raw[7] = {0, 0x80, 0x3f, 0x00, 0xc0, 0, 0};
	StTensor t = {.name = "x", .dtype = ST_BF16, .ndim = 1, .shape = {3}};
	t.data = raw + 1; /* odd address */
	t.nbytes = 6;
	float out[3];
	TrlErr err;
	cr_assert_eq(st_tensor_to_f32(&t, out, 3, &err), 0, "%s", err.msg);
	cr_assert(out[0] == 1.0f && out[1] == -2.0f && out[2] == 0.0f);
	t.dtype = ST_I32;
	t.nbytes = 12;
	cr_assert_neq(st_tensor_to_f32(&t, out, 3, &err), 0);
	cr_assert(strstr(err.msg, "'x'") && strstr(err.msg, "I32"), "%s", err.msg);
}

/* ---- sharded checkpoints ---------------------------------------------------- */

/* Splits DIR/model.safetensors into two shards and an index, then removes it.
 * The index names every tensor except `skip` (NULL: none). */
static void shard(const char *skip)
{
	char path[256], shard_path[256];
	StFile f = {0};
	TrlErr err;
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	cr_assert_eq(st_open(&f, path, &err), 0, "%s", err.msg);
	int half = f.n / 2;
	const char *names[2] = {"model-00001-of-00002.safetensors",
	                        "model-00002-of-00002.safetensors"};
	for (int k = 0; k < 2; k++) {
		snprintf(shard_path, sizeof shard_path, "%s/%s", dir, names[k]);
		int lo = k ? half : 0, hi = k ? f.n : half;
		cr_assert_eq(st_write(shard_path, f.t + lo, hi - lo, NULL, 0, &err), 0,
		             "%s", err.msg);
	}
	snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
	FILE *out = fopen(path, "w");
	cr_assert_not_null(out);
	fprintf(out, "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {");
	int first = 1;
	for (int i = 0; i < f.n; i++) {
		if (skip && strcmp(f.t[i].name, skip) == 0)
			continue;
		fprintf(out, "%s\"%s\": \"%s\"", first ? "" : ", ", f.t[i].name,
		        names[i >= half]);
		first = 0;
	}
	fprintf(out, "}}\n");
	cr_assert_eq(fclose(out), 0);
	st_close(&f);
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	cr_assert_eq(unlink(path), 0);
}

Test(model_io, sharded_checkpoint_loads_identically)
{
	Model a, b;
	TrlErr err;
	save_tiny(TRL_HF_QWEN3, &a);
	shard(NULL);
	cr_assert_eq(model_load_dir(&b, dir, &err), 0, "%s", err.msg);
	cr_assert_eq(memcmp(a.params, b.params, a.table.total * sizeof(float)), 0);
	model_free(&a);
	model_free(&b);
}

Test(model_io, shard_missing_from_disk_is_an_error_naming_it)
{
	Model a;
	save_tiny(TRL_HF_LLAMA, &a);
	shard(NULL);
	char path[256];
	snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", dir);
	cr_assert_eq(unlink(path), 0);
	expect_load_error("model-00002-of-00002.safetensors", NULL);
	model_free(&a);
}

Test(model_io, no_weights_file_is_an_error)
{
	Model a;
	save_tiny(TRL_HF_LLAMA, &a);
	char path[256];
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	cr_assert_eq(unlink(path), 0);
	expect_load_error("neither model.safetensors nor model.safetensors.index.json",
	                  NULL);
	model_free(&a);
}

/* ---- errors naming the problem ---------------------------------------------- */

Test(model_io, missing_tensor_is_an_error_naming_it)
{
	Model a;
	save_tiny(TRL_HF_QWEN3, &a);
	/* Shards that lack one tensor altogether. */
	char path[256], shard_path[256];
	StFile f = {0};
	TrlErr err;
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	cr_assert_eq(st_open(&f, path, &err), 0, "%s", err.msg);
	StTensor *keep = calloc((size_t)f.n, sizeof *keep);
	int n = 0;
	for (int i = 0; i < f.n; i++)
		if (strcmp(f.t[i].name, "model.layers.1.self_attn.k_norm.weight") != 0)
			keep[n++] = f.t[i];
	snprintf(shard_path, sizeof shard_path, "%s/model.safetensors.new", dir);
	cr_assert_eq(st_write(shard_path, keep, n, NULL, 0, &err), 0, "%s", err.msg);
	st_close(&f);
	free(keep);
	cr_assert_eq(rename(shard_path, path), 0);
	expect_load_error("model.layers.1.self_attn.k_norm.weight", "missing");
	model_free(&a);
}

Test(model_io, wrong_shape_is_an_error_naming_tensor_and_shapes)
{
	Model a;
	save_tiny(TRL_HF_MISTRAL, &a);
	edit("config.json", "\"intermediate_size\": 24", "\"intermediate_size\": 20");
	expect_load_error("model.layers.0.mlp.gate_proj.weight", "[24, 16]");
	model_free(&a);
}

Test(model_io, unsupported_model_type_is_an_error_naming_it)
{
	Model a;
	save_tiny(TRL_HF_LLAMA, &a);
	edit("config.json", "\"model_type\": \"llama\"", "\"model_type\": \"phi3\"");
	expect_load_error("'phi3'", "not supported");
	model_free(&a);
}

Test(model_io, unsupported_architecture_is_an_error_naming_it)
{
	Model a;
	save_tiny(TRL_HF_QWEN2, &a);
	edit("config.json", "Qwen2ForCausalLM", "Qwen2ForTokenClassification");
	expect_load_error("Qwen2ForTokenClassification", "not supported");
	model_free(&a);
}

Test(model_io, rope_scaling_is_refused)
{
	Model a;
	save_tiny(TRL_HF_LLAMA, &a);
	edit("config.json", "\"rope_scaling\": null",
	     "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0}");
	expect_load_error("rope_scaling (llama3) is not supported", NULL);
	model_free(&a);
}

Test(model_io, other_activation_is_refused)
{
	Model a;
	save_tiny(TRL_HF_LLAMA, &a);
	edit("config.json", "\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\"");
	expect_load_error("hidden_act", "'gelu'");
	model_free(&a);
}

Test(model_io, sequence_longer_than_sliding_window_is_refused)
{
	Model a, b;
	TrlErr err;
	save_tiny(TRL_HF_MISTRAL, &a);
	cr_assert_eq(model_load_dir(&b, dir, &err), 0, "%s", err.msg);
	cr_assert_eq(b.cfg.sliding_window, 8);
	cr_assert_eq(model_alloc_activations(&b, 1, 8, &err), 0, "%s", err.msg);
	cr_assert_neq(model_alloc_activations(&b, 1, 9, &err), 0);
	cr_assert(strstr(err.msg, "sliding_window (8)"), "%s", err.msg);
	model_free(&a);
	model_free(&b);
	/* Unused by qwen2 unless use_sliding_window is true. */
	save_tiny(TRL_HF_QWEN2, &a);
	edit("config.json", "\"sliding_window\": null", "\"sliding_window\": 4");
	cr_assert_eq(model_load_dir(&b, dir, &err), 0, "%s", err.msg);
	cr_assert_eq(b.cfg.sliding_window, 0);
	model_free(&a);
	model_free(&b);
}

Test(model_io, head_dim_need_not_divide_hidden_size)
{
	ModelConfig mc = tiny(TRL_HF_QWEN3);
	mc.hidden_size = 20; /* heads 4, head_dim 8: H*D = 32 != 20 */
	Model m;
	TrlErr err;
	cr_assert_eq(model_init(&m, &mc, &err), 0, "%s", err.msg);
	const ParamInfo *p =
	    params_find(&m.table, "model.layers.0.self_attn.q_proj.weight");
	cr_assert(p && p->shape[0] == 32 && p->shape[1] == 20);
	size_t numel = 0;
	for (int i = 0; i < m.table.n; i++)
		numel += m.table.p[i].numel;
	cr_assert_eq(model_config_num_params(&m.cfg), numel);
	model_free(&m);
	/* gpt2's fused c_attn has no room for it. */
	mc = tiny(TRL_HF_GPT2);
	mc.head_dim = 8;
	cr_assert_neq(model_init(&m, &mc, &err), 0);
	cr_assert(strstr(err.msg, "head_dim"), "%s", err.msg);
}

/* A reward model leaves as <Arch>ForSequenceClassification with score.weight
 * and id2label, and comes back as the same classifier; a causal LM read as a
 * classifier gets a new score head drawn from the seed. */
Test(model_io, sequence_classifier_round_trips)
{
	ModelConfig mc = tiny(TRL_HF_LLAMA);
	mc.num_labels = 1;
	Model a, b;
	TrlErr err;
	cr_assert_eq(model_init(&a, &mc, &err), 0, "%s", err.msg);
	randomise(&a, 99);
	cr_assert_eq(model_save_dir(&a, dir, &err), 0, "%s", err.msg);
	char path[512], *text = NULL;
	size_t len = 0;
	snprintf(path, sizeof path, "%s/config.json", dir);
	cr_assert_eq(trl_read_file(path, &text, &len, &err), 0);
	cr_assert(strstr(text, "\"LlamaForSequenceClassification\""), "%s", text);
	cr_assert(strstr(text, "\"id2label\": {\"0\": \"LABEL_0\"}"), "%s", text);
	trl_free(text);
	cr_assert_eq(model_load_dir(&b, dir, &err), 0, "%s", err.msg);
	cr_assert_eq(b.cfg.num_labels, 1);
	cr_assert_eq(b.table.total, a.table.total);
	cr_assert_eq(memcmp(a.params, b.params, a.table.total * sizeof(float)), 0);
	cr_assert_not_null(params_find(&b.table, "score.weight"));
	cr_assert_null(params_find(&b.table, "lm_head.weight"));
	model_free(&b);
	model_free(&a);

	Model lm, cls;
	mc = tiny(TRL_HF_LLAMA);
	mc.tie_word_embeddings = 0;
	cr_assert_eq(model_init(&lm, &mc, &err), 0, "%s", err.msg);
	randomise(&lm, 5);
	cr_assert_eq(model_save_dir(&lm, dir, &err), 0, "%s", err.msg);
	int fresh = 0;
	cr_assert_eq(model_load_dir_head(&cls, dir, 1, 42, &fresh, &err), 0, "%s",
	             err.msg);
	cr_assert_eq(fresh, 1);
	const ParamInfo *p = params_find(&cls.table, "score.weight");
	cr_assert_not_null(p);
	cr_assert_eq(p->shape[0], 1);
	double ss = 0.0;
	for (size_t i = 0; i < p->numel; i++)
		ss += (double)cls.params[p->offset + i] * cls.params[p->offset + i];
	double sd = sqrt(ss / (double)p->numel);
	cr_assert(sd > 0.5 * mc.initializer_range && sd < 2.0 * mc.initializer_range,
	          "score head std %g, initializer_range %g", sd,
	          (double)mc.initializer_range);
	/* The body is the causal LM's. */
	const ParamInfo *q = params_find(&cls.table, "model.norm.weight");
	const ParamInfo *q0 = params_find(&lm.table, "model.norm.weight");
	cr_assert_eq(memcmp(cls.params + q->offset, lm.params + q0->offset,
	                    q->numel * sizeof(float)),
	             0);
	model_free(&cls);
	model_free(&lm);
}

/* ---- lfm2: the shape from config.json -------------------------------------- */

/* inputs/lfm2-1.2b/config.json from the source tree ($srcdir, set by make
 * check, else the parent or current folder). */
static void lfm2_config(ModelConfig *mc)
{
	const char *dirs[3] = {getenv("srcdir"), "..", "."};
	char path[4096];
	TrlErr err = {0};
	for (int i = 0; i < 3; i++) {
		if (!dirs[i])
			continue;
		snprintf(path, sizeof path, "%s/inputs/lfm2-1.2b/config.json", dirs[i]);
		if (access(path, R_OK) != 0)
			continue;
		cr_assert_eq(model_config_load_json(mc, path, &err), 0, "%s", err.msg);
		cr_assert_eq(model_config_check(mc, &err), 0, "%s", err.msg);
		return;
	}
	cr_assert_fail("inputs/lfm2-1.2b/config.json not found (set srcdir)");
}

static void expect_tensor(const ParamTable *t, const char *name, size_t r, size_t c)
{
	const ParamInfo *p = params_find(t, name);
	cr_assert_not_null(p, "%s is missing", name);
	cr_assert_eq(p->shape[0], r, "%s rows %zu, want %zu", name, p->shape[0], r);
	cr_assert_eq(p->ndim == 1 ? 0 : p->shape[1], c, "%s columns", name);
}

/* The released LFM2-1.2B: 16 layers, attention at 2, 5, 8, 10, 12, 14, the
 * FFN width 12288 adjusted to 8192, 1,170,340,608 parameters (embeddings
 * 65536 x 2048 = 134,217,728; 6 attention layers of 10,485,888 without
 * their FFN, 10 conv layers of 16,783,360, 16 FFNs of 50,331,648 and 16 x 2
 * norms of 2048, the final norm). */
Test(model_io, lfm2_config_gives_the_released_shape)
{
	ModelConfig mc;
	lfm2_config(&mc);
	cr_assert_eq(mc.arch, TRL_ARCH_LFM2);
	cr_assert_eq(mc.intermediate_size, 8192);
	cr_assert_eq(mc.head_dim, 64);
	cr_assert_eq(mc.conv_L_cache, 3);
	cr_assert(mc.tie_word_embeddings);
	int attn = 0;
	for (int l = 0; l < mc.num_hidden_layers; l++)
		attn += mc.attn_layer[l];
	cr_assert_eq(attn, 6);
	cr_assert(mc.attn_layer[2] && mc.attn_layer[14] && !mc.attn_layer[0] &&
	          !mc.attn_layer[15]);
	cr_assert_eq(model_config_num_params(&mc), (size_t)1170340608);
	ParamTable t;
	TrlErr err = {0};
	cr_assert_eq(params_build(&t, &mc, &err), 0, "%s", err.msg);
	size_t n = 0;
	for (int i = 0; i < t.n; i++)
		n += t.p[i].numel;
	cr_assert_eq(n, model_config_num_params(&mc), "the table and the count agree");
	expect_tensor(&t, "model.embed_tokens.weight", 65536, 2048);
	expect_tensor(&t, "model.layers.0.conv.in_proj.weight", 6144, 2048);
	expect_tensor(&t, "model.layers.0.conv.conv.weight", 2048, 3);
	expect_tensor(&t, "model.layers.0.conv.out_proj.weight", 2048, 2048);
	expect_tensor(&t, "model.layers.2.self_attn.q_proj.weight", 2048, 2048);
	expect_tensor(&t, "model.layers.2.self_attn.k_proj.weight", 512, 2048);
	expect_tensor(&t, "model.layers.2.self_attn.out_proj.weight", 2048, 2048);
	expect_tensor(&t, "model.layers.2.self_attn.q_layernorm.weight", 64, 0);
	expect_tensor(&t, "model.layers.15.feed_forward.w1.weight", 8192, 2048);
	expect_tensor(&t, "model.layers.15.feed_forward.w2.weight", 2048, 8192);
	expect_tensor(&t, "model.embedding_norm.weight", 2048, 0);
	cr_assert_null(params_find(&t, "lm_head.weight"), "tied: no lm_head");
	cr_assert_null(params_find(&t, "model.layers.0.self_attn.q_proj.weight"));
	params_free(&t);
		/* Its model is built from the table alone (no slabs: 1.2B floats). */
	Model m;
	cr_assert_eq(model_init_flags(&m, &mc, MODEL_NO_PARAMS | MODEL_NO_GRADS, &err), 0,
	             "%s", err.msg);
	cr_assert_not_null(m.w.layer[0].conv_w, "conv layer 0 wired");
	cr_assert_not_null(m.w.layer[2].q_norm, "attention layer 2's q_layernorm wired");
	cr_assert_null(m.w.layer[2].conv_w);
	model_free(&m);
}

/* config.json written for an lfm2 shape reads back as the same shape. */
Test(model_io, lfm2_config_json_round_trip)
{
	ModelConfig mc, back;
	lfm2_config(&mc);
	JsonBuf b = {0};
	model_config_hf_json(&mc, "bfloat16", &b);
	TrlErr err = {0};
	cr_assert_eq(model_config_parse_json(&back, b.p, b.len, "written", &err), 0,
	             "%s\n%s", err.msg, b.p);
	cr_assert_eq(model_config_check(&back, &err), 0, "%s", err.msg);
	cr_assert_eq(back.intermediate_size, mc.intermediate_size);
	cr_assert_eq(memcmp(back.attn_layer, mc.attn_layer, sizeof mc.attn_layer), 0);
	cr_assert_eq(model_config_num_params(&back), model_config_num_params(&mc));
	json_buf_free(&b);
}

/* layer_types must name a kind for every layer. */
Test(model_io, lfm2_bad_layer_types_are_refused)
{
	const char *text = "{\"model_type\": \"lfm2\", \"hidden_size\": 64, "
	                   "\"num_hidden_layers\": 3, \"num_attention_heads\": 4, "
	                   "\"num_key_value_heads\": 2, \"layer_types\": [\"conv\", "
	                   "\"attention\", \"conv\"]}";
	ModelConfig mc;
	TrlErr err = {0};
	cr_assert_eq(model_config_parse_json(&mc, text, strlen(text), "cfg.json", &err),
	             TRL_EFORMAT);
	cr_assert_str_eq(err.msg, "cfg.json: layer_types[1] is 'attention', not "
	                          "\"full_attention\" or \"conv\"");
}
