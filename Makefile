# Two commands do all setup (README): `make demo` and `make test`. Both are idempotent.
VENV := .venv
PYTHON ?= python3
APT_PACKAGES := dbus bluez mosquitto mosquitto-clients influxdb victoria-metrics tzdata
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-8)

.PHONY: demo test deps system-deps bench chaos clean

demo: deps
	$(VENV)/bin/posture demo

# Checks first (seconds), then the suite on parallel workers: most tests wait on real time (BLE, servers),
# so more workers than cores still shortens it. PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= 6
test: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup --no-loadscope-reorder

bench: deps
	$(VENV)/bin/pip install -q -e '.[bench]'
	$(VENV)/bin/python benchmarks/pipeline_throughput.py --write
	$(VENV)/bin/python benchmarks/ble_throughput.py --write
	$(VENV)/bin/python benchmarks/bridge_throughput.py --write
	$(VENV)/bin/python benchmarks/nudge_latency.py --write

# The soak and chaos run (docs/reliability.md): not part of `make test`; an hour by default.
CHAOS_ARGS ?= --sensors 5 --minutes 60 --seed 1
chaos: deps
	$(VENV)/bin/python benchmarks/chaos.py $(CHAOS_ARGS) --write

deps: system-deps $(STAMP)

# Debian packages: dbus (dbus-daemon), bluez (bluetoothctl), tzdata (the zone files $TZ names). Installed only when
# missing.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "make: as root, or install:$$missing" >&2; exit 1; fi; \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q --no-compile -e '.[test]'
	@# pip compiles on one core; compileall uses them all (10 s less on a fresh clone). A file it cannot compile
	@# (a package's test data for another Python) is harmless: Python compiles what it imports anyway.
	-$(VENV)/bin/python -m compileall -q -j 0 $(VENV)/lib >/dev/null 2>&1
	rm -f $(VENV)/.installed-*
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
