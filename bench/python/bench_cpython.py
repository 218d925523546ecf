#!/usr/bin/env python3
"""bench/python/bench_cpython.py — the figures of DESIGN.md's "Numbers it is held to", measured
with CPython's multiprocessing.Pool and concurrent.futures.ProcessPoolExecutor, written the way
people write them (default start method, default options), for scripts/bench to set beside
mproc's.

Prints one JSON line per (figure, impl): {"figure", "impl", "value", "unit", "samples", "note"}.
"value" is the median over --repetitions runs; where CPython cannot give a number (a worker
killed mid-task: Pool's result never comes, ProcessPoolExecutor breaks), "value" is the string
"hang" or "broken", and "samples"/"note" say what was measured instead.

    python3 bench/python/bench_cpython.py [--quick] [--repetitions N] [--only fig,fig] [--sweep]

Only the standard library; CPython 3.11.
"""
import argparse
import concurrent.futures as cf
import ctypes
import json
import math
import multiprocessing as mp
import os
import resource
import signal
import statistics
import sys
import time

# ---------------------------------------------------------------- tasks (module level: picklable)


def add_one(x):
    return x + 1


def echo(data):
    return data


def payload_size(data):
    return len(data)


def burn(rounds):
    x = 0x9E3779B9
    for _ in range(rounds):
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
    return x


def noop():
    pass


def worker_pid_after(nap_ms):
    time.sleep(nap_ms / 1000)
    return os.getpid()


# Made before any pool exists, so that fork workers (3.11's default on Linux) share it.
RUNNING_PID = None


def report_pid_and_hang(_):
    RUNNING_PID.value = os.getpid()
    while True:
        time.sleep(3600)


# ---------------------------------------------------------------- helpers

_rounds_per_us = None


def rounds_for(micros):
    """Rounds of burn() that take `micros` µs here: best of several tries."""
    global _rounds_per_us
    if _rounds_per_us is None:
        probe = 100_000
        best = min(_timed(lambda: burn(probe)) for _ in range(5))
        _rounds_per_us = probe / (best * 1e6)
    return int(_rounds_per_us * micros)


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def percentile(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(p * (len(s) - 1) + 0.5))]


def descendants(root):
    parent_of = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat_fields(int(name))
            if fields:
                parent_of[int(name)] = int(fields[1])
    found, frontier = [], {root}
    while frontier:
        nxt = {pid for pid, ppid in parent_of.items() if ppid in frontier}
        found.extend(nxt)
        frontier = nxt
    return found


def _stat_fields(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            line = f.read()
    except OSError:
        return None
    return line[line.rfind(")") + 2:].split()


def cpu_seconds_of(pid):
    fields = _stat_fields(pid)
    if not fields:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def proc_kib(path, key):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return float(line[len(key):].split()[0])
    except OSError:
        pass
    return 0.0


def rss_kib(pid):
    return proc_kib(f"/proc/{pid}/status", "VmRSS:")


def uss_kib(pid):
    path = f"/proc/{pid}/smaps_rollup"
    return proc_kib(path, "Private_Clean:") + proc_kib(path, "Private_Dirty:")


def emit(figure, impl, samples, unit, note="", value=None):
    if value is None:
        value = statistics.median(samples) if samples else None
    print(json.dumps({"figure": figure, "impl": impl, "value": value, "unit": unit,
                      "samples": samples, "note": note}), flush=True)


def pool_worker_pids(run_apply_async, processes):
    pids = set()
    for _ in range(50):
        futures = [run_apply_async(worker_pid_after, 30) for _ in range(processes)]
        pids.update(f() for f in futures)
        if len(pids) >= processes:
            break
    return sorted(pids)


# The two implementations behind one small interface: submit(f, arg) -> a callable returning
# the result, map(f, items), and the worker pids.
class PoolImpl:
    name = "Pool"

    def __init__(self, processes, context=None):
        self.processes = processes
        self.pool = (context or mp).Pool(processes)

    def submit(self, f, arg):
        return self.pool.apply_async(f, (arg,)).get

    def apply(self, f, arg):
        return self.pool.apply(f, (arg,))

    def map(self, f, items):
        return self.pool.map(f, items)

    def close(self):
        self.pool.close()
        self.pool.join()


class ExecutorImpl:
    name = "ProcessPoolExecutor"

    def __init__(self, processes, context=None):
        self.processes = processes
        self.ex = cf.ProcessPoolExecutor(processes, mp_context=context)

    def submit(self, f, arg):
        return self.ex.submit(f, arg).result

    def apply(self, f, arg):
        return self.ex.submit(f, arg).result()

    def map(self, f, items):
        # Executor.map's default chunksize is 1: a million futures. Use Pool's automatic
        # chunksize instead, so that the figure measures the executor, not a bad default.
        chunk = max(1, math.ceil(len(items) / (4 * self.processes)))
        return list(self.ex.map(f, items, chunksize=chunk))

    def close(self):
        self.ex.shutdown(wait=True)


IMPLS = (PoolImpl, ExecutorImpl)

# ---------------------------------------------------------------- figures


def fig_map_trivial(args):
    n = 200_000 if args.quick else 1_000_000
    items = list(range(n))
    for impl_cls in IMPLS:
        impl = impl_cls(2)
        impl.map(add_one, items[: n // 10])  # warm: workers started
        samples = []
        for _ in range(args.repetitions):
            t = _timed(lambda: impl.map(add_one, items))
            samples.append(n / t)
        impl.close()
        note = f"{n} ints" + ("" if impl_cls is PoolImpl else ", chunksize=ceil(n/8) (default 1 is ~100x slower)")
        emit("map_trivial", impl_cls.name, samples, "items/s", note)


def fig_apply_round_trip(args):
    calls = 500 if args.quick else 3000
    for impl_cls in IMPLS:
        impl = impl_cls(2)
        for i in range(50):
            impl.apply(add_one, i)
        samples = []
        for _ in range(args.repetitions):
            lat = []
            for i in range(calls):
                start = time.perf_counter()
                impl.apply(add_one, i)
                lat.append(time.perf_counter() - start)
            samples.append(percentile(lat, 0.5) * 1e6)
        impl.close()
        emit("apply_p50", impl_cls.name, samples, "us", f"p50 of {calls} calls")


def fig_apply_async_get(args):
    n = 10_000 if args.quick else 100_000
    for impl_cls in IMPLS:
        impl = impl_cls(2)
        [g() for g in [impl.submit(add_one, i) for i in range(1000)]]  # warm
        samples = []
        for _ in range(args.repetitions):
            def run():
                getters = [impl.submit(add_one, i) for i in range(n)]
                for g in getters:
                    g()
            samples.append(n / _timed(run))
        impl.close()
        emit("apply_async_get", impl_cls.name, samples, "tasks/s", f"{n} tasks")


def fig_echo_bytes(args):
    size = (32 if args.quick else 128) << 20
    data = bytes(size)
    for impl_cls in IMPLS:
        impl = impl_cls(2)
        impl.apply(echo, data)  # warm
        samples = []
        for _ in range(args.repetitions):
            t = _timed(lambda: impl.apply(echo, data))
            samples.append(size / t / 1e9)
        impl.close()
        emit("echo_bytes", impl_cls.name, samples, "GB/s", f"{size >> 20} MiB, bytes / round trip")


def fig_cpu_bound(args, workers_list=(2,)):
    n = 2_000 if args.quick else 10_000
    rounds = rounds_for(100)
    items = [rounds] * n
    for workers in workers_list:
        for impl_cls in IMPLS if workers == 2 else (PoolImpl,):
            impl = impl_cls(workers)
            impl.map(burn, [rounds] * (4 * workers))  # warm
            eff, speed, task_us = [], [], []
            for _ in range(args.repetitions):
                serial = _timed(lambda: [burn(r) for r in items])
                wall = _timed(lambda: impl.map(burn, items))
                eff.append(serial / (workers * wall))
                speed.append(serial / wall)
                task_us.append(serial / n * 1e6)
            impl.close()
            note = f"{n} tasks of {statistics.median(task_us):.0f} us, map with automatic chunksize"
            if workers == 2:
                emit("cpu_efficiency", impl_cls.name, [e * 100 for e in eff], "%", note)
            emit(f"cpu_speedup_{workers}", impl_cls.name, speed, "x", note)


def fig_process_start(args):
    for method in ("fork", "forkserver", "spawn"):
        ctx = mp.get_context(method)
        count = (5 if args.quick else 15) if method != "fork" else (20 if args.quick else 60)
        warm = ctx.Process(target=noop)
        warm.start()
        warm.join()
        samples = []
        for _ in range(args.repetitions):
            lat = []
            for _ in range(count):
                start = time.perf_counter()
                p = ctx.Process(target=noop)
                p.start()
                p.join()
                lat.append(time.perf_counter() - start)
            samples.append(percentile(lat, 0.5) * 1e3)
        emit(f"process_{method}", "Process", samples, "ms", f"p50 of {count} start+join")


def fig_worker_killed(args):
    global RUNNING_PID
    RUNNING_PID = mp.RawValue(ctypes.c_int, 0)
    rounds = 1 if args.quick else 3
    patience = 1.0 if args.quick else 2.0
    # Pool: the killed task's result never comes; the queued task runs on the replacement.
    next_ms, hung = [], 0
    for _ in range(rounds):
        pool = mp.Pool(1)
        pool.apply(add_one, (0,))
        RUNNING_PID.value = 0
        victim = pool.apply_async(report_pid_and_hang, (0,))
        nxt = pool.apply_async(add_one, (1,))
        while RUNNING_PID.value == 0:
            time.sleep(0.0005)
        start = time.perf_counter()
        os.kill(RUNNING_PID.value, signal.SIGKILL)
        try:
            nxt.get(timeout=10)
            next_ms.append((time.perf_counter() - start) * 1e3)
        except mp.TimeoutError:
            pass
        victim.wait(timeout=patience)
        if not victim.ready():
            hung += 1
        pool.terminate()
        pool.join()
    emit("kill_future_fails", "Pool", [], "ms", f"killed task's result not there after {patience:.0f} s "
         f"in {hung}/{rounds} runs (it never comes)", value="hang" if hung else None)
    emit("kill_next_task", "Pool", next_ms, "ms", "queued task done on the replacement worker")
    # ProcessPoolExecutor: every pending future fails with BrokenProcessPool, and so does
    # every later submit.
    fail_ms, broken = [], 0
    for _ in range(rounds):
        ex = cf.ProcessPoolExecutor(1)
        ex.submit(add_one, 0).result()
        RUNNING_PID.value = 0
        victim = ex.submit(report_pid_and_hang, 0)
        nxt = ex.submit(add_one, 1)
        while RUNNING_PID.value == 0:
            time.sleep(0.0005)
        start = time.perf_counter()
        os.kill(RUNNING_PID.value, signal.SIGKILL)
        cf.wait([victim], timeout=10)
        fail_ms.append((time.perf_counter() - start) * 1e3)
        next_failed = nxt.exception(timeout=10) is not None
        try:
            ex.submit(add_one, 2).result(timeout=10)
            later_ok = True
        except Exception:
            later_ok = False
        if next_failed or not later_ok:
            broken += 1
        ex.shutdown(wait=True)
    emit("kill_future_fails", "ProcessPoolExecutor", fail_ms, "ms", "BrokenProcessPool for the killed task")
    emit("kill_next_task", "ProcessPoolExecutor", [], "ms",
         f"queued and later tasks fail too (BrokenProcessPool) in {broken}/{rounds} runs",
         value="broken" if broken else None)


def fig_idle_cpu(args):
    idle = 0.5 if args.quick else 2.0
    for impl_cls in IMPLS:
        impl = impl_cls(2)
        [g() for g in [impl.submit(add_one, i) for i in range(100)]]
        pool_worker_pids(impl.submit, 2)
        time.sleep(0.2)
        samples = []
        for _ in range(max(1, args.repetitions // 2)):
            kids = descendants(os.getpid())
            own0, kids0 = own_cpu_seconds(), sum(cpu_seconds_of(p) for p in kids)
            start = time.perf_counter()
            time.sleep(idle)
            wall = time.perf_counter() - start
            used = own_cpu_seconds() - own0 + sum(cpu_seconds_of(p) for p in kids) - kids0
            samples.append(100 * used / wall)
        impl.close()
        emit("idle_cpu", impl_cls.name, samples, "% of one core", f"2 workers, idle {idle:.1f} s")


def fig_idle_memory(args):
    for method in ("fork", "forkserver", "spawn"):
        ctx = mp.get_context(method)
        warm = ctx.Pool(1)
        warm.apply(add_one, (0,))
        warm.close()
        warm.join()
        before = rss_kib(os.getpid())
        pool = ctx.Pool(2)
        [pool.apply(add_one, (i,)) for i in range(20)]
        pids = pool_worker_pids(lambda f, a: pool.apply_async(f, (a,)).get, 2)
        time.sleep(0.1)
        rss = statistics.mean(rss_kib(p) for p in pids) / 1024
        uss = statistics.mean(uss_kib(p) for p in pids) / 1024
        growth = (rss_kib(os.getpid()) - before) / 2 / 1024
        pool.close()
        pool.join()
        note = f"Pool(2) idle worker, start method {method}" + (" (3.11's default)" if method == "fork" else "")
        emit(f"idle_rss_{method}", "Pool", [rss], "MiB", note)
        emit(f"idle_uss_{method}", "Pool", [uss], "MiB", note)
        emit(f"parent_rss_per_worker_{method}", "Pool", [growth], "MiB", note)


# ---------------------------------------------------------------- sweeps for the plots


def tasks_for_payload(size, quick):
    n = min(20_000, max(64, (64 << 20) // size))
    return max(16, n // 5) if quick else n


def tasks_for_duration(micros, quick):
    n = 20_000 if micros == 0 else min(20_000, max(200, 1_000_000 // micros))
    return max(40, n // 5) if quick else n


def sweeps(args):
    pool = mp.Pool(2)
    pool.map(add_one, range(100))
    for size in (8, 1 << 10, 64 << 10, 1 << 20):
        n = tasks_for_payload(size, args.quick)
        payload = bytes(size)
        t = _timed(lambda: [r.get() for r in [pool.apply_async(payload_size, (payload,)) for _ in range(n)]])
        emit(f"sweep_apply_async_payload_{size}", "Pool", [n / t], "tasks/s")
        # Distinct objects: pickle would send one object n times as a memo reference.
        items = [bytes(size) for _ in range(n)]
        t = _timed(lambda: pool.map(payload_size, items))
        emit(f"sweep_map_payload_{size}", "Pool", [n / t], "tasks/s")
    for micros in (0, 10, 100, 1000):
        n = tasks_for_duration(micros, args.quick)
        rounds = rounds_for(micros)
        t = _timed(lambda: [r.get() for r in [pool.apply_async(burn, (rounds,)) for _ in range(n)]])
        emit(f"sweep_apply_async_duration_{micros}", "Pool", [n / t], "tasks/s")
        t = _timed(lambda: pool.map(burn, [rounds] * n))
        emit(f"sweep_map_duration_{micros}", "Pool", [n / t], "tasks/s")
    pool.close()
    pool.join()
    fig_cpu_bound(argparse.Namespace(quick=args.quick, repetitions=1), workers_list=(1, 4))


FIGURES = {
    "map_trivial": fig_map_trivial,
    "apply_p50": fig_apply_round_trip,
    "apply_async_get": fig_apply_async_get,
    "echo_bytes": fig_echo_bytes,
    "cpu_bound": fig_cpu_bound,
    "process_start": fig_process_start,
    "worker_killed": fig_worker_killed,
    "idle_cpu": fig_idle_cpu,
    "idle_memory": fig_idle_memory,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, shorter waits")
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--only", default="", help="comma-separated figures: " + ",".join(FIGURES))
    parser.add_argument("--sweep", action="store_true", help="only the sweeps behind the plots")
    args = parser.parse_args()
    if args.sweep:
        sweeps(args)
        return
    chosen = [f for f in args.only.split(",") if f] or list(FIGURES)
    for name in chosen:
        try:
            FIGURES[name](args)
        except Exception as e:  # one broken figure must not hide the others
            print(json.dumps({"figure": name, "impl": "error", "value": None, "unit": "",
                              "samples": [], "note": f"{type(e).__name__}: {e}"}), flush=True)
    print(f"# python {sys.version.split()[0]}, start method {mp.get_start_method()}", file=sys.stderr)


if __name__ == "__main__":
    main()
