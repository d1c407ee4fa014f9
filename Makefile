# `make run` starts the whole platform locally; `make test` runs the test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: run test down status deps check-defs clean

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[test]'
	touch $@

deps: $(VENV)/.installed
	deploy/install-system-deps.sh
	$(PY) -c 'from iot_platform.stack.kafka import kafka_classpath; kafka_classpath()'
	$(PY) -m iot_platform_tests.kubernetes_schemas

run: deps
	$(VENV)/bin/iot-platform dev up

status: $(VENV)/.installed
	$(VENV)/bin/iot-platform dev status

down: $(VENV)/.installed
	$(VENV)/bin/iot-platform dev down

# A throwaway instance: a DAGSTER_HOME set in the caller's shell (e.g. the platform's) is left alone.
check-defs: $(VENV)/.installed
	home=$$(mktemp -d); DAGSTER_HOME=$$home $(VENV)/bin/dg check defs; status=$$?; rm -rf $$home; exit $$status

# Two xdist workers, a module per unit of work, slowest modules first (iot_platform_tests/conftest.py).
# pytest exits 5 when it collected no test: that is a broken suite, not a green one.
test: deps
	$(VENV)/bin/pytest -p no:cacheprovider -n 2 --dist loadfile iot_platform_tests/unit iot_platform_tests/integration iot_platform_tests/faults $(PYTEST_ARGS); \
	status=$$?; if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$status

clean:
	rm -rf $(VENV) .iot
