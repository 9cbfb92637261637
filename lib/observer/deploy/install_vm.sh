#!/usr/bin/env bash
# install_vm.sh — the VM mode of install.sh (run it through install.sh). Root; Debian 12 / Ubuntu 22.04+.
#
#   install.sh [--providers kis[,kiwoom...]] [--with-sim] [--force] [--no-start] [--no-preflight]
#                              install or upgrade: user, /opt/observer (code + venv), /etc/observer
#                              (config never overwritten, 0600 secrets template), /var/lib/observer,
#                              units + timers enabled, daemon-reload, preflight at the end
#   install.sh --uninstall [--force]
#                              remove code and units; keep /etc/observer, /var/lib/observer, the user
#   install.sh --deploy-guard  only ask the market-hours guard: exit 0 = may deploy, 1 = refused
#
# Idempotent: every step checks before it changes anything and the last line says how many things
# changed ("nothing changed" on a second run). An upgrade (the code or units differ from what is
# installed) is refused during KR market hours unless --force; the guard is
# `observer-preflight --deploy-guard` when installed, else the built-in rule (Mon-Fri 08:00-16:00
# Asia/Seoul). OBSERVER_CLOCK='2026-11-23T10:00:00+09:00' injects the clock for both.
# Runbook: docs/deployment.md, "install.sh (VM)".
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
PREFIX=/opt/observer
VENV=$PREFIX/venv
RELEASE=$PREFIX/release
LIBEXEC=$PREFIX/libexec
ETC=/etc/observer
DATA=/var/lib/observer
UNIT_DIR=/etc/systemd/system
DROPIN_DIR=$UNIT_DIR/observer-.service.d
MANIFEST=$PREFIX/installed-units
SVC_USER=observer

MODE=install FORCE=0 START=1 PREFLIGHT=1 WITH_SIM=0 PROVIDERS=kis
while [ $# -gt 0 ]; do
  case "$1" in
    --uninstall) MODE=uninstall ;;
    --deploy-guard) MODE=guard ;;
    --force) FORCE=1 ;;
    --no-start) START=0 ;;
    --no-preflight) PREFLIGHT=0 ;;
    --with-sim) WITH_SIM=1 ;;
    --providers) shift; PROVIDERS=${1:?--providers needs a list, e.g. kis,kiwoom} ;;
    --providers=*) PROVIDERS=${1#*=} ;;
    -h|--help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done

log() { printf '[install] %s\n' "$*" >&2; }
CHANGES=()
changed() { CHANGES+=("$1"); log "changed: $1"; }
ok() { log "ok: $1"; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "VM mode needs root (sudo ./install.sh); for a developer setup use --dev"
SYSTEMD=0; [ -d /run/systemd/system ] && SYSTEMD=1
IFS=', ' read -r -a PROVIDER_LIST <<< "$PROVIDERS"
for p in "${PROVIDER_LIST[@]}"; do
  [[ $p =~ ^[a-z0-9]{1,32}$ ]] || die "bad provider name '$p' (lower-case letters and digits)"
done

# ---------------------------------------------------------------------------------------------
# the market-hours guard
# ---------------------------------------------------------------------------------------------
GUARD_MSG=""
in_market_hours() {  # 0 = inside KR market hours (deploys refused), 1 = outside
  local rc
  if [ -x "$VENV/bin/observer-preflight" ]; then
    set +e
    GUARD_MSG=$(cd / && runuser -u "$SVC_USER" -- env ${OBSERVER_CLOCK:+OBSERVER_CLOCK="$OBSERVER_CLOCK"} \
      "$VENV/bin/observer-preflight" --config "$ETC/observer.toml" --deploy-guard 2>&1)
    rc=$?
    set -e
    case $rc in
      0) return 1 ;;
      1) return 0 ;;
      *) GUARD_MSG="observer-preflight --deploy-guard failed (exit $rc), refusing to be safe: $GUARD_MSG"; return 0 ;;
    esac
  fi
  # Built-in rule until observer-preflight is installed: Mon-Fri 08:00-16:00 Asia/Seoul, from
  # preflight (08:30) to the gap-filler (15:40). Weekday holidays count as market days here:
  # refusing a deploy on a holiday costs a --force; allowing one during a session costs data.
  local spec=${OBSERVER_CLOCK:-} when dow hm
  spec=${spec%@*}
  if [ -n "$spec" ]; then
    when=$(TZ=Asia/Seoul date -d "$spec" '+%u %H%M %Y-%m-%d %H:%M %Z') || die "OBSERVER_CLOCK='$OBSERVER_CLOCK' is not a date"
  else
    when=$(TZ=Asia/Seoul date '+%u %H%M %Y-%m-%d %H:%M %Z')
  fi
  read -r dow hm _ <<< "$when"
  if [ "$dow" -le 5 ] && [ "$((10#$hm))" -ge 800 ] && [ "$((10#$hm))" -lt 1600 ]; then
    GUARD_MSG="deploy guard: ${when#* * } is inside KR market hours (Mon-Fri 08:00-16:00 Asia/Seoul)"
    return 0
  fi
  GUARD_MSG="deploy guard: ${when#* * } is outside KR market hours"
  return 1
}

guard_or_die() {  # $1 = what would happen
  if in_market_hours; then
    if [ "$FORCE" -eq 1 ]; then
      log "$GUARD_MSG"; log "--force: going ahead with $1 anyway; collectors are not restarted"
      return 0
    fi
    log "$GUARD_MSG"
    die "refusing $1 during market hours (wait until 16:00 KST, or --force)"
  fi
}

# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
pick_python() {
  # the distribution's Python first: a service must not depend on a per-user interpreter (pyenv in
  # /root would be hidden by ProtectHome=)
  local c
  for c in /usr/bin/python3.13 /usr/bin/python3.12 /usr/bin/python3.11 /usr/bin/python3 \
           /usr/local/bin/python3.13 /usr/local/bin/python3.12 /usr/local/bin/python3.11; do
    if [ -x "$c" ] && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$c"; return 0
    fi
  done
  return 1
}

apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  changed "apt: installed ${missing[*]}"
}

ensure_dir() {  # PATH OWNER GROUP MODE
  local path=$1 owner=$2 group=$3 mode=$4 cur
  if [ ! -d "$path" ]; then
    install -d -o "$owner" -g "$group" -m "$mode" "$path"; changed "created $path ($owner:$group $mode)"; return
  fi
  cur=$(stat -c '%U %G %a' "$path")
  if [ "$cur" != "$owner $group ${mode#0}" ]; then
    chown "$owner:$group" "$path"; chmod "$mode" "$path"; changed "fixed $path: $cur -> $owner:$group $mode"
  fi
}

install_file() {  # SRC DST MODE [OWNER GROUP]  (copies only when the content or mode differs)
  local src=$1 dst=$2 mode=$3 owner=${4:-root} group=${5:-root}
  if [ -f "$dst" ] && cmp -s "$src" "$dst" && [ "$(stat -c '%a %U %G' "$dst")" = "${mode#0} $owner $group" ]; then
    return 1
  fi
  install -D -o "$owner" -g "$group" -m "$mode" "$src" "$dst"
  return 0
}

# Files that make up a release: what the venv is built from, plus the docs and units.
release_files() {
  (cd "$REPO" && for p in pyproject.toml README.md bin lib config docs systemd install.sh; do
     [ -e "$p" ] && find "$p" \( -name __pycache__ -o -name '*.egg-info' -o -name build \) -prune -o -type f -print
   done) | LC_ALL=C sort
}

code_stamp() {  # what the venv is built from: changes here mean a reinstall of the package
  (cd "$REPO" && release_files | grep -E '^(pyproject\.toml|README\.md|bin/|lib/)' | xargs -d '\n' sha256sum) | sha256sum | cut -d' ' -f1
}

program_of() {  # UNIT FILE -> the program its ExecStart runs ("" when none of ours)
  sed -n 's|^ExecStart=\(/opt/observer/venv/bin/[^ ]*\).*|\1|p' "$1" | head -1
}

# units in the repo (names as installed)
repo_units() { (cd "$REPO/systemd" && ls -1 -- *.service *.timer *.target *.slice *.path 2>/dev/null) | LC_ALL=C sort; }

# ---------------------------------------------------------------------------------------------
# uninstall
# ---------------------------------------------------------------------------------------------
do_uninstall() {
  if [ -d "$PREFIX" ] || ls "$UNIT_DIR"/observer[.-]* >/dev/null 2>&1; then
    guard_or_die "an uninstall"
  fi
  local units=() u
  if [ -f "$MANIFEST" ]; then mapfile -t units < "$MANIFEST"; else mapfile -t units < <(repo_units); fi
  if [ "$SYSTEMD" -eq 1 ]; then
    local loaded
    loaded=$(systemctl list-units --all --plain --no-legend 'observer-*' 'observer.*' 2>/dev/null | awk '{print $1}' || true)
    if [ -n "$loaded" ]; then
      # shellcheck disable=SC2086
      systemctl stop $loaded 2>/dev/null || true
      changed "stopped $(echo $loaded | wc -w) observer units"
    fi
  fi
  # every enablement symlink that points at an observer unit (template instances included)
  local link
  while IFS= read -r link; do
    rm -f "$link"; changed "disabled ${link#"$UNIT_DIR"/}"
  done < <(find "$UNIT_DIR" -mindepth 2 -maxdepth 2 -type l \( -name 'observer-*' -o -name 'observer.*' \) -path '*.wants/*' 2>/dev/null | LC_ALL=C sort)
  for u in "${units[@]}"; do
    if [ -e "$UNIT_DIR/$u" ]; then rm -f "$UNIT_DIR/$u"; changed "removed unit $u"; fi
  done
  if [ -d "$DROPIN_DIR" ]; then rm -rf "$DROPIN_DIR"; changed "removed $DROPIN_DIR"; fi
  # observer.target.wants/ and the like, now empty
  find "$UNIT_DIR" -mindepth 1 -maxdepth 1 -type d -name 'observer*' -empty -delete 2>/dev/null || true
  if [ "$SYSTEMD" -eq 1 ]; then
    systemctl daemon-reload
    systemctl reset-failed 'observer-*' 2>/dev/null || true
  fi
  if [ -d "$PREFIX" ]; then rm -rf "$PREFIX"; changed "removed $PREFIX (code and venv)"; fi
  log "kept: $ETC (config, secrets) and $DATA (data), and the user '$SVC_USER'"
}

# ---------------------------------------------------------------------------------------------
# install / upgrade
# ---------------------------------------------------------------------------------------------
do_install() {
  # 1. packages: Python >= 3.11 with venv, time zones (the timers use Asia/Seoul), D-Bus (the
  #    watchdog reads unit states over the system bus)
  local py
  if ! py=$(pick_python); then
    apt_install python3.11 python3.11-venv; py=$(pick_python) || die "no Python >= 3.11 after apt"
  fi
  if ! "$py" -c 'import ensurepip, venv' 2>/dev/null; then
    apt_install "$(basename "$py")-venv"
  fi
  apt_install tzdata ca-certificates dbus
  ok "python: $py ($("$py" -V 2>&1))"

  # 2. the service user
  if getent passwd "$SVC_USER" >/dev/null; then ok "user $SVC_USER exists"
  else
    useradd --system --user-group --home-dir "$DATA" --no-create-home --shell /usr/sbin/nologin \
      --comment "Stock Trading Observer" "$SVC_USER"
    changed "created system user $SVC_USER"
  fi

  # 3. what would change? (the guard looks at this before anything is touched)
  local want_code have_code="" upgrade=0 unit_diff=0 u
  want_code=$(code_stamp)
  [ -f "$PREFIX/.code-stamp" ] && have_code=$(cat "$PREFIX/.code-stamp")
  for u in $(repo_units); do
    cmp -s "$REPO/systemd/$u" "$UNIT_DIR/$u" || unit_diff=1
  done
  cmp -s "$REPO/systemd/observer-hardening.conf" "$DROPIN_DIR/10-hardening.conf" || unit_diff=1
  if [ -x "$VENV/bin/python" ] && { [ "$want_code" != "$have_code" ] || [ "$unit_diff" -eq 1 ]; }; then
    upgrade=1
  fi
  local market=0
  if [ "$upgrade" -eq 1 ]; then
    guard_or_die "an upgrade"
    in_market_hours && market=1
  fi

  # 4. directories
  ensure_dir "$PREFIX" root root 0755
  ensure_dir "$LIBEXEC" root root 0755
  ensure_dir "$ETC" root "$SVC_USER" 0750
  ensure_dir "$DATA" "$SVC_USER" "$SVC_USER" 0750
  ensure_dir "$DATA/state" "$SVC_USER" "$SVC_USER" 0750
  # the restart broker (root without capabilities) deletes requests here through the group
  ensure_dir "$DATA/state/unitctl" "$SVC_USER" "$SVC_USER" 0770

  # 5. the release copy (docs, units, installer) and the venv
  local stage
  stage=$(mktemp -d "$PREFIX/.stage.XXXXXX")
  (cd "$REPO" && release_files | tar --no-recursion -cf - -T -) | tar -C "$stage" -xf -
  if [ -d "$RELEASE" ] && diff -r -q -x __pycache__ -x build -x '*.egg-info' "$stage" "$RELEASE" >/dev/null 2>&1; then
    rm -rf "$stage"; ok "release copy $RELEASE is current"
  else
    rm -rf "$RELEASE"; mv "$stage" "$RELEASE"; chmod -R u=rwX,go=rX "$RELEASE"
    changed "release copy $RELEASE updated"
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    "$py" -m venv "$VENV"; changed "venv created at $VENV"
  fi
  if [ "$want_code" = "$have_code" ] && "$VENV/bin/python" -c 'import observer' 2>/dev/null; then
    ok "venv: the installed package is current"
  else
    local wheels
    wheels=$(mktemp -d "$PREFIX/.wheels.XXXXXX")
    log "venv: building and installing the package (this takes a minute)"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
    local out
    if ! out=$(cd "$wheels" && "$VENV/bin/python" -m pip wheel -q --disable-pip-version-check --no-deps -w "$wheels" "$RELEASE" 2>&1); then
      printf '%s\n' "$out" >&2; die "building the wheel failed"
    fi
    rm -rf "$RELEASE/build" "$RELEASE"/lib/*.egg-info
    local whl; whl=$(ls "$wheels"/*.whl) || die "building the wheel failed"
    # (pip's output is shown only when it fails)
    if ! out=$("$VENV/bin/python" -m pip install -q --disable-pip-version-check "$whl" 2>&1 &&
               "$VENV/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$whl" 2>&1); then
      printf '%s\n' "$out" >&2; die "installing the package into $VENV failed"
    fi
    rm -rf "$wheels"
    echo "$want_code" > "$PREFIX/.code-stamp"
    changed "venv: package installed ($(cd / && "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("stock-trading-observer"))'))"
  fi
  if install_file "$REPO/lib/observer/deploy/unitctl.sh" "$LIBEXEC/observer-unitctl" 0755; then
    changed "restart broker $LIBEXEC/observer-unitctl"
  fi

  # 6. config (never overwritten) and the secrets template (0600, the service user's)
  if [ -f "$ETC/observer.toml" ]; then
    ok "config $ETC/observer.toml kept as it is"
  elif [ -f "$REPO/config/observer.toml" ]; then
    install -o root -g "$SVC_USER" -m 0640 "$REPO/config/observer.toml" "$ETC/observer.toml"
    changed "config $ETC/observer.toml installed from config/observer.toml"
  else
    printf '# Stock Trading Observer configuration. Empty = every default; see docs/configuration.md.\n' > "$ETC/observer.toml"
    chown root:"$SVC_USER" "$ETC/observer.toml"; chmod 0640 "$ETC/observer.toml"
    changed "config $ETC/observer.toml created empty (all defaults; the repo has no config/observer.toml)"
  fi
  if [ ! -f "$ETC/secrets.env" ]; then
    (umask 077; cat > "$ETC/secrets.env" <<'SECRETS'
# Stock Trading Observer secrets: KEY=VALUE, one per line. Mode 0600, owned by the service user.
# Services get a private copy through systemd credentials (LoadCredential=secrets.env:...),
# never this path. Fill in, then: sudo systemctl restart observer.target
KIS_APP_KEY=
KIS_APP_SECRET=
KIS_ACCOUNT=
TELEGRAM_BOT_TOKEN=
TELEGRAM_CHAT_ID=
SECRETS
    )
    chown "$SVC_USER:$SVC_USER" "$ETC/secrets.env"; chmod 0600 "$ETC/secrets.env"
    changed "secrets template $ETC/secrets.env (0600) — fill it in"
  elif [ "$(stat -c '%a %U' "$ETC/secrets.env")" != "600 $SVC_USER" ]; then
    chown "$SVC_USER:$SVC_USER" "$ETC/secrets.env"; chmod 0600 "$ETC/secrets.env"
    changed "secrets file permissions fixed to 0600 $SVC_USER"
  else
    ok "secrets $ETC/secrets.env kept (0600)"
  fi

  # 7. units: copy what differs, drop what the release no longer has, reload once
  local units_changed=0 new_units
  new_units=$(repo_units)
  for u in $new_units; do
    if install_file "$REPO/systemd/$u" "$UNIT_DIR/$u" 0644; then changed "unit $u"; units_changed=1; fi
  done
  if install_file "$REPO/systemd/observer-hardening.conf" "$DROPIN_DIR/10-hardening.conf" 0644; then
    changed "hardening drop-in $DROPIN_DIR/10-hardening.conf"; units_changed=1
  fi
  if [ -f "$MANIFEST" ]; then
    for u in $(LC_ALL=C comm -23 "$MANIFEST" <(echo "$new_units")); do
      [ "$SYSTEMD" -eq 1 ] && systemctl disable --now "$u" >/dev/null 2>&1 || true
      rm -f "$UNIT_DIR/$u"; changed "removed unit $u (no longer in the release)"; units_changed=1
    done
  fi
  if ! { [ -f "$MANIFEST" ] && [ "$(cat "$MANIFEST")" = "$new_units" ]; }; then
    echo "$new_units" > "$MANIFEST"
  fi
  if [ "$units_changed" -eq 1 ] && [ "$SYSTEMD" -eq 1 ]; then
    systemctl daemon-reload; log "systemctl daemon-reload"
  fi

  # 8. enable what this release can run (a unit whose program is not in the release stays off)
  local enable=(observer.target observer-unitctl.path) skipped=()
  runnable() {  # UNIT FILE -> 0 when its program (if any) is installed
    local prog; prog=$(program_of "$UNIT_DIR/$1")
    [ -z "$prog" ] || [ -x "$prog" ]
  }
  runnable observer-watchdog.service && enable+=(observer-watchdog.service) || skipped+=(observer-watchdog.service)
  for t in preflight gap-filler backup retention; do
    runnable "observer-$t.service" && enable+=("observer-$t.timer") || skipped+=("observer-$t.timer")
  done
  if runnable observer-track-a.service; then enable+=(observer-track-a.timer observer-track-a-stop.timer)
  else skipped+=(observer-track-a.timer); fi
  for p in "${PROVIDER_LIST[@]}"; do
    if runnable observer-track-b@.service; then enable+=("observer-track-b@$p.timer" "observer-track-b-stop@$p.timer")
    else skipped+=("observer-track-b@$p.timer"); fi
  done
  if [ "$WITH_SIM" -eq 1 ]; then
    runnable observer-sim.service && enable+=(observer-sim.service) || skipped+=(observer-sim.service)
  fi
  for u in "${enable[@]}"; do
    if systemctl -q is-enabled "$u" 2>/dev/null; then continue; fi
    systemctl enable -q "$u"
    changed "enabled $u"
  done
  ok "enabled: ${enable[*]}"
  [ ${#skipped[@]} -eq 0 ] || log "not enabled (program not in this release yet): ${skipped[*]}"

  # 9. start, and on an upgrade restart what runs the old code (collectors only outside their windows)
  if [ "$SYSTEMD" -eq 0 ]; then
    log "systemd is not running (image build or container): units installed and enabled, nothing started"
  elif [ "$START" -eq 1 ]; then
    for u in "${enable[@]}"; do
      [[ $u == observer.target ]] && continue
      if ! systemctl -q is-active "$u"; then
        systemctl start "$u" || log "warning: $u did not start (systemctl status $u)"
        changed "started $u"
      fi
    done
    systemctl -q is-active observer.target || { systemctl start observer.target; changed "started observer.target"; }
    if [ "$upgrade" -eq 1 ]; then
      local running
      running=$(systemctl list-units --state=active --plain --no-legend 'observer-watchdog.service' 'observer-sim.service' \
                'observer-track-a.service' 'observer-track-b@*.service' 2>/dev/null | awk '{print $1}')
      for u in $running; do
        case "$u" in
          observer-track-*)
            if [ "$market" -eq 1 ]; then log "$u keeps running the old code until its window ends"; continue; fi ;;
        esac
        systemctl restart "$u" && changed "restarted $u on the new release"
      done
    fi
  fi

  # 10. preflight: its table on the terminal, as the service user, like the 08:30 run
  if [ "$PREFLIGHT" -eq 1 ] && [ "$START" -eq 1 ]; then
    if [ -x "$VENV/bin/observer-preflight" ]; then
      log "preflight:"
      set +e
      (cd / && runuser -u "$SVC_USER" -- env ${OBSERVER_CLOCK:+OBSERVER_CLOCK="$OBSERVER_CLOCK"} \
        "$VENV/bin/observer-preflight" --config "$ETC/observer.toml")
      local rc=$?
      set -e
      case $rc in
        0) log "preflight: ok" ;;
        1) log "preflight: warnings (see the table)" ;;
        2) log "preflight: FAILED (exit 2: the config or the secrets are wrong): the host is installed but not ready; fix the items above" ;;
        *) log "preflight: FAILED (exit $rc): the host is installed but not ready; fix the items above" ;;
      esac
    else
      log "preflight: observer-preflight is not in this release yet; skipped"
    fi
  fi
}

case "$MODE" in
  guard)
    if in_market_hours; then log "$GUARD_MSG"; exit 1; fi
    log "$GUARD_MSG"; exit 0 ;;
  uninstall) do_uninstall ;;
  install) do_install ;;
esac

if [ ${#CHANGES[@]} -eq 0 ]; then
  log "nothing changed"
else
  log "${#CHANGES[@]} change(s)"
fi
