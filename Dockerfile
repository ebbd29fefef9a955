# sslzoo GPU serving image. Thin on purpose: it runs the same install (`pip install .`) and the same
# command (`sslzoo serve`, via docker/entrypoint) that CI exercises directly.
# Build: docker build -t sslzoo .    Run: docker run --gpus all -p 8080:8080 sslzoo
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    NO_ALBUMENTATIONS_UPDATE=1

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv openjdk-17-jre-headless curl \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 sslzoo
WORKDIR /opt/sslzoo
COPY --chown=sslzoo:sslzoo . .
RUN python3.11 -m venv /opt/venv && /opt/venv/bin/pip install --upgrade pip && /opt/venv/bin/pip install .
ENV PATH=/opt/venv/bin:$PATH

USER sslzoo
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s CMD curl -fsS http://127.0.0.1:8080/ping || exit 1
ENTRYPOINT ["/opt/sslzoo/docker/entrypoint"]
