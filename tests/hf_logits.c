/* hf_logits.c - loads a Hugging Face model folder with model_load_dir and writes
 * trl-hpc's logits on a batch, or re-exports the folder, for the Hugging Face
 * layout oracle (tests/reference/hf_oracle.py, hf_parity.sh).
 *
 * Usage:
 *     hf_logits logits MODEL_DIR BATCH.safetensors OUT.safetensors
 *         BATCH holds batch.ids and batch.pos (I32 (B, T)); every row is one
 *         causal sequence. OUT gets out.logits (F32 (B, T, V)).
 *     hf_logits export MODEL_DIR OUT_DIR f32|bf16 [BOS EOS]
 *         model_load_dir, then model_export_dir with the tokenizer files of
 *         MODEL_DIR and the given generation ids.
 * Exit status 0, or 1 with the error on stderr.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "model_io.h"
#include "safetensors.h"
#include "trl.h"

static int run_logits(const char *dir, const char *batch_path, const char *out_path,
                      TrlErr *err)
{
	Model m;
	Batch b = {0};
	StFile f = {0};
	int rc = model_load_dir(&m, dir, err);
	if (rc)
		return rc;
	rc = st_open(&f, batch_path, err);
	if (rc)
		goto out;
	const StTensor *ids = st_find(&f, "batch.ids"), *pos = st_find(&f, "batch.pos");
	if (!ids || !pos || ids->dtype != ST_I32 || pos->dtype != ST_I32 ||
	    ids->ndim != 2 || pos->nbytes != ids->nbytes) {
		rc =
		    trl_errf(err, TRL_EFORMAT,
		             "%s: needs batch.ids and batch.pos, I32 (B, T)", batch_path);
		goto out;
	}
	int B = (int)ids->shape[0], T = (int)ids->shape[1], N = B * T;
	rc = batch_alloc(&b, B, T, err);
	if (!rc)
		rc = model_alloc_activations(&m, B, T, err);
	if (rc)
		goto out;
	memcpy(b.ids, ids->data, ids->nbytes);
	memcpy(b.pos, pos->data, pos->nbytes);
	for (int i = 0; i < N; i++) {
		b.doc[i] = 0;
		b.targets[i] = -1;
		if (b.ids[i] < 0 || b.ids[i] >= m.cfg.vocab_size) {
			rc = trl_errf(err, TRL_EINVAL, "%s: token id %d out of range",
			              batch_path, b.ids[i]);
			goto out;
		}
	}
	model_forward(&m, &b);
	StTensor t = {0};
	snprintf(t.name, sizeof t.name, "out.logits");
	t.dtype = ST_F32;
	t.ndim = 3;
	t.shape[0] = B;
	t.shape[1] = T;
	t.shape[2] = m.cfg.vocab_size;
	t.data = m.logits;
	t.nbytes = (size_t)N * m.cfg.vocab_size * sizeof(float);
	rc = st_write(out_path, &t, 1, NULL, 0, err);
out:
	st_close(&f);
	batch_free(&b);
	model_free(&m);
	return rc;
}

static int run_export(int argc, char **argv, TrlErr *err)
{
	ModelExportOpts o = MODEL_EXPORT_DEFAULTS;
	Model m;
	o.tokenizer_dir = argv[2];
	o.dtype = strcmp(argv[4], "bf16") == 0 ? ST_BF16 : ST_F32;
	if (argc == 7) {
		o.bos_token_id = atoi(argv[5]);
		o.eos_token_id = atoi(argv[6]);
	}
	int rc = model_load_dir(&m, argv[2], err);
	if (rc)
		return rc;
	rc = model_export_dir(&m, argv[3], &o, err);
	model_free(&m);
	return rc;
}

int main(int argc, char **argv)
{
	TrlErr err = {0};
	int rc;
	if (argc == 5 && strcmp(argv[1], "logits") == 0)
		rc = run_logits(argv[2], argv[3], argv[4], &err);
	else if ((argc == 5 || argc == 7) && strcmp(argv[1], "export") == 0)
		rc = run_export(argc, argv, &err);
	else {
		fprintf(stderr,
		        "usage: %s logits MODEL_DIR BATCH OUT | export MODEL_DIR "
		        "OUT_DIR f32|bf16 [BOS EOS]\n",
		        argv[0]);
		return 1;
	}
	if (rc) {
		fprintf(stderr, "hf_logits: %s\n", err.msg);
		return 1;
	}
	return 0;
}
