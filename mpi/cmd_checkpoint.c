/* cmd_checkpoint.c - `trl-hpc export CHECKPOINT.h5 OUT_DIR` and
 * `trl-hpc inspect CHECKPOINT.h5`: checkpoints read on one process. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ckpt_h5.h"
#include "model_io.h"
#include "tools.h"

static int usage(void)
{
	fprintf(stderr, "usage: trl-hpc export CHECKPOINT.h5 OUT_DIR [--save_dtype "
	                "float32|bfloat16] [--merge_adapter [--base DIR]]\n"
	                "       trl-hpc inspect CHECKPOINT.h5\n");
	return 2;
}

static int is_dir(const char *path)
{
	struct stat sb;
	return path[0] && stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int write_yaml(const char *out, const char *yaml, TrlErr *err)
{
	char path[TRL_PATH_MAX + 32];
	snprintf(path, sizeof path, "%s/trl_config.yaml", out);
	FILE *f = fopen(path, "w");
	if (!f || fputs(yaml, f) < 0 || fclose(f) != 0)
		return trl_errf(err, TRL_EIO, "cannot write %s", path);
	return TRL_OK;
}

/* A LoRA checkpoint: the adapter folder PEFT loads, or with merge the base
 * (from the run's base folder, or base) with the adapters merged in. */
static int export_adapters(const char *ckpt, const char *out, const Lora *lo,
                           const Model *shape, const CkptState *st, int merge,
                           const char *base, ModelExportOpts *xo, TrlErr *err)
{
	const char *dir = base && base[0] ? base : st->model_name_or_path;
	if (!merge) {
		int rc = lora_save_dir(lo, lo->ad.params, dir, out, err);
		if (!rc && is_dir(dir))
			rc = model_io_copy_tokenizer(dir, out, err);
		if (!rc)
			printf(
			    "exported step %ld of %s to %s: adapter_model.safetensors, "
			    "adapter_config.json (base %s)\n",
			    st->global_step, ckpt, out, dir);
		return rc;
	}
	if (!is_dir(dir))
		return trl_errf(err, TRL_EINVAL,
		                "--merge_adapter: the base model %s%s%s is not a folder "
		                "here: name it with --base DIR",
		                dir[0] ? "'" : "", dir[0] ? dir : "(none recorded)",
		                dir[0] ? "'" : "");
	Model b;
	int rc = model_load_dir_flags(&b, dir, shape->cfg.num_labels, 0, MODEL_NO_GRADS,
	                              NULL, err);
	if (!rc && b.table.total != shape->table.total)
		rc =
		    trl_errf(err, TRL_EINVAL,
		             "--merge_adapter: %s has %zu parameters, the adapters' base "
		             "had %zu: name the run's base with --base DIR",
		             dir, b.table.total, shape->table.total);
	if (!rc) {
		lora_merge(&b, lo);
		xo->tokenizer_dir = dir;
		rc = model_export_dir(&b, out, xo, err);
	}
	if (!rc)
		printf("exported step %ld of %s to %s: %s with the adapters merged in "
		       "(model.safetensors, %s)\n",
		       st->global_step, ckpt, out, dir,
		       xo->dtype == ST_BF16 ? "bfloat16" : "float32");
	model_free(&b);
	return rc;
}

static int export_checkpoint(const char *ckpt, const char *out, StDtype dtype, int merge,
                             const char *base, TrlErr *err)
{
	Model m;
	memset(&m, 0, sizeof m);
	Lora lo;
	CkptState st;
	char *yaml = NULL;
	int rc = ckpt_read_model(ckpt, &m, &lo, &st, &yaml, err);
	if (rc)
		return rc;
	if (st.lora[0] || merge) {
		ModelExportOpts xo = MODEL_EXPORT_DEFAULTS;
		xo.dtype = dtype;
		xo.bos_token_id = st.bos_token_id;
		xo.eos_token_id = st.eos_token_id;
		if (!st.lora[0])
			rc = trl_errf(err, TRL_EINVAL,
			              "--merge_adapter: %s holds a full model, not LoRA "
			              "adapters: export it without --merge_adapter",
			              ckpt);
		else if (mkdir(out, 0777) != 0 && !is_dir(out))
			rc = trl_errf(err, TRL_EIO, "cannot create %s", out);
		if (!rc)
			rc = export_adapters(ckpt, out, &lo, &m, &st, merge, base, &xo,
			                     err);
		if (!rc)
			rc = write_yaml(out, yaml, err);
		free(yaml);
		lora_free(&lo);
		model_free(&m);
		return rc;
	}
	ModelExportOpts xo = MODEL_EXPORT_DEFAULTS;
	xo.dtype = dtype;
	/* The tokenizer files come from the folder the run started from. */
	xo.tokenizer_dir = is_dir(st.model_name_or_path) ? st.model_name_or_path : NULL;
	xo.bos_token_id = st.bos_token_id;
	xo.eos_token_id = st.eos_token_id;
	rc = model_export_dir(&m, out, &xo, err);
	if (!rc)
		rc = write_yaml(out, yaml, err);
	if (!rc) {
		printf(
		    "exported step %ld of %s to %s: model.safetensors (%s), config.json, "
		    "generation_config.json, trl_config.yaml",
		    st.global_step, ckpt, out, dtype == ST_BF16 ? "bfloat16" : "float32");
		if (xo.tokenizer_dir)
			printf(", tokenizer files from %s", xo.tokenizer_dir);
		printf("\n");
		if (!xo.tokenizer_dir && st.model_name_or_path[0])
			printf(
			    "note: %s no longer exists: no tokenizer files were copied\n",
			    st.model_name_or_path);
	}
	free(yaml);
	model_free(&m);
	return rc;
}

int cmd_checkpoint(int argc, char **argv)
{
	TrlErr err = {0, ""};
	int rc;
	if (strcmp(argv[1], "inspect") == 0) {
		if (argc != 3)
			return usage();
		rc = ckpt_inspect(argv[2], stdout, &err);
	} else {
		StDtype dtype = ST_F32;
		int merge = 0;
		const char *base = NULL;
		if (argc < 4)
			return usage();
		for (int i = 4; i < argc; i++) {
			if (strcmp(argv[i], "--merge_adapter") == 0) {
				merge = 1;
			} else if (strcmp(argv[i], "--base") == 0 && i + 1 < argc) {
				base = argv[++i];
			} else if (strcmp(argv[i], "--save_dtype") == 0 && i + 1 < argc) {
				const char *v = argv[++i];
				if (strcmp(v, "bfloat16") == 0) {
					dtype = ST_BF16;
				} else if (strcmp(v, "float32") != 0) {
					fprintf(
					    stderr,
					    "trl-hpc export: --save_dtype '%s' is not "
					    "float32 or bfloat16\n",
					    v);
					return 2;
				}
			} else {
				return usage();
			}
		}
		rc = export_checkpoint(argv[2], argv[3], dtype, merge, base, &err);
	}
	if (rc)
		fprintf(stderr, "trl-hpc %s: error: %s\n", argv[1], err.msg);
	return rc ? 1 : 0;
}
