# One image for auth, backend and worker; compose picks the entrypoint.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY auth ./auth
COPY backend ./backend
COPY agents ./agents
COPY bridge ./bridge
COPY servicekit ./servicekit
COPY e2e ./e2e
RUN pip install . \
 && useradd --system --uid 10001 --home-dir /app app \
 && mkdir -p /data/keys && chown app /data/keys

USER app
EXPOSE 8000 8001
CMD ["python", "-m", "backend"]
