/* bench_generate.c - times trl-hpc's KV-cached greedy decoding on a GPT-2
 * shape with random weights; prints figures, never a verdict.
 *
 * Usage: bench_generate CONFIG [--batch B] [--prompt_len P] [--new_tokens N]
 *                       [--seed S] [--save DIR]
 *     CONFIG  gpt2-124M  L=12 H=12 C=768 V=50257 P=1024
 *             tiny       L=4  H=4  C=256 V=8192  P=1024
 * Defaults: batch 1, prompt_len 32, new_tokens 64, seed 1234. Threads come
 * from OMP_NUM_THREADS. Every row gets a random (seeded) prompt of prompt_len
 * tokens; decoding is greedy with no EOS, so every row makes new_tokens
 * tokens. The time of prefill plus the first token (a run with one new token)
 * is subtracted from a full run, leaving the decode steps. With --save the
 * weights go to DIR (model_save_dir) and the prompts to DIR/prompts.txt, one
 * row of ids per line, for bench/torch_generate.py. Prints one line,
 *     trl-hpc CONFIG batch=B prefill_ms=... decode_ms_per_step=...
 *         decode_tokens_per_s=... threads=... checksum=... first=ID,ID,...
 * where checksum sums (i+1)*id over every generated token of every row, so a
 * decoder that agrees token for token prints the same value.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "generate.h"
#include "model.h"
#include "model_io.h"
#include "rng.h"
#include "trl.h"

typedef struct BenchShape {
	const char *name;
	int L, H, C, V, P;
} BenchShape;

static const BenchShape shapes[] = {
    {"gpt2-124M", 12, 12, 768, 50257, 1024},
    {"tiny", 4, 4, 256, 8192, 1024},
};

static void usage(FILE *f, const char *prog)
{
	fprintf(f,
	        "usage: %s gpt2-124M|tiny [--batch B] [--prompt_len P] "
	        "[--new_tokens N] [--seed S] [--save DIR]\n"
	        "Times greedy KV-cached decoding; threads from OMP_NUM_THREADS.\n",
	        prog);
}

static int save_prompts(const char *dir, int32_t *const *prompts, int B, int P,
                        TrlErr *err)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/prompts.txt", dir);
	FILE *f = fopen(path, "w");
	if (!f)
		return trl_errf(err, TRL_EIO, "%s: cannot write", path);
	for (int b = 0; b < B; b++)
		for (int t = 0; t < P; t++)
			fprintf(f, "%d%c", (int)prompts[b][t], t + 1 < P ? ' ' : '\n');
	if (fclose(f))
		return trl_errf(err, TRL_EIO, "%s: write failed", path);
	return TRL_OK;
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
		fprintf(stderr,
		        "bench_generate: unknown config '%s' (gpt2-124M or tiny)\n",
		        argv[1]);
		return 2;
	}
	int B = 1, P = 32, N = 64;
	unsigned long long seed = 1234;
	const char *save = NULL;
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		if (i + 1 >= argc) {
			fprintf(stderr, "bench_generate: %s needs a value\n", a);
			return 2;
		}
		if (strcmp(a, "--save") == 0) {
			save = argv[++i];
			continue;
		}
		char *end;
		long long v = strtoll(argv[++i], &end, 10);
		if (*end || v < 1) {
			fprintf(stderr,
			        "bench_generate: %s needs a positive integer, got '%s'\n",
			        a, argv[i]);
			return 2;
		}
		if (strcmp(a, "--batch") == 0)
			B = (int)v;
		else if (strcmp(a, "--prompt_len") == 0)
			P = (int)v;
		else if (strcmp(a, "--new_tokens") == 0)
			N = (int)v;
		else if (strcmp(a, "--seed") == 0)
			seed = (unsigned long long)v;
		else {
			fprintf(stderr, "bench_generate: unknown option '%s'\n", a);
			usage(stderr, argv[0]);
			return 2;
		}
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
	Generator g;
	Tokenizer tok;
	GenOutput *out = calloc((size_t)B, sizeof *out);
	int32_t **prompts = calloc((size_t)B, sizeof *prompts);
	int *plen = calloc((size_t)B, sizeof *plen);
	int status = 1;
	memset(&g, 0, sizeof g);
	tokenizer_init_bytes(&tok);
	if (model_init(&m, &mc, &err)) {
		fprintf(stderr, "bench_generate: %s\n", err.msg);
		return 1;
	}
	if (!out || !prompts || !plen) {
		fprintf(stderr, "bench_generate: out of memory\n");
		goto done;
	}
	model_init_weights(&m, seed);
	Rng r;
	rng_seed(&r, seed + 1);
	for (int b = 0; b < B; b++) {
		prompts[b] = malloc((size_t)P * sizeof(int32_t));
		if (!prompts[b]) {
			fprintf(stderr, "bench_generate: out of memory\n");
			goto done;
		}
		plen[b] = P;
		for (int t = 0; t < P; t++)
			prompts[b][t] = (int32_t)rng_below(&r, (uint64_t)s->V);
	}
	if (save && (trl_mkdirs(save, &err) || model_save_dir(&m, save, &err) ||
	             save_prompts(save, prompts, B, P, &err))) {
		fprintf(stderr, "bench_generate: %s\n", err.msg);
		goto done;
	}
	if (generator_init(&g, &m, B, P + N, &err)) {
		fprintf(stderr, "bench_generate: %s\n", err.msg);
		goto done;
	}
	GenConfig gc;
	gen_config_defaults(&gc);
	gc.temperature = 0.0f;
	const int32_t *const *pp = (const int32_t *const *)prompts;

	/* Warm-up, then the prefill-plus-one-token time, then the full run. */
	gc.max_new_tokens = N < 8 ? N : 8;
	if (generate(&g, &tok, &gc, pp, plen, B, out, &err))
		goto fail;
	gen_output_free(out, B);
	gc.max_new_tokens = 1;
	double t0 = trl_now();
	if (generate(&g, &tok, &gc, pp, plen, B, out, &err))
		goto fail;
	double t_prefill = trl_now() - t0;
	gen_output_free(out, B);
	gc.max_new_tokens = N;
	t0 = trl_now();
	if (generate(&g, &tok, &gc, pp, plen, B, out, &err))
		goto fail;
	double t_all = trl_now() - t0;
	double decode = t_all - t_prefill;
	int steps = N - 1 > 0 ? N - 1 : 1;
	unsigned long long checksum = 0;
	for (int b = 0; b < B; b++)
		for (int i = 0; i < out[b].n; i++)
			checksum += (unsigned long long)(i + 1) *
			            (unsigned long long)out[b].ids[i];
	printf("trl-hpc %s batch=%d prefill_ms=%.2f decode_ms_per_step=%.3f "
	       "decode_tokens_per_s=%.1f threads=%d checksum=%llu first=",
	       s->name, B, t_prefill * 1e3, decode / steps * 1e3,
	       (double)B * steps / decode, omp_get_max_threads(), checksum);
	for (int i = 0; i < out[0].n && i < 8; i++)
		printf("%s%d", i ? "," : "", (int)out[0].ids[i]);
	printf("\n");
	status = 0;
	goto done;
fail:
	fprintf(stderr, "bench_generate: %s\n", err.msg);
done:
	if (out)
		gen_output_free(out, B);
	for (int b = 0; prompts && b < B; b++)
		free(prompts[b]);
	free(prompts);
	free(plen);
	free(out);
	generator_free(&g);
	model_free(&m);
	return status;
}
