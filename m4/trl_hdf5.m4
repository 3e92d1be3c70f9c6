# trl_hdf5.m4 - find parallel HDF5 and prove it is the parallel build.
#
# TRL_CHECK_PHDF5: sets HDF5_CFLAGS and HDF5_LIBS. Tries pkg-config modules
# hdf5-openmpi, hdf5-mpi, hdf5 in turn, then checks that H5_HAVE_PARALLEL is
# defined and that H5Pset_fapl_mpio links: a serial HDF5 cannot write the
# collective checkpoints.
AC_DEFUN([TRL_CHECK_PHDF5], [
  AC_ARG_VAR([HDF5_CFLAGS], [C compiler flags for parallel HDF5])
  AC_ARG_VAR([HDF5_LIBS], [linker flags for parallel HDF5])
  AS_IF([test -z "$HDF5_LIBS"], [
    for trl_h5mod in hdf5-openmpi hdf5-mpi hdf5; do
      AS_IF([$PKG_CONFIG --exists $trl_h5mod], [
        HDF5_CFLAGS=`$PKG_CONFIG --cflags $trl_h5mod`
        HDF5_LIBS=`$PKG_CONFIG --libs $trl_h5mod`
        break])
    done])
  AS_IF([test -z "$HDF5_LIBS"],
    [AC_MSG_ERROR([parallel HDF5 not found. On Debian/Ubuntu: apt-get install libhdf5-openmpi-dev])])
  trl_save_CFLAGS=$CFLAGS; trl_save_LIBS=$LIBS
  CFLAGS="$CFLAGS $HDF5_CFLAGS"; LIBS="$HDF5_LIBS $LIBS"
  AC_MSG_CHECKING([whether HDF5 is the parallel (MPI-IO) build])
  AC_LINK_IFELSE([AC_LANG_PROGRAM([[#include <mpi.h>
#include <hdf5.h>
#ifndef H5_HAVE_PARALLEL
#error serial HDF5
#endif]], [[hid_t p = H5Pcreate(H5P_FILE_ACCESS);
H5Pset_fapl_mpio(p, MPI_COMM_WORLD, MPI_INFO_NULL);]])],
    [AC_MSG_RESULT([yes])],
    [AC_MSG_RESULT([no])
     AC_MSG_ERROR([HDF5 ($HDF5_LIBS) is not the parallel build. On Debian/Ubuntu: apt-get install libhdf5-openmpi-dev])])
  CFLAGS=$trl_save_CFLAGS; LIBS=$trl_save_LIBS
])
