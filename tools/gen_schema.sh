#!/usr/bin/env bash
# Regenerate parity/caffe/schema/caffe_pb2.py from parity/caffe/schema/caffe.proto.
#
# Run from anywhere; paths are resolved against the repository root. Uses the protoc found
# on PATH (override with PROTOC=/path/to/protoc). The checked-in bindings were made with
# Debian 12's protoc 3.21.12, whose output loads under protobuf >= 4.21.
#
#   tools/gen_schema.sh
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PROTOC=${PROTOC:-protoc}

if ! command -v "$PROTOC" >/dev/null 2>&1; then
  echo "gen_schema: protoc not found (apt-get install protobuf-compiler, or set PROTOC)" >&2
  exit 1
fi

echo "gen_schema: using $("$PROTOC" --version)"
cd "$REPO"
"$PROTOC" --proto_path=parity/caffe/schema --python_out=parity/caffe/schema parity/caffe/schema/caffe.proto
echo "gen_schema: wrote parity/caffe/schema/caffe_pb2.py"
