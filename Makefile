# make demo: install everything, bring up a local datacenter and place VMs on it.
# make test: install everything, run the whole test suite.
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
DEBS    := $(VENV)/.debian
PROTOS  := $(wildcard proto/vdcos/v1/*.proto)
GEN     := vdcos/v1/.generated
# buf (its binary ships in the npm package): `buf curl` is the outside gRPC client the security
# tests call the API with, as a user with only the CA and a token would; `make lint` uses it too.
BUF     := .tools/node_modules/.bin/buf

.PHONY: setup demo test down bench lint proto

setup: $(DEBS) $(STAMP) $(GEN) $(BUF)

$(DEBS): scripts/setup-debian.sh
	bash scripts/setup-debian.sh
	@mkdir -p $(VENV) && touch $@

$(STAMP): pyproject.toml setup.py | $(DEBS)
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "setuptools>=68" wheel "grpcio-tools>=1.60"
	$(PY) -m pip install -q --no-build-isolation -e ".[dev]"
	touch $@

# Generated code is never committed nor edited: rebuilt whenever a .proto changes.
$(GEN): $(PROTOS) $(STAMP)
	$(PY) -c "from setup import compile_protos; compile_protos('.')"
	touch $@

proto: $(GEN)

$(BUF): | $(DEBS)
	npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@1.75.0

demo: setup
	$(VENV)/bin/vdcos demo

down:
	$(VENV)/bin/vdcos down

test: setup
	$(VENV)/bin/mypy
	$(PY) -m pytest -q

# buf (the CLI the @bufbuild/buf npm package ships) holds the protos to its STANDARD rules.
lint: setup
	$(VENV)/bin/mypy
	$(BUF) lint proto

bench: setup
	$(PY) -m benchmarks.placement --hosts 10000 --vms 20000 --json benchmarks/results/placement.json
	$(PY) -m benchmarks.migration --runs 10 --json benchmarks/results/migration.json
	$(PY) -m benchmarks.netcutover --runs 10 --json benchmarks/results/netcutover.json
	$(PY) -m benchmarks.storage --runs 3 --json benchmarks/results/storage.json
	$(PY) -m benchmarks.packing --dataset ../shared/datasets/vectorpack --mode online --json benchmarks/results/packing-online.json
	$(PY) -m benchmarks.packing --dataset ../shared/datasets/vectorpack --mode offline --sample 90 --time-limit 5 --json benchmarks/results/packing-offline.json
	$(PY) -m benchmarks.rebalance --hosts 10000 --vms 20000 --json benchmarks/results/rebalance.json
	$(PY) -m benchmarks.chaos --duration 300 --json benchmarks/results/chaos.json
	$(PY) -m benchmarks.failover --runs 10 --json benchmarks/results/failover.json
