/* test_config.c - config defaults, YAML and CLI parsing, error messages, round trip. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

/* Writes text to a fresh file under /tmp; path receives its name. */
static void write_tmp(const char *text, char *path, size_t cap)
{
	snprintf(path, cap, "/tmp/trl_cfg_XXXXXX");
	int fd = mkstemp(path);
	cr_assert(fd >= 0, "mkstemp failed");
	FILE *f = fdopen(fd, "w");
	cr_assert_not_null(f);
	fputs(text, f);
	fclose(f);
}

/* Loads text as a YAML config on top of the defaults; path receives the file name. */
static int load_text(Config *c, const char *text, char *path, TrlErr *err)
{
	char tmp[64];
	write_tmp(text, tmp, sizeof tmp);
	if (path)
		strcpy(path, tmp);
	config_defaults(c);
	memset(err, 0, sizeof *err);
	int rc = config_load_yaml(c, tmp, err);
	unlink(tmp);
	return rc;
}

/* Expects text to fail to load with the message "<path>:<suffix>". */
static void expect_error(const char *text, const char *suffix)
{
	Config c;
	TrlErr err;
	char path[64], want[1024];
	int rc = load_text(&c, text, path, &err);
	cr_assert_eq(rc, TRL_EINVAL, "rc %d for:\n%s", rc, text);
	snprintf(want, sizeof want, "%s:%s", path, suffix);
	cr_assert_str_eq(err.msg, want);
}

Test(config, defaults)
{
	Config c;
	config_defaults(&c);
	cr_assert_eq(c.method, TRL_METHOD_SFT);
	cr_assert_str_eq(c.model_name_or_path, "");
	cr_assert_str_eq(c.output_dir, "output");
	cr_assert_str_eq(c.dataset_name, "");
	cr_assert_str_eq(c.dataset_train_split, "train");
	cr_assert_str_eq(c.dataset_test_split, "test");
	cr_assert_str_eq(c.dataset_text_field, "text");
	cr_assert_eq(c.per_device_train_batch_size, 8);
	cr_assert_eq(c.per_device_eval_batch_size, 8);
	cr_assert_eq(c.gradient_accumulation_steps, 1);
	cr_assert_eq(c.learning_rate, 2e-5);
	cr_assert_eq(c.lr_scheduler_type, TRL_SCHED_LINEAR);
	cr_assert_eq(c.warmup_ratio, 0.0);
	cr_assert_eq(c.adam_beta1, 0.9);
	cr_assert_eq(c.adam_beta2, 0.999);
	cr_assert_eq(c.adam_epsilon, 1e-8);
	cr_assert_eq(c.max_grad_norm, 1.0);
	cr_assert_eq(c.num_train_epochs, 3.0);
	cr_assert_eq(c.max_steps, -1);
	cr_assert_eq(c.logging_steps, 10);
	cr_assert_eq(c.seed, 42);
	cr_assert_eq(c.max_length, 1024);
	cr_assert_eq(c.truncation_mode, TRL_TRUNC_KEEP_START);
	cr_assert_eq(c.packing, 0);
	cr_assert_eq(c.completion_only_loss, -1);
	cr_assert_eq(c.model.arch, TRL_ARCH_LLAMA);
	cr_assert_eq(c.model.vocab_size, 258);
	cr_assert_eq(c.model.hidden_size, 64);
	cr_assert_eq(c.model.num_hidden_layers, 2);
	cr_assert_eq(c.model.num_attention_heads, 4);
	cr_assert_eq(c.model.num_key_value_heads, 0);
	cr_assert_eq(c.model.max_position_embeddings, 1024);
	cr_assert_eq(c.model.tie_word_embeddings, 1);
	cr_assert_eq(c.model.attention_bias, 0);
	cr_assert_eq(c.model.rope_theta, 10000.0f);
	cr_assert_eq(c.model.norm_eps, 1e-5f);
	cr_assert_eq(c.model.initializer_range, 0.02f);
	cr_assert_str_eq(c.source, "");
}

Test(config, full_file_with_model_block)
{
	const char *text = "# a full SFT run\n"
	                   "method: sft\n"
	                   "model_name_or_path: ''\n"
	                   "output_dir: runs/sft-1\n"
	                   "dataset_name: data/gsm8k\n"
	                   "dataset_train_split: train\n"
	                   "dataset_test_split: validation\n"
	                   "dataset_text_field: content\n"
	                   "per_device_train_batch_size: 16\n"
	                   "per_device_eval_batch_size: 32\n"
	                   "gradient_accumulation_steps: 4\n"
	                   "learning_rate: 3.0e-4\n"
	                   "lr_scheduler_type: cosine\n"
	                   "warmup_ratio: 0.1\n"
	                   "warmup_steps: 20\n"
	                   "weight_decay: 0.01\n"
	                   "weight_decay_embeddings: yes\n"
	                   "adam_beta1: 0.85\n"
	                   "adam_beta2: 0.95\n"
	                   "adam_epsilon: 1e-6\n"
	                   "max_grad_norm: 0\n"
	                   "num_train_epochs: 1.5\n"
	                   "max_steps: 500\n"
	                   "logging_steps: 5\n"
	                   "eval_steps: 100\n"
	                   "eval_max_new_tokens: 64\n"
	                   "eval_max_samples: 200\n"
	                   "seed: 1234567890123\n"
	                   "max_length: 512\n"
	                   "truncation_mode: keep_end\n"
	                   "packing: true\n"
	                   "completion_only_loss: false\n"
	                   "skip_invalid_rows: on\n"
	                   "threads_per_rank: 6\n"
	                   "disable_tqdm: True\n"
	                   "model:\n"
	                   "  architecture: gpt2\n"
	                   "  vocab_size: 50257\n"
	                   "  hidden_size: 768\n"
	                   "  num_hidden_layers: 12\n"
	                   "  num_attention_heads: 12\n"
	                   "  num_key_value_heads: 12\n"
	                   "  intermediate_size: 3072\n"
	                   "  max_position_embeddings: 1024\n"
	                   "  tie_word_embeddings: false\n"
	                   "  attention_bias: true\n"
	                   "  rope_theta: 500000\n"
	                   "  layer_norm_epsilon: 1e-6\n"
	                   "  initializer_range: 0.01\n";
	Config c;
	TrlErr err;
	char path[64];
	cr_assert_eq(load_text(&c, text, path, &err), 0, "%s", err.msg);
	cr_assert_str_eq(c.source, path);
	cr_assert_str_eq(c.output_dir, "runs/sft-1");
	cr_assert_str_eq(c.dataset_name, "data/gsm8k");
	cr_assert_str_eq(c.dataset_test_split, "validation");
	cr_assert_str_eq(c.dataset_text_field, "content");
	cr_assert_eq(c.per_device_train_batch_size, 16);
	cr_assert_eq(c.per_device_eval_batch_size, 32);
	cr_assert_eq(c.gradient_accumulation_steps, 4);
	cr_assert_eq(c.learning_rate, 3.0e-4);
	cr_assert_eq(c.lr_scheduler_type, TRL_SCHED_COSINE);
	cr_assert_eq(c.warmup_ratio, 0.1);
	cr_assert_eq(c.warmup_steps, 20);
	cr_assert_eq(c.weight_decay, 0.01);
	cr_assert_eq(c.weight_decay_embeddings, 1);
	cr_assert_eq(c.adam_beta1, 0.85);
	cr_assert_eq(c.adam_beta2, 0.95);
	cr_assert_eq(c.adam_epsilon, 1e-6);
	cr_assert_eq(c.max_grad_norm, 0.0);
	cr_assert_eq(c.num_train_epochs, 1.5);
	cr_assert_eq(c.max_steps, 500);
	cr_assert_eq(c.logging_steps, 5);
	cr_assert_eq(c.eval_steps, 100);
	cr_assert_eq(c.eval_max_new_tokens, 64);
	cr_assert_eq(c.eval_max_samples, 200);
	cr_assert_eq(c.seed, 1234567890123L);
	cr_assert_eq(c.max_length, 512);
	cr_assert_eq(c.truncation_mode, TRL_TRUNC_KEEP_END);
	cr_assert_eq(c.packing, 1);
	cr_assert_eq(c.completion_only_loss, 0);
	cr_assert_eq(c.skip_invalid_rows, 1);
	cr_assert_eq(c.threads_per_rank, 6);
	cr_assert_eq(c.disable_tqdm, 1);
	cr_assert_eq(c.model.arch, TRL_ARCH_GPT2);
	cr_assert_eq(c.model.vocab_size, 50257);
	cr_assert_eq(c.model.hidden_size, 768);
	cr_assert_eq(c.model.num_hidden_layers, 12);
	cr_assert_eq(c.model.num_attention_heads, 12);
	cr_assert_eq(c.model.num_key_value_heads, 12);
	cr_assert_eq(c.model.intermediate_size, 3072);
	cr_assert_eq(c.model.max_position_embeddings, 1024);
	cr_assert_eq(c.model.tie_word_embeddings, 0);
	cr_assert_eq(c.model.attention_bias, 1);
	cr_assert_eq(c.model.rope_theta, 500000.0f);
	cr_assert_eq(c.model.norm_eps, 1e-6f);
	cr_assert_eq(c.model.initializer_range, 0.01f);
}

Test(config, empty_file_keeps_defaults)
{
	Config c, d;
	TrlErr err;
	cr_assert_eq(load_text(&c, "# nothing set\n", NULL, &err), 0, "%s", err.msg);
	config_defaults(&d);
	memcpy(d.source, c.source, sizeof d.source);
	cr_assert_eq(memcmp(&c, &d, sizeof c), 0);
}

Test(config, dotted_model_key_and_rms_norm_eps_alias)
{
	Config c;
	TrlErr err;
	cr_assert_eq(load_text(&c,
	                       "model.hidden_size: 128\nmodel:\n  rms_norm_eps: 1e-6\n",
	                       NULL, &err),
	             0, "%s", err.msg);
	cr_assert_eq(c.model.hidden_size, 128);
	cr_assert_eq(c.model.norm_eps, 1e-6f);
}

Test(config, unknown_key_suggests_closest)
{
	expect_error("seed: 1\nmax_steps: 3\nlearning_rat: 0.1\n",
	             "3:1: unknown key 'learning_rat' (did you mean 'learning_rate'?)");
	expect_error("lraening_rate: 0.1\n",
	             "1:1: unknown key 'lraening_rate' (did you mean 'learning_rate'?)");
	/* Two swapped pairs are two edits (four for plain Levenshtein). */
	expect_error("mehtdo: sft\n",
	             "1:1: unknown key 'mehtdo' (did you mean 'method'?)");
	/* Longer keys allow more edits: 5 here, within a third of the length. */
	expect_error("per_device_train_batch: 4\n",
	             "1:1: unknown key 'per_device_train_batch' (did you mean "
	             "'per_device_train_batch_size'?)");
}

Test(config, unknown_key_without_close_match_points_to_help)
{
	expect_error(
	    "frobnicate_everything: 1\n",
	    "1:1: unknown key 'frobnicate_everything' (run `trl-hpc --help` for the "
	    "list of keys)");
}

Test(config, unknown_key_in_model_block)
{
	expect_error(
	    "model:\n  hidden_size: 8\n  num_attention_head: 2\n",
	    "3:3: unknown key 'num_attention_head' in the `model:` block (did you mean "
	    "'num_attention_heads'?)");
	expect_error(
	    "model:\n  n_layer: 2\n",
	    "2:3: unknown key 'n_layer' in the `model:` block (run `trl-hpc --help` "
	    "for the list of keys)");
	expect_error("model:\n  hiden_size: 8\n",
	             "2:3: unknown key 'hiden_size' in the `model:` block (did you mean "
	             "'hidden_size'?)");
}

Test(config, model_key_at_top_level_is_pointed_to_model_block)
{
	expect_error(
	    "seed: 3\nhidden_size: 128\n",
	    "2:1: unknown key 'hidden_size' ('hidden_size' is a model key: put it in "
	    "the `model:` block)");
	expect_error(
	    "vocab_sise: 128\n",
	    "1:1: unknown key 'vocab_sise' (did you mean 'vocab_size' in the `model:` "
	    "block?)");
}

Test(config, wrong_type_names_line_column_and_expectation)
{
	expect_error(
	    "seed: 1\ndataset_name: x\nmax_steps: 3\nwarmup_steps: 0\n"
	    "learning_rate: abc\n",
	    "5:16: learning_rate: 'abc' is not a number (expected a float >= 0)");
	expect_error(
	    "model:\n  rope_theta: big\n",
	    "2:15: model.rope_theta: 'big' is not a number (expected a float > 0)");
}

Test(config, integer_rejects_fraction_and_overflow)
{
	expect_error(
	    "max_steps: 3.5\n",
	    "1:12: max_steps: '3.5' is not an integer (expected an integer >= -1)");
	expect_error(
	    "logging_steps: 99999999999\n",
	    "1:16: logging_steps: '99999999999' does not fit in a 32-bit integer "
	    "(expected an integer >= 1)");
	expect_error("seed: 99999999999999999999\n",
	             "1:7: seed: '99999999999999999999' does not fit in a 64-bit integer "
	             "(expected an integer)");
	expect_error("max_steps:\n",
	             "1:11: max_steps: missing value (expected an integer >= -1)");
}

Test(config, out_of_range)
{
	expect_error(
	    "seed: 1\nmax_steps: 3\nlogging_steps: 1\nper_device_train_batch_size: 0\n",
	    "4:30: per_device_train_batch_size: 0 is out of range (allowed: >= 1)");
	expect_error("adam_beta2: 1.0\n",
	             "1:13: adam_beta2: 1.0 is out of range (allowed: >= 0 and < 1)");
	expect_error("warmup_ratio: 1.5\n",
	             "1:15: warmup_ratio: 1.5 is out of range (allowed: >= 0 and <= 1)");
	expect_error("model:\n  norm_eps: 1e-50\n",
	             "2:13: model.norm_eps: 1e-50 is out of range (allowed: > 0)");
}

Test(config, bad_enum_lists_choices_and_suggests)
{
	expect_error("lr_scheduler_type: cosin\n",
	             "1:20: lr_scheduler_type: 'cosin' is not one of: constant, "
	             "constant_with_warmup, linear, cosine (did you mean 'cosine'?)");
	expect_error(
	    "model:\n  architecture: mistral\n",
	    "2:17: model.architecture: 'mistral' is not one of: llama, gpt2, lfm2");
}

Test(config, duplicate_key_names_both_lines)
{
	expect_error("learning_rate: 1e-3\nseed: 2\nlearning_rate: 1e-4\n",
	             "3:1: duplicate key 'learning_rate' (first set on line 1)");
	expect_error("model:\n  norm_eps: 1e-5\n  rms_norm_eps: 1e-6\n",
	             "3:3: 'rms_norm_eps' sets the same value as 'norm_eps' on line 2");
	expect_error("model:\n  hidden_size: 8\nseed: 1\nmodel:\n  hidden_size: 16\n",
	             "4:1: duplicate key 'model' (first set on line 1)");
}

Test(config, list_or_mapping_where_a_value_is_expected)
{
	expect_error("dataset_name:\n  - a.jsonl\n  - b.jsonl\n",
	             "2:3: dataset_name: expected a single value, found a list");
	expect_error("seed: {a: 1}\n",
	             "1:7: seed: expected a single value, found a mapping");
	expect_error("model:\n  hidden_size:\n    x: 1\n",
	             "3:5: model.hidden_size: expected a single value, found a mapping");
	expect_error(
	    "model: llama\n",
	    "1:8: model: expected a mapping of model keys (indented lines such as "
	    "`hidden_size: 64` below `model:`; a pretrained model is named by "
	    "model_name_or_path), found a single value");
}

Test(config, top_level_must_be_a_mapping)
{
	expect_error(
	    "- seed: 1\n",
	    "1:1: the top level must be a mapping of `key: value` lines, found a list");
	expect_error("seed: 1\n---\nseed: 2\n",
	             "2:1: a second YAML document: a config file holds exactly one");
}

Test(config, yaml_syntax_error_has_position)
{
	Config c;
	TrlErr err;
	char path[64], want[128];
	int rc =
	    load_text(&c, "seed: 1\nlearning_rate: \"abc\nmax_steps: 3\n", path, &err);
	cr_assert_eq(rc, TRL_EINVAL);
	snprintf(want, sizeof want, "%s:4:1: YAML syntax error: ", path);
	cr_assert(strncmp(err.msg, want, strlen(want)) == 0, "got: %s", err.msg);
	cr_assert(strstr(err.msg, "quoted scalar at line 2"), "got: %s", err.msg);

	rc = load_text(&c, "seed: 1\nmax_steps 3\nlogging_steps: 1\n", path, &err);
	cr_assert_eq(rc, TRL_EINVAL);
	snprintf(want, sizeof want,
	         "%s:3:1: YAML syntax error: could not find expected ':'", path);
	cr_assert(strncmp(err.msg, want, strlen(want)) == 0, "got: %s", err.msg);
}

Test(config, yaml_aliases_are_rejected)
{
	expect_error(
	    "seed: &s 1\nmax_steps: *s\n",
	    "2:12: max_steps: expected a single value, found an alias (*name; aliases "
	    "are not supported)");
}

Test(config, unreadable_file)
{
	Config c;
	TrlErr err;
	config_defaults(&c);
	int rc = config_load_yaml(&c, "/nonexistent/x.yaml", &err);
	cr_assert_eq(rc, TRL_EIO);
	cr_assert_str_eq(err.msg,
	                 "cannot read config file '/nonexistent/x.yaml': No such "
	                 "file or directory");
	rc = config_load_yaml(&c, "/tmp", &err);
	cr_assert_eq(rc, TRL_EIO);
	cr_assert_str_eq(err.msg, "cannot read config file '/tmp': Is a directory");
}

Test(config, string_too_long_is_rejected)
{
	char text[2200];
	int n = snprintf(text, sizeof text, "output_dir: ");
	memset(text + n, 'a', TRL_PATH_MAX);
	strcpy(text + n + TRL_PATH_MAX, "\n");
	expect_error(text,
	             "1:13: output_dir: the value is too long (1024 characters; at most "
	             "1023)");

	Config c;
	TrlErr err;
	config_defaults(&c);
	cr_assert_eq(config_set(&c, "dataset_test_split", text + n, "test", &err),
	             TRL_EINVAL);
	cr_assert(strstr(err.msg, "test: dataset_test_split: the value is too long"),
	          "got: %s", err.msg);
	cr_assert_str_eq(c.dataset_test_split, "test");

	text[n + TRL_PATH_MAX - 1] = '\0';
	cr_assert_eq(config_set(&c, "output_dir", text + n, "test", &err), 0, "%s",
	             err.msg);
	cr_assert_eq(strlen(c.output_dir), TRL_PATH_MAX - 1);
}

Test(config, command_line_overrides_yaml)
{
	Config c;
	TrlErr err;
	cr_assert_eq(
	    load_text(&c, "learning_rate: 1e-3\nseed: 7\nmodel:\n  hidden_size: 32\n",
	              NULL, &err),
	    0, "%s", err.msg);
	char *argv[] = {"trl-hpc",
	                "input.yaml",
	                "--learning_rate",
	                "5e-4",
	                "--model.hidden_size=96",
	                "--packing=yes",
	                "--dataset_name",
	                "data/x.jsonl",
	                "--model.rms_norm_eps",
	                "1e-6"};
	int argc = (int)(sizeof argv / sizeof argv[0]);
	cr_assert_eq(config_apply_args(&c, argc, argv, 2, &err), 0, "%s", err.msg);
	cr_assert_eq(c.learning_rate, 5e-4);
	cr_assert_eq(c.seed, 7);
	cr_assert_eq(c.model.hidden_size, 96);
	cr_assert_eq(c.packing, 1);
	cr_assert_str_eq(c.dataset_name, "data/x.jsonl");
	cr_assert_eq(c.model.norm_eps, 1e-6f);
}

Test(config, command_line_errors)
{
	Config c;
	TrlErr err;
	config_defaults(&c);
	char *missing[] = {"--packing"};
	cr_assert_eq(config_apply_args(&c, 1, missing, 0, &err), TRL_EINVAL);
	cr_assert_str_eq(err.msg, "command line: --packing needs a value (for example "
	                          "--packing true)");

	char *followed[] = {"--max_steps", "--seed", "3"};
	cr_assert_eq(config_apply_args(&c, 3, followed, 0, &err), TRL_EINVAL);
	cr_assert(strstr(err.msg, "--max_steps needs a value"), "got: %s", err.msg);

	char *stray[] = {"--seed", "3", "extra.yaml"};
	cr_assert_eq(config_apply_args(&c, 3, stray, 0, &err), TRL_EINVAL);
	cr_assert(strstr(err.msg, "unexpected argument 'extra.yaml'"), "got: %s",
	          err.msg);

	char *typo[] = {"--learning_rat", "1e-3"};
	cr_assert_eq(config_apply_args(&c, 2, typo, 0, &err), TRL_EINVAL);
	cr_assert_str_eq(err.msg,
	                 "command line: unknown option '--learning_rat' (did you "
	                 "mean '--learning_rate'?)");

	char *bare[] = {"--hidden_size=8"};
	cr_assert_eq(config_apply_args(&c, 1, bare, 0, &err), TRL_EINVAL);
	cr_assert(strstr(err.msg, "(did you mean '--model.hidden_size'?)"), "got: %s",
	          err.msg);

	char *bad[] = {"--learning_rate=abc"};
	cr_assert_eq(config_apply_args(&c, 1, bad, 0, &err), TRL_EINVAL);
	cr_assert_str_eq(err.msg, "command line: --learning_rate: 'abc' is not a number "
	                          "(expected a float >= 0)");
	cr_assert_eq(c.learning_rate, 2e-5);
}

Test(config, set_accepts_model_keys_and_names_origin)
{
	Config c;
	TrlErr err;
	config_defaults(&c);
	cr_assert_eq(config_set(&c, "model.architecture", "gpt2", "env", &err), 0, "%s",
	             err.msg);
	cr_assert_eq(c.model.arch, TRL_ARCH_GPT2);
	cr_assert_eq(config_set(&c, "model.num_hidden_layers", "0", "env", &err),
	             TRL_EINVAL);
	cr_assert_str_eq(err.msg,
	                 "env: model.num_hidden_layers: 0 is out of range (allowed: "
	                 ">= 1)");
	cr_assert_eq(config_set(&c, "sed", "1", "env", &err), TRL_EINVAL);
	cr_assert_str_eq(err.msg, "env: unknown key 'sed' (did you mean 'seed'?)");
}

Test(config, bool_forms)
{
	static const char *const yes[] = {"true", "True", "YES", "yes", "on", "On", "1"};
	static const char *const no[] = {"false", "FALSE", "no", "No", "off", "OFF", "0"};
	Config c;
	TrlErr err;
	config_defaults(&c);
	for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
		c.packing = 0;
		cr_assert_eq(config_set(&c, "packing", yes[i], "t", &err), 0, "%s",
		             yes[i]);
		cr_assert_eq(c.packing, 1, "%s", yes[i]);
	}
	for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
		c.packing = 1;
		cr_assert_eq(config_set(&c, "packing", no[i], "t", &err), 0, "%s", no[i]);
		cr_assert_eq(c.packing, 0, "%s", no[i]);
	}
	cr_assert_eq(config_set(&c, "packing", "2", "t", &err), TRL_EINVAL);
	cr_assert_eq(config_set(&c, "packing", "null", "t", &err), TRL_EINVAL);
	cr_assert_str_eq(err.msg,
	                 "t: packing: 'null' is not a boolean (expected true or false)");
	expect_error("packing: maybe\n",
	             "1:10: packing: 'maybe' is not a boolean (expected true or false)");
}

Test(config, completion_only_loss_is_tri_state)
{
	static const struct {
		const char *yaml;
		int want;
	} cases[] = {
	    {"completion_only_loss: true\n", 1},  {"completion_only_loss: false\n", 0},
	    {"completion_only_loss: null\n", -1}, {"completion_only_loss: None\n", -1},
	    {"completion_only_loss: ~\n", -1},    {"completion_only_loss:\n", -1},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		Config c;
		TrlErr err;
		cr_assert_eq(load_text(&c, "completion_only_loss: true\n", NULL, &err),
		             0);
		cr_assert_eq(c.completion_only_loss, 1);
		c.completion_only_loss = 5;
		char tmp[64];
		write_tmp(cases[i].yaml, tmp, sizeof tmp);
		cr_assert_eq(config_load_yaml(&c, tmp, &err), 0, "%s", err.msg);
		unlink(tmp);
		cr_assert_eq(c.completion_only_loss, cases[i].want, "%s", cases[i].yaml);
	}
	expect_error(
	    "completion_only_loss: sometimes\n",
	    "1:23: completion_only_loss: 'sometimes' is not a boolean (expected true, "
	    "false or null)");
}

Test(config, quoted_null_is_a_string)
{
	Config c;
	TrlErr err;
	cr_assert_eq(
	    load_text(&c, "output_dir: 'null'\nmodel_name_or_path: ~\n", NULL, &err), 0,
	    "%s", err.msg);
	cr_assert_str_eq(c.output_dir, "null");
	cr_assert_str_eq(c.model_name_or_path, "");
}

/* Writes c as YAML, reads it back over the defaults and expects identical bytes. */
static void expect_round_trip(const Config *c)
{
	char tmp[64];
	write_tmp("", tmp, sizeof tmp);
	FILE *f = fopen(tmp, "w");
	cr_assert_not_null(f);
	config_write_yaml(c, f);
	fclose(f);

	Config back;
	TrlErr err;
	config_defaults(&back);
	int rc = config_load_yaml(&back, tmp, &err);
	unlink(tmp);
	cr_assert_eq(rc, 0, "%s", err.msg);
	memcpy(back.source, c->source, sizeof back.source);
	/* given records where values came from (the file gives every key), not
	 * the values. */
	memcpy(back.given, c->given, sizeof back.given);
	cr_assert_eq(memcmp(&back, c, sizeof back), 0);
}

Test(config, write_yaml_round_trips)
{
	Config c;
	TrlErr err;
	config_defaults(&c);
	expect_round_trip(&c);

	static const char *const sets[][2] = {
	    {"output_dir", "runs/a \"quoted\" dir: #1 \\ back"},
	    {"dataset_name", "data/caf\xc3\xa9 set.jsonl"},
	    {"model_name_or_path", "  leading space"},
	    {"dataset_text_field", "true"},
	    {"learning_rate", "0.1"},
	    {"adam_epsilon", "1e-8"},
	    {"weight_decay", "0.30000000000000004"},
	    {"num_train_epochs", "2.5"},
	    {"warmup_ratio", "0.03"},
	    {"max_grad_norm", "0"},
	    {"seed", "-9000000000"},
	    {"lr_scheduler_type", "constant_with_warmup"},
	    {"truncation_mode", "keep_end"},
	    {"completion_only_loss", "false"},
	    {"packing", "true"},
	    {"model.architecture", "gpt2"},
	    {"model.norm_eps", "1e-6"},
	    {"model.rope_theta", "1000000"},
	    {"model.initializer_range", "0.0123456789"},
	    {"model.tie_word_embeddings", "false"},
	    {"model.num_key_value_heads", "2"},
	    {"method", "dpo"},
	    {"loss_type", "sigmoid,bco_pair,sft"},
	    {"loss_weights", "0.8,0.2,1"},
	    {"f_divergence_type", "alpha_divergence"},
	    {"ref_model_name_or_path", "models/ref"},
	    {"beta", "0.05"},
	};
	for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
		cr_assert_eq(config_set(&c, sets[i][0], sets[i][1], "test", &err), 0,
		             "%s", err.msg);
	expect_round_trip(&c);

	c.completion_only_loss = 1;
	c.learning_rate = 1.0 / 3.0;
	c.model.norm_eps = 1.0f / 3.0f;
	expect_round_trip(&c);
}

Test(config, written_yaml_nests_model_block)
{
	Config c;
	config_defaults(&c);
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	config_write_yaml(&c, f);
	fclose(f);
	cr_assert(strstr(buf, "\nmodel:\n  architecture: llama\n  vocab_size: 258\n"),
	          "got:\n%s", buf);
	cr_assert(strstr(buf, "\nlearning_rate: 2.0e-05\n"), "got:\n%s", buf);
	cr_assert(strstr(buf, "\ncompletion_only_loss: null\n"), "got:\n%s", buf);
	cr_assert_null(strstr(buf, "\nmodel.hidden_size"));
	free(buf);
}

Test(config, finish_checks_relations)
{
	Config c;
	TrlErr err;
	config_defaults(&c);
	cr_assert_eq(config_finish(&c, &err), TRL_EINVAL);
	cr_assert_str_eq(err.msg,
	                 "dataset_name is not set: point it at a .jsonl file or a "
	                 "folder with train.jsonl/test.jsonl");
	cr_assert_eq(config_set(&c, "dataset_name", "d.jsonl", "t", &err), 0);
	c.warmup_ratio = 0.1;
	c.warmup_steps = 10;
	cr_assert_eq(config_finish(&c, &err), 0, "%s", err.msg);

	c.max_length = 2048;
	cr_assert_eq(config_finish(&c, &err), TRL_EINVAL);
	cr_assert(strstr(err.msg, "max_length (2048) is larger than "
	                          "model.max_position_embeddings (1024)"),
	          "got: %s", err.msg);
	strcpy(c.model_name_or_path, "pretrained/");
	cr_assert_eq(config_finish(&c, &err), 0, "%s", err.msg);
}

static char *capture(void (*print)(FILE *))
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	print(f);
	fclose(f);
	return buf;
}

Test(config, help_and_markdown_list_every_key)
{
	char *help = capture(config_print_help);
	char *md = capture(config_print_markdown);
	cr_assert(strstr(help, "usage: trl-hpc [validate] input.yaml [--key value ...]"));
	cr_assert(strstr(help, "  --per_device_train_batch_size int (default 8; >= 1)\n"),
	          "got:\n%s", help);
	cr_assert(strstr(help,
	                 "  --lr_scheduler_type {constant, constant_with_warmup, linear, "
	                 "cosine} (default linear)\n"),
	          "got:\n%s", help);
	cr_assert(strstr(md, "| key | type | default | range/choices | description |\n"));
	cr_assert(strstr(md, "| `adam_beta1` | float | `0.9` | >= 0 and < 1 | "),
	          "got:\n%s", md);
	cr_assert(strstr(md, "| `model.norm_eps` | float | `1e-5` | > 0 | "), "got:\n%s",
	          md);

	/* Every key of a written config appears in both. */
	Config c;
	config_defaults(&c);
	char *yaml = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&yaml, &len);
	config_write_yaml(&c, f);
	fclose(f);
	int keys = 0, in_model = 0;
	for (char *line = strtok(yaml, "\n"); line; line = strtok(NULL, "\n")) {
		if (line[0] == '#')
			continue;
		if (strcmp(line, "model:") == 0) {
			in_model = 1;
			continue;
		}
		char name[96], flag[128], cell[128];
		snprintf(name, sizeof name, "%s%.*s", in_model ? "model." : "",
		         (int)strcspn(line + 2 * in_model, ":"), line + 2 * in_model);
		snprintf(flag, sizeof flag, "  --%s ", name);
		snprintf(cell, sizeof cell, "| `%s` |", name);
		cr_assert(strstr(help, flag), "--help misses %s", name);
		cr_assert(strstr(md, cell), "markdown misses %s", name);
		keys++;
	}
	cr_assert_eq(keys, 142); /* every key of the schema, model block included */
	free(yaml);
	free(help);
	free(md);
}

Test(config, loss_type_takes_a_yaml_list)
{
	Config c;
	TrlErr err;
	cr_assert_eq(load_text(&c,
	                       "method: dpo\nloss_type: [sigmoid, bco_pair, sft]\n"
	                       "loss_weights:\n  - 0.8\n  - 0.2\n  - 1.0\n",
	                       NULL, &err),
	             0, "%s", err.msg);
	cr_assert_str_eq(c.loss_type, "sigmoid,bco_pair,sft");
	cr_assert_str_eq(c.loss_weights, "0.8,0.2,1.0");
	cr_assert_eq(c.method, TRL_METHOD_DPO);
	/* Only the list keys take a sequence. */
	char path[64];
	cr_assert_neq(load_text(&c, "beta: [0.1, 0.2]\n", path, &err), 0);
	cr_assert(strstr(err.msg, "beta: expected a single value, found a list"), "%s",
	          err.msg);
	cr_assert_neq(load_text(&c, "loss_type: [[sigmoid]]\n", path, &err), 0);
	cr_assert(strstr(err.msg, "loss_type: expected a list of single values"), "%s",
	          err.msg);
}

/* TRL's trainers have their own defaults: DPOConfig's learning_rate is 1e-6,
 * KTOConfig samples sequentially. They apply only to keys nobody set. */
Test(config, method_defaults_apply_to_keys_not_given)
{
	Config c;
	TrlErr err;
	cr_assert_eq(load_text(&c, "method: dpo\ndataset_name: d.jsonl\n", NULL, &err),
	             0);
	cr_assert_eq(config_finish(&c, &err), 0, "%s", err.msg);
	cr_assert_eq(c.learning_rate, 1e-6);
	cr_assert_str_eq(c.loss_type, "sigmoid");
	cr_assert_eq(
	    load_text(&c, "method: dpo\ndataset_name: d.jsonl\nlearning_rate: 3e-4\n",
	              NULL, &err),
	    0);
	cr_assert_eq(config_finish(&c, &err), 0, "%s", err.msg);
	cr_assert_eq(c.learning_rate, 3e-4);
	cr_assert_eq(load_text(&c, "method: kto\ndataset_name: d.jsonl\n", NULL, &err),
	             0);
	cr_assert_eq(config_finish(&c, &err), 0, "%s", err.msg);
	cr_assert_eq(c.train_sampling_strategy, TRL_SAMPLING_SEQUENTIAL);
	cr_assert_str_eq(c.loss_type, "kto");
	cr_assert_eq(load_text(&c, "method: reward\ndataset_name: d.jsonl\n", NULL, &err),
	             0);
	cr_assert_eq(config_set(&c, "learning_rate", "5e-5", "command line", &err), 0);
	cr_assert_eq(config_finish(&c, &err), 0, "%s", err.msg);
	cr_assert_eq(c.learning_rate, 5e-5);
	cr_assert_eq(load_text(&c, "method: sft\ndataset_name: d.jsonl\n", NULL, &err),
	             0);
	cr_assert_eq(config_finish(&c, &err), 0, "%s", err.msg);
	cr_assert_eq(c.learning_rate, 2e-5);
	cr_assert_str_eq(c.loss_type, "");
}

Test(config, online_method_defaults)
{
	Config c;
	TrlErr err;
	cr_assert_eq(load_text(&c, "method: grpo\ndataset_name: d.jsonl\n", NULL, &err),
	             0);
	cr_assert_eq(config_finish(&c, &err), 0, "%s", err.msg);
	cr_assert_eq(c.learning_rate, 1e-6);
	cr_assert_eq(c.beta, 0.0);
	cr_assert_str_eq(c.loss_type, "dapo");
	cr_assert_eq(c.num_generations, 8);
	cr_assert_eq(c.max_staleness, 1);
	cr_assert_str_eq(c.reward_funcs, "accuracy");
	cr_assert_eq(load_text(&c, "method: rloo\ndataset_name: d.jsonl\n", NULL, &err),
	             0);
	cr_assert_eq(config_finish(&c, &err), 0, "%s", err.msg);
	cr_assert_eq(c.beta, 0.05);
	cr_assert_eq(c.num_generations, 2);
	cr_assert_str_eq(c.loss_type, "");
	cr_assert_eq(
	    load_text(&c, "method: ppo\ndataset_name: d.jsonl\nresponse_length: 20\n",
	              NULL, &err),
	    0, "%s", err.msg);
	cr_assert_eq(config_finish(&c, &err), 0, "%s", err.msg);
	cr_assert_eq(c.learning_rate, 3e-6);
	cr_assert_eq(c.temperature, 0.7);
	cr_assert_eq(c.max_completion_length, 20, "response_length is its alias");
	/* beta 0 is an online method's "no KL"; the preference methods refuse it. */
	cr_assert_eq(
	    load_text(&c, "method: dpo\ndataset_name: d.jsonl\nbeta: 0\n", NULL, &err),
	    0);
	cr_assert_eq(config_finish(&c, &err), TRL_EINVAL);
	cr_assert(strstr(err.msg, "beta: 0 is out of range for dpo"), "%s", err.msg);
}

Test(config, lists_on_the_command_line_are_yaml_flow)
{
	Config c;
	TrlErr err;
	config_defaults(&c);
	cr_assert_eq(
	    config_set(&c, "reward_funcs", "[accuracy, format]", "command line", &err), 0,
	    "%s", err.msg);
	cr_assert_str_eq(c.reward_funcs, "accuracy,format");
	cr_assert_eq(config_set(&c, "reward_funcs", "[]", "command line", &err), 0, "%s",
	             err.msg);
	cr_assert_str_eq(c.reward_funcs, "");
	cr_assert_eq(config_set(&c, "reward_weights", "[1.0, 0.5]", "command line", &err),
	             0);
	cr_assert_str_eq(c.reward_weights, "1.0,0.5");
	cr_assert_eq(config_set(&c, "reward_funcs", "[accuracy", "command line", &err),
	             TRL_EINVAL);
	cr_assert(strstr(err.msg, "does not end with ]"), "%s", err.msg);
	/* The YAML forms: a block list, a flow list and the empty list. */
	cr_assert_eq(
	    load_text(&c, "reward_funcs: [accuracy, think_format]\n", NULL, &err), 0,
	    "%s", err.msg);
	cr_assert_str_eq(c.reward_funcs, "accuracy,think_format");
	cr_assert_eq(load_text(&c, "reward_funcs: []\n", NULL, &err), 0, "%s", err.msg);
	cr_assert_str_eq(c.reward_funcs, "");
	cr_assert_eq(
	    load_text(&c, "reward_funcs:\n  - format\n  - accuracy\n", NULL, &err), 0,
	    "%s", err.msg);
	cr_assert_str_eq(c.reward_funcs, "format,accuracy");
}

Test(config, precision_keys)
{
	Config c;
	TrlErr err;
	cr_assert_eq(load_text(&c, "dataset_name: d.jsonl\nbf16: true\n", NULL, &err), 0,
	             "%s", err.msg);
	cr_assert_eq(c.bf16, 1);
	cr_assert_eq(config_finish(&c, &err), 0, "%s", err.msg);
	/* fp16 parses (TRL recipes carry it) but a run refuses it, saying why. */
	cr_assert_eq(load_text(&c, "dataset_name: d.jsonl\nfp16: true\n", NULL, &err), 0,
	             "%s", err.msg);
	cr_assert_eq(config_finish(&c, &err), TRL_EUNSUPPORTED);
	cr_assert(strstr(err.msg, "fp16: true is not supported") &&
	              strstr(err.msg, "set bf16: true"),
	          "got: %s", err.msg);
}
