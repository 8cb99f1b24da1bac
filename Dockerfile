# Contrail's image: one binary (ingest, process, serve, demo, ...) with its SQL, default
# model and dashboard. Used by docker-compose.yml; the demo and the tests need no Docker.
#
#   docker build -t contrail .
#   docker run --rm -p 8501:8501 -p 50051:50051 contrail demo \
#     --http-bind 0.0.0.0:8501 --grpc-bind 0.0.0.0:50051

FROM rust:1.95-bookworm AS build
# librdkafka is built from source by rdkafka-sys (make, a C/C++ compiler: in the image).
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
COPY benches benches
RUN cargo build --release --locked --bin contrail

FROM node:20-bookworm-slim AS web
# The dashboard's Plotly.js and base geography, from the lockfile.
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /app contrail
WORKDIR /app
COPY --from=build /src/target/release/contrail /usr/local/bin/contrail
COPY sql sql
COPY models models
COPY web web
COPY --from=web /web/node_modules web/node_modules
RUN mkdir -p /app/data && chown contrail /app/data
USER contrail
# Relative defaults (sql/, models/, data/) resolve under /app; the dashboard's files:
ENV CONTRAIL_WEB_DIR=/app/web
VOLUME ["/app/data"]
ENTRYPOINT ["contrail"]
CMD ["--help"]
