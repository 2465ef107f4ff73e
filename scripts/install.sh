#!/usr/bin/env bash
# Installs the built sluice as a systemd service on Raspberry Pi OS / Debian (Node.js >= 20).
#
#   sudo scripts/install.sh [--gateway-id ID] [--upstream URL] [--copy-node-modules] [--root DIR]
#
# Run it from a built tree (dist/ present: `npm ci && npm run build` on a development machine,
# never on the device). It installs, idempotently:
#   /opt/sluice                      the package: dist/, production node_modules, package.json,
#                                    package-lock.json, config/sluice.schema.json, bin/sluice
#   /usr/local/bin/sluice            -> /opt/sluice/bin/sluice (sluice check, sluice status, ...)
#   user and group sluice            a system user: no home, no login shell
#   /etc/sluice/sluice.yaml          from config/example.yaml, fully commented, 0640 root:sluice;
#                                    an existing file is never touched
#   /var/lib/sluice                  the buffer, 0750 sluice:sluice; an existing one is kept as is
#   /etc/systemd/system/sluice.service, enabled and (re)started
#
# An upgrade is the same command with a newer tree: the new package is staged and checked beside
# the old one, the service is stopped (it drains and closes the buffer cleanly), the package is
# swapped, the service started again. The buffer and the config are not touched.
#
# Options:
#   --gateway-id ID        gateway.id in a newly written config (default: this host's name)
#   --upstream URL         upstream.url in a newly written config (default: the example's)
#   --copy-node-modules    copy the production dependencies from this tree's node_modules
#                          instead of `npm ci --omit=dev` (offline; only when this tree was
#                          installed on the same OS and CPU architecture as the target)
#   --root DIR             install into DIR instead of /: files, owners and modes as on a real
#                          system, the user written to DIR/etc/passwd and DIR/etc/group, the unit
#                          enabled offline (systemctl --root); nothing is started or reloaded
set -euo pipefail

readonly USER_NAME=sluice
readonly NODE_MIN_MAJOR=20
readonly SYSUSERS_LINE='u sluice - "sluice MQTT gateway" /nonexistent /usr/sbin/nologin'

say() { printf 'sluice install: %s\n' "$*"; }
die() { printf 'sluice install: error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

ROOT=""
GATEWAY_ID=""
UPSTREAM_URL=""
COPY_MODULES=0
while [ $# -gt 0 ]; do
  case "$1" in
    --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT="$2"; shift 2 ;;
    --root=*) ROOT="${1#--root=}"; shift ;;
    --gateway-id) [ $# -ge 2 ] || die "--gateway-id needs a value"; GATEWAY_ID="$2"; shift 2 ;;
    --gateway-id=*) GATEWAY_ID="${1#--gateway-id=}"; shift ;;
    --upstream) [ $# -ge 2 ] || die "--upstream needs a URL"; UPSTREAM_URL="$2"; shift 2 ;;
    --upstream=*) UPSTREAM_URL="${1#--upstream=}"; shift ;;
    --copy-node-modules) COPY_MODULES=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

if [ -n "$ROOT" ]; then
  [ -d "$ROOT" ] || die "--root $ROOT: no such directory"
  ROOT="$(cd "$ROOT" && pwd)"
  [ "$ROOT" != "/" ] || ROOT=""
fi
[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0): it creates a system user and root-owned files"

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
for f in dist/daemon/bin.js package.json config/example.yaml config/sluice.schema.json systemd/sluice.service scripts/uninstall.sh; do
  [ -e "$SRC/$f" ] || die "$SRC/$f is missing. Run this from a built sluice tree (npm ci && npm run build on a development machine, then copy the tree without node_modules to the device)"
done

# --- Node.js ----------------------------------------------------------------------------------
NODE="$(command -v node || true)"
[ -n "$NODE" ] || die "Node.js >= $NODE_MIN_MAJOR is required and no 'node' is on PATH. On Raspberry Pi OS / Debian: install nodejs 20 or later (Debian 13, or NodeSource's packages)"
NODE_INFO="$("$NODE" -p 'process.versions.node + " " + process.arch' 2>/dev/null || true)"
NODE_VERSION="${NODE_INFO%% *}"
NODE_ARCH=""
case "$NODE_INFO" in *" "*) NODE_ARCH="${NODE_INFO#* }" ;; esac
NODE_MAJOR="${NODE_VERSION%%.*}"
case "$NODE_MAJOR" in ''|*[!0-9]*) die "could not read the version of $NODE" ;; esac
if [ "$NODE_MAJOR" -lt "$NODE_MIN_MAJOR" ]; then
  die "Node.js >= $NODE_MIN_MAJOR is required, found v$NODE_VERSION at $NODE. Install nodejs $NODE_MIN_MAJOR or later (Debian 13, or NodeSource's packages for Raspberry Pi OS)"
fi
# --- the CPU ----------------------------------------------------------------------------------
# LevelDB (classic-level) and cbor-extract ship prebuilt binaries for linux-x64, linux-arm64 and
# linux-arm (armv7); a Pi has no compiler to build them. Node.js 20 has official builds for
# arm64, armv7l and x64 only: armv6 (Pi Zero, Zero W, Pi 1) is not supported. A 32-bit Raspberry
# Pi OS on a Pi 4 or 5 runs a 64-bit kernel (uname -m says aarch64) under an armhf Node.js: the
# Node.js architecture decides which binaries are loaded.
MACHINE="$(uname -m 2>/dev/null || true)"
case "$MACHINE" in
  aarch64|arm64|armv7l|armv8l|x86_64) ;;
  armv6l) die "this CPU is armv6 (Raspberry Pi Zero, Zero W or 1): not supported. Node.js 20 has no official build for armv6; use a Pi Zero 2 W, 3, 4 or 5" ;;
  *) die "CPU '$MACHINE' (uname -m) is not supported: sluice runs on aarch64 (arm64), armv7l (armhf) and x86_64" ;;
esac
case "$NODE_ARCH" in
  arm64|arm|x64) ;;
  *) die "Node.js at $NODE is built for '${NODE_ARCH:-unknown}' on a $MACHINE CPU: sluice needs an arm64, arm (armv7) or x64 Node.js, for which its native dependencies ship prebuilt binaries" ;;
esac
say "Node.js v$NODE_VERSION ($NODE_ARCH) on $MACHINE"
# The service runs with ProtectHome=yes: a Node.js under a home directory (nvm) is invisible to it.
case "$NODE" in
  /home/*|/root/*|/run/user/*)
    if [ -z "$ROOT" ]; then die "$NODE is under a home directory, which the service cannot see (ProtectHome=yes). Install Node.js >= $NODE_MIN_MAJOR system-wide (/usr/bin/node)"; fi
    say "warning: $NODE is under a home directory, which the service cannot see (ProtectHome=yes)" ;;
esac
if [ "$COPY_MODULES" -eq 0 ]; then
  command -v npm >/dev/null 2>&1 || die "npm is required to install the dependencies (or use --copy-node-modules)"
fi
command -v systemd-sysusers >/dev/null 2>&1 || die "systemd-sysusers not found: sluice runs as a systemd service (package systemd)"
command -v systemctl >/dev/null 2>&1 || die "systemctl not found: sluice runs as a systemd service (package systemd)"

if [ -n "$GATEWAY_ID" ] && ! printf '%s' "$GATEWAY_ID" | grep -Eq '^[A-Za-z0-9._-]+$'; then
  die "gateway id '$GATEWAY_ID': use letters, digits, '.', '_' and '-' (--gateway-id ID)"
fi
if [ -z "$GATEWAY_ID" ] && [ -z "$ROOT" ]; then
  # This machine's name, when it makes a valid id; else the example's, for the operator to edit.
  GATEWAY_ID="$(hostname -s 2>/dev/null || cat /etc/hostname 2>/dev/null || true)"
  printf '%s' "$GATEWAY_ID" | grep -Eq '^[A-Za-z0-9._-]+$' || GATEWAY_ID=""
fi
if [ -n "$UPSTREAM_URL" ] && ! printf '%s' "$UPSTREAM_URL" | grep -Eq '^(mqtts?|tcp|ssl)://[^[:space:]"\\]+$'; then
  die "upstream URL '$UPSTREAM_URL': expected mqtt://, mqtts://, tcp:// or ssl:// and no spaces or quotes"
fi

# --- the package, staged beside the installed one ---------------------------------------------
OPT="$ROOT/opt/sluice"
STAGE="$ROOT/opt/sluice.new.$$"
OLD="$ROOT/opt/sluice.old.$$"
cleanup() { rm -rf "$STAGE" "$OLD"; }
trap cleanup EXIT
install -d -m 0755 "$ROOT/opt"
rm -rf "$STAGE"
install -d -m 0755 "$STAGE" "$STAGE/bin" "$STAGE/config" "$STAGE/systemd" "$STAGE/scripts"
cp -R "$SRC/dist" "$STAGE/dist"
cp "$SRC/package.json" "$STAGE/"
[ -e "$SRC/package-lock.json" ] && cp "$SRC/package-lock.json" "$STAGE/"
cp "$SRC/config/sluice.schema.json" "$SRC/config/example.yaml" "$STAGE/config/"
cp "$SRC/systemd/sluice.service" "$STAGE/systemd/"
cp "$SRC/scripts/install.sh" "$SRC/scripts/uninstall.sh" "$STAGE/scripts/"
for f in README.md LICENSE docs; do
  if [ -e "$SRC/$f" ]; then cp -R "$SRC/$f" "$STAGE/"; fi
done

if [ "$COPY_MODULES" -eq 1 ]; then
  [ -d "$SRC/node_modules" ] || die "--copy-node-modules: $SRC/node_modules does not exist (npm ci first)"
  # The production dependency tree as npm resolves it from the lockfile: top-level package
  # folders only (a nested node_modules travels with its parent).
  copied=0
  while IFS= read -r dir; do
    rel="${dir#"$SRC/"}"
    case "$rel" in node_modules/*) ;; *) continue ;; esac
    case "${rel#node_modules/}" in */node_modules/*) continue ;; esac
    install -d -m 0755 "$STAGE/$(dirname "$rel")"
    cp -R "$dir" "$STAGE/$rel"
    copied=$((copied + 1))
  done < <(cd "$SRC" && { npm ls --omit=dev --all --parseable 2>/dev/null || true; })
  [ "$copied" -gt 0 ] || die "--copy-node-modules: npm ls found no production dependencies in $SRC/node_modules"
  say "copied $copied production packages from $SRC/node_modules"
else
  # --ignore-scripts: nothing is compiled on the device. classic-level ships LevelDB prebuilt for
  # linux-arm and linux-arm64 inside its package; cbor-extract's prebuilt part comes as an
  # optional per-platform package (without it cbor-x falls back to plain JS).
  [ -e "$STAGE/package-lock.json" ] || die "package-lock.json is missing: npm ci installs exactly the versions it pins"
  say "installing the production dependencies (npm ci --omit=dev)"
  (cd "$STAGE" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error) || die "npm ci failed; the installed sluice (if any) is unchanged"
fi

cat > "$STAGE/bin/sluice" <<EOF
#!/bin/sh
# sluice, installed by scripts/install.sh: the package in /opt/sluice with the Node.js found at
# install time (v$NODE_VERSION). exec keeps the pid, which systemd watches (MAINPID, watchdog).
# glibc gives threads that allocate (LevelDB's, libuv's pool) malloc arenas of their own, up to 8
# per core; two keep 5-8 MiB off sluice's peak (docs/operations.md, Memory). A value set in the
# environment is kept.
MALLOC_ARENA_MAX="\${MALLOC_ARENA_MAX:-2}"
export MALLOC_ARENA_MAX
exec "$NODE" /opt/sluice/dist/daemon/bin.js "\$@"
EOF
chown -R root:root "$STAGE"
chmod -R u=rwX,go=rX "$STAGE"
chmod 0755 "$STAGE/bin/sluice" "$STAGE/scripts/install.sh" "$STAGE/scripts/uninstall.sh"

# The staged package must load on this machine (native parts included) before it replaces
# anything: `sluice check` imports the whole daemon and validates the shipped example config.
if ! check_out="$("$NODE" "$STAGE/dist/daemon/bin.js" check -c "$STAGE/config/example.yaml" 2>&1 >/dev/null)"; then
  die "the staged package does not run here; the installed sluice (if any) is unchanged:
$check_out"
fi

# --- the user ---------------------------------------------------------------------------------
if [ -n "$ROOT" ]; then
  install -d -m 0755 "$ROOT/etc"
  systemd-sysusers --root="$ROOT" --inline "$SYSUSERS_LINE"
else
  systemd-sysusers --inline "$SYSUSERS_LINE"
fi
# Numeric ids from the target's own files: with --root, the host's names mean nothing.
SLUICE_UID="$(awk -F: -v u="$USER_NAME" '$1 == u { print $3 }' "$ROOT/etc/passwd")"
SLUICE_GID="$(awk -F: -v g="$USER_NAME" '$1 == g { print $3 }' "$ROOT/etc/group")"
if [ -z "$SLUICE_UID" ] || [ -z "$SLUICE_GID" ]; then die "user $USER_NAME was not created in $ROOT/etc/passwd"; fi

# --- swap the package in ----------------------------------------------------------------------
SYSTEMD_RUNNING=0
[ -z "$ROOT" ] && [ -d /run/systemd/system ] && SYSTEMD_RUNNING=1
WAS_ACTIVE=0
if [ "$SYSTEMD_RUNNING" -eq 1 ] && systemctl is-active --quiet sluice.service; then
  WAS_ACTIVE=1
  say "stopping sluice (it drains in-flight readings and closes the buffer)"
  systemctl stop sluice.service
fi
if [ -e "$OPT" ]; then mv "$OPT" "$OLD"; fi
mv "$STAGE" "$OPT"
rm -rf "$OLD"
install -d -m 0755 "$ROOT/usr/local/bin"
ln -sfn /opt/sluice/bin/sluice "$ROOT/usr/local/bin/sluice"

# --- config and buffer ------------------------------------------------------------------------
install -d -m 0750 -o root -g "$SLUICE_GID" "$ROOT/etc/sluice"
CONFIG="$ROOT/etc/sluice/sluice.yaml"
if [ -e "$CONFIG" ]; then
  say "kept the existing $CONFIG"
else
  tmp="$ROOT/etc/sluice/.sluice.yaml.$$"
  {
    printf '# Written by scripts/install.sh on %s from config/example.yaml (also in /opt/sluice/config).\n' "$(date -u +%Y-%m-%d)"
    printf '# After a change: sudo sluice check -c /etc/sluice/sluice.yaml && sudo systemctl restart sluice\n'
    if [ -n "$GATEWAY_ID" ]; then
      sed -e "s|^  id: gw-01\$|  id: $GATEWAY_ID|" "$OPT/config/example.yaml"
    else
      cat "$OPT/config/example.yaml"
    fi
  } > "$tmp"
  if [ -n "$GATEWAY_ID" ] && ! grep -q "^  id: $GATEWAY_ID\$" "$tmp"; then
    rm -f "$tmp"; die "could not set gateway.id in the config"
  fi
  if [ -n "$UPSTREAM_URL" ]; then
    # Checked above: no quotes, backslashes or spaces; & and | are special to sed's replacement.
    escaped="$(printf '%s' "$UPSTREAM_URL" | sed -e 's/[|&]/\\&/g')"
    sed -i -e "s|^  url: mqtts://broker.example.com:8883 |  url: \"$escaped\" |" "$tmp"
    grep -q '^  url: "' "$tmp" || { rm -f "$tmp"; die "could not set upstream.url in the config"; }
  fi
  chown "root:$SLUICE_GID" "$tmp"
  chmod 0640 "$tmp"
  sync "$tmp" 2>/dev/null || true
  mv "$tmp" "$CONFIG"
  say "wrote $CONFIG (gateway.id: $(awk '/^gateway:/ { g = 1; next } g && /^  id:/ { print $2; exit }' "$CONFIG"))"
fi
if [ ! -e "$ROOT/var/lib/sluice" ]; then
  install -d -m 0750 -o "$SLUICE_UID" -g "$SLUICE_GID" "$ROOT/var/lib/sluice"
else
  say "kept the buffer in $ROOT/var/lib/sluice"
fi

# --- the unit ---------------------------------------------------------------------------------
install -d -m 0755 "$ROOT/etc/systemd/system"
install -m 0644 -o root -g root "$OPT/systemd/sluice.service" "$ROOT/etc/systemd/system/sluice.service"
if [ -n "$ROOT" ]; then
  systemctl --root="$ROOT" --quiet enable sluice.service 2>/dev/null || die "systemctl --root=$ROOT enable sluice.service failed"
  say "installed into $ROOT; the unit is enabled there (nothing started)"
elif [ "$SYSTEMD_RUNNING" -eq 1 ]; then
  systemctl daemon-reload
  systemctl --quiet enable sluice.service
  if "$NODE" /opt/sluice/dist/daemon/bin.js check -c "$CONFIG" >/dev/null; then
    if [ "$WAS_ACTIVE" -eq 1 ]; then say "starting the new sluice"; else say "starting sluice"; fi
    systemctl start sluice.service
    say "done: systemctl status sluice; journalctl -u sluice -f"
  else
    say "warning: $CONFIG is not valid (above): sluice is enabled but not started. Fix it, then: sudo systemctl start sluice"
  fi
else
  systemctl --quiet enable sluice.service 2>/dev/null
  say "systemd is not running here: the unit is enabled and starts at the next boot"
fi
if grep -q '^  url: mqtts://broker.example.com:8883' "$CONFIG"; then
  say "next: set upstream.url (and gateway.id) in /etc/sluice/sluice.yaml, then: sudo systemctl restart sluice"
fi
