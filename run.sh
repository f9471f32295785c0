#!/usr/bin/env bash
# One entry point for people and CI.
#   ./run.sh up      run the whole system on this machine (simulated hardware by default)
#   ./run.sh test    everything CI checks: ruff, mypy --strict, pytest
#   ./run.sh bench   print the benchmark figures (gridzero bench ...; --plot FILE.png draws them)
#   ./run.sh install [dev|plot]   only create .venv (runtime dependencies; dev: test tools too;
#                                 plot: matplotlib for the bench's figures)
# On a fresh Debian machine it installs what it needs: mosquitto (apt, as root) and a
# virtual environment in .venv: `up` the runtime dependencies only, hash-checked
# (requirements.lock); `bench` also matplotlib and `test` also the test tools, at the
# versions pinned in constraints.txt.
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
PY=${PYTHON:-python3}

need_apt() {
  local missing=()
  command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto mosquitto-clients)
  if [ "${1:-}" = test ]; then
    command -v telnet >/dev/null 2>&1 || missing+=(telnet)
    command -v tmux >/dev/null 2>&1 || missing+=(tmux)
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # dashboard screenshot (tests/homeassistant)
  fi
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "run.sh: please install ${missing[*]} (e.g. sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "run.sh: installing ${missing[*]}" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

# need_venv runtime|dev|plot: .venv with the runtime dependencies and the build backend from
# requirements.lock (exact versions, every file checked against its sha256), then gridzero
# itself (editable, built offline by that backend); `dev` adds the test and lint tools at the
# versions in constraints.txt, `plot` matplotlib for the bench's figures the same way (a
# developer's tool like the test tools, never in the device images; the lead moves the bench to
# a tools distribution). The venv's own pip is used as it is (no unpinned upgrade).
need_venv() {
  local stamp=$VENV/.installed-$1
  if [ ! -x $VENV/bin/python ]; then
    "$PY" -m venv $VENV
  fi
  if [ ! -f $stamp ] || [ pyproject.toml -nt $stamp ] || [ requirements.lock -nt $stamp ] ||
     [ constraints.txt -nt $stamp ]; then
    $VENV/bin/python -m pip install -q --require-hashes --only-binary=:all: -r requirements.lock >&2
    if [ "$1" = dev ] || [ "$1" = plot ]; then
      $VENV/bin/python -m pip install -q --no-build-isolation -c constraints.txt -e ".[$1]" >&2
    else
      $VENV/bin/python -m pip install -q --no-build-isolation --no-deps -e . >&2
    fi
    touch $stamp
  fi
}

cmd=${1:-help}
shift || true
case "$cmd" in
  test)
    need_apt test
    need_venv dev
    failed=()
    echo "== ruff check"
    $VENV/bin/ruff check gridzero tests scripts || failed+=("ruff check")
    echo "== ruff format --check"
    $VENV/bin/ruff format --check gridzero tests scripts || failed+=("ruff format")
    echo "== mypy --strict gridzero"
    $VENV/bin/mypy gridzero || failed+=(mypy)
    echo "== pytest"
    $VENV/bin/pytest "$@" || failed+=(pytest)
    if [ ${#failed[@]} -gt 0 ]; then
      echo "FAILED: ${failed[*]}" >&2
      exit 1
    fi
    ;;
  up)
    need_apt up
    need_venv runtime
    exec $VENV/bin/gridzero up "$@"
    ;;
  bench)
    need_venv plot
    exec $VENV/bin/gridzero bench "$@"
    ;;
  install)
    # only the venv: `install` for running (what `up` installs), `install dev` for testing
    case "${1:-runtime}" in
      runtime | dev | plot) need_venv "${1:-runtime}" ;;
      *) echo "run.sh install: expected nothing, 'dev' or 'plot', got '$1'" >&2; exit 2 ;;
    esac
    ;;
  *)
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    [ "$cmd" = help ] || exit 2
    ;;
esac
