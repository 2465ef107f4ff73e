#!/usr/bin/env bash
# Makes sure a `mosquitto` binary exists for the test suite (npm test's pretest).
# Tests spawn their own mosquitto on free ports; the system service must not hold port 1883.
set -euo pipefail

find_mosquitto() {
  command -v mosquitto >/dev/null 2>&1 && return 0
  [ -x /usr/sbin/mosquitto ] && return 0
  return 1
}

if find_mosquitto; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  {
    echo "ensure-mosquitto: the tests need the mosquitto broker, which is not installed."
    if command -v apt-get >/dev/null 2>&1; then
      echo "ensure-mosquitto: install it with: sudo apt-get install -y mosquitto"
    else
      echo "ensure-mosquitto: install mosquitto with your package manager (Debian/Ubuntu: sudo apt-get install -y mosquitto)"
    fi
  } >&2
  exit 1
fi

echo "ensure-mosquitto: installing mosquitto (apt-get) for the tests"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq mosquitto >/dev/null

# The package may start a system mosquitto on port 1883; the tests run their own instances.
if command -v systemctl >/dev/null 2>&1; then
  systemctl stop mosquitto >/dev/null 2>&1 || true
  systemctl disable mosquitto >/dev/null 2>&1 || true
fi
if command -v service >/dev/null 2>&1; then
  service mosquitto stop >/dev/null 2>&1 || true
fi

if ! find_mosquitto; then
  echo "ensure-mosquitto: apt-get finished but no mosquitto binary was found" >&2
  exit 1
fi
