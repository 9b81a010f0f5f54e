# Two commands that work on a fresh machine: `make demo` and `make test`.
# Debian's python3 when present: jobs run as other Unix users, who cannot reach an interpreter under /root.
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench deps venv clean

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $(STAMP)

venv: $(STAMP)

# System packages the demo and tests need (Debian); a no-op when present.
deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }

test: deps $(STAMP)
	$(PY) -m pytest -q tests

demo: deps $(STAMP)
	$(PY) cli.py demo

bench: deps $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .localpool .demo
