#!/usr/bin/env bash
# The test command: lint (ruff, the import contracts), then the whole suite on SQLite, then
# (when a PostgreSQL admin URL is given in FACEWARDEN_TEST_PG_URL, as .ci/run does) the whole
# suite again on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
# The set-up command installs the runtime only; the test tools come from the dev extra. Install
# (or complete) it here, so this command works right after the set-up command on a fresh machine.
[ -x .venv/bin/python ] || python3 -m venv .venv
[ -x .venv/bin/ruff ] && [ -x .venv/bin/pytest ] && [ -x .venv/bin/lint-imports ] ||
  .venv/bin/pip install -q -e '.[dev]'
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
.venv/bin/lint-imports --no-cache --no-logo
echo "== tests on SQLite (embedded default)"
env -u FACEWARDEN_TEST_PG_URL .venv/bin/pytest -q "$@"
if [ -n "${FACEWARDEN_TEST_PG_URL:-}" ]; then
  echo "== tests on PostgreSQL"
  .venv/bin/pytest -q "$@"
fi
