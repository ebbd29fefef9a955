# sslzoo serving image. Thin on purpose: it runs the same install (`pip install .`) and the same
# command (`sslzoo serve`, via docker/entrypoint) that CI exercises directly.
#
# Build: docker build -t sslzoo .
#        behind a TLS-intercepting proxy (hospital networks, this one): put the corporate CA bundle
#        (PEM, *.crt) into docker/ca-certificates/ or point the build arg at another folder of the
#        context:   docker build --build-arg CA_CERTS_DIR=certs/ -t sslzoo .
# Run:   printf '%s\n' "$(python -c 'import secrets; print(secrets.token_urlsafe(32))')" > api-keys.txt
#        docker run --gpus all -p 8080:8080 -v $PWD/api-keys.txt:/run/secrets/sslzoo/api-keys:ro \
#               -e SSLZOO_API_KEYS_FILE=/run/secrets/sslzoo/api-keys sslzoo
#        (embedded default models; or mount your own: -v $PWD/models:/models:ro sslzoo \
#         --models nuclei=/models/nuclei lesion=/models/lesion embed=/models/embed evaluate)
# Clients send `Authorization: Bearer <key>`; GET /ping (health) and GET /metrics need no key. Without
# a key file the server writes one random key to /home/sslzoo/serve/api-keys.txt (docker exec ... cat).
#
# Debian bookworm ships Python 3.11 (sslzoo needs 3.11) and Java 17 (TorchServe); the torch wheels bring
# their own CUDA libraries, so a plain base serves `--gpus all` with the host's NVIDIA driver.
FROM debian:bookworm

ARG CA_CERTS_DIR=docker/ca-certificates
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    NO_ALBUMENTATIONS_UPDATE=1

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates python3 python3-venv openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*

# extra CA certificates (a corporate bundle) join the system store that pip, httpx and Java use
COPY ${CA_CERTS_DIR}/ /usr/local/share/ca-certificates/extra/
RUN update-ca-certificates
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

RUN useradd --create-home --uid 1000 sslzoo
WORKDIR /opt/sslzoo
COPY --chown=sslzoo:sslzoo . .
# hadolint ignore=DL3013
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --upgrade pip \
    && /opt/venv/bin/pip install -c constraints.txt .

# `sslzoo serve` settings: the front listens on all interfaces inside the container (TorchServe stays on
# 127.0.0.1); the model store, config.properties, generated keys and logs live in the user's home; this
# source tree's handlers/ and docker/config.properties are used.
ENV PATH=/opt/venv/bin:$PATH \
    SSLZOO_SERVE_HOST=0.0.0.0 \
    SSLZOO_SERVE_WORKDIR=/home/sslzoo/serve \
    SSLZOO_HANDLERS_DIR=/opt/sslzoo/handlers \
    SSLZOO_TS_CONFIG=/opt/sslzoo/docker/config.properties

USER 1000:1000
EXPOSE 8080
# /ping is true (200 only when every model has a live worker) and needs no key
HEALTHCHECK --interval=30s --timeout=10s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/ping' % os.environ.get('SSLZOO_SERVE_PORT', '8080'), timeout=5)"]
ENTRYPOINT ["/opt/sslzoo/docker/entrypoint"]
