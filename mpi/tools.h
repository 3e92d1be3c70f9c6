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

#endif
