# syntax=docker/dockerfile:1.7
# RetNet Service image: API and workers (same image, different commands).
#   docker build -t retnet-service .                                  # CPU torch (default)
#   docker build -t retnet-service:cuda --build-arg TORCH_INDEX=cu124 .  # CUDA torch
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update && apt-get install -y --no-install-recommends curl libgomp1 \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 1000 retnet
WORKDIR /app

# Torch first, from the CPU (default) or a CUDA wheel index, so the project install does not pull the CUDA build.
ARG TORCH_INDEX=cpu
ARG TORCH_VERSION=2.13.*
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install "torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH_INDEX}"

# Dependencies and the `ops` extra (Flower, for the compose service `flower`) as a cached layer, then the project.
COPY pyproject.toml README.md ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c "import tomllib; p=tomllib.load(open('pyproject.toml','rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['ops']))" \
      > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt
COPY app ./app
COPY worker ./worker
COPY models ./models
COPY migrations ./migrations
RUN pip install --no-deps . && python -m compileall -q app worker models migrations

ENV RETNET_DATA_DIR=/data
RUN mkdir -p /data && chown retnet:retnet /data
VOLUME ["/data"]
USER retnet
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8000/health || exit 1
# Default: the API (embedded mode unless RETNET_BROKER_URL is set). Workers: `retnet worker -Q voxels` etc.
CMD ["retnet", "serve", "--host", "0.0.0.0", "--port", "8000"]
