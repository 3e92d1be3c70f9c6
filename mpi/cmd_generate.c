/* cmd_generate.c - `trl-hpc generate MODEL_DIR --prompt TEXT`: load a model
 * folder and print a sampled completion (one process, no MPI collectives). */
#include "tools.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat_template.h"
#include "gemm.h"
#include "generate.h"
#include "json.h"
#include "model.h"
#include "lora.h"
#include "model_io.h"
#include "tokenizer.h"
#include "trl.h"

static int usage(FILE *f)
{
	fprintf(f,
	        "usage: trl-hpc generate MODEL_DIR --prompt TEXT [options]\n"
	        "  --max_new_tokens N       tokens to generate (default 64)\n"
	        "  --temperature T          0 = greedy (default 1.0)\n"
	        "  --top_p P                nucleus mass in (0, 1] (default 1 = off)\n"
	        "  --top_k K                keep the K most likely (default 0 = off)\n"
	        "  --min_p P                drop p < P * max p (default 0 = off)\n"
	        "  --repetition_penalty R   HF repetition penalty (default 1 = off)\n"
	        "  --seed S                 sampling seed (default 0)\n"
	        "  --stop TEXT              stop string (repeatable, up to %d)\n"
	        "  --logprobs               also print each token id and its "
	        "log-prob to stderr\n"
	        "  --chat                   wrap the prompt in the model's chat "
	        "template\n"
	        "  --bf16                   bf16 matmul inputs, fp32 accumulation "
	        "(needs oneDNN)\n"
	        "  --base DIR               the base model of an adapter folder "
	        "(default: its\n"
	        "                           adapter_config.json's "
	        "base_model_name_or_path)\n"
	        "MODEL_DIR holds config.json and model.safetensors, and "
	        "tokenizer.json (with\ntokenizer_config.json) when the model has "
	        "one; without it text is encoded\nwith the byte tokenizer (ids "
	        "0..255 are bytes, 256 is <|endoftext|>, the EOS). A PEFT adapter\n"
	        "folder (adapter_config.json, adapter_model.safetensors) runs its "
	        "base with the\nadapters merged in.\nGeneration "
	        "stops at the tokenizer's EOS, a --stop string or max_new_tokens.\n",
	        TRL_GEN_MAX_STOP);
	return 2;
}

static int parse_float(const char *opt, const char *s, float *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end) {
		fprintf(stderr, "trl-hpc generate: %s needs a number, got '%s'\n", opt,
		        s);
		return -1;
	}
	*out = (float)v;
	return 0;
}

static int parse_long(const char *opt, const char *s, long long *out)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || end == s || *end) {
		fprintf(stderr, "trl-hpc generate: %s needs an integer, got '%s'\n", opt,
		        s);
		return -1;
	}
	*out = v;
	return 0;
}

/* The prompt as one user turn rendered with the folder's chat template (the
 * Jinja source in tokenizer_config.json, recognised as a built-in; chatml
 * when there is none), ending with the assistant's generation prompt. The
 * caller frees *text with free(). */
static int chat_prompt(const char *dir, const Tokenizer *tok, const char *prompt,
                       char **text, TrlErr *err)
{
	char path[4096], bos[64] = "", eos[64] = "";
	JsonValue *cfg = NULL;
	const char *source = "chatml";
	snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
	if (access(path, R_OK) == 0) {
		int rc = json_load_file(path, &cfg, err);
		if (rc)
			return rc;
		const char *s = json_str(json_get(cfg, "chat_template"));
		if (s)
			source = s;
	}
	if (tok->bos_id >= 0 &&
	    tokenizer_decode(tok, &tok->bos_id, 1, 0, bos, sizeof bos) >= sizeof bos)
		bos[0] = 0;
	if (tok->eos_id >= 0 &&
	    tokenizer_decode(tok, &tok->eos_id, 1, 0, eos, sizeof eos) >= sizeof eos)
		eos[0] = 0;
	ChatTemplate ct;
	ChatRender r = {0};
	ChatMessage msg = {"user", prompt, NULL};
	ChatRenderOptions o = {
	    .add_generation_prompt = 1, .bos_token = bos, .eos_token = eos};
	int rc = chat_template_find(&ct, source, err);
	if (!rc)
		rc = chat_render(&ct, &msg, 1, &o, &r, err);
	json_free(cfg);
	if (rc)
		return rc;
	*text = malloc(r.len + 1);
	if (*text) {
		memcpy(*text, r.text, r.len);
		(*text)[r.len] = 0;
	}
	chat_render_free(&r);
	return *text ? TRL_OK : trl_errf(err, TRL_ENOMEM, "out of memory");
}

int cmd_generate(int argc, char **argv)
{
	const char *dir = NULL, *prompt = NULL, *base = NULL;
	int chat = 0, show_logprobs = 0, bf16 = 0;
	GenConfig gc;
	gen_config_defaults(&gc);
	gc.max_new_tokens = 64;
	/* argv[1] is "generate" (tools.h: main's argc/argv as they are). */
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return 0;
		}
		if (strcmp(a, "--chat") == 0) {
			chat = 1;
			continue;
		}
		if (strcmp(a, "--logprobs") == 0) {
			show_logprobs = 1;
			continue;
		}
		if (strcmp(a, "--bf16") == 0) {
			bf16 = 1;
			continue;
		}
		if (a[0] != '-') {
			if (dir) {
				fprintf(stderr,
				        "trl-hpc generate: unexpected argument '%s' (the "
				        "model folder is '%s')\n",
				        a, dir);
				return usage(stderr);
			}
			dir = a;
			continue;
		}
		if (i + 1 >= argc) {
			fprintf(stderr, "trl-hpc generate: %s needs a value\n", a);
			return usage(stderr);
		}
		const char *v = argv[++i];
		long long n = 0;
		int bad = 0;
		if (strcmp(a, "--prompt") == 0) {
			prompt = v;
		} else if (strcmp(a, "--base") == 0) {
			base = v;
		} else if (strcmp(a, "--stop") == 0) {
			if (gc.n_stop == TRL_GEN_MAX_STOP) {
				fprintf(stderr,
				        "trl-hpc generate: at most %d --stop strings\n",
				        TRL_GEN_MAX_STOP);
				return 2;
			}
			gc.stop[gc.n_stop++] = v;
		} else if (strcmp(a, "--temperature") == 0) {
			bad = parse_float(a, v, &gc.temperature);
		} else if (strcmp(a, "--top_p") == 0) {
			bad = parse_float(a, v, &gc.top_p);
		} else if (strcmp(a, "--min_p") == 0) {
			bad = parse_float(a, v, &gc.min_p);
		} else if (strcmp(a, "--repetition_penalty") == 0) {
			bad = parse_float(a, v, &gc.repetition_penalty);
		} else if (strcmp(a, "--max_new_tokens") == 0) {
			bad = parse_long(a, v, &n) || n < 0 || n > 1000000;
			gc.max_new_tokens = (int)n;
		} else if (strcmp(a, "--top_k") == 0) {
			bad = parse_long(a, v, &n) || n < -1 || n > 1000000000;
			gc.top_k = (int)n;
		} else if (strcmp(a, "--seed") == 0) {
			bad = parse_long(a, v, &n) || n < 0;
			gc.seed = (uint64_t)n;
		} else {
			fprintf(stderr, "trl-hpc generate: unknown option '%s'\n", a);
			return usage(stderr);
		}
		if (bad) {
			fprintf(stderr, "trl-hpc generate: bad value '%s' for %s\n", v,
			        a);
			return 2;
		}
	}
	if (!dir || !prompt) {
		fprintf(stderr, "trl-hpc generate: %s\n",
		        dir ? "--prompt TEXT is required" : "MODEL_DIR is required");
		return usage(stderr);
	}
	TrlErr err = {0, ""};
	Model m;
	Generator g;
	Tokenizer tok;
	GenOutput out;
	int32_t *ids = NULL;
	char *rendered = NULL; /* the chat-formatted prompt with --chat */
	int add_special = TRL_TOK_ADD_SPECIAL;
	int rc, loaded = 0, status = 1;
	memset(&g, 0, sizeof g);
	memset(&out, 0, sizeof out);
	memset(&tok, 0, sizeof tok);
	if (bf16 && gemm_set_precision(GEMM_BF16, &err)) {
		fprintf(stderr, "trl-hpc generate: %s\n", err.msg);
		return 1;
	}
	rc = base ? lora_load_merged(&m, dir, base, -1, 0, 0, NULL, &err)
	          : model_load_dir(&m, dir, &err);
	if (rc)
		goto fail;
	loaded = 1;
	/* The folder's tokenizer.json when it has one, else the byte tokenizer. */
	char path[4096];
	snprintf(path, sizeof path, "%s/tokenizer.json", dir);
	if (access(path, R_OK) == 0) {
		rc = tokenizer_load_dir(&tok, dir, &err);
		if (rc)
			goto fail;
	} else {
		tokenizer_init_bytes(&tok);
	}
	/* --chat: the template already holds BOS where the model wants it, so
	 * the rendered text is encoded without adding special tokens, as
	 * apply_chat_template(tokenize=True) does. */
	if (chat) {
		rc = chat_prompt(dir, &tok, prompt, &rendered, &err);
		if (rc)
			goto fail;
		prompt = rendered;
		add_special = 0;
	}
	size_t plen = strlen(prompt);
	if (plen == 0 || plen > 1000000) {
		rc =
		    trl_errf(&err, TRL_EINVAL, "the prompt must hold 1 to 1000000 bytes");
		goto fail;
	}
	/* Special tokens are added as the tokenizer adds them around one text
	 * (BOS for Llama-style models), as tokenizer(prompt) does in Python. */
	int cap = (int)plen + 8, n;
	for (;;) {
		ids = malloc((size_t)cap * sizeof *ids);
		if (!ids) {
			rc = trl_errf(&err, TRL_ENOMEM, "out of memory for the prompt");
			goto fail;
		}
		n = tokenizer_encode_ex(&tok, prompt, plen, add_special, ids, cap, &err);
		if (n < 0) {
			rc = n;
			goto fail;
		}
		if (n <= cap)
			break;
		free(ids);
		cap = n;
	}
	if (n == 0) {
		rc = trl_errf(&err, TRL_EINVAL, "the prompt encodes to no tokens");
		goto fail;
	}
	int maxT = n + gc.max_new_tokens;
	if (m.cfg.arch == TRL_ARCH_GPT2 && maxT > m.cfg.max_position_embeddings) {
		if (n >= m.cfg.max_position_embeddings) {
			rc = trl_errf(
			    &err, TRL_EINVAL,
			    "the prompt has %d tokens; the model reads at most %d", n,
			    m.cfg.max_position_embeddings);
			goto fail;
		}
		maxT = m.cfg.max_position_embeddings;
	}
	gc.eos_id = tok.eos_id >= 0 && tok.eos_id < m.cfg.vocab_size ? tok.eos_id : -1;
	rc = generator_init(&g, &m, 1, maxT, &err);
	if (rc)
		goto fail;
	const int32_t *prompts[1] = {ids};
	rc = generate(&g, &tok, &gc, prompts, &n, 1, &out, &err);
	if (rc)
		goto fail;
	fwrite(out.text, 1, out.text_len, stdout);
	fputc('\n', stdout);
	if (show_logprobs) {
		for (int i = 0; i < out.n; i++)
			fprintf(stderr, "%d\t%d\t%.6f\n", i, (int)out.ids[i],
			        out.logprobs[i]);
		static const char *why[] = {"length", "eos", "stop"};
		fprintf(stderr, "finish_reason=%s tokens=%d\n", why[out.finish], out.n);
	}
	status = 0;
fail:
	if (rc)
		fprintf(stderr, "trl-hpc generate: error: %s\n", err.msg);
	gen_output_free(&out, 1);
	generator_free(&g);
	free(ids);
	free(rendered);
	if (loaded)
		model_free(&m);
	tokenizer_free(&tok);
	return status;
}
