# syntax=docker/dockerfile:1
# Multi-stage: build the virtualenv with compilers available, ship a slim non-root runtime image.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /srv/deltaflow
RUN python -m venv /opt/venv
COPY pyproject.toml constraints.txt README.md ./
COPY app ./app
RUN /opt/venv/bin/pip install -c constraints.txt .

FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DELTAFLOW_HOST=0.0.0.0 \
    DELTAFLOW_PORT=8000
RUN useradd --system --uid 10001 --home-dir /srv/deltaflow deltaflow
WORKDIR /srv/deltaflow
COPY --from=build /opt/venv /opt/venv
# Migrations are read from the working directory (see app/core/migrations.py).
COPY alembic.ini ./
COPY migrations ./migrations
USER deltaflow
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=2s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"
STOPSIGNAL SIGTERM
CMD ["deltaflow", "serve", "--workers", "2"]
