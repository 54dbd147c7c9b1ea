# Entry points; the scripts do the work. See docs/development.md. Each first runs scripts/deps,
# which installs (as root) or names the Debian packages a fresh machine lacks.
.PHONY: test demo control-plane-build control-plane-up control-plane-down

# The whole test suite: fmt, clippy -D warnings, cargo test against a local control plane.
test:
	scripts/deps test
	scripts/test

demo:
	scripts/deps demo
	scripts/demo

control-plane-build:
	scripts/control-plane build

control-plane-up:
	scripts/control-plane up

control-plane-down:
	scripts/control-plane down
