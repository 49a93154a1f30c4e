# syntax=docker/dockerfile:1.7
# One image with every orderworker command as a static binary:
#   /usr/local/bin/worker      the order worker (deploy/k8s: Deployment worker)
#   /usr/local/bin/notifier    the payment-notification receiver
#   /usr/local/bin/deadletter  the dead-letter tool (kubectl exec / Job)
#   /usr/local/bin/wechatsim   the WeChat Pay simulator (dev overlay only)
# The final stage is distroless "static" as user nonroot (65532): no shell, no
# package manager, nothing written at run time, so it runs with
# readOnlyRootFilesystem: true.
#
#   docker build --build-arg VERSION=$(git describe --always) -t orderworker:dev .
#   (or: make image)
#
# BoringCrypto build: --build-arg BORINGCRYPTO=1 builds the commands with
# GOEXPERIMENT=boringcrypto (cgo, still static binaries), whose RSA-2048
# signing is about 1.6x faster; the worker then needs about a third less CPU
# per order (bench/results/NOTES.md). Build it on the target platform
# (linux/amd64 or linux/arm64): cgo is not cross-compiled here.
#   docker build --build-arg BORINGCRYPTO=1 -t orderworker:dev-boring .
#   (or: make image BORINGCRYPTO=1)

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
# No separate `go mod download` layer: it would fetch the lint tools of go.mod's
# tool directive too. The cache mounts keep modules and build cache between
# builds, and `go build` fetches only the modules the commands import.
COPY . .
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
ARG COMMIT=unknown
ARG BORINGCRYPTO=0
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=${TARGETOS} GOARCH=${TARGETARCH} VERSION=${VERSION} COMMIT=${COMMIT} BORINGCRYPTO=${BORINGCRYPTO} \
    sh deploy/image/build.sh /out

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="orderworker" \
      org.opencontainers.image.description="WeChat Pay v3 combine-order worker, notifier and tools" \
      org.opencontainers.image.source="https://github.com/wxcombine/orderworker" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/ /usr/local/bin/
# distroless "nonroot" is uid/gid 65532; the manifests pin the same ids.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/worker"]
