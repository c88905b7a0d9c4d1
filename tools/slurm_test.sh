#!/usr/bin/env bash
# Testing on a slurm cluster, one task per GPU:
#   [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS="..."] \
#   tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args]
# GPUS is the number of tasks; GPUS_PER_NODE the tasks per node, also requested as --gres=gpu:N unless
# GRES is set (GRES="" requests no GPU). SRUN_ARGS is split on spaces; every path is quoted.
set -x

PARTITION="$1"
JOB_NAME="$2"
CONFIG="$3"
CHECKPOINT="$4"
GPUS="${GPUS:-8}"
GPUS_PER_NODE="${GPUS_PER_NODE:-8}"
CPUS_PER_TASK="${CPUS_PER_TASK:-5}"
GRES="${GRES-gpu:${GPUS_PER_NODE}}"
read -r -a SRUN_EXTRA <<< "${SRUN_ARGS:-}"
TOOLS_DIR="$(cd "$(dirname "$0")" && pwd)"
REPO_DIR="$(dirname "$TOOLS_DIR")"
if [ -z "$PYTHON" ]; then
    if [ -x "$REPO_DIR/.venv/bin/python" ]; then PYTHON="$REPO_DIR/.venv/bin/python"; else PYTHON=python; fi
fi
GRES_ARGS=()
[ -n "$GRES" ] && GRES_ARGS=(--gres="$GRES")

PYTHONPATH="$REPO_DIR${PYTHONPATH:+:$PYTHONPATH}" \
srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    "${GRES_ARGS[@]}" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    "${SRUN_EXTRA[@]}" \
    "$PYTHON" -u "$TOOLS_DIR/test.py" "$CONFIG" "$CHECKPOINT" --launcher="slurm" "${@:5}"
