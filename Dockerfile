# syntax=docker/dockerfile:1
#
# One image per binary, from one shared build. Pick the binary with --target:
#
#   docker build --target command-service -t dynabridge/command-service:<tag> .
#   docker build --target query-service   -t dynabridge/query-service:<tag> .
#   docker build --target projector       -t dynabridge/projector:<tag> .
#   docker build --target process-manager -t dynabridge/process-manager:<tag> .
#   docker build --target admin-service   -t dynabridge/admin-service:<tag> .
#   docker build --target route-planner   -t dynabridge/route-planner:<tag> .
#
# (Without --target the build stops at the last stage, the admin service.)
#
# The builds share the builder stage, so after the first one the others
# only copy a binary. Dependencies are compiled in a layer of their own
# (cargo-chef), which is rebuilt only when Cargo.toml or Cargo.lock change.
#
# The runtime image is Debian 12 slim with CA certificates and nothing else
# added, running as 65532:65532, the ids deploy/k8s pins. The builder is
# Debian 12 (bookworm) too, so the binaries link against the same glibc.

ARG RUST_VERSION=1.95
ARG CARGO_CHEF_VERSION=0.1.78

FROM rust:${RUST_VERSION}-bookworm AS chef
ARG CARGO_CHEF_VERSION
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

# The recipe: every manifest and the lock file, nothing else.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
ENV CARGO_TERM_COLOR=never
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only: this layer stays cached until the recipe changes.
RUN cargo chef cook --release --locked --recipe-path recipe.json \
        -p command-service -p query-service -p projector -p process-manager \
        -p admin-service -p route-planner
COPY . .
# local-stack (and the embedded store it links) is for laptops: not built.
RUN cargo build --release --locked \
        -p command-service -p query-service -p projector -p process-manager \
        -p admin-service -p route-planner \
    && mkdir -p /out \
    && cp target/release/command-service target/release/query-service \
        target/release/projector target/release/process-manager \
        target/release/admin-service target/release/route-planner /out/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 65532 nonroot \
    && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin nonroot
USER 65532:65532

# In a container the listen addresses must not be loopback. Kubernetes sets
# them again from its ConfigMap; these make a plain `docker run -p` work.

FROM runtime AS command-service
COPY --from=builder /out/command-service /usr/local/bin/command-service
ENV DYNABRIDGE_COMMAND_LISTEN=0.0.0.0:50051
EXPOSE 50051
ENTRYPOINT ["/usr/local/bin/command-service"]

FROM runtime AS query-service
COPY --from=builder /out/query-service /usr/local/bin/query-service
ENV DYNABRIDGE_QUERY_LISTEN=0.0.0.0:50052
EXPOSE 50052
ENTRYPOINT ["/usr/local/bin/query-service"]

FROM runtime AS projector
COPY --from=builder /out/projector /usr/local/bin/projector
ENV DYNABRIDGE_PROJECTOR_HEALTH_LISTEN=0.0.0.0:50053
EXPOSE 50053
ENTRYPOINT ["/usr/local/bin/projector"]

FROM runtime AS process-manager
COPY --from=builder /out/process-manager /usr/local/bin/process-manager
ENV DYNABRIDGE_PROCESS_MANAGER_HEALTH_LISTEN=0.0.0.0:50055
EXPOSE 50055
ENTRYPOINT ["/usr/local/bin/process-manager"]

# The example downstream service (examples/route-planner): its queue's URL
# and the command service's address come from its Deployment.
FROM runtime AS route-planner
COPY --from=builder /out/route-planner /usr/local/bin/route-planner
ENV DYNABRIDGE_ROUTE_PLANNER_HEALTH_LISTEN=0.0.0.0:50056
EXPOSE 50056
ENTRYPOINT ["/usr/local/bin/route-planner"]

FROM runtime AS admin-service
COPY --from=builder /out/admin-service /usr/local/bin/admin-service
ENV DYNABRIDGE_ADMIN_LISTEN=0.0.0.0:50054
EXPOSE 50054
ENTRYPOINT ["/usr/local/bin/admin-service"]
