#!/usr/bin/env bash
#SBATCH --job-name=camjax
#SBATCH --output=camjax-%j.out
# Train camjax on a SLURM GPU cluster: one JAX process per GPU (or per node), the same
# command on every process, jax.distributed with the coordinator on the job's first node.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: launch/slurm_gpu.sh [options] -- [camjax.main flags]

Submits itself with sbatch; inside the allocation it looks up the job's first
node, exports it as CAMJAX_COORDINATOR and starts the processes with srun.
Every process runs
  python -m camjax.main --coordinator_address=$CAMJAX_COORDINATOR:PORT \
      --num_processes=N --process_id=$SLURM_PROCID <your flags>

Options:
  -N, --nodes N            nodes (default 1)
  -g, --gpus-per-node G    GPUs per node (default 8)
      --per gpu|node       one process per GPU (default; each sees one GPU)
                           or one process per node (sees all its GPUs)
  -p, --partition P        SLURM partition (default: the cluster's default)
  -t, --time T             time limit, e.g. 24:00:00 (default 24:00:00)
      --port PORT          coordinator port (default 12355)
      --python PY          interpreter on the nodes (default: $PYTHON or python3)
      --sbatch-arg ARG     extra sbatch argument (repeatable), e.g. --sbatch-arg=--account=abc
      --dry-run            print the sbatch command and the srun command the job
                           runs (the same line, byte for byte), run nothing
  -h, --help               this text

Example:
  launch/slurm_gpu.sh -N 2 -g 8 -- --config=configs/googlenet_gap.py \
      --workdir=/shared/runs/googlenet_gap --config.data.data_dir=/shared/tfds
USAGE
}

me=slurm_gpu.sh
fail() { echo "$me: $1 (see --help)" >&2; exit 2; }
need() {  # option $1 has a value $2 (not missing, empty or another option)
  if [[ $# -lt 2 || -z "$2" ]]; then fail "$1 needs a value"; fi
  if [[ "$2" == -* && "$1" != --sbatch-arg ]]; then fail "$1 needs a value, got the option $2"; fi
}
whole() {  # option $1's value $2 is a positive whole number
  [[ "$2" =~ ^[1-9][0-9]*$ ]] || fail "$1 must be a positive whole number, got '$2'"
}

nodes=1; gpus=8; per=gpu; partition=""; time_limit="24:00:00"; port=12355; dry_run=0; inside=0
python="${PYTHON:-python3}"; extra=()
while [[ $# -gt 0 ]]; do
  if [[ "$1" == --?*=* ]]; then set -- "${1%%=*}" "${1#*=}" "${@:2}"; fi  # --opt=value as --opt value
  case "$1" in
    -N|--nodes) need "$@"; nodes="$2"; shift 2 ;;
    -g|--gpus-per-node) need "$@"; gpus="$2"; shift 2 ;;
    --per) need "$@"; per="$2"; shift 2 ;;
    -p|--partition) need "$@"; partition="$2"; shift 2 ;;
    -t|--time) need "$@"; time_limit="$2"; shift 2 ;;
    --port) need "$@"; port="$2"; shift 2 ;;
    --python) need "$@"; python="$2"; shift 2 ;;
    --sbatch-arg) need "$@"; extra+=("$2"); shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --inside-job) inside=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) fail "unknown option $1" ;;
  esac
done
whole -N "$nodes"
whole -g "$gpus"
if ! [[ "$port" =~ ^[1-9][0-9]{0,4}$ && "$port" -le 65535 ]]; then
  fail "--port must be a port number from 1 to 65535, got '$port'"
fi
case "$per" in
  gpu) tasks_per_node="$gpus" ;;
  node) tasks_per_node=1 ;;
  *) fail "--per must be gpu or node, got '$per'" ;;
esac
[[ $# -gt 0 ]] || fail "give the camjax.main flags after --"
flags=("$@")
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ntasks=$((nodes * tasks_per_node))

show() {  # one line a shell reads back as the same words: plain words bare, others in single quotes
  local word words=()
  for word in "$@"; do
    if [[ "$word" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then words+=("$word"); else words+=("'${word//\'/\'\\\'\'}'"); fi
  done
  echo "${words[*]}"
}

# The job step, built once: the dry run prints this array and the job executes it. Nothing in it
# depends on the allocation; each process reads the coordinator (the job's first node, exported
# below) and its rank from the environment, which --export=ALL hands on even when the job itself
# was submitted with --export=NONE.
visible=""
[[ "$per" == gpu ]] && visible='export CUDA_VISIBLE_DEVICES=$SLURM_LOCALID; '
quoted="$(printf '%q ' "$python" -m camjax.main)"
quoted+='--coordinator_address=${CAMJAX_COORDINATOR:?set by launch/slurm_gpu.sh}'
quoted+=":$port --num_processes=$ntasks --process_id=\$SLURM_PROCID $(printf '%q ' "${flags[@]}")"
step=(srun --ntasks="$ntasks" --ntasks-per-node="$tasks_per_node" --kill-on-bad-exit=1 --export=ALL
      bash -c "${visible}exec ${quoted% }")

if [[ $inside -eq 0 ]]; then
  # Submit this script as the batch job.
  cmd=(sbatch --nodes="$nodes" --ntasks-per-node="$tasks_per_node" --gpus-per-node="$gpus"
       --time="$time_limit" --chdir="$here")
  [[ -n "$partition" ]] && cmd+=(--partition="$partition")
  cmd+=("${extra[@]}" "$here/launch/slurm_gpu.sh" --inside-job --nodes "$nodes" --gpus-per-node "$gpus"
        --per "$per" --port "$port" --python "$python" -- "${flags[@]}")
  if [[ $dry_run -eq 1 ]]; then show "${cmd[@]}"; show "${step[@]}"; exit 0; fi
  exec "${cmd[@]}"
fi

# Inside the allocation: the coordinator is the job's first node.
nodelist="${SLURM_JOB_NODELIST:-}"
[[ -n "$nodelist" ]] || fail "--inside-job runs inside a SLURM job (SLURM_JOB_NODELIST is not set); submit without it"
CAMJAX_COORDINATOR="$(scontrol show hostnames "$nodelist" | sed -n 1p)"  # sed reads all: no SIGPIPE
[[ -n "$CAMJAX_COORDINATOR" ]] || { echo "$me: scontrol gave no host for $nodelist" >&2; exit 1; }
export CAMJAX_COORDINATOR
echo "$me: coordinator $CAMJAX_COORDINATOR:$port" >&2
if [[ $dry_run -eq 1 ]]; then show "${step[@]}"; exit 0; fi
# The job starts in --chdir (the repository), so relative config paths work.
exec "${step[@]}"
