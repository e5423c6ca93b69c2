# sidecar-injector: the everyday commands. `make run` and `make test` are all a new
# machine needs (with a Rust toolchain); `make test` installs its own test tools.
CARGO    ?= cargo
BIN      := target/release/sidecar-injector
IMAGE    ?= sidecar-injector:0.1.0
KUBECTL  ?= kubectl

.PHONY: build link-order test e2e control-plane test-deps run certs image deploy deploy-cert-manager deploy-selfsigned undeploy bench soak fuzz deny fmt lint

build:
	$(CARGO) build --release --locked

## link-order: list again the functions `serve` runs (scripts/link-order.txt, linked first by
## build.rs) after changing them, or the compiler; `make test` fails on a stale list.
link-order:
	bash scripts/link-order.sh generate

## test: lint and licence checks, then every test (unit, fixtures, fidelity, properties,
## fuzz corpus replay, server, deploy), then the end-to-end suite on a real control plane.
test: test-deps lint deny
	$(CARGO) test --locked --features tools,root
	bash scripts/e2e.sh

## e2e: tests/e2e.rs against etcd + kube-apiserver + kube-controller-manager on 127.0.0.1,
## built from their Go modules (Go >= 1.26; first build 10-25 min, then cached).
e2e:
	bash scripts/e2e.sh

## control-plane: only build (and cache) the control plane binaries.
control-plane:
	bash scripts/control-plane.sh build

test-deps:
	bash scripts/test-deps.sh

## run: the webhook on https://127.0.0.1:8443 with an in-memory certificate, no files.
run:
	$(CARGO) run --release --locked -- serve --dev

## certs: CA + serving certificate for the in-cluster Service, and the overlay in certs/.
certs: build
	BIN=$(BIN) bash scripts/selfsigned-overlay.sh certs

image:
	docker build -t $(IMAGE) .

## deploy: on a bare cluster; the replicas manage their own certificate (serve --tls-auto).
deploy:
	$(KUBECTL) apply -k deploy

## deploy-cert-manager: the certificate from cert-manager (installed in the cluster).
deploy-cert-manager:
	$(KUBECTL) apply -k deploy/cert-manager

## deploy-selfsigned: no cert-manager; run `make certs` first.
deploy-selfsigned:
	@test -f certs/kustomization.yaml || { echo "run 'make certs' first" >&2; exit 1; }
	$(KUBECTL) apply -k certs

undeploy:
	$(KUBECTL) delete --ignore-not-found -k deploy

## bench: h2load against the release server and ../shared/bench/ceiling; criterion: cargo bench
bench:
	bash scripts/bench.sh

## soak: 2 minutes of load with certificate/config reloads, idle and broken clients, SIGTERM.
soak: build
	command -v h2load >/dev/null || { apt-get update -qq && apt-get install -y -qq nghttp2-client; }
	python3 scripts/soak.py --seconds 120

## fuzz: each target for FUZZ_SECONDS (cargo-fuzz; the stable toolchain via RUSTC_BOOTSTRAP).
FUZZ_SECONDS ?= 600
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install --locked cargo-fuzz
	cd fuzz && for t in review inject config; do \
	  RUSTC_BOOTSTRAP=1 cargo fuzz run -O $$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) -max_len=65536 || exit 1; \
	done

deny:
	$(CARGO) deny check licenses bans sources

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --all-features --locked -- -D warnings
