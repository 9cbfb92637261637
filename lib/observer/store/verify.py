"""The tree's fsck (observer-verify, observer-demo): every line parses and satisfies its record contract,
every JSONL file is where the layout allows it and holds only its kinds of record."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from observer.store import paths
from observer.store.reader import ReadIssue, iter_jsonl, read_file

MAX_SHOWN = 50


def verify_tree(root: Path, day: str | None = None) -> dict:
    """Check every JSONL file (of one day, if given). Returns a report dict."""
    counts: Counter[str] = Counter()
    files: Counter[str] = Counter()
    problems: list[dict] = []

    def issue(i: ReadIssue):
        problems.append({"file": i.file, "line": i.line, "problem": i.problem})

    for rel in iter_jsonl(root, issue):  # a symlink or a FIFO named *.jsonl is a problem, never read
        c = paths.classify(rel)
        if c is None:
            if day is None or day in rel:
                problems.append({"file": rel, "line": 0, "problem": "file not where the tree layout allows a JSONL file"})
            continue
        kind, fday = c
        if day is not None and fday != day:
            continue
        files[kind] += 1
        allowed = paths.FILE_KINDS[kind]
        part = "recovered" if kind == "recovered" else None
        for n, rec in enumerate(read_file(root / rel, issue, part, validate=True), 1):
            if rec.get("kind") not in allowed:
                problems.append({"file": rel, "line": n,
                                 "problem": f"record kind {rec.get('kind')!r} does not belong in {kind} (allowed: {', '.join(allowed)})"})
            counts[kind] += 1
    for p in problems:  # report paths relative to the tree
        p["file"] = str(Path(p["file"]).relative_to(root)) if str(p["file"]).startswith(str(root)) else p["file"]
    return {"root": str(root), "date": day, "files": dict(files), "records": dict(counts),
            "problems": problems, "clean": not problems}


def format_report(rep: dict) -> str:
    lines = [f"observer-verify {rep['root']}" + (f" --date {rep['date']}" if rep["date"] else "")]
    lines.append(f"{'partition':<12}{'files':>8}{'records':>12}")
    for k in sorted(set(rep["files"]) | set(rep["records"])):
        lines.append(f"{k:<12}{rep['files'].get(k, 0):>8}{rep['records'].get(k, 0):>12}")
    if rep["clean"]:
        lines.append("clean: every line parses and satisfies its contract")
    else:
        lines.append(f"{len(rep['problems'])} problem(s):")
        for p in rep["problems"][:MAX_SHOWN]:
            lines.append(f"  {p['file']}:{p['line']}: {p['problem']}")
        if len(rep["problems"]) > MAX_SHOWN:
            lines.append(f"  ... {len(rep['problems']) - MAX_SHOWN} more (use --json for all)")
    return "\n".join(lines)
