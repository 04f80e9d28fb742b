#!/usr/bin/env bash
# Train camjax on a Cloud TPU VM slice: create it, copy the code, set up every worker
# (idempotent), run the same command on all workers, tear down.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: launch/tpu_pod.sh [options] STEP... -- [camjax.main flags]

STEPs, run in the order given (`all` = create copy setup run delete):
  create   create the TPU VM slice (skipped when it already exists)
  copy     copy this repository (git HEAD) to every worker
  setup    make ~/camjax-venv with the requirements and jax[tpu] on every worker
           (idempotent: skipped on workers whose requirements did not change)
  run      run `python -m camjax.main <flags>` on all workers at once
  delete   delete the slice

Options:
  --name NAME              TPU VM name (default camjax)
  --zone ZONE              e.g. us-central2-b (required)
  --project PROJECT        GCP project (default: gcloud's default)
  --type TYPE              accelerator type, e.g. v4-32 (default v4-8)
  --version VERSION        TPU VM software version (default tpu-ubuntu2204-base)
  --spot                   create a spot (preemptible) slice; a preempted run resumes
                           from its last checkpoint when `run` is repeated
  --dry-run                print the gcloud commands, run nothing
  -h, --help               this text

Data and the workdir should live on a bucket every worker reads, e.g.
  launch/tpu_pod.sh --zone us-central2-b --type v4-32 all -- \
      --config=configs/googlenet_gap.py --workdir=gs://BUCKET/runs/googlenet_gap \
      --config.data.data_dir=gs://BUCKET/tensorflow_datasets
USAGE
}

me=tpu_pod.sh
fail() { echo "$me: $1 (see --help)" >&2; exit 2; }
need() {  # option $1 has a value $2 (not missing, empty or another option)
  if [[ $# -lt 2 || -z "$2" ]]; then fail "$1 needs a value"; fi
  if [[ "$2" == -* ]]; then fail "$1 needs a value, got the option $2"; fi
}

name=camjax; zone=""; project=""; type=v4-8; version=tpu-ubuntu2204-base; spot=0; dry_run=0; steps=()
while [[ $# -gt 0 ]]; do
  if [[ "$1" == --?*=* ]]; then set -- "${1%%=*}" "${1#*=}" "${@:2}"; fi  # --opt=value as --opt value
  case "$1" in
    --name) need "$@"; name="$2"; shift 2 ;;
    --zone) need "$@"; zone="$2"; shift 2 ;;
    --project) need "$@"; project="$2"; shift 2 ;;
    --type) need "$@"; type="$2"; shift 2 ;;
    --version) need "$@"; version="$2"; shift 2 ;;
    --spot) spot=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    create|copy|setup|run|delete) steps+=("$1"); shift ;;
    all) steps+=(create copy setup run delete); shift ;;
    -*) fail "unknown option $1" ;;
    *) fail "unknown step $1; steps are create, copy, setup, run, delete or all" ;;
  esac
done
flags=("$@")
if [[ ${#steps[@]} -eq 0 ]]; then fail "give at least one STEP (create, copy, setup, run, delete or all)"; fi
if [[ -z "$zone" ]]; then fail "--zone is required, e.g. --zone us-central2-b"; fi
for s in "${steps[@]}"; do
  if [[ "$s" == run && ${#flags[@]} -eq 0 ]]; then fail "the run step needs camjax.main flags after --"; fi
done

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
common=(--zone="$zone")
[[ -n "$project" ]] && common+=(--project="$project")
tarball="/tmp/camjax-code.tar.gz"

x() {  # run, or print in dry-run mode
  if [[ $dry_run -eq 1 ]]; then printf '%q ' "$@"; echo; else "$@"; fi
}
on_all() {  # run a shell command on every worker
  x gcloud compute tpus tpu-vm ssh "$name" "${common[@]}" --worker=all --command="$1"
}

for step in "${steps[@]}"; do
  case "$step" in
    create)
      if [[ $dry_run -eq 0 ]] && gcloud compute tpus tpu-vm describe "$name" "${common[@]}" >/dev/null 2>&1; then
        echo "tpu_pod.sh: $name already exists, not creating it"
      else
        args=(gcloud compute tpus tpu-vm create "$name" "${common[@]}" --accelerator-type="$type" --version="$version")
        [[ $spot -eq 1 ]] && args+=(--spot)
        x "${args[@]}"
      fi ;;
    copy)
      x git -C "$repo" archive --format=tar.gz -o "$tarball" HEAD
      x gcloud compute tpus tpu-vm scp "$tarball" "$name:~/camjax-code.tar.gz" "${common[@]}" --worker=all
      on_all 'rm -rf ~/camjax && mkdir -p ~/camjax && tar xzf ~/camjax-code.tar.gz -C ~/camjax' ;;
    setup)
      on_all 'set -e; cd ~/camjax; want="$(cat requirements.txt | sha256sum | cut -c1-16)";
if [ "$(cat ~/camjax-venv/.camjax-req 2>/dev/null)" != "$want" ]; then
  python3 -m venv ~/camjax-venv && ~/camjax-venv/bin/pip install -q -U pip &&
  ~/camjax-venv/bin/pip install -q -r requirements.txt "jax[tpu]" &&
  echo "$want" > ~/camjax-venv/.camjax-req;
fi' ;;
    run)
      quoted="$(printf '%q ' "${flags[@]}")"
      quoted="${quoted% }"
      on_all "cd ~/camjax && CAMJAX_DISTRIBUTED=1 ~/camjax-venv/bin/python -m camjax.main $quoted" ;;
    delete)
      x gcloud compute tpus tpu-vm delete "$name" "${common[@]}" --quiet ;;
  esac
done
