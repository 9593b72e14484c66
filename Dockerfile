# One image for every role of integration-worker; the command picks the role:
#   integration-worker supervise   a replica (shard leases, account actors)
#   integration-worker gateway     the stateless webhook gateway
#   integration-worker api         the admin HTTP API
#   integration-worker migrate     apply database migrations (run once per release)
#   integration-worker doctor      the operator's audit
# The embedded Postgres/Redis (tests, demo) stay out: point IW_DATABASE_URL and IW_REDIS_URL at
# real servers.

# Build every wheel first, so the final image needs no compiler and no network.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
RUN pip wheel --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --create-home --uid 10001 worker
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links /wheels integration-worker && rm -rf /wheels
USER worker
# gateway, admin API, a replica's /metrics /healthz /readyz. aiomonitor stays on 127.0.0.1 in
# the container (no authentication, runs code): reach it with `docker exec` / `kubectl exec`.
EXPOSE 8080 8082 9108
STOPSIGNAL SIGTERM
CMD ["integration-worker", "supervise"]
