# Fresh machine: `make demo` sets everything up and runs the demo; `make test` runs the tests.
# Both are idempotent: set-up steps already done are skipped.
.PHONY: setup demo test
VENV := .venv

setup:
	@bash tools/setup_env.sh

demo: setup
	@$(VENV)/bin/pose-ros demo $(ARGS)

test: setup
	@$(VENV)/bin/python -m pytest test $(ARGS)
