/* cmd_tokenize.c - `trl-hpc tokenize DIR [--decode] [--add-special] [--skip-special]`:
 * JSON lines {"text": ...} on stdin to {"ids": [...]} on stdout, or back with --decode.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "tokenizer.h"

int cmd_tokenize(int argc, char **argv);

static int usage(void)
{
	fprintf(stderr,
	        "usage: trl-hpc tokenize MODEL_DIR [--decode] [--add-special] "
	        "[--skip-special] < in.jsonl > out.jsonl\n"
	        "  encodes lines {\"text\": ...} to {\"ids\": [...]}; --decode does "
	        "the reverse\n");
	return 2;
}

/* Handles one input line; returns 0, or a negative code with err filled. */
static int tokenize_line(const Tokenizer *tok, const char *line, size_t len, int decode,
                         int flags, int skip_special, JsonBuf *out, int32_t **ids,
                         int *cap, char **text, size_t *tcap, TrlErr *err)
{
	JsonValue *v;
	JsonError je;
	if (json_parse(line, len, &v, &je) < 0)
		return trl_errf(err, TRL_EINVAL, "column %d: %s", je.column, je.msg);
	int rc = 0;
	if (!decode) {
		const JsonValue *t = json_get(v, "text");
		if (!t || t->type != JSON_STRING) {
			rc = trl_errf(err, TRL_EINVAL, "expected {\"text\": string}");
			goto out;
		}
		int n = tokenizer_encode_ex(tok, t->str, t->len, flags, *ids, *cap, err);
		if (n > *cap) {
			int32_t *p = realloc(*ids, (size_t)n * sizeof *p);
			if (!p) {
				rc = trl_errf(err, TRL_ENOMEM, "out of memory");
				goto out;
			}
			*ids = p;
			*cap = n;
			n = tokenizer_encode_ex(tok, t->str, t->len, flags, *ids, *cap,
			                        err);
		}
		if (n < 0) {
			rc = n;
			goto out;
		}
		json_buf_puts(out, "{\"ids\": [");
		for (int i = 0; i < n; i++)
			json_buf_printf(out, i ? ", %d" : "%d", (int)(*ids)[i]);
		json_buf_puts(out, "]}\n");
	} else {
		const JsonValue *a = json_get(v, "ids");
		if (!a || a->type != JSON_ARRAY) {
			rc = trl_errf(err, TRL_EINVAL, "expected {\"ids\": [int, ...]}");
			goto out;
		}
		if ((int)a->len > *cap) {
			int32_t *p = realloc(*ids, a->len * sizeof *p);
			if (!p) {
				rc = trl_errf(err, TRL_ENOMEM, "out of memory");
				goto out;
			}
			*ids = p;
			*cap = (int)a->len;
		}
		for (size_t i = 0; i < a->len; i++) {
			int64_t id;
			if (json_int(json_at(a, i), &id) < 0 || id < INT32_MIN ||
			    id > INT32_MAX) {
				rc = trl_errf(err, TRL_EINVAL,
				              "ids[%zu] is not an integer", i);
				goto out;
			}
			(*ids)[i] = (int32_t)id;
		}
		size_t need =
		    tokenizer_decode(tok, *ids, (int)a->len, skip_special, *text, *tcap);
		if (need + 1 > *tcap) {
			char *p = realloc(*text, need + 1);
			if (!p) {
				rc = trl_errf(err, TRL_ENOMEM, "out of memory");
				goto out;
			}
			*text = p;
			*tcap = need + 1;
			tokenizer_decode(tok, *ids, (int)a->len, skip_special, *text,
			                 *tcap);
		}
		json_buf_puts(out, "{\"text\": ");
		json_buf_string(out, *text, need);
		json_buf_puts(out, "}\n");
	}
out:
	json_free(v);
	return rc;
}

int cmd_tokenize(int argc, char **argv)
{
	const char *dir = NULL;
	int decode = 0, flags = 0, skip_special = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--decode") == 0)
			decode = 1;
		else if (strcmp(argv[i], "--add-special") == 0)
			flags |= TRL_TOK_ADD_SPECIAL;
		else if (strcmp(argv[i], "--skip-special") == 0)
			skip_special = 1;
		else if (strcmp(argv[i], "tokenize") == 0 && i == 1 && argc > 2 && !dir)
			continue; /* called with argv[1] == "tokenize" */
		else if (argv[i][0] == '-' || dir)
			return usage();
		else
			dir = argv[i];
	}
	if (!dir)
		return usage();
	Tokenizer tok;
	TrlErr err = {0, ""};
	if (tokenizer_load_dir(&tok, dir, &err) < 0) {
		fprintf(stderr, "trl-hpc tokenize: %s\n", err.msg);
		return 1;
	}
	int rc = 0, cap = 0;
	long lineno = 0;
	int32_t *ids = NULL;
	char *text = NULL, *line = NULL;
	size_t tcap = 0, lcap = 0;
	ssize_t n;
	JsonBuf out = {0};
	while ((n = getline(&line, &lcap, stdin)) > 0) {
		lineno++;
		size_t len = (size_t)n;
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			len--;
		if (len == 0)
			continue;
		out.len = 0;
		if (tokenize_line(&tok, line, len, decode, flags, skip_special, &out,
		                  &ids, &cap, &text, &tcap, &err) < 0) {
			fprintf(stderr, "trl-hpc tokenize: stdin:%ld: %s\n", lineno,
			        err.msg);
			rc = 1;
			break;
		}
		if (out.oom) {
			fprintf(stderr, "trl-hpc tokenize: out of memory\n");
			rc = 1;
			break;
		}
		fwrite(out.p, 1, out.len, stdout);
	}
	if (fflush(stdout) != 0) {
		fprintf(stderr, "trl-hpc tokenize: writing stdout failed\n");
		rc = 1;
	}
	json_buf_free(&out);
	free(ids);
	free(text);
	free(line);
	tokenizer_free(&tok);
	return rc;
}
