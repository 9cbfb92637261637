"""Exit codes, the same for every program (docs/architecture.md, "Command line and bad input").

Here, below everything, so the code that runs a program's day (observer.collect.runtime) can return
them without importing the command layer; observer.cli re-exports them for the programs."""

EXIT_OK = 0          # done, nothing wrong
EXIT_PROBLEMS = 1    # ran, found problems (verify: damage; preflight: warnings; guard: refused)
EXIT_USAGE = 2       # bad arguments or configuration
EXIT_FAILED = 3      # could not do its job (broker unreachable, disk refuses, ...)
