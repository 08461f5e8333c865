"""Runs many ``facewarden`` command lines one after the other in this one process, each through
the CLI's own entry point (``facewarden.cli.app:main``, as the ``facewarden`` command does),
and prints, as JSON, each one's exit status and what it wrote to stdout and stderr.

    python tests/cli_batch.py RESULTS.json < runs.json    # runs.json: a list of argument lists

A process per command line costs its start and imports (and, for many commands, loading the
models) each time; tests that feed the CLI dozens of bad inputs use this instead, and keep a
few real ``facewarden`` processes to prove the same of the installed command.

Anything a run lets escape other than ``SystemExit`` (which ``main`` would not catch either)
is reported as a traceback in its stderr; what reaches this process's own stderr outside the
captured runs (e.g. a logging handler bound to the real stream) is the test's to check.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import traceback


def run(args: list[str]) -> dict[str, object]:
    from facewarden.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    code: object = 0
    sys.argv = ["facewarden", *args]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
        except SystemExit as exc:
            code = exc.code
        except BaseException:
            traceback.print_exc(file=err)
            code = "escaped"
    if code is None:
        code = 0
    elif not isinstance(code, int) and code != "escaped":  # sys.exit("message"): status 1
        err.write(f"{code}\n")
        code = 1
    return {"args": args, "code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


if __name__ == "__main__":
    results_path, runs = sys.argv[1], json.load(sys.stdin)
    results = [run(args) for args in runs]
    with open(results_path, "w") as f:  # (not stdout: a command might write there directly)
        json.dump(results, f)
