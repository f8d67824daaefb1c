# minerva-ai service image: multi-stage, slim, non-root.
# Runs against external PostgreSQL and Redis given as DATABASE_URL and REDIS_URL; apply
# migrations first with the same image: `docker run --rm -e DATABASE_URL=... IMAGE minerva-ai server migrate`.

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml setup.cfg README.md ./
COPY minerva_ai ./minerva_ai
COPY commands ./commands
RUN python -m venv /opt/minerva \
    && /opt/minerva/bin/pip install --no-compile ".[server]"

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="minerva-ai" \
      org.opencontainers.image.description="Management plane for AI features in production"
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin minerva
COPY --from=build /opt/minerva /opt/minerva
ENV PATH=/opt/minerva/bin:$PATH \
    PYTHONUNBUFFERED=1
USER 10001
EXPOSE 8765
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8765/api/health', timeout=2)"]
CMD ["minerva-ai", "server", "start", "--host", "0.0.0.0", "--port", "8765"]
