# shellcheck shell=bash
# Shared set-up for scripts/test and scripts/demo (sourced, not run).
#
#   hoopy_bootstrap   system packages (apt, as root) + .venv with '.[dev]'
#
# Sets HOOPY_ROOT (repo root), HOOPY_VENV (.venv) and puts .venv/bin and
# /usr/sbin (where Debian keeps mariadbd) on PATH.

HOOPY_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOOPY_VENV="$HOOPY_ROOT/.venv"
export HOOPY_ROOT HOOPY_VENV
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/sbin" ;; esac
case ":$PATH:" in *:/sbin:*) ;; *) PATH="$PATH:/sbin" ;; esac
export PATH
export PIP_DISABLE_PIP_VERSION_CHECK=1

_hoopy_log() { printf '==> %s\n' "$*" >&2; }

# First python3.x >= 3.11 on PATH (HOOPY_PYTHON wins), or nothing.
_hoopy_find_python() {
    local py
    for py in ${HOOPY_PYTHON:-} python3 python3.13 python3.12 python3.11; do
        if command -v "$py" >/dev/null 2>&1 &&
            "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$py"
            return 0
        fi
    done
    return 1
}

# Debian/Ubuntu packages this project needs that are missing, one per line.
_hoopy_missing_packages() {
    command -v mariadbd >/dev/null 2>&1 || echo mariadb-server
    command -v mariadb-install-db >/dev/null 2>&1 || echo mariadb-server
    command -v mariadb >/dev/null 2>&1 || echo mariadb-client
    command -v sysbench >/dev/null 2>&1 || echo sysbench
    # Node.js runs the mysql2 client in the token-login tests.
    command -v node >/dev/null 2>&1 || echo nodejs
    command -v npm >/dev/null 2>&1 || echo npm
    # building the mysqlclient wheel (no Linux wheels on PyPI)
    command -v pkg-config >/dev/null 2>&1 || echo pkg-config
    { pkg-config --exists libmariadb || pkg-config --exists mysqlclient; } >/dev/null 2>&1 ||
        echo libmariadb-dev
    command -v cc >/dev/null 2>&1 || echo build-essential
    local py
    if py="$(_hoopy_find_python)"; then
        # Debian splits venv/ensurepip and the C headers out of python3.
        if [ ! -x "$HOOPY_VENV/bin/python" ]; then
            "$py" -c 'import ensurepip, venv' >/dev/null 2>&1 || echo python3-venv
        fi
        "$py" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
            2>/dev/null || echo python3-dev
    else
        # Debian 12 / Ubuntu 24.04 python3 is new enough; older releases may
        # carry a python3.11 package instead.
        if command -v apt-cache >/dev/null 2>&1 &&
            apt-cache show python3.11-venv >/dev/null 2>&1; then
            printf '%s\n' python3.11 python3.11-venv python3.11-dev
        else
            printf '%s\n' python3 python3-venv python3-dev
        fi
    fi
}

_hoopy_system_packages() {
    local missing
    missing="$(_hoopy_missing_packages | sort -u | tr '\n' ' ')"
    missing="${missing% }"
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: missing system packages; run: sudo apt-get install -y $missing" >&2
        return 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: missing system packages ($missing) and no apt-get to install them" >&2
        return 1
    fi
    _hoopy_log "apt-get install $missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q || return 1
    # The fixed list plus whatever else was found missing (compiler, python bits).
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends \
        mariadb-server mariadb-client sysbench libmariadb-dev pkg-config $missing || return 1
    # Second round: what only showed up once the package lists were fresh
    # (e.g. python3.11 on a release whose python3 is older).
    missing="$(_hoopy_missing_packages | sort -u | tr '\n' ' ')"
    missing="${missing% }"
    if [ -n "$missing" ]; then
        # shellcheck disable=SC2086
        apt-get install -y -q --no-install-recommends $missing || true
        missing="$(_hoopy_missing_packages | sort -u | tr '\n' ' ')"
        if [ -n "${missing% }" ]; then
            echo "error: still missing after apt-get install: $missing" >&2
            return 1
        fi
    fi
}

_hoopy_venv() {
    local py stamp want
    if [ -x "$HOOPY_VENV/bin/python" ] && ! "$HOOPY_VENV/bin/python" -c '' 2>/dev/null; then
        _hoopy_log "removing broken $HOOPY_VENV"
        rm -rf "$HOOPY_VENV" || return 1
    fi
    if [ ! -x "$HOOPY_VENV/bin/python" ]; then
        py="$(_hoopy_find_python)" || {
            echo "error: hoopy needs Python >= 3.11 (set HOOPY_PYTHON=/path/to/python3.x)" >&2
            return 1
        }
        _hoopy_log "creating $HOOPY_VENV with $py"
        "$py" -m venv "$HOOPY_VENV" || return 1
    fi
    stamp="$HOOPY_VENV/.hoopy-installed"
    want="$(cat "$HOOPY_ROOT/pyproject.toml" <("$HOOPY_VENV/bin/python" -VV) | sha256sum)" ||
        return 1
    want="${want%% *}"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        _hoopy_log "pip install -e '.[dev]'"
        rm -f "$stamp"
        "$HOOPY_VENV/bin/python" -m pip install -q -e "$HOOPY_ROOT[dev]" || return 1
        echo "$want" >"$stamp" || return 1
    fi
    # The Node mysql2 client for the token-login tests, from the npm registry (locked).
    local node_dir="$HOOPY_ROOT/tests/node"
    if [ -f "$node_dir/package-lock.json" ] && command -v npm >/dev/null 2>&1 &&
        { [ ! -d "$node_dir/node_modules" ] ||
            [ "$node_dir/package-lock.json" -nt "$node_dir/node_modules" ]; }; then
        _hoopy_log "npm ci (tests/node)"
        (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error) || return 1
        touch "$node_dir/node_modules"
    fi
    # Compile the streaming hot loop (mypyc); a no-op when current, harmless when impossible.
    "$HOOPY_VENV/bin/python" "$HOOPY_ROOT/scripts/build_accelerators.py" || return 1
    case ":$PATH:" in *":$HOOPY_VENV/bin:"*) ;; *) PATH="$HOOPY_VENV/bin:$PATH" ;; esac
    export PATH
}

# Each step returns non-zero on failure (explicitly: `set -e` does not
# reach into functions called from a condition).
hoopy_bootstrap() {
    _hoopy_system_packages || return 1
    _hoopy_venv || return 1
}
