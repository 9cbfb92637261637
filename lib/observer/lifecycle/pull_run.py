"""observer-backup-pull's run over an open SFTP session: pull and verify each day, report what was refused
or failed verification, then the PC's own retention. See docs/backup.md; the pulling is observer.lifecycle.pull."""

from __future__ import annotations

import json
import sys

from observer.core.clock import Clock
from observer.core.logging import get_logger
from observer.lifecycle import pull as pl
from observer.lifecycle.notify import notify_failure, notify_invalid

PROGRAM = "observer-backup-pull"
log = get_logger(PROGRAM)


def pull_days(sftp, transport, cfg: pl.PullConfig, days: list[str], *, clock: Clock, force: bool,
              progress: pl.TermProgress | None, echo: bool) -> bool:
    """Pull `days` (YYYYMMDD); True when something was refused, failed verification or is kept unusable.
    A day that cannot be read goes on to the next; a lost connection raises PullError. `echo`: each
    day's result as a JSON line on stderr."""
    bad = False
    pulled: set[str] = set()   # never deleted locally in the run that pulled them
    for day in days:
        try:
            r = pl.pull_day(sftp, cfg, day, force=force, progress=progress, now=clock.now())
        except FileNotFoundError as e:
            r = pl.DayResult(day, "mismatch", problems=[f"missing on the server: {e}"])
        except (OSError, ValueError) as e:
            if not transport.is_active():
                raise pl.PullError(f"connection lost while pulling {day}: {e}") from None
            # this day's files could not be read as required (permissions, ...): the others go on
            r = pl.DayResult(day, "mismatch", problems=[f"{day}: {type(e).__name__}: {e}"])
        fields = {"date": r.day, "status": r.status, "fetched_bytes": r.fetched_bytes, "reused": r.reused}
        if r.status == "pulled":
            pulled.add(day)
        if r.status == "invalid":  # names, symlinks, schema: refused, reported, not pulled
            bad = True
            fields.update(problems=r.problems)
            notify_invalid(None, None, [(day, "; ".join(r.problems))])
            print(f"{PROGRAM}: {day}: REFUSED, not pulled, no receipt written: " + "; ".join(r.problems),
                  file=sys.stderr)
        elif r.status == "mismatch":
            bad = True
            fields.update(problems=r.problems, quarantined=r.quarantined)
            notify_failure(None, "backup_pull", ok=False, **fields)
            print(f"{PROGRAM}: {day}: VERIFICATION FAILED, no receipt written: " + "; ".join(r.problems),
                  file=sys.stderr)
        else:
            log.info("backup_pull", extra={"event_fields": fields})
        if echo:
            print(json.dumps(fields), file=sys.stderr)
    cleanup = pl.local_retention(cfg, clock.now(), pulled)
    if cleanup.removed or cleanup.quarantine_removed:
        log.info("local retention", extra={"removed": cleanup.removed,
                                           "quarantine_removed": cleanup.quarantine_removed})
    if cleanup.problems:  # a package whose receipt is unusable is kept; say so
        bad = True
        notify_invalid(None, None, [(p[:8], p) for p in cleanup.problems])
        for prob in cleanup.problems:
            print(f"{PROGRAM}: local package {prob}", file=sys.stderr)
    return bad
