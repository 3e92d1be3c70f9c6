/* comm.h - MPI start-up, the trainers' communicator and status agreement.
 *
 * Status agreement: at every phase boundary (config, data, model, save) each
 * rank calls comm_agree with its own status. All ranks get the same answer: 0
 * when every rank succeeded, else the code and message of the lowest failing
 * rank, so every rank stops together and the user sees the real reason.
 */
#ifndef TRL_COMM_H
#define TRL_COMM_H

#include <mpi.h>

#include "trl.h"

typedef struct Comm {
	MPI_Comm world; /* all ranks of the job */
	int rank, size;
	int local_rank, local_size; /* within this node */
} Comm;

/* MPI_Init_thread (FUNNELED: only the main thread calls MPI) and rank info. */
int comm_init(Comm *c, int *argc, char ***argv);
void comm_finalize(Comm *c);

/* Returns 0 if every rank passed rc == 0; otherwise the lowest failing rank's
 * code, with its message copied into err on every rank (prefixed with the rank
 * when only some ranks failed). */
int comm_agree(const Comm *c, int rc, TrlErr *err);

/* A programming bug: prints the rank, file and line and aborts the job. */
#define COMM_ASSERT(x)                                                                   \
	do {                                                                             \
		if (!(x))                                                                \
			comm_assert_fail(#x, __FILE__, __LINE__);                        \
	} while (0)
void comm_assert_fail(const char *what, const char *file, int line);

/* Sum of n doubles / longs / floats across ranks, in place. */
void comm_sum_double(const Comm *c, double *x, int n);
void comm_sum_long(const Comm *c, long *x, int n);
void comm_sum_float(const Comm *c, float *x, size_t n);

#endif
