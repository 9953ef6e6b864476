#!/usr/bin/env bash
# Multi-process testing with torchrun, as mmseg's/mmdet's dist_test.sh:
#
#   tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [tools/test.py options ...]
#
# CPU-only machines work too (gloo, see dist_launch.sh). Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT.
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 CONFIG CHECKPOINT NUM_PROCS [tools/test.py options ...]" >&2
    exit 2
fi
exec bash "$(dirname "$0")/dist_launch.sh" test.py "$3" "$1" "$2" "${@:4}"
