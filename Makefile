# Tributary's front door. `make up` starts the local platform; `make test` runs every test.
# Builds go to a target directory outside the clone so every checkout, CI run and session on
# this machine shares one build of the heavy native dependencies (librdkafka).
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/tributary/target
BIN := $(CARGO_TARGET_DIR)/release/tributary

.PHONY: help bootstrap build up down status test test-connect lint fmt kafka-up kafka-down kafka-status bench docs clean-state

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

bootstrap: ## Install what up and test need and this machine lacks (scripts/bootstrap.sh)
	@scripts/bootstrap.sh

build: bootstrap ## Build the tributary binary (release profile, shared with the tests)
	scripts/cargo.sh build --release -p tributary-cli

up: build ## Start Kafka, the topics, registry, gateway, processor, sink and Prometheus (KAFKA=cluster: three SASL_SSL nodes)
	@$(BIN) up $(if $(KAFKA),--kafka $(KAFKA))

down: ## Stop everything `make up` started
	@[ -x $(BIN) ] || scripts/cargo.sh build --release -p tributary-cli
	@$(BIN) down

status: ## Say what is running
	@[ -x $(BIN) ] || scripts/cargo.sh build --release -p tributary-cli
	@$(BIN) status

test: bootstrap ## Run every test against a real broker (starts one if none is running)
	@scripts/test.sh

test-connect: ## Kafka Connect worker + Snowflake sink config validation against a broker (TRIBUTARY_TEST_BOOTSTRAP)
	@tests/connect/test_connect.sh

lint: ## rustfmt check, clippy with warnings as errors, cargo deny (licenses, bans, sources; deny.toml)
	cargo fmt --all -- --check
	scripts/cargo.sh clippy --release --workspace --all-targets -- -D warnings
	@scripts/cargo-deny.sh check licenses bans sources

fmt: ## Format the code
	cargo fmt --all

kafka-up: ## Start only the local Kafka broker
	@deploy/kafka/kafka.sh start

kafka-down: ## Stop only the local Kafka broker
	@deploy/kafka/kafka.sh stop

kafka-status: ## Is the local broker running?
	@deploy/kafka/kafka.sh status

bench: build ## Run the benchmarks behind docs/performance.md (bench/run.sh, then the Locust load test)
	@rc=0; TRIBUTARY_BIN=$(BIN) bench/run.sh || rc=$$?; \
	  TRIBUTARY_BIN=$(BIN) bench/locust.sh || rc=$$?; exit $$rc

docs: build ## Regenerate docs/openapi.json from the code
	$(BIN) openapi > docs/openapi.json

clean-state: down ## Delete local Kafka data and logs (keeps the downloaded jars and builds)
	rm -rf $(HOME)/.cache/tributary/state
