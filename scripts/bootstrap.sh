# Sourced by the set-up scripts: Debian packages and the project's venv, installed only when missing.
# Works on a fresh Debian 12 machine as root (or with sudo); idempotent and quick the second time.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# The units hide /tmp, /var/tmp (PrivateTmp=) and /home, /root (ProtectHome=), and the fleet's user
# cannot enter a mode-0700 /root. A checkout there gets its venv under /opt with the project copied
# in (not editable), so the daemons started by systemd can run it.
case "$ROOT/" in
    /tmp/*|/var/tmp/*|/home/*|/root/*)
        VENV=${ALGO_VENV:-/opt/algo-fleet-dev/$(echo "$ROOT" | sha256sum | cut -c1-12)/venv}; EDITABLE=no ;;
    *)  VENV=${ALGO_VENV:-$ROOT/.venv}; EDITABLE=yes ;;
esac

need_debs() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    if [[ $EUID -ne 0 ]]; then
        echo "missing Debian packages: ${missing[*]} -- run this script as root (sudo)" >&2
        exit 1
    fi
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# What the installed dependencies were made from: a venv or wheelhouse with another stamp is out of date.
deps_stamp() {
    cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" | sha256sum | cut -c1-16
}

# The venv uses Debian's python3 on purpose: the fleet's user must be able to execute the
# interpreter, which a pyenv or home-directory Python usually does not allow.
make_venv() {
    local extras=$1 stamp
    [[ -x $VENV/bin/python ]] || /usr/bin/python3 -m venv "$VENV"
    stamp=$(deps_stamp)-$extras
    if [[ $(cat "$VENV/.algo-stamp" 2>/dev/null) != "$stamp" ]]; then
        "$VENV/bin/pip" install -q --disable-pip-version-check -c "$ROOT/constraints.txt" -e "$ROOT[$extras]"
        echo "$stamp" > "$VENV/.algo-stamp"
    fi
    if [[ $EDITABLE == no ]]; then  # a copy goes stale: refresh it from the checkout every time
        "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --force-reinstall "$ROOT"
        echo "venv for this checkout: $VENV (a copy of the project; the checkout's location is hidden from the units)"
    fi
}

# A directory of wheels for the fleet's dependencies (and the build backend), beside the venv: hosts without
# a package index install from it (ansible: algo_fleet_pip_extra_args=[--no-index, --find-links, DIR]), as the
# simulated hosts of tests/systemd/test_multihost_deploy.py do inside network namespaces with no route out.
make_wheelhouse() {
    local dir=$VENV/wheelhouse stamp
    stamp=$(deps_stamp)
    [[ $(cat "$dir/.algo-stamp" 2>/dev/null) == "$stamp" ]] && return 0
    rm -rf "$dir"
    "$VENV/bin/pip" wheel -q --disable-pip-version-check -c "$ROOT/constraints.txt" -w "$dir" "$ROOT" setuptools wheel
    rm -f "$dir"/algo_fleet-*.whl  # the project's own wheel is built from the checkout at deploy time
    echo "$stamp" > "$dir/.algo-stamp"
}

BASE_DEBS=(python3 python3-venv python3-pip systemd util-linux)
