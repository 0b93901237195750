#!/usr/bin/env bash
# mpirun for the tests: N ranks on this machine whatever its core count (--oversubscribe), as root
# too (--allow-run-as-root, as in CI containers), with odls_base_sigkill_timeout T = SAEFW_MPI_SIGKILL
# (10 s by default). OpenMPI 4.1's mpirun, on a SIGTERM or when a rank dies, sends the ranks SIGCONT,
# waits T, sends SIGTERM, waits T, sends SIGKILL: the ranks get T seconds to finish a step and write a
# checkpoint (the default T, 1 s, is too short), and a job whose rank died ends after about 2 T. A hung
# job is ended after SAEFW_MPI_TIMEOUT seconds.
# Usage: mpirun.sh N PROGRAM ARGS... (or any mpirun arguments after N, such as an MPMD "A : B" line)
set -euo pipefail
n=$1
shift
flags=(--oversubscribe --bind-to none --mca odls_base_sigkill_timeout "${SAEFW_MPI_SIGKILL:-10}")
if [ "$(id -u)" -eq 0 ]; then flags+=(--allow-run-as-root); fi
exec timeout -k 10 "${SAEFW_MPI_TIMEOUT:-300}" "${MPIEXEC:-mpirun}" "${flags[@]}" -np "$n" "$@"
