/* tools.h - the trl-hpc subcommands that run on one process without MPI
 * collectives: each takes main's argc/argv with argv[1] naming the subcommand
 * and returns the process exit status. */
#ifndef TRL_TOOLS_H
#define TRL_TOOLS_H

/* trl-hpc tokenize DIR [--decode] [--add-special] [--skip-special]:
 * JSON lines {"text": ...} on stdin -> {"ids": [...]} on stdout (or back). */
int cmd_tokenize(int argc, char **argv);

/* trl-hpc generate MODEL_DIR --prompt TEXT [--max_new_tokens N --temperature T
 * --top_p P --top_k K --min_p P --repetition_penalty R --seed S --stop TEXT
 * --logprobs --chat]: prints a completion. */
int cmd_generate(int argc, char **argv);

/* trl-hpc export CHECKPOINT.h5 OUT_DIR [--save_dtype float32|bfloat16]: the
 * checkpoint's model as a Hugging Face folder (with the tokenizer files of
 * the model it was trained from, when that folder still exists).
 * trl-hpc inspect CHECKPOINT.h5: its state, config and tensors, checksums
 * verified. */
int cmd_checkpoint(int argc, char **argv);

/* The exit status of a run stopped by SIGTERM or SIGUSR1 after saving a
 * checkpoint (EX_TEMPFAIL: run it again to resume). */
#define TRL_EXIT_STOPPED 75

#endif
