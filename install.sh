#!/usr/bin/env bash
# install.sh — set up Stock Trading Observer.
#   ./install.sh --dev        developer/CI setup: .venv in the repo + test tools + apt packages the tests need
#   ./install.sh [--providers kis,..] [--with-sim] [--force] [--no-start] [--no-preflight]
#                             VM install or upgrade (root; refused in KR market hours unless --force)
#   ./install.sh --uninstall  VM: remove code and units, keep config and data (docs/deployment.md)
# Idempotent: a second run changes nothing and only checks.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODE=vm
VM_ARGS=()
for a in "$@"; do
  case "$a" in
    --dev) MODE=dev ;;
    -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) VM_ARGS+=("$a") ;;  # VM-mode options: checked by lib/observer/deploy/install_vm.sh
  esac
done
if [ "$MODE" = dev ] && [ ${#VM_ARGS[@]} -gt 0 ]; then
  echo "install.sh: unknown option '${VM_ARGS[0]}' (try --help)" >&2; exit 2
fi

log() { printf '[install] %s\n' "$*" >&2; }

# Debian packages the test suite uses: a real sshd for SFTP tests, chromium for the report test,
# systemd for the real-systemd tests, iproute2/util-linux for namespaces.
DEV_APT_PACKAGES=(python3-venv openssh-server openssh-client chromium systemd util-linux iproute2 procps prometheus)

apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then log "apt: all present (${#@} packages)"; return 0; fi
  if [ "$(id -u)" -ne 0 ]; then
    log "apt: missing ${missing[*]}; run as root or install them yourself"; return 1
  fi
  log "apt: installing ${missing[*]}"
  # Test tools only: a package's daemon (openssh-server, prometheus) must not start now, nor later in the
  # real-systemd tests' namespace (it boots multi-user.target from this /etc). policy-rc.d 101 = "do not start".
  local policy=/usr/sbin/policy-rc.d own_policy=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"; own_policy=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || { [ "$own_policy" = 0 ] || rm -f "$policy"; return 1; }
  [ "$own_policy" = 0 ] || rm -f "$policy"
  for p in "${missing[@]}"; do
    # we only need promtool: the server this package enables stays off
    if [ "$p" = prometheus ] && command -v deb-systemd-helper >/dev/null; then
      deb-systemd-helper disable prometheus.service >/dev/null 2>&1 || true
      update-rc.d prometheus disable >/dev/null 2>&1 || true
    fi
  done
}

pick_python() {
  for c in python3.13 python3.12 python3.11 python3; do
    if command -v "$c" >/dev/null && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  log "need Python >= 3.11"; return 1
}

dev_install() {
  if command -v apt-get >/dev/null; then apt_install "${DEV_APT_PACKAGES[@]}"; fi
  # sshd wants this directory to exist even when started by tests on their own port
  [ "$(id -u)" -ne 0 ] || mkdir -p /run/sshd
  local py; py="$(pick_python)"
  if [ ! -x "$REPO/.venv/bin/python" ]; then
    log "venv: creating $REPO/.venv with $py"
    "$py" -m venv "$REPO/.venv"
  fi
  # Reinstall only when the project's declared dependencies changed (keeps a second run fast).
  local stamp="$REPO/.venv/.observer-installed" want
  want="$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$REPO/.venv/bin/python" -c 'import observer' 2>/dev/null; then
    log "venv: up to date"
  else
    log "venv: installing the package with its dev extras"
    "$REPO/.venv/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$REPO/.venv/bin/python" -m pip install -q -e "$REPO[dev]"
    echo "$want" > "$stamp"
  fi
  # checkov pins its own fork of python-hcl2, which breaks python-hcl2's API in a shared venv:
  # it gets a throwaway venv of its own, used only by the Terraform policy test.
  if [ ! -x "$REPO/.venv-checkov/bin/checkov" ]; then
    log "checkov: creating $REPO/.venv-checkov"
    "$py" -m venv "$REPO/.venv-checkov"
    "$REPO/.venv-checkov/bin/python" -m pip install -q "checkov==3.3.30"
  else
    log "checkov: present"
  fi
  log "dev setup ready: . .venv/bin/activate"
}

case "$MODE" in
  dev) dev_install ;;
  vm)
    exec bash "$REPO/lib/observer/deploy/install_vm.sh" ${VM_ARGS[@]+"${VM_ARGS[@]}"} ;;
esac
