#!/usr/bin/env bash
#SBATCH --job-name=camjax
#SBATCH --output=camjax-%j.out
# Train camjax on a SLURM GPU cluster: one JAX process per GPU (or per node), the same
# command on every process, jax.distributed with the coordinator on the job's first node.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: launch/slurm_gpu.sh [options] -- [camjax.main flags]

Submits itself with sbatch; inside the allocation it starts the processes with
srun. Every process runs
  python -m camjax.main --coordinator_address=<first node>:PORT \
      --num_processes=$SLURM_NTASKS --process_id=$SLURM_PROCID <your flags>

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
      --dry-run            print the sbatch and srun commands, run nothing
  -h, --help               this text

Example:
  launch/slurm_gpu.sh -N 2 -g 8 -- --config=configs/googlenet_gap.py \
      --workdir=/shared/runs/googlenet_gap --config.data.data_dir=/shared/tfds
USAGE
}

nodes=1; gpus=8; per=gpu; partition=""; time_limit="24:00:00"; port=12355; dry_run=0; inside=0
python="${PYTHON:-python3}"; extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -N|--nodes) nodes="$2"; shift 2 ;;
    -g|--gpus-per-node) gpus="$2"; shift 2 ;;
    --per) per="$2"; shift 2 ;;
    -p|--partition) partition="$2"; shift 2 ;;
    -t|--time) time_limit="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --python) python="$2"; shift 2 ;;
    --sbatch-arg=*) extra+=("${1#--sbatch-arg=}"); shift ;;
    --sbatch-arg) extra+=("$2"); shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --inside-job) inside=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) echo "slurm_gpu.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [[ $# -eq 0 ]]; then
  echo "slurm_gpu.sh: give the camjax.main flags after -- (see --help)" >&2; exit 2
fi
case "$per" in
  gpu) tasks_per_node="$gpus" ;;
  node) tasks_per_node=1 ;;
  *) echo "slurm_gpu.sh: --per must be gpu or node, got $per" >&2; exit 2 ;;
esac
flags=("$@")
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

show() { printf '%q ' "$@"; echo; }

if [[ $inside -eq 0 ]]; then
  # Submit this script as the batch job.
  cmd=(sbatch --nodes="$nodes" --ntasks-per-node="$tasks_per_node" --gpus-per-node="$gpus"
       --time="$time_limit" --chdir="$here")
  [[ -n "$partition" ]] && cmd+=(--partition="$partition")
  cmd+=("${extra[@]}" "$here/launch/slurm_gpu.sh" --inside-job --nodes "$nodes" --gpus-per-node "$gpus"
        --per "$per" --port "$port" --python "$python" -- "${flags[@]}")
  if [[ $dry_run -eq 1 ]]; then
    show "${cmd[@]}"
    # What the job will run, with the first node shown as $COORDINATOR.
    inner=("$python" -m camjax.main "--coordinator_address=\$COORDINATOR:$port"
           "--num_processes=$((nodes * tasks_per_node))" "--process_id=\$SLURM_PROCID" "${flags[@]}")
    echo "srun --ntasks=$((nodes * tasks_per_node)) --ntasks-per-node=$tasks_per_node bash -c '${inner[*]}'"
    exit 0
  fi
  exec "${cmd[@]}"
fi

# Inside the allocation: coordinator = first node of the job.
nodelist="${SLURM_JOB_NODELIST:?not inside a SLURM job}"
coordinator="$(scontrol show hostnames "$nodelist" | sed -n 1p)"  # sed reads all: no SIGPIPE under pipefail
ntasks="${SLURM_NTASKS:-$((nodes * tasks_per_node))}"
visible=""
[[ "$per" == gpu ]] && visible='export CUDA_VISIBLE_DEVICES=$SLURM_LOCALID; '
quoted="$(printf '%q ' "${flags[@]}")"
quoted="${quoted% }"
inner="${visible}exec $python -m camjax.main --coordinator_address=$coordinator:$port --num_processes=$ntasks --process_id=\$SLURM_PROCID $quoted"
cmd=(srun --ntasks="$ntasks" --ntasks-per-node="$tasks_per_node" --kill-on-bad-exit=1 bash -c "$inner")
if [[ $dry_run -eq 1 ]]; then show "${cmd[@]}"; exit 0; fi
# The job starts in --chdir (the repository), so relative config paths work.
exec "${cmd[@]}"
