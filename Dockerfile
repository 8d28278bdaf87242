# podworker's production pod image: the worker, its dependencies with a CUDA build of torch, and
# Stable Diffusion weights baked in at build time, so that a cold start downloads nothing.
#
#   DOCKER_BUILDKIT=1 docker build -t podworker:sd15 \
#     --build-arg MODEL_ID=stable-diffusion-v1-5/stable-diffusion-v1-5 \
#     --build-arg MODEL_REVISION=<a commit of that repo, for a reproducible image> \
#     --secret id=hf_token,env=HF_TOKEN \
#     .
#
# The secret is only needed for gated or private models; it is never stored in a layer. Behind
# a TLS-inspecting proxy, also pass the machine's CA bundle (also only mounted, never stored):
#     --secret id=ca_certs,src=/etc/ssl/certs/ca-certificates.crt
# No `# syntax=` line on purpose: it would make BuildKit fetch its Dockerfile frontend from a
# registry, which an air-gapped or proxied build cannot reach; Docker's built-in frontend (20.10
# and later) handles the cache, bind and secret mounts used here.
#
# Stages:
#   build-inputs  what the build context brings instead of the network (see below); usually empty
#   base          Python 3.11, a CUDA build of torch, the locked dependencies (requirements.lock)
#                 in cached layers that change only when the lock or the torch arguments change
#   weights       `python -m app bake-weights`: downloads the model once (or takes a folder of
#                 the build context), saves it to /models/sd and loads it back through the
#                 worker's own code (a broken bake fails the build)
#   worker        base + the code, no weights: what your own model's or RunPod handler's image
#                 is built FROM (`--target worker`)
#   runtime       base + the baked weights + the code, run by a non-root user (the final image)
#
# Why python:3.11-slim and not an nvidia/cuda runtime image: PyTorch's CUDA wheels bring their
# own CUDA runtime, cuBLAS and cuDNN as pip packages (nvidia-*), and torch loads those, never the
# system's, so an nvidia/cuda base would ship a second, unused CUDA of several GB. All that a
# CUDA wheel needs from the host is the NVIDIA driver, which the NVIDIA container runtime mounts
# in when NVIDIA_VISIBLE_DEVICES and NVIDIA_DRIVER_CAPABILITIES are set (set below, as the CUDA
# images do). The official Python image also brings the latest 3.11 patch release, no PPA.
# BASE_IMAGE may name another Debian bookworm image with python (as `python`), venv and the
# Python headers; the image test (tests/image) builds on one made with debootstrap.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# The model baked into the image: a hub id, or a diffusers pipeline folder of the build context
# under build-inputs/ (MODEL_ID=build-inputs/NAME). Pin MODEL_REVISION to a commit for an image
# that can be built again identically.
ARG MODEL_ID=stable-diffusion-v1-5/stable-diffusion-v1-5
ARG MODEL_REVISION=main
# fp16: download the repo's half-precision files (half the download); empty for repos without
# that variant. MODEL_DTYPE is the dtype saved: the worker loads float16 on a GPU anyway.
ARG MODEL_VARIANT=fp16
ARG MODEL_DTYPE=float16


# build-inputs/ of the build context (the one folder besides the project's files that
# .dockerignore lets through; not in git): a pipeline folder to bake and a folder of torch
# wheels, for builds that must not or cannot download them (the image test's CPU build).
# Without it this stage holds only pyproject.toml (COPY needs one source that exists), and the
# later stages take nothing from it. It is only ever bind-mounted, never copied into a layer.
FROM scratch AS build-inputs
COPY pyproject.toml build-input[s] /build-inputs/


FROM ${BASE_IMAGE} AS base

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv

# torch first, from PyTorch's CUDA index, so that nothing later brings a CPU build. The
# version is the one the test suite runs on; the CUDA build needs a host driver that supports
# it (cu128: NVIDIA driver 570 or newer; on RunPod, filter pods by CUDA version). For older
# drivers: --build-arg TORCH_VERSION=2.6.0 --build-arg TORCH_INDEX_URL=.../whl/cu124.
# TORCH_WHEEL_DIR instead names a folder of wheels in the build context holding torch and its
# dependencies (`pip download torch==2.13.0 -d build-inputs/torch-wheels`), installed with no
# index at all: the image test installs torch's CPU build that way.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG TORCH_WHEEL_DIR=
# ca_certs, when given, is the CA bundle pip trusts (a TLS-inspecting proxy's CA in it).
WORKDIR /build
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=bind,from=build-inputs,source=/build-inputs,target=/build/build-inputs \
    --mount=type=secret,id=ca_certs \
    if [ -s /run/secrets/ca_certs ]; then export PIP_CERT=/run/secrets/ca_certs; fi \
    && if [ -n "${TORCH_WHEEL_DIR}" ]; then \
        pip install "torch==${TORCH_VERSION}" --no-index --find-links "${TORCH_WHEEL_DIR}"; \
    else \
        pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"; \
    fi

# The project's dependencies (core, s3, sd, redis) from requirements.lock: every package pinned,
# with its hashes, so that a build months later installs the same files or fails. --no-deps: the lock
# is the whole set, and it leaves out torch (and what only torch needs), so the torch installed
# above stays; `pip check` proves the two agree. `make lock` updates the lock from pyproject.toml.
COPY requirements.lock ./
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=ca_certs \
    if [ -s /run/secrets/ca_certs ]; then export PIP_CERT=/run/secrets/ca_certs; fi \
    && pip install --require-hashes --no-deps -r requirements.lock \
    && pip check


FROM base AS weights
ARG MODEL_ID
ARG MODEL_REVISION
ARG MODEL_VARIANT
ARG MODEL_DTYPE
# Only the modules `python -m app bake-weights` imports (a test keeps this list complete), so
# that a change elsewhere in the code does not bake again.
WORKDIR /build
COPY domain ./domain
COPY adapters/__init__.py ./adapters/
COPY adapters/http ./adapters/http
COPY adapters/stable_diffusion ./adapters/stable_diffusion
COPY app/__init__.py app/__main__.py app/cli.py app/signals.py app/bake.py ./app/
# The hub's download cache is a BuildKit cache mount: kept between builds (a rebuild does not
# download again), never in the image. The token secret is mounted only for this step, and so is
# build-inputs/ (where a MODEL_ID of the form build-inputs/NAME is found, relative to /build).
RUN --mount=type=secret,id=hf_token \
    --mount=type=secret,id=ca_certs \
    --mount=type=cache,target=/root/.cache/huggingface \
    --mount=type=bind,from=build-inputs,source=/build-inputs,target=/build/build-inputs \
    if [ -s /run/secrets/ca_certs ]; then \
        export SSL_CERT_FILE=/run/secrets/ca_certs REQUESTS_CA_BUNDLE=/run/secrets/ca_certs; \
    fi \
    && python -m app bake-weights \
        --model "$MODEL_ID" \
        --revision "$MODEL_REVISION" \
        --variant "$MODEL_VARIANT" \
        --dtype "$MODEL_DTYPE" \
        --dest /models/sd \
        --cache-dir /root/.cache/huggingface/hub \
        --token-file /run/secrets/hf_token


# worker: the base for your own model (MODEL=module:factory) or a RunPod SDK handler file
# (python -m app handler handler.py): base + podworker's code, and no Stable Diffusion weights.
#   DOCKER_BUILDKIT=1 docker build --target worker -t REGISTRY/podworker:worker .
# Build your image FROM it (README, "Already have a RunPod handler?"). Its system packages, user,
# state folder, health check and entry point are the runtime stage's below, line for line (a test
# keeps them so; BuildKit builds the shared lines once); only MODEL differs: echo, until you name
# yours or run a handler. No offline switches: a handler may fetch what it needs at run time.
FROM base AS worker
# DL3008 (pin apt package versions) is ignored: the base image's tag pins the Debian release,
# and exact Debian revisions leave the archive with security updates (as in the runtime stage).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini gcc g++ libc6-dev \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 --shell /usr/sbin/nologin podworker \
    && install -d -o podworker -g podworker -m 0750 /var/lib/podworker
WORKDIR /app
COPY domain ./domain
COPY adapters ./adapters
COPY app ./app
COPY streamqueue ./streamqueue
RUN python -m compileall -q domain adapters app streamqueue
ENV PYTHONPATH=/app \
    MODEL=echo \
    STATE_DIR=/var/lib/podworker \
    OUTPUT_DIR=/var/lib/podworker/outputs \
    LOG_FORMAT=json \
    HEALTH_PORT=8080 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
USER 1000:1000
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('HEALTH_PORT', '8080') + '/health', timeout=4)"]
ENTRYPOINT ["tini", "--", "python", "-m", "app"]
CMD ["run"]


FROM base AS runtime

# tini is PID 1: it forwards SIGTERM/SIGINT to the worker and reaps orphaned processes
# (torch.compile's workers). With python itself as PID 1, a signal that arrives before the
# worker installs its handlers (during the imports) would be ignored, since the kernel applies
# no default action to PID 1, and `docker stop` would wait for its SIGKILL.
# gcc, g++ and the C library's headers: torch.compile's Inductor builds its CPU kernels and
# Triton its GPU kernel launchers with them at run time (MODEL_COMPILE=true); without a compiler
# compile fails on the pod. The Python headers they also need come with the base image.
# The worker's user (uid 1000) owns STATE_DIR (outbox and running-job marks) and nothing else;
# the weights and the code stay root's, read-only to it.
# DL3008 (pin apt package versions) is ignored: the base image's tag pins the Debian release,
# and pinning tini's exact Debian revision would break the build when a security update
# replaces that revision in the archive (the same for gcc and g++).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini gcc g++ libc6-dev \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 --shell /usr/sbin/nologin podworker \
    && install -d -o podworker -g podworker -m 0750 /var/lib/podworker

COPY --from=weights /models /models

WORKDIR /app
COPY domain ./domain
COPY adapters ./adapters
COPY app ./app
COPY streamqueue ./streamqueue
COPY test_inputs.json ./
RUN python -m compileall -q domain adapters app streamqueue

# PYTORCH_CUDA_ALLOC_CONF: expandable segments let the CUDA caching allocator grow blocks in
# place instead of leaving fragments when image sizes vary from job to job (fewer out-of-memory
# errors with memory to spare). It changes nothing on a CPU.
# MODEL_PATH: the baked folder, loaded with local files only; the offline switches make sure
# no library reaches for the hub at run time. MODEL_DEVICE=cuda: a pod without a usable GPU
# fails at start (exit code 4) instead of running Stable Diffusion on its CPU.
ENV PYTHONPATH=/app \
    MODEL=stable_diffusion \
    MODEL_PATH=/models/sd \
    MODEL_DEVICE=cuda \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    STATE_DIR=/var/lib/podworker \
    OUTPUT_DIR=/var/lib/podworker/outputs \
    LOG_FORMAT=json \
    HEALTH_PORT=8080 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True

# By number, so that a runtime can check it is not root (Kubernetes' runAsNonRoot).
USER 1000:1000
EXPOSE 8080
# /health answers 200 while the worker is ready or busy, 503 while it starts (loading the
# model) or drains; the start period covers loading and warming up the model.
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('HEALTH_PORT', '8080') + '/health', timeout=4)"]
ENTRYPOINT ["tini", "--", "python", "-m", "app"]
CMD ["run"]

# Last, so that another model id or revision (or the image test's token check, which bakes again
# under a revision of its own) rebuilds no layer above.
ARG MODEL_ID
ARG MODEL_REVISION
LABEL org.opencontainers.image.title="podworker" \
      org.opencontainers.image.description="Self-managing RunPod job worker: Stable Diffusion on diffusers, images to S3, results that are never lost." \
      org.opencontainers.image.licenses="MIT" \
      podworker.model.id="${MODEL_ID}" \
      podworker.model.revision="${MODEL_REVISION}" \
      podworker.model.path="/models/sd"

