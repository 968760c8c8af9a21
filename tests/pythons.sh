#!/usr/bin/env bash
# Run the given test files on every other supported Python (3.12, 3.13), each in its own
# virtualenv (.venv-py3.12, .venv-py3.13, made once and kept). An interpreter that cannot be
# found is said in one line and the others go on: never a silent skip.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
for version in 3.12 3.13; do
    # the first candidate that runs: a pyenv shim is on PATH even where that version is not selected
    python=""
    for candidate in $(command -v "python$version") $(ls -1d "$HOME"/.pyenv/versions/"$version".*/bin/"python$version" 2>/dev/null | sort -V -r); do
        if "$candidate" -c "" 2>/dev/null; then python=$candidate; break; fi
    done
    if [ -z "$python" ]; then
        echo "python$version not found (install it, e.g. with pyenv): its checks did not run"
        continue
    fi
    venv=".venv-py$version"
    if [ ! -f "$venv/.installed" ] || [ pyproject.toml -nt "$venv/.installed" ]; then
        "$python" -m venv "$venv" &&
        "$venv/bin/python" -m pip install -q --disable-pip-version-check -e ".[parsl,test]" &&
        touch "$venv/.installed" || { echo "python$version: installing the test tools failed"; status=1; continue; }
    fi
    echo "== Python $version: $*"
    PATH="$PWD/$venv/bin:$PATH" "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@" || status=1
done
exit $status
