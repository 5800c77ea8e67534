# syntax=docker/dockerfile:1
# The coordinator (`cutover`): built from the workspace with the committed Cargo.lock, run as an
# unprivileged user on Debian slim. Build from the repository root:
#
#   docker build -f deploy/docker/coordinator.Dockerfile -t cutover-coordinator .
#
# The build context excludes target/ and .git (coordinator.Dockerfile.dockerignore, BuildKit).
# Not built in CI: no Docker there (deploy/README.md).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
# The generated gRPC code is committed: no protoc needed. SQLite is bundled (built with cc).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p cutover-coordinator \
    && install -D -m 0755 target/release/cutover /out/cutover

FROM debian:${DEBIAN_RELEASE}-slim
# CA roots for DNS provider APIs, status pages and webhooks over HTTPS. Add what your plan's
# `exec` steps run (openssh-client, rsync, …) in an image built FROM this one.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 cutover \
    && useradd --system --uid 10001 --gid cutover --home-dir /var/lib/cutover --shell /usr/sbin/nologin cutover \
    && install -d -o cutover -g cutover -m 0700 /var/lib/cutover /var/lib/cutover-probes
COPY --from=build /out/cutover /usr/local/bin/cutover
USER cutover:cutover
# Config at /etc/cutover/cutover.toml (mounted); its data_dir should be /var/lib/cutover (a volume:
# cutover.db, admin.token). Ports: 7443 probes, 7444 admin (keep it on 127.0.0.1 in the config and
# use `docker exec … cutover status`), 9464 /metrics.
VOLUME ["/var/lib/cutover"]
EXPOSE 7443 9464
STOPSIGNAL SIGTERM
ENTRYPOINT ["cutover"]
CMD ["serve", "--config", "/etc/cutover/cutover.toml"]
