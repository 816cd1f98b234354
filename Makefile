# Two commands: `make run` (install, index, serve) and `make test` (the whole suite).
VENV     ?= .venv
PY       := $(VENV)/bin/python
IMAGES   ?=
HOST     ?= 127.0.0.1
PORT     ?= 8000
export LOOKALIKE_DATA_DIR ?= $(CURDIR)/data
# Weights: a local copy beside the checkout when there is one, else Keras downloads them.
export LOOKALIKE_VGG16_WEIGHTS ?= $(or $(wildcard $(CURDIR)/../shared/models/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5),imagenet)
SAMPLE   := $(LOOKALIKE_DATA_DIR)/sample-images

.PHONY: install run index serve test lint sample clean es es-cluster

install: $(VENV)/.installed

# `make run` needs the runtime only; `make test` adds the test tools (pytest, schemathesis, playwright).
# The pinned lock first, then the project itself (editable: the `lookalike` command runs this checkout).
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# Real photos any machine can get: the ones bundled in scikit-image's wheel (only the images are kept).
sample: $(SAMPLE)/.done
$(SAMPLE)/.done: | install
	$(PY) -m indexer.sample $(SAMPLE)
	touch $@

index: install $(if $(IMAGES),,sample)
	$(VENV)/bin/lookalike index $(or $(IMAGES),$(SAMPLE)) --tags-from-folders

serve: install
	HOST=$(HOST) PORT=$(PORT) $(VENV)/bin/lookalike serve

run: index serve

# A real single-node Elasticsearch on 127.0.0.1:9200 in the foreground, no Docker (needs Java and Maven):
# ES_VERSION=8 (the docker-compose.yml version) or 9.
ES_VERSION ?= 8
# Each node's heap: docker-compose.yml's 1g (the tests start theirs with 512m).
ES_HEAP ?= 1g
es: install
	$(PY) -m tests.es_node --version $(ES_VERSION) --port 9200 --heap $(ES_HEAP)

# A real three-node cluster on 127.0.0.1:9200-9202 in the foreground (docs/elasticsearch.md, "Running a cluster").
ES_NODES ?= 3
es-cluster: install
	$(PY) -m tests.es_node --version $(ES_VERSION) --port 9200 --nodes $(ES_NODES) --heap $(ES_HEAP)

# Lint and type checks first (seconds), then the tests.
test: lint
	$(PY) -m pytest

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
