#!/usr/bin/env bash
# Distributed testing with torchrun: tools/dist_test.sh CONFIG CHECKPOINT NPROC_PER_NODE [test.py args]
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT (same on every node). Without CUDA the ranks use gloo.
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
TOOLS_DIR=$(cd "$(dirname "$0")" && pwd)
REPO_DIR=$(dirname "$TOOLS_DIR")
PYTHON=${PYTHON:-$([ -x "$REPO_DIR/.venv/bin/python" ] && echo "$REPO_DIR/.venv/bin/python" || echo python)}

PYTHONPATH="$REPO_DIR":$PYTHONPATH \
"$PYTHON" -m torch.distributed.run \
    --nnodes=$NNODES \
    --node_rank=$NODE_RANK \
    --master_addr=$MASTER_ADDR \
    --nproc_per_node=$GPUS \
    --master_port=$PORT \
    "$TOOLS_DIR/test.py" \
    $CONFIG \
    $CHECKPOINT \
    --launcher pytorch \
    "${@:4}"
