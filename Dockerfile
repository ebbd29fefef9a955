# sslzoo GPU serving image. Thin on purpose: it runs the same install (`pip install .`) and the same
# command (`sslzoo serve`, via docker/entrypoint) that CI exercises directly.
#
# Build: docker build -t sslzoo .
# Run:   docker run --gpus all -p 8080:8080 -p 8082:8082 sslzoo
#        (embedded default models; or mount your own: -v $PWD/models:/models:ro sslzoo \
#         --models nuclei=/models/nuclei lesion=/models/lesion embed=/models/embed evaluate)
# Token auth is on: the inference key is in /home/sslzoo/serve/key_file.json inside the container
#        (docker exec <id> cat /home/sslzoo/serve/key_file.json); send `Authorization: Bearer <key>`.
# Clients must send a Content-Type with binary bodies (TorchServe answers 500 to
# application/x-www-form-urlencoded binary bodies, curl's --data-binary default).
#
# Ubuntu 22.04 ships Python 3.11 (sslzoo needs 3.11); the torch wheels bring their own CUDA libraries,
# the base image brings cuDNN/driver compatibility for `--gpus all`.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    NO_ALBUMENTATIONS_UPDATE=1

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 sslzoo
WORKDIR /opt/sslzoo
COPY --chown=sslzoo:sslzoo . .
# hadolint ignore=DL3013
RUN python3.11 -m venv /opt/venv && /opt/venv/bin/pip install --upgrade pip && /opt/venv/bin/pip install .

# `sslzoo serve` settings: listen on all interfaces inside the container, keep the model store,
# config.properties, key_file.json and logs in the user's home, use this source tree's handlers/ and
# docker/config.properties.
ENV PATH=/opt/venv/bin:$PATH \
    SSLZOO_SERVE_HOST=0.0.0.0 \
    SSLZOO_SERVE_WORKDIR=/home/sslzoo/serve \
    SSLZOO_HANDLERS_DIR=/opt/sslzoo/handlers \
    SSLZOO_TS_CONFIG=/opt/sslzoo/docker/config.properties

USER 1000:1000
EXPOSE 8080 8082
# /ping needs the inference key when token auth is on (TorchServe 0.12)
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s \
    CMD ["python", "-c", "import json, urllib.request as r; k = json.load(open('/home/sslzoo/serve/key_file.json'))['inference']['key']; r.urlopen(r.Request('http://127.0.0.1:8080/ping', headers={'Authorization': 'Bearer ' + k}), timeout=5)"]
ENTRYPOINT ["/opt/sslzoo/docker/entrypoint"]
