#!/usr/bin/env bash
# tests/mpi/run_mpi_test.sh — runs one MPI test as `mpirun -np 3` (a driver and two agents),
# bounded by a timeout, in its own Open MPI shared-memory directory.
#
#   run_mpi_test.sh run          PROGRAM ARGS...   the job must succeed
#   run_mpi_test.sh spawn        PROGRAM ARGS...   the same without mpirun: PROGRAM spawns its
#       two agents with MPI_Comm_spawn (MPROC_TEST_SPAWN_AGENTS=2)
#   run_mpi_test.sh agent-killed PROGRAM ARGS...   the program kills agent rank 2: the job must
#       end non-zero within the timeout, its output naming rank 2, leaving no process and no
#       shared-memory file behind
#   run_mpi_test.sh spawn-agent-killed PROGRAM ARGS...   agent-killed in spawn mode
#   run_mpi_test.sh two-hosts    PROGRAM ARGS...   the driver and agent 1 in one network
#       namespace, agent 2 in another, joined by a veth pair of their own (root and `ip netns`
#       needed, otherwise the test is skipped: exit status 77)
#
# The environment (set by ctest) carries the OMPI_MCA_* settings, among them
# OMPI_MCA_btl_vader_backing_directory; MPROC_MPIRUN names mpirun.
set -u
mode=$1
shift
mpirun=${MPROC_MPIRUN:-mpirun}
job_timeout=${MPROC_MPI_TEST_TIMEOUT:-120}
shm_dir=${OMPI_MCA_btl_vader_backing_directory:?the ctest environment sets it}
rm -rf "$shm_dir"
mkdir -p "$shm_dir"
# Every process of the job (ranks, zygotes, workers) carries this argument: found by pgrep.
token="--mproc-test-token=$$-$RANDOM$RANDOM"

fail() {
  echo "run_mpi_test.sh: FAIL: $*" >&2
  exit 1
}

# Processes of this job still alive after mpirun ended, waiting up to 10 s for stragglers
# (a worker notices its parent's death within milliseconds; this only bounds a hang).
check_nothing_left() {
  local left=""
  for _ in $(seq 100); do
    left=$(pgrep -f -- "$token" || true)
    [[ -z $left ]] && return 0
    sleep 0.1
  done
  ps -o pid,ppid,stat,args -p "$(echo $left | tr ' ' ',')" >&2 || true
  pkill -KILL -f -- "$token" || true
  fail "processes of the job are still running after mpirun ended"
}

shm_snapshot() { ls -1 /dev/shm 2>/dev/null | grep -E 'vader|ompi|pmix|openmpi|sm_segment' | sort || true; }

case $mode in
  run)
    timeout -k 10 "$job_timeout" "$mpirun" -np 3 "$@" "$token"
    rc=$?
    check_nothing_left
    rm -rf "$shm_dir"
    exit $rc
    ;;

  spawn)
    MPROC_TEST_SPAWN_AGENTS=2 timeout -k 10 "$job_timeout" "$@" "$token"
    rc=$?
    check_nothing_left
    rm -rf "$shm_dir"
    exit $rc
    ;;

  agent-killed|spawn-agent-killed)
    before=$(shm_snapshot)
    output=$(mktemp)
    start=$(date +%s)
    if [[ $mode == agent-killed ]]; then
      timeout -k 10 "$job_timeout" "$mpirun" -np 3 "$@" "$token" >"$output" 2>&1
    else
      MPROC_TEST_SPAWN_AGENTS=2 timeout -k 10 "$job_timeout" "$@" "$token" >"$output" 2>&1
    fi
    rc=$?
    elapsed=$(($(date +%s) - start))
    cat "$output"
    echo "run_mpi_test.sh: the job exited with status $rc after ${elapsed} s" >&2
    [[ $rc -ne 0 ]] || fail "the job succeeded although an agent was killed"
    # mpirun's own status is 128 + the agent's signal (137); timeout's is 124.
    [[ $rc -ne 124 && $elapsed -lt $job_timeout ]] || fail "the job hung after an agent was killed (timeout)"
    grep -Eq 'rank 2\b' "$output" || fail "the output does not name rank 2"
    rm -f "$output"
    check_nothing_left
    after=$(shm_snapshot)
    new=$(comm -13 <(echo "$before") <(echo "$after"))
    [[ -z $new ]] || fail "files left in /dev/shm: $new"
    rm -rf "$shm_dir"
    exit 0
    ;;

  two-hosts)
    if [[ $(id -u) -ne 0 ]] || ! ip netns list >/dev/null 2>&1; then
      echo "run_mpi_test.sh: two-hosts needs root and ip netns: skipped" >&2
      exit 77
    fi
    suffix=$$
    ns_a=mproc_a_$suffix ns_b=mproc_b_$suffix
    veth_a=mpa$suffix veth_b=mpb$suffix
    work=$(mktemp -d)
    cleanup() {
      ip netns pids "$ns_a" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
      ip netns pids "$ns_b" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
      ip netns del "$ns_a" 2>/dev/null
      ip netns del "$ns_b" 2>/dev/null
      rm -rf "$work" "$shm_dir"
    }
    trap cleanup EXIT
    # Two "hosts": network namespaces joined by a veth pair that leads nowhere else.
    ip netns add "$ns_a" && ip netns add "$ns_b" || { echo "cannot create network namespaces: skipped" >&2; exit 77; }
    ip link add "$veth_a" netns "$ns_a" type veth peer name "$veth_b" netns "$ns_b" ||
      { echo "cannot create a veth pair: skipped" >&2; exit 77; }
    ip -n "$ns_a" addr add 10.213.0.1/24 dev "$veth_a"
    ip -n "$ns_b" addr add 10.213.0.2/24 dev "$veth_b"
    for ns in "$ns_a" "$ns_b"; do
      ip -n "$ns" link set lo up
    done
    ip -n "$ns_a" link set "$veth_a" up
    ip -n "$ns_b" link set "$veth_b" up
    # Open MPI starts its daemon on the other host through plm_rsh_agent: this launcher
    # plays ssh, entering that host's namespace (and UTS namespace, for its own host name).
    cat >"$work/hosts" <<EOF
10.213.0.1 slots=2
10.213.0.2 slots=1
EOF
    cat >"$work/launcher" <<EOF
#!/usr/bin/env bash
# Called as: launcher [options] HOST COMMAND...
while [[ \$1 == -* ]]; do shift; done
host=\$1; shift
case \$host in
  10.213.0.1) ns=$ns_a; name=mproc-host-a ;;
  10.213.0.2) ns=$ns_b; name=mproc-host-b ;;
  *) echo "launcher: unknown host \$host" >&2; exit 1 ;;
esac
exec ip netns exec "\$ns" unshare --uts sh -c "hostname \$name; exec sh -c \"\\\$0\"" "\$*"
EOF
    chmod +x "$work/launcher"
    export OMPI_MCA_plm_rsh_agent=$work/launcher
    export OMPI_MCA_btl=self,tcp
    export OMPI_MCA_btl_tcp_if_include=10.213.0.0/24
    export OMPI_MCA_oob_tcp_if_include=10.213.0.0/24
    # mpirun itself runs on "host a", under that host's name.
    timeout -k 10 "$job_timeout" ip netns exec "$ns_a" unshare --uts sh -c 'hostname mproc-host-a; exec "$@"' sh \
      "$mpirun" -np 3 --hostfile "$work/hosts" --map-by node "$@" "$token"
    rc=$?
    check_nothing_left
    exit $rc
    ;;

  *)
    echo "usage: run_mpi_test.sh run|agent-killed|two-hosts PROGRAM ARGS..." >&2
    exit 2
    ;;
esac
