# serin in a small image: built with the locked dependencies, run as a non-root user.
#   docker build -t serin .
#   docker run -v "$PWD/examples:/etc/serin:ro" serin run --config /etc/serin/quickstart.yaml
# docker-compose.yml builds it and runs the whole demo (serin, two app versions, load,
# Prometheus, Grafana).

FROM rust:1-bookworm AS build
# protoc: the etcd client of fleet mode compiles etcd's .proto files at build time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler=3.* \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# With fleet mode (`cluster` in the config; docs/config.md).
RUN cargo build --release --locked --features fleet --bin serin \
    && install -D -m 0755 target/release/serin /out/serin \
    && mkdir -p /out/state

# glibc and libgcc, no shell, user nonroot (uid 65532); serin needs nothing else (rustls,
# no OpenSSL).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/serin /usr/local/bin/serin
# The rollout state (state_dir in the config): owned by the user serin runs as, so a
# volume mounted here starts writable.
COPY --from=build --chown=65532:65532 /out/state /var/lib/serin
USER 65532:65532
# 8080: a listener as the configs in deploy/compose and examples/ name it;
# 9901: the admin API and /metrics (admin.listen).
EXPOSE 8080 9901
# `serin ready` asks the admin API on 127.0.0.1:9901 (or $SERIN_ADMIN) for /readyz and
# exits 0 on 200, so the admin listener can stay on loopback; `serin ready --live` asks
# /healthz.
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 CMD ["serin", "ready"]
ENTRYPOINT ["serin"]
CMD ["run", "--config", "/etc/serin/serin.yaml", "--log-format", "json"]
