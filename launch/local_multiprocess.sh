#!/usr/bin/env bash
# Run one camjax command as N JAX processes on this machine (loopback coordinator, CPU devices).
# This is how multi-host training is exercised without a cluster: the same jax.distributed
# runtime as a TPU pod or a GPU cluster, with CPU collectives between the processes.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: launch/local_multiprocess.sh [options] -- [camjax.main flags]

Starts N processes of `python -m camjax.main` on 127.0.0.1, each with its own
CPU devices, joined by jax.distributed; waits for all and fails if any fails.

Options:
  -n, --num-processes N    processes to start (default 2)
  -d, --devices-per-process D
                           CPU devices each process simulates (default 1)
  -p, --port PORT          coordinator port (default: a free port; the dry run and
                           the real run both say which on stderr)
  -l, --log-dir DIR        write process i's output to DIR/process_i.log
                           (default: prefix each line with [i] on the console)
      --python PY          interpreter (default: $PYTHON or python3)
      --dry-run            print the commands, start nothing
  -h, --help               this text

Example:
  launch/local_multiprocess.sh -n 2 -d 2 -- \
      --config=tests/tiny_config.py --workdir=/tmp/camjax_mp
USAGE
}

me=local_multiprocess.sh
fail() { echo "$me: $1 (see --help)" >&2; exit 2; }
need() {  # option $1 has a value $2 (not missing, empty or another option)
  if [[ $# -lt 2 || -z "$2" ]]; then fail "$1 needs a value"; fi
  if [[ "$2" == -* ]]; then fail "$1 needs a value, got the option $2"; fi
}

num=2; devices=1; port=""; log_dir=""; dry_run=0; python="${PYTHON:-python3}"
while [[ $# -gt 0 ]]; do
  if [[ "$1" == --?*=* ]]; then set -- "${1%%=*}" "${1#*=}" "${@:2}"; fi  # --opt=value as --opt value
  case "$1" in
    -n|--num-processes) need "$@"; num="$2"; shift 2 ;;
    -d|--devices-per-process) need "$@"; devices="$2"; shift 2 ;;
    -p|--port) need "$@"; port="$2"; shift 2 ;;
    -l|--log-dir) need "$@"; log_dir="$2"; shift 2 ;;
    --python) need "$@"; python="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) fail "unknown option $1" ;;
  esac
done
[[ "$num" =~ ^[1-9][0-9]*$ ]] || fail "-n must be a positive whole number of processes, got '$num'"
[[ "$devices" =~ ^[1-9][0-9]*$ ]] || fail "-d must be a positive whole number of devices, got '$devices'"
if [[ -n "$port" ]] && ! [[ "$port" =~ ^[1-9][0-9]{0,4}$ && "$port" -le 65535 ]]; then
  fail "-p must be a port number from 1 to 65535, got '$port'"
fi
[[ $# -gt 0 ]] || fail "give the camjax.main flags after --"
if [[ $dry_run -eq 0 || -z "$port" ]] && ! command -v "$python" >/dev/null; then
  fail "no interpreter '$python'; give one with --python"
fi
note=""
if [[ -z "$port" ]]; then  # a free port, picked the same way for a dry run and a real run
  port="$("$python" -c 'import portpicker; print(portpicker.pick_unused_port())' 2>/dev/null ||
          "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' \
          2>/dev/null || true)"
  [[ "$port" =~ ^[1-9][0-9]*$ ]] || fail "could not find a free port with $python; give one with -p PORT"
  if [[ $dry_run -eq 1 ]]; then note=" (free now; give -p $port to run on it)"; fi
fi
echo "$me: coordinator 127.0.0.1:$port$note" >&2  # stderr: a dry run's stdout is the commands alone

cd "$(dirname "$0")/.."
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup INT TERM

for ((i = 0; i < num; i++)); do
  cmd=(env JAX_PLATFORMS=cpu "XLA_FLAGS=--xla_force_host_platform_device_count=$devices"
       "$python" -m camjax.main --coordinator_address="127.0.0.1:$port" --num_processes="$num"
       --process_id="$i" "$@")
  if [[ $dry_run -eq 1 ]]; then
    printf '%q ' "${cmd[@]}"; echo; continue
  fi
  if [[ -n "$log_dir" ]]; then
    mkdir -p "$log_dir"
    "${cmd[@]}" > "$log_dir/process_$i.log" 2>&1 &
  else
    "${cmd[@]}" 2>&1 | sed -u "s/^/[$i] /" &
  fi
  pids+=("$!")
done
[[ $dry_run -eq 1 ]] && exit 0

status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=$?
done
exit "$status"
