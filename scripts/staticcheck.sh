#!/usr/bin/env bash
# Runs staticcheck, installing the pinned version into ./bin first.
set -euo pipefail
version=${1:?version}
bin=$(pwd)/bin
if [ ! -x "$bin/staticcheck" ] || ! "$bin/staticcheck" -version 2>/dev/null | grep -q "(${version#v})"; then
  GOBIN=$bin go install "honnef.co/go/tools/cmd/staticcheck@$version"
fi
"$bin/staticcheck" ./...
