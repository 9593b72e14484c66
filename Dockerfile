# Production image: the worker without embedded database servers, run as a non-root user.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 worker
WORKDIR /app

COPY pyproject.toml README.md ./
COPY actors ./actors
COPY config ./config
COPY gateway ./gateway
COPY providers ./providers
COPY store ./store
COPY supervisor ./supervisor
RUN pip install . && rm -rf /app/build

USER worker
# aiomonitor stays on 127.0.0.1 inside the container; reach it with `docker exec`.
CMD ["integration-worker", "supervise"]
