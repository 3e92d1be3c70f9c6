/* main.c - the trl-hpc command: parse, load the config, run. */
#include "trl_build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "tools.h"
#include "config.h"
#include "train.h"

static int usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: trl-hpc [train|validate] INPUT.yaml [--key value ...]\n"
	    "       trl-hpc validate INPUT.yaml [--ranks N] [--mem-per-rank SIZE] "
	    "[--key value ...]\n"
	    "       trl-hpc tokenize MODEL_DIR [--decode] [--add-special] "
	    "[--skip-special]\n"
	    "       trl-hpc generate MODEL_DIR --prompt TEXT [--chat] [--temperature T "
	    "...]\n"
	    "       trl-hpc export CHECKPOINT.h5 OUT_DIR [--save_dtype bfloat16] [--merge_adapter [--base DIR]]\n"
	    "       trl-hpc inspect CHECKPOINT.h5\n"
	    "       trl-hpc --help | --version | config-reference\n"
	    "exit status: 0 done, 1 error, 2 usage, %d stopped by SIGTERM/SIGUSR1 "
	    "after saving a checkpoint (run again with --resume_from_checkpoint "
	    "latest)\n",
	    TRL_EXIT_STOPPED);
	return 2;
}

/* "4G", "512M", "1.5T", "2000000000": bytes, or -1. */
static double parse_size(const char *s)
{
	char *end;
	double x = strtod(s, &end);
	double unit = 1.0;
	switch (*end) {
	case 'K':
	case 'k':
		unit = 1024.0;
		end++;
		break;
	case 'M':
	case 'm':
		unit = 1024.0 * 1024.0;
		end++;
		break;
	case 'G':
	case 'g':
		unit = 1024.0 * 1024.0 * 1024.0;
		end++;
		break;
	case 'T':
	case 't':
		unit = 1024.0 * 1024.0 * 1024.0 * 1024.0;
		end++;
		break;
	}
	if (*end == 'i' || *end == 'B')
		end += *end == 'i' && end[1] == 'B' ? 2 : 1;
	return end == s || *end || !(x > 0) ? -1.0 : x * unit;
}

/* Removes validate's own options (--ranks N, --mem-per-rank SIZE) from argv. */
static int take_plan_args(int *argc, char **argv, ValidatePlan *plan, TrlErr *err)
{
	int w = 0;
	for (int i = 0; i < *argc; i++) {
		int ranks = strcmp(argv[i], "--ranks") == 0;
		int mem = strcmp(argv[i], "--mem-per-rank") == 0;
		if (!ranks && !mem) {
			argv[w++] = argv[i];
			continue;
		}
		const char *v = i + 1 < *argc ? argv[++i] : "";
		char *end;
		long n = ranks ? strtol(v, &end, 10) : 0;
		if (ranks && (end == v || *end || n < 1 || n > (1 << 24)))
			return trl_errf(err, TRL_EINVAL,
			                "validate: --ranks '%s' is not a rank count "
			                "(a whole number, e.g. --ranks 64)",
			                v);
		if (ranks)
			plan->ranks = (int)n;
		else if ((plan->mem_per_rank = parse_size(v)) <= 0)
			return trl_errf(
			    err, TRL_EINVAL,
			    "validate: --mem-per-rank '%s' is not a size (e.g. "
			    "--mem-per-rank 4G, 512M)",
			    v);
	}
	*argc = w;
	argv[w] = NULL;
	return TRL_OK;
}

int main(int argc, char **argv)
{
	Comm comm;
	if (comm_init(&comm, &argc, &argv) != 0) {
		fprintf(stderr, "trl-hpc: MPI initialisation failed\n");
		return 1;
	}
	int rc = 0, first = 1, validate = 0;
	TrlErr err = {0, ""};
	static Config cfg;
	if (argc < 2) {
		if (comm.rank == 0)
			usage(stderr);
		comm_finalize(&comm);
		return 2;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		if (comm.rank == 0)
			config_print_help(stdout);
		comm_finalize(&comm);
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0) {
		if (comm.rank == 0)
			printf("trl-hpc %s (CBLAS: %s)\n", TRL_VERSION_STRING,
			       TRL_BLAS_NAME);
		comm_finalize(&comm);
		return 0;
	}
	int (*tool)(int, char **) =
	    strcmp(argv[1], "tokenize") == 0   ? cmd_tokenize
	    : strcmp(argv[1], "generate") == 0 ? cmd_generate
	    : strcmp(argv[1], "export") == 0 || strcmp(argv[1], "inspect") == 0
	        ? cmd_checkpoint
	        : NULL;
	if (tool) {
		/* One-process tools: under mpirun every rank would do the same work
		 * and print the same output. */
		int status = comm.size != 1 ? 2 : tool(argc, argv);
		if (comm.size != 1 && comm.rank == 0)
			fprintf(
			    stderr,
			    "trl-hpc %s runs on one process, not under mpirun -np %d\n",
			    argv[1], comm.size);
		comm_finalize(&comm);
		return status;
	}
	if (strcmp(argv[1], "config-reference") == 0) {
		if (comm.rank == 0)
			config_print_markdown(stdout);
		comm_finalize(&comm);
		return 0;
	}
	if (strcmp(argv[1], "validate") == 0 || strcmp(argv[1], "train") == 0) {
		validate = argv[1][0] == 'v';
		first = 2;
	}
	ValidatePlan plan = {0, 0.0};
	if (validate)
		rc = take_plan_args(&argc, argv, &plan, &err);
	if (rc) {
		if (comm.rank == 0)
			fprintf(stderr, "trl-hpc: error: %s\n", err.msg);
		comm_finalize(&comm);
		return 2;
	}
	if (first >= argc || argv[first][0] == '-') {
		if (comm.rank == 0)
			usage(stderr);
		comm_finalize(&comm);
		return 2;
	}
	/* Every rank reads the same file, so every rank reaches the same verdict;
	 * the agreement still guards against a file that only some ranks see. */
	config_defaults(&cfg);
	rc = config_load_yaml(&cfg, argv[first], &err);
	if (!rc)
		rc = config_apply_args(&cfg, argc, argv, first + 1, &err);
	if (!rc)
		rc = config_finish(&cfg, &err);
	if (!rc && !cfg.model_name_or_path[0])
		rc = model_config_check(&cfg.model, &err);
	rc = comm_agree(&comm, rc, &err);
	if (!rc) {
		trl_setup_threads(&cfg, &comm);
		rc = validate ? trl_validate(&cfg, &comm, &plan, stdout, &err)
		              : trl_train(&cfg, &comm, &err);
	}
	if (rc && comm.rank == 0)
		fprintf(stderr, "trl-hpc: %s%s\n",
		        rc == TRL_ESTOPPED ? "" : "error: ", err.msg);
	comm_finalize(&comm);
	return rc == TRL_ESTOPPED ? TRL_EXIT_STOPPED : rc ? 1 : 0;
}
