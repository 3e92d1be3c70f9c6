/* train_eval.c - evaluation on the test split: loss, token accuracy and the
 * exact-match accuracy of greedy answers. */
#include "trainer.h"

#include <string.h>

#include "layers.h"

/* ---- evaluation -------------------------------------------------------------- */

typedef struct EvalResult {
	double loss, accuracy, exact_match;
	long tokens, n_exact;
} EvalResult;

/* A forward on one padding token. Under stage 3 every forward gathers
 * parameters collectively, so a rank that has run out of evaluation rows
 * still runs one forward for each that another rank runs. */
void train_dummy_forward(Trainer *tr)
{
	Batch *b = &tr->eval;
	b->B = b->T = 1;
	b->ids[0] = tr->tok.pad_id;
	b->pos[0] = b->doc[0] = 0;
	b->targets[0] = -1;
	model_forward(&tr->model, b);
}

static void eval_loss(Trainer *tr, EvalResult *r)
{
	const Comm *c = tr->comm;
	int Be = tr->cfg->per_device_eval_batch_size;
	double sums[1] = {0};
	long counts[2] = {0, 0};
	int n = tr->test_rows.n;
	if (tr->cfg->eval_max_samples > 0 && tr->cfg->eval_max_samples < n)
		n = tr->cfg->eval_max_samples;
	/* Rank r takes the chunks r, r + size, ...; every chunk is one batch. */
	long rounds = ((long)n + (long)c->size * Be - 1) / ((long)c->size * Be);
	for (long i = 0; i < rounds; i++) {
		int first = (int)((i * c->size + c->rank) * Be);
		if (first >= n) {
			if (tr->sync_forwards)
				train_dummy_forward(tr);
			continue;
		}
		int k = n - first < Be ? n - first : Be;
		for (int i = 0; i < k; i++)
			tr->idx[i] = first + i;
		batch_fill(&tr->eval, &tr->test, &tr->test_rows, tr->idx, k,
		           tr->tok.pad_id);
		model_forward(&tr->model, &tr->eval);
		sums[0] += crossentropy_forward_backward(
		    tr->model.logits, tr->eval.targets, tr->eval.B * tr->eval.T,
		    tr->model.cfg.vocab_size, 0.0f, &counts[0], &counts[1]);
	}
	comm_sum_double(c, sums, 1);
	comm_sum_long(c, counts, 2);
	r->tokens = counts[0];
	r->loss = counts[0] ? sums[0] / counts[0] : 0.0;
	r->accuracy = counts[0] ? (double)counts[1] / counts[0] : 0.0;
}

/* Greedy answers for the prompts of the k examples ex[0..k): the batch holds
 * every prompt right-padded; each step reads the logits at each row's last
 * real position. A row's answer is exact when the tokens generated before EOS
 * equal the reference completion (without its EOS). While an answer matches,
 * the tokens generated so far are the reference's own, so the rows are read
 * from the example; generation stops at the first wrong token. */
static long eval_exact_batch(Trainer *tr, const int *ex, int k)
{
	const Dataset *d = &tr->test;
	Batch *b = &tr->eval;
	int maxnew = tr->cfg->eval_max_new_tokens, V = tr->model.cfg.vocab_size;
	int *len = tr->gen_len, *done = tr->gen_done, *match = tr->gen_match;
	int T = 1;
	for (int i = 0; i < k; i++) {
		len[i] = d->ex[ex[i]].prompt_len; /* >= 1: empty prompts are not asked */
		done[i] = 0;
		match[i] = 1;
		T = len[i] > T ? len[i] : T;
	}
	for (int step = 0; step <= maxnew; step++) {
		int live = 0, any;
		for (int i = 0; i < k; i++)
			live += !done[i];
		any = live;
		if (tr->sync_forwards)
			MPI_Allreduce(&live, &any, 1, MPI_INT, MPI_MAX, tr->comm->world);
		if (!any)
			break;
		if (!live) {
			train_dummy_forward(tr);
			continue;
		}
		b->B = k;
		b->T = T;
		for (int i = 0; i < k; i++) {
			const Example *e = &d->ex[ex[i]];
			for (int t = 0; t < T; t++) {
				size_t o = (size_t)i * T + t;
				int real = t < len[i];
				b->ids[o] = real ? e->ids[t] : tr->tok.pad_id;
				b->pos[o] = t;
				b->doc[o] = real ? 0 : -1;
				b->targets[o] = -1;
			}
		}
		model_forward(&tr->model, b);
		int grow = 0;
		for (int i = 0; i < k; i++) {
			if (done[i])
				continue;
			const Example *e = &d->ex[ex[i]];
			const float *l =
			    tr->model.logits + ((size_t)i * T + len[i] - 1) * V;
			int am = 0;
			for (int v = 1; v < V; v++)
				if (l[v] > l[am])
					am = v;
			int ref_len = e->len - e->prompt_len;
			if (ref_len > 0 && e->ids[e->len - 1] == tr->tok.eos_id)
				ref_len--;
			int pos = len[i] - e->prompt_len; /* tokens generated so far */
			if (am == tr->tok.eos_id) {
				match[i] = pos == ref_len;
				done[i] = 1;
			} else if (pos >= ref_len || am != e->ids[e->prompt_len + pos] ||
			           step == maxnew) {
				match[i] =
				    0; /* longer than, or differs from, the answer */
				done[i] = 1;
			} else {
				len[i]++;
				grow |= len[i] > T;
			}
		}
		if (grow)
			T++;
	}
	long n = 0;
	for (int i = 0; i < k; i++)
		n += match[i] && done[i];
	return n;
}

static void eval_exact(Trainer *tr, EvalResult *r)
{
	const Comm *c = tr->comm;
	int Be = tr->cfg->per_device_eval_batch_size;
	int n = tr->test.n;
	if (tr->cfg->eval_max_samples > 0 && tr->cfg->eval_max_samples < n)
		n = tr->cfg->eval_max_samples;
	long counts[2] = {0, 0}; /* exact answers, questions asked */
	long rounds = ((long)n + (long)c->size * Be - 1) / ((long)c->size * Be);
	for (long r = 0; r < rounds; r++) {
		int first = (int)((r * c->size + c->rank) * Be);
		int k = 0, end = first >= n ? first : n - first < Be ? n : first + Be;
		/* Unpaired data (kto) asks only its desirable examples. */
		int asked = 0;
		for (int i = first; i < end; i++) {
			if (tr->test.ex[i].label == 0)
				continue;
			asked++;
			if (tr->test.ex[i].prompt_len > 0)
				tr->gen_ex[k++] = i;
		}
		if (k > 0 || tr->sync_forwards)
			counts[0] += eval_exact_batch(tr, tr->gen_ex, k);
		counts[1] += asked; /* an empty prompt counts as a wrong answer */
	}
	comm_sum_long(c, counts, 2);
	r->n_exact = counts[1];
	r->exact_match = counts[1] ? (double)counts[0] / counts[1] : 0.0;
}

/* The method's own figures on the test split (every method but sft): its
 * micro-step without the backward, over chunks of per_device_eval_batch_size
 * examples, rank r taking chunks r, r + size, ... . Under stage 3 a rank with
 * no chunk left runs the same forwards on example 0 and counts nothing. */
static void eval_method(Trainer *tr, Metrics *m)
{
	const Comm *c = tr->comm;
	int Be = tr->cfg->per_device_eval_batch_size;
	int n = tr->test.n;
	if (tr->cfg->eval_max_samples > 0 && tr->cfg->eval_max_samples < n)
		n = tr->cfg->eval_max_samples;
	metrics_clear(m);
	long rounds = ((long)n + (long)c->size * Be - 1) / ((long)c->size * Be);
	for (long i = 0; i < rounds; i++) {
		int first = (int)((i * c->size + c->rank) * Be);
		int k = first >= n ? 0 : n - first < Be ? n - first : Be;
		Metrics round;
		metrics_clear(&round);
		if (k > 0 || tr->sync_forwards || tr->method->eval_collective) {
			int cnt = k > 0 ? k : 1;
			for (int j = 0; j < cnt; j++)
				tr->idx[j] = k > 0 ? first + j : 0;
			tr->method->fill(tr, &tr->eval, 1, tr->idx, cnt);
			tr->method->micro(tr, &tr->eval, 1, tr->idx, cnt, 0.0, 0, k > 0,
			                  &round);
		}
		/* One value per evaluation batch (over the ranks), as TRL logs. */
		metrics_reduce(&round, tr->method->classifier, c);
		metrics_merge_values(m, &round);
	}
}

void train_run_eval(Trainer *tr, long step, const char *when)
{
	if (!tr->has_test)
		return;
	EvalResult r = {0};
	Metrics mt;
	double t0 = trl_now();
	ZeroStats kept = tr->zero.st; /* the step figures leave evaluation out */
	int sft = tr->cfg->method == TRL_METHOD_SFT;
	int online = tr->method->online; /* greedy answers only */
	metrics_clear(&mt);
	if (sft)
		eval_loss(tr, &r);
	else if (!online)
		eval_method(tr, &mt);
	/* Greedy answers: the reference of a preference row is its chosen
	 * completion (ids = prompt + chosen). */
	int exact = tr->cfg->eval_max_new_tokens > 0 && !tr->method->classifier &&
	            (tr->test.format == TRL_FMT_PROMPT_COMPLETION ||
	             tr->test.format == TRL_FMT_PREFERENCE ||
	             tr->test.format == TRL_FMT_UNPAIRED_PREFERENCE);
	if (exact)
		eval_exact(tr, &r);
	tr->zero.st = kept;
	if (tr->comm->rank != 0 || (online && !exact))
		return;
	double v[MET_N];
	for (int k = 0; k < MET_N && !sft; k++)
		v[k] = mt.cnt[k] > 0 ? mt.sum[k] / mt.cnt[k] : 0.0;
	if (!sft && mt.cnt[MET_REWARDS_MARGINS] == 0)
		v[MET_REWARDS_MARGINS] = v[MET_REWARDS_CHOSEN] - v[MET_REWARDS_REJECTED];
	if (online)
		printf("eval %-6s step %ld:", when, step);
	else if (sft)
		printf(
		    "eval %-6s step %ld: eval_loss %.4f  eval_mean_token_accuracy %.4f",
		    when, step, r.loss, r.accuracy);
	else
		printf("eval %-6s step %ld: eval_loss %.4f  eval_%s %.4f", when, step,
		       v[MET_LOSS], metric_names[tr->method->main_metric],
		       v[tr->method->main_metric]);
	if (exact)
		printf("  eval_exact_match %.4f (%ld answers)", r.exact_match, r.n_exact);
	printf("  [%.1f s]\n", trl_now() - t0);
	fflush(stdout);
	if (tr->metrics) {
		if (online) {
			fprintf(tr->metrics, "{\"step\": %ld", step);
		} else if (sft) {
			fprintf(tr->metrics,
			        "{\"step\": %ld, \"eval_loss\": %.6f, "
			        "\"eval_mean_token_accuracy\": %.6f",
			        step, r.loss, r.accuracy);
		} else {
			fprintf(tr->metrics, "{\"step\": %ld, \"eval_loss\": %.6f", step,
			        v[MET_LOSS]);
			for (int k = 1; k < MET_N; k++)
				if ((tr->method->metrics & (1u << k)) &&
				    metrics_has(&mt, k))
					fprintf(tr->metrics, ", \"eval_%s\": %.6f",
					        metric_names[k], v[k]);
		}
		if (exact)
			fprintf(tr->metrics, ", \"eval_exact_match\": %.6f",
			        r.exact_match);
		fprintf(tr->metrics, "}\n");
		fflush(tr->metrics);
	}
}
