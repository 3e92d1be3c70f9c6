/* comm.c - MPI start-up, status agreement and small reductions. */
#include "comm.h"

#include <stdio.h>
#include <string.h>

int comm_init(Comm *c, int *argc, char ***argv)
{
	int provided = 0;
	memset(c, 0, sizeof *c);
	if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
		return TRL_EINTERNAL;
	/* Only the main thread calls MPI; OpenMP threads never do. MPI errors
	 * stay fatal (the default handler aborts the job with MPI's message):
	 * user-facing errors are agreed on by comm_agree before they can strand
	 * a rank in a collective. */
	if (provided < MPI_THREAD_FUNNELED) {
		MPI_Finalize();
		return TRL_EUNSUPPORTED;
	}
	c->world = MPI_COMM_WORLD;
	MPI_Comm_rank(c->world, &c->rank);
	MPI_Comm_size(c->world, &c->size);
	MPI_Comm node;
	MPI_Comm_split_type(c->world, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL,
	                    &node);
	MPI_Comm_rank(node, &c->local_rank);
	MPI_Comm_size(node, &c->local_size);
	MPI_Comm_free(&node);
	return TRL_OK;
}

void comm_finalize(Comm *c)
{
	(void)c;
	MPI_Finalize();
}

int comm_agree(const Comm *c, int rc, TrlErr *err)
{
	int mine = rc != 0 ? c->rank : c->size, first = c->size;
	int failed = rc != 0, n_failed = 0;
	MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, c->world);
	if (first == c->size)
		return TRL_OK;
	MPI_Allreduce(&failed, &n_failed, 1, MPI_INT, MPI_SUM, c->world);
	struct {
		int code;
		char msg[sizeof err->msg];
	} payload;
	if (c->rank == first) {
		payload.code = rc;
		/* Name the rank only when it matters: when all ranks failed they
		 * failed alike (the same config, the same file). */
		if (n_failed < c->size)
			snprintf(payload.msg, sizeof payload.msg, "rank %d: %.2030s",
			         first, err->msg);
		else
			snprintf(payload.msg, sizeof payload.msg, "%s", err->msg);
	}
	MPI_Bcast(&payload, (int)sizeof payload, MPI_BYTE, first, c->world);
	err->code = payload.code;
	memcpy(err->msg, payload.msg, sizeof err->msg);
	return payload.code;
}

void comm_assert_fail(const char *what, const char *file, int line)
{
	int rank = -1;
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	fprintf(stderr, "trl-hpc: internal error on rank %d at %s:%d: %s is false\n",
	        rank, file, line, what);
	fflush(stderr);
	MPI_Abort(MPI_COMM_WORLD, 70);
}

void comm_sum_double(const Comm *c, double *x, int n)
{
	if (c->size > 1)
		MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_DOUBLE, MPI_SUM, c->world);
}

void comm_sum_long(const Comm *c, long *x, int n)
{
	if (c->size > 1)
		MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_LONG, MPI_SUM, c->world);
}

void comm_sum_float(const Comm *c, float *x, size_t n)
{
	if (c->size <= 1)
		return;
	/* MPI counts are int: reduce in chunks below 2^30 elements. */
	const size_t chunk = (size_t)1 << 30;
	for (size_t off = 0; off < n; off += chunk) {
		size_t k = n - off < chunk ? n - off : chunk;
		MPI_Allreduce(MPI_IN_PLACE, x + off, (int)k, MPI_FLOAT, MPI_SUM,
		              c->world);
	}
}
