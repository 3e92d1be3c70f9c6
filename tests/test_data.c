/* test_data.c - the JSON parser, byte tokenizer, JSONL datasets, packing, batches
 * and the sampler. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dataset.h"
#include "json.h"
#include "rng.h"
#include "tokenizer.h"

/* Temporary files made by a test, removed by the fixture. */
static char tmp_paths[16][64];
static int n_tmp;

static void tmp_cleanup(void)
{
	for (int i = 0; i < n_tmp; i++)
		unlink(tmp_paths[i]);
	n_tmp = 0;
}

/* Writes content to a fresh /tmp/trl_data_XXXXXX.jsonl and returns its path. */
static const char *write_tmp(const char *content)
{
	cr_assert_lt(n_tmp, 16);
	char *path = tmp_paths[n_tmp++];
	snprintf(path, 64, "/tmp/trl_data_XXXXXX.jsonl");
	int fd = mkstemps(path, 6);
	cr_assert_geq(fd, 0, "mkstemps failed");
	size_t len = strlen(content);
	cr_assert_eq(write(fd, content, len), (ssize_t)len);
	close(fd);
	return path;
}

TestSuite(json);
TestSuite(tokenizer);
TestSuite(dataset, .fini = tmp_cleanup);
TestSuite(packing);
TestSuite(batch, .fini = tmp_cleanup);
TestSuite(sampler);

/* ---- JSON ---- */

static JsonValue *parse_ok(const char *text)
{
	JsonValue *v = NULL;
	JsonError e;
	int rc = json_parse(text, strlen(text), &v, &e);
	cr_assert_eq(rc, 0, "parse of %s failed at %d:%d: %s", text, e.line, e.column,
	             e.msg);
	return v;
}

Test(json, parses_a_document_keeping_member_order)
{
	JsonValue *v =
	    parse_ok(" {\"b\": [1, -2.5, 3e2, true, false, null],\n"
	             "  \"a\": {\"x\": \"y\", \"empty\": {}, \"none\": []}, \"c\": 0 } ");
	cr_assert_eq(v->type, JSON_OBJECT);
	cr_assert_eq(v->len, 3);
	cr_assert_str_eq(v->members[0].key, "b");
	cr_assert_str_eq(v->members[1].key, "a");
	cr_assert_str_eq(v->members[2].key, "c");
	const JsonValue *b = json_get(v, "b");
	cr_assert_eq(b->type, JSON_ARRAY);
	cr_assert_eq(b->len, 6);
	cr_assert(b->items[0].is_int && b->items[0].inum == 1);
	cr_assert(!b->items[1].is_int && b->items[1].num == -2.5);
	cr_assert(!b->items[2].is_int && b->items[2].num == 300.0);
	int64_t i64;
	cr_assert_eq(json_int(&b->items[2], &i64), 0, "3e2 is an integer value");
	cr_assert_eq(i64, 300);
	cr_assert_neq(json_int(&b->items[1], &i64), 0);
	cr_assert(b->items[3].type == JSON_BOOL && b->items[3].boolean == 1);
	cr_assert(b->items[4].type == JSON_BOOL && b->items[4].boolean == 0);
	cr_assert_eq(b->items[5].type, JSON_NULL);
	const JsonValue *a = json_get(v, "a");
	cr_assert_str_eq(json_str(json_get(a, "x")), "y");
	cr_assert_eq(json_get(a, "empty")->type, JSON_OBJECT);
	cr_assert_eq(json_get(a, "empty")->len, 0);
	cr_assert_eq(json_get(a, "none")->type, JSON_ARRAY);
	cr_assert_eq(json_get(a, "none")->len, 0);
	cr_assert_null(json_get(v, "missing"));
	cr_assert_null(json_get(b, "b"), "json_get on an array is NULL");
	cr_assert_null(json_at(b, 6));
	cr_assert_eq(json_at(b, 5)->type, JSON_NULL);
	cr_assert_null(json_str(json_get(v, "c")));
	json_free(v);
}

Test(json, scalar_roots_and_duplicate_keys)
{
	JsonValue *v = parse_ok("\"hi\"");
	cr_assert_eq(v->type, JSON_STRING);
	cr_assert_str_eq(v->str, "hi");
	json_free(v);
	v = parse_ok("{\"k\": 1, \"k\": 2}");
	cr_assert_eq(v->len, 2, "duplicates are kept");
	cr_assert_eq(json_get(v, "k")->inum, 2, "json_get returns the last, like Python");
	json_free(v);
	json_free(NULL);
}

Test(json, int64_limits_and_big_numbers)
{
	JsonValue *v =
	    parse_ok("[9223372036854775807, -9223372036854775808, "
	             "9223372036854775808, -0, 1.5e-3, 12345678901234567890123]");
	cr_assert(v->items[0].is_int && v->items[0].inum == INT64_MAX);
	cr_assert(v->items[1].is_int && v->items[1].inum == INT64_MIN);
	cr_assert(!v->items[2].is_int, "2^63 does not fit int64");
	cr_assert_float_eq(v->items[2].num, 9223372036854775808.0, 1.0);
	cr_assert(v->items[3].is_int && v->items[3].inum == 0);
	cr_assert_float_eq(v->items[4].num, 0.0015, 1e-18);
	cr_assert(!v->items[5].is_int);
	cr_assert_float_eq(v->items[5].num, 1.2345678901234568e22, 1e7);
	json_free(v);
}

Test(json, decodes_escapes)
{
	JsonValue *v =
	    parse_ok("\"q\\\" b\\\\ s\\/ \\b\\f\\n\\r\\t \\u0041\\u00e9\\u20AC\"");
	const char want[] = "q\" b\\ s/ \b\f\n\r\t A\xC3\xA9\xE2\x82\xAC";
	cr_assert_eq(v->len, sizeof want - 1);
	cr_assert_eq(memcmp(v->str, want, sizeof want), 0, "decoded: %s", v->str);
	json_free(v);
	v = parse_ok("\"a\\u0000b\"");
	cr_assert_eq(v->len, 3, "\\u0000 is a byte of the string");
	cr_assert_eq(memcmp(v->str, "a\0b", 4), 0);
	json_free(v);
	v = parse_ok("{\"k\\u00e9y\": 1}");
	cr_assert_str_eq(v->members[0].key, "k\xC3\xA9y");
	cr_assert_not_null(json_get(v, "k\xC3\xA9y"));
	json_free(v);
}

Test(json, surrogate_pairs_become_four_byte_utf8)
{
	JsonValue *v =
	    parse_ok("[\"\\uD83D\\uDE00\", \"\\udbff\\udfff\", \"\\ud800\\udc00\"]");
	cr_assert_str_eq(v->items[0].str, "\xF0\x9F\x98\x80");
	cr_assert_str_eq(v->items[1].str, "\xF4\x8F\xBF\xBF");
	cr_assert_str_eq(v->items[2].str, "\xF0\x90\x80\x80");
	json_free(v);
}

Test(json, raw_utf8_passes_through)
{
	const char *s =
	    "\"h\xC3\xA9llo \xE4\xB8\x96\xE7\x95\x8C \xF0\x9F\x99\x82 \xEF\xBF\xBF\"";
	JsonValue *v = parse_ok(s);
	cr_assert_eq(v->len, strlen(s) - 2);
	cr_assert_eq(memcmp(v->str, s + 1, v->len), 0);
	json_free(v);
}

Test(json, text_need_not_be_nul_terminated)
{
	const char buf[] = "[1,2]garbage";
	JsonValue *v = NULL;
	JsonError e;
	cr_assert_eq(json_parse(buf, 5, &v, &e), 0);
	cr_assert_eq(v->len, 2);
	json_free(v);
	/* The closing quote lies beyond len: the string is unterminated. */
	cr_assert_neq(json_parse("\"abc\"", 4, &v, &e), 0);
	cr_assert_null(v);
}

typedef struct BadJson {
	const char *text;
	size_t len; /* 0: strlen */
	int line, column;
	const char *msg; /* a substring of the message */
} BadJson;

static const BadJson bad_json[] = {
    {"", 0, 1, 1, "empty input"},
    {"   \n ", 0, 2, 2, "empty input"},
    {"{", 0, 1, 2, "expected a string as object member name, got end of input"},
    {"[", 0, 1, 2, "unexpected end of input"},
    {"[1,]", 0, 1, 4, "trailing comma before ']'"},
    {"{\"a\":1,}", 0, 1, 8, "trailing comma before '}'"},
    {"[1 2]", 0, 1, 4, "expected ',' or ']' after an array item, got '2'"},
    {"{\"a\":1 \"b\":2}", 0, 1, 8, "expected ',' or '}' after an object member"},
    {"{\"a\" 1}", 0, 1, 6, "expected ':' after object member name"},
    {"{1:2}", 0, 1, 2, "expected a string as object member name, got '1'"},
    {"tru", 0, 1, 1, "invalid literal"},
    {"[nul]", 0, 1, 2, "invalid literal"},
    {"True", 0, 1, 1, "unexpected 'T'"},
    {"NaN", 0, 1, 1, "unexpected 'N'"},
    {"+1", 0, 1, 1, "unexpected '+'"},
    {".5", 0, 1, 1, "unexpected '.'"},
    {"01", 0, 1, 1, "leading zeros"},
    {"-01", 0, 1, 1, "leading zeros"},
    {"1.", 0, 1, 3, "expected a digit after '.'"},
    {"1.e3", 0, 1, 3, "expected a digit after '.'"},
    {"1e", 0, 1, 3, "expected a digit in the exponent"},
    {"1e+", 0, 1, 4, "expected a digit in the exponent"},
    {"-", 0, 1, 2, "expected a digit after '-'"},
    {"1e999", 0, 1, 1, "out of the range of a double"},
    {"\"abc", 0, 1, 1, "unterminated string"},
    {"\"abc\\", 0, 1, 1, "unterminated string"},
    {"\"a\x01z\"", 0, 1, 3, "raw control character 0x01"},
    {"\"a\nz\"", 0, 1, 3, "raw control character 0x0A"},
    {"\"a\tz\"", 0, 1, 3, "raw control character 0x09"},
    {"\"\\x\"", 0, 1, 2, "invalid escape after '\\': 'x'"},
    {"\"\\u12G4\"", 0, 1, 2, "invalid \\u escape"},
    {"\"\\u12\"", 0, 1, 2, "invalid \\u escape"},
    {"\"ab\\uD83D\"", 0, 1, 4, "unpaired high surrogate \\uD83D"},
    {"\"\\uD83D\\u0041\"", 0, 1, 2, "unpaired high surrogate"},
    {"\"\\uD83Dx\"", 0, 1, 2, "unpaired high surrogate"},
    {"\"\\uDE00\"", 0, 1, 2, "unpaired low surrogate \\uDE00"},
    {"\"\xC3\"", 0, 1, 2, "invalid UTF-8 byte 0xC3"},
    {"\"a\xC0\xAF\"", 0, 1, 3, "invalid UTF-8 byte 0xC0"},
    {"\"\xE0\x80\xAF\"", 0, 1, 2, "invalid UTF-8 byte 0xE0"},
    {"\"\xED\xA0\x80\"", 0, 1, 2, "invalid UTF-8 byte 0xED"},
    {"\"\xF4\x90\x80\x80\"", 0, 1, 2, "invalid UTF-8 byte 0xF4"},
    {"\"\xF5\x80\x80\x80\"", 0, 1, 2, "invalid UTF-8 byte 0xF5"},
    {"\"\xFF\"", 0, 1, 2, "invalid UTF-8 byte 0xFF"},
    {"\"\x80\"", 0, 1, 2, "invalid UTF-8 byte 0x80"},
    {"\"\xE4\xB8\"", 0, 1, 2, "invalid UTF-8 byte 0xE4"},
    {"\xC3\xA9", 0, 1, 1, "unexpected byte 0xC3"},
    {"1 2", 0, 1, 3, "unexpected '2' after the JSON value"},
    {"{} {}", 0, 1, 4, "after the JSON value"},
    {"[1]\n  x", 0, 2, 3, "unexpected 'x' after the JSON value"},
    {"{\"a\":\n [1,\n  2,\n  ]}", 0, 4, 3, "trailing comma"},
    {"[1]\0", 4, 1, 4, "unexpected byte 0x00"},
    {"// c\n1", 0, 1, 1, "unexpected '/'"},
};

Test(json, every_error_kind_reports_line_column_and_problem)
{
	for (size_t i = 0; i < sizeof bad_json / sizeof bad_json[0]; i++) {
		const BadJson *b = &bad_json[i];
		size_t len = b->len ? b->len : strlen(b->text);
		JsonValue *v = (JsonValue *)0x1;
		JsonError e;
		int rc = json_parse(b->text, len, &v, &e);
		cr_expect_eq(rc, TRL_EFORMAT, "case %zu (%s) parsed", i, b->text);
		cr_expect_null(v, "case %zu leaves *out NULL", i);
		if (rc != TRL_EFORMAT)
			continue;
		cr_expect(strstr(e.msg, b->msg) != NULL,
		          "case %zu: message '%s' lacks '%s'", i, e.msg, b->msg);
		cr_expect_eq(e.line, b->line, "case %zu (%s): line %d, want %d", i, e.msg,
		             e.line, b->line);
		cr_expect_eq(e.column, b->column, "case %zu (%s): column %d, want %d", i,
		             e.msg, e.column, b->column);
	}
}

/* Alternating objects and arrays, depth levels deep: {"k":[{"k":[...0...]}]}. */
static char *nested(int depth)
{
	char *s = malloc(8 * (size_t)depth + 16);
	size_t n = 0;
	for (int i = 0; i < depth; i++)
		n += (size_t)sprintf(s + n, i % 2 ? "[" : "{\"k\":");
	n += (size_t)sprintf(s + n, "0");
	for (int i = depth - 1; i >= 0; i--)
		s[n++] = i % 2 ? ']' : '}';
	s[n] = 0;
	return s;
}

Test(json, deep_nesting_up_to_the_limit_then_an_error)
{
	char *s = nested(JSON_MAX_DEPTH);
	JsonValue *v = parse_ok(s);
	const JsonValue *x = v;
	for (int i = 0; i < JSON_MAX_DEPTH; i++)
		x = i % 2 ? json_at(x, 0) : json_get(x, "k");
	cr_assert(x && x->type == JSON_NUMBER && x->inum == 0);
	json_free(v);
	free(s);

	s = nested(JSON_MAX_DEPTH + 1);
	JsonError e;
	cr_assert_eq(json_parse(s, strlen(s), &v, &e), TRL_EFORMAT);
	cr_assert(strstr(e.msg, "nesting deeper than"), "%s", e.msg);
	free(s);

	/* Far deeper than any stack would take: still an error, not a crash. */
	size_t n = 1000000;
	s = malloc(n);
	memset(s, '[', n);
	cr_assert_eq(json_parse(s, n, &v, &e), TRL_EFORMAT);
	cr_assert_eq(e.column, JSON_MAX_DEPTH + 1);
	free(s);
}

Test(json, large_object_like_a_tokenizer_vocab)
{
	int n = 100000;
	JsonBuf b = {0};
	json_buf_puts(&b, "{\"model\": {\"vocab\": {");
	for (int i = 0; i < n; i++)
		json_buf_printf(&b, "%s\"tok\\u0120%d\": %d", i ? ", " : "", i, i);
	json_buf_puts(&b, "}, \"merges\": [");
	for (int i = 0; i < n; i++)
		json_buf_printf(&b, "%s\"a%d b%d\"", i ? ", " : "", i, i);
	json_buf_puts(&b, "]}}");
	cr_assert(!b.oom);
	JsonValue *v = NULL;
	JsonError e;
	cr_assert_eq(json_parse(b.p, b.len, &v, &e), 0, "%s", e.msg);
	const JsonValue *vocab = json_get(json_get(v, "model"), "vocab");
	cr_assert_eq(vocab->len, (size_t)n);
	cr_assert_str_eq(vocab->members[777].key, "tok\xC4\xA0"
	                                          "777");
	cr_assert_eq(vocab->members[777].value.inum, 777);
	const JsonValue *merges = json_get(json_get(v, "model"), "merges");
	cr_assert_eq(merges->len, (size_t)n);
	cr_assert_str_eq(json_str(json_at(merges, n - 1)), "a99999 b99999");
	json_free(v);
	json_buf_free(&b);
}

Test(json, buffer_string_escaping_round_trips)
{
	const char raw[] =
	    "quote\" backslash\\ nl\n tab\t cr\r bell\a nul\0 utf8 \xC3\xA9 del\x7f";
	JsonBuf b = {0};
	json_buf_puts(&b, "[");
	json_buf_string(&b, raw, sizeof raw - 1);
	json_buf_printf(&b, ",%d,%s]", 42, "true");
	cr_assert(!b.oom);
	cr_assert_eq(b.p[b.len], 0);
	JsonValue *v = parse_ok(b.p);
	cr_assert_eq(v->items[0].len, sizeof raw - 1);
	cr_assert_eq(memcmp(v->items[0].str, raw, sizeof raw - 1), 0);
	cr_assert_eq(v->items[1].inum, 42);
	cr_assert_eq(v->items[2].boolean, 1);
	json_free(v);
	json_buf_free(&b);
	cr_assert_null(b.p);
}

Test(json, load_file_reports_path_line_and_column, .fini = tmp_cleanup)
{
	const char *path = write_tmp("{\n  \"a\": 1,\n  \"b\": tru\n}\n");
	JsonValue *v = NULL;
	TrlErr err = {0};
	cr_assert_eq(json_load_file(path, &v, &err), TRL_EFORMAT);
	char want[256];
	snprintf(want, sizeof want, "%s:3:8: invalid literal", path);
	cr_assert(strstr(err.msg, want), "%s", err.msg);
	path = write_tmp("{\"vocab_size\": 258}");
	cr_assert_eq(json_load_file(path, &v, &err), 0);
	int64_t n;
	cr_assert_eq(json_int(json_get(v, "vocab_size"), &n), 0);
	cr_assert_eq(n, 258);
	json_free(v);
	cr_assert_eq(json_load_file("/nonexistent/config.json", &v, &err), TRL_EIO);
	cr_assert(strstr(err.msg, "/nonexistent/config.json"), "%s", err.msg);
}

/* ---- tokenizer ---- */

Test(tokenizer, byte_tokenizer_ids)
{
	Tokenizer t;
	tokenizer_init_bytes(&t);
	cr_assert_eq(t.vocab_size, 258);
	cr_assert_eq(t.eos_id, 256);
	cr_assert_eq(t.pad_id, 257);
	cr_assert_eq(t.bos_id, -1);
	cr_assert_str_eq(t.special[0], "<|endoftext|>");
	cr_assert_str_eq(t.special[1], "<|pad|>");
	tokenizer_free(&t);
}

Test(tokenizer, utf8_round_trip)
{
	Tokenizer t;
	tokenizer_init_bytes(&t);
	const char *s =
	    "h\xC3\xA9llo, \xE4\xB8\x96\xE7\x95\x8C \xF0\x9F\x99\x82 <|endoftext|>";
	int32_t ids[64];
	TrlErr err;
	int n = tokenizer_encode(&t, s, strlen(s), ids, 64, &err);
	cr_assert_eq(n, (int)strlen(s), "one id per byte");
	cr_assert_eq(ids[1], 0xC3);
	cr_assert_eq(ids[2], 0xA9);
	for (int i = 0; i < n; i++)
		cr_assert(ids[i] >= 0 && ids[i] < 256, "special-token text stays bytes");
	char out[64];
	size_t len = tokenizer_decode(&t, ids, n, 0, out, sizeof out);
	cr_assert_eq(len, strlen(s));
	cr_assert_str_eq(out, s);
}

Test(tokenizer, encode_reports_the_needed_length_beyond_cap)
{
	Tokenizer t;
	tokenizer_init_bytes(&t);
	int32_t ids[4] = {-7, -7, -7, -7};
	TrlErr err;
	cr_assert_eq(tokenizer_encode(&t, "abcdef", 6, ids, 3, &err), 6);
	cr_assert_eq(ids[2], 'c');
	cr_assert_eq(ids[3], -7, "nothing written past cap");
	cr_assert_eq(tokenizer_encode(&t, "", 0, ids, 4, &err), 0);
}

Test(tokenizer, decode_specials_and_truncation)
{
	Tokenizer t;
	tokenizer_init_bytes(&t);
	int32_t ids[] = {'h', 'i', 256, 257, 9999, -1, '!'};
	char buf[64];
	size_t n = tokenizer_decode(&t, ids, 7, 0, buf, sizeof buf);
	cr_assert_str_eq(buf, "hi<|endoftext|><|pad|>!");
	cr_assert_eq(n, strlen(buf));
	n = tokenizer_decode(&t, ids, 7, 1, buf, sizeof buf);
	cr_assert_str_eq(buf, "hi!");
	cr_assert_eq(n, 3);
	char small[6];
	n = tokenizer_decode(&t, ids, 7, 0, small, sizeof small);
	cr_assert_eq(n, strlen("hi<|endoftext|><|pad|>!"));
	cr_assert_str_eq(small, "hi<|e");
	cr_assert_eq(tokenizer_decode(&t, ids, 2, 0, NULL, 0), 2);
}

/* ---- datasets ---- */

static DatasetOptions opts(void)
{
	return (DatasetOptions){.text_field = "text",
	                        .max_length = 0,
	                        .keep_end = 0,
	                        .completion_only_loss = -1,
	                        .skip_invalid_rows = 0};
}

static int load(Dataset *d, const char *content, const DatasetOptions *o, TrlErr *err,
                const char **path)
{
	Tokenizer t;
	tokenizer_init_bytes(&t);
	const char *p = write_tmp(content);
	if (path)
		*path = p;
	return dataset_load_jsonl(d, p, o, &t, err);
}

static void expect_example(const Example *e, const char *ids_text, int eos,
                           const char *mask, int prompt_len)
{
	int n = (int)strlen(ids_text) + (eos ? 1 : 0);
	cr_assert_eq(e->len, n, "len %d, want %d", e->len, n);
	for (int i = 0; i < (int)strlen(ids_text); i++)
		cr_assert_eq(e->ids[i], (unsigned char)ids_text[i], "ids[%d]", i);
	if (eos)
		cr_assert_eq(e->ids[n - 1], 256, "EOS appended");
	for (int i = 0; i < n; i++)
		cr_assert_eq(e->mask[i], mask[i] - '0', "mask[%d] = %d, want %c", i,
		             e->mask[i], mask[i]);
	cr_assert_eq(e->prompt_len, prompt_len, "prompt_len %d, want %d", e->prompt_len,
	             prompt_len);
}

Test(dataset, language_modeling_rows)
{
	Dataset d;
	TrlErr err;
	DatasetOptions o = opts();
	cr_assert_eq(load(&d,
	                  "{\"text\": \"ab\", \"id\": 7}\n\n  \n{\"text\": \"\"}\r\n"
	                  "{\"text\": \"h\\u00e9\"}",
	                  &o, &err, NULL),
	             0, "%s", err.msg);
	cr_assert_eq(d.format, TRL_FMT_LANGUAGE_MODELING);
	cr_assert_eq(d.n, 3);
	expect_example(&d.ex[0], "ab", 1, "011", 0);
	expect_example(&d.ex[1], "", 1, "0", 0);
	expect_example(&d.ex[2], "h\xC3\xA9", 1, "0111", 0);
	cr_assert_eq(d.ex[0].line, 1);
	cr_assert_eq(d.ex[1].line, 4, "blank lines count for line numbers");
	cr_assert_eq(d.ex[2].line, 5);
	cr_assert_eq(d.n_tokens, 3 + 1 + 4);
	cr_assert_eq(d.n_skipped, 0);
	cr_assert_eq(d.n_truncated, 0);
	cr_assert_eq(d.ex[0].ids, d.id_pool, "examples live in the pool");
	cr_assert_eq(d.ex[1].ids, d.ex[0].ids + 3);
	cr_assert_eq(d.ex[2].mask, d.mask_pool + 4);
	dataset_free(&d);
	cr_assert_null(d.ex);
	dataset_free(&d);
}

Test(dataset, byte_order_mark_is_skipped)
{
	Dataset d;
	TrlErr err;
	DatasetOptions o = opts();
	cr_assert_eq(load(&d, "\xEF\xBB\xBF{\"text\": \"a\"}\n", &o, &err, NULL), 0, "%s",
	             err.msg);
	expect_example(&d.ex[0], "a", 1, "01", 0);
	dataset_free(&d);
}

Test(dataset, custom_text_field)
{
	Dataset d;
	TrlErr err;
	DatasetOptions o = opts();
	o.text_field = "content";
	cr_assert_eq(load(&d, "{\"content\": \"xy\", \"text\": 3}\n", &o, &err, NULL), 0,
	             "%s", err.msg);
	expect_example(&d.ex[0], "xy", 1, "011", 0);
	dataset_free(&d);
}

Test(dataset, prompt_completion_rows_and_completion_only_loss)
{
	const char *rows =
	    "{\"prompt\": \"ab\", \"completion\": \"c\"}\n"
	    "{\"completion\": \"\", \"prompt\": \"17+25=\", \"meta\": [1]}\n";
	int settings[3] = {-1, 1, 0};
	const char *mask0[3] = {"0011", "0011", "0111"};
	const char *mask1[3] = {"0000001", "0000001", "0111111"};
	for (int s = 0; s < 3; s++) {
		Dataset d;
		TrlErr err;
		DatasetOptions o = opts();
		o.completion_only_loss = settings[s];
		cr_assert_eq(load(&d, rows, &o, &err, NULL), 0, "%s", err.msg);
		cr_assert_eq(d.format, TRL_FMT_PROMPT_COMPLETION);
		cr_assert_eq(d.n, 2);
		expect_example(&d.ex[0], "abc", 1, mask0[s], 2);
		expect_example(&d.ex[1], "17+25=", 1, mask1[s], 6);
		dataset_free(&d);
	}
}

Test(dataset, prompt_wins_over_text_as_in_trl)
{
	Dataset d;
	TrlErr err;
	DatasetOptions o = opts();
	cr_assert_eq(
	    load(&d, "{\"text\": \"zz\", \"prompt\": \"a\", \"completion\": \"b\"}\n", &o,
	         &err, NULL),
	    0, "%s", err.msg);
	cr_assert_eq(d.format, TRL_FMT_PROMPT_COMPLETION);
	expect_example(&d.ex[0], "ab", 1, "011", 1);
	dataset_free(&d);
}

Test(dataset, truncation_keep_start)
{
	Dataset d;
	TrlErr err;
	DatasetOptions o = opts();
	o.max_length = 6;
	cr_assert_eq(load(&d,
	                  "{\"prompt\": \"abcd\", \"completion\": \"efgh\"}\n"
	                  "{\"prompt\": \"abcdefgh\", \"completion\": \"ij\"}\n"
	                  "{\"prompt\": \"a\", \"completion\": \"bcd\"}\n",
	                  &o, &err, NULL),
	             0, "%s", err.msg);
	cr_assert_eq(d.n_truncated, 2);
	expect_example(&d.ex[0], "abcdef", 0, "000011", 4);
	expect_example(&d.ex[1], "abcdef", 0, "000000", 6);
	expect_example(&d.ex[2], "abcd", 1, "01111", 1);
	cr_assert_eq(d.n_tokens, 6 + 6 + 5);
	cr_assert_eq(d.ex[2].ids, d.ex[1].ids + 6, "the pool holds truncated examples");
	dataset_free(&d);
}

Test(dataset, truncation_keep_end)
{
	Dataset d;
	TrlErr err;
	DatasetOptions o = opts();
	o.max_length = 6;
	o.keep_end = 1;
	cr_assert_eq(load(&d,
	                  "{\"prompt\": \"abcd\", \"completion\": \"efgh\"}\n"
	                  "{\"prompt\": \"abcd\", \"completion\": \"efghijk\"}\n",
	                  &o, &err, NULL),
	             0, "%s", err.msg);
	cr_assert_eq(d.n_truncated, 2);
	/* abcdefgh+EOS keeps defgh+EOS: one prompt token survives. */
	int32_t want0[6] = {'d', 'e', 'f', 'g', 'h', 256};
	cr_assert_eq(memcmp(d.ex[0].ids, want0, sizeof want0), 0);
	cr_assert_eq(d.ex[0].prompt_len, 1);
	expect_example(&d.ex[0], "defgh", 1, "011111", 1);
	/* The prompt is cut entirely. */
	expect_example(&d.ex[1], "ghijk", 1, "011111", 0);
	dataset_free(&d);

	o.max_length = 3;
	cr_assert_eq(load(&d, "{\"text\": \"hello\"}\n", &o, &err, NULL), 0, "%s",
	             err.msg);
	expect_example(&d.ex[0], "lo", 1, "011", 0);
	cr_assert_eq(d.n_truncated, 1);
	dataset_free(&d);
}

static void expect_load_error(const char *content, DatasetOptions o, int code,
                              const char *fmt_after_path)
{
	Dataset d;
	TrlErr err = {0};
	const char *path;
	int rc = load(&d, content, &o, &err, &path);
	cr_assert_eq(rc, code, "rc %d, want %d (%s)", rc, code, err.msg);
	char want[512];
	snprintf(want, sizeof want, "%s%s", path, fmt_after_path);
	cr_assert_str_eq(err.msg, want);
	cr_assert_eq(d.n, 0, "a failed load leaves an empty dataset");
	cr_assert_null(d.ex);
	dataset_free(&d);
}

Test(dataset, invalid_json_names_line_and_column)
{
	expect_load_error("{\"text\": \"a\"}\n\n{\"text\": \"a\",}\n", opts(), TRL_EINVAL,
	                  ":3: invalid JSON at column 14: trailing comma before '}'");
	expect_load_error(
	    "{\"text\": \"a\"}\n{\"text\": \"a\xFF\"}\n", opts(), TRL_EINVAL,
	    ":2: invalid JSON at column 12: invalid UTF-8 byte 0xFF in a string");
	/* Columns count the bytes of the file's line, a byte order mark included. */
	expect_load_error(
	    "\xEF\xBB\xBF{\"text\" \"a\"}\n", opts(), TRL_EINVAL,
	    ":1: invalid JSON at column 12: expected ':' after object member "
	    "name, got '\"'");
}

Test(dataset, missing_column_names_the_format)
{
	expect_load_error("{\"prompt\": \"a\", \"completion\": \"b\"}\n"
	                  "{\"prompt\": \"a\", \"completion\": \"b\"}\n"
	                  "{\"prompt\": \"a\", \"completion\": \"b\"}\n"
	                  "{\"prompt\": \"a\", \"answer\": \"b\"}\n",
	                  opts(), TRL_EINVAL,
	                  ":4: column 'completion' is missing (the first row is "
	                  "prompt-completion: prompt, completion)");
	expect_load_error(
	    "{\"text\": \"a\"}\n{\"txt\": \"a\"}\n", opts(), TRL_EINVAL,
	    ":2: column 'text' is missing (the first row is language modeling: "
	    "text)");
}

Test(dataset, wrong_column_type)
{
	expect_load_error("{\"text\": \"a\"}\n{\"text\": 5}\n", opts(), TRL_EINVAL,
	                  ":2: column 'text' must be a string, got number");
	expect_load_error("{\"prompt\": \"a\", \"completion\": null}\n", opts(),
	                  TRL_EINVAL,
	                  ":1: column 'completion' must be a string, got null");
	expect_load_error("{\"text\": \"a\"}\n[\"text\"]\n", opts(), TRL_EINVAL,
	                  ":2: a row must be a JSON object, got array");
}

Test(dataset, no_rows_and_unreadable_file)
{
	expect_load_error("", opts(), TRL_EINVAL, ": no rows");
	expect_load_error("\n  \n\r\n", opts(), TRL_EINVAL, ": no rows");
	Dataset d;
	TrlErr err;
	Tokenizer t;
	tokenizer_init_bytes(&t);
	DatasetOptions o = opts();
	cr_assert_eq(dataset_load_jsonl(&d, "/nonexistent/train.jsonl", &o, &t, &err),
	             TRL_EIO);
	cr_assert_str_eq(
	    err.msg, "cannot open /nonexistent/train.jsonl: No such file or directory");
}

Test(dataset, unknown_columns)
{
	expect_load_error(
	    "{\"question\": \"a\", \"answer\": \"b\"}\n", opts(), TRL_EINVAL,
	    ":1: cannot tell the dataset format from the columns ('question', "
	    "'answer'): expected 'text' or 'messages' (language modeling), 'prompt' "
	    "(prompt-only), 'prompt' and 'completion' (prompt-completion), 'chosen' "
	    "and 'rejected' (preference), or 'prompt', 'completion' and 'label' "
	    "(unpaired preference)");
}

/* ---- every TRL format, standard and conversational ---- */

/* A stretch of expected text and whether its tokens are loss targets. */
typedef struct Seg {
	const char *text;
	int loss;
} Seg;

/* Checks a byte-tokenized sequence against segments (NULL-terminated): the ids
 * are the bytes of the texts, then EOS (256) when eos_loss >= 0 with that mask;
 * token 0 is never a target. */
static void expect_segs(const int32_t *ids, const uint8_t *mask, int len, int eos_loss,
                        const Seg *segs)
{
	int t = 0;
	for (const Seg *s = segs; s->text; s++)
		for (const char *c = s->text; *c; c++, t++) {
			cr_assert_lt(t, len, "sequence shorter than expected (%d)", len);
			cr_assert_eq(ids[t], (unsigned char)*c, "ids[%d] = %d, want '%c'",
			             t, ids[t], *c);
			cr_assert_eq(mask[t], t > 0 && s->loss,
			             "mask[%d] ('%c' in \"%s\")", t, *c, s->text);
		}
	if (eos_loss >= 0) {
		cr_assert_lt(t, len, "EOS missing");
		cr_assert_eq(ids[t], 256, "EOS appended");
		cr_assert_eq(mask[t], eos_loss, "EOS mask");
		t++;
	}
	cr_assert_eq(len, t, "len %d, want %d", len, t);
}

static int seg_len(const Seg *segs, int n)
{
	int len = 0;
	for (int i = 0; i < n && segs[i].text; i++)
		len += (int)strlen(segs[i].text);
	return len;
}

#define USER_HI "<|im_start|>user\nhi<|im_end|>\n"
#define GEN "<|im_start|>assistant\n"
#define MSG_HI "{\"role\": \"user\", \"content\": \"hi\"}"
#define MSG_YO "{\"role\": \"assistant\", \"content\": \"yo\"}"
#define MSG_NO "{\"role\": \"assistant\", \"content\": \"no\"}"

static void load_ok(Dataset *d, const char *content, const DatasetOptions *o)
{
	TrlErr err = {0};
	cr_assert_eq(load(d, content, o, &err, NULL), 0, "%s", err.msg);
}

Test(dataset, conversational_language_modeling)
{
	Dataset d;
	DatasetOptions o = opts();
	load_ok(&d,
	        "{\"messages\": [" MSG_HI ", " MSG_YO "], \"id\": 3}\n"
	        "{\"messages\": [" MSG_HI "]}\n",
	        &o);
	cr_assert_eq(d.format, TRL_FMT_LANGUAGE_MODELING);
	cr_assert(d.conversational);
	cr_assert_str_eq(d.columns, "messages");
	/* No EOS: SFT relies on the template's end of turn for conversations. */
	Seg all[] = {{USER_HI GEN "yo<|im_end|>\n", 1}, {NULL, 0}};
	expect_segs(d.ex[0].ids, d.ex[0].mask, d.ex[0].len, -1, all);
	cr_assert_eq(d.ex[0].prompt_len, 0);
	cr_assert_str_eq(d.ex[0].extra, "{\"id\": 3}");
	cr_assert_str_eq(d.ex[1].extra, "{}");
	cr_assert_eq(d.ex[0].label, -1);
	cr_assert_null(d.ex[0].rejected_ids);
	dataset_free(&d);
}

Test(dataset, assistant_only_loss_masks_exactly_the_assistant_turns)
{
	Dataset d;
	DatasetOptions o = opts();
	o.assistant_only_loss = 1;
	load_ok(
	    &d,
	    "{\"messages\": [{\"role\": \"system\", \"content\": \"be brief\"}, " MSG_HI
	    ", " MSG_YO ", " MSG_HI ", " MSG_NO "]}\n",
	    &o);
	Seg s[] = {{"<|im_start|>system\nbe brief<|im_end|>\n" USER_HI GEN, 0},
	           {"yo<|im_end|>", 1},
	           {"\n" USER_HI GEN, 0},
	           {"no<|im_end|>", 1},
	           {"\n", 0},
	           {NULL, 0}};
	expect_segs(d.ex[0].ids, d.ex[0].mask, d.ex[0].len, -1, s);
	dataset_free(&d);
}

Test(dataset, conversational_prompt_completion_masks_after_the_generation_prompt)
{
	Dataset d;
	DatasetOptions o = opts();
	load_ok(&d, "{\"prompt\": [" MSG_HI "], \"completion\": [" MSG_YO "]}\n", &o);
	cr_assert_eq(d.format, TRL_FMT_PROMPT_COMPLETION);
	cr_assert(d.conversational);
	Seg s[] = {{USER_HI GEN, 0}, {"yo<|im_end|>\n", 1}, {NULL, 0}};
	expect_segs(d.ex[0].ids, d.ex[0].mask, d.ex[0].len, -1, s);
	cr_assert_eq(d.ex[0].prompt_len, seg_len(s, 1));
	dataset_free(&d);

	/* With assistant_only_loss the "\n" after <|im_end|> is not learned. */
	o.assistant_only_loss = 1;
	load_ok(&d, "{\"prompt\": [" MSG_HI "], \"completion\": [" MSG_YO "]}\n", &o);
	Seg a[] = {{USER_HI GEN, 0}, {"yo<|im_end|>", 1}, {"\n", 0}, {NULL, 0}};
	expect_segs(d.ex[0].ids, d.ex[0].mask, d.ex[0].len, -1, a);
	cr_assert_eq(d.ex[0].prompt_len, seg_len(a, 1));
	dataset_free(&d);

	/* completion_only_loss false: the prompt is learned too. */
	o.assistant_only_loss = 0;
	o.completion_only_loss = 0;
	load_ok(&d, "{\"prompt\": [" MSG_HI "], \"completion\": [" MSG_YO "]}\n", &o);
	Seg f[] = {{USER_HI GEN "yo<|im_end|>\n", 1}, {NULL, 0}};
	expect_segs(d.ex[0].ids, d.ex[0].mask, d.ex[0].len, -1, f);
	dataset_free(&d);
}

Test(dataset, prompt_only_standard_and_conversational)
{
	Dataset d;
	DatasetOptions o = opts();
	load_ok(&d, "{\"prompt\": \"2+2=\", \"answer\": \"4\"}\n", &o);
	cr_assert_eq(d.format, TRL_FMT_PROMPT_ONLY);
	cr_assert_not(d.conversational);
	Seg s[] = {{"2+2=", 0}, {NULL, 0}};
	expect_segs(d.ex[0].ids, d.ex[0].mask, d.ex[0].len, -1, s);
	cr_assert_eq(d.ex[0].prompt_len, 4);
	cr_assert_str_eq(d.ex[0].extra, "{\"answer\": \"4\"}");
	dataset_free(&d);

	load_ok(&d, "{\"prompt\": [" MSG_HI "]}\n", &o);
	cr_assert(d.conversational);
	Seg c[] = {{USER_HI GEN, 0}, {NULL, 0}};
	expect_segs(d.ex[0].ids, d.ex[0].mask, d.ex[0].len, -1, c);
	cr_assert_eq(d.ex[0].prompt_len, seg_len(c, 1));
	dataset_free(&d);
}

Test(dataset, preference_with_explicit_prompt)
{
	Dataset d;
	DatasetOptions o = opts();
	load_ok(&d, "{\"prompt\": \"q\", \"chosen\": \"ab\", \"rejected\": \"c\"}\n", &o);
	cr_assert_eq(d.format, TRL_FMT_PREFERENCE);
	cr_assert_not(d.implicit_prompt);
	cr_assert_str_eq(d.columns, "prompt, chosen, rejected");
	const Example *e = &d.ex[0];
	Seg ch[] = {{"q", 0}, {"ab", 1}, {NULL, 0}};
	Seg rj[] = {{"q", 0}, {"c", 1}, {NULL, 0}};
	expect_segs(e->ids, e->mask, e->len, 1, ch);
	expect_segs(e->rejected_ids, e->rejected_mask, e->rejected_len, 1, rj);
	cr_assert_eq(e->prompt_len, 1);
	cr_assert_eq(e->rejected_prompt_len, 1);
	cr_assert_eq(d.n_tokens, 4 + 3);
	dataset_free(&d);

	load_ok(&d,
	        "{\"prompt\": [" MSG_HI "], \"chosen\": [" MSG_YO
	        "], \"rejected\": [" MSG_NO "]}\n",
	        &o);
	cr_assert(d.conversational);
	e = &d.ex[0];
	Seg cc[] = {{USER_HI GEN, 0}, {"yo<|im_end|>\n", 1}, {NULL, 0}};
	Seg cr[] = {{USER_HI GEN, 0}, {"no<|im_end|>\n", 1}, {NULL, 0}};
	expect_segs(e->ids, e->mask, e->len, 1, cc);
	expect_segs(e->rejected_ids, e->rejected_mask, e->rejected_len, 1, cr);
	cr_assert_eq(e->prompt_len, seg_len(cc, 1));
	cr_assert_eq(e->rejected_prompt_len, seg_len(cc, 1));
	dataset_free(&d);
}

Test(dataset, preference_with_implicit_prompt)
{
	Dataset d;
	DatasetOptions o = opts();
	/* TRL's extract_prompt: the shared start, less the space before the
	 * difference, which begins the answers. */
	load_ok(&d,
	        "{\"chosen\": \"The sky is blue.\", \"rejected\": \"The sky is "
	        "green.\"}\n",
	        &o);
	cr_assert_eq(d.format, TRL_FMT_PREFERENCE);
	cr_assert(d.implicit_prompt);
	cr_assert_str_eq(d.columns, "chosen, rejected");
	const Example *e = &d.ex[0];
	Seg ch[] = {{"The sky is", 0}, {" blue.", 1}, {NULL, 0}};
	Seg rj[] = {{"The sky is", 0}, {" green.", 1}, {NULL, 0}};
	expect_segs(e->ids, e->mask, e->len, 1, ch);
	expect_segs(e->rejected_ids, e->rejected_mask, e->rejected_len, 1, rj);
	cr_assert_eq(e->prompt_len, 10);
	dataset_free(&d);

	/* Conversations: the shared leading messages are the prompt. */
	load_ok(&d,
	        "{\"chosen\": [" MSG_HI ", " MSG_YO "], \"rejected\": [" MSG_HI
	        ", " MSG_NO "]}\n",
	        &o);
	cr_assert(d.conversational);
	cr_assert(d.implicit_prompt);
	e = &d.ex[0];
	Seg cc[] = {{USER_HI GEN, 0}, {"yo<|im_end|>\n", 1}, {NULL, 0}};
	Seg cr[] = {{USER_HI GEN, 0}, {"no<|im_end|>\n", 1}, {NULL, 0}};
	expect_segs(e->ids, e->mask, e->len, 1, cc);
	expect_segs(e->rejected_ids, e->rejected_mask, e->rejected_len, 1, cr);
	dataset_free(&d);
}

Test(dataset, unpaired_preference_labels)
{
	Dataset d;
	DatasetOptions o = opts();
	load_ok(&d,
	        "{\"prompt\": \"q\", \"completion\": \"a\", \"label\": true}\n"
	        "{\"prompt\": \"q\", \"completion\": \"b\", \"label\": false}\n",
	        &o);
	cr_assert_eq(d.format, TRL_FMT_UNPAIRED_PREFERENCE);
	cr_assert_eq(d.ex[0].label, 1);
	cr_assert_eq(d.ex[1].label, 0);
	Seg s[] = {{"q", 0}, {"b", 1}, {NULL, 0}};
	expect_segs(d.ex[1].ids, d.ex[1].mask, d.ex[1].len, 1, s);
	cr_assert_eq(d.ex[1].prompt_len, 1);
	dataset_free(&d);

	load_ok(&d,
	        "{\"prompt\": [" MSG_HI "], \"completion\": [" MSG_YO "], \"label\": "
	        "false}\n",
	        &o);
	cr_assert(d.conversational);
	cr_assert_eq(d.ex[0].label, 0);
	Seg c[] = {{USER_HI GEN, 0}, {"yo<|im_end|>\n", 1}, {NULL, 0}};
	expect_segs(d.ex[0].ids, d.ex[0].mask, d.ex[0].len, 1, c);
	dataset_free(&d);

	expect_load_error("{\"prompt\": \"q\", \"completion\": \"a\", \"label\": true}\n"
	                  "{\"prompt\": \"q\", \"completion\": \"a\", \"label\": 1}\n",
	                  opts(), TRL_EINVAL,
	                  ":2: column 'label' must be true or false, got number");
}

Test(dataset, forced_format)
{
	Dataset d;
	DatasetOptions o = opts();
	o.format = TRL_FMT_PROMPT_ONLY;
	load_ok(&d, "{\"prompt\": \"ab\", \"completion\": \"c\"}\n", &o);
	cr_assert_eq(d.format, TRL_FMT_PROMPT_ONLY);
	cr_assert_eq(d.ex[0].len, 2);
	cr_assert_str_eq(d.ex[0].extra, "{\"completion\": \"c\"}");
	dataset_free(&d);

	o.format = TRL_FMT_PREFERENCE;
	expect_load_error("{\"prompt\": \"a\", \"completion\": \"b\"}\n", o, TRL_EINVAL,
	                  ":1: dataset_format is preference, which needs the columns "
	                  "chosen, rejected, and optionally prompt, but the row has "
	                  "'prompt', 'completion', which is prompt-completion data; set "
	                  "dataset_format to auto or fix the data");
	/* A forced format that does not fit is not a bad row to skip. */
	o.skip_invalid_rows = 1;
	o.format = TRL_FMT_UNPAIRED_PREFERENCE;
	expect_load_error("{\"text\": \"a\"}\n", o, TRL_EINVAL,
	                  ":1: dataset_format is unpaired preference, which needs the "
	                  "columns prompt, completion, label, but the row has 'text', "
	                  "which is language modeling data; set dataset_format to auto "
	                  "or fix the data");
}

Test(dataset, extra_columns_are_kept_as_json)
{
	Dataset d;
	DatasetOptions o = opts();
	load_ok(
	    &d,
	    "{\"id\": -7, \"prompt\": \"a\", \"completion\": \"b\", \"meta\": {\"x\": "
	    "[1, 2.5, null, true], \"s\": \"t\\\"\\n\"}}\n",
	    &o);
	cr_assert_str_eq(d.ex[0].extra,
	                 "{\"id\": -7, \"meta\": {\"x\": [1, 2.5, null, true], \"s\": "
	                 "\"t\\\"\\n\"}}");
	JsonValue *v = parse_ok(d.ex[0].extra);
	json_free(v);
	dataset_free(&d);
}

Test(dataset, method_and_format_mismatch_names_both)
{
	Dataset d;
	DatasetOptions o = opts();
	TrlErr err;
	load_ok(&d, "{\"prompt\": \"q\", \"chosen\": \"a\", \"rejected\": \"b\"}\n", &o);
	const TrlDataFormat sft[] = {TRL_FMT_LANGUAGE_MODELING,
	                             TRL_FMT_PROMPT_COMPLETION};
	cr_assert_eq(dataset_check_method(&d, "inputs/pref.jsonl", "sft", sft, 2, &err),
	             TRL_EINVAL);
	cr_assert_str_eq(err.msg, "inputs/pref.jsonl: preference data (prompt, chosen, "
	                          "rejected) cannot train method sft: it needs language "
	                          "modeling or prompt-completion data");
	dataset_free(&d);
	load_ok(&d, "{\"messages\": [" MSG_HI "]}\n", &o);
	cr_assert_eq(dataset_check_method(&d, "x.jsonl", "sft", sft, 2, &err), 0);
	const TrlDataFormat dpo[] = {TRL_FMT_PREFERENCE};
	cr_assert_eq(dataset_check_method(&d, "x.jsonl", "dpo", dpo, 1, &err),
	             TRL_EINVAL);
	cr_assert_str_eq(err.msg, "x.jsonl: conversational language modeling data "
	                          "(messages) cannot train method dpo: it needs "
	                          "preference data");
	dataset_free(&d);
}

Test(dataset, bad_messages_name_file_line_and_index)
{
	const char *ok = "{\"messages\": [" MSG_HI "]}\n";
	char buf[512];
	snprintf(buf, sizeof buf,
	         "%s%s{\"messages\": [" MSG_HI ", " MSG_YO ", {\"role\": 1, \"content\": "
	         "\"x\"}]}\n",
	         ok, ok);
	expect_load_error(buf, opts(), TRL_EINVAL,
	                  ":3: messages[2].role must be a string");
	expect_load_error("{\"messages\": [{\"role\": \"user\", \"content\": null}]}\n",
	                  opts(), TRL_EINVAL, ":1: messages[0].content must be a string");
	expect_load_error("{\"messages\": [" MSG_HI ", 5]}\n", opts(), TRL_EINVAL,
	                  ":1: messages[1] must be an object with 'role' and "
	                  "'content', got number");
	snprintf(buf, sizeof buf, "%s{\"messages\": \"hi\"}\n", ok);
	expect_load_error(buf, opts(), TRL_EINVAL,
	                  ":2: column 'messages' must be a list of messages (the first "
	                  "row is conversational), got string");
	expect_load_error("{\"prompt\": [" MSG_HI "], \"completion\": \"yo\"}\n", opts(),
	                  TRL_EINVAL,
	                  ":1: column 'completion' must be a list of messages (the "
	                  "first row is conversational), got string");
	/* A role the template does not know is the template's error, at file:line. */
	Dataset d;
	TrlErr err;
	const char *path;
	DatasetOptions o = opts();
	cr_assert_eq(load(&d,
	                  "{\"messages\": [{\"role\": \"tool\", \"content\": \"x\"}]}\n",
	                  &o, &err, &path),
	             TRL_EINVAL);
	snprintf(buf, sizeof buf, "%s:1: chat template chatml: ", path);
	cr_assert_eq(strncmp(err.msg, buf, strlen(buf)), 0, "%s", err.msg);

	/* skip_invalid_rows skips and counts bad conversations. */
	o.skip_invalid_rows = 1;
	snprintf(buf, sizeof buf,
	         "%s{\"messages\": [{\"role\": \"user\"}]}\n{\"messages\": 3}\n%s", ok,
	         ok);
	cr_assert_eq(load(&d, buf, &o, &err, NULL), 0, "%s", err.msg);
	cr_assert_eq(d.n, 2);
	cr_assert_eq(d.n_skipped, 2);
	cr_assert_eq(d.ex[1].line, 4);
	dataset_free(&d);
}

Test(dataset, chat_template_and_eos_token_options)
{
	Dataset d;
	DatasetOptions o = opts();
	o.chat_template = "no-such-template";
	TrlErr err;
	const char *path;
	cr_assert_eq(load(&d, "{\"messages\": [" MSG_HI "]}\n", &o, &err, &path),
	             TRL_EUNSUPPORTED);
	cr_assert(strstr(err.msg, "conversational data needs a chat template"), "%s",
	          err.msg);
	cr_assert(strstr(err.msg, "chatml"), "the message lists the names: %s", err.msg);
	/* Standard data never needs the template. */
	load_ok(&d, "{\"text\": \"a\"}\n", &o);
	dataset_free(&d);

	o = opts();
	o.eos_token = "<|pad|>";
	load_ok(&d, "{\"text\": \"ab\"}\n", &o);
	cr_assert_eq(d.ex[0].len, 3);
	cr_assert_eq(d.ex[0].ids[2], 257);
	dataset_free(&d);
	o.eos_token = "<|nope|>";
	cr_assert_eq(load(&d, "{\"text\": \"ab\"}\n", &o, &err, NULL), TRL_EINVAL);
	cr_assert(strstr(err.msg, "eos_token: '<|nope|>' is not a token"), "%s", err.msg);

	/* assistant_only_loss needs conversations to find the assistant turns in. */
	o = opts();
	o.assistant_only_loss = 1;
	cr_assert_eq(
	    load(&d, "{\"prompt\": \"a\", \"completion\": \"b\"}\n", &o, &err, &path),
	    TRL_EINVAL);
	cr_assert(strstr(err.msg, ":1: assistant_only_loss needs conversational data"),
	          "%s", err.msg);
}

Test(dataset, preference_truncation_cuts_each_sequence)
{
	Dataset d;
	DatasetOptions o = opts();
	o.max_length = 3;
	load_ok(&d, "{\"prompt\": \"pq\", \"chosen\": \"abc\", \"rejected\": \"d\"}\n",
	        &o);
	const Example *e = &d.ex[0];
	Seg ch[] = {{"pq", 0}, {"a", 1}, {NULL, 0}};
	Seg rj[] = {{"pq", 0}, {"d", 1}, {NULL, 0}};
	expect_segs(e->ids, e->mask, e->len, -1, ch);
	expect_segs(e->rejected_ids, e->rejected_mask, e->rejected_len, -1, rj);
	cr_assert_eq(d.n_truncated, 2);
	dataset_free(&d);
	o.keep_end = 1;
	load_ok(&d, "{\"prompt\": \"pq\", \"chosen\": \"abc\", \"rejected\": \"d\"}\n",
	        &o);
	e = &d.ex[0];
	cr_assert_eq(e->prompt_len, 0);
	cr_assert_eq(e->rejected_prompt_len, 1);
	cr_assert_eq(e->rejected_len, 3);
	cr_assert_eq(e->rejected_ids[0], 'q');
	dataset_free(&d);
}

Test(dataset, skip_invalid_rows_counts_them)
{
	Dataset d;
	TrlErr err;
	DatasetOptions o = opts();
	o.skip_invalid_rows = 1;
	cr_assert_eq(load(&d,
	                  "not json\n"
	                  "{\"prompt\": \"a\", \"completion\": \"b\"}\n"
	                  "{\"prompt\": \"c\"}\n"
	                  "{\"prompt\": \"d\", \"completion\": 1}\n"
	                  "\n"
	                  "{\"prompt\": \"e\", \"completion\": \"f\"}\n",
	                  &o, &err, NULL),
	             0, "%s", err.msg);
	cr_assert_eq(d.format, TRL_FMT_PROMPT_COMPLETION);
	cr_assert_eq(d.n, 2);
	cr_assert_eq(d.n_skipped, 3);
	cr_assert_eq(d.ex[0].line, 2);
	cr_assert_eq(d.ex[1].line, 6);
	expect_example(&d.ex[1], "ef", 1, "011", 1);
	dataset_free(&d);

	const char *path;
	cr_assert_eq(load(&d, "{\"x\": 1}\n[]\n{\"text\": 3}\n", &o, &err, &path),
	             TRL_EINVAL);
	char want[512];
	snprintf(
	    want, sizeof want,
	    "%s: no valid rows: all 3 were skipped as invalid (the first: %s:1: cannot "
	    "tell the dataset format",
	    path, path);
	cr_assert_eq(strncmp(err.msg, want, strlen(want)), 0, "%s", err.msg);
}

Test(dataset, the_quickstart_data_loads)
{
	Tokenizer t;
	tokenizer_init_bytes(&t);
	DatasetOptions o = opts();
	o.max_length = 64;
	Dataset d;
	TrlErr err;
	const char *path = "inputs/arith/train.jsonl";
	if (access(path, R_OK) != 0)
		path = "../inputs/arith/train.jsonl";
	if (access(path, R_OK) != 0) {
		const char *top = getenv("top_srcdir");
		static char buf[4096];
		snprintf(buf, sizeof buf, "%s/inputs/arith/train.jsonl", top ? top : ".");
		path = buf;
	}
	cr_assert_eq(dataset_load_jsonl(&d, path, &o, &t, &err), 0, "%s", err.msg);
	cr_assert_eq(d.format, TRL_FMT_PROMPT_COMPLETION);
	cr_assert_gt(d.n, 10000);
	cr_assert_eq(d.n_truncated, 0);
	for (int i = 0; i < d.n; i++) {
		const Example *e = &d.ex[i];
		cr_assert_eq(e->ids[e->prompt_len - 1], '=');
		cr_assert_eq(e->ids[e->len - 1], 256);
	}
	dataset_free(&d);
}

/* ---- packing ---- */

/* A dataset of given lengths; only len and line matter for packing. */
static Dataset fake_dataset(const int *lens, int n)
{
	Dataset d = {0};
	d.ex = calloc((size_t)n + 1, sizeof *d.ex);
	d.n = n;
	for (int i = 0; i < n; i++) {
		d.ex[i].len = lens[i];
		d.ex[i].line = i + 1;
	}
	return d;
}

/* Every example in exactly one row, lengths add up, no row over max_length. */
static void check_rowset(const RowSet *rs, const Dataset *d, int max_length)
{
	int *seen = calloc((size_t)d->n + 1, sizeof *seen);
	int total = 0;
	for (int r = 0; r < rs->n; r++) {
		const Row *row = &rs->rows[r];
		cr_assert_eq(row->first, total, "rows are contiguous in items");
		int len = 0;
		for (int k = 0; k < row->count; k++) {
			int e = rs->items[row->first + k];
			cr_assert(e >= 0 && e < d->n);
			seen[e]++;
			len += d->ex[e].len;
		}
		cr_assert_eq(len, row->len, "row %d len", r);
		cr_assert_leq(row->len, max_length, "row %d over max_length", r);
		cr_assert_gt(row->count, 0);
		total += row->count;
	}
	cr_assert_eq(total, d->n);
	for (int i = 0; i < d->n; i++)
		cr_assert_eq(seen[i], 1, "example %d placed %d times", i, seen[i]);
	free(seen);
}

Test(packing, unpacked_is_one_row_per_example)
{
	int lens[] = {3, 1, 4};
	Dataset d = fake_dataset(lens, 3);
	RowSet rs;
	TrlErr err;
	cr_assert_eq(rows_unpacked(&rs, &d, &err), 0);
	cr_assert_eq(rs.n, 3);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(rs.rows[i].count, 1);
		cr_assert_eq(rs.items[rs.rows[i].first], i);
		cr_assert_eq(rs.rows[i].len, lens[i]);
	}
	cr_assert_eq(rows_max_len(&rs), 4);
	rows_free(&rs);
	rows_free(&rs);
	dataset_free(&d);
}

Test(packing, bfd_known_case_fills_bins_exactly)
{
	int lens[] = {2, 6, 1, 5, 4, 3, 2, 1};
	/* Sorted: 6(1) 5(3) 4(4) 3(5) 2(0) 2(6) 1(2) 1(7). 6 and 5 and 4 open bins
	 * with space 2, 3, 4; 3 best-fits the bin of 5; 2(0) the bin of 6; 2(6),
	 * 1(2) and 1(7) fill the bin of 4. */
	Dataset d = fake_dataset(lens, 8);
	RowSet rs;
	TrlErr err;
	cr_assert_eq(rows_pack_bfd(&rs, &d, 8, &err), 0, "%s", err.msg);
	check_rowset(&rs, &d, 8);
	cr_assert_eq(rs.n, 3);
	int want[3][4] = {{1, 0}, {3, 5}, {4, 6, 2, 7}};
	int count[3] = {2, 2, 4};
	for (int r = 0; r < 3; r++) {
		cr_assert_eq(rs.rows[r].count, count[r]);
		cr_assert_eq(rs.rows[r].len, 8);
		for (int k = 0; k < count[r]; k++)
			cr_assert_eq(rs.items[rs.rows[r].first + k], want[r][k],
			             "row %d item %d", r, k);
	}
	rows_free(&rs);
	dataset_free(&d);
}

Test(packing, bfd_equal_space_bins_are_used_first_in_first_out)
{
	int lens[] = {3, 3, 1, 1};
	Dataset d = fake_dataset(lens, 4);
	RowSet rs;
	TrlErr err;
	cr_assert_eq(rows_pack_bfd(&rs, &d, 4, &err), 0);
	cr_assert_eq(rs.n, 2);
	cr_assert_eq(rs.items[0], 0);
	cr_assert_eq(rs.items[1], 2);
	cr_assert_eq(rs.items[2], 1);
	cr_assert_eq(rs.items[3], 3);
	rows_free(&rs);
	dataset_free(&d);
}

Test(packing, bfd_rejects_examples_longer_than_max_length)
{
	int lens[] = {3, 9};
	Dataset d = fake_dataset(lens, 2);
	RowSet rs;
	TrlErr err;
	cr_assert_eq(rows_pack_bfd(&rs, &d, 8, &err), TRL_EINVAL);
	cr_assert(strstr(err.msg, "line 2") && strstr(err.msg, "9 tokens"), "%s",
	          err.msg);
	cr_assert_null(rs.rows);
	cr_assert_eq(rows_pack_bfd(&rs, &d, 0, &err), TRL_EINVAL);
	dataset_free(&d);
}

/* The reference: best fit by scanning every bin; among equal space, the bin that
 * has had that space longest (TRL keeps a FIFO per space). O(n * bins). */
static void naive_bfd(const Dataset *d, int max_length, int *bin_of, int *nbins_out)
{
	int n = d->n;
	int *order = malloc((size_t)n * sizeof *order);
	for (int i = 0; i < n; i++)
		order[i] = i;
	for (int i = 1; i < n; i++) /* insertion sort: stable, by decreasing length */
		for (int j = i; j > 0 && d->ex[order[j - 1]].len < d->ex[order[j]].len;
		     j--) {
			int t = order[j];
			order[j] = order[j - 1];
			order[j - 1] = t;
		}
	int *space = malloc((size_t)n * sizeof *space);
	long *since = malloc((size_t)n * sizeof *since);
	int nbins = 0;
	for (int k = 0; k < n; k++) {
		int e = order[k], len = d->ex[e].len, best = -1;
		for (int b = 0; b < nbins; b++) {
			if (space[b] < len || space[b] == 0)
				continue;
			if (best < 0 || space[b] < space[best] ||
			    (space[b] == space[best] && since[b] < since[best]))
				best = b;
		}
		if (best < 0) {
			best = nbins++;
			space[best] = max_length;
		}
		space[best] -= len;
		since[best] = k;
		bin_of[e] = best;
	}
	*nbins_out = nbins;
	free(order);
	free(space);
	free(since);
}

Test(packing, bfd_matches_the_naive_reference_and_is_deterministic)
{
	int n = 3000, max_length = 128;
	int *lens = malloc((size_t)n * sizeof *lens);
	Rng r;
	rng_seed(&r, 42);
	for (int i = 0; i < n; i++)
		lens[i] = 1 + (int)(rng_below(&r, 100) < 70 ? rng_below(&r, 40)
		                                            : rng_below(&r, max_length));
	Dataset d = fake_dataset(lens, n);
	RowSet rs, rs2;
	TrlErr err;
	cr_assert_eq(rows_pack_bfd(&rs, &d, max_length, &err), 0);
	check_rowset(&rs, &d, max_length);
	int *bin_of = malloc((size_t)n * sizeof *bin_of), nbins;
	naive_bfd(&d, max_length, bin_of, &nbins);
	cr_assert_eq(rs.n, nbins);
	for (int b = 0; b < rs.n; b++)
		for (int k = 0; k < rs.rows[b].count; k++)
			cr_assert_eq(bin_of[rs.items[rs.rows[b].first + k]], b);
	cr_assert_eq(rows_pack_bfd(&rs2, &d, max_length, &err), 0);
	cr_assert_eq(rs2.n, rs.n);
	cr_assert_eq(memcmp(rs.items, rs2.items, (size_t)n * sizeof *rs.items), 0);
	cr_assert_eq(memcmp(rs.rows, rs2.rows, (size_t)rs.n * sizeof *rs.rows), 0);
	rows_free(&rs);
	rows_free(&rs2);
	free(bin_of);
	free(lens);
	dataset_free(&d);
}

Test(packing, bfd_fills_bins_well_at_scale)
{
	int n = 1000000, max_length = 2048;
	int *lens = malloc((size_t)n * sizeof *lens);
	Rng r;
	rng_seed(&r, 7);
	long total = 0;
	for (int i = 0; i < n; i++) {
		lens[i] = 1 + (int)rng_below(&r, 400);
		total += lens[i];
	}
	Dataset d = fake_dataset(lens, n);
	RowSet rs;
	TrlErr err;
	cr_assert_eq(rows_pack_bfd(&rs, &d, max_length, &err), 0);
	check_rowset(&rs, &d, max_length);
	long lower = (total + max_length - 1) / max_length;
	cr_assert_leq(rs.n, lower + lower / 1000 + 1, "%d bins for a lower bound of %ld",
	              rs.n, lower);
	rows_free(&rs);
	free(lens);
	dataset_free(&d);
}

/* ---- batches ---- */

Test(batch, positions_docs_targets_and_padding)
{
	Dataset d;
	TrlErr err;
	DatasetOptions o = opts();
	cr_assert_eq(load(&d,
	                  "{\"prompt\": \"ab\", \"completion\": \"c\"}\n"
	                  "{\"prompt\": \"d\", \"completion\": \"ef\"}\n"
	                  "{\"prompt\": \"g\", \"completion\": \"\"}\n",
	                  &o, &err, NULL),
	             0, "%s", err.msg);
	Row rows[2] = {{.first = 0, .count = 2, .len = 8},
	               {.first = 2, .count = 1, .len = 2}};
	int items[3] = {0, 1, 2};
	RowSet rs = {.rows = rows, .n = 2, .items = items};
	int32_t ids[32], pos[32], doc[32], tg[32];
	memset(ids, 0x7f, sizeof ids);
	memset(pos, 0x7f, sizeof pos);
	memset(doc, 0x7f, sizeof doc);
	memset(tg, 0x7f, sizeof tg);
	Batch b = {.ids = ids, .pos = pos, .doc = doc, .targets = tg};
	int idx[2] = {0, 1};
	long nt = batch_fill(&b, &d, &rs, idx, 2, 257);
	cr_assert_eq(b.B, 2);
	cr_assert_eq(b.T, 8);
	const int E = 256, P = 257;
	int32_t want_ids[16] = {'a', 'b', 'c', E, 'd', 'e', 'f', E,
	                        'g', E,   P,   P, P,   P,   P,   P};
	int32_t want_pos[16] = {0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 0, 0, 0, 0, 0, 0};
	int32_t want_doc[16] = {0, 0, 0, 0, 1, 1, 1, 1, 0, 0, -1, -1, -1, -1, -1, -1};
	/* No target across the document boundary (t = 3) or at a prompt token (t = 0). */
	int32_t want_tg[16] = {-1, 'c', E,  -1, 'e', 'f', E,  -1,
	                       E,  -1,  -1, -1, -1,  -1,  -1, -1};
	for (int t = 0; t < 16; t++) {
		cr_assert_eq(ids[t], want_ids[t], "ids[%d]", t);
		cr_assert_eq(pos[t], want_pos[t], "pos[%d]", t);
		cr_assert_eq(doc[t], want_doc[t], "doc[%d]", t);
		cr_assert_eq(tg[t], want_tg[t], "targets[%d] = %d", t, tg[t]);
	}
	cr_assert_eq(nt, 6);
	cr_assert_eq(ids[16], 0x7f7f7f7f, "nothing written past (B, T)");

	/* Another order and a single short row: T shrinks to that row. */
	int idx2[1] = {1};
	nt = batch_fill(&b, &d, &rs, idx2, 1, 257);
	cr_assert_eq(b.B, 1);
	cr_assert_eq(b.T, 2);
	cr_assert_eq(ids[0], 'g');
	cr_assert_eq(tg[0], E);
	cr_assert_eq(tg[1], -1);
	cr_assert_eq(nt, 1);
	dataset_free(&d);
}

Test(batch, language_modeling_rows_after_packing)
{
	Dataset d;
	TrlErr err;
	DatasetOptions o = opts();
	cr_assert_eq(
	    load(&d, "{\"text\": \"abc\"}\n{\"text\": \"de\"}\n{\"text\": \"fghij\"}\n",
	         &o, &err, NULL),
	    0, "%s", err.msg);
	RowSet rs;
	cr_assert_eq(rows_pack_bfd(&rs, &d, 10, &err), 0);
	/* Sorted 6(2) 4(0) 3(1): the bin of 6 takes 4, then 3 opens a second bin. */
	cr_assert_eq(rs.n, 2);
	int32_t ids[20], pos[20], doc[20], tg[20];
	Batch b = {.ids = ids, .pos = pos, .doc = doc, .targets = tg};
	int idx[2] = {0, 1};
	long nt = batch_fill(&b, &d, &rs, idx, 2, 257);
	cr_assert_eq(b.T, 10);
	cr_assert_eq(nt, (6 - 1) + (4 - 1) + (3 - 1),
	             "every token but each first is a target");
	long count = 0;
	for (int t = 0; t < 20; t++) {
		count += tg[t] != -1;
		if (tg[t] != -1) {
			cr_assert_lt(t % 10 + 1, 10);
			cr_assert_eq(tg[t], ids[t + 1], "targets are the next id");
			cr_assert_eq(doc[t], doc[t + 1],
			             "targets stay in their document");
		}
		if (doc[t] >= 0 && (t % 10 == 0 || doc[t - 1] != doc[t]))
			cr_assert_eq(pos[t], 0, "positions restart per document");
	}
	cr_assert_eq(count, nt);
	cr_assert_eq(doc[19], -1);
	cr_assert_eq(ids[19], 257);
	rows_free(&rs);
	dataset_free(&d);
}

/* ---- sampler ---- */

static void assert_permutation(const int *p, int n)
{
	char *seen = calloc((size_t)n + 1, 1);
	for (int i = 0; i < n; i++) {
		cr_assert(p[i] >= 0 && p[i] < n);
		cr_assert(!seen[p[i]], "%d appears twice", p[i]);
		seen[p[i]] = 1;
	}
	free(seen);
}

Test(sampler, is_a_permutation_depending_on_seed_and_epoch)
{
	enum { N = 1000 };
	static int a[N], b[N], c[N], a2[N];
	sampler_permutation(a, N, 42, 0);
	sampler_permutation(b, N, 42, 1);
	sampler_permutation(c, N, 43, 0);
	sampler_permutation(a2, N, 42, 0);
	assert_permutation(a, N);
	assert_permutation(b, N);
	assert_permutation(c, N);
	cr_assert_eq(memcmp(a, a2, sizeof a), 0, "the same (seed, epoch) repeats");
	cr_assert_neq(memcmp(a, b, sizeof a), 0, "epochs differ");
	cr_assert_neq(memcmp(a, c, sizeof a), 0, "seeds differ");
	int fixed = 0;
	for (int i = 0; i < N; i++)
		fixed += a[i] == i;
	cr_assert_lt(fixed, 20, "a shuffle moves almost everything (%d fixed)", fixed);
	int one = -1;
	sampler_permutation(&one, 1, 42, 0);
	cr_assert_eq(one, 0);
	sampler_permutation(NULL, 0, 42, 0);
}

Test(sampler, positions_are_roughly_uniform)
{
	enum { N = 8, EPOCHS = 8000 };
	int count[N] = {0};
	int p[N];
	for (long e = 0; e < EPOCHS; e++) {
		sampler_permutation(p, N, 5, e);
		count[p[0]]++;
	}
	for (int i = 0; i < N; i++)
		cr_assert(count[i] > EPOCHS / N * 0.85 && count[i] < EPOCHS / N * 1.15,
		          "element %d first %d times", i, count[i]);
}

/* Appending a piece of a JsonBuf to itself while it grows: the source must be
 * re-derived after the buffer moves (the tokenizer's pre-tokenizers do this). */
Test(json, buf_append_from_itself_survives_growth)
{
	JsonBuf b = {0};
	json_buf_puts(&b, "0123456789abcdefghijklmnopqrstuv");
	for (int i = 0; i < 12; i++)
		json_buf_put(&b, b.p, b.len); /* doubles: forces reallocations */
	cr_assert_eq(b.oom, 0);
	cr_assert_eq(b.len, (size_t)32 << 12);
	for (size_t i = 0; i < b.len; i++)
		cr_assert_eq(b.p[i], "0123456789abcdefghijklmnopqrstuv"[i % 32],
		             "byte %zu is wrong after self-append", i);
	json_buf_free(&b);
}

/* With a real SentencePiece-style tokenizer, a prompt-completion row is
 * tokenized as TRL tokenizes it: tokenizer(prompt + completion) with the
 * tokenizer's BOS, the prompt being the first len(tokenizer(prompt)) tokens,
 * EOS appended. Tokenizing the completion on its own would prepend a lone
 * "▁" (id 28705) that the model would learn to emit after every prompt. */
Test(dataset, prompt_completion_is_tokenized_jointly_like_trl, .fini = tmp_cleanup)
{
	const char *top = getenv("top_srcdir");
	char dir[] = "/tmp/trl-spm-XXXXXX", cmd[8192];
	cr_assert_not_null(mkdtemp(dir));
	snprintf(cmd, sizeof cmd,
	         "xz -dc %s/tests/data/tokenizers/sentencepiece-bpe/tokenizer.json.xz > "
	         "%s/tokenizer.json && cp %s/tests/data/tokenizers/sentencepiece-bpe/"
	         "tokenizer_config.json %s/",
	         top ? top : ".", dir, top ? top : ".", dir);
	cr_assert_eq(system(cmd), 0,
	             "cannot unpack the test tokenizer (is top_srcdir set?)");
	Tokenizer t;
	TrlErr err;
	cr_assert_eq(tokenizer_load_dir(&t, dir, &err), 0, "%s", err.msg);
	const char *path =
	    write_tmp("{\"prompt\": \"Hello\", \"completion\": \" world\"}\n");
	DatasetOptions o = opts();
	Dataset d;
	cr_assert_eq(dataset_load_jsonl(&d, path, &o, &t, &err), 0, "%s", err.msg);
	const Example *e = &d.ex[0];
	int32_t want[] = {t.bos_id, 22557, 1526, t.eos_id};
	cr_assert_eq(e->len, 4, "ids: %d tokens", e->len);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(e->ids[i], want[i], "token %d: %d, want %d", i, e->ids[i],
		             want[i]);
	cr_assert_eq(e->prompt_len, 2, "BOS + 'Hello'");
	cr_assert_eq(e->mask[1], 0);
	cr_assert_eq(e->mask[2], 1);
	cr_assert_eq(e->mask[3], 1, "EOS is a target");
	dataset_free(&d);
	tokenizer_free(&t);
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
}

/* TRL's extract_prompt works on characters: chosen "x é" and rejected "x è"
 * first differ inside a two-byte character, whose start follows a space, so
 * the prompt is "x" and the answers keep " é" / " è". */
Test(dataset, implicit_prompt_splits_on_characters, .fini = tmp_cleanup)
{
	const char *path =
	    write_tmp("{\"chosen\": \"x \\u00e9\", \"rejected\": \"x \\u00e8\"}\n");
	DatasetOptions o = opts();
	Tokenizer t;
	tokenizer_init_bytes(&t);
	Dataset d;
	TrlErr err;
	cr_assert_eq(dataset_load_jsonl(&d, path, &o, &t, &err), 0, "%s", err.msg);
	cr_assert_eq(d.ex[0].prompt_len, 1, "prompt is \"x\" (1 byte token)");
	cr_assert_eq(d.ex[0].ids[1], ' ');
	dataset_free(&d);
}
