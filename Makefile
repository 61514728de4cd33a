# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: run test install browser compose-check clean bench

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# torch first and pinned: a bare `torch` requirement may pull a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[model,test]'
	touch $(STAMP)

install: $(STAMP)

# Debian's Chromium for the page's browser tests (never a downloaded browser).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing and cannot be installed here: browser tests will be skipped"; fi; \
	fi

# Debian's docker-compose validates compose.yaml in the tests (no Docker engine is needed for that).
compose-check:
	@if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null; \
	  else echo "docker-compose missing and cannot be installed here: compose.yaml validation will be skipped"; fi; \
	fi

run: $(STAMP)
	$(VENV)/bin/reel serve

test: $(STAMP) browser compose-check
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PIP) install --quiet -e '.[model,bench]'
	$(PY) benchmarks/sampler.py

clean:
	rm -rf $(VENV) reel-data test-artifacts
