# Prometheus for docker-compose.yml under podman where prom/prometheus cannot be pulled: Debian's
# own package (2.42, the version the monitoring tests use) in the locally bootstrapped base.
# deploy/containers/podman.yml points the prometheus service at it; docker-compose.yml itself
# keeps the upstream image. Built by deploy/containers/images.sh.
ARG BASE_IMAGE=localhost/debian:bookworm-local
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends prometheus curl ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /prometheus && chown prometheus:prometheus /prometheus
LABEL org.opencontainers.image.title="tributary-prometheus" \
      org.opencontainers.image.description="Debian's Prometheus, for Tributary's compose stack under podman" \
      org.opencontainers.image.source="https://github.com/tributary/tributary" \
      org.opencontainers.image.licenses="Apache-2.0"
USER prometheus
EXPOSE 9090
HEALTHCHECK --interval=10s --timeout=5s --retries=6 \
  CMD curl -fsS -o /dev/null http://127.0.0.1:9090/-/ready || exit 1
ENTRYPOINT ["/usr/bin/prometheus"]
