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
	                "float32|bfloat16]\n"
	                "       trl-hpc inspect CHECKPOINT.h5\n");
	return 2;
}

static int is_dir(const char *path)
{
	struct stat sb;
	return path[0] && stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int export_checkpoint(const char *ckpt, const char *out, StDtype dtype,
                             TrlErr *err)
{
	Model m;
	memset(&m, 0, sizeof m);
	CkptState st;
	char *yaml = NULL;
	int rc = ckpt_read_model(ckpt, &m, &st, &yaml, err);
	if (rc)
		return rc;
	ModelExportOpts xo = MODEL_EXPORT_DEFAULTS;
	xo.dtype = dtype;
	/* The tokenizer files come from the folder the run started from. */
	xo.tokenizer_dir = is_dir(st.model_name_or_path) ? st.model_name_or_path : NULL;
	xo.bos_token_id = st.bos_token_id;
	xo.eos_token_id = st.eos_token_id;
	rc = model_export_dir(&m, out, &xo, err);
	if (!rc) {
		char path[TRL_PATH_MAX + 32];
		snprintf(path, sizeof path, "%s/trl_config.yaml", out);
		FILE *f = fopen(path, "w");
		if (!f || fputs(yaml, f) < 0 || fclose(f) != 0)
			rc = trl_errf(err, TRL_EIO, "cannot write %s", path);
	}
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
		if (argc != 4 && argc != 6)
			return usage();
		if (argc == 6) {
			if (strcmp(argv[4], "--save_dtype") != 0)
				return usage();
			if (strcmp(argv[5], "bfloat16") == 0)
				dtype = ST_BF16;
			else if (strcmp(argv[5], "float32") != 0) {
				fprintf(
				    stderr,
				    "trl-hpc export: --save_dtype '%s' is not float32 or "
				    "bfloat16\n",
				    argv[5]);
				return 2;
			}
		}
		rc = export_checkpoint(argv[2], argv[3], dtype, &err);
	}
	if (rc)
		fprintf(stderr, "trl-hpc %s: error: %s\n", argv[1], err.msg);
	return rc ? 1 : 0;
}
