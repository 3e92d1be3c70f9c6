#!/bin/sh
# quickstart.sh - install the Debian/Ubuntu packages trl-hpc needs, build it in
# this folder and run the bundled quickstart job (SFT of a small model on
# arithmetic, about 2-3 minutes on 2 cores). Safe to run again.
set -e
cd "$(dirname "$0")"

PACKAGES="build-essential autoconf automake pkg-config libopenmpi-dev openmpi-bin \
libhdf5-openmpi-dev libyaml-dev libopenblas-openmp-dev libcriterion-dev libpcre2-dev \
libutf8proc-dev libfftw3-dev libdnnl-dev python3 xz-utils"

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
missing=""
for p in $PACKAGES; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "== installing:$missing"
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y $missing
fi

echo "== building"
[ -x configure ] || ./bootstrap
[ -f Makefile ] || ./configure
make -j"$(nproc)"

echo "== running: mpirun -np 1 ./trl-hpc inputs/quickstart.yaml"
ROOT_FLAGS=""
[ "$(id -u)" -ne 0 ] || ROOT_FLAGS="--allow-run-as-root"
mpirun $ROOT_FLAGS -np 1 ./trl-hpc inputs/quickstart.yaml
