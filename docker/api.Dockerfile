# The HTTP API: FastAPI under uvicorn. No torch, no model, no weights: the API
# only writes job records to Redis and sends tasks by name, so this image stays
# a few hundred MB and starts in a second.
#
#   docker build -f docker/api.Dockerfile -t reel-api .
#   docker run -e REEL_REDIS_URL=redis://host:6379/0 -p 8000:8000 reel-api

FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin reel

WORKDIR /opt/reel

# Dependencies first, read from pyproject.toml, so that a code change does not
# reinstall them. Only the base list: the `model` extra (torch) is never installed.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# The app package is all the API runs; worker/ and model/ are not copied, so an
# import of either fails loudly instead of pulling torch in by accident.
COPY app/ app/
RUN pip install --no-deps -e . \
 && mkdir -p /data && chown reel:reel /data

USER reel
ENV REEL_DATA_DIR=/data
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]

CMD ["reel", "api", "--host", "0.0.0.0", "--port", "8000"]
