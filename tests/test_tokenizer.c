/* test_tokenizer.c - Criterion tests for the byte tokenizer and tokenizer.json loading.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bpe.h"
#include "json.h"
#include "tokenizer.h"

static char tmpdir[256];

static void make_tmpdir(void)
{
	snprintf(tmpdir, sizeof tmpdir, "%s/tok_test_XXXXXX",
	         getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	cr_assert_not_null(mkdtemp(tmpdir));
}

static void remove_tmpdir(void)
{
	char path[512];
	snprintf(path, sizeof path, "%s/tokenizer.json", tmpdir);
	unlink(path);
	snprintf(path, sizeof path, "%s/tokenizer_config.json", tmpdir);
	unlink(path);
	rmdir(tmpdir);
}

TestSuite(tokenizer, .init = make_tmpdir, .fini = remove_tmpdir);

static void write_file(const char *name, const char *text)
{
	char path[512];
	snprintf(path, sizeof path, "%s/%s", tmpdir, name);
	FILE *f = fopen(path, "wb");
	cr_assert_not_null(f);
	fputs(text, f);
	fclose(f);
}

/* A byte-level tokenizer.json: ids 0..255 are the byte characters, then extra
 * tokens (JSON object members without braces), the given merges (a JSON array)
 * and added tokens. */
static void write_byte_level(const char *extra_vocab, const char *merges,
                             const char *added, const char *pre, const char *post)
{
	JsonBuf b = {0};
	json_buf_puts(&b,
	              "{\"version\": \"1.0\", \"truncation\": null, \"padding\": null,"
	              "\"added_tokens\": ");
	json_buf_puts(&b, added ? added : "[]");
	json_buf_puts(&b, ", \"normalizer\": null, \"pre_tokenizer\": ");
	json_buf_puts(&b, pre ? pre
	                      : "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
	                        "\"use_regex\": true}");
	json_buf_puts(&b, ", \"post_processor\": ");
	json_buf_puts(&b, post ? post : "null");
	json_buf_puts(&b,
	              ", \"decoder\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": "
	              "\"BPE\", \"ignore_merges\": false, \"vocab\": {");
	for (unsigned i = 0; i < 256; i++) {
		char c[2];
		int n = bpe_byte_char(i, c);
		json_buf_puts(&b, i ? ", " : "");
		json_buf_string(&b, c, (size_t)n);
		json_buf_printf(&b, ": %u", i);
	}
	if (extra_vocab && *extra_vocab)
		json_buf_printf(&b, ", %s", extra_vocab);
	json_buf_printf(&b, "}, \"merges\": %s}}", merges ? merges : "[]");
	cr_assert(!b.oom);
	write_file("tokenizer.json", b.p);
	json_buf_free(&b);
}

static int encode(const Tokenizer *t, const char *s, int32_t *ids, int cap)
{
	TrlErr err = {0, ""};
	int n = tokenizer_encode(t, s, strlen(s), ids, cap, &err);
	cr_assert_geq(n, 0, "encode failed: %s", err.msg);
	cr_assert_leq(n, cap);
	return n;
}

static void load(Tokenizer *t)
{
	TrlErr err = {0, ""};
	cr_assert_eq(tokenizer_load_dir(t, tmpdir, &err), 0, "load failed: %s", err.msg);
}

Test(tokenizer, byte_tokenizer_still_round_trips)
{
	Tokenizer t;
	tokenizer_init_bytes(&t);
	int32_t ids[32];
	const char *s = "h\xc3\xa9<|endoftext|>";
	int n = encode(&t, s, ids, 32);
	cr_assert_eq(n, (int)strlen(s), "special strings are plain bytes");
	char buf[64];
	cr_assert_eq(tokenizer_decode(&t, ids, n, 0, buf, sizeof buf), strlen(s));
	cr_assert_str_eq(buf, s);
	cr_assert_eq(tokenizer_token_to_id(&t, "<|pad|>", 7), 257);
	tokenizer_free(&t);
}

Test(tokenizer, byte_level_alphabet_matches_gpt2)
{
	char c[2];
	cr_assert_eq(bpe_byte_char(' ', c), 2);
	cr_assert(memcmp(c, "\xc4\xa0", 2) == 0, "space is U+0120 (G with dot)");
	cr_assert_eq(bpe_byte_char('\n', c), 2);
	cr_assert(memcmp(c, "\xc4\x8a", 2) == 0, "newline is U+010A");
	cr_assert_eq(bpe_byte_char('A', c), 1);
	cr_assert_eq(c[0], 'A');
	cr_assert_eq(bpe_byte_char(0xAD, c), 2);
	cr_assert(memcmp(c, "\xc5\x83", 2) == 0, "soft hyphen is U+0143, the last one");
	for (unsigned b = 0; b < 256; b++) {
		int n = bpe_byte_char(b, c);
		uint32_t cp = n == 1 ? (unsigned char)c[0]
		                     : ((uint32_t)(c[0] & 0x1F) << 6) | (c[1] & 0x3F);
		cr_assert_eq(bpe_char_byte(cp), (int)b, "byte %u", b);
	}
}

Test(tokenizer, merges_follow_rank_in_both_formats)
{
	/* "abc": with "b c" ranked first the word becomes a + bc, then abc via
	 * "a bc"; "a b" is never reached for the pair. */
	const char *vocab = "\"ab\": 256, \"bc\": 257, \"abc\": 258";
	write_byte_level(vocab, "[\"b c\", \"a b\", \"a bc\"]", NULL, NULL, NULL);
	Tokenizer t;
	load(&t);
	int32_t ids[8];
	cr_assert_eq(encode(&t, "abc", ids, 8), 1);
	cr_assert_eq(ids[0], 258);
	cr_assert_eq(encode(&t, "abx", ids, 8), 2);
	cr_assert_eq(ids[0], 256);
	cr_assert_eq(ids[1], 'x');
	tokenizer_free(&t);

	/* The same merges as arrays, but "a b" first: ab + c, and no "ab c" merge. */
	write_byte_level(vocab, "[[\"a\", \"b\"], [\"b\", \"c\"], [\"a\", \"bc\"]]", NULL,
	                 NULL, NULL);
	load(&t);
	cr_assert_eq(encode(&t, "abc", ids, 8), 2);
	cr_assert_eq(ids[0], 256);
	cr_assert_eq(ids[1], 'c');
	tokenizer_free(&t);
}

Test(tokenizer, equal_ranks_merge_leftmost_first)
{
	write_byte_level("\"aa\": 256", "[\"a a\"]", NULL, NULL, NULL);
	Tokenizer t;
	load(&t);
	int32_t ids[8];
	cr_assert_eq(encode(&t, "aaa", ids, 8), 2);
	cr_assert_eq(ids[0], 256);
	cr_assert_eq(ids[1], 'a');
	tokenizer_free(&t);
}

Test(tokenizer, pretokenizer_splits_words_before_merges)
{
	/* " b" would merge across the word boundary if the GPT-2 regex did not split
	 * "a b" into "a" and " b" first; with the split, "Ġb" merges inside " b". */
	write_byte_level("\"a\\u0120\": 256, \"\\u0120b\": 257",
	                 "[\"a \\u0120\", \"\\u0120 b\"]", NULL, NULL, NULL);
	Tokenizer t;
	load(&t);
	int32_t ids[8];
	cr_assert_eq(encode(&t, "a b", ids, 8), 2);
	cr_assert_eq(ids[0], 'a');
	cr_assert_eq(ids[1], 257);
	tokenizer_free(&t);
}

Test(tokenizer, added_tokens_split_out_and_strip)
{
	write_byte_level("", "[]",
	                 "[{\"id\": 256, \"content\": \"<|x|>\", \"special\": true},"
	                 " {\"id\": 257, \"content\": \"<|x|>y\", \"special\": false},"
	                 " {\"id\": 258, \"content\": \"[S]\", \"special\": true,"
	                 "  \"lstrip\": true, \"rstrip\": true}]",
	                 NULL, NULL);
	Tokenizer t;
	load(&t);
	int32_t ids[16];
	/* Longest match wins: "<|x|>y" is one token. */
	cr_assert_eq(encode(&t, "a<|x|>y<|x|>", ids, 16), 3);
	cr_assert_eq(ids[0], 'a');
	cr_assert_eq(ids[1], 257);
	cr_assert_eq(ids[2], 256);
	/* lstrip / rstrip swallow the whitespace around "[S]". */
	cr_assert_eq(encode(&t, "a  [S] \tb", ids, 16), 3);
	cr_assert_eq(ids[0], 'a');
	cr_assert_eq(ids[1], 258);
	cr_assert_eq(ids[2], 'b');
	char buf[64];
	int32_t dec[] = {'a', 256, 'b'};
	tokenizer_decode(&t, dec, 3, 0, buf, sizeof buf);
	cr_assert_str_eq(buf, "a<|x|>b");
	tokenizer_decode(&t, dec, 3, 1, buf, sizeof buf);
	cr_assert_str_eq(buf, "ab", "skip_special drops special tokens");
	tokenizer_free(&t);
}

Test(tokenizer, byte_level_decode_round_trips_any_utf8)
{
	write_byte_level("\"\\u0120\\u0120\": 256", "[\"\\u0120 \\u0120\"]", NULL, NULL,
	                 NULL);
	Tokenizer t;
	load(&t);
	const char *texts[] = {"",
	                       "plain",
	                       "tabs\tand\nnewlines\r\n",
	                       "caf\xc3\xa9 \xe4\xb8\xad",
	                       "\xf0\x9f\x98\x80  emoji   ",
	                       "    "};
	int32_t ids[128];
	char buf[256];
	for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
		int n = encode(&t, texts[i], ids, 128);
		size_t len = tokenizer_decode(&t, ids, n, 0, buf, sizeof buf);
		cr_assert_eq(len, strlen(texts[i]));
		cr_assert_str_eq(buf, texts[i]);
	}
	/* A lone continuation byte decodes to U+FFFD, as from_utf8_lossy does. */
	int32_t bad[] = {0x80, 'a'};
	tokenizer_decode(&t, bad, 2, 0, buf, sizeof buf);
	cr_assert_str_eq(buf, "\xef\xbf\xbd"
	                      "a");
	tokenizer_free(&t);
}

Test(tokenizer, sentencepiece_style_prepend_and_byte_fallback)
{
	write_file(
	    "tokenizer.json",
	    "{\"added_tokens\": [{\"id\": 1, \"content\": \"<s>\", \"special\": true}],"
	    " \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": ["
	    "  {\"type\": \"Prepend\", \"prepend\": \"\\u2581\"},"
	    "  {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": "
	    "\"\\u2581\"}]},"
	    " \"pre_tokenizer\": null,"
	    " \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": ["
	    "  {\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}},"
	    "  {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}],"
	    "  \"special_tokens\": {\"<s>\": {\"id\": \"<s>\", \"ids\": [1]}}},"
	    " \"decoder\": {\"type\": \"Sequence\", \"decoders\": ["
	    "  {\"type\": \"Replace\", \"pattern\": {\"String\": \"\\u2581\"}, "
	    "\"content\": \" \"},"
	    "  {\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"},"
	    "  {\"type\": \"Strip\", \"content\": \" \", \"start\": 1, \"stop\": 0}]},"
	    " \"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"fuse_unk\": "
	    "true,"
	    "  \"byte_fallback\": true, \"vocab\": {\"<unk>\": 0, \"<s>\": 1,"
	    "  \"<0x0A>\": 2, \"<0xC3>\": 3, \"<0xA9>\": 4, \"\\u2581\": 5, \"a\": 6,"
	    "  \"\\u2581a\": 7}, \"merges\": [\"\\u2581 a\"]}}");
	Tokenizer t;
	load(&t);
	int32_t ids[16];
	/* "a\n\u00e9" -> "\u2581a" "\n" "\u00e9" with the last two by bytes. */
	int n = encode(&t, "a\n\xc3\xa9", ids, 16);
	int32_t want[] = {7, 2, 3, 4};
	cr_assert_eq(n, 4);
	cr_assert_arr_eq(ids, want, sizeof want);
	char buf[64];
	tokenizer_decode(&t, ids, n, 0, buf, sizeof buf);
	cr_assert_str_eq(buf, "a\n\xc3\xa9");
	/* Without a config the template adds BOS. */
	TrlErr err = {0, ""};
	n = tokenizer_encode_ex(&t, "a", 1, TRL_TOK_ADD_SPECIAL, ids, 16, &err);
	cr_assert_eq(n, 2);
	cr_assert_eq(ids[0], 1);
	cr_assert_eq(ids[1], 7);
	tokenizer_free(&t);

	/* add_bos_token false in the config wins over the template. */
	write_file("tokenizer_config.json",
	           "{\"add_bos_token\": false, \"bos_token\": \"<s>\", \"eos_token\": "
	           "{\"content\": \"<unk>\"}}");
	load(&t);
	cr_assert_eq(t.bos_id, 1);
	cr_assert_eq(t.eos_id, 0);
	cr_assert_eq(t.pad_id, 0, "pad falls back to eos");
	n = tokenizer_encode_ex(&t, "a", 1, TRL_TOK_ADD_SPECIAL, ids, 16, &err);
	cr_assert_eq(n, 1);
	cr_assert_eq(ids[0], 7);
	tokenizer_free(&t);
}

Test(tokenizer, split_regex_isolates_like_the_reference)
{
	/* The Qwen-style pattern: (?i:) folds ASCII only, \p{N} one digit at a time. */
	write_byte_level(
	    "\"'S\": 256, \"42\": 257", "[\"' S\", \"4 2\"]", NULL,
	    "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", "
	    "\"pattern\": {\"Regex\": \"(?i:'s|'t)|\\\\p{N}| ?\\\\p{L}+|\\\\s+(?!\\\\S)|"
	    "\\\\s+|[^\\\\s\\\\p{L}\\\\p{N}]+\"}, \"behavior\": \"Isolated\", "
	    "\"invert\": false}, {\"type\": \"ByteLevel\", \"add_prefix_space\": "
	    "false, \"use_regex\": false}]}",
	    NULL);
	Tokenizer t;
	load(&t);
	int32_t ids[32];
	/* "It'S 42" splits into It, 'S, " ", 4, 2: "'S" is one piece (so it merges)
	 * and the digits are separate pieces (so "4 2" cannot merge). */
	int32_t want[] = {'I', 't', 256, ' ', '4', '2'};
	cr_assert_eq(encode(&t, "It'S 42", ids, 32), 6);
	cr_assert_arr_eq(ids, want, sizeof want);
	tokenizer_free(&t);
}

Test(tokenizer, unsupported_components_are_named)
{
	struct {
		const char *pre, *want;
	} cases[] = {
	    {"{\"type\": \"Whitespace\"}",
	     "pre_tokenizer type 'Whitespace' is not supported (supported: "},
	    {"{\"type\": \"Split\", \"pattern\": {\"String\": \" \"}, \"behavior\": "
	     "\"Contiguous\"}",
	     "Split behavior 'Contiguous' is not supported"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		write_byte_level("", "[]", NULL, cases[i].pre, NULL);
		Tokenizer t;
		TrlErr err = {0, ""};
		cr_assert_lt(tokenizer_load_dir(&t, tmpdir, &err), 0);
		cr_assert_not_null(strstr(err.msg, cases[i].want), "message: %s",
		                   err.msg);
		cr_assert_null(t.hf, "a failed load leaves the struct empty");
	}
	write_byte_level("", "[]", NULL, NULL, "{\"type\": \"BertProcessing\"}");
	Tokenizer t;
	TrlErr err = {0, ""};
	cr_assert_lt(tokenizer_load_dir(&t, tmpdir, &err), 0);
	cr_assert_not_null(strstr(err.msg, "post_processor type 'BertProcessing'"), "%s",
	                   err.msg);
	write_file("tokenizer.json",
	           "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}");
	cr_assert_lt(tokenizer_load_dir(&t, tmpdir, &err), 0);
	cr_assert_not_null(strstr(err.msg, "model type 'WordPiece' is not supported"),
	                   "%s", err.msg);
	write_byte_level("", "[\"a zz\"]", NULL, NULL, NULL);
	cr_assert_lt(tokenizer_load_dir(&t, tmpdir, &err), 0);
	cr_assert_not_null(strstr(err.msg, "not in the vocabulary"), "%s", err.msg);
}

Test(tokenizer, invalid_utf8_is_an_error)
{
	write_byte_level("", "[]", NULL, NULL, NULL);
	Tokenizer t;
	load(&t);
	int32_t ids[8];
	TrlErr err = {0, ""};
	cr_assert_lt(tokenizer_encode(&t, "a\xff", 2, ids, 8, &err), 0);
	cr_assert_not_null(strstr(err.msg, "not valid UTF-8 (at byte 1)"), "%s", err.msg);
	tokenizer_free(&t);
}

Test(tokenizer, encode_reports_needed_count_past_cap)
{
	write_byte_level("", "[]", NULL, NULL, NULL);
	Tokenizer t;
	load(&t);
	int32_t ids[2] = {-7, -7};
	TrlErr err = {0, ""};
	cr_assert_eq(tokenizer_encode(&t, "abcd", 4, ids, 1, &err), 4);
	cr_assert_eq(ids[0], 'a');
	cr_assert_eq(ids[1], -7, "nothing is written past cap");
	tokenizer_free(&t);
}
