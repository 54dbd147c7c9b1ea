# Entry points; the scripts do the work. See docs/development.md. Each first runs scripts/deps,
# which installs (as root) or names the Debian packages a fresh machine lacks.
.PHONY: test demo release control-plane-build control-plane-up control-plane-down

# The whole test suite: fmt, clippy -D warnings, cargo test against a local control plane.
test:
	scripts/deps test
	scripts/test

demo:
	scripts/deps demo
	scripts/demo

# A release of the committed tree (docs/development.md, "Releases"): VERSION defaults to the
# crate's version; ARCH=amd64|arm64|all (default all).
VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
ARCH ?= all
release:
	scripts/deps release
	scripts/release $(VERSION) --arch $(ARCH)

control-plane-build:
	scripts/control-plane build

control-plane-up:
	scripts/control-plane up

control-plane-down:
	scripts/control-plane down
