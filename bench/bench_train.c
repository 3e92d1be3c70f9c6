/* bench_train.c - times one full trl-hpc training step (forward, loss,
 * backward, gradient norm, AdamW) on a GPT-2 shape; prints figures, never a
 * verdict.
 *
 * Usage: bench_train CONFIG [--steps N] [--warmup N] [--seed S]
 *     CONFIG  gpt2-124M  L=12 H=12 C=768 V=50257 P=1024, B=4 T=256
 *             tiny       L=4  H=4  C=256 V=8192  P=1024, B=8 T=128
 *             tiny-long  the same at one row of T=2048 (attention-bound)
 * Threads come from OMP_NUM_THREADS. Tokens are random (seeded) with
 * next-token targets and no padding. Prints one line,
 *     trl-hpc CONFIG ms_per_step=... tokens_per_s=... gflops=... threads=... steps=...
 * with GFLOP/s from model_flops_per_token; bench/torch_train.py prints the
 * same line for PyTorch and bench/bench_train.sh puts the two side by side.
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers.h"
#include "model.h"
#include "optim.h"
#include "rng.h"
#include "trl.h"

typedef struct BenchShape {
	const char *name;
	int L, H, C, V, P, B, T, steps;
} BenchShape;

static const BenchShape shapes[] = {
    {"gpt2-124M", 12, 12, 768, 50257, 1024, 4, 256, 5},
    {"tiny", 4, 4, 256, 8192, 1024, 8, 128, 10},
    {"tiny-long", 4, 4, 256, 8192, 2048, 1, 2048, 4},
};

static void usage(FILE *f, const char *prog)
{
	fprintf(f,
	        "usage: %s gpt2-124M|tiny|tiny-long [--steps N] [--warmup N] [--seed S]\n"
	        "Times full training steps; threads from OMP_NUM_THREADS.\n",
	        prog);
}

/* zero grads, forward, loss, backward, gradient norm clipped at 1, AdamW.
 * Returns the mean loss of the step. */
static double train_step(Model *m, AdamW *opt, const Batch *b)
{
	const int N = b->B * b->T, V = m->cfg.vocab_size;
	memset(m->grads, 0, m->table.total * sizeof(float));
	model_forward(m, b);
	long count = 0;
	double loss = crossentropy_forward_backward(m->logits, b->targets, N, V,
	                                            1.0f / (float)N, &count, NULL);
	model_backward(m, b);
	double norm = sqrt(grad_sumsq(m->grads, m->table.total));
	if (norm > 1.0)
		grad_scale(m->grads, m->table.total, (float)(1.0 / (norm + 1e-6)));
	adamw_step(opt, m->params, m->grads, 3e-4);
	return loss / (double)(count ? count : 1);
}

int main(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		usage(argc < 2 ? stderr : stdout, argv[0]);
		return argc < 2 ? 2 : 0;
	}
	const BenchShape *s = NULL;
	for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
		if (strcmp(argv[1], shapes[i].name) == 0)
			s = &shapes[i];
	if (!s) {
		fprintf(
		    stderr,
		    "bench_train: unknown config '%s' (gpt2-124M, tiny or tiny-long)\n",
		    argv[1]);
		return 2;
	}
	int steps = s->steps, warmup = 2;
	unsigned long long seed = 1234;
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		if (i + 1 >= argc || (strcmp(a, "--steps") && strcmp(a, "--warmup") &&
		                      strcmp(a, "--seed"))) {
			fprintf(stderr,
			        "bench_train: unknown or incomplete option '%s'\n", a);
			usage(stderr, argv[0]);
			return 2;
		}
		char *end;
		long long v = strtoll(argv[++i], &end, 10);
		if (*end || v < 0) {
			fprintf(
			    stderr,
			    "bench_train: %s needs a non-negative integer, got '%s'\n", a,
			    argv[i]);
			return 2;
		}
		if (strcmp(a, "--steps") == 0)
			steps = (int)v;
		else if (strcmp(a, "--warmup") == 0)
			warmup = (int)v;
		else
			seed = (unsigned long long)v;
	}

	ModelConfig mc = {0};
	mc.arch = TRL_ARCH_GPT2;
	mc.vocab_size = s->V;
	mc.hidden_size = s->C;
	mc.num_hidden_layers = s->L;
	mc.num_attention_heads = s->H;
	mc.intermediate_size = 4 * s->C;
	mc.max_position_embeddings = s->P;
	mc.tie_word_embeddings = 1;
	mc.rope_theta = 10000.0f;
	mc.norm_eps = 1e-5f;
	mc.initializer_range = 0.02f;

	TrlErr err = {0};
	Model m;
	AdamW opt = {0};
	Batch b = {0};
	int status = 1;
	if (model_init(&m, &mc, &err)) {
		fprintf(stderr, "bench_train: %s\n", err.msg);
		return 1;
	}
	if (model_alloc_activations(&m, s->B, s->T, &err) ||
	    batch_alloc(&b, s->B, s->T, &err) ||
	    adamw_init(&opt, &m.table, 0, m.table.total, 0.9, 0.999, 1e-8, 0.01, 0,
	               &err)) {
		fprintf(stderr, "bench_train: %s\n", err.msg);
		goto out;
	}
	model_init_weights(&m, seed);

	Rng r;
	rng_seed(&r, seed);
	for (int row = 0; row < s->B; row++) {
		int32_t *ids = b.ids + row * s->T, *tgt = b.targets + row * s->T;
		int32_t next = (int32_t)rng_below(&r, (uint64_t)s->V);
		for (int t = 0; t < s->T; t++) {
			ids[t] = next;
			next = (int32_t)rng_below(&r, (uint64_t)s->V);
			tgt[t] = next;
			b.pos[row * s->T + t] = t;
			b.doc[row * s->T + t] = 0;
		}
	}

	for (int i = 0; i < warmup; i++)
		train_step(&m, &opt, &b);
	double loss = 0.0, t0 = trl_now();
	for (int i = 0; i < steps; i++)
		loss = train_step(&m, &opt, &b);
	double dt = (trl_now() - t0) / (steps > 0 ? steps : 1);
	double tok_s = (double)s->B * s->T / dt;
	double gflops = model_flops_per_token(&m.cfg, s->T) * tok_s / 1e9;
	printf("trl-hpc %s ms_per_step=%.1f tokens_per_s=%.1f gflops=%.2f threads=%d "
	       "steps=%d loss=%.4f\n",
	       s->name, dt * 1e3, tok_s, gflops, omp_get_max_threads(), steps, loss);
	status = 0;
out:
	adamw_free(&opt);
	batch_free(&b);
	model_free(&m);
	return status;
}
