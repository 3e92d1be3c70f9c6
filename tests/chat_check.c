/* chat_check.c - the chat-template parity checker: renders every case that
 * tests/reference/render_chat.py rendered with Jinja, with the built-in C
 * renderers, and compares them byte for byte (and error for error).
 *
 * Usage: chat_check EXPECTED.jsonl CONVERSATIONS.jsonl TEMPLATE_DIR
 * Exits 0 when every case matches, 1 otherwise; the first differing byte of each
 * mismatch is reported. It also checks that each template file is recognised as
 * its family and that the assistant spans are well formed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template.h"
#include "json.h"

#define MAX_MSGS 64

typedef struct {
	ChatMessage msgs[MAX_MSGS];
	int n;
} Conv;

typedef struct {
	const char *name;
	int cases, same_text, same_error, failed, recognised;
} Tally;

/* Prints up to 40 bytes of s[0..n) from off, escaping control characters. */
static void show(const char *label, const char *s, size_t n, size_t off)
{
	size_t from = off > 20 ? off - 20 : 0;
	printf("    %s @%zu: \"", label, from);
	for (size_t i = from; i < n && i < from + 40; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '\n')
			printf("\\n");
		else if (ch < 0x20 || ch == '"' || ch == '\\')
			printf("\\x%02x", ch);
		else
			putchar(ch);
	}
	printf("\"%s\n", from + 40 < n ? "..." : "");
}

static int load_lines(const char *path, JsonValue ***out, int *n_out, TrlErr *err)
{
	char *buf;
	size_t len;
	if (trl_read_file(path, &buf, &len, err) < 0)
		return -1;
	int n = 0, cap = 0, line = 0;
	JsonValue **v = NULL;
	for (char *p = buf, *end = buf + len; p < end;) {
		char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t l = nl ? (size_t)(nl - p) : (size_t)(end - p);
		line++;
		if (l > 0) {
			if (n == cap) {
				cap = cap ? 2 * cap : 64;
				v = realloc(v, (size_t)cap * sizeof *v);
				if (!v) {
					trl_free(buf);
					return trl_errf(err, TRL_ENOMEM, "out of memory");
				}
			}
			JsonError je;
			if (json_parse(p, l, &v[n], &je) < 0) {
				trl_free(buf);
				return trl_errf(err, TRL_EFORMAT, "%s:%d:%d: %s", path,
				                line, je.column, je.msg);
			}
			n++;
		}
		p += l + 1;
	}
	trl_free(buf);
	*out = v;
	*n_out = n;
	return 0;
}

static int conv_from_json(const JsonValue *v, Conv *c, TrlErr *err)
{
	const JsonValue *msgs = json_get(v, "messages");
	if (!msgs || msgs->type != JSON_ARRAY || msgs->len > MAX_MSGS)
		return trl_errf(err, TRL_EFORMAT,
		                "conversation without a messages array");
	c->n = (int)msgs->len;
	for (int i = 0; i < c->n; i++) {
		const JsonValue *m = json_at(msgs, (size_t)i);
		c->msgs[i].role = json_str(json_get(m, "role"));
		c->msgs[i].content = json_str(json_get(m, "content"));
		c->msgs[i].reasoning_content = json_str(json_get(m, "reasoning_content"));
	}
	return 0;
}

/* The text each template puts at the end of an assistant span. */
static const char *span_end_marker(const char *tmpl, const char *eos)
{
	if (!strcmp(tmpl, "chatml") || !strncmp(tmpl, "qwen", 4) || !strcmp(tmpl, "lfm2"))
		return "<|im_end|>";
	if (!strcmp(tmpl, "llama3"))
		return "<|eot_id|>";
	if (!strcmp(tmpl, "gemma"))
		return "<end_of_turn>";
	if (!strcmp(tmpl, "deepseek-v3"))
		return "<｜end▁of▁sentence｜>";
	return eos;
}

/* Returns the number of problems with r's spans (printing each). */
static int check_spans(const ChatRender *r, const Conv *c, const char *tmpl,
                       const char *eos)
{
	int bad = 0, n_assistant = 0;
	const char *marker = span_end_marker(tmpl, eos);
	size_t ml = strlen(marker);
	for (int i = 0; i < c->n; i++)
		n_assistant += strcmp(c->msgs[i].role, "assistant") == 0;
	if (r->n_spans != n_assistant) {
		printf("    %d spans for %d assistant messages\n", r->n_spans,
		       n_assistant);
		bad++;
	}
	for (int s = 0; s < r->n_spans; s++) {
		const ChatSpan *sp = &r->spans[s];
		size_t prev_end = s > 0 ? r->spans[s - 1].end : 0;
		if (sp->begin < prev_end || sp->end > r->len ||
		    sp->end < sp->begin + ml ||
		    memcmp(r->text + sp->end - ml, marker, ml) != 0 || sp->message < 0 ||
		    sp->message >= c->n ||
		    strcmp(c->msgs[sp->message].role, "assistant")) {
			printf("    span %d [%zu,%zu) of message %d is malformed\n", s,
			       sp->begin, sp->end, sp->message);
			bad++;
		}
	}
	return bad;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr,
		        "usage: %s EXPECTED.jsonl CONVERSATIONS.jsonl TEMPLATE_DIR\n",
		        argv[0]);
		return 2;
	}
	TrlErr err = {0};
	JsonValue **exp = NULL, **convj = NULL;
	int n_exp = 0, n_conv = 0;
	if (load_lines(argv[1], &exp, &n_exp, &err) < 0 ||
	    load_lines(argv[2], &convj, &n_conv, &err) < 0) {
		fprintf(stderr, "chat_check: %s\n", err.msg);
		return 2;
	}
	static Conv convs[512];
	if (n_conv > 512) {
		fprintf(stderr, "chat_check: too many conversations\n");
		return 2;
	}
	for (int i = 0; i < n_conv; i++)
		if (conv_from_json(convj[i], &convs[i], &err) < 0) {
			fprintf(stderr, "chat_check: %s:%d: %s\n", argv[2], i + 1,
			        err.msg);
			return 2;
		}

	Tally tally[CHAT_TEMPLATE_COUNT] = {0};
	int failures = 0;
	for (int e = 0; e < n_exp; e++) {
		const JsonValue *rec = exp[e];
		const char *tname = json_str(json_get(rec, "template"));
		const char *file = json_str(json_get(rec, "file"));
		int64_t ci;
		if (!tname || !file || json_int(json_get(rec, "conversation"), &ci) < 0 ||
		    ci < 0 || ci >= n_conv) {
			fprintf(stderr, "chat_check: %s:%d: malformed record\n", argv[1],
			        e + 1);
			return 2;
		}
		ChatTemplate ct;
		if (chat_template_find(&ct, tname, &err) < 0) {
			printf("FAIL %s: %s\n", tname, err.msg);
			failures++;
			continue;
		}
		Tally *t = &tally[ct.kind];
		if (!t->name) {
			/* First case of this template: its Jinja source must be
			 * recognised. */
			char path[4096], *src;
			size_t len;
			ChatTemplate got;
			t->name = ct.name;
			snprintf(path, sizeof path, "%s/%s", argv[3], file);
			if (trl_read_file(path, &src, &len, &err) < 0 ||
			    chat_template_find(&got, src, &err) < 0 ||
			    got.kind != ct.kind) {
				printf("FAIL %s: %s is not recognised as %s: %s\n", tname,
				       path, ct.name, err.msg);
				failures++;
			} else {
				t->recognised = 1;
			}
			if (src)
				trl_free(src);
		}
		const JsonValue *think = json_get(rec, "enable_thinking");
		ChatRenderOptions o = {0};
		o.add_generation_prompt = json_get(rec, "add_generation_prompt")->boolean;
		if (think && think->type == JSON_BOOL)
			o.enable_thinking =
			    think->boolean ? CHAT_THINKING_ON : CHAT_THINKING_OFF;
		o.bos_token = json_str(json_get(rec, "bos_token"));
		o.eos_token = json_str(json_get(rec, "eos_token"));
		const JsonValue *want = json_get(rec, "text");
		int want_ok = json_get(rec, "ok")->boolean;

		ChatRender r = {0};
		const Conv *c = &convs[ci];
		int rc = chat_render(&ct, c->msgs, c->n, &o, &r, &err);
		char label[256];
		snprintf(label, sizeof label, "%s conv %d (%s) agp=%d thinking=%s", tname,
		         (int)ci, json_str(json_get(rec, "name")),
		         o.add_generation_prompt,
		         !think || think->type != JSON_BOOL ? "unset"
		         : think->boolean                   ? "on"
		                                            : "off");
		int bad = 0;
		t->cases++;
		if (!want_ok && rc < 0) {
			t->same_error++;
		} else if (!want_ok) {
			printf("FAIL %s: Jinja raised \"%s\" but C rendered %zu bytes\n",
			       label, json_str(json_get(rec, "error")), r.len);
			bad = 1;
		} else if (rc < 0) {
			printf("FAIL %s: C failed (%s) but Jinja rendered\n", label,
			       err.msg);
			bad = 1;
		} else {
			size_t k = 0;
			while (k < want->len && k < r.len && want->str[k] == r.text[k])
				k++;
			if (k < want->len || k < r.len) {
				printf("FAIL %s: first difference at byte %zu (jinja %zu "
				       "bytes, C "
				       "%zu bytes)\n",
				       label, k, want->len, r.len);
				show("jinja", want->str, want->len, k);
				show("C    ", r.text, r.len, k);
				bad = 1;
			} else if (check_spans(&r, c, tname, o.eos_token) > 0) {
				printf("FAIL %s: bad assistant spans\n", label);
				bad = 1;
			} else {
				t->same_text++;
			}
		}
		t->failed += bad;
		failures += bad;
		chat_render_free(&r);
	}

	for (int k = 0; k < CHAT_TEMPLATE_COUNT; k++) {
		const Tally *t = &tally[k];
		if (t->name)
			printf("%-12s %3d cases: %3d identical text, %3d matching "
			       "errors, %d "
			       "failed; template file %s\n",
			       t->name, t->cases, t->same_text, t->same_error, t->failed,
			       t->recognised ? "recognised" : "NOT recognised");
	}
	for (int i = 0; i < n_exp; i++)
		json_free(exp[i]);
	for (int i = 0; i < n_conv; i++)
		json_free(convj[i]);
	free(exp);
	free(convj);
	printf("%s: %d of %d cases failed\n", failures ? "FAIL" : "PASS", failures,
	       n_exp);
	return failures ? 1 : 0;
}
