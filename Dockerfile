# syntax=docker/dockerfile:1.7
#
# manager-operator container image: multi-stage, the runtime is distroless `cc` (glibc, CA
# certificates, no shell, no package manager) running as the non-root user 65532.
#
#   docker buildx build -t ghcr.io/manager-operator/manager-operator:0.1.0 \
#     --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" --push .
#
# NOTE: this file has not been built on the development machine of this repository, which has
# no container engine (no Docker, Podman or BuildKit). It is written for a real registry and CI
# (docker buildx / BuildKit). The chart's e2e suite runs the same binary as local processes
# instead (`cargo build`, then `manager-operator run`), under the chart's ServiceAccount and RBAC.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---- build ------------------------------------------------------------------------------------
FROM docker.io/library/rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0 \
    CARGO_PROFILE_RELEASE_STRIP=symbols

# 1. Dependency layer: build every dependency against stub sources, so that this (slow) layer
#    is reused as long as Cargo.toml and Cargo.lock do not change.
COPY Cargo.toml Cargo.lock ./
RUN --mount=type=cache,id=cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=cargo-git,target=/usr/local/cargo/git \
    mkdir -p src \
 && printf 'fn main() {}\n' > src/main.rs \
 && : > src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src target/release/manager-operator* target/release/deps/manager_operator-* \
           target/release/deps/libmanager_operator-* target/release/.fingerprint/manager-operator-*

# 2. The operator itself (`manager_operator_build_info{revision}` reads MO_REVISION).
COPY src ./src
ARG REVISION=unknown
ENV MO_REVISION=${REVISION}
RUN --mount=type=cache,id=cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=cargo-git,target=/usr/local/cargo/git \
    cargo build --release --locked --bin manager-operator \
 && install -D -m 0755 target/release/manager-operator /out/manager-operator \
 && /out/manager-operator --version

# ---- runtime ----------------------------------------------------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="manager-operator" \
      org.opencontainers.image.description="Leader-elected controller managers declared as ManagerConfig resources; every startup failure surfaced as a Condition, an Event and a metric." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="https://github.com/manager-operator/manager-operator" \
      org.opencontainers.image.url="https://github.com/manager-operator/manager-operator" \
      org.opencontainers.image.documentation="https://github.com/manager-operator/manager-operator/tree/main/charts/manager-operator" \
      org.opencontainers.image.vendor="manager-operator" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"

COPY --from=build /out/manager-operator /usr/local/bin/manager-operator

# distroless "nonroot" = 65532:65532; numeric so that runAsNonRoot can verify it.
USER 65532:65532
# webhook (HTTPS), metrics, health probes — the defaults of `manager-operator run`.
EXPOSE 9443 8080 8081
ENTRYPOINT ["/usr/local/bin/manager-operator"]
CMD ["run"]
