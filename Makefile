# make test: installs what the tests need when missing (redis-server; gcc for
# -race and the chaos suite's clock shim; as root, nftables and iproute2 for
# the chaos suite's partition tier), then runs the whole suite of every module
# in the workspace with the race detector. CI (.ci/run) calls exactly this.
SHELL := /bin/bash
GO ?= go
APT_UPDATED := /tmp/.redlock-apt-updated

# Every module of the workspace (go.work): the library and the nested ones
# (the command, and later benchmarks and adapters with heavy dependencies).
MODULES = $(shell $(GO) list -m -f '{{.Dir}}')

.PHONY: test deps vet bench demo

test: deps
	@set -e; for m in $(MODULES); do \
		echo "== $$m"; \
		(cd $$m && $(GO) vet ./... && $(GO) test -race -count=1 -timeout 20m ./...); \
	done

deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v gcc >/dev/null || missing="$$missing gcc"; \
	if [ "$$(id -u)" = 0 ]; then \
		command -v nft >/dev/null || missing="$$missing nftables"; \
		command -v ip >/dev/null || missing="$$missing iproute2"; \
	fi; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	@redis-server --version

vet:
	@set -e; for m in $(MODULES); do (cd $$m && $(GO) vet ./...); done
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }

bench: deps
	$(GO) test -run '^$$' -bench . -benchmem .

demo:
	$(GO) run ./cmd/redlock demo
