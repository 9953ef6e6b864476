#!/usr/bin/env bash
# torchrun launcher shared by dist_train.sh and dist_test.sh (not meant to be called directly):
#
#   tools/dist_launch.sh SCRIPT NUM_PROCS [SCRIPT arguments ...]
#
# One process per GPU; without CUDA the processes run on CPU and the tools switch to the gloo backend
# (and SyncBN to BN). Multi-node: set NNODES, NODE_RANK, MASTER_ADDR, PORT.
set -euo pipefail
SCRIPT=$1
NPROCS=$2
HERE=$(cd "$(dirname "$0")" && pwd)

PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}" \
exec python -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --nproc_per_node="$NPROCS" --master_port="${PORT:-29500}" \
    "$HERE/$SCRIPT" --launcher pytorch "${@:3}"
