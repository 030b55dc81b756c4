# syntax=docker/dockerfile:1
# Two ways to the same runtime image:
#   docker build -t saasllm .                         compiles in the image (cargo-chef caches
#                                                    the dependency layer between builds)
#   docker build --target prebuilt -t saasllm .       packs release binaries built outside, from
#                                                    dist/saasllm-api and dist/saasllm-worker
#                                                    (same Debian bookworm, glibc-linked)

FROM rust:1-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only: this layer is reused until Cargo.toml or Cargo.lock change.
RUN cargo chef cook --release --locked --recipe-path recipe.json -p saasllm-api -p saasllm-worker
COPY . .
RUN cargo build --release --locked -p saasllm-api -p saasllm-worker \
    && mkdir -p /dist && cp target/release/saasllm-api target/release/saasllm-worker /dist/

FROM debian:bookworm-slim AS runtime-base
# curl serves the health check; ca-certificates the TLS connections to providers and databases.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 saasllm \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin saasllm
ENV NO_COLOR=1
USER 10001:10001
EXPOSE 8000
# The API's /health (PostgreSQL and Redis reachable). A worker container overrides this with its
# metrics listener's /health (see docker-compose.yml).
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=5 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8000/health"]
CMD ["saasllm-api"]

FROM runtime-base AS prebuilt
COPY --chmod=0755 dist/saasllm-api dist/saasllm-worker /usr/local/bin/

FROM runtime-base AS runtime
COPY --from=build /dist/saasllm-api /dist/saasllm-worker /usr/local/bin/
