#!/usr/bin/python3
"""bench/python/bench_mpi4py.py — the anchor of bench/bench_mpi.cpp: mpi4py.futures'
MPIPoolExecutor on a driver and two worker ranks (the same ranks as bench_mpi's driver and
two agents of one worker each). Prints one JSON line per figure.

Debian's python3-mpi4py is seen only by Debian's own interpreter, /usr/bin/python3:

    mpirun -np 3 /usr/bin/python3 -m mpi4py.futures bench/python/bench_mpi4py.py [--quick]

(with the Open MPI settings of docs/mpi.md: as root OMPI_ALLOW_RUN_AS_ROOT=1
OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1, and OMPI_MCA_rmaps_base_oversubscribe=1
OMPI_MCA_hwloc_base_binding_policy=none on a small machine).
"""
import json
import statistics
import sys
import time

from mpi4py.futures import MPIPoolExecutor


def add_one(x):
    return x + 1


def emit(figure, **fields):
    print(json.dumps(dict(figure=figure, impl="mpi4py.futures", **fields)), flush=True)


def main():
    quick = "--quick" in sys.argv
    with MPIPoolExecutor() as executor:
        workers = getattr(executor, "num_workers", None) or 2  # mpi4py 3.1 has no num_workers
        for i in range(200):  # warm: every worker started
            executor.submit(add_one, i).result()

        samples = []
        for i in range(500 if quick else 3000):
            start = time.perf_counter()
            executor.submit(add_one, i).result()
            samples.append(time.perf_counter() - start)
        samples.sort()
        emit("mpi_apply_round_trip", workers=workers,
             p50_us=statistics.median(samples) * 1e6,
             p99_us=samples[int(0.99 * (len(samples) - 1))] * 1e6)

        for chunksize, n in ((1, 5_000 if quick else 20_000), (256, 200_000 if quick else 2_000_000)):
            rates = []
            for _ in range(1 if quick else 3):
                start = time.perf_counter()
                results = list(executor.map(add_one, range(n), chunksize=chunksize))
                elapsed = time.perf_counter() - start
                assert results[-1] == n
                rates.append(n / elapsed)
            emit(f"mpi_map_chunksize_{chunksize}", workers=workers, items=n,
                 tasks_per_s=statistics.median(rates))


if __name__ == "__main__":
    main()
