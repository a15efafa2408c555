#!/bin/sh
# Install the wheel the workflow built (wheelhouse/) and run the integration's CPU check, inside a
# container of the wheel workflow (Alpine, or Home Assistant's own image). With a QEMU CPU model
# (qemu64, Westmere, cortex-a53 ...) the check runs emulating that older CPU.
# Usage: scripts/ci_check_wheel.sh [qemu-cpu-model]
set -eu
wheel=$(ls wheelhouse/*.whl)
if python3 -m uv --version > /dev/null 2>&1; then
  # Home Assistant's image: the installer Home Assistant itself uses, with its pins (numpy...)
  constraints=$(python3 -c 'import homeassistant, os; print(os.path.join(os.path.dirname(homeassistant.__file__), "package_constraints.txt"))')
  python3 -m uv pip install --system --quiet --constraint "$constraints" "$wheel"
else
  python3 -m pip install --quiet --root-user-action=ignore "$wheel"
fi
if [ -n "${1:-}" ]; then
  apk add --quiet "qemu-$(uname -m)"
  exec "qemu-$(uname -m)" -cpu "$1" "$(command -v python3)" scripts/check_llama_wheel.py
fi
exec python3 scripts/check_llama_wheel.py
