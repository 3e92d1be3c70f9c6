# trl_mpi.m4 - find the MPI C compiler wrapper and mpiexec.
#
# TRL_PROG_MPICC: sets CC to the MPI wrapper (mpicc) unless the user set MPICC,
# and fails with the Debian package to install when there is none. Must run
# before AC_PROG_CC.
AC_DEFUN([TRL_PROG_MPICC], [
  AC_ARG_VAR([MPICC], [MPI C compiler wrapper])
  AC_CHECK_PROGS([MPICC], [mpicc mpicc.openmpi mpicc.mpich])
  AS_IF([test -z "$MPICC"],
    [AC_MSG_ERROR([no MPI C compiler (mpicc) found. On Debian/Ubuntu: apt-get install libopenmpi-dev openmpi-bin])])
  CC="$MPICC"
])

# TRL_PROG_MPIEXEC: the launcher the MPI tests use.
AC_DEFUN([TRL_PROG_MPIEXEC], [
  AC_ARG_VAR([MPIEXEC], [MPI launcher used by make check])
  AC_PATH_PROGS([MPIEXEC], [mpiexec mpirun mpiexec.openmpi])
  AS_IF([test -z "$MPIEXEC"],
    [AC_MSG_ERROR([no mpiexec found. On Debian/Ubuntu: apt-get install openmpi-bin])])
  AC_LANG_PUSH([C])
  AC_LINK_IFELSE([AC_LANG_PROGRAM([[#include <mpi.h>]],
      [[int p; MPI_Init_thread(0, 0, MPI_THREAD_FUNNELED, &p); MPI_Finalize();]])],
    [], [AC_MSG_ERROR([$CC cannot build an MPI program. On Debian/Ubuntu: apt-get install libopenmpi-dev])])
  AC_LANG_POP([C])
])
