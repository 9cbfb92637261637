"""The only code that touches the data tree: paths, the JSONL writer, the events log, the reader."""
