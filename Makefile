# `make demo` and `make test` work on a fresh machine with only Python: they create the
# virtualenv and install everything first.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
# Parsl starts interchange.py / process_worker_pool.py by name: use the virtualenv's
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup demo test bench clean

setup: $(VENV)/.installed /usr/bin/chromium

# PNG plots (kaleido) and the web UI tests (Playwright) drive Debian's Chromium
/usr/bin/chromium:
	@echo "chromium missing: installing Debian's chromium"
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	 else sudo apt-get update -qq && sudo apt-get install -y -qq chromium; fi

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	    echo "python venv module missing: installing python3-venv"; \
	    apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[all]"
	@touch $@

demo: setup
	$(PY) -m taskscope.demo --workdir demo-run

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/ingest_bench.py

clean:
	rm -rf demo-run .pytest_cache
