#!/usr/bin/env bash
# Removes what scripts/install.sh installed.
#
#   sudo /opt/sluice/scripts/uninstall.sh [--purge] [--root DIR]
#
# Always removed: the service (stopped and disabled: it drains and closes the buffer cleanly
# first), /etc/systemd/system/sluice.service, /opt/sluice, /usr/local/bin/sluice.
# Kept unless --purge, so that a reinstall carries on where this one stopped (same epoch, next
# seq, nothing unsent lost):
#   /var/lib/sluice                    the buffer, with any readings not yet forwarded
#   /etc/sluice                        sluice.yaml and any secrets beside it
#   /etc/systemd/system/sluice.service.d   your drop-ins (systemctl edit sluice)
#   the sluice user and group          they own the kept buffer
# --purge removes those too. Running it again is harmless.
#
# Options:
#   --purge      also remove the buffer, the config, the drop-ins and the user and group
#   --root DIR   uninstall from a tree made with install.sh --root DIR (nothing is stopped)
set -euo pipefail

readonly USER_NAME=sluice

say() { printf 'sluice uninstall: %s\n' "$*"; }
die() { printf 'sluice uninstall: error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

ROOT=""
PURGE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT="$2"; shift 2 ;;
    --root=*) ROOT="${1#--root=}"; shift ;;
    --purge) PURGE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done
if [ -n "$ROOT" ]; then
  [ -d "$ROOT" ] || die "--root $ROOT: no such directory"
  ROOT="$(cd "$ROOT" && pwd)"
  [ "$ROOT" != "/" ] || ROOT=""
fi
[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0)"

UNIT="$ROOT/etc/systemd/system/sluice.service"

# --- the service ------------------------------------------------------------------------------
if [ -n "$ROOT" ]; then
  if [ -e "$UNIT" ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --root="$ROOT" --quiet disable sluice.service 2>/dev/null || true
  fi
elif [ -d /run/systemd/system ]; then
  if systemctl is-active --quiet sluice.service; then
    say "stopping sluice (it drains in-flight readings and closes the buffer)"
  fi
  systemctl --quiet disable --now sluice.service 2>/dev/null || true
elif command -v systemctl >/dev/null 2>&1 && [ -e "$UNIT" ]; then
  systemctl --quiet disable sluice.service 2>/dev/null || true
fi
# What disable would have removed, in case the unit file was already gone.
rm -f "$ROOT/etc/systemd/system/multi-user.target.wants/sluice.service"
rm -f "$UNIT"
if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl reset-failed sluice.service 2>/dev/null || true
fi

# --- the package ------------------------------------------------------------------------------
rm -rf "$ROOT/opt/sluice"
# Leftovers of an install that was interrupted between staging and swapping.
for d in "$ROOT"/opt/sluice.new.* "$ROOT"/opt/sluice.old.*; do
  if [ -e "$d" ]; then rm -rf "$d"; fi
done
if [ -L "$ROOT/usr/local/bin/sluice" ] && [ "$(readlink "$ROOT/usr/local/bin/sluice")" = /opt/sluice/bin/sluice ]; then
  rm -f "$ROOT/usr/local/bin/sluice"
fi
say "removed the service and /opt/sluice"

if [ "$PURGE" -eq 0 ]; then
  [ -e "$ROOT/var/lib/sluice" ] && say "kept the buffer: $ROOT/var/lib/sluice (--purge removes it)"
  [ -e "$ROOT/etc/sluice" ] && say "kept the config: $ROOT/etc/sluice (--purge removes it)"
  exit 0
fi

# --- --purge: the data, the config, the user --------------------------------------------------
rm -rf "$ROOT/var/lib/sluice" "$ROOT/etc/sluice" "$ROOT/etc/systemd/system/sluice.service.d"
if [ -z "$ROOT" ]; then
  if getent passwd "$USER_NAME" >/dev/null; then userdel "$USER_NAME"; fi
  if getent group "$USER_NAME" >/dev/null; then groupdel "$USER_NAME"; fi
else
  # A tree that no system runs from: drop the lines that systemd-sysusers --root wrote.
  for f in passwd group shadow gshadow; do
    file="$ROOT/etc/$f"
    [ -e "$file" ] || continue
    if grep -q "^$USER_NAME:" "$file"; then
      tmp="$file.sluice-uninstall.$$"
      grep -v "^$USER_NAME:" "$file" > "$tmp" || true
      chmod --reference="$file" "$tmp"
      chown --reference="$file" "$tmp"
      mv "$tmp" "$file"
    fi
  done
fi
say "purged the buffer, the config and the $USER_NAME user"
