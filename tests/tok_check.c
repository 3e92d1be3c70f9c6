/* tok_check.c - compares tokenizer_encode with golden ids from the reference library.
 *
 * usage: tok_check TOKENIZER_DIR GOLDEN.jsonl [--roundtrip] [--bench MB]
 *   GOLDEN.jsonl lines are {"text": ..., "ids": [...]} (tests/make_golden.sh).
 *   --roundtrip also checks decode(encode(text)) == text for texts without added
 *   tokens. --bench MB encodes the corpus repeated to MB megabytes and prints
 *   tokens/s. Exit status 0 when every text matches.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "json.h"
#include "tokenizer.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void print_ids(const char *what, const int32_t *ids, int n)
{
	fprintf(stderr, "  %s (%d):", what, n);
	for (int i = 0; i < n && i < 40; i++)
		fprintf(stderr, " %d", ids[i]);
	fprintf(stderr, n > 40 ? " ...\n" : "\n");
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr,
		        "usage: tok_check TOKENIZER_DIR GOLDEN.jsonl [--roundtrip] "
		        "[--bench MB]\n");
		return 2;
	}
	int roundtrip = 0;
	double bench_mb = 0;
	for (int i = 3; i < argc; i++) {
		if (strcmp(argv[i], "--roundtrip") == 0)
			roundtrip = 1;
		else if (strcmp(argv[i], "--bench") == 0 && i + 1 < argc)
			bench_mb = atof(argv[++i]);
	}
	TrlErr err = {0, ""};
	Tokenizer tok;
	double t0 = now();
	if (tokenizer_load_dir(&tok, argv[1], &err) < 0) {
		fprintf(stderr, "tok_check: %s\n", err.msg);
		return 1;
	}
	double t_load = now() - t0;
	char *data;
	size_t len;
	if (trl_read_file(argv[2], &data, &len, &err) < 0) {
		fprintf(stderr, "tok_check: %s\n", err.msg);
		return 1;
	}
	int n = 0, bad = 0, rt_bad = 0, rt_n = 0, cap = 1 << 16;
	int32_t *ids = malloc((size_t)cap * sizeof *ids);
	size_t dcap = 1 << 20;
	char *dec = malloc(dcap);
	JsonBuf all = {0};
	for (char *line = data, *end; line < data + len; line = end + 1) {
		end = memchr(line, '\n', (size_t)(data + len - line));
		if (!end)
			end = data + len;
		if (end == line)
			continue;
		JsonValue *v;
		JsonError je;
		if (json_parse(line, (size_t)(end - line), &v, &je) < 0) {
			fprintf(stderr, "%s:%d: %s\n", argv[2], n + 1, je.msg);
			return 1;
		}
		const JsonValue *text = json_get(v, "text"), *gold = json_get(v, "ids");
		int got = tokenizer_encode(&tok, text->str, text->len, ids, cap, &err);
		int same = got == (int)gold->len;
		for (int i = 0; same && i < got; i++) {
			int64_t g;
			json_int(json_at(gold, (size_t)i), &g);
			same = g == ids[i];
		}
		if (got < 0)
			fprintf(stderr, "line %d: %s\n", n + 1, err.msg);
		if (!same && ++bad <= 10) {
			int32_t want[4096];
			int nw = (int)gold->len < 4096 ? (int)gold->len : 4096;
			for (int i = 0; i < nw; i++) {
				int64_t g;
				json_int(json_at(gold, (size_t)i), &g);
				want[i] = (int32_t)g;
			}
			fprintf(stderr, "mismatch on line %d: ", n + 1);
			JsonBuf q = {0};
			json_buf_string(&q, text->str, text->len);
			fprintf(stderr, "%.300s\n", q.p);
			json_buf_free(&q);
			print_ids("want", want, nw);
			print_ids("got ", ids, got);
		}
		if (roundtrip && got > 0) {
			int has_added = 0;
			for (int i = 0; i < got; i++) {
				char piece[64];
				size_t pl = tokenizer_decode(&tok, &ids[i], 1, 0, piece,
				                             sizeof piece);
				(void)pl;
				has_added |= tok.hf && strstr(text->str, "<") &&
				             strchr(piece, '<');
			}
			if (!has_added) {
				size_t dl =
				    tokenizer_decode(&tok, ids, got, 0, dec, dcap);
				rt_n++;
				if (dl != text->len || memcmp(dec, text->str, dl) != 0) {
					if (++rt_bad <= 5) {
						JsonBuf q = {0};
						json_buf_string(&q, text->str, text->len);
						json_buf_puts(&q, " -> ");
						json_buf_string(
						    &q, dec, dl < dcap ? dl : dcap - 1);
						fprintf(stderr,
						        "round trip differs on line %d: "
						        "%.400s\n",
						        n + 1, q.p);
						json_buf_free(&q);
					}
				}
			}
		}
		if (bench_mb > 0) {
			json_buf_put(&all, text->str, text->len);
			json_buf_put(&all, "\n", 1);
		}
		json_free(v);
		n++;
	}
	printf("%s: %d texts, %d mismatches (load %.0f ms)\n", argv[1], n, bad,
	       1e3 * t_load);
	if (roundtrip)
		printf("%s: round trip: %d texts without added tokens, %d differ\n",
		       argv[1], rt_n, rt_bad);
	if (bench_mb > 0 && all.len > 0) {
		size_t base = all.len;
		char *copy = malloc(base);
		memcpy(copy, all.p, base);
		while (all.len < (size_t)(bench_mb * 1e6))
			json_buf_put(&all, copy, base);
		free(copy);
		int32_t *big = malloc(all.len * sizeof *big);
		double t1 = now();
		int nt = tokenizer_encode(&tok, all.p, all.len, big, (int)all.len, &err);
		double dt = now() - t1;
		if (nt < 0)
			fprintf(stderr, "tok_check: bench: %s\n", err.msg);
		printf(
		    "%s: encoded %.1f MB into %d tokens in %.3f s: %.2f M tokens/s, %.1f "
		    "MB/s\n",
		    argv[1], all.len / 1e6, nt, dt, nt / dt / 1e6, all.len / 1e6 / dt);
		free(big);
	}
	json_buf_free(&all);
	free(ids);
	free(dec);
	free(data);
	tokenizer_free(&tok);
	return bad == 0 && rt_bad == 0 ? 0 : 1;
}
