#!/bin/bash
# observer-unitctl — the restart broker: the watchdog's one narrow privilege.
#
# Run by observer-unitctl.service (root, no capabilities, no network) whenever
# observer-unitctl.path sees a file in REQUEST_DIR (/var/lib/observer/state/unitctl). The watchdog,
# running as the unprivileged `observer` user, asks for an action by creating an empty file named
#   VERB:UNIT
# and this script carries out exactly these, nothing else:
#   restart:observer-track-a.service
#   restart:observer-track-b@PROVIDER.service   (only a provider whose window timer is enabled)
#   restart:observer-sim.service
#   start:observer-retention.service            (emergency retention when the disk is > 80 %)
# Every request is consumed (deleted) first, then checked; anything else is logged and ignored.
# It never fails the unit: a failing trigger would make systemd stop watching the directory.
set -u
dir=${1:?usage: observer-unitctl REQUEST_DIR}
shopt -s nullglob dotglob

allowed() {  # VERB UNIT -> 0 when the request is on the list
  local verb=$1 unit=$2 p
  case "$verb:$unit" in
    restart:observer-track-a.service|restart:observer-sim.service|start:observer-retention.service) return 0 ;;
    restart:observer-track-b@*.service)
      p=${unit#observer-track-b@}; p=${p%.service}
      [[ $p =~ ^[a-z0-9]{1,32}$ ]] || return 1
      systemctl -q is-enabled "observer-track-b@$p.timer" 2>/dev/null ;;
    *) return 1 ;;
  esac
}

for f in "$dir"/*; do
  name=${f##*/}
  rm -rf -- "$f" || { echo "cannot remove request '$name'"; continue; }
  case "$name" in .*) continue ;; esac          # temporary/hidden files are not requests
  verb=${name%%:*}; unit=${name#*:}
  if [[ $name != *:* ]] || ! allowed "$verb" "$unit"; then
    echo "refused request '${name//[^[:alnum:]@:._-]/?}': not on the allowed list"
    continue
  fi
  if systemctl --no-block "$verb" "$unit"; then
    echo "$verb $unit: queued"
  else
    echo "$verb $unit: systemctl failed (exit $?)"
  fi
done
exit 0
