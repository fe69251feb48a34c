# syntax=docker/dockerfile:1
# The flag service's image: API, evaluation endpoints and Admin UI in one container.
# Build: docker build -t yourorg/feature-flag-api .   Run: see docs/deployment.md.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt

FROM python:3.11-slim-bookworm AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000 \
    WEB_CONCURRENCY=2 \
    COLLECTSTATIC_ON_START=false
RUN groupadd --system --gid 10001 flags \
    && useradd --system --uid 10001 --gid flags --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin flags
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY . /app
# Static files are collected at build time and served by the app (WhiteNoise). Settings
# refuse to load in production without JWT_SECRET, so the build step alone gets a dummy one;
# the image carries no secret. The code stays root-owned; only var/ (SQLite) is writable.
RUN NODE_ENV=production JWT_SECRET=build-only-not-a-secret-0123456789abcdef \
    DB_URL=sqlite:////tmp/build.sqlite3 \
    python manage.py collectstatic --no-input --verbosity 0 \
    && rm -f /tmp/build.sqlite3 \
    && mkdir -p /app/var \
    && chown flags:flags /app/var \
    && chmod +x /app/deploy/entrypoint.sh
USER 10001:10001
EXPOSE 3000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '3000'), headers={'Host': 'localhost'}), timeout=4)"]
ENTRYPOINT ["/app/deploy/entrypoint.sh"]
CMD ["serve"]
