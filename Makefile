# The two commands of README.md. Each one sets up (first time) or reuses (afterwards)
# the cached environment with tools/setup_env.sh, then runs.
#   make demo   - the tiny embedded multilingual recipe, end to end
#   make test   - lint + the whole test suite, slow end-to-end tests included
# Extra arguments: make demo ARGS="--quick", make test ARGS="-m 'not slow'"

SHELL := /bin/bash
VENV := .venv
ARGS ?=
# the checkout's own code wins even if the shared environment was last installed from another clone
export PYTHONPATH := $(CURDIR)

.PHONY: demo test env doctor

env:
	@bash tools/setup_env.sh

demo: env
	@bash recipes/tiny/run.sh $(ARGS)

test: env
	@$(VENV)/bin/ruff check astra tests tools recipes
	@$(VENV)/bin/python -m pytest $(ARGS)

doctor: env
	@$(VENV)/bin/astra doctor
