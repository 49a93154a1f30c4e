#!/bin/sh
# Builds the commands shipped in the container image as static binaries.
# The Dockerfile runs this script, and `make image` runs it directly when no
# container engine is available, so both build exactly the same way.
#
# Usage: deploy/image/build.sh OUTDIR
# Environment: GO (default go), VERSION (default dev), COMMIT (default
# unknown), GOOS/GOARCH (optional).
set -eu
out=${1:?usage: build.sh OUTDIR}
GO=${GO:-go}
VERSION=${VERSION:-dev}
COMMIT=${COMMIT:-unknown}
mkdir -p "$out"
# The commands in the image. deploy/k8s's test checks that every command a
# manifest runs is in this list.
CMDS="./cmd/worker ./cmd/notifier ./cmd/deadletter ./cmd/wechatsim"
# shellcheck disable=SC2086 # CMDS is a word list on purpose.
CGO_ENABLED=0 "$GO" build -trimpath -buildvcs=false \
  -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
  -o "$out/" $CMDS
