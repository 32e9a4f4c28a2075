#!/usr/bin/env bash
# Generates the Python messages and gRPC stubs from proto/ into OUT_DIR
# (default: gen/ beside this script). protoc's Python imports follow the
# .proto paths, so the generated package is `dynabridge.v1` under OUT_DIR:
# put OUT_DIR on the import path.
#
# Needs the pinned grpcio-tools of requirements.txt in $PYTHON (default
# python3).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
proto="$here/../../proto"
out=${1:-$here/gen}
python=${PYTHON:-python3}

mkdir -p "$out"
out=$(cd "$out" && pwd)
# Start from nothing so a deleted .proto leaves no stale module behind.
rm -rf "$out/dynabridge"
# `python -m grpc_tools.protoc` adds its bundled google/protobuf/*.proto to
# the include path itself.
(cd "$proto" && "$python" -m grpc_tools.protoc -I . \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  dynabridge/v1/*.proto)
echo "generated $(cd "$out/dynabridge/v1" && ls ./*.py | wc -l) modules into $out/dynabridge/v1"
