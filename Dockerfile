# podworker pod image (first version: a later change bakes weights in and adds a health check).
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md ./
COPY domain ./domain
COPY adapters ./adapters
COPY app ./app
RUN pip install ".[s3,sd]"

RUN useradd --create-home --uid 1000 podworker && mkdir -p /var/lib/podworker \
    && chown podworker /var/lib/podworker
USER podworker
ENV STATE_DIR=/var/lib/podworker LOG_FORMAT=json
ENTRYPOINT ["python", "-m", "app"]
CMD ["run"]
