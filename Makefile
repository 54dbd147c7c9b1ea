# Entry points; the scripts do the work. See README.md, "Development and tests".
.PHONY: test demo control-plane-build control-plane-up control-plane-down

# The whole test suite: fmt, clippy -D warnings, cargo test against a local control plane.
test:
	scripts/test

demo:
	scripts/demo

control-plane-build:
	scripts/control-plane build

control-plane-up:
	scripts/control-plane up

control-plane-down:
	scripts/control-plane down
