#!/usr/bin/env bash
# Installs the peers Tether's tests talk to, only when they are missing:
# Debian's mosquitto and mosquitto-clients, Debian's chromium (the browser
# test drives /usr/bin/chromium; no browser is ever downloaded), and the
# browser test's npm packages in web/node_modules (npm ci, from the lock).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v mosquitto_sub >/dev/null || need+=(mosquitto-clients)
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
[ -x /usr/bin/chromium ] || need+=(chromium)

if [ ${#need[@]} -gt 0 ]; then
  echo "deps: installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

# npm writes node_modules/.package-lock.json last: missing, or older than the
# lock (a pull changed the packages), means install again.
if [ ! web/node_modules/.package-lock.json -nt web/package-lock.json ]; then
  echo "deps: npm ci in web/"
  (cd web && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
echo "deps: ok"
