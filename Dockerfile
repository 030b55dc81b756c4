# Multi-stage build of both binaries; the runtime image holds only them.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p saasllm-api -p saasllm-worker

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 saasllm
COPY --from=build /src/target/release/saasllm-api /src/target/release/saasllm-worker /usr/local/bin/
USER saasllm
EXPOSE 8000
CMD ["saasllm-api"]
