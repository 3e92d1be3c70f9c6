/* test_generate.c - generation: the KV-cached forward against model_forward,
 * the decode attention kernel against its naive reference, and sampling
 * (distribution, filters, repetition penalty, log-probs, stops, seeds). */
#define _GNU_SOURCE /* memmem */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "generate.h"
#include "layers.h"
#include "model.h"
#include "random_model.h"
#include "rng.h"
#include "tokenizer.h"

static ModelConfig tiny(TrlArch arch, int V)
{
	ModelConfig mc = {0};
	mc.arch = arch;
	mc.vocab_size = V;
	mc.hidden_size = 16;
	mc.num_hidden_layers = 2;
	mc.num_attention_heads = 4;
	mc.num_key_value_heads = arch == TRL_ARCH_GPT2 ? 4 : 2; /* GQA for llama */
	mc.intermediate_size = 24;
	mc.max_position_embeddings = 32;
	mc.tie_word_embeddings = arch == TRL_ARCH_GPT2;
	mc.attention_bias = arch != TRL_ARCH_GPT2;
	mc.rope_theta = 10000.0f;
	mc.norm_eps = 1e-5f;
	mc.initializer_range = 0.3f;
	return mc;
}

/* Qwen3's shape: q/k RMSNorm per head, head_dim (8) != C / H (4), GQA. */
static ModelConfig tiny_qwen3(int V)
{
	ModelConfig mc = tiny(TRL_ARCH_LLAMA, V);
	mc.attention_bias = 0;
	mc.qk_norm = 1;
	mc.head_dim = 8;
	return mc;
}

/* LFM2: conv, attention, conv layers (kernel K, conv biases when asked). */
static ModelConfig tiny_lfm2(int V, int K, int bias)
{
	ModelConfig mc = tiny(TRL_ARCH_LLAMA, V);
	mc.arch = TRL_ARCH_LFM2;
	mc.attention_bias = 0;
	mc.num_hidden_layers = 3;
	mc.attn_layer[1] = 1;
	mc.conv_L_cache = K;
	mc.conv_bias = bias;
	return mc;
}

/* Random weights everywhere, norms and biases included. */
static void make_model_cfg(Model *m, ModelConfig mc, uint64_t seed)
{
	TrlErr err = {0};
	cr_assert_eq(model_init(m, &mc, &err), 0, "%s", err.msg);
	random_model_weights(m, seed);
}

static void make_model(Model *m, TrlArch arch, int V, uint64_t seed)
{
	make_model_cfg(m, tiny(arch, V), seed);
}

/* model_forward over B right-padded rows seq[b][0..len[b]); writes the logits
 * after each row's last token into out (B, V). */
static void reference_last_logits(Model *m, int32_t seq[][32], const int *len, int B,
                                  float *out)
{
	int T = 0, V = m->cfg.vocab_size;
	for (int b = 0; b < B; b++)
		T = len[b] > T ? len[b] : T;
	Batch bt;
	TrlErr err = {0};
	cr_assert_eq(batch_alloc(&bt, B, T, &err), 0);
	if (m->maxB < B || m->maxT < T)
		cr_assert_eq(model_alloc_activations(m, B, T, &err), 0, "%s", err.msg);
	for (int b = 0; b < B; b++)
		for (int t = 0; t < T; t++) {
			size_t i = (size_t)b * T + t;
			bt.ids[i] = t < len[b] ? seq[b][t] : 0;
			bt.pos[i] = t;
			bt.doc[i] = t < len[b] ? 0 : -1;
			bt.targets[i] = -1;
		}
	model_forward(m, &bt);
	for (int b = 0; b < B; b++)
		memcpy(out + (size_t)b * V, m->logits + ((size_t)b * T + len[b] - 1) * V,
		       (size_t)V * sizeof(float));
	batch_free(&bt);
}

static int argmax(const float *x, int n)
{
	int best = 0;
	for (int i = 1; i < n; i++)
		if (x[i] > x[best])
			best = i;
	return best;
}

/* Prefill three prompts of different lengths, then greedy decode: at every
 * step the cached logits match model_forward over the whole sequence, and
 * generate() with temperature 0 emits the same argmax tokens. */
static void check_cache_matches_forward(ModelConfig mc)
{
	const int B = 3, V = 40, steps = 6;
	Model m;
	make_model_cfg(&m, mc, 11);
	if (mc.qk_norm)
		cr_assert(m.w.layer[0].q_norm && m.w.layer[0].k_norm,
		          "qwen3 norms not wired");
	Generator g;
	TrlErr err = {0};
	cr_assert_eq(generator_init(&g, &m, B, 16, &err), 0, "%s", err.msg);

	int32_t seq[3][32] = {{3, 17, 5, 9, 1}, {22, 4}, {7, 7, 30, 2, 11, 38, 0}};
	int len[3] = {5, 2, 7}, rows[3] = {0, 1, 2}, ones[3] = {1, 1, 1};
	int32_t flat[14];
	int nf = 0;
	for (int b = 0; b < B; b++)
		for (int t = 0; t < len[b]; t++)
			flat[nf++] = seq[b][t];
	float ref[3 * 40];
	double maxdiff = 0.0;
	cr_assert_eq(generator_forward(&g, B, rows, len, flat, &err), 0, "%s", err.msg);
	for (int s = 0; s <= steps; s++) {
		reference_last_logits(&m, seq, len, B, ref);
		int32_t next[3];
		for (int b = 0; b < B; b++) {
			const float *got = g.logits + (size_t)b * V;
			for (int v = 0; v < V; v++) {
				double d = fabs(got[v] - ref[b * V + v]);
				maxdiff = d > maxdiff ? d : maxdiff;
			}
			next[b] = argmax(got, V);
			cr_assert_eq(next[b], argmax(ref + b * V, V),
			             "row %d step %d: cached argmax differs", b, s);
		}
		if (s == steps)
			break;
		for (int b = 0; b < B; b++)
			seq[b][len[b]++] = next[b];
		cr_assert_eq(generator_forward(&g, B, rows, ones, next, &err), 0, "%s",
		             err.msg);
	}
	cr_assert_lt(maxdiff, 1e-5, "cached logits differ from model_forward by %g",
	             maxdiff);

	/* generate() greedy reproduces the argmax continuation. */
	Tokenizer tok;
	tokenizer_init_bytes(&tok);
	GenConfig gc;
	gen_config_defaults(&gc);
	gc.temperature = 0.0f;
	gc.max_new_tokens = steps;
	int plen[3] = {5, 2, 7};
	const int32_t *prompts[3] = {seq[0], seq[1], seq[2]};
	GenOutput out[3];
	cr_assert_eq(generate(&g, &tok, &gc, prompts, plen, B, out, &err), 0, "%s",
	             err.msg);
	for (int b = 0; b < B; b++) {
		cr_assert_eq(out[b].n, steps);
		cr_assert_eq(out[b].finish, TRL_GEN_LENGTH);
		for (int s = 0; s < steps; s++)
			cr_assert_eq(out[b].ids[s], seq[b][plen[b] + s],
			             "row %d token %d differs", b, s);
	}
	gen_output_free(out, B);
	generator_free(&g);
	model_free(&m);
}

Test(generate, cached_llama_gqa_bias_matches_model_forward)
{
	check_cache_matches_forward(tiny(TRL_ARCH_LLAMA, 40));
}

Test(generate, cached_qwen3_qk_norm_head_dim_matches_model_forward)
{
	ModelConfig mc = tiny_qwen3(40);
	check_cache_matches_forward(mc);
}

/* The rolling conv state (the last K - 1 inputs) gives what the full
 * convolution over the sequence gives: the released kernel 3, a kernel longer
 * than every prompt (state older than the row), and kernel 1 (no state). */
Test(generate, cached_lfm2_conv_state_matches_model_forward)
{
	check_cache_matches_forward(tiny_lfm2(40, 3, 0));
	check_cache_matches_forward(tiny_lfm2(40, 9, 1));
	check_cache_matches_forward(tiny_lfm2(40, 1, 0));
}

Test(generate, cached_gpt2_matches_model_forward)
{
	check_cache_matches_forward(tiny(TRL_ARCH_GPT2, 40));
}

Test(generate, decode_attention_matches_naive)
{
	const int maxB = 3, maxT = 9, H = 6, KV = 2, D = 8, n = 4;
	size_t cache = (size_t)maxB * maxT * KV * D;
	float *kc = malloc(cache * sizeof(float)), *vc = malloc(cache * sizeof(float));
	float q[4 * 48], fast[4 * 48], slow[4 * 48], scratch[64 * 9];
	Rng r;
	rng_seed(&r, 5);
	for (size_t i = 0; i < cache; i++) {
		kc[i] = (float)rng_normal(&r);
		vc[i] = (float)rng_normal(&r);
	}
	for (int i = 0; i < n * H * D; i++)
		q[i] = (float)(2.0 * rng_normal(&r));
	int32_t rows[4] = {2, 0, 1, 0}, pos[4] = {8, 0, 4, 3};
	int threads = 4;
	gen_attention(fast, scratch, threads, q, kc, vc, rows, pos, n, maxT, H, KV, D);
	gen_attention_naive(slow, q, kc, vc, rows, pos, n, maxT, H, KV, D);
	for (int i = 0; i < n * H * D; i++)
		cr_assert_float_eq(fast[i], slow[i], 1e-5, "element %d: %g vs %g", i,
		                   fast[i], slow[i]);
	/* Position 0 attends only itself: the output is its value. */
	for (int h = 0; h < H; h++)
		for (int d = 0; d < D; d++)
			cr_assert_float_eq(fast[1 * H * D + h * D + d],
			                   vc[(h / (H / KV)) * D + d], 1e-6);
	free(kc);
	free(vc);
}

/* ---- sampling -------------------------------------------------------------- */

/* Draws n tokens from logits (V) under gc and counts them. */
static void draw(const float *logits, int V, const GenConfig *gc, int n, long *count)
{
	float lg[16];
	int32_t idx[16];
	Rng r;
	sampling_rng(&r, gc->seed, 0);
	memset(count, 0, (size_t)V * sizeof *count);
	for (int i = 0; i < n; i++) {
		memcpy(lg, logits, (size_t)V * sizeof(float));
		sampling_process(lg, V, gc, NULL, idx);
		count[sampling_pick(lg, V, gc, &r, NULL)]++;
	}
}

/* Pearson chi-square of counts against probabilities p over the tokens with
 * p > 0; tokens with p == 0 must never be drawn. */
static double chi_square(const long *count, const double *p, int V, int n, int *df)
{
	double chi = 0.0;
	*df = -1;
	for (int v = 0; v < V; v++) {
		if (p[v] == 0.0) {
			cr_assert_eq(count[v], 0, "filtered token %d was drawn %ld times",
			             v, count[v]);
			continue;
		}
		double e = n * p[v];
		chi += (count[v] - e) * (count[v] - e) / e;
		(*df)++;
	}
	return chi;
}

/* Chi-square critical values at p = 0.001 for df = 1..7: with a fixed seed the
 * test is deterministic, and a correct sampler fails it with probability
 * 1e-3 over seeds. A sampler using logits instead of logits / T fails by a
 * chi-square in the hundreds at n = 20000. */
static const double chi_crit[8] = {0, 10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32};

static void softmax_ref(const double *l, int V, double T, double *p)
{
	double mx = -HUGE_VAL, s = 0.0;
	for (int v = 0; v < V; v++)
		mx = l[v] > mx ? l[v] : mx;
	for (int v = 0; v < V; v++) {
		p[v] = isinf(l[v]) ? 0.0 : exp((l[v] - mx) / T);
		s += p[v];
	}
	for (int v = 0; v < V; v++)
		p[v] /= s;
}

Test(sampling, distribution_matches_softmax_over_temperature)
{
	const int V = 6, n = 20000;
	float logits[6] = {1.0f, 0.2f, -0.5f, 2.0f, 0.0f, -2.0f};
	double l[6], p[6];
	for (int v = 0; v < V; v++)
		l[v] = logits[v];
	GenConfig gc;
	gen_config_defaults(&gc);
	gc.temperature = 0.7f;
	gc.seed = 1;
	long count[6];
	draw(logits, V, &gc, n, count);
	softmax_ref(l, V, 0.7, p);
	int df;
	double chi = chi_square(count, p, V, n, &df);
	cr_assert_lt(chi, chi_crit[df], "chi-square %g with %d dof", chi, df);
	/* Max abs deviation: one standard deviation is at most 0.0036 here. */
	for (int v = 0; v < V; v++)
		cr_assert_lt(fabs((double)count[v] / n - p[v]), 0.015, "token %d", v);
}

Test(sampling, top_k_top_p_min_p_filter_and_renormalise)
{
	const int V = 7, n = 20000;
	/* probabilities 0.35 0.25 0.15 0.1 0.08 0.05 0.02 */
	double pr[7] = {0.35, 0.25, 0.15, 0.1, 0.08, 0.05, 0.02}, l[7], p[7];
	float logits[7];
	int perm[7] = {3, 0, 6, 1, 5, 2, 4}; /* shuffle so order does not matter */
	for (int i = 0; i < V; i++) {
		logits[perm[i]] = (float)log(pr[i]);
		l[perm[i]] = log(pr[i]);
	}
	struct {
		int top_k;
		float top_p, min_p;
		int keep; /* the kept tokens are the `keep` most likely */
	} cases[] = {
	    {3, 1.0f, 0.0f, 3},  /* top_k */
	    {0, 0.8f, 0.0f, 4},  /* mass before the 4th is 0.75 < 0.8, 5th 0.85 */
	    {0, 1.0f, 0.25f, 4}, /* keep p >= 0.0875 */
	    {5, 0.6f, 0.0f, 2},  /* top_k renormalises: (0.35+0.25)/0.93 >= 0.6 */
	    {0, 1.0f, 0.0f, 7},
	};
	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
		GenConfig gc;
		gen_config_defaults(&gc);
		gc.top_k = cases[c].top_k;
		gc.top_p = cases[c].top_p;
		gc.min_p = cases[c].min_p;
		gc.seed = 100 + c;
		double lk[7];
		for (int i = 0; i < V; i++)
			lk[perm[i]] = i < cases[c].keep ? l[perm[i]] : -INFINITY;
		softmax_ref(lk, V, 1.0, p);
		float lg[7];
		int32_t idx[7];
		memcpy(lg, logits, sizeof lg);
		sampling_process(lg, V, &gc, NULL, idx);
		for (int v = 0; v < V; v++)
			cr_assert_eq(isinf(lg[v]) != 0, p[v] == 0.0,
			             "case %zu token %d: filtered %d, expected %d", c, v,
			             isinf(lg[v]) != 0, p[v] == 0.0);
		long count[7];
		draw(logits, V, &gc, n, count);
		int df;
		double chi = chi_square(count, p, V, n, &df);
		cr_assert_lt(chi, chi_crit[df], "case %zu: chi-square %g with %d dof", c,
		             chi, df);
	}
}

Test(sampling, repetition_penalty_hf_semantics)
{
	float lg[5] = {0.8f, -1.0f, 0.5f, -3.0f, 0.0f};
	uint8_t seen[5] = {1, 1, 0, 0, 1};
	int32_t idx[5];
	GenConfig gc;
	gen_config_defaults(&gc);
	gc.repetition_penalty = 2.0f;
	sampling_process(lg, 5, &gc, seen, idx);
	float want[5] = {0.4f, -2.0f, 0.5f, -3.0f, 0.0f};
	for (int v = 0; v < 5; v++)
		cr_assert_float_eq(lg[v], want[v], 1e-7, "token %d", v);
	/* The penalty flips the greedy choice from token 0 to token 2, and the
	 * log-prob is that of the penalised distribution. */
	gc.temperature = 0.0f;
	float lp;
	cr_assert_eq(sampling_pick(lg, 5, &gc, NULL, &lp), 2);
	double s = 0.0;
	for (int v = 0; v < 5; v++)
		s += exp(want[v]);
	cr_assert_float_eq(lp, 0.5 - log(s), 1e-6);
}

/* The test's own processing of one logits row, written independently of
 * sampling_process: rank-based top_k, top_p by cumulative mass in rank order,
 * min_p by probability. */
static void process_ref(double *l, int V, const GenConfig *gc, const uint8_t *seen)
{
	for (int v = 0; v < V; v++) {
		if (seen[v])
			l[v] = l[v] > 0 ? l[v] / gc->repetition_penalty
			                : l[v] * gc->repetition_penalty;
		l[v] /= gc->temperature;
	}
	int rank[64];
	for (int v = 0; v < V; v++) {
		rank[v] = 0;
		for (int u = 0; u < V; u++)
			rank[v] += l[u] > l[v] || (l[u] == l[v] && u < v);
	}
	if (gc->top_k > 0)
		for (int v = 0; v < V; v++)
			if (rank[v] >= gc->top_k)
				l[v] = -INFINITY;
	double p[64];
	softmax_ref(l, V, 1.0, p);
	for (int v = 0; v < V; v++) {
		double before = 0.0;
		for (int u = 0; u < V; u++)
			if (rank[u] < rank[v])
				before += p[u];
		if (rank[v] > 0 && before >= gc->top_p)
			l[v] = -INFINITY;
	}
	softmax_ref(l, V, 1.0, p);
	double pmax = 0.0;
	for (int v = 0; v < V; v++)
		pmax = p[v] > pmax ? p[v] : pmax;
	for (int v = 0; v < V; v++)
		if (p[v] < gc->min_p * pmax)
			l[v] = -INFINITY;
}

/* Every returned log-prob is the log-softmax of the processed logits at the
 * chosen token, recomputed from model_forward over the sequence so far. */
Test(generate, logprobs_are_processed_log_softmax)
{
	const int B = 2, V = 40, new_tokens = 8;
	Model m;
	make_model(&m, TRL_ARCH_LLAMA, V, 3);
	Generator g;
	TrlErr err = {0};
	cr_assert_eq(generator_init(&g, &m, B, 20, &err), 0, "%s", err.msg);
	Tokenizer tok;
	tokenizer_init_bytes(&tok);
	GenConfig gc;
	gen_config_defaults(&gc);
	gc.temperature = 0.8f;
	gc.top_k = 12;
	gc.top_p = 0.9f;
	gc.min_p = 0.05f;
	gc.repetition_penalty = 1.3f;
	gc.max_new_tokens = new_tokens;
	gc.seed = 7;
	int32_t seq[2][32] = {{1, 2, 3, 4}, {30, 31, 9}};
	int plen[2] = {4, 3}, len[2] = {4, 3};
	const int32_t *prompts[2] = {seq[0], seq[1]};
	GenOutput out[2];
	cr_assert_eq(generate(&g, &tok, &gc, prompts, plen, B, out, &err), 0, "%s",
	             err.msg);
	float ref[2 * 40];
	for (int s = 0; s < new_tokens; s++) {
		reference_last_logits(&m, seq, len, B, ref);
		for (int b = 0; b < B; b++) {
			cr_assert_eq(out[b].n, new_tokens);
			uint8_t seen[40] = {0};
			for (int t = 0; t < len[b]; t++)
				seen[seq[b][t]] = 1;
			double l[40];
			for (int v = 0; v < V; v++)
				l[v] = ref[b * V + v];
			process_ref(l, V, &gc, seen);
			int32_t id = out[b].ids[s];
			cr_assert(!isinf(l[id]),
			          "row %d step %d: filtered token %d emitted", b, s, id);
			double mx = -HUGE_VAL, sum = 0.0;
			for (int v = 0; v < V; v++)
				mx = l[v] > mx ? l[v] : mx;
			for (int v = 0; v < V; v++)
				sum += isinf(l[v]) ? 0.0 : exp(l[v] - mx);
			double want = l[id] - mx - log(sum);
			cr_assert_float_eq(out[b].logprobs[s], want, 1e-4,
			                   "row %d step %d: logprob %g, expected %g", b,
			                   s, out[b].logprobs[s], want);
			seq[b][len[b]++] = id;
		}
	}
	gen_output_free(out, B);
	generator_free(&g);
	model_free(&m);
}

/* Runs generate on one gpt2 byte-vocabulary model with the given prompts. */
static void run(Generator *g, const GenConfig *gc, const int32_t *const *prompts,
                const int *plen, int B, GenOutput *out)
{
	Tokenizer tok;
	tokenizer_init_bytes(&tok);
	TrlErr err = {0};
	cr_assert_eq(generate(g, &tok, gc, prompts, plen, B, out, &err), 0, "%s",
	             err.msg);
}

Test(generate, stops_on_eos_and_stop_strings)
{
	Model m;
	make_model(&m, TRL_ARCH_GPT2, 258, 21);
	Generator g;
	TrlErr err = {0};
	cr_assert_eq(generator_init(&g, &m, 2, 32, &err), 0, "%s", err.msg);
	int32_t p0[3] = {'a', 'b', 'c'};
	const int32_t *prompts[1] = {p0};
	int plen[1] = {3};
	GenConfig gc;
	gen_config_defaults(&gc);
	gc.temperature = 0.9f;
	gc.seed = 5;
	gc.max_new_tokens = 12;
	GenOutput full[1], out[1];
	run(&g, &gc, prompts, plen, 1, full);
	cr_assert_eq(full[0].n, 12);
	for (int i = 0; i < 12; i++)
		cr_assert(full[0].ids[i] > 0 && full[0].ids[i] < 256,
		          "seed gives a non-text token %d; pick another seed",
		          full[0].ids[i]);
	cr_assert_eq(full[0].text_len, 12);

	/* EOS: the token at index 4 as the EOS id ends the row at its first
	 * occurrence, with the token included. */
	gc.eos_id = full[0].ids[4];
	int first = 0;
	while (full[0].ids[first] != gc.eos_id)
		first++;
	run(&g, &gc, prompts, plen, 1, out);
	cr_assert_eq(out[0].finish, TRL_GEN_EOS);
	cr_assert_eq(out[0].n, first + 1);
	cr_assert_eq(memcmp(out[0].ids, full[0].ids, (size_t)out[0].n * 4), 0);
	gen_output_free(out, 1);

	/* Stop string: two bytes of the completion; the row stops at the token
	 * completing its first occurrence and the text ends before it. */
	gc.eos_id = -1;
	char stop[3] = {full[0].text[6], full[0].text[7], 0};
	gc.stop[0] = "\x01\x02never";
	gc.stop[1] = stop;
	gc.n_stop = 2;
	const char *hit = memmem(full[0].text, full[0].text_len, stop, 2);
	size_t at = (size_t)(hit - full[0].text);
	run(&g, &gc, prompts, plen, 1, out);
	cr_assert_eq(out[0].finish, TRL_GEN_STOP);
	cr_assert_eq(out[0].n, (int)at + 2);
	cr_assert_eq(out[0].text_len, at);
	cr_assert_eq(memcmp(out[0].text, full[0].text, at), 0);
	cr_assert_eq(out[0].text[at], 0);
	gen_output_free(out, 1);
	gen_output_free(full, 1);

	/* A full cache row ends the row: 29 prompt tokens leave room for 3 more
	 * positions, so the 4th token is the last. */
	int32_t longp[29];
	for (int i = 0; i < 29; i++)
		longp[i] = 'a' + i % 26;
	const int32_t *lp[1] = {longp};
	int llen[1] = {29};
	gc.n_stop = 0;
	run(&g, &gc, lp, llen, 1, out);
	cr_assert_eq(out[0].n, 4);
	cr_assert_eq(out[0].finish, TRL_GEN_LENGTH);
	gen_output_free(out, 1);
	generator_free(&g);
	model_free(&m);
}

Test(generate, seeded_rows_reproduce_independently_of_the_batch)
{
	Model m;
	make_model(&m, TRL_ARCH_LLAMA, 40, 8);
	Generator g;
	TrlErr err = {0};
	cr_assert_eq(generator_init(&g, &m, 2, 24, &err), 0, "%s", err.msg);
	int32_t p0[4] = {1, 5, 9, 2}, p1[2] = {33, 4}, p2[7] = {8, 8, 8, 1, 2, 3, 4};
	const int32_t *a[2] = {p0, p1}, *b[2] = {p0, p2};
	int la[2] = {4, 2}, lb[2] = {4, 7};
	GenConfig gc;
	gen_config_defaults(&gc);
	gc.temperature = 1.0f;
	gc.max_new_tokens = 12;
	gc.seed = 42;
	GenOutput o1[2], o2[2], o3[2], o4[2];
	run(&g, &gc, a, la, 2, o1);
	run(&g, &gc, a, la, 2, o2);
	run(&g, &gc, b, lb, 2, o3);
	gc.seed = 43;
	run(&g, &gc, a, la, 2, o4);
	for (int r = 0; r < 2; r++)
		cr_assert_eq(memcmp(o1[r].ids, o2[r].ids, 12 * 4), 0, "row %d", r);
	cr_assert_eq(memcmp(o1[0].ids, o3[0].ids, 12 * 4), 0,
	             "row 0 changed with its batch neighbour");
	cr_assert_neq(memcmp(o1[0].ids, o4[0].ids, 12 * 4), 0,
	              "another seed gave the same 12 tokens");
	gen_output_free(o1, 2);
	gen_output_free(o2, 2);
	gen_output_free(o3, 2);
	gen_output_free(o4, 2);
	generator_free(&g);
	model_free(&m);
}

Test(generate, rejects_bad_arguments)
{
	Model m;
	make_model(&m, TRL_ARCH_GPT2, 40, 1);
	Generator g;
	TrlErr err = {0};
	cr_assert_lt(generator_init(&g, &m, 1, 64, &err), 0, "maxT beyond positions");
	cr_assert(strstr(err.msg, "max_position_embeddings"));
	cr_assert_eq(generator_init(&g, &m, 1, 8, &err), 0, "%s", err.msg);
	int32_t p[2] = {1, 45};
	const int32_t *pr[1] = {p};
	int len[1] = {2};
	GenConfig gc;
	gen_config_defaults(&gc);
	GenOutput out[1];
	Tokenizer tok;
	tokenizer_init_bytes(&tok);
	cr_assert_lt(generate(&g, &tok, &gc, pr, len, 1, out, &err), 0);
	cr_assert(strstr(err.msg, "outside the model's vocabulary"), "%s", err.msg);
	p[1] = 3;
	gc.top_p = 0.0f;
	cr_assert_lt(generate(&g, &tok, &gc, pr, len, 1, out, &err), 0);
	cr_assert(strstr(err.msg, "top_p"), "%s", err.msg);
	generator_free(&g);
	model_free(&m);
}

/* The small-batch kernel and the sgemm path both match the naive matmul, in
 * both weight layouts, with and without bias, overwriting and accumulating. */
Test(generate, gen_matmul_matches_naive)
{
	const int IC = 37, OC = 150;
	int Ns[3] = {1, TRL_GEN_GEMV_MAX_ROWS, TRL_GEN_GEMV_MAX_ROWS + 3};
	float *w = malloc((size_t)IC * OC * sizeof(float)), bias[150];
	cr_assert_leq(TRL_GEN_GEMV_MAX_ROWS + 3, 19);
	float in[19 * 37], got[19 * 150], want[19 * 150], base[19 * 150];
	Rng r;
	rng_seed(&r, 9);
	for (int i = 0; i < IC * OC; i++)
		w[i] = (float)rng_normal(&r);
	for (int i = 0; i < OC; i++)
		bias[i] = (float)rng_normal(&r);
	for (int i = 0; i < 19 * IC; i++)
		in[i] = (float)rng_normal(&r);
	for (int i = 0; i < 19 * OC; i++)
		base[i] = (float)rng_normal(&r);
	for (int c = 0; c < 3; c++)
		for (int layout = 0; layout < 2; layout++)
			for (int acc = 0; acc < 2; acc++) {
				int N = Ns[c];
				const float *b = acc ? bias : NULL;
				memcpy(got, base, sizeof got);
				gen_matmul(got, in, w, b, N, IC, OC, (TrlWLayout)layout,
				           acc);
				matmul_forward_naive(want, in, w, b, N, IC, OC,
				                     (TrlWLayout)layout);
				for (int i = 0; i < N * OC; i++) {
					float e = want[i] + (acc ? base[i] : 0.0f);
					cr_assert_float_eq(
					    got[i], e, 1e-4,
					    "N %d layout %d acc %d i %d: %g vs %g", N,
					    layout, acc, i, got[i], e);
				}
			}
	free(w);
}
