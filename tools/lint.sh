#!/usr/bin/env bash
# Lint check (default): ruff lint, ruff format --check, clang-format --dry-run over cpp/.
# --fix: apply ruff --fix, ruff format and clang-format -i instead.
# Tools come from the `lint` extra: pip install -c constraints.txt ".[lint]"
set -euo pipefail
cd "$(dirname "$0")/.."

py_paths=(python tests bench examples)
mapfile -t cpp_files < <(git ls-files 'cpp/*.cpp' 'cpp/*.hpp' 'cpp/*.cu' 'cpp/*.cuh')

if [[ "${1:-}" == "--fix" ]]; then
  ruff check --fix "${py_paths[@]}"
  ruff format "${py_paths[@]}"
  clang-format -i "${cpp_files[@]}"
  exit 0
elif [[ $# -gt 0 ]]; then
  echo "usage: tools/lint.sh [--fix]" >&2
  exit 2
fi

status=0
echo "== ruff check"
ruff check "${py_paths[@]}" || status=1
echo "== ruff format --check"
ruff format --check "${py_paths[@]}" || status=1
echo "== clang-format --dry-run"
clang-format --dry-run --Werror "${cpp_files[@]}" || status=1
if [[ $status -ne 0 ]]; then
  echo "lint failed: tools/lint.sh --fix applies the formatters and ruff's safe fixes" >&2
fi
exit $status
