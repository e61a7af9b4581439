# syntax=docker/dockerfile:1
#
# zoomhook in a container: built with the Rust image, run on debian:bookworm-slim (same glibc
# as the build stage) as an unprivileged user, with the SQLite event log on a volume.
#
#   docker build -t zoomhook .
#   docker run -d --name zoomhook -p 8080:8080 -v zoomhook-data:/var/lib/zoomhook \
#     -e ZOOM_WEBHOOK_SECRET_TOKEN=... zoomhook
#
# docs/deploy.md explains the choices; compose.yaml runs it with PostgreSQL.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /build
# Only what the binary is built from: the migrations are embedded with include_str!.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
# Cache mounts keep the crate registry and compiled dependencies between builds; the binary is
# copied out of the cached target directory because the cache is not part of the image.
# Symbols are stripped to keep the image small; panics still print their message.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/build/target,sharing=locked \
    CARGO_PROFILE_RELEASE_STRIP=symbols cargo build --release --locked --bin zoomhook \
    && install -D -m 0755 target/release/zoomhook /out/zoomhook

FROM debian:bookworm-slim
# A fixed numeric id, so volume ownership survives rebuilds and Kubernetes' runAsNonRoot can
# check it. TLS roots are compiled into the binary (webpki-roots), so no ca-certificates.
RUN groupadd --system --gid 10001 zoomhook \
    && useradd --system --uid 10001 --gid zoomhook --home-dir /var/lib/zoomhook \
        --no-create-home --shell /usr/sbin/nologin zoomhook \
    && install -d -m 0700 -o zoomhook -g zoomhook /var/lib/zoomhook
COPY --from=build /out/zoomhook /usr/local/bin/zoomhook
COPY zoomhook.example.toml /usr/share/doc/zoomhook/zoomhook.example.toml

# Reachable through the published port (inside a container, 127.0.0.1 is the container itself).
ENV ZOOMHOOK_LISTEN=0.0.0.0:8080
# The event log on the volume; set a postgres:// URL to use PostgreSQL instead.
ENV ZOOMHOOK_DATABASE_URL=sqlite:///var/lib/zoomhook/zoomhook.db
# Logs go to stderr for `docker logs`; plain text, no colour codes.
ENV ZOOMHOOK_LOG=info
ENV NO_COLOR=1

USER 10001:10001
WORKDIR /var/lib/zoomhook
VOLUME ["/var/lib/zoomhook"]
EXPOSE 8080

# The image has no curl: `zoomhook health` asks /readyz at the configured listen address and
# exits non-zero unless the store is reachable and the committer is running. It reads the same
# ZOOMHOOK_* variables as the server, so set a configuration file with ZOOMHOOK_CONFIG (not
# with --config after `serve`) for both to see it.
HEALTHCHECK --interval=30s --timeout=6s --start-period=30s --retries=3 \
    CMD ["zoomhook", "health", "--timeout", "5s"]

# SIGTERM (docker stop) ends `serve` cleanly: it stops accepting and commits what is in flight
# within shutdown_timeout (30 s); give `docker stop` a --time above that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["zoomhook"]
CMD ["serve"]
