/* test_model.c - whole-model tests: the parameter table, gradients of the loss
 * by finite differences, document isolation in packed rows, padding, and the
 * model folder round trip. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "layers.h"
#include "model.h"
#include "model_io.h"
#include "random_model.h"
#include "rng.h"
#include "safetensors.h"

static ModelConfig tiny(TrlArch arch, int kv, int bias, int tied)
{
	ModelConfig mc = {0};
	mc.arch = arch;
	mc.vocab_size = 23;
	mc.hidden_size = 16;
	mc.num_hidden_layers = 2;
	mc.num_attention_heads = 4;
	mc.num_key_value_heads = kv;
	mc.intermediate_size = 24;
	mc.max_position_embeddings = 16;
	mc.tie_word_embeddings = tied;
	mc.attention_bias = bias;
	mc.rope_theta = 10000.0f;
	mc.norm_eps = 1e-5f;
	mc.initializer_range = 0.3f;
	return mc;
}

/* LFM2: conv, attention, conv layers; kernel 3 (released models) or a
 * 5-tap kernel with conv biases and an untied head. */
static ModelConfig tiny_lfm2(int bias)
{
	ModelConfig mc = tiny(TRL_ARCH_LFM2, 2, 0, !bias);
	mc.num_hidden_layers = 3;
	mc.attn_layer[1] = 1;
	mc.conv_L_cache = bias ? 5 : 3;
	mc.conv_bias = bias;
	return mc;
}

/* One (2, 7) batch: row 0 holds two packed documents, row 1 is padded. */
static void fill_batch(Batch *b, int V, uint64_t seed)
{
	Rng r;
	rng_seed(&r, seed);
	b->B = 2;
	b->T = 7;
	int doc0[7] = {0, 0, 0, 1, 1, 1, 1}, pos0[7] = {0, 1, 2, 0, 1, 2, 3};
	for (int t = 0; t < 7; t++) {
		b->ids[t] = (int32_t)rng_below(&r, (uint64_t)V);
		b->doc[t] = doc0[t];
		b->pos[t] = pos0[t];
		b->ids[7 + t] = (int32_t)rng_below(&r, (uint64_t)V);
		b->doc[7 + t] = t < 5 ? 0 : -1;
		b->pos[7 + t] = t;
	}
	for (int i = 0; i < 14; i++) {
		int t = i % 7, last = t == 6;
		int same = !last && b->doc[i + 1] == b->doc[i] && b->doc[i] >= 0;
		b->targets[i] = same ? b->ids[i + 1] : -1;
	}
}

static double loss_of(Model *m, const Batch *b)
{
	model_forward(m, b);
	long n = 0;
	double s = crossentropy_forward_backward(m->logits, b->targets, b->B * b->T,
	                                         m->cfg.vocab_size, 0.0f, &n, NULL);
	return s / (double)n;
}

static void check_gradients(ModelConfig mc)
{
	Model m;
	Batch b;
	TrlErr err;
	cr_assert_eq(model_init(&m, &mc, &err), 0, "%s", err.msg);
	cr_assert_eq(model_alloc_activations(&m, 2, 7, &err), 0, "%s", err.msg);
	cr_assert_eq(batch_alloc(&b, 2, 7, &err), 0);
	random_model_weights(&m, 5);
	fill_batch(&b, mc.vocab_size, 11);
	model_forward(&m, &b);
	long n = 0;
	for (int i = 0; i < 14; i++)
		n += b.targets[i] >= 0;
	crossentropy_forward_backward(m.logits, b.targets, 14, mc.vocab_size,
	                              1.0f / (float)n, NULL, NULL);
	memset(m.grads, 0, m.table.total * sizeof(float));
	model_backward(&m, &b);

	/* Central differences on a few entries of every tensor. In float the
	 * loss carries ~1e-7 relative noise, so h = 1e-2 and a loose tolerance;
	 * the PyTorch oracle (tests/reference) checks to 1e-4. */
	Rng r;
	rng_seed(&r, 1);
	double worst = 0.0;
	for (int i = 0; i < m.table.n; i++) {
		const ParamInfo *p = &m.table.p[i];
		for (int k = 0; k < 3; k++) {
			size_t j = p->offset + rng_below(&r, p->numel);
			float keep = m.params[j];
			const float h = 1e-2f;
			m.params[j] = keep + h;
			double lp = loss_of(&m, &b);
			m.params[j] = keep - h;
			double lm = loss_of(&m, &b);
			m.params[j] = keep;
			double fd = (lp - lm) / (2.0 * h), an = m.grads[j];
			double e = fabs(fd - an) / (1e-3 + fabs(fd));
			worst = e > worst ? e : worst;
			cr_expect(fabs(fd - an) <= 2e-3 + 3e-2 * fabs(fd),
			          "%s[%zu]: analytic %.6g vs finite difference %.6g",
			          p->name, j - p->offset, an, fd);
		}
	}
	batch_free(&b);
	model_free(&m);
}

Test(model, llama_gradients_match_finite_differences)
{
	check_gradients(tiny(TRL_ARCH_LLAMA, 4, 0, 1));
}

Test(model, llama_gqa_bias_untied_gradients_match_finite_differences)
{
	check_gradients(tiny(TRL_ARCH_LLAMA, 2, 1, 0));
}

Test(model, gpt2_gradients_match_finite_differences)
{
	check_gradients(tiny(TRL_ARCH_GPT2, 0, 1, 1));
}

/* A packed document must see exactly what it would see alone in its own row. */
static void check_packing_isolation(ModelConfig mc)
{
	Model m;
	Batch packed, alone;
	TrlErr err;
	cr_assert_eq(model_init(&m, &mc, &err), 0, "%s", err.msg);
	cr_assert_eq(model_alloc_activations(&m, 2, 7, &err), 0);
	cr_assert_eq(batch_alloc(&packed, 2, 7, &err), 0);
	cr_assert_eq(batch_alloc(&alone, 2, 7, &err), 0);
	random_model_weights(&m, 8);
	fill_batch(&packed, mc.vocab_size, 3);
	model_forward(&m, &packed);
	int V = mc.vocab_size;
	float *ref = malloc(sizeof(float) * 14 * (size_t)V);
	memcpy(ref, m.logits, sizeof(float) * 14 * (size_t)V);

	/* Document 1 of row 0 (positions 3..6) alone in a row of 4. */
	alone.B = 1;
	alone.T = 4;
	for (int t = 0; t < 4; t++) {
		alone.ids[t] = packed.ids[3 + t];
		alone.pos[t] = t;
		alone.doc[t] = 0;
		alone.targets[t] = -1;
	}
	model_forward(&m, &alone);
	for (int t = 0; t < 4; t++)
		for (int v = 0; v < V; v++)
			cr_assert_float_eq(m.logits[t * V + v], ref[(3 + t) * V + v],
			                   1e-4, "token %d logit %d differs when packed",
			                   t, v);
	/* Row 1 without its padding: the real tokens do not see the pads. */
	alone.T = 5;
	for (int t = 0; t < 5; t++) {
		alone.ids[t] = packed.ids[7 + t];
		alone.pos[t] = t;
		alone.doc[t] = 0;
	}
	model_forward(&m, &alone);
	for (int t = 0; t < 5; t++)
		for (int v = 0; v < V; v++)
			cr_assert_float_eq(m.logits[t * V + v], ref[(7 + t) * V + v],
			                   1e-4, "token %d logit %d changes with padding",
			                   t, v);
	free(ref);
	batch_free(&packed);
	batch_free(&alone);
	model_free(&m);
}

Test(model, lfm2_gradients_match_finite_differences)
{
	check_gradients(tiny_lfm2(0));
	check_gradients(tiny_lfm2(1));
}

Test(model, lfm2_packed_documents_are_isolated)
{
	check_packing_isolation(tiny_lfm2(0));
}

Test(model, llama_packed_documents_are_isolated)
{
	check_packing_isolation(tiny(TRL_ARCH_LLAMA, 2, 0, 1));
}

Test(model, gpt2_packed_documents_are_isolated)
{
	check_packing_isolation(tiny(TRL_ARCH_GPT2, 0, 1, 1));
}

Test(model, parameter_table_uses_hugging_face_names_and_counts)
{
	ModelConfig mc = tiny(TRL_ARCH_GPT2, 0, 1, 1);
	Model m;
	TrlErr err;
	cr_assert_eq(model_init(&m, &mc, &err), 0);
	const ParamInfo *p = params_find(&m.table, "transformer.h.1.attn.c_attn.weight");
	cr_assert_not_null(p);
	cr_assert_eq(p->shape[0], 16);
	cr_assert_eq(p->shape[1], 48);
	cr_assert_not_null(params_find(&m.table, "transformer.wpe.weight"));
	cr_assert_null(params_find(&m.table, "lm_head.weight"), "gpt2 ties lm_head");
	size_t sum = 0;
	for (int i = 0; i < m.table.n; i++) {
		sum += m.table.p[i].numel;
		cr_assert_eq(m.table.p[i].offset % 16, 0, "tensors start on 64 bytes");
	}
	cr_assert_eq(sum, model_config_num_params(&m.cfg));
	model_free(&m);

	mc = tiny(TRL_ARCH_LLAMA, 2, 1, 0);
	cr_assert_eq(model_init(&m, &mc, &err), 0);
	p = params_find(&m.table, "model.layers.0.self_attn.k_proj.weight");
	cr_assert_not_null(p);
	cr_assert_eq(p->shape[0], 8, "GQA: k_proj has KV * head_dim rows");
	cr_assert_not_null(params_find(&m.table, "model.layers.1.self_attn.v_proj.bias"));
	cr_assert_not_null(params_find(&m.table, "lm_head.weight"));
	sum = 0;
	for (int i = 0; i < m.table.n; i++)
		sum += m.table.p[i].numel;
	cr_assert_eq(sum, model_config_num_params(&m.cfg));
	for (int l = 0; l < m.table.num_layers; l++)
		for (int i = 0; i < m.table.n; i++)
			if (m.table.p[i].layer == l)
				cr_assert(m.table.p[i].offset >= m.table.layer_begin[l] &&
				              m.table.p[i].offset + m.table.p[i].numel <=
				                  m.table.layer_end[l],
				          "layer %d tensors are contiguous", l);
	model_free(&m);
}

Test(model, saved_folder_loads_back_identically)
{
	ModelConfig mc = tiny(TRL_ARCH_LLAMA, 2, 1, 0);
	Model a, b;
	TrlErr err;
	char dir[] = "/tmp/trl-model-XXXXXX";
	cr_assert_not_null(mkdtemp(dir));
	cr_assert_eq(model_init(&a, &mc, &err), 0);
	random_model_weights(&a, 21);
	cr_assert_eq(model_save_dir(&a, dir, &err), 0, "%s", err.msg);
	cr_assert_eq(model_load_dir(&b, dir, &err), 0, "%s", err.msg);
	cr_assert_eq(b.table.total, a.table.total);
	cr_assert_eq(memcmp(&a.cfg, &b.cfg, sizeof a.cfg), 0, "config.json round trip");
	cr_assert_eq(memcmp(a.params, b.params, a.table.total * sizeof(float)), 0);
	model_free(&a);
	model_free(&b);
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
}

/* An lfm2 folder: Hugging Face's names and its (C, 1, K) conv kernel shape in
 * model.safetensors, read back bitwise. */
Test(model, lfm2_folder_has_hugging_face_shapes_and_loads_back)
{
	ModelConfig mc = tiny_lfm2(1);
	Model a, b;
	TrlErr err;
	char dir[] = "/tmp/trl-model-XXXXXX", path[96];
	cr_assert_not_null(mkdtemp(dir));
	cr_assert_eq(model_init(&a, &mc, &err), 0, "%s", err.msg);
	random_model_weights(&a, 21);
	cr_assert_eq(model_save_dir(&a, dir, &err), 0, "%s", err.msg);
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	StFile f = {0};
	cr_assert_eq(st_open(&f, path, &err), 0, "%s", err.msg);
	const StTensor *t = NULL;
	for (int i = 0; i < f.n; i++)
		if (strcmp(f.t[i].name, "model.layers.0.conv.conv.weight") == 0)
			t = &f.t[i];
	cr_assert_not_null(t, "conv kernel saved under its Hugging Face name");
	cr_assert_eq(t->ndim, 3);
	cr_assert(t->shape[0] == 16 && t->shape[1] == 1 && t->shape[2] == 5,
	          "conv kernel (C, 1, K)");
	st_close(&f);
	cr_assert_eq(model_load_dir(&b, dir, &err), 0, "%s", err.msg);
	cr_assert_eq(memcmp(&a.cfg, &b.cfg, sizeof a.cfg), 0, "config.json round trip");
	cr_assert_eq(memcmp(a.params, b.params, a.table.total * sizeof(float)), 0);
	model_free(&a);
	model_free(&b);
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
}

Test(model, missing_tensor_is_an_error_naming_it)
{
	ModelConfig mc = tiny(TRL_ARCH_LLAMA, 4, 0, 1);
	Model a, b;
	TrlErr err;
	char dir[] = "/tmp/trl-model-XXXXXX";
	cr_assert_not_null(mkdtemp(dir));
	cr_assert_eq(model_init(&a, &mc, &err), 0);
	cr_assert_eq(model_save_dir(&a, dir, &err), 0, "%s", err.msg);
	/* The same folder read as an untied model lacks lm_head.weight. */
	char path[256], cmd[512];
	snprintf(path, sizeof path, "%s/config.json", dir);
	snprintf(
	    cmd, sizeof cmd,
	    "sed -i 's/\"tie_word_embeddings\": true/\"tie_word_embeddings\": false/' %s",
	    path);
	cr_assert_eq(system(cmd), 0);
	cr_assert_neq(model_load_dir(&b, dir, &err), 0);
	cr_assert(strstr(err.msg, "lm_head.weight") != NULL, "%s", err.msg);
	model_free(&a);
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
}

Test(model, absurd_shapes_are_an_error_not_a_wrapped_allocation)
{
	/* As a hostile or mistyped config.json could ask: the parameter count
	 * overflows size_t, which must not wrap into a small slab. */
	ModelConfig mc = tiny(TRL_ARCH_LLAMA, 4, 0, 1);
	mc.vocab_size = 1 << 30;
	mc.hidden_size = 1 << 30;
	mc.num_attention_heads = 1 << 20;
	mc.num_key_value_heads = 1 << 20;
	mc.intermediate_size = 1 << 30;
	Model m;
	TrlErr err;
	cr_assert_neq(model_init(&m, &mc, &err), 0);
	cr_assert(strstr(err.msg, "too large") != NULL, "%s", err.msg);
}
