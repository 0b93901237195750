#!/usr/bin/env bash
# mpirun for the tests: N ranks on this machine whatever its core count (--oversubscribe), as root
# too (--allow-run-as-root, as in CI containers), with 60 s between a SIGTERM that mpirun passes on and
# its SIGKILL (OpenMPI's default is 1 s: too short to finish a step and write a checkpoint;
# SAEFW_MPI_SIGKILL sets another, for a job that is meant to fail at start); a hung
# job is ended after SAEFW_MPI_TIMEOUT seconds.
# Usage: mpirun.sh N PROGRAM ARGS... (or any mpirun arguments after N, such as an MPMD "A : B" line)
set -euo pipefail
n=$1
shift
flags=(--oversubscribe --bind-to none --mca odls_base_sigkill_timeout "${SAEFW_MPI_SIGKILL:-60}")
if [ "$(id -u)" -eq 0 ]; then flags+=(--allow-run-as-root); fi
exec timeout -k 10 "${SAEFW_MPI_TIMEOUT:-300}" "${MPIEXEC:-mpirun}" "${flags[@]}" -np "$n" "$@"
