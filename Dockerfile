# keyseat in a container. Not built in CI (no Docker engine there); the
# Debian package is what CI builds and tests (packaging/, .ci/deb.sh).
#
#   docker build -t keyseat .
#   docker run -d -p 8080:8080 -v keyseat-data:/data \
#     -e KEYSEAT_ADMIN_TOKEN="$(openssl rand -hex 32)" keyseat
#   docker exec -it CONTAINER keyseat keys create --label "first customer"

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --locked --release --bin keyseat

FROM debian:bookworm-slim
# ca-certificates: TLS to a PostgreSQL database with sslmode=verify-full.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --user-group --home-dir /data --shell /usr/sbin/nologin keyseat \
    && install -d -m 0750 -o keyseat -g keyseat /data
COPY --from=build /src/target/release/keyseat /usr/local/bin/keyseat
# Settings by environment (KEYSEAT_*; README, "Configuration"), the
# database on the volume. Mount a config file and set KEYSEAT_CONFIG for more.
ENV KEYSEAT_LISTEN=0.0.0.0:8080 \
    KEYSEAT_DATABASE=/data/keyseat.db
VOLUME /data
WORKDIR /data
USER keyseat
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["keyseat", "health", "--url", "http://127.0.0.1:8080", "--timeout", "4"]
ENTRYPOINT ["keyseat"]
CMD ["serve"]
