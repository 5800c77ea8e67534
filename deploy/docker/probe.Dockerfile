# syntax=docker/dockerfile:1
# A probe (`cutover-probe`): built from the workspace with the committed Cargo.lock, run as an
# unprivileged user on Debian slim. It opens no port. Build from the repository root:
#
#   docker build -f deploy/docker/probe.Dockerfile -t cutover-probe .
#   docker run --rm cutover-probe --coordinator https://coord.example.org:7443 --token … \
#     --region asia --allow-domain elm-lang.org --allow-domain github.com
#
# (the probe refuses to start without --allow-domain; better, mount the state directory that
# `cutover-probe setup` wrote, which keeps the token out of `docker inspect`: docs/volunteers.md).
# Not built in CI: no Docker there (deploy/README.md).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p cutover-probe \
    && install -D -m 0755 target/release/cutover-probe /out/cutover-probe

FROM debian:${DEBIAN_RELEASE}-slim
# CA roots: the coordinator's certificate and the checked sites' are verified against them.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 cutover \
    && useradd --system --uid 10001 --gid cutover --no-create-home --shell /usr/sbin/nologin cutover
COPY --from=build /out/cutover-probe /usr/local/bin/cutover-probe
USER cutover:cutover
STOPSIGNAL SIGTERM
ENTRYPOINT ["cutover-probe"]
