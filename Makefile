# The single entry point: `make demo` and `make test` each install what is missing first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# What `make demo` runs needs only the three packages and what they require (no test tools):
# a first demo installs a few dozen packages, not the whole test tool chain.
DEMO_STAMP := $(VENV)/.installed-demo

# The SAM CLI pins its own boto3 and cfn-lint: it lives in a venv of its own. The built Lambda
# artifacts are smoke-tested under the runtime's Python (3.13) with only boto3 beside them, as
# on Lambda.
SAM_VENV := .venv-sam
SAM_STAMP := $(SAM_VENV)/.installed
SAM_CLI_VERSION := 1.170.0
LAMBDA_VENV := .venv-lambda
# checkov (the IaC scanner operators run) pins its own boto3: a venv of its own too. Every
# finding it keeps is either fixed or argued in template.yaml (Metadata: checkov: skip:).
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
CHECKOV_VERSION := 3.3.30
LAMBDA_STAMP := $(LAMBDA_VENV)/.installed
BUILD_DIR := .aws-sam/build
export SAM_CLI_TELEMETRY := 0

.PHONY: install test lint build demo bench cost clean

install: $(STAMP)

$(STAMP): requirements-dev.txt agent/pyproject.toml functions/pyproject.toml functions/domain/pyproject.toml infra/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Hatchway needs Python 3.11 or newer (set PYTHON=...)")'
	@echo "==> $(VENV): a virtual environment with $$($(PYTHON) --version) (a first install takes about two minutes)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	@echo "==> installing the agent, the relay, the local gateway and the test tools (pip names each package)"
	@# setuptools tells every editable install to beware of same-named folders: 40 lines of noise.
	PYTHONWARNINGS="ignore:Editable installation" bash -o pipefail -c '$(PY) -m pip install --disable-pip-version-check --progress-bar off \
		-r requirements-dev.txt -e ./agent -e ./functions -e ./functions/domain -e ./infra \
		| grep -E --line-buffered "^(Collecting|Successfully installed)" | cut -c1-100'
	@echo "==> $(VENV) is ready"
	touch $(STAMP)

# Lint and the SAM build are part of the test command: a style or type error, or a template
# that does not build, fails CI like a failing test.
test: lint build
	HATCHWAY_BUILD_DIR=$(BUILD_DIR) HATCHWAY_LAMBDA_PYTHON=$(LAMBDA_VENV)/bin/python \
		$(PY) -m pytest -n 2 --dist loadfile

$(SAM_STAMP):
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/pip install --quiet aws-sam-cli==$(SAM_CLI_VERSION)
	touch $(SAM_STAMP)

$(CHECKOV_STAMP):
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check checkov==$(CHECKOV_VERSION)
	touch $(CHECKOV_STAMP)

$(LAMBDA_STAMP): requirements-dev.txt
	"$$(scripts/lambda-python)" -m venv $(LAMBDA_VENV)
	$(LAMBDA_VENV)/bin/pip install --quiet "$$(grep '^boto3==' requirements-dev.txt)"
	touch $(LAMBDA_STAMP)

# `sam validate --lint` and `sam build` run offline; python3.13 goes first on PATH for the build.
build: $(SAM_STAMP) $(LAMBDA_STAMP)
	AWS_DEFAULT_REGION=us-east-1 $(SAM_VENV)/bin/sam validate --lint
	PATH="$$(dirname "$$(scripts/lambda-python)"):$$PATH" $(SAM_VENV)/bin/sam build --build-dir $(BUILD_DIR)

lint: install $(CHECKOV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	@# Offline (--skip-download: no Prisma Cloud lookups); a finding not argued in the
	@# template fails lint.
	$(CHECKOV_VENV)/bin/checkov --file template.yaml --framework cloudformation \
		--skip-download --compact --quiet

$(DEMO_STAMP): agent/pyproject.toml functions/pyproject.toml infra/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Hatchway needs Python 3.11 or newer (set PYTHON=...)")'
	@echo "==> $(VENV): the agent, the relay and the local gateway, for the demo"
	$(PYTHON) -m venv $(VENV)
	PYTHONWARNINGS="ignore:Editable installation" $(PY) -m pip install --quiet --disable-pip-version-check \
		-e ./agent -e ./functions -e ./infra
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(PY) scripts/demo.py

# The bench measures the agent as `pip install 'hatchway[fast]'` installs it (C masking), and
# installs wrk, hey and openssh-server (the ssh -R beside it) from Debian when they are missing,
# and localtunnel's server and client (the other peer) with npm from bench/npm's lock file.
bench: install
	$(PY) -m pip install --quiet -e './agent[fast]'
	$(PY) bench/run.py

# Counts every AWS operation per visitor request (DynamoDB mode, moto, a real agent) and prices
# it from functions/hatchway_relay/prices.py; the last line is the summary scripts read.
cost: install
	$(PY) bench/cost.py

clean:
	rm -rf $(VENV) $(SAM_VENV) $(LAMBDA_VENV) $(CHECKOV_VENV) .aws-sam .pytest_cache .ruff_cache .mypy_cache \
		.hypothesis test-artifacts
