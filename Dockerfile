# agent-api: a slim image running the API under uvicorn, as a non-root user.
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, in their own layer: it is rebuilt only when pyproject.toml changes. The
# placeholder package and everything its build left behind go: setuptools would otherwise reuse
# the stale build/ (newer than the sources COPY brings) and install the empty package.
COPY pyproject.toml README.md ./
RUN mkdir agent_api && touch agent_api/__init__.py \
    && pip install . \
    && pip uninstall -y agent-api \
    && rm -rf agent_api build *.egg-info

COPY agent_api ./agent_api
RUN pip install --no-deps . \
    && rm -rf build *.egg-info \
    && python -c "import agent_api; print('agent-api', agent_api.__version__)" \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin agent

USER agent

# Listen on all interfaces inside the container; the compose file publishes the port.
ENV HOST=0.0.0.0 \
    PORT=8000 \
    WORKERS=2 \
    LOG_FORMAT=json

EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/health/ready', timeout=4)"

# agent-api serve reads HOST, PORT and WORKERS from the environment.
CMD ["agent-api", "serve"]
