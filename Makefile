# Two commands that work on a fresh machine: `make demo` and `make test`.
# Debian's python3 when present: jobs run as other Unix users, who cannot reach an interpreter under /root.
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)
# The venv is .venv, except in a checkout other Unix users cannot enter (a clone under /root, 0700)
# run as root: the jobs' users need its interpreter and packages, so it lives under /var/lib/htdask
# and .venv links to it (harness/venv_dir.py). Nothing else run as another user reads the checkout:
# the pool's programs are installed into each pool's directory (htdask_localpool/install.py).
VENV   := $(shell $(PYTHON) harness/venv_dir.py)
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test unit bench deps venv bytecode clean

# requirements.txt: the runtime (the production image installs only it); requirements-dev.txt: it plus
# the tests' and benchmarks' packages.
# pykerberos (requirements-dev.txt, the gateway's Kerberos login tests) is built against libkrb5-dev's krb5-config.
$(STAMP): requirements.txt requirements-dev.txt
	@command -v krb5-config >/dev/null 2>&1 || test "$$(id -u)" != 0 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libkrb5-dev; }
	test -x $(PY) || { mkdir -p -m 0755 $(dir $(VENV)) && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $(STAMP)

# .venv/bin/htdask: the command of the checkout at hand (harness/htdask), unless pip installed one.
venv: $(STAMP)
	test "$(VENV)" = .venv || ln -sfn $(VENV) .venv
	test -e $(VENV)/bin/htdask || install -m 0755 harness/htdask $(VENV)/bin/htdask

# System packages the demo and tests need (Debian); a no-op when present.
deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }
	@command -v redis-sentinel >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-sentinel; }
	@test "$$(id -u)" != 0 || command -v nft >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables iproute2; }
	@command -v faketime >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime; }
	@# the gateway's Kerberos login test: a KDC on loopback (krb5kdc, kdb5_util, kadmin.local, kinit)
	@test -x /usr/sbin/krb5kdc -a -x /usr/sbin/kadmin.local -a -x /usr/bin/kinit || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq krb5-kdc krb5-admin-server \
	    krb5-user libkrb5-dev; } || echo "krb5-kdc not installable; the Kerberos login test will skip"
	@# the gateway's JupyterHub login test: JupyterHub's proxy, from npm, under the venv (never global)
	@test -x $(VENV)/npm/node_modules/.bin/configurable-http-proxy || { command -v npm >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; } && \
	  mkdir -p -m 0755 $(VENV)/npm && npm install -s --no-audit --no-fund --prefix $(VENV)/npm \
	    configurable-http-proxy@5.3.0; } || echo "configurable-http-proxy not installable; the JupyterHub test will skip"
	@command -v kubectl >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client; } \
	  || echo "kubectl not installable; docs/deploy.md's kubectl commands will skip in the tests"

# Byte-compiled once: the local pool's condor_* programs start a Python process per call, and with
# PYTHONDONTWRITEBYTECODE set (as on some machines) each would otherwise compile its modules every time.
bytecode: venv
	$(PY) -m compileall -q htdask_localpool workers htdask tasks >/dev/null

test: deps bytecode
	$(PY) -m pytest -q tests

# The unit tier: the tests that need nothing (no redis-server, no root, no pool, no Celery process); the
# markers a test may need instead are in pytest.ini, derived in tests/conftest.py. Under a minute.
unit: venv
	$(PY) -m pytest -q -m unit tests

# KEEP=1: leave the stack running, print its URLs, passwords and how to stop it.
# Then the Kubernetes part (tests/k8s_demo.py, the stack of tests/k8s_stack.py): as root with Traefik and kmock
# (requirements-dev.txt), else one line says why it is skipped. With KEEP=1 it runs first: it keeps its stack in
# a background process and returns, while the parts above keep theirs in the foreground until Ctrl-C.
K8S_DEMO = $(PY) -m tests.k8s_demo --if-possible $(if $(KEEP),--keep)
demo: deps bytecode
	$(if $(KEEP),$(K8S_DEMO))
	$(PY) cli.py demo $(if $(KEEP),--keep)
	$(if $(KEEP),,$(K8S_DEMO))

# Writes the figures table of docs/benchmarks.md from this one run (the notes below it are kept);
# BENCH_WRITE= runs without writing, BENCH_NOTE=quiet says so in the table's header.
BENCH_WRITE ?= docs/benchmarks.md
bench: deps bytecode
	$(PY) bench/run_all.py $(if $(BENCH_WRITE),--write $(BENCH_WRITE)) $(if $(BENCH_NOTE),--note "$(BENCH_NOTE)")

clean:  # .venv only (when it is a link, the shared venv it points to stays)
	rm -rf .venv .pytest_cache .localpool .demo
