# One image for every role of integration-worker; the command picks the role:
#   integration-worker supervise   a replica (shard leases, account actors)
#   integration-worker gateway     the stateless webhook gateway
#   integration-worker api         the admin HTTP API
#   integration-worker migrate     apply database migrations (run once per release)
#   integration-worker doctor      the operator's audit
# The embedded Postgres/Redis (tests, demo) stay out: point IW_DATABASE_URL and IW_REDIS_URL at
# real servers.

# The build stage installs the runtime part of the lock (requirements/runtime.lock, every file
# checked against its hash) and the project into /opt/venv, through the same script the tests
# run; the final image copies that venv and needs no compiler, no pip and no network.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
RUN PYTHON=python3.11 sh deploy/install-runtime.sh /opt/venv /src

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
RUN useradd --create-home --uid 10001 worker
COPY --from=build /opt/venv /opt/venv
USER worker
# gateway webhooks, admin API, the ops port (/metrics /healthz /readyz of a replica or gateway). aiomonitor stays on 127.0.0.1 in
# the container (no authentication, runs code): reach it with `docker exec` / `kubectl exec`.
EXPOSE 8080 8082 9108
STOPSIGNAL SIGTERM
CMD ["integration-worker", "supervise"]
