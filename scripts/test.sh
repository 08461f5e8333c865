#!/usr/bin/env bash
# The test command: lint (ruff, the import contracts, mypy), then the suite on SQLite, then (when a
# PostgreSQL admin URL is given in FACEWARDEN_TEST_PG_URL, as .ci/run does) again on PostgreSQL.
#
#   bash scripts/test.sh                 the whole suite
#   bash scripts/test.sh --fast          the edit loop: every test not marked slow
#   bash scripts/test.sh --fast -x -k search    further arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
PYTEST_ARGS=()
for arg in "$@"; do
  if [ "$arg" = --fast ]; then PYTEST_ARGS+=(-m "not slow"); else PYTEST_ARGS+=("$arg"); fi
done
# The set-up command installs the runtime only; the test tools come from the dev extra. Install
# (or complete) it here, so this command works right after the set-up command on a fresh machine.
dev_tools_installed() {
  [ -x .venv/bin/ruff ] && [ -x .venv/bin/pytest ] && [ -x .venv/bin/lint-imports ] &&
    [ -x .venv/bin/mypy ] && .venv/bin/python -c 'import pytest_timeout' 2>/dev/null
}
[ -x .venv/bin/python ] || python3 -m venv .venv
dev_tools_installed || .venv/bin/pip install -q -e '.[dev]'
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
.venv/bin/lint-imports --no-cache --no-logo
.venv/bin/mypy  # src/, with the pydantic plugin: [tool.mypy] in pyproject.toml
echo "== tests on SQLite (embedded default)"
env -u FACEWARDEN_TEST_PG_URL .venv/bin/pytest -q "${PYTEST_ARGS[@]}"
if [ -n "${FACEWARDEN_TEST_PG_URL:-}" ]; then
  echo "== tests on PostgreSQL"
  .venv/bin/pytest -q "${PYTEST_ARGS[@]}"
fi
