# trl_blas.m4 - pick the CBLAS implementation.
#
# TRL_CHECK_BLAS: --with-blas=openblas (default) | blis | LIB. Sets BLAS_CFLAGS
# and BLAS_LIBS and checks that cblas_sgemm links. For OpenBLAS the OpenMP build
# (Debian libopenblas-openmp-dev) is preferred when installed: it shares one
# OpenMP thread pool with trl-hpc's own loops instead of a second pool of
# pthreads that spins against them; an rpath pins it at run time.
AC_DEFUN([TRL_CHECK_BLAS], [
  AC_ARG_WITH([blas],
    [AS_HELP_STRING([--with-blas=NAME], [CBLAS to use: openblas (default), blis, or a library name to link as -lNAME])],
    [trl_blas=$withval], [trl_blas=openblas])
  AC_ARG_VAR([BLAS_CFLAGS], [C compiler flags for CBLAS])
  AC_ARG_VAR([BLAS_LIBS], [linker flags for CBLAS])
  trl_blas_pkg=""
  AS_IF([test -z "$BLAS_LIBS"], [
    AS_CASE([$trl_blas],
      [openblas], [
        trl_multiarch=`$CC -print-multiarch 2>/dev/null`
        trl_omp_dir=/usr/lib/$trl_multiarch/openblas-openmp
        AS_IF([test -n "$trl_multiarch" && test -f $trl_omp_dir/libopenblas.so],
          [BLAS_CFLAGS="-I/usr/include/$trl_multiarch/openblas-openmp"
           BLAS_LIBS="-L$trl_omp_dir -Wl,-rpath,$trl_omp_dir -lopenblas"
           trl_blas_pkg="openblas (OpenMP build)"],
          [AS_IF([$PKG_CONFIG --exists openblas],
             [BLAS_CFLAGS=`$PKG_CONFIG --cflags openblas`
              BLAS_LIBS=`$PKG_CONFIG --libs openblas`],
             [BLAS_LIBS="-lopenblas"])
           trl_blas_pkg="openblas"])],
      [blis], [
        AS_IF([$PKG_CONFIG --exists blis],
          [BLAS_CFLAGS=`$PKG_CONFIG --cflags blis`; BLAS_LIBS=`$PKG_CONFIG --libs blis`],
          [BLAS_CFLAGS="-I/usr/include/blis"; BLAS_LIBS="-lblis"])
        trl_blas_pkg="blis"],
      [BLAS_LIBS="-l$trl_blas"; trl_blas_pkg="$trl_blas"])])
  trl_save_CFLAGS=$CFLAGS; trl_save_LIBS=$LIBS
  CFLAGS="$CFLAGS $BLAS_CFLAGS"; LIBS="$BLAS_LIBS $LIBS -lm"
  AC_MSG_CHECKING([for cblas_sgemm in $BLAS_LIBS])
  AC_LINK_IFELSE([AC_LANG_PROGRAM([[#include <cblas.h>]],
      [[float a = 1, b = 1, c = 0;
cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 1, 1, 1, 1.0f, &a, 1, &b, 1, 0.0f, &c, 1);]])],
    [AC_MSG_RESULT([yes])],
    [AC_MSG_RESULT([no])
     AC_MSG_ERROR([no usable CBLAS ($trl_blas). On Debian/Ubuntu: apt-get install libopenblas-openmp-dev (or libopenblas-dev; for --with-blas=blis: libblis-dev)])])
  CFLAGS=$trl_save_CFLAGS; LIBS=$trl_save_LIBS
  AC_DEFINE_UNQUOTED([TRL_BLAS_NAME], ["$trl_blas_pkg"], [CBLAS implementation linked])
])
