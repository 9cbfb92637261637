#!/usr/bin/env bash
# security_table.sh — the exposure score of every observer service, as the markdown table in
# docs/deployment.md. Anyone can rerun it; it changes nothing.
#
#   lib/observer/deploy/security_table.sh            the repo's systemd/ (laid out in a temp root
#                                                     exactly as install.sh installs it)
#   lib/observer/deploy/security_table.sh --root /   the units installed on this host
#
# Scores come from `systemd-analyze security --offline=true` (0 = nothing exposed, 10 = everything;
# ≤ 2.0 is "OK", the project's bar). Template units are scored as their `kis` instance.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
ROOT=""
case "${1:-}" in
  --root) ROOT=${2:?--root needs a directory} ;;
  "") ;;
  -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: $0 [--root DIR]" >&2; exit 2 ;;
esac

tmp=""
cleanup() { [ -z "$tmp" ] || rm -rf "$tmp"; }
trap cleanup EXIT
if [ -z "$ROOT" ]; then
  tmp=$(mktemp -d)
  ROOT=$tmp
  mkdir -p "$ROOT/etc/systemd/system/observer-.service.d"
  cp "$REPO"/systemd/*.service "$ROOT/etc/systemd/system/"
  cp "$REPO/systemd/observer-hardening.conf" "$ROOT/etc/systemd/system/observer-.service.d/10-hardening.conf"
fi

echo "| unit | exposure | verdict |"
echo "|---|---|---|"
fail=0
for f in "$ROOT"/etc/systemd/system/observer-*.service; do
  unit=${f##*/}
  case "$unit" in *@.service) unit=${unit%@.service}@kis.service ;; esac
  line=$(systemd-analyze security --offline=true --root="$ROOT" --no-pager "$unit" 2>&1 | tail -1)
  # "→ Overall exposure level for X: 1.1 OK 🙂"
  score=$(sed -n 's/.*: \([0-9][0-9.]*\) \([A-Z]*\).*/\1/p' <<< "$line")
  verdict=$(sed -n 's/.*: \([0-9][0-9.]*\) \([A-Z]*\).*/\2/p' <<< "$line")
  [ -n "$score" ] || { echo "$unit: could not read a score from: $line" >&2; fail=1; continue; }
  echo "| \`$unit\` | $score | $verdict |"
  awk -v s="$score" 'BEGIN { exit !(s > 2.0) }' && fail=1
done
exit $fail
