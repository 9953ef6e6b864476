#!/usr/bin/env bash
# Multi-process training with torchrun (mmengine DDP), as mmseg's/mmdet's dist_train.sh:
#
#   tools/dist_train.sh CONFIG NUM_PROCS [tools/train.py options ...]
#
# CPU-only machines work too (gloo, see dist_launch.sh). Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG NUM_PROCS [tools/train.py options ...]" >&2
    exit 2
fi
exec bash "$(dirname "$0")/dist_launch.sh" train.py "$2" "$1" "${@:3}"
