# Set-up, demo and checks for bootc-build. `make demo` and `make test` work on a
# fresh Debian 12 machine: they install what is missing first.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

VENV := .venv
PYTHON := $(VENV)/bin/python
BOOTC_BUILD := $(VENV)/bin/bootc-build

# Selects runc and host ulimits for Podman without touching the machine's own
# configuration; see contrib/containers.conf for why.
export CONTAINERS_CONF ?= $(CURDIR)/contrib/containers.conf

GO_TOOLSET_IMAGE := localhost/bootc-build-standins/go-toolset:bookworm
BOOTC_BASE_IMAGE := localhost/bootc-build-standins/bootc-base:latest
DEMO_IMAGE := localhost/bootc-build-demo/hello:latest
DEMO_ARGS := --build-arg BUILDER_IMAGE=$(GO_TOOLSET_IMAGE) \
	--build-arg BASE_IMAGE=$(BOOTC_BASE_IMAGE)

DEBIAN_PACKAGES := podman runc docker-registry mmdebstrap busybox-static \
	apache2-utils tmux curl openssl openssh-server

.PHONY: deps install standins demo test lint bench clean

deps:
	@missing=""; for pkg in $(DEBIAN_PACKAGES); do \
		dpkg-query -W -f='$${Status}' "$$pkg" 2>/dev/null | grep -q "ok installed" \
			|| missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

standins: deps
	GO_TOOLSET_IMAGE=$(GO_TOOLSET_IMAGE) BOOTC_BASE_IMAGE=$(BOOTC_BASE_IMAGE) \
		contrib/make-standins.sh

demo: deps install standins
	@echo "== bootc-build stages: what each target needs"
	$(BOOTC_BUILD) stages Containerfiles/two-stage $(DEMO_ARGS)
	@echo "== build only the builder stage"
	$(BOOTC_BUILD) build Containerfiles/two-stage --target builder $(DEMO_ARGS)
	@echo "== build the whole image"
	$(BOOTC_BUILD) build Containerfiles/two-stage --tag $(DEMO_IMAGE) $(DEMO_ARGS)
	@echo "== the hello world binary in the final image"
	podman run --rm $(DEMO_IMAGE) /usr/bin/hello
	@echo "== push to a local registry and read back its digest"
	contrib/demo-push.sh $(DEMO_IMAGE) $(BOOTC_BUILD)

test: deps install lint
	$(VENV)/bin/pytest

lint: install
	$(VENV)/bin/ruff format --check bootc_builder tests
	$(VENV)/bin/ruff check bootc_builder tests
	$(VENV)/bin/mypy

# Compares bootc-build with podman build, podman --remote and podman push on
# private storage and writes benchmarks/RESULTS.md; see benchmarks/README.md.
bench: deps install standins
	$(PYTHON) benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
