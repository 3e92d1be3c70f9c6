/* test_dataset_cache.c - the tokenized-dataset cache gives back exactly what
 * tokenizing gives, misses when any input changes, and never trusts a damaged
 * entry. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dataset_cache.h"

static char dir[64], file[96];

static void setup(void)
{
	snprintf(dir, sizeof dir, "/tmp/trl-cache-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(file, sizeof file, "%s/train.jsonl", dir);
	FILE *f = fopen(file, "w");
	cr_assert_not_null(f);
	fputs("{\"prompt\": \"1+1=\", \"completion\": \"2\", \"id\": 7}\n"
	      "{\"prompt\": \"12+30=\", \"completion\": \"42\", \"id\": 8}\n"
	      "{\"prompt\": \"\\u00e9t\\u00e9 \", \"completion\": \"summer\"}\n",
	      f);
	fclose(f);
}

static void teardown(void)
{
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
}

static DatasetOptions opts(void)
{
	DatasetOptions o;
	memset(&o, 0, sizeof o);
	o.text_field = "text";
	o.max_length = 64;
	o.completion_only_loss = -1;
	return o;
}

static void assert_same(const Dataset *a, const Dataset *b)
{
	cr_assert_eq(a->n, b->n);
	cr_assert_eq(a->format, b->format);
	cr_assert_eq(a->n_tokens, b->n_tokens);
	cr_assert_str_eq(a->columns, b->columns);
	for (int i = 0; i < a->n; i++) {
		const Example *x = &a->ex[i], *y = &b->ex[i];
		cr_assert_eq(x->len, y->len);
		cr_assert_eq(x->prompt_len, y->prompt_len);
		cr_assert_eq(x->line, y->line);
		cr_assert_eq(x->label, y->label);
		cr_assert_eq(memcmp(x->ids, y->ids, (size_t)x->len * sizeof *x->ids), 0);
		cr_assert_eq(memcmp(x->mask, y->mask, (size_t)x->len), 0);
		cr_assert_str_eq(x->extra, y->extra);
	}
}

static int entries(void)
{
	char cdir[128];
	snprintf(cdir, sizeof cdir, "%s/cache", dir);
	DIR *d = opendir(cdir);
	if (!d)
		return 0;
	int n = 0;
	for (struct dirent *e; (e = readdir(d));)
		n += strstr(e->d_name, ".trlds") != NULL;
	closedir(d);
	return n;
}

Test(dataset_cache, reload_is_identical_to_tokenizing, .init = setup, .fini = teardown)
{
	Tokenizer t;
	tokenizer_init_bytes(&t);
	DatasetOptions o = opts();
	char cdir[128];
	snprintf(cdir, sizeof cdir, "%s/cache", dir);
	Dataset fresh, first, again;
	TrlErr err;
	int hit = -1;
	cr_assert_eq(dataset_load_jsonl(&fresh, file, &o, &t, &err), 0, "%s", err.msg);
	cr_assert_eq(dataset_load_cached(&first, file, &o, &t, cdir, 1, &hit, &err), 0);
	cr_assert_eq(hit, 0, "an empty cache cannot hit");
	cr_assert_eq(entries(), 1);
	cr_assert_eq(dataset_load_cached(&again, file, &o, &t, cdir, 1, &hit, &err), 0);
	cr_assert_eq(hit, 1, "the second load must come from the cache");
	assert_same(&fresh, &again);
	cr_assert_str_eq(again.ex[0].extra, "{\"id\": 7}");
	dataset_free(&fresh);
	dataset_free(&first);
	dataset_free(&again);
}

Test(dataset_cache, key_changes_with_every_input, .init = setup, .fini = teardown)
{
	Tokenizer t;
	tokenizer_init_bytes(&t);
	DatasetOptions o = opts();
	const char *text = "{\"text\": \"a\"}\n";
	uint64_t k = dataset_cache_key(text, strlen(text), &o, &t);
	cr_assert_eq(k, dataset_cache_key(text, strlen(text), &o, &t), "deterministic");
	cr_assert_neq(k, dataset_cache_key("{\"text\": \"b\"}\n", strlen(text), &o, &t));
	DatasetOptions v = o;
	v.max_length = 63;
	cr_assert_neq(k, dataset_cache_key(text, strlen(text), &v, &t));
	v = o;
	v.keep_end = 1;
	cr_assert_neq(k, dataset_cache_key(text, strlen(text), &v, &t));
	v = o;
	v.completion_only_loss = 0;
	cr_assert_neq(k, dataset_cache_key(text, strlen(text), &v, &t));
	v = o;
	v.eos_token = "<|pad|>";
	cr_assert_neq(k, dataset_cache_key(text, strlen(text), &v, &t));
	v = o;
	v.chat_template = "qwen3";
	cr_assert_neq(k, dataset_cache_key(text, strlen(text), &v, &t));
	v = o;
	v.assistant_only_loss = 1;
	cr_assert_neq(k, dataset_cache_key(text, strlen(text), &v, &t));
	v = o;
	v.text_field = "content";
	cr_assert_neq(k, dataset_cache_key(text, strlen(text), &v, &t));
	Tokenizer other = t;
	other.fingerprint ^= 1;
	cr_assert_neq(k, dataset_cache_key(text, strlen(text), &o, &other));
}

Test(dataset_cache, damaged_entries_are_rebuilt_not_trusted, .init = setup,
     .fini = teardown)
{
	Tokenizer t;
	tokenizer_init_bytes(&t);
	DatasetOptions o = opts();
	char cdir[128], cmd[512];
	snprintf(cdir, sizeof cdir, "%s/cache", dir);
	Dataset fresh, d;
	TrlErr err;
	int hit;
	cr_assert_eq(dataset_load_jsonl(&fresh, file, &o, &t, &err), 0);
	cr_assert_eq(dataset_load_cached(&d, file, &o, &t, cdir, 1, &hit, &err), 0);
	dataset_free(&d);
	/* Truncate the entry: a miss, the dataset is tokenized again and correct. */
	snprintf(cmd, sizeof cmd, "for f in %s/*.trlds; do truncate -s -7 \"$f\"; done", cdir);
	cr_assert_eq(system(cmd), 0);
	cr_assert_eq(dataset_load_cached(&d, file, &o, &t, cdir, 0, &hit, &err), 0);
	cr_assert_eq(hit, 0, "a truncated entry must not be used");
	assert_same(&fresh, &d);
	dataset_free(&d);
	/* Rewrite it, then point an example's offset past the pools. */
	cr_assert_eq(dataset_load_cached(&d, file, &o, &t, cdir, 1, &hit, &err), 0);
	dataset_free(&d);
	snprintf(cmd, sizeof cmd,
	         "for f in %s/*.trlds; do printf '\\377\\377\\377\\177' | dd of=\"$f\" "
	         "bs=1 seek=%d conv=notrunc status=none; done",
	         cdir, 136 + 24);
	cr_assert_eq(system(cmd), 0);
	cr_assert_eq(dataset_load_cached(&d, file, &o, &t, cdir, 0, &hit, &err), 0);
	cr_assert_eq(hit, 0, "an entry with offsets outside its pools must not be used");
	assert_same(&fresh, &d);
	dataset_free(&d);
	dataset_free(&fresh);
}

Test(dataset_cache, no_cache_dir_means_no_cache, .init = setup, .fini = teardown)
{
	Tokenizer t;
	tokenizer_init_bytes(&t);
	DatasetOptions o = opts();
	Dataset d;
	TrlErr err;
	int hit = -1;
	cr_assert_eq(dataset_load_cached(&d, file, &o, &t, "", 1, &hit, &err), 0);
	cr_assert_eq(hit, 0);
	cr_assert_eq(entries(), 0);
	dataset_free(&d);
}
