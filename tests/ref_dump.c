/* ref_dump.c - writes a tiny model, one batch and trl-hpc's logits, loss and
 * gradients to a safetensors file for the PyTorch oracle (tests/reference/).
 *
 * Usage: ref_dump ARCH OUT.safetensors, ARCH one of
 *     llama           RMSNorm, RoPE, SwiGLU, multi-head attention, tied lm_head
 *     llama-gqa-bias  Qwen2-like: grouped-query attention, q/k/v biases, untied lm_head
 *     llama-bias      Hugging Face llama with attention_bias: q/k/v and o_proj biases
 *     qwen3           q/k RMSNorm per head before RoPE, head_dim 16 != hidden / heads,
 *                     grouped-query attention, untied lm_head
 *     gpt2            LayerNorm, learned positions, GELU-tanh, Conv1D layout
 *     lfm2            conv, attention (q/k layernorm, GQA), conv layers; tied
 *     lfm2-bias       the same with conv biases, kernel 4, untied lm_head
 *
 * The batch (B = 3, T = 11) covers the three row shapes training produces: a
 * fully real row, a right-padded row (doc = -1, targets -1) and a packed row
 * of three documents (positions reset, targets -1 at document ends). Norm
 * scales and biases get random values so their gradients are not trivial.
 *
 * The file holds every parameter by its Hugging Face name, batch.{ids, pos,
 * doc, targets} (I32 (B, T)), out.logits (F32 (B, T, V), before the loss
 * overwrote them), out.loss (F32 scalar, mean over target tokens),
 * grad.<name> for every parameter, and metadata "config" (the model config as
 * JSON). Exit status 0, or 1 with a message on stderr.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "json.h"
#include "layers.h"
#include "lora.h"
#include "model.h"
#include "model_config.h"
#include "params.h"
#include "rng.h"
#include "safetensors.h"
#include "trl.h"

enum { DUMP_B = 3, DUMP_T = 11 };

static int config_for(const char *arch, ModelConfig *mc)
{
	memset(mc, 0, sizeof *mc);
	mc->vocab_size = 67;
	mc->hidden_size = 32;
	mc->num_hidden_layers = 2;
	mc->num_attention_heads = 4;
	mc->num_key_value_heads = 4;
	mc->max_position_embeddings = 32;
	mc->rope_theta = 10000.0f;
	mc->norm_eps = 1e-5f;
	mc->initializer_range = 0.2f;
	if (strcmp(arch, "llama") == 0) {
		mc->arch = TRL_ARCH_LLAMA;
		mc->intermediate_size = 48;
		mc->tie_word_embeddings = 1;
	} else if (strcmp(arch, "llama-gqa-bias") == 0) {
		mc->arch = TRL_ARCH_LLAMA;
		mc->intermediate_size = 48;
		mc->num_key_value_heads = 2;
		mc->attention_bias = 1;
		mc->tie_word_embeddings = 0;
	} else if (strcmp(arch, "llama-bias") == 0) {
		mc->arch = TRL_ARCH_LLAMA;
		mc->model_type = TRL_HF_LLAMA;
		mc->intermediate_size = 48;
		mc->attention_bias = 1;
		mc->tie_word_embeddings = 1;
	} else if (strcmp(arch, "qwen3") == 0) {
		mc->arch = TRL_ARCH_LLAMA;
		mc->model_type = TRL_HF_QWEN3;
		mc->qk_norm = 1;
		mc->head_dim = 16;
		mc->intermediate_size = 48;
		mc->num_key_value_heads = 2;
		mc->tie_word_embeddings = 0;
	} else if (strcmp(arch, "lfm2") == 0 || strcmp(arch, "lfm2-bias") == 0) {
		/* conv, attention, conv; the second variant with conv biases, a
		 * longer kernel and an untied lm_head */
		int bias = strcmp(arch, "lfm2-bias") == 0;
		mc->arch = TRL_ARCH_LFM2;
		mc->model_type = TRL_HF_LFM2;
		mc->num_hidden_layers = 3;
		mc->attn_layer[1] = 1;
		mc->num_key_value_heads = 2;
		mc->head_dim = 8;
		mc->intermediate_size = 48;
		mc->conv_L_cache = bias ? 4 : 3;
		mc->conv_bias = bias;
		mc->tie_word_embeddings = !bias;
	} else if (strcmp(arch, "gpt2") == 0) {
		mc->arch = TRL_ARCH_GPT2;
		mc->intermediate_size = 4 * mc->hidden_size;
		mc->tie_word_embeddings = 1;
	} else {
		return -1;
	}
	return 0;
}

/* Norm scales around 1, norm shifts and biases around 0, all nonzero. */
static void randomize_norms_and_biases(Model *m, uint64_t seed)
{
	Rng r;
	rng_seed(&r, seed);
	for (int i = 0; i < m->table.n; i++) {
		const ParamInfo *p = &m->table.p[i];
		if (p->kind != TRL_PARAM_NORM && p->kind != TRL_PARAM_BIAS)
			continue;
		float *x = m->params + p->offset;
		int is_scale = p->kind == TRL_PARAM_NORM && !strstr(p->name, ".bias");
		for (size_t j = 0; j < p->numel; j++)
			x[j] = (float)((is_scale ? 1.0 : 0.0) + 0.3 * rng_normal(&r));
	}
}

/* Adapters on targets with r 4, alpha 8 (scale 2), no dropout, and lora_B
 * drawn at random too (PEFT starts it at zero, which would hide every path
 * through it). */
static int make_adapters(Lora *lo, Model *m, const char *targets, TrlErr *err)
{
	LoraSpec s;
	lora_spec_defaults(&s);
	s.r = 4;
	s.alpha = 8.0f;
	s.dropout = 0.0f;
	snprintf(s.targets, sizeof s.targets, "%s", targets);
	int rc = lora_init(lo, m, &s, 0, 4321, NULL, 0, err);
	if (rc)
		return rc;
	Rng r;
	rng_seed(&r, 17);
	for (int i = 0; i < lo->ad.table.n; i++) {
		const ParamInfo *p = &lo->ad.table.p[i];
		if (p->kind == TRL_PARAM_LORA_B)
			for (size_t j = 0; j < p->numel; j++)
				lo->ad.params[p->offset + j] =
				    (float)(0.2 * rng_normal(&r));
	}
	lora_attach(m, lo);
	return TRL_OK;
}

/* Row 0 real, row 1 right-padded after 7 tokens, row 2 packed documents of
 * lengths 4, 4 and 3. Targets are the next token of the same document. */
static void fill_batch(Batch *b, int V, uint64_t seed)
{
	static const int doc_len[3] = {4, 4, 3};
	const int T = b->T, real_len = 7;
	Rng r;
	rng_seed(&r, seed);
	for (int i = 0; i < b->B * T; i++)
		b->ids[i] = (int32_t)rng_below(&r, (uint64_t)V);
	for (int row = 0; row < b->B; row++) {
		int32_t *ids = b->ids + row * T, *pos = b->pos + row * T;
		int32_t *doc = b->doc + row * T, *tgt = b->targets + row * T;
		int start = 0, d = 0;
		for (int t = 0; t < T; t++) {
			if (row == 0) {
				pos[t] = t;
				doc[t] = 0;
				tgt[t] = t + 1 < T ? ids[t + 1]
				                   : (int32_t)rng_below(&r, (uint64_t)V);
			} else if (row == 1) {
				int real = t < real_len;
				pos[t] = real ? t : 0;
				doc[t] = real ? 0 : -1;
				if (!real)
					ids[t] = 0;
				tgt[t] = t + 1 < real_len ? ids[t + 1] : -1;
			} else {
				if (t - start == doc_len[d]) {
					start = t;
					d++;
				}
				pos[t] = t - start;
				doc[t] = d;
				tgt[t] = t + 1 < start + doc_len[d] ? ids[t + 1] : -1;
			}
		}
	}
}

static void set_tensor(StTensor *st, const char *name, StDtype dt, const void *data,
                       size_t nbytes, int ndim, const int64_t *shape)
{
	memset(st, 0, sizeof *st);
	snprintf(st->name, sizeof st->name, "%s", name);
	st->dtype = dt;
	st->ndim = ndim;
	for (int i = 0; i < ndim; i++)
		st->shape[i] = shape[i];
	st->data = data;
	st->nbytes = nbytes;
}

int main(int argc, char **argv)
{
	const char *lora_targets = NULL;
	int bf16 = 0, bad = argc < 3;
	for (int i = 3; i < argc && !bad; i++) {
		if (strcmp(argv[i], "--lora") == 0 && i + 1 < argc)
			lora_targets = argv[++i];
		else if (strcmp(argv[i], "--bf16") == 0)
			bf16 = 1;
		else
			bad = 1;
	}
	if (bad) {
		fprintf(
		    stderr,
		    "usage: %s llama|llama-gqa-bias|llama-bias|qwen3|gpt2|lfm2|lfm2-bias "
		    "OUT.safetensors [--lora TARGETS] [--bf16]\n",
		    argv[0]);
		return 1;
	}
	TrlErr perr = {0};
	if (bf16 && gemm_set_precision(GEMM_BF16, &perr)) {
		fprintf(stderr, "ref_dump: %s\n", perr.msg);
		return 77; /* a build without oneDNN: nothing to compare */
	}
	ModelConfig mc;
	if (config_for(argv[1], &mc)) {
		fprintf(stderr,
		        "ref_dump: unknown architecture '%s' (llama, "
		        "llama-gqa-bias, llama-bias, qwen3, gpt2, lfm2 or lfm2-bias)\n",
		        argv[1]);
		return 1;
	}
	TrlErr err = {0};
	Model m;
	Lora lo;
	memset(&lo, 0, sizeof lo);
	Batch b = {0};
	StTensor *st = NULL;
	float *logits = NULL;
	int status = 1;
	if (model_init_flags(&m, &mc, lora_targets ? MODEL_FROZEN : 0, &err)) {
		fprintf(stderr, "ref_dump: %s\n", err.msg);
		goto out;
	}
	model_init_weights(&m, 1234);
	randomize_norms_and_biases(&m, 99);
	if (lora_targets && make_adapters(&lo, &m, lora_targets, &err)) {
		fprintf(stderr, "ref_dump: %s\n", err.msg);
		goto out;
	}
	if (model_alloc_activations(&m, DUMP_B, DUMP_T, &err) ||
	    batch_alloc(&b, DUMP_B, DUMP_T, &err)) {
		fprintf(stderr, "ref_dump: %s\n", err.msg);
		goto out;
	}
	fill_batch(&b, mc.vocab_size, 7);
	/* Under LoRA the trained tensors are the adapters: their values and
	 * gradients are dumped beside the frozen base's values. */
	Model *tm = lora_targets ? &lo.ad : &m;

	const int N = DUMP_B * DUMP_T, V = m.cfg.vocab_size;
	long count = 0;
	for (int i = 0; i < N; i++)
		count += b.targets[i] != -1;
	memset(tm->grads, 0, tm->table.total * sizeof(float));
	model_forward(&m, &b);
	logits = malloc((size_t)N * V * sizeof *logits);
	if (!logits) {
		fprintf(stderr, "ref_dump: out of memory\n");
		goto out;
	}
	memcpy(logits, m.logits, (size_t)N * V * sizeof *logits);
	long seen = 0;
	double sum = crossentropy_forward_backward(m.logits, b.targets, N, V,
	                                           1.0f / (float)count, &seen, NULL);
	if (seen != count) {
		fprintf(stderr,
		        "ref_dump: crossentropy counted %ld targets, expected %ld\n",
		        seen, count);
		goto out;
	}
	float loss = (float)(sum / (double)count);
	model_backward(&m, &b);

	int n = m.table.n + 2 * lo.ad.table.n + m.table.n + 6, k = 0;
	st = calloc((size_t)n, sizeof *st);
	if (!st) {
		fprintf(stderr, "ref_dump: out of memory\n");
		goto out;
	}
	for (int i = 0; i < m.table.n; i++) {
		const ParamInfo *p = &m.table.p[i];
		int64_t shape[3];
		int nd = params_file_shape(p, shape);
		set_tensor(&st[k++], p->name, ST_F32, m.params + p->offset,
		           p->numel * sizeof(float), nd, shape);
	}
	int64_t bt[2] = {DUMP_B, DUMP_T}, btv[3] = {DUMP_B, DUMP_T, V};
	size_t ibytes = (size_t)N * sizeof(int32_t);
	set_tensor(&st[k++], "batch.ids", ST_I32, b.ids, ibytes, 2, bt);
	set_tensor(&st[k++], "batch.pos", ST_I32, b.pos, ibytes, 2, bt);
	set_tensor(&st[k++], "batch.doc", ST_I32, b.doc, ibytes, 2, bt);
	set_tensor(&st[k++], "batch.targets", ST_I32, b.targets, ibytes, 2, bt);
	set_tensor(&st[k++], "out.logits", ST_F32, logits, (size_t)N * V * sizeof(float),
	           3, btv);
	set_tensor(&st[k++], "out.loss", ST_F32, &loss, sizeof loss, 0, NULL);
	for (int i = 0; lora_targets && i < lo.ad.table.n; i++) {
		const ParamInfo *p = &lo.ad.table.p[i];
		int64_t shape[3];
		int nd = params_file_shape(p, shape);
		set_tensor(&st[k++], p->name, ST_F32, lo.ad.params + p->offset,
		           p->numel * sizeof(float), nd, shape);
	}
	for (int i = 0; i < tm->table.n; i++) {
		const ParamInfo *p = &tm->table.p[i];
		int64_t shape[3];
		int nd = params_file_shape(p, shape);
		char name[sizeof st->name];
		snprintf(name, sizeof name, "grad.%s", p->name);
		set_tensor(&st[k++], name, ST_F32, tm->grads + p->offset,
		           p->numel * sizeof(float), nd, shape);
	}

	JsonBuf json = {0};
	model_config_hf_json(&m.cfg, "float32", &json);
	if (json.oom) {
		fprintf(stderr, "ref_dump: out of memory\n");
		goto out;
	}
	char lmeta[160];
	snprintf(lmeta, sizeof lmeta,
	         "{\"r\": %d, \"lora_alpha\": %g, \"use_rslora\": %s}", lo.spec.r,
	         (double)lo.spec.alpha, lo.spec.rslora ? "true" : "false");
	/* precision tells the oracle to round the linear layers' inputs. */
	const char *meta[6] = {"config", json.p, "precision", bf16 ? "bf16" : "fp32",
	                       "lora",   lmeta};
	int wrc = st_write(argv[2], st, k, meta, lora_targets ? 3 : 2, &err);
	json_buf_free(&json);
	if (wrc) {
		fprintf(stderr, "ref_dump: %s\n", err.msg);
		goto out;
	}
	printf("ref_dump: %s: %d parameters, %ld targets, loss %.6f -> %s\n", argv[1],
	       m.table.n, count, (double)loss, argv[2]);
	status = 0;
out:
	free(st);
	free(logits);
	batch_free(&b);
	m.lora = NULL;
	model_free(&m);
	lora_free(&lo);
	return status;
}
