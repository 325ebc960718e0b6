# lpr-edge: `make demo` and `make test` do all set-up themselves on a fresh
# Debian/Ubuntu machine with Python 3.11+.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
MODELS := models/.fetched
DEMO_DIR ?= demo-out
# The demo ends by serving the in-car console over its hits this long (0: only print
# how to serve it).
DEMO_CONSOLE_SECONDS ?= 30

.PHONY: help demo test lint format models venv system-deps clean install uninstall

help:
	@echo "make demo   - set up, fetch models, run the pipeline on generated stills and a clip"
	@echo "make test   - set up, fetch models, make sure Mosquitto, ffmpeg and Chromium are present, run pytest"
	@echo "make lint   - ruff"
	@echo "make models - fetch and verify the model files"
	@echo "make install   - (root) install the systemd service: /opt/lpr-edge, /etc/lpr-edge, /var/lib/lpr-edge"
	@echo "                 WHEELS=DIR offline from prepared wheels; DESTDIR=DIR stage only"
	@echo "make uninstall - (root) remove it, keeping configuration and data unless PURGE=1"

venv: $(STAMP)

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "lpr-edge needs Python 3.11 or newer; set PYTHON=python3.11")'
	@$(PYTHON) -m venv $(VENV) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); \
	  else echo "cannot create a virtual environment: install python3-venv (apt-get install python3-venv)"; exit 1; fi; }
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

models: $(MODELS)

$(MODELS): $(STAMP) models/manifest.toml
	$(BIN)/lpr-edge models fetch
	@touch $@

# Tests run a real Mosquitto broker, real ffmpeg video streams and the consoles in a
# real headless Chromium (Debian's, driven by Playwright; never a downloaded browser).
# Install the missing Debian packages when root; otherwise say exactly what is missing.
system-deps:
	@missing=""; \
	command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v ffmpeg >/dev/null 2>&1 || missing="$$missing ffmpeg"; \
	command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	  || missing="$$missing postgresql"; \
	fonts=/usr/share/fonts/truetype; \
	[ -f $$fonts/dejavu/DejaVuSans-Bold.ttf ] && [ -f $$fonts/dejavu/DejaVuSansMono-Bold.ttf ] \
	  || missing="$$missing fonts-dejavu-core"; \
	[ -f $$fonts/dejavu/DejaVuSansCondensed-Bold.ttf ] || missing="$$missing fonts-dejavu-extra"; \
	[ -f $$fonts/wqy/wqy-zenhei.ttc ] || missing="$$missing fonts-wqy-zenhei"; \
	[ -z "$$missing" ] || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing the Debian package(s)$$missing (the tests start real brokers, databases, streams and browsers and draw plates in real fonts)"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "The tests need$$missing: sudo apt-get install$$missing" >&2; exit 1; \
	  fi; }

demo: $(MODELS)
	$(BIN)/python -m edge.bench.demo $(DEMO_DIR)
	$(BIN)/lpr-edge recognize --format hk $(DEMO_DIR)
	$(BIN)/lpr-edge replay --config $(DEMO_DIR)/edge.toml --camera front-left --out $(DEMO_DIR)/reads.jsonl $(DEMO_DIR)/dashcam.mp4
	$(BIN)/python -m edge.bench.demo --report $(DEMO_DIR) $(DEMO_CONSOLE_SECONDS)

test: $(MODELS) system-deps
	LPR_EDGE_TEST_REQUIRE_MODELS=1 $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check edge tests
	$(BIN)/ruff format --check edge tests

format: $(STAMP)
	$(BIN)/ruff format edge tests
	$(BIN)/ruff check --fix edge tests

# The vehicle install: its own virtual environment under /opt/lpr-edge, independent of
# $(VENV). Settings pass through: WHEELS, DESTDIR, PREFIX, SKIP_VENV, START, PURGE.
install:
	WHEELS="$(WHEELS)" DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" SKIP_VENV="$(SKIP_VENV)" \
	  START="$(START)" PYTHON="$(PYTHON)" bash systemd/install.sh

uninstall:
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" PURGE="$(PURGE)" bash systemd/uninstall.sh

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache build *.egg-info
