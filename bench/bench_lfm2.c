/* bench_lfm2.c - times one trl-hpc training step of an LFM2 model, full
 * fine-tuning or LoRA on a frozen base; prints figures, never a verdict.
 *
 * Usage: bench_lfm2 CONFIG MODE [--steps N] [--warmup N] [--seed S]
 *     CONFIG  lfm2-tiny   L=6 [c c a c c a]       C=256 H=4 KV=2 I=768  V=8192,
 *                         B=8 T=128
 *             lfm2-small  L=8 [c c a c c a c a]   C=512 H=8 KV=2 I=1536 V=16384,
 *                         B=4 T=256
 *             (c: gated short convolution, kernel 3; a: GQA attention)
 *     MODE    full      every parameter trained
 *             lora      adapters r=16 alpha=32 dropout=0.05 on q_proj, k_proj,
 *                       v_proj, out_proj (PEFT's matching: out_proj names both
 *                       self_attn.out_proj and conv.out_proj)
 *             lora-all  the same on all-linear
 * Threads come from OMP_NUM_THREADS. Tokens are random (seeded) with
 * next-token targets and no padding. A step is: zero grads, forward,
 * cross-entropy, backward, gradient norm clipped at 1, AdamW (lr 3e-4,
 * weight decay 0.01). Prints one line,
 *     trl-hpc CONFIG MODE ms_per_step=... tokens_per_s=... threads=... steps=...
 *     loss0=... loss=... trainable=...
 * with loss0 the loss of the first step run (about ln V for a fresh model).
 * bench/torch_lfm2.py prints the same line for PyTorch and
 * bench/bench_lfm2.sh puts the two side by side.
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers.h"
#include "lora.h"
#include "model.h"
#include "optim.h"
#include "rng.h"
#include "trl.h"

typedef struct BenchShape {
	const char *name;
	int L, C, H, KV, I, V, B, T, steps;
	const char *layers; /* one letter per layer: 'a' attention, 'c' conv */
} BenchShape;

static const BenchShape shapes[] = {
    {"lfm2-tiny", 6, 256, 4, 2, 768, 8192, 8, 128, 10, "ccacca"},
    {"lfm2-small", 8, 512, 8, 2, 1536, 16384, 4, 256, 5, "ccaccaca"},
};

typedef enum { MODE_FULL, MODE_LORA, MODE_LORA_ALL } BenchMode;

static const char *const mode_names[] = {"full", "lora", "lora-all"};

static void usage(FILE *f, const char *prog)
{
	fprintf(f,
	        "usage: %s lfm2-tiny|lfm2-small full|lora|lora-all [--steps N] "
	        "[--warmup N] [--seed S]\n"
	        "Times LFM2 training steps; threads from OMP_NUM_THREADS.\n",
	        prog);
}

/* What a step updates: the whole model (full) or the adapters alone, run
 * through the frozen base the adapters are attached to. */
typedef struct Trainee {
	Model *base;  /* runs forward and backward */
	Model *train; /* holds the trained params and grads (base or lo->ad) */
} Trainee;

/* zero grads, forward, loss, backward, gradient norm clipped at 1, AdamW.
 * Returns the mean loss of the step. */
static double train_step(const Trainee *tr, AdamW *opt, const Batch *b)
{
	Model *m = tr->base, *t = tr->train;
	const int N = b->B * b->T, V = m->cfg.vocab_size;
	memset(t->grads, 0, t->table.total * sizeof(float));
	model_forward(m, b);
	long count = 0;
	double loss = crossentropy_forward_backward(m->logits, b->targets, N, V,
	                                            1.0f / (float)N, &count, NULL);
	model_backward(m, b);
	double norm = sqrt(grad_sumsq(t->grads, t->table.total));
	if (norm > 1.0)
		grad_scale(t->grads, t->table.total, (float)(1.0 / (norm + 1e-6)));
	adamw_step(opt, t->params, t->grads, 3e-4);
	return loss / (double)(count ? count : 1);
}

static int parse_args(int argc, char **argv, const BenchShape **shape, BenchMode *mode,
                      int *steps, int *warmup, unsigned long long *seed)
{
	*shape = NULL;
	for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
		if (strcmp(argv[1], shapes[i].name) == 0)
			*shape = &shapes[i];
	if (!*shape) {
		fprintf(stderr,
		        "bench_lfm2: unknown config '%s' (lfm2-tiny or lfm2-small)\n",
		        argv[1]);
		return 2;
	}
	int found = 0;
	for (int i = 0; i < 3; i++)
		if (strcmp(argv[2], mode_names[i]) == 0) {
			*mode = (BenchMode)i;
			found = 1;
		}
	if (!found) {
		fprintf(stderr,
		        "bench_lfm2: unknown mode '%s' (full, lora or lora-all)\n",
		        argv[2]);
		return 2;
	}
	*steps = (*shape)->steps;
	for (int i = 3; i < argc; i++) {
		const char *a = argv[i];
		if (i + 1 >= argc || (strcmp(a, "--steps") && strcmp(a, "--warmup") &&
		                      strcmp(a, "--seed"))) {
			fprintf(stderr, "bench_lfm2: unknown or incomplete option '%s'\n",
			        a);
			usage(stderr, argv[0]);
			return 2;
		}
		char *end;
		long long v = strtoll(argv[++i], &end, 10);
		if (*end || v < 0) {
			fprintf(stderr,
			        "bench_lfm2: %s needs a non-negative integer, got '%s'\n",
			        a, argv[i]);
			return 2;
		}
		if (strcmp(a, "--steps") == 0)
			*steps = (int)v;
		else if (strcmp(a, "--warmup") == 0)
			*warmup = (int)v;
		else
			*seed = (unsigned long long)v;
	}
	return 0;
}

static void fill_batch(Batch *b, const BenchShape *s, unsigned long long seed)
{
	Rng r;
	rng_seed(&r, seed);
	for (int row = 0; row < s->B; row++) {
		int32_t *ids = b->ids + row * s->T, *tgt = b->targets + row * s->T;
		int32_t next = (int32_t)rng_below(&r, (uint64_t)s->V);
		for (int t = 0; t < s->T; t++) {
			ids[t] = next;
			next = (int32_t)rng_below(&r, (uint64_t)s->V);
			tgt[t] = next;
			b->pos[row * s->T + t] = t;
			b->doc[row * s->T + t] = 0;
		}
	}
}

int main(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		usage(argc < 2 ? stderr : stdout, argv[0]);
		return argc < 2 ? 2 : 0;
	}
	if (argc < 3) {
		usage(stderr, argv[0]);
		return 2;
	}
	const BenchShape *s;
	BenchMode mode = MODE_FULL;
	int steps, warmup = 2;
	unsigned long long seed = 1234;
	int rc = parse_args(argc, argv, &s, &mode, &steps, &warmup, &seed);
	if (rc)
		return rc;

	ModelConfig mc = {0};
	mc.arch = TRL_ARCH_LFM2;
	mc.vocab_size = s->V;
	mc.hidden_size = s->C;
	mc.num_hidden_layers = s->L;
	mc.num_attention_heads = s->H;
	mc.num_key_value_heads = s->KV;
	mc.head_dim = s->C / s->H;
	mc.intermediate_size = s->I;
	mc.max_position_embeddings = 4096;
	mc.tie_word_embeddings = 1;
	mc.conv_L_cache = 3;
	mc.conv_bias = 0;
	for (int l = 0; l < s->L; l++)
		mc.attn_layer[l] = s->layers[l] == 'a';
	mc.rope_theta = 1000000.0f;
	mc.norm_eps = 1e-5f;
	mc.initializer_range = 0.02f;

	TrlErr err = {0};
	Model m = {0};
	Lora lo = {0};
	AdamW opt = {0};
	Batch b = {0};
	Trainee tr = {&m, &m};
	int status = 1;
	if (model_init_flags(&m, &mc, mode == MODE_FULL ? 0 : MODEL_FROZEN, &err))
		goto fail;
	model_init_weights(&m, seed);
	if (mode != MODE_FULL) {
		LoraSpec spec;
		lora_spec_defaults(&spec);
		spec.r = 16;
		spec.alpha = 32;
		spec.dropout = 0.05f;
		snprintf(spec.targets, sizeof spec.targets, "%s",
		         mode == MODE_LORA ? "q_proj,k_proj,v_proj,out_proj"
		                           : "all-linear");
		if (lora_init(&lo, &m, &spec, 0, seed, NULL, 0, &err))
			goto fail;
		lora_attach(&m, &lo);
		lo.train = 1;
		tr.train = &lo.ad;
	}
	if (model_alloc_activations(&m, s->B, s->T, &err) ||
	    batch_alloc(&b, s->B, s->T, &err) ||
	    adamw_init(&opt, &tr.train->table, 0, tr.train->table.total, 0.9, 0.999, 1e-8,
	               0.01, 0, &err))
		goto fail;
	fill_batch(&b, s, seed);

	double loss0 = NAN, loss = NAN;
	for (int i = 0; i < warmup; i++) {
		loss = train_step(&tr, &opt, &b);
		if (i == 0)
			loss0 = loss;
	}
	double t0 = trl_now();
	for (int i = 0; i < steps; i++) {
		loss = train_step(&tr, &opt, &b);
		if (warmup == 0 && i == 0)
			loss0 = loss;
	}
	double dt = (trl_now() - t0) / (steps > 0 ? steps : 1);
	double tok_s = (double)s->B * s->T / dt;
	size_t trainable = 0;
	for (int i = 0; i < tr.train->table.n; i++)
		trainable += tr.train->table.p[i].numel;
	printf("trl-hpc %s %s ms_per_step=%.1f tokens_per_s=%.1f threads=%d steps=%d "
	       "loss0=%.4f loss=%.4f trainable=%zu adapted=%d\n",
	       s->name, mode_names[mode], dt * 1e3, tok_s, omp_get_max_threads(), steps,
	       loss0, loss, trainable, mode == MODE_FULL ? 0 : lo.n_adapted);
	status = 0;
	goto out;
fail:
	fprintf(stderr, "bench_lfm2: %s\n", err.msg);
out:
	adamw_free(&opt);
	batch_free(&b);
	m.lora = NULL;
	lora_free(&lo);
	model_free(&m);
	return status;
}
