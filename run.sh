#!/usr/bin/env bash
# One entry point for people and CI.
#   ./run.sh up      run the whole system on this machine (simulated hardware by default)
#   ./run.sh test    everything CI checks: ruff, mypy --strict, pytest
#   ./run.sh bench   print the benchmark figures
#   ./run.sh install [plot|dev]   only create .venv (runtime; plot: + matplotlib; dev: + test tools)
# On a fresh Debian machine it installs what it needs: mosquitto (apt, as root) and a
# virtual environment in .venv from uv.lock (hash-checked): `up` and `bench` without the test
# tools, `test` with them.
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
PY=${PYTHON:-python3}

need_apt() {
  local missing=()
  command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
  # the broker without its clients (installed alone by hand): `up` prints a mosquitto_sub line
  command -v mosquitto_sub >/dev/null 2>&1 || missing+=(mosquitto-clients)
  if [ "${1:-}" = test ]; then
    command -v telnet >/dev/null 2>&1 || missing+=(telnet)
    command -v tmux >/dev/null 2>&1 || missing+=(tmux)
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # dashboard screenshot (tests/homeassistant)
    # ha-peer runs the current Home Assistant (it needs a newer Python) in a Debian root filesystem
    command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
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

# need_venv runtime|plot|dev: .venv with the whole workspace (the library, every service, the
# tools) at the versions in uv.lock, each file checked against the lock's sha256, workspace
# members editable. uv itself comes from tools/build-tools.txt (exact version, hash-checked) into its own
# small venv, .uv. `plot` adds the bench's extras: matplotlib for its figures (`plot`) and
# HiGHS for its lower bound (`bound`);
# `dev` the test and lint tools too (the lock's `dev` group).
need_venv() {
  venv_serves "$1" && return 0
  # Two commands started at once (two `bench` runs after a pull) must not sync the same venv
  # together: uv then leaves editable installs half-written. The second waits, then finds the
  # venv made.
  exec 9>"$VENV.lock"
  command -v flock > /dev/null && flock 9
  venv_serves "$1" || make_venv "$(venv_level "$1")"
  exec 9>&-
}

venv_level() {
  # a venv made for more and out of date is made again for as much: `bench` after a pull
  # must not take the test tools away from a developer's venv
  local have
  for have in dev plot; do
    if [ -f $VENV/.installed-$have ]; then echo $have; return; fi
    [ "$have" = "$1" ] && break
  done
  echo "$1"
}

venv_serves() {
  # a venv made for more (dev > plot > runtime) serves less: `up` after `test` keeps the tools
  local have
  for have in dev plot runtime; do
    if [ -f $VENV/.installed-$have ] && [ -x $VENV/bin/python ] &&
       [ -z "$(find uv.lock pyproject.toml lib/pyproject.toml services/*/pyproject.toml \
                 tools/pyproject.toml -newer $VENV/.installed-$have)" ]; then
      return 0
    fi
    [ "$have" = "$1" ] && break
  done
  return 1
}

make_venv() {
  local stamp=$VENV/.installed-$1
  if [ ! -x .uv/bin/uv ]; then
    "$PY" -m venv .uv
    .uv/bin/python -m pip install -q --require-hashes --only-binary=:all: -r tools/build-tools.txt >&2
  fi
  local newest
  newest=$(ls -t uv.lock pyproject.toml lib/pyproject.toml services/*/pyproject.toml \
           tools/pyproject.toml | head -1)
  if [ ! -x $VENV/bin/python ] || [ ! -f $stamp ] || [ "$newest" -nt $stamp ]; then
    local groups=(--no-dev)
    [ "$1" = plot ] && groups=(--no-dev --extra plot --extra bound)
    [ "$1" = dev ] && groups=(--group dev --extra plot --extra bound)
    UV_PROJECT_ENVIRONMENT=$VENV .uv/bin/uv sync -q --frozen --all-packages "${groups[@]}" \
      --python "$(command -v "$PY")" >&2
    rm -f $VENV/.installed-*
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
    $VENV/bin/ruff check . || failed+=("ruff check")
    echo "== ruff format --check"
    $VENV/bin/ruff format --check . || failed+=("ruff format")
    echo "== mypy --strict (library, services, tools)"
    $VENV/bin/mypy $(./run.sh packages) || failed+=(mypy)
    echo "== pytest"
    # two workers, one test file each at a time: most tests wait on a running system rather than
    # compute, so this halves the wall time on two cores; a module's rig stays in one worker.
    # -s asks for the tests' own output, which only a single process shows.
    workers=(-n 2 --dist loadfile)
    for arg in "$@"; do
      case $arg in -s | --capture=no | -n | -n[0-9]* | --numprocesses*) workers=() ;; esac
    done
    $VENV/bin/pytest "${workers[@]}" "$@" || failed+=(pytest)
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
  packages)
    # every import package of the workspace, as mypy -p arguments
    printf -- '-p gridzero -p gridzero_tools'
    for d in services/*/gridzero_*/__init__.py; do printf -- ' -p %s' "$(basename "$(dirname "$d")")"; done
    echo
    ;;
  install)
    # only the venv: `install` for running (what `up` installs), `install dev` for testing
    case "${1:-runtime}" in
      runtime | plot | dev) need_venv "${1:-runtime}" ;;
      *) echo "run.sh install: expected nothing, 'plot' or 'dev', got '$1'" >&2; exit 2 ;;
    esac
    ;;
  *)
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    [ "$cmd" = help ] || exit 2
    ;;
esac
