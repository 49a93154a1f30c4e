#!/bin/sh
# Builds the commands shipped in the container image as static binaries.
# The Dockerfile runs this script, and `make image` runs it directly when no
# container engine is available, so both build exactly the same way.
#
# Usage: deploy/image/build.sh OUTDIR
# Environment: GO (default go), VERSION (default dev), COMMIT (default
# unknown), GOOS/GOARCH (optional), BORINGCRYPTO (default 0).
#
# BORINGCRYPTO=1 builds with Go's BoringCrypto module (GOEXPERIMENT=
# boringcrypto, cgo), whose RSA-2048 signing is about 1.6x faster than the
# default build's on amd64 (bench/results/NOTES.md). The binaries are still
# static (glibc linked in, netgo and osusergo), so they run on the distroless
# static image. It needs a C compiler for the target: build on the target
# platform (linux/amd64 or linux/arm64), not cross-compiled.
set -eu
out=${1:?usage: build.sh OUTDIR}
GO=${GO:-go}
VERSION=${VERSION:-dev}
COMMIT=${COMMIT:-unknown}
mkdir -p "$out"
# The commands in the image. deploy/k8s's test checks that every command a
# manifest runs is in this list.
CMDS="./cmd/worker ./cmd/notifier ./cmd/deadletter ./cmd/wechatsim"
if [ "${BORINGCRYPTO:-0}" = 1 ]; then
  # BoringSSL's BIO code references getaddrinfo, which Go never calls:
  # the linker's warning about it is expected.
  # shellcheck disable=SC2086 # CMDS is a word list on purpose.
  GOEXPERIMENT=boringcrypto CGO_ENABLED=1 "$GO" build -trimpath -buildvcs=false -tags netgo,osusergo \
    -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT} -linkmode=external -extldflags=-static" \
    -o "$out/" $CMDS
else
  # shellcheck disable=SC2086 # CMDS is a word list on purpose.
  CGO_ENABLED=0 "$GO" build -trimpath -buildvcs=false \
    -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
    -o "$out/" $CMDS
fi
