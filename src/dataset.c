/* dataset.c - JSONL loading and tokenization in TRL's formats, BFD packing,
 * batches, the sampler. */
#include "dataset.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template.h"
#include "json.h"
#include "rng.h"

/* Per-token flags kept in the mask pool until the mask is computed. */
enum { TOK_PROMPT = 1, TOK_ASSISTANT = 2 };

/* A piece of text tokenized on its own, with the flags of its tokens. */
typedef struct Piece {
	const char *s;
	size_t n;
	uint8_t flags;
} Piece;

/* State while loading: the growing pools and example array, the format the
 * first valid row fixed, and scratch space for messages and renderings. */
typedef struct Loader {
	Dataset *d;
	const char *path;
	const DatasetOptions *opt;
	const Tokenizer *tok;
	int have_format;
	const char *lm_field; /* language modeling: the column read */
	int completion_only;  /* mask prompt tokens out */
	int32_t eos_id;
	char eos_text[64], bos_text[64];
	int have_template;
	ChatTemplate ct;
	ChatMessage *msgs;
	int msg_cap;
	Piece *pieces;
	int piece_cap;
	JsonBuf extra;
	JsonBuf joint;       /* the pieces of one sequence joined, for joint encoding */
	size_t ntok, tokcap; /* tokens used / allocated in both pools */
	int excap;
} Loader;

/* Row outcomes besides 0: a bad row that skip_invalid_rows may skip, or
 * (negative) an error that stops loading whatever the options. */
enum { ROW_BAD = 1 };

static const char *const FORMAT_NAMES[TRL_FMT_COUNT] = {
    "auto",       "language modeling",  "prompt-only", "prompt-completion",
    "preference", "unpaired preference"};

const char *dataset_format_name(TrlDataFormat f)
{
	return f >= 0 && f < TRL_FMT_COUNT ? FORMAT_NAMES[f] : "unknown";
}

/* The columns a format needs, for messages. */
static const char *format_columns(TrlDataFormat f, const char *text_field)
{
	switch (f) {
	case TRL_FMT_LANGUAGE_MODELING:
		return strcmp(text_field, "text") == 0 ? "text or messages" : text_field;
	case TRL_FMT_PROMPT_ONLY:
		return "prompt";
	case TRL_FMT_PROMPT_COMPLETION:
		return "prompt, completion";
	case TRL_FMT_PREFERENCE:
		return "chosen, rejected, and optionally prompt";
	case TRL_FMT_UNPAIRED_PREFERENCE:
		return "prompt, completion, label";
	default:
		return "";
	}
}

int dataset_check_method(const Dataset *d, const char *path, const char *method,
                         const TrlDataFormat *ok, int n_ok, TrlErr *err)
{
	for (int i = 0; i < n_ok; i++)
		if (d->format == ok[i])
			return 0;
	char needs[256] = "";
	size_t used = 0;
	for (int i = 0; i < n_ok && used < sizeof needs; i++) {
		const char *sep = i == 0 ? "" : i == n_ok - 1 ? " or " : ", ";
		int w = snprintf(needs + used, sizeof needs - used, "%s%s", sep,
		                 dataset_format_name(ok[i]));
		if (w < 0)
			break;
		used += (size_t)w;
	}
	return trl_errf(err, TRL_EINVAL,
	                "%s: %s%s data (%s) cannot train method %s: it needs %s data",
	                path, d->conversational ? "conversational " : "",
	                dataset_format_name(d->format), d->columns, method, needs);
}

int dataset_eos_id(const Tokenizer *t, const char *eos_token, int32_t *id, TrlErr *err)
{
	if (!eos_token || !eos_token[0]) {
		*id = t->eos_id;
		return 0;
	}
	*id = tokenizer_token_to_id(t, eos_token, strlen(eos_token));
	if (*id < 0)
		return trl_errf(err, TRL_EINVAL,
		                "eos_token: '%s' is not a token of the tokenizer; give "
		                "the text of one of its tokens (or leave it empty for "
		                "the tokenizer's own EOS)",
		                eos_token);
	return 0;
}

static int grow_pools(Loader *L, size_t need)
{
	if (need <= L->tokcap)
		return 0;
	size_t cap = L->tokcap ? L->tokcap : 1 << 16;
	while (cap < need)
		cap *= 2;
	int32_t *ids = realloc(L->d->id_pool, cap * sizeof *ids);
	if (!ids)
		return TRL_ENOMEM;
	L->d->id_pool = ids;
	uint8_t *mask = realloc(L->d->mask_pool, cap);
	if (!mask)
		return TRL_ENOMEM;
	L->d->mask_pool = mask;
	L->tokcap = cap;
	return 0;
}

/* Appends the tokens of text to the id pool and their flags to the mask pool;
 * special adds the tokenizer's own BOS/EOS around the text (TRL_TOK_ADD_SPECIAL),
 * as tokenizer(text) does in Python. */
static int encode_append(Loader *L, const char *text, size_t len, uint8_t flags,
                         int special, TrlErr *err)
{
	for (;;) {
		size_t room = L->tokcap - L->ntok;
		int cap = room > (size_t)INT_MAX ? INT_MAX : (int)room;
		int got = tokenizer_encode_ex(L->tok, text, len,
		                              special ? TRL_TOK_ADD_SPECIAL : 0,
		                              L->d->id_pool + L->ntok, cap, err);
		if (got < 0)
			return got;
		if (got <= cap) {
			memset(L->d->mask_pool + L->ntok, flags, (size_t)got);
			L->ntok += (size_t)got;
			return 0;
		}
		if (grow_pools(L, L->ntok + (size_t)got) < 0)
			return trl_errf(err, TRL_ENOMEM, "out of memory tokenizing %s",
			                L->path);
	}
}

/* Joins the pieces whose flags match want (all when want is 0) into L->joint. */
static const char *join_pieces(Loader *L, const Piece *p, int np, uint8_t want, size_t *n)
{
	L->joint.len = 0;
	json_buf_put(&L->joint, "", 0);
	for (int i = 0; i < np; i++)
		if (!want || (p[i].flags & want))
			json_buf_put(&L->joint, p[i].s, p[i].n);
	*n = L->joint.len;
	return L->joint.oom ? NULL : L->joint.p;
}

/* Tokenizes one sequence from its pieces (prompt pieces first), appends EOS when
 * add_eos and the sequence does not already end with it, truncates it to
 * max_length and turns the flags into its mask.
 *
 * As TRL does, the sequence is tokenized as one text: prompt + completion
 * together (so tokens may merge across the boundary), and the prompt is the
 * first len(tokenize(prompt)) tokens. Standard rows get the tokenizer's own
 * special tokens (BOS for Llama-style tokenizers); rendered conversations
 * already hold them as text. Only assistant_only_loss tokenizes piece by piece,
 * so that token boundaries fall exactly on the assistant spans. */
static int add_sequence(Loader *L, const Piece *p, int np, int add_eos, int line,
                        size_t *off, int *len_out, int *prompt_len_out, TrlErr *err)
{
	Dataset *d = L->d;
	const DatasetOptions *o = L->opt;
	size_t start = L->ntok;
	int rc, special = !d->conversational;
	if (o->assistant_only_loss) {
		for (int i = 0; i < np; i++)
			if ((rc = encode_append(L, p[i].s, p[i].n, p[i].flags,
			                        special && i == 0, err)) < 0)
				return rc;
	} else {
		size_t n;
		const char *text = join_pieces(L, p, np, TOK_PROMPT, &n);
		if (!text)
			return trl_errf(err, TRL_ENOMEM, "out of memory tokenizing %s",
			                L->path);
		size_t n_prompt = 0;
		if (n > 0) {
			if ((rc = encode_append(L, text, n, TOK_PROMPT, special, err)) <
			    0)
				return rc;
			n_prompt = L->ntok - start;
			L->ntok = start;
		}
		if (!(text = join_pieces(L, p, np, 0, &n)))
			return trl_errf(err, TRL_ENOMEM, "out of memory tokenizing %s",
			                L->path);
		if ((rc = encode_append(L, text, n, TOK_ASSISTANT, special, err)) < 0)
			return rc;
		for (size_t t = start; t < L->ntok && t < start + n_prompt; t++)
			d->mask_pool[t] = TOK_PROMPT;
	}
	if (add_eos && (L->ntok == start || d->id_pool[L->ntok - 1] != L->eos_id)) {
		if (grow_pools(L, L->ntok + 1) < 0)
			return trl_errf(err, TRL_ENOMEM, "out of memory tokenizing %s",
			                L->path);
		d->id_pool[L->ntok] = L->eos_id;
		d->mask_pool[L->ntok++] = TOK_ASSISTANT;
	}
	size_t len = L->ntok - start;
	if (len > (size_t)INT_MAX)
		return trl_errf(err, TRL_EINVAL,
		                "%s:%d: the example has %zu tokens, too many", L->path,
		                line, len);
	int32_t *ids = d->id_pool + start;
	uint8_t *mask = d->mask_pool + start;
	if (o->max_length > 0 && len > (size_t)o->max_length) {
		size_t keep = (size_t)o->max_length;
		if (o->keep_end) {
			size_t drop = len - keep;
			memmove(ids, ids + drop, keep * sizeof *ids);
			memmove(mask, mask + drop, keep);
		}
		len = keep;
		L->ntok = start + keep;
		d->n_truncated++;
	}
	int prompt_len = 0;
	while ((size_t)prompt_len < len && (mask[prompt_len] & TOK_PROMPT))
		prompt_len++;
	/* Token 0 has nothing before it to be predicted from, so it is never a
	 * target. */
	for (size_t t = 0; t < len; t++) {
		uint8_t f = mask[t];
		mask[t] = t > 0 && (!L->completion_only || !(f & TOK_PROMPT)) &&
		          (!o->assistant_only_loss || (f & TOK_ASSISTANT));
	}
	*off = start;
	*len_out = (int)len;
	*prompt_len_out = prompt_len;
	d->n_tokens += (long)len;
	return 0;
}

/* Lists an object's member names into buf for a message. */
static const char *list_columns(const JsonValue *row, char *buf, size_t cap)
{
	size_t used = 0;
	buf[0] = 0;
	for (size_t i = 0; i < row->len && used + 1 < cap; i++) {
		int w = snprintf(buf + used, cap - used, "%s'%s'", i ? ", " : "",
		                 row->members[i].key);
		if (w < 0)
			break;
		used += (size_t)w;
	}
	if (row->len == 0)
		snprintf(buf, cap, "none");
	return buf;
}

static int is_list(const JsonValue *v)
{
	return v && v->type == JSON_ARRAY;
}

/* The format whose columns row has, TRL's order of precedence; AUTO if none. */
static TrlDataFormat columns_format(const Loader *L, const JsonValue *row)
{
	int prompt = json_get(row, "prompt") != NULL;
	int completion = json_get(row, "completion") != NULL;
	if (json_get(row, "chosen") && json_get(row, "rejected"))
		return TRL_FMT_PREFERENCE;
	if (prompt && completion && json_get(row, "label"))
		return TRL_FMT_UNPAIRED_PREFERENCE;
	if (prompt && completion)
		return TRL_FMT_PROMPT_COMPLETION;
	if (prompt)
		return TRL_FMT_PROMPT_ONLY;
	if (json_get(row, L->opt->text_field) || json_get(row, "messages"))
		return TRL_FMT_LANGUAGE_MODELING;
	return TRL_FMT_AUTO;
}

/* Whether row has the columns format f needs. */
static int has_columns(const Loader *L, const JsonValue *row, TrlDataFormat f)
{
	int prompt = json_get(row, "prompt") != NULL;
	int completion = json_get(row, "completion") != NULL;
	switch (f) {
	case TRL_FMT_LANGUAGE_MODELING:
		return json_get(row, L->opt->text_field) || json_get(row, "messages");
	case TRL_FMT_PROMPT_ONLY:
		return prompt;
	case TRL_FMT_PROMPT_COMPLETION:
		return prompt && completion;
	case TRL_FMT_PREFERENCE:
		return json_get(row, "chosen") && json_get(row, "rejected");
	case TRL_FMT_UNPAIRED_PREFERENCE:
		return prompt && completion && json_get(row, "label");
	default:
		return 0;
	}
}

/* Fixes the format and form from the first valid row. */
static int detect_format(Loader *L, const JsonValue *row, int line, TrlErr *err)
{
	Dataset *d = L->d;
	const DatasetOptions *o = L->opt;
	char cols[256];
	TrlDataFormat seen = columns_format(L, row);
	TrlDataFormat f = o->format != TRL_FMT_AUTO ? o->format : seen;
	if (o->format != TRL_FMT_AUTO && !has_columns(L, row, f)) {
		char looks[128] = "";
		if (seen != TRL_FMT_AUTO)
			snprintf(looks, sizeof looks, ", which is %s data",
			         dataset_format_name(seen));
		return trl_errf(err, TRL_EINVAL,
		                "%s:%d: dataset_format is %s, which needs the columns "
		                "%s, but the row has %s%s; set dataset_format to auto "
		                "or fix the data",
		                L->path, line, dataset_format_name(f),
		                format_columns(f, o->text_field),
		                list_columns(row, cols, sizeof cols), looks);
	}
	if (f == TRL_FMT_AUTO)
		return trl_errf(
		    err, ROW_BAD,
		    "%s:%d: cannot tell the dataset format from the columns (%s): "
		    "expected '%s' or 'messages' (language modeling), 'prompt' "
		    "(prompt-only), 'prompt' and 'completion' (prompt-completion), "
		    "'chosen' and 'rejected' (preference), or 'prompt', 'completion' "
		    "and 'label' (unpaired preference)",
		    L->path, line, list_columns(row, cols, sizeof cols), o->text_field);
	d->format = f;
	const JsonValue *key = NULL;
	switch (f) {
	case TRL_FMT_LANGUAGE_MODELING:
		L->lm_field = json_get(row, o->text_field) ? o->text_field : "messages";
		key = json_get(row, L->lm_field);
		snprintf(d->columns, sizeof d->columns, "%s", L->lm_field);
		break;
	case TRL_FMT_PREFERENCE:
		d->implicit_prompt = !json_get(row, "prompt");
		key = json_get(row, "chosen");
		snprintf(d->columns, sizeof d->columns, "%s",
		         d->implicit_prompt ? "chosen, rejected"
		                            : "prompt, chosen, rejected");
		break;
	default:
		key = json_get(row, "prompt");
		snprintf(d->columns, sizeof d->columns, "%s",
		         f == TRL_FMT_PROMPT_ONLY         ? "prompt"
		         : f == TRL_FMT_PROMPT_COMPLETION ? "prompt, completion"
		                                          : "prompt, completion, label");
	}
	d->conversational = is_list(key);
	L->completion_only =
	    f == TRL_FMT_PROMPT_ONLY || f == TRL_FMT_PREFERENCE ||
	    f == TRL_FMT_UNPAIRED_PREFERENCE ||
	    (f == TRL_FMT_PROMPT_COMPLETION && o->completion_only_loss != 0);
	if (o->assistant_only_loss && !d->conversational)
		return trl_errf(err, TRL_EINVAL,
		                "%s:%d: assistant_only_loss needs conversational data "
		                "(columns holding lists of {\"role\", \"content\"} "
		                "messages), but '%s' holds %s data; set "
		                "assistant_only_loss to false",
		                L->path, line, d->columns, dataset_format_name(f));
	if (d->conversational && !L->have_template) {
		const char *name =
		    o->chat_template && o->chat_template[0] ? o->chat_template : "chatml";
		TrlErr cerr;
		if (chat_template_find(&L->ct, name, &cerr) < 0)
			return trl_errf(err, TRL_EUNSUPPORTED,
			                "%s: conversational data needs a chat template: "
			                "%s",
			                L->path, cerr.msg);
		L->have_template = 1;
	}
	return 0;
}

/* Returns the string column name of row, or NULL with a message in err. */
static const JsonValue *string_column(Loader *L, const JsonValue *row, const char *name,
                                      int line, TrlErr *err)
{
	const JsonValue *v = json_get(row, name);
	if (!v) {
		trl_errf(err, ROW_BAD,
		         "%s:%d: column '%s' is missing (the first row is %s: %s)",
		         L->path, line, name, dataset_format_name(L->d->format),
		         L->d->columns);
		return NULL;
	}
	if (v->type != JSON_STRING) {
		trl_errf(err, ROW_BAD, "%s:%d: column '%s' must be a string%s, got %s",
		         L->path, line, name,
		         L->d->conversational ? " (the first row is conversational)" : "",
		         json_type_name(v->type));
		return NULL;
	}
	return v;
}

/* Appends the messages of column name to L->msgs from index *n on; ROW_BAD with
 * file:line and the message index when one is malformed. */
static int read_messages(Loader *L, const JsonValue *row, const char *name, int line,
                         int *n, TrlErr *err)
{
	const JsonValue *v = json_get(row, name);
	if (!v)
		return trl_errf(err, ROW_BAD,
		                "%s:%d: column '%s' is missing (the first row is "
		                "conversational %s: %s)",
		                L->path, line, name, dataset_format_name(L->d->format),
		                L->d->columns);
	if (v->type != JSON_ARRAY)
		return trl_errf(
		    err, ROW_BAD,
		    "%s:%d: column '%s' must be a list of messages (the first "
		    "row is conversational), got %s",
		    L->path, line, name, json_type_name(v->type));
	if (*n + (int)v->len > L->msg_cap) {
		int cap = 2 * (*n + (int)v->len) + 8;
		ChatMessage *m = realloc(L->msgs, (size_t)cap * sizeof *m);
		if (!m)
			return trl_errf(err, TRL_ENOMEM, "out of memory loading %s",
			                L->path);
		L->msgs = m;
		L->msg_cap = cap;
	}
	for (size_t i = 0; i < v->len; i++) {
		const JsonValue *m = &v->items[i];
		if (m->type != JSON_OBJECT)
			return trl_errf(
			    err, ROW_BAD,
			    "%s:%d: %s[%zu] must be an object with 'role' and "
			    "'content', got %s",
			    L->path, line, name, i, json_type_name(m->type));
		const char *role = json_str(json_get(m, "role"));
		const char *content = json_str(json_get(m, "content"));
		const JsonValue *rc = json_get(m, "reasoning_content");
		if (!role)
			return trl_errf(err, ROW_BAD,
			                "%s:%d: %s[%zu].role must be a string", L->path,
			                line, name, i);
		if (!content)
			return trl_errf(err, ROW_BAD,
			                "%s:%d: %s[%zu].content must be a string",
			                L->path, line, name, i);
		if (rc && rc->type != JSON_NULL && rc->type != JSON_STRING)
			return trl_errf(
			    err, ROW_BAD,
			    "%s:%d: %s[%zu].reasoning_content must be a string "
			    "or null",
			    L->path, line, name, i);
		L->msgs[(*n)++] = (ChatMessage){role, content, json_str(rc)};
	}
	return 0;
}

static int message_equal(const ChatMessage *a, const ChatMessage *b)
{
	return strcmp(a->role, b->role) == 0 && strcmp(a->content, b->content) == 0 &&
	       (a->reasoning_content
	            ? b->reasoning_content &&
	                  strcmp(a->reasoning_content, b->reasoning_content) == 0
	            : !b->reasoning_content);
}

static int render(Loader *L, const ChatMessage *m, int n, int gen, ChatRender *r,
                  int line, TrlErr *err)
{
	ChatRenderOptions ro = {.add_generation_prompt = gen,
	                        .bos_token = L->bos_text,
	                        .eos_token = L->eos_text};
	TrlErr cerr;
	int rc = chat_render(&L->ct, m, n, &ro, r, &cerr);
	if (rc == TRL_ENOMEM)
		return trl_errf(err, rc, "%s:%d: out of memory", L->path, line);
	if (rc < 0)
		return trl_errf(err, ROW_BAD, "%s:%d: chat template %s: %s", L->path,
		                line, L->ct.name, cerr.msg);
	return 0;
}

/* Cuts r's text into pieces at prompt_end and at the assistant spans' bounds. */
static int rendered_pieces(Loader *L, const ChatRender *r, size_t prompt_end, int *np,
                           TrlErr *err)
{
	int need = 2 * r->n_spans + 3;
	if (need > L->piece_cap) {
		Piece *p = realloc(L->pieces, (size_t)need * sizeof *p);
		if (!p)
			return trl_errf(err, TRL_ENOMEM, "out of memory loading %s",
			                L->path);
		L->pieces = p;
		L->piece_cap = need;
	}
	size_t cut[2 * 64 + 3], *cuts = cut;
	size_t *heap = NULL;
	if (need > (int)(sizeof cut / sizeof cut[0])) {
		heap = malloc((size_t)need * sizeof *heap);
		if (!heap)
			return trl_errf(err, TRL_ENOMEM, "out of memory loading %s",
			                L->path);
		cuts = heap;
	}
	int nc = 0;
	cuts[nc++] = 0;
	for (int i = 0; i < r->n_spans; i++) {
		cuts[nc++] = r->spans[i].begin;
		cuts[nc++] = r->spans[i].end;
	}
	cuts[nc++] = prompt_end;
	cuts[nc++] = r->len;
	/* Insertion sort: the spans are already ordered, so this is nearly linear. */
	for (int i = 1; i < nc; i++)
		for (int j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
			size_t t = cuts[j];
			cuts[j] = cuts[j - 1];
			cuts[j - 1] = t;
		}
	*np = 0;
	for (int i = 0; i + 1 < nc; i++) {
		size_t a = cuts[i], b = cuts[i + 1];
		if (a == b)
			continue;
		uint8_t f = b <= prompt_end ? TOK_PROMPT : 0;
		for (int k = 0; k < r->n_spans; k++)
			if (r->spans[k].begin <= a && b <= r->spans[k].end)
				f |= TOK_ASSISTANT;
		L->pieces[(*np)++] = (Piece){r->text + a, b - a, f};
	}
	free(heap);
	return 0;
}

/* Renders prompt msgs[0..n_prompt) + completion msgs[n_prompt..n) and tokenizes it
 * as one sequence whose prompt is the prompt's rendering with the generation
 * prompt. n_prompt = 0 (language modeling) renders the whole conversation
 * without a prompt; n_prompt = n (prompt-only) renders just the prompt. */
static int add_conversation(Loader *L, const ChatMessage *m, int n_prompt, int n,
                            int add_eos, int line, size_t *off, int *len, int *prompt_len,
                            TrlErr *err)
{
	ChatRender pr = {0}, full = {0};
	int rc = 0, np = 0;
	size_t prompt_end = 0;
	if (n_prompt > 0) {
		if ((rc = render(L, m, n_prompt, 1, &pr, line, err)) != 0)
			goto done;
		prompt_end = pr.len;
	}
	if (n_prompt == n) {
		/* Prompt-only: the prompt with its generation prompt is the sequence. */
		if ((rc = rendered_pieces(L, &pr, prompt_end, &np, err)) != 0)
			goto done;
	} else {
		if ((rc = render(L, m, n, 0, &full, line, err)) != 0)
			goto done;
		if (full.len < prompt_end ||
		    (prompt_end > 0 && memcmp(full.text, pr.text, prompt_end) != 0)) {
			rc = trl_errf(err, ROW_BAD,
			              "%s:%d: chat template %s renders the conversation "
			              "with a different start than the prompt with its "
			              "generation prompt, so the completion cannot be "
			              "split off",
			              L->path, line, L->ct.name);
			goto done;
		}
		if ((rc = rendered_pieces(L, &full, prompt_end, &np, err)) != 0)
			goto done;
	}
	rc = add_sequence(L, L->pieces, np, add_eos, line, off, len, prompt_len, err);
done:
	chat_render_free(&pr);
	chat_render_free(&full);
	return rc;
}

/* Writes a JSON value back as text. */
static void write_json(JsonBuf *b, const JsonValue *v)
{
	switch (v->type) {
	case JSON_NULL:
		json_buf_puts(b, "null");
		break;
	case JSON_BOOL:
		json_buf_puts(b, v->boolean ? "true" : "false");
		break;
	case JSON_NUMBER:
		if (v->is_int)
			json_buf_printf(b, "%lld", (long long)v->inum);
		else
			json_buf_printf(b, "%.17g", v->num);
		break;
	case JSON_STRING:
		json_buf_string(b, v->str, v->len);
		break;
	case JSON_ARRAY:
		json_buf_puts(b, "[");
		for (size_t i = 0; i < v->len; i++) {
			if (i)
				json_buf_puts(b, ", ");
			write_json(b, &v->items[i]);
		}
		json_buf_puts(b, "]");
		break;
	case JSON_OBJECT:
		json_buf_puts(b, "{");
		for (size_t i = 0; i < v->len; i++) {
			if (i)
				json_buf_puts(b, ", ");
			json_buf_string(b, v->members[i].key, v->members[i].key_len);
			json_buf_puts(b, ": ");
			write_json(b, &v->members[i].value);
		}
		json_buf_puts(b, "}");
		break;
	}
}

/* Whether column key is one the format reads. */
static int used_column(const Loader *L, const char *key)
{
	switch (L->d->format) {
	case TRL_FMT_LANGUAGE_MODELING:
		return strcmp(key, L->lm_field) == 0;
	case TRL_FMT_PROMPT_ONLY:
		return strcmp(key, "prompt") == 0;
	case TRL_FMT_PROMPT_COMPLETION:
		return strcmp(key, "prompt") == 0 || strcmp(key, "completion") == 0;
	case TRL_FMT_PREFERENCE:
		return strcmp(key, "chosen") == 0 || strcmp(key, "rejected") == 0 ||
		       (!L->d->implicit_prompt && strcmp(key, "prompt") == 0);
	case TRL_FMT_UNPAIRED_PREFERENCE:
		return strcmp(key, "prompt") == 0 || strcmp(key, "completion") == 0 ||
		       strcmp(key, "label") == 0;
	default:
		return 0;
	}
}

/* Appends the unused columns of row as a JSON object to the extra pool. */
static int keep_extra(Loader *L, const JsonValue *row, size_t *off, TrlErr *err)
{
	JsonBuf *b = &L->extra;
	*off = b->len;
	json_buf_puts(b, "{");
	int k = 0;
	for (size_t i = 0; i < row->len; i++) {
		const JsonMember *m = &row->members[i];
		if (used_column(L, m->key))
			continue;
		if (k++)
			json_buf_puts(b, ", ");
		json_buf_string(b, m->key, m->key_len);
		json_buf_puts(b, ": ");
		write_json(b, &m->value);
	}
	json_buf_puts(b, "}");
	json_buf_put(b, "", 1);
	if (b->oom)
		return trl_errf(err, TRL_ENOMEM, "out of memory loading %s", L->path);
	return 0;
}

/* The length of the shared start of chosen and rejected as TRL's extract_prompt
 * finds it: up to the first difference, minus a space that precedes it (the
 * space starts the answer); when one is a prefix of the other, one unit short of
 * the shorter. Here the unit is a byte, moved back to a UTF-8 boundary. */
static size_t shared_prefix(const char *a, size_t na, const char *b, size_t nb)
{
	size_t n = na < nb ? na : nb, i = 0;
	while (i < n && a[i] == b[i])
		i++;
	int differ = i < n;
	if (!differ)
		i = n > 0 ? n - 1 : 0;
	/* TRL compares characters, not bytes: back up to the start of the
	 * character holding the first difference, then apply its rule that a
	 * space just before it belongs to the answers. */
	while (i > 0 && ((unsigned char)a[i] & 0xC0) == 0x80)
		i--;
	if (differ && i > 0 && a[i - 1] == ' ')
		i--;
	return i;
}

/* Standard rows: the pieces prompt (may be NULL) and completion. */
static int add_standard(Loader *L, const char *p, size_t pn, const char *c, size_t cn,
                        int add_eos, int line, size_t *off, int *len, int *prompt_len,
                        TrlErr *err)
{
	Piece pc[2];
	int np = 0;
	if (p)
		pc[np++] = (Piece){p, pn, TOK_PROMPT};
	if (c)
		pc[np++] = (Piece){c, cn, TOK_ASSISTANT};
	return add_sequence(L, pc, np, add_eos, line, off, len, prompt_len, err);
}

static int row_conversational(Loader *L, const JsonValue *row, Example *e, int line,
                              TrlErr *err)
{
	TrlDataFormat f = L->d->format;
	int n = 0, np = 0, rc;
	switch (f) {
	case TRL_FMT_LANGUAGE_MODELING:
		if ((rc = read_messages(L, row, L->lm_field, line, &n, err)) != 0)
			return rc;
		return add_conversation(L, L->msgs, 0, n, 0, line, &e->off, &e->len,
		                        &e->prompt_len, err);
	case TRL_FMT_PROMPT_ONLY:
		if ((rc = read_messages(L, row, "prompt", line, &n, err)) != 0)
			return rc;
		return add_conversation(L, L->msgs, n, n, 0, line, &e->off, &e->len,
		                        &e->prompt_len, err);
	case TRL_FMT_PROMPT_COMPLETION:
	case TRL_FMT_UNPAIRED_PREFERENCE:
		if ((rc = read_messages(L, row, "prompt", line, &n, err)) != 0)
			return rc;
		np = n;
		if ((rc = read_messages(L, row, "completion", line, &n, err)) != 0)
			return rc;
		return add_conversation(L, L->msgs, np, n,
		                        f == TRL_FMT_UNPAIRED_PREFERENCE, line, &e->off,
		                        &e->len, &e->prompt_len, err);
	default:
		break;
	}
	/* Preference: msgs = prompt, chosen, then rejected (read after the others
	 * so that the chosen conversation is contiguous). */
	if (!L->d->implicit_prompt &&
	    (rc = read_messages(L, row, "prompt", line, &n, err)) != 0)
		return rc;
	np = n;
	if ((rc = read_messages(L, row, "chosen", line, &n, err)) != 0)
		return rc;
	int nc = n;
	if ((rc = read_messages(L, row, "rejected", line, &n, err)) != 0)
		return rc;
	int nr = n - nc;
	if (L->d->implicit_prompt) {
		int k = 0, lim = nc < nr ? nc : nr;
		while (k < lim && message_equal(&L->msgs[k], &L->msgs[nc + k]))
			k++;
		if (k == lim && k > 0)
			k--;
		np = k;
	}
	/* The rejected conversation is the prompt followed by its own messages; a
	 * copy keeps each conversation contiguous for chat_render. */
	ChatMessage *rej = malloc((size_t)(np + nr + 1) * sizeof *rej);
	if (!rej)
		return trl_errf(err, TRL_ENOMEM, "out of memory loading %s", L->path);
	int nrej = 0;
	if (!L->d->implicit_prompt)
		for (int i = 0; i < np; i++)
			rej[nrej++] = L->msgs[i];
	for (int i = nc; i < n; i++)
		rej[nrej++] = L->msgs[i];
	rc = add_conversation(L, L->msgs, np, nc, 1, line, &e->off, &e->len,
	                      &e->prompt_len, err);
	if (!rc)
		rc = add_conversation(L, rej, np, nrej, 1, line, &e->rejected_off,
		                      &e->rejected_len, &e->rejected_prompt_len, err);
	free(rej);
	return rc;
}

static int row_standard(Loader *L, const JsonValue *row, Example *e, int line,
                        TrlErr *err)
{
	TrlDataFormat f = L->d->format;
	const JsonValue *p = NULL, *c = NULL, *r = NULL;
	if (f == TRL_FMT_LANGUAGE_MODELING) {
		if (!(c = string_column(L, row, L->lm_field, line, err)))
			return ROW_BAD;
		return add_standard(L, NULL, 0, c->str, c->len, 1, line, &e->off, &e->len,
		                    &e->prompt_len, err);
	}
	if (f != TRL_FMT_PREFERENCE || !L->d->implicit_prompt)
		if (!(p = string_column(L, row, "prompt", line, err)))
			return ROW_BAD;
	if (f == TRL_FMT_PROMPT_ONLY)
		return add_standard(L, p->str, p->len, NULL, 0, 0, line, &e->off, &e->len,
		                    &e->prompt_len, err);
	if (f != TRL_FMT_PREFERENCE) {
		if (!(c = string_column(L, row, "completion", line, err)))
			return ROW_BAD;
		return add_standard(L, p->str, p->len, c->str, c->len, 1, line, &e->off,
		                    &e->len, &e->prompt_len, err);
	}
	if (!(c = string_column(L, row, "chosen", line, err)) ||
	    !(r = string_column(L, row, "rejected", line, err)))
		return ROW_BAD;
	const char *ps = p ? p->str : c->str;
	size_t pn = p ? p->len : shared_prefix(c->str, c->len, r->str, r->len);
	size_t skip = p ? 0 : pn;
	int rc = add_standard(L, ps, pn, c->str + skip, c->len - skip, 1, line, &e->off,
	                      &e->len, &e->prompt_len, err);
	if (!rc)
		rc = add_standard(L, ps, pn, r->str + skip, r->len - skip, 1, line,
		                  &e->rejected_off, &e->rejected_len,
		                  &e->rejected_prompt_len, err);
	return rc;
}

/* Loads one non-blank line: 0, ROW_BAD (message in err) or a negative code. */
static int load_row(Loader *L, const char *text, size_t len, int line, int col_shift,
                    TrlErr *err)
{
	Dataset *d = L->d;
	JsonValue *row = NULL;
	JsonError je;
	int rc = json_parse(text, len, &row, &je);
	if (rc == TRL_ENOMEM)
		return trl_errf(err, rc, "%s:%d: out of memory", L->path, line);
	if (rc < 0)
		return trl_errf(err, ROW_BAD, "%s:%d: invalid JSON at column %d: %s",
		                L->path, line, je.column + col_shift, je.msg);
	if (row->type != JSON_OBJECT) {
		rc = trl_errf(err, ROW_BAD, "%s:%d: a row must be a JSON object, got %s",
		              L->path, line, json_type_name(row->type));
		goto done;
	}
	if (!L->have_format) {
		if ((rc = detect_format(L, row, line, err)) != 0)
			goto done;
		L->have_format = 1;
	}
	if (d->n == L->excap) {
		int cap = L->excap ? 2 * L->excap : 1024;
		Example *ex = realloc(d->ex, (size_t)cap * sizeof *ex);
		if (!ex) {
			rc = trl_errf(err, TRL_ENOMEM, "out of memory loading %s",
			              L->path);
			goto done;
		}
		d->ex = ex;
		L->excap = cap;
	}
	Example *e = &d->ex[d->n];
	*e = (Example){.line = line, .label = -1};
	if (d->format == TRL_FMT_UNPAIRED_PREFERENCE) {
		const JsonValue *lab = json_get(row, "label");
		if (!lab || lab->type != JSON_BOOL) {
			rc = trl_errf(
			    err, ROW_BAD,
			    "%s:%d: column 'label' must be true or false, got %s",
			    L->path, line, lab ? json_type_name(lab->type) : "nothing");
			goto done;
		}
		e->label = lab->boolean;
	}
	/* A bad row may have added tokens before failing: roll them back. */
	size_t ntok0 = L->ntok;
	long ntokens0 = d->n_tokens;
	int ntrunc0 = d->n_truncated;
	rc = d->conversational ? row_conversational(L, row, e, line, err)
	                       : row_standard(L, row, e, line, err);
	if (!rc)
		rc = keep_extra(L, row, &e->extra_off, err);
	if (rc) {
		L->ntok = ntok0;
		d->n_tokens = ntokens0;
		d->n_truncated = ntrunc0;
		goto done;
	}
	d->n++;
done:
	json_free(row);
	return rc;
}

static int is_blank(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
			return 0;
	return 1;
}

/* The text of token id for the chat template's bos/eos variables. */
static void token_text(const Tokenizer *t, int32_t id, char *buf, size_t cap)
{
	buf[0] = 0;
	if (id >= 0 && tokenizer_decode(t, &id, 1, 0, buf, cap) >= cap)
		buf[0] = 0;
}

int dataset_load_jsonl(Dataset *d, const char *path, const DatasetOptions *opt,
                       const Tokenizer *tok, TrlErr *err)
{
	memset(d, 0, sizeof *d);
	char *buf = NULL;
	size_t size = 0;
	Loader L = {.d = d, .path = path, .opt = opt, .tok = tok};
	int rc = dataset_eos_id(tok, opt->eos_token, &L.eos_id, err);
	if (rc < 0)
		return rc;
	if (opt->eos_token && opt->eos_token[0])
		snprintf(L.eos_text, sizeof L.eos_text, "%s", opt->eos_token);
	else
		token_text(tok, L.eos_id, L.eos_text, sizeof L.eos_text);
	token_text(tok, tok->bos_id, L.bos_text, sizeof L.bos_text);
	rc = trl_read_file(path, &buf, &size, err);
	if (rc < 0)
		return rc;
	if (grow_pools(&L, 1) < 0) {
		rc = trl_errf(err, TRL_ENOMEM, "out of memory loading %s", path);
		goto fail;
	}
	TrlErr first_skip = {0};
	size_t pos = 0;
	int col_shift = 0;
	/* A UTF-8 byte order mark is not part of the first row. */
	if (size >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0) {
		pos = 3;
		col_shift = 3;
	}
	for (int line = 1; pos < size; line++) {
		const char *s = buf + pos;
		const char *nl = memchr(s, '\n', size - pos);
		size_t n = nl ? (size_t)(nl - s) : size - pos;
		pos += n + 1;
		if (n > 0 && s[n - 1] == '\r')
			n--;
		if (!is_blank(s, n)) {
			TrlErr row_err;
			rc =
			    load_row(&L, s, n, line, line == 1 ? col_shift : 0, &row_err);
			if (rc < 0 || (rc == ROW_BAD && !opt->skip_invalid_rows)) {
				trl_errf(err, rc < 0 ? rc : TRL_EINVAL, "%s",
				         row_err.msg);
				rc = rc < 0 ? rc : TRL_EINVAL;
				goto fail;
			}
			if (rc == ROW_BAD) {
				if (d->n_skipped++ == 0)
					first_skip = row_err;
			}
		}
		if (!nl)
			break;
	}
	if (d->n == 0) {
		if (d->n_skipped > 0)
			rc = trl_errf(
			    err, TRL_EINVAL,
			    "%s: no valid rows: all %d were skipped as invalid (the "
			    "first: %s)",
			    path, d->n_skipped, first_skip.msg);
		else
			rc = trl_errf(err, TRL_EINVAL, "%s: no rows", path);
		goto fail;
	}
	d->extra_pool = L.extra.p;
	L.extra.p = NULL;
	for (int i = 0; i < d->n; i++) {
		Example *e = &d->ex[i];
		e->ids = d->id_pool + e->off;
		e->mask = d->mask_pool + e->off;
		if (d->format == TRL_FMT_PREFERENCE) {
			e->rejected_ids = d->id_pool + e->rejected_off;
			e->rejected_mask = d->mask_pool + e->rejected_off;
		}
		e->extra = d->extra_pool + e->extra_off;
	}
	rc = 0;
	goto done;
fail:
	dataset_free(d);
done:
	trl_free(buf);
	free(L.msgs);
	free(L.pieces);
	json_buf_free(&L.extra);
	json_buf_free(&L.joint);
	return rc;
}

void dataset_free(Dataset *d)
{
	free(d->ex);
	free(d->id_pool);
	free(d->mask_pool);
	free(d->extra_pool);
	memset(d, 0, sizeof *d);
}

int rows_unpacked(RowSet *rs, const Dataset *d, TrlErr *err)
{
	memset(rs, 0, sizeof *rs);
	rs->rows = malloc((size_t)(d->n > 0 ? d->n : 1) * sizeof *rs->rows);
	rs->items = malloc((size_t)(d->n > 0 ? d->n : 1) * sizeof *rs->items);
	if (!rs->rows || !rs->items) {
		rows_free(rs);
		return trl_errf(err, TRL_ENOMEM, "out of memory building %d rows", d->n);
	}
	for (int i = 0; i < d->n; i++) {
		rs->rows[i] = (Row){.first = i, .count = 1, .len = d->ex[i].len};
		rs->items[i] = i;
	}
	rs->n = d->n;
	return 0;
}

/* A set of integers in [0, n) with "smallest member >= i" in O(log64 n): level 0
 * has one bit per integer, and bit k of level l+1 says whether word k of level l
 * is non-zero. The top level is a single word. */
typedef struct BitTree {
	int levels;
	uint64_t *lv[7];
	size_t nwords[7];
} BitTree;

static int bittree_init(BitTree *b, size_t n)
{
	memset(b, 0, sizeof *b);
	size_t bits = n ? n : 1;
	do {
		size_t words = (bits + 63) / 64;
		b->lv[b->levels] = calloc(words, sizeof(uint64_t));
		if (!b->lv[b->levels])
			return -1;
		b->nwords[b->levels++] = words;
		bits = words;
	} while (bits > 1);
	return 0;
}

static void bittree_free(BitTree *b)
{
	for (int l = 0; l < b->levels; l++)
		free(b->lv[l]);
	memset(b, 0, sizeof *b);
}

static void bittree_set(BitTree *b, size_t i)
{
	for (int l = 0; l < b->levels; l++) {
		b->lv[l][i >> 6] |= 1ULL << (i & 63);
		i >>= 6;
	}
}

static void bittree_clear(BitTree *b, size_t i)
{
	for (int l = 0; l < b->levels; l++) {
		b->lv[l][i >> 6] &= ~(1ULL << (i & 63));
		if (b->lv[l][i >> 6])
			break;
		i >>= 6;
	}
}

/* The smallest member >= i at level l, or -1. */
static long bittree_next(const BitTree *b, int l, size_t i)
{
	size_t w = i >> 6;
	if (w >= b->nwords[l])
		return -1;
	uint64_t m = b->lv[l][w] & (~0ULL << (i & 63));
	if (m)
		return (long)(w * 64 + (size_t)__builtin_ctzll(m));
	if (l + 1 >= b->levels)
		return -1;
	long wn = bittree_next(b, l + 1, w + 1);
	if (wn < 0)
		return -1;
	return wn * 64 + __builtin_ctzll(b->lv[l][wn]);
}

/* Best-fit decreasing, as TRL's pack_dataset(strategy="bfd"): examples in order of
 * decreasing length (ties by index), each into the open bin with the least
 * remaining space that still fits it, else a new bin. Bins with equal space are
 * used first-in first-out, and rows come out in the order bins were opened. */
int rows_pack_bfd(RowSet *rs, const Dataset *d, int max_length, TrlErr *err)
{
	memset(rs, 0, sizeof *rs);
	int n = d->n;
	if (max_length <= 0)
		return trl_errf(err, TRL_EINVAL, "packing needs max_length > 0, got %d",
		                max_length);
	for (int i = 0; i < n; i++)
		if (d->ex[i].len > max_length)
			return trl_errf(
			    err, TRL_EINVAL,
			    "example %d (line %d) has %d tokens, more than the "
			    "packing length %d",
			    i, d->ex[i].line, d->ex[i].len, max_length);
	size_t nn = (size_t)(n > 0 ? n : 1);
	size_t nc = (size_t)max_length + 1;
	int *order = malloc(nn * sizeof *order);
	int *bin_of = malloc(nn * sizeof *bin_of);
	int *count = calloc(nc + 1, sizeof *count);
	int *space = malloc(nn * sizeof *space); /* per bin */
	int *next = malloc(nn * sizeof *next);   /* per bin: FIFO link */
	int *head = malloc(nc * sizeof *head);   /* per remaining space */
	int *tail = malloc(nc * sizeof *tail);
	BitTree bt;
	int bt_ok = bittree_init(&bt, nc) == 0;
	rs->items = malloc(nn * sizeof *rs->items);
	int rc = 0;
	if (!order || !bin_of || !count || !space || !next || !head || !tail || !bt_ok ||
	    !rs->items) {
		rc = trl_errf(err, TRL_ENOMEM, "out of memory packing %d examples", n);
		goto done;
	}
	/* Counting sort by decreasing length; stable, so ties keep index order. */
	for (int i = 0; i < n; i++)
		count[max_length - d->ex[i].len]++;
	for (size_t k = 0, sum = 0; k <= nc; k++) {
		int c = count[k];
		count[k] = (int)sum;
		sum += (size_t)c;
	}
	for (int i = 0; i < n; i++)
		order[count[max_length - d->ex[i].len]++] = i;
	for (size_t k = 0; k < nc; k++)
		head[k] = tail[k] = -1;
	int nbins = 0;
	for (int k = 0; k < n; k++) {
		int e = order[k], len = d->ex[e].len;
		long s = bittree_next(&bt, 0, (size_t)len);
		int b;
		if (s >= 0) {
			b = head[s];
			head[s] = next[b];
			if (head[s] < 0) {
				tail[s] = -1;
				bittree_clear(&bt, (size_t)s);
			}
		} else {
			b = nbins++;
			space[b] = max_length;
		}
		bin_of[e] = b;
		space[b] -= len;
		if (space[b] > 0) {
			int r = space[b];
			next[b] = -1;
			if (tail[r] >= 0)
				next[tail[r]] = b;
			else
				head[r] = b;
			tail[r] = b;
			bittree_set(&bt, (size_t)r);
		}
	}
	rs->rows = calloc((size_t)(nbins > 0 ? nbins : 1), sizeof *rs->rows);
	if (!rs->rows) {
		rc = trl_errf(err, TRL_ENOMEM, "out of memory packing %d examples", n);
		goto done;
	}
	for (int e = 0; e < n; e++) {
		rs->rows[bin_of[e]].count++;
		rs->rows[bin_of[e]].len += d->ex[e].len;
	}
	for (int b = 0, first = 0; b < nbins; b++) {
		rs->rows[b].first = first;
		first += rs->rows[b].count;
		rs->rows[b].count = 0;
	}
	/* Within a row, examples keep the order they were placed in. */
	for (int k = 0; k < n; k++) {
		Row *r = &rs->rows[bin_of[order[k]]];
		rs->items[r->first + r->count++] = order[k];
	}
	rs->n = nbins;
done:
	free(order);
	free(bin_of);
	free(count);
	free(space);
	free(next);
	free(head);
	free(tail);
	bittree_free(&bt);
	if (rc < 0)
		rows_free(rs);
	return rc;
}

void rows_free(RowSet *rs)
{
	free(rs->rows);
	free(rs->items);
	memset(rs, 0, sizeof *rs);
}

int rows_max_len(const RowSet *rs)
{
	int m = 0;
	for (int i = 0; i < rs->n; i++)
		if (rs->rows[i].len > m)
			m = rs->rows[i].len;
	return m;
}

/* Padding positions get position 0, so they stay valid ids for any position
 * table; they carry no target, and doc -1 keeps attention from mixing them in. */
long batch_fill(Batch *b, const Dataset *d, const RowSet *rs, const int *idx, int nrows,
                int pad_id)
{
	int T = 0;
	for (int r = 0; r < nrows; r++)
		if (rs->rows[idx[r]].len > T)
			T = rs->rows[idx[r]].len;
	b->B = nrows;
	b->T = T;
	long ntarget = 0;
	for (int r = 0; r < nrows; r++) {
		const Row *row = &rs->rows[idx[r]];
		size_t base = (size_t)r * (size_t)T;
		int t = 0;
		for (int k = 0; k < row->count; k++) {
			const Example *e = &d->ex[rs->items[row->first + k]];
			for (int j = 0; j < e->len; j++, t++) {
				b->ids[base + t] = e->ids[j];
				b->pos[base + t] = j;
				b->doc[base + t] = k;
				if (j + 1 < e->len && e->mask[j + 1]) {
					b->targets[base + t] = e->ids[j + 1];
					ntarget++;
				} else {
					b->targets[base + t] = -1;
				}
			}
		}
		for (; t < T; t++) {
			b->ids[base + t] = pad_id;
			b->pos[base + t] = 0;
			b->doc[base + t] = -1;
			b->targets[base + t] = -1;
		}
	}
	return ntarget;
}

/* Writes row r (of T positions) of b: the tokens a[0..na) then c[0..nc), cut
 * to T, with their masks; positions from 0, padding after. Returns the
 * number of targets. */
static long put_row(Batch *b, int r, int T, const int32_t *a, const uint8_t *ma, int na,
                    const int32_t *c, const uint8_t *mc, int nc, int pad_id)
{
	size_t base = (size_t)r * (size_t)T;
	int n = na + nc < T ? na + nc : T;
	long ntarget = 0;
	for (int t = 0; t < T; t++) {
		size_t o = base + (size_t)t;
		if (t >= n) {
			b->ids[o] = pad_id;
			b->pos[o] = 0;
			b->doc[o] = -1;
			b->targets[o] = -1;
			continue;
		}
		b->ids[o] = t < na ? a[t] : c[t - na];
		b->pos[o] = t;
		b->doc[o] = 0;
		int u = t + 1;
		int m = u < n && (u < na ? ma[u] : mc[u - na]);
		b->targets[o] = m ? (u < na ? a[u] : c[u - na]) : -1;
		ntarget += m;
	}
	return ntarget;
}

long batch_fill_pairs(Batch *b, const Dataset *d, const int *idx, int n, int pad_id)
{
	int T = 1;
	for (int i = 0; i < n; i++) {
		const Example *e = &d->ex[idx[i]];
		T = e->len > T ? e->len : T;
		T = e->rejected_len > T ? e->rejected_len : T;
	}
	b->B = 2 * n;
	b->T = T;
	long ntarget = 0;
	for (int i = 0; i < n; i++) {
		const Example *e = &d->ex[idx[i]];
		ntarget +=
		    put_row(b, i, T, e->ids, e->mask, e->len, NULL, NULL, 0, pad_id);
		ntarget += put_row(b, n + i, T, e->rejected_ids, e->rejected_mask,
		                   e->rejected_len, NULL, NULL, 0, pad_id);
	}
	return ntarget;
}

long batch_fill_mismatched(Batch *b, const Dataset *d, const int *idx, const int *partner,
                           int n, int max_len, int pad_id)
{
	int T = 1;
	for (int i = 0; i < n; i++) {
		const Example *e = &d->ex[idx[i]], *p = &d->ex[partner[i]];
		int len = e->prompt_len + p->len - p->prompt_len;
		len = max_len > 0 && len > max_len ? max_len : len;
		T = len > T ? len : T;
	}
	b->B = n;
	b->T = T;
	long ntarget = 0;
	for (int i = 0; i < n; i++) {
		const Example *e = &d->ex[idx[i]], *p = &d->ex[partner[i]];
		ntarget += put_row(b, i, T, e->ids, e->mask, e->prompt_len,
		                   p->ids + p->prompt_len, p->mask + p->prompt_len,
		                   p->len - p->prompt_len, pad_id);
	}
	return ntarget;
}

int dataset_unpair(Dataset *d, TrlErr *err)
{
	if (d->format != TRL_FMT_PREFERENCE)
		return TRL_OK;
	Example *ex = malloc((size_t)(2 * d->n > 0 ? 2 * d->n : 1) * sizeof *ex);
	if (!ex)
		return trl_errf(err, TRL_ENOMEM, "out of memory unpairing %d pairs",
		                d->n);
	/* TRL maps the pairs in batches of 1000 (datasets' default), each
	 * giving its chosen rows, then its rejected rows. */
	enum { CHUNK = 1000 };
	for (int i = 0; i < d->n; i++) {
		const Example *e = &d->ex[i];
		int c0 = i / CHUNK * CHUNK, m = d->n - c0 < CHUNK ? d->n - c0 : CHUNK;
		Example c = *e, r = *e;
		c.rejected_ids = r.rejected_ids = NULL;
		c.rejected_mask = r.rejected_mask = NULL;
		c.rejected_len = r.rejected_len = r.rejected_prompt_len =
		    c.rejected_prompt_len = 0;
		c.label = 1;
		r.ids = e->rejected_ids;
		r.mask = e->rejected_mask;
		r.len = e->rejected_len;
		r.prompt_len = e->rejected_prompt_len;
		r.label = 0;
		ex[2 * c0 + (i - c0)] = c;
		ex[2 * c0 + m + (i - c0)] = r;
	}
	free(d->ex);
	d->ex = ex;
	d->n *= 2;
	d->format = TRL_FMT_UNPAIRED_PREFERENCE;
	return TRL_OK;
}

void sampler_permutation(int *perm, int n, uint64_t seed, long epoch)
{
	Rng r;
	rng_seed(&r, (seed * 0x9E3779B97F4A7C15ULL) ^ ((uint64_t)epoch + 1));
	for (int i = 0; i < n; i++)
		perm[i] = i;
	for (int i = n - 1; i > 0; i--) {
		int j = (int)rng_below(&r, (uint64_t)i + 1);
		int tmp = perm[i];
		perm[i] = perm[j];
		perm[j] = tmp;
	}
}
