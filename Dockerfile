# The lookalike app (gunicorn + the JSON API + the web page) and, with another command, the indexer.
# docker-compose.yml runs both next to Elasticsearch; docs/elasticsearch.md explains the set-up.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Dependencies first: this layer is rebuilt only when requirements.txt changes.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
# Then the project itself, as `make install` does (the lock is already in place: no dependency is resolved).
RUN pip install --no-deps . \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin lookalike \
    && mkdir -p /data \
    && chown lookalike:lookalike /data
USER lookalike

# Inside the container the app must listen on all interfaces; docker-compose.yml publishes the
# port on the host's loopback only.
ENV HOST=0.0.0.0 \
    PORT=8000 \
    LOOKALIKE_DATA_DIR=/data
EXPOSE 8000
CMD ["lookalike", "serve"]
