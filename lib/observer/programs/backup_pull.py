"""observer-backup-pull: runs on the user's PC (cron or a systemd user timer). See docs/backup.md."""

from __future__ import annotations

import sys

from observer import cli
from observer.core import notify
from observer.core.clock import yyyymmdd
from observer.lifecycle import pull as pl
from observer.lifecycle.notify import notify_failure
from observer.lifecycle.pull_run import PROGRAM, pull_days


def main(argv=None) -> int:
    p = cli.make_parser(PROGRAM, "Pull verified backup packages from the server over SFTP (key auth, strict host key), "
                        "verify every archive's SHA-256 against the manifest, keep them locally and write the "
                        "receipt (pulled.json) back. Resumes interrupted downloads.")
    p.add_argument("--date", type=cli.date_arg, metavar="YYYYMMDD", help="only this day's package")
    p.add_argument("--force", action="store_true", help="pull and verify again even if a receipt exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar even on a terminal")
    for name, kind, what in (("host", str, "server"), ("port", int, "SSH port"), ("user", str, "SFTP user"),
                             ("key-file", str, "private key"), ("known-hosts", str, "known_hosts file"),
                             ("remote-dir", str, "backup dir on the server"), ("local-dir", str, "local package dir"),
                             ("pc-id", str, "name of this PC in receipts"),
                             ("limit-mb-s", float, "download rate limit, MB/s")):
        p.add_argument(f"--{name}", type=kind, help=f"{what} (overrides [pull] {name.replace('-', '_')})")
    args = p.parse_args(argv)
    ctx = cli.start(PROGRAM, args)
    try:
        cfg = pl.PullConfig.from_config(ctx.cfg, host=args.host, port=args.port, user=args.user,
                                        key_file=args.key_file, known_hosts=args.known_hosts,
                                        remote_dir=args.remote_dir, local_dir=args.local_dir, pc_id=args.pc_id,
                                        limit_mb_s=args.limit_mb_s)
    except (ValueError, TypeError) as e:
        print(f"{PROGRAM}: config: {e}", file=sys.stderr)
        return cli.EXIT_USAGE
    progress = None if args.quiet or not sys.stderr.isatty() else pl.TermProgress()
    notify.ready(f"connecting to {cfg.host}")  # the watchdog runs from here (systemd user unit)
    try:
        transport, sftp = pl.connect(cfg)
    except pl.PullError as e:
        print(f"{PROGRAM}: {e}", file=sys.stderr)
        notify_failure(None, "backup_pull", ok=False, error=str(e))
        return cli.EXIT_FAILED
    try:
        days = [yyyymmdd(args.date)] if args.date else pl.remote_days(sftp, cfg)
        bad = pull_days(sftp, transport, cfg, days, clock=ctx.clock, force=args.force, progress=progress,
                        echo=progress is not None or args.log_level == "DEBUG")
    except pl.PullError as e:
        print(f"{PROGRAM}: {e}", file=sys.stderr)
        notify_failure(None, "backup_pull", ok=False, error=str(e))
        return cli.EXIT_FAILED
    except OSError as e:
        print(f"{PROGRAM}: {type(e).__name__}: {e}", file=sys.stderr)
        notify_failure(None, "backup_pull", ok=False, error=str(e))
        return cli.EXIT_FAILED
    finally:
        transport.close()
    return cli.EXIT_PROBLEMS if bad else cli.EXIT_OK
