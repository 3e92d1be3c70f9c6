/* ckpt_h5.h - checkpoints: one parallel HDF5 file per checkpoint, written and
 * read collectively, loadable on any rank count and ZeRO stage.
 *
 * Layout (format_version 1). Every tensor is stored once, at its full Hugging
 * Face shape, float32, under its parameter-table name:
 *   /                             attributes format = "trl-hpc checkpoint",
 *                                 format_version, trl_hpc_version
 *   /config                       the resolved run config, YAML text
 *   /trainer_state                attributes global_step, total_steps, epoch,
 *                                 num_tokens, world_size, zero_stage,
 *                                 save_only_model
 *   /sampler                      attributes seed, samples_seen, rows_per_step,
 *                                 num_rows (the next global batch starts at
 *                                 sample samples_seen of the seeded stream)
 *   /scheduler                    attributes lr_scheduler_type, learning_rate,
 *                                 warmup_steps, total_steps, last_lr
 *                                 (trainer_state also holds bco_running_mean,
 *                                 bco_running_var, bco_running_count: bco's
 *                                 running moments; absent in older files)
 *   /rng                          uint64 (world_size, 4): each rank's generator
 *   /model                        attributes config_json (Hugging Face
 *                                 config.json), model_name_or_path,
 *                                 bos_token_id, eos_token_id
 *   /model/<name>                 the parameters
 *   /optimizer                    attributes step, beta1, beta2, epsilon,
 *                                 weight_decay (absent with save_only_model)
 *   /optimizer/exp_avg/<name>     AdamW first moments
 *   /optimizer/exp_avg_sq/<name>  AdamW second moments
 * Each tensor carries attribute checksum, uint64[2]: the sums of its 32-bit
 * words w_i and of (i + 1) * w_i, mod 2^64. Sums add over pieces, so ranks
 * compute them from their shards with one all-reduce whatever the rank count.
 *
 * Each rank writes and reads only the pieces it owns (zero_region), with
 * collective transfers; what a stage keeps whole is then all-gathered, so the
 * file is read once however many ranks there are. A save goes to NAME.tmp,
 * is flushed, closed and synced, then renamed; ckpt_publish then points
 * `latest` at it. A crash at any moment leaves the previous checkpoint whole.
 *
 * Every function that takes a communicator is collective and returns the
 * same status on every rank.
 */
#ifndef TRL_CKPT_H5_H
#define TRL_CKPT_H5_H

#include <mpi.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "lora.h"

#include "zero.h"

#define CKPT_FORMAT_VERSION 1

/* The training state beside the tensors. rng is this rank's generator. */
typedef struct CkptState {
	long global_step, total_steps, num_tokens;
	double epoch;
	long seed, samples_seen, rows_per_step, num_rows;
	int lr_scheduler_type;
	double learning_rate, last_lr;
	long warmup_steps;
	int world_size, zero_stage, save_only_model;
	long adam_step;
	double bco_mean, bco_var, bco_count; /* bco's running moments */
	int bos_token_id, eos_token_id;
	char model_name_or_path[TRL_PATH_MAX];
	char lora[TRL_LORA_SPEC_MAX]; /* LoRA runs: the adapters' spec (lora_spec_format);
	                               * the tensors are then the adapters only */
	uint64_t rng[4];
} CkptState;

/* Bytes moved and seconds taken by the last save or load on this rank. */
typedef struct CkptIo {
	double bytes, seconds;
} CkptIo;

/* Writes path (via path.tmp, then rename) from the model and optimizer
 * state in z, the scalar state st and the config (as YAML). With
 * st->save_only_model, no optimizer state. */
int ckpt_save(const char *path, Zero *z, const Config *cfg, const CkptState *st,
              CkptIo *io, TrlErr *err);

/* Reads path into z (made for the same model shape, any stage and rank
 * count) and st. Refuses, naming the problem, a file that is not a
 * checkpoint, another format version, another model, a tensor of the wrong
 * shape or type, a checksum mismatch, or a model-only checkpoint. */
int ckpt_load(const char *path, Zero *z, CkptState *st, CkptIo *io, TrlErr *err);

/* One process: the scalar state of path only (no tensors read). */
int ckpt_read_state(const char *path, CkptState *st, TrlErr *err);

/* Rank 0 only: makes output_dir/latest name `name` (a file in output_dir),
 * then, when keep > 0, deletes checkpoint-<step>.h5 files of a later step
 * than name's (left by an earlier run this one replaced) and the oldest
 * beyond keep, never the one just written. */
int ckpt_publish(const char *output_dir, const char *name, int keep, TrlErr *err);

/* Rank 0 only: removes checkpoint-*.h5.tmp left by an interrupted save. */
void ckpt_remove_partial(const char *output_dir);

/* The checkpoint file that resume_from_checkpoint names: "latest" (the file
 * output_dir/latest points to), a folder (its latest) or a file. Checks that
 * it exists; does not open it. */
int ckpt_resolve(const char *spec, const char *output_dir, char *path, size_t cap,
                 TrlErr *err);

/* One process: the model stored in path, fully loaded into m (uninitialised
 * on entry), with st and the config YAML text (*yaml, free()). A LoRA
 * checkpoint (st->lora set) holds adapters only: m is then the base's shape
 * without weights and lo the adapters, loaded; otherwise lo is zeroed. */
int ckpt_read_model(const char *path, Model *m, Lora *lo, CkptState *st, char **yaml,
                    TrlErr *err);

/* One process: prints the state, the config and every tensor (name, shape)
 * of path to out, verifying each tensor's checksum. */
int ckpt_inspect(const char *path, FILE *out, TrlErr *err);

#endif
