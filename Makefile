# `make demo` and `make test` work on a fresh machine with only Python and the package
# registries: they create the virtualenv and install what each needs first.
#   make demo       what the demo needs (taskscope + Parsl), then the demo
#   make test       everything the suite needs (test tools, docs tools, Chromium), the docs
#                   build, the whole suite and beside it the Python 3.12/3.13 checks
#   make test-fast  the suite without the tests marked slow (the inner loop)
#   make docs       the documentation site, built strictly into site/
# test and test-fast run the suite on PYTEST_WORKERS pytest-xdist workers: most tests wait (real
# runs, servers, a browser) rather than compute, so even 2 cores gain; PYTEST_WORKERS=0 runs it in
# one process. Each test file stays on one worker (--dist loadfile), so a module's fixtures are made
# once; the fresh runs that several files share are made once for all workers (tests/conftest.py).
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip install -q --disable-pip-version-check
# Parsl starts interchange.py / process_worker_pool.py by name: use the virtualenv's
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

PYTEST_WORKERS ?= 4
PYTEST  := $(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile

# the tests that also run on every other supported Python (see tests/pythons.sh)
PYTHONS_TESTS ?= tests/test_emit.py tests/test_emit_robustness.py tests/test_emit_spans.py \
                 tests/test_fast_logger.py tests/test_corpus.py tests/test_cli_and_api.py

.PHONY: demo test test-fast test-pythons docs bench clean

$(VENV)/bin/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	    echo "python venv module missing: installing python3-venv"; \
	    apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }

# what the demo needs: the package and Parsl, no browser, no test tools
$(VENV)/.installed-demo: pyproject.toml | $(VENV)/bin/python
	$(PIP) -e ".[parsl]"
	@touch $@

# what the suite needs on top: test tools, docs tools, PNG export, fleet
$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed-demo
	$(PIP) -e ".[all]"
	@touch $@

# Playwright (web UI tests) and kaleido (PNG plots) drive Debian's Chromium; only `make test` installs it
/usr/bin/chromium:
	@echo "chromium missing: installing Debian's chromium (for the web UI tests)"
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	 else sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; fi

demo: $(VENV)/.installed-demo
	$(PY) -m taskscope.demo --workdir demo-run

docs: $(VENV)/.installed-test
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir site

# the 3.12/3.13 checks run beside the main suite (both mostly wait); their output follows the suite's
# tests marked `alone` measure what a process keeps up with (a receiver beside busy threads):
# they run first, in one process, with nothing of the suite beside them
test: $(VENV)/.installed-test /usr/bin/chromium docs
	@echo "$(PY) -m pytest -q -n 0 -m alone"; $(PY) -m pytest -q -n 0 -m alone; alone=$$?; \
	log=$$(mktemp); bash tests/pythons.sh $(PYTHONS_TESTS) > $$log 2>&1 & pythons=$$!; \
	echo "$(PYTEST) -m 'not alone'"; $(PYTEST) -m "not alone"; suite=$$?; \
	wait $$pythons; others=$$?; cat $$log; rm -f $$log; \
	[ $$alone = 0 ] && [ $$suite = 0 ] && [ $$others = 0 ]

test-fast: $(VENV)/.installed-test /usr/bin/chromium
	$(PY) -m pytest -q -n 0 -m "alone and not slow"
	$(PYTEST) -m "not slow and not alone"

test-pythons: $(VENV)/.installed-test
	@bash tests/pythons.sh $(PYTHONS_TESTS)

bench: $(VENV)/.installed-test
	$(PY) benchmarks/ingest_bench.py

clean:
	rm -rf demo-run site .pytest_cache .venv-py*
