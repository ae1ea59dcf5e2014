# aisentinel developer entry points. On a fresh Debian 12 machine (as root):
#   make demo   - venv + install + run the daemon on a bundled attack scenario
#   make test   - install what the tests need (apt + venv) and run lint, types and tests
#                 (the suite runs twice: pure Python, then against `make compiled`)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMPS := .stamps
COMPILED := build/mypyc

# Debian packages the tests use for real (servers, firewall tools, compilers, packaging).
APT_TEST := python3-venv python3-pip python3-dev gcc pkg-config libsystemd-dev \
	nginx nftables python3-nftables libnftables1 fail2ban ufw iptables conntrack prometheus \
	prometheus-alertmanager iproute2 util-linux \
	systemd-journal-remote debootstrap lintian dpkg-dev fakeroot curl python3-pyinotify \
	python3-systemd \
	chromium openssl
# What `make demo` needs on a fresh machine.
APT_DEMO := python3-venv python3-pip

.PHONY: help demo test lint typecheck pytest pytest-compiled compiled deb bench accuracy clean \
	system-deps-test system-deps-demo

help:
	@echo "make demo | make test | make lint | make compiled | make deb | make bench | make accuracy | make clean"

# Installs the named Debian packages that are missing (root + apt-get only; never services).
define apt_install
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	  echo "missing Debian packages:$$missing (run as root on Debian to install them)"; exit 0; fi; \
	echo "installing:$$missing"; \
	apt-get update -q && DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 \
	  apt-get install -y -q --no-install-recommends $$missing
endef

system-deps-test:
	$(call apt_install,$(APT_TEST))

system-deps-demo:
	$(call apt_install,$(APT_DEMO))

$(STAMPS)/venv: pyproject.toml
	@mkdir -p $(STAMPS)
	@if ! $(PYTHON) -m venv --help >/dev/null 2>&1 || ! $(PYTHON) -c 'import ensurepip' 2>/dev/null; then \
	  echo "$(PYTHON) cannot make virtual environments; run as root to install python3-venv"; exit 1; fi
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	touch $@

$(STAMPS)/install-demo: $(STAMPS)/venv pyproject.toml
	$(PY) -m pip install -q -e .
	touch $@

$(STAMPS)/install-test: $(STAMPS)/venv pyproject.toml
	@extras="dev,docker"; \
	if pkg-config --exists libsystemd 2>/dev/null; then extras="$$extras,systemd"; fi; \
	echo "pip install -e .[$$extras]"; $(PY) -m pip install -q -e ".[$$extras]"
	touch $@ $(STAMPS)/install-demo

demo: system-deps-demo $(STAMPS)/install-demo
	$(VENV)/bin/aisentinel demo

lint: $(STAMPS)/install-test
	$(VENV)/bin/ruff check aisentinel tests bench
	$(VENV)/bin/ruff format --check aisentinel tests bench

typecheck: $(STAMPS)/install-test
	$(VENV)/bin/mypy

pytest: $(STAMPS)/install-test
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The mypyc-compiled hot modules (aisentinel.compiled.HOT_MODULES), built outside the
# source tree: build/mypyc holds a copy of the package plus the extension modules, and
# PYTHONPATH=build/mypyc runs it (`aisentinel --version` says which one runs). Needs
# gcc and the Python headers (python3-dev, in APT_TEST); fails if any module fails.
compiled: $(STAMPS)/install-test
	@$(PY) -c 'import setuptools' 2>/dev/null || $(PY) -m pip install -q setuptools
	$(PY) packaging/build_mypyc.py $(COMPILED)

# The same suite against the compiled build (tests/test_compiled.py fails if it is not the
# one imported); PYTHONSAFEPATH keeps `python -m aisentinel` run from the checkout (tests'
# subprocesses) off the pure package in the working directory. The .deb tests are left
# to the first run: they build their own package, compiled by build-deb.sh.
pytest-compiled: compiled
	PYTHONPATH=$(CURDIR)/$(COMPILED) PYTHONSAFEPATH=1 AISENTINEL_EXPECT_COMPILED=1 \
	  $(VENV)/bin/pytest --ignore=tests/test_packaging.py $(PYTEST_ARGS)

test: system-deps-test $(STAMPS)/install-test lint typecheck pytest pytest-compiled

deb: system-deps-test
	packaging/build-deb.sh

accuracy: $(STAMPS)/install-demo
	$(PY) bench/accuracy.py

bench: system-deps-test $(STAMPS)/install-demo
	$(PY) bench/accuracy.py
	$(PY) bench/throughput.py
	$(PY) bench/latency.py
	$(PY) bench/rss.py
	$(PY) bench/journal_rss.py
	$(PY) bench/journal_latency.py
	$(PY) bench/journal_latency.py --profile quiet
	$(PY) bench/memory.py

clean:
	rm -rf $(STAMPS) dist build *.egg-info .mypy_cache .ruff_cache .pytest_cache
