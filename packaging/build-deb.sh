#!/bin/bash
# Build dist/aisentinel_<version>_<arch>.deb from this checkout, on Debian 12.
#
#   packaging/build-deb.sh            (what `make deb` runs)
#
# How: the Python dependencies from pyproject.toml (plus the `systemd` extra when
# libsystemd can be built against) are installed with Debian's /usr/bin/python3 into a
# private venv created directly at its staging path, <stage>/opt/aisentinel/venv.
# A venv records its own location only in text: the shebangs of bin/ scripts,
# bin/activate* and pyvenv.cfg. Those are rewritten to /opt/aisentinel/venv and the
# build fails if the staging path is left anywhere, so the result is the same as a venv
# built in place, without touching /opt on the build machine. pip and setuptools are
# removed from the venv (nothing installs into it after the build), byte-code is not
# shipped (postinst compiles it, prerm removes it), and the tree is packed with
# `dpkg-deb --root-owner-group` with every time stamp set to SOURCE_DATE_EPOCH.
#
# Environment:
#   SOURCE_DATE_EPOCH        time stamps (default: last commit, else pyproject.toml's mtime)
#   DIST_DIR                 output directory (default: <repo>/dist)
#   AISENTINEL_DEB_PYTHON    interpreter for the venv (default: /usr/bin/python3)
#   AISENTINEL_DEB_SYSTEMD   auto|yes|no: bundle systemd-python (journald, sd_notify)
#   AISENTINEL_DEB_CONSTRAINTS  a pip constraints file pinning the bundled versions
#   AISENTINEL_DEB_LINTIAN   1 (default) runs lintian on the result and fails on errors
#   AISENTINEL_DEB_COMPILED  1 (default) ships the mypyc-compiled hot modules beside their
#                            .py files (packaging/build_mypyc.py); when that build fails,
#                            one line says so and the package is pure Python. 0: never.
#   AISENTINEL_DEB_VERSION   package version (default: __version__ of aisentinel/__init__.py)
#   DEBFULLNAME, DEBEMAIL    the Maintainer field
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PACKAGING="$ROOT/packaging"
PY=${AISENTINEL_DEB_PYTHON:-/usr/bin/python3}
DIST_DIR=${DIST_DIR:-$ROOT/dist}
WITH_SYSTEMD=${AISENTINEL_DEB_SYSTEMD:-auto}
RUN_LINTIAN=${AISENTINEL_DEB_LINTIAN:-1}
WITH_COMPILED=${AISENTINEL_DEB_COMPILED:-1}
MAINTAINER="${DEBFULLNAME:-aisentinel developers} <${DEBEMAIL:-aisentinel@example.org}>"
PREFIX=/opt/aisentinel
NAME=aisentinel

die() { echo "build-deb: error: $*" >&2; exit 1; }
note() { echo "build-deb: $*" >&2; }

VERSION=${AISENTINEL_DEB_VERSION:-$(sed -n 's/^__version__ = "\([^"]*\)"$/\1/p' "$ROOT/aisentinel/__init__.py")}
[[ "$VERSION" =~ ^[0-9][A-Za-z0-9.+~]*$ ]] \
    || die "no usable __version__ in aisentinel/__init__.py (got '$VERSION')"

# --- build dependencies --------------------------------------------------------------
have_systemd_build() {
    command -v pkg-config >/dev/null && pkg-config --exists libsystemd \
        && command -v gcc >/dev/null \
        && [ -e "/usr/include/python3.$("$PY" -c 'import sys; print(sys.version_info[1])')/Python.h" ]
}

need=()
command -v dpkg-deb >/dev/null || need+=(dpkg)
command -v dpkg-shlibdeps >/dev/null || need+=(dpkg-dev)
command -v strip >/dev/null || need+=(binutils)
[ -x "$PY" ] || need+=(python3)
[ -x "$PY" ] && "$PY" -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
if [ "$WITH_COMPILED" = 1 ] && [ -x "$PY" ]; then
    command -v gcc >/dev/null || need+=(gcc)
    [ -e "/usr/include/python3.$("$PY" -c 'import sys; print(sys.version_info[1])')/Python.h" ] \
        || need+=(python3-dev)
fi
if [ "$WITH_SYSTEMD" != no ] && ! have_systemd_build; then
    need+=(python3-dev gcc pkg-config libsystemd-dev)
fi
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        note "installing build dependencies: ${need[*]}"
        apt-get install -y --no-install-recommends "${need[@]}" >/dev/null \
            || { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; } \
            || die "apt-get could not install ${need[*]}"
    elif [ "$WITH_SYSTEMD" = auto ]; then
        note "not root: building without systemd-python (missing: ${need[*]})"
        WITH_SYSTEMD=no
    fi
fi
for tool in dpkg-deb dpkg-shlibdeps; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install dpkg-dev)"
done
"$PY" -c 'import ensurepip, venv' 2>/dev/null || die "$PY lacks venv (apt-get install python3-venv)"
PYVER=$("$PY" -c 'import sys; print("{}.{}".format(*sys.version_info[:2]))')
[ "$("$PY" -c 'import sys; print(sys.version_info >= (3, 11))')" = True ] \
    || die "$PY is Python $PYVER; aisentinel needs 3.11 or later"
PYNEXT=$("$PY" -c 'import sys; print("{}.{}".format(sys.version_info[0], sys.version_info[1] + 1))')
if [ "$WITH_SYSTEMD" = auto ]; then
    if have_systemd_build; then WITH_SYSTEMD=yes; else WITH_SYSTEMD=no; fi
fi
[ "$WITH_SYSTEMD" = no ] || have_systemd_build \
    || die "systemd-python needs pkg-config, gcc, libsystemd-dev and python3-dev"

ARCH=$(dpkg --print-architecture)
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || true)
    [ -n "$SOURCE_DATE_EPOCH" ] || SOURCE_DATE_EPOCH=$(stat -c %Y "$ROOT/pyproject.toml")
fi
export SOURCE_DATE_EPOCH
export PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1

WORK=$(mktemp -d "${TMPDIR:-/tmp}/aisentinel-deb.XXXXXXXX")
trap 'rm -rf "$WORK"' EXIT
STAGE="$WORK/root"
VENV="$STAGE$PREFIX/venv"
DOC="$STAGE/usr/share/doc/$NAME"
SHARE="$STAGE/usr/share/$NAME"
umask 022

# --- the venv ------------------------------------------------------------------------
note "building $NAME $VERSION ($ARCH) with $PY (Python $PYVER), systemd-python: $WITH_SYSTEMD"
# Copy the sources so the build leaves no build/ or *.egg-info in the checkout.
mkdir -p "$WORK/src"
cp -a "$ROOT/pyproject.toml" "$ROOT/aisentinel" "$WORK/src/"
for f in README.md LICENSE LICENSE.txt; do
    [ -e "$ROOT/$f" ] && cp -a "$ROOT/$f" "$WORK/src/"
done
[ -e "$WORK/src/README.md" ] || printf '# aisentinel\n' >"$WORK/src/README.md"
find "$WORK/src" -name __pycache__ -prune -exec rm -rf {} +

# Hardened compiler and linker flags for what is compiled here (systemd-python).
export DEB_BUILD_MAINT_OPTIONS=hardening=+all
eval "$(dpkg-buildflags --export=sh)"
# No debug info: it is stripped anyway, and it would carry pip's random build path
# into the build-id, making every build differ.
CFLAGS="$CFLAGS -g0"
"$PY" -m venv "$VENV"
pip_args=(--quiet --no-compile --use-pep517)
[ -z "${AISENTINEL_DEB_CONSTRAINTS:-}" ] || pip_args+=(--constraint "$AISENTINEL_DEB_CONSTRAINTS")
target="$WORK/src"
[ "$WITH_SYSTEMD" = no ] || target="$WORK/src[systemd]"
"$VENV/bin/python" -m pip install "${pip_args[@]}" "$target"
"$VENV/bin/python" -m pip uninstall --quiet --yes pip setuptools
"$VENV/bin/python" -c 'import aisentinel' || die "the staged venv cannot import aisentinel"

# --- the compiled hot modules (mypyc) ------------------------------------------------
# mypy (mypyc) runs from a throw-away venv of the same interpreter and reads the staged
# venv's packages for types; the extension modules go beside the installed .py files
# (which stay, as the fallback source) and into aisentinel's RECORD.
compile_hot_modules() {
    "$PY" -m venv "$WORK/mypyc-venv" \
        && "$WORK/mypyc-venv/bin/python" -m pip install "${pip_args[@]}" mypy setuptools \
        && "$WORK/mypyc-venv/bin/python" "$PACKAGING/build_mypyc.py" "$WORK/mypyc" \
            --python-executable "$VENV/bin/python"
}
if [ "$WITH_COMPILED" = 1 ]; then
    if compile_hot_modules >"$WORK/mypyc.log" 2>&1; then
        site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
        record=$(echo "$site"/aisentinel-*.dist-info/RECORD)
        (cd "$WORK/mypyc" && find . -name '*.so' -printf '%P\n' | sort) | while IFS= read -r so; do
            install -D -m 0644 "$WORK/mypyc/$so" "$site/$so"
            echo "$so,sha256=,0" >>"$record"  # hash and size: refresh-records below
        done
        note "compiled with mypyc: $(grep -o '[0-9]* modules' "$WORK/mypyc.log" | tail -1)"
    else
        note "mypyc build failed, shipping pure Python: $(grep -v '^ ' "$WORK/mypyc.log" | tail -1)"
    fi
    rm -rf "$WORK/mypyc" "$WORK/mypyc-venv"
fi

# --- the default config (a conffile) ------------------------------------------------
install -d -m 0755 "$STAGE/etc/$NAME"
CONF="$STAGE/etc/$NAME/$NAME.toml"
if [ -f "$ROOT/aisentinel/data/default-config.toml" ]; then
    install -m 0644 "$ROOT/aisentinel/data/default-config.toml" "$CONF"
elif "$VENV/bin/python" -m aisentinel check-config --print-defaults >"$WORK/defaults.toml" 2>/dev/null \
        && [ -s "$WORK/defaults.toml" ]; then
    install -m 0644 "$WORK/defaults.toml" "$CONF"
else
    note "no default config in the tree yet: shipping a commented minimal one"
    cat >"$CONF" <<'EOF'
# aisentinel configuration (TOML). Unknown keys are errors; check your edits with
#   aisentinel check-config /etc/aisentinel/aisentinel.toml
# then `systemctl reload aisentinel`. With no settings, the daemon runs on its
# built-in defaults: nginx and sshd logs at their Debian paths, dry-run responses,
# metrics on 127.0.0.1.
EOF
    chmod 0644 "$CONF"
fi

# Strip what was compiled here. Wheels from PyPI come stripped, and those repaired
# by auditwheel (RPATH/RUNPATH set by patchelf) must not be stripped again.
while IFS= read -r -d '' so; do
    if ! readelf -d "$so" 2>/dev/null | grep -qE '\((RPATH|RUNPATH)\)'; then
        strip --strip-unneeded --remove-section=.comment --remove-section=.note "$so"
    fi
done < <(find "$VENV" -type f -name '*.so' -print0)

# --- relocate the venv to /opt/aisentinel/venv --------------------------------------
find "$VENV/include" -depth -type d -empty -delete
find "$STAGE" -depth \( -name __pycache__ -o -name '*.pyc' \) -exec rm -rf {} +
# pip records where it installed aisentinel from: a temporary path.
find "$VENV" -path '*.dist-info/direct_url.json' -delete
sed -i '/\.dist-info\/direct_url\.json,/d' "$VENV"/lib/python*/site-packages/*.dist-info/RECORD
grep -rlI --null -F "$STAGE" "$VENV" | xargs -0 --no-run-if-empty sed -i "s#$STAGE##g"
"$VENV/bin/python" "$PACKAGING/bundled_dists.py" refresh-records
if leftover=$(grep -rl -F "$STAGE" "$STAGE"); then
    die "staging path left in: $leftover"
fi

# --- the rest of the tree -----------------------------------------------------------
install -d -m 0755 "$STAGE/usr/bin" "$STAGE/lib/systemd/system" "$DOC" \
    "$SHARE/dashboards" "$SHARE/nginx" "$SHARE/examples" "$STAGE/usr/share/man/man1" \
    "$STAGE/usr/share/lintian/overrides"
ln -s "$PREFIX/venv/bin/$NAME" "$STAGE/usr/bin/$NAME"
install -m 0644 "$ROOT/units/$NAME.service" "$STAGE/lib/systemd/system/"
install -m 0644 "$ROOT"/units/dropins/*.conf "$SHARE/examples/"
install -m 0644 "$PACKAGING"/nginx/*.conf "$SHARE/nginx/"
install -m 0644 "$PACKAGING"/examples/* "$SHARE/examples/"
# The fail2ban jail and filter of [responders.fail2ban] (conffiles; see docs/enforcement.md).
install -D -m 0644 "$PACKAGING/fail2ban/jail.d/$NAME.conf" "$STAGE/etc/fail2ban/jail.d/$NAME.conf"
install -D -m 0644 "$PACKAGING/fail2ban/filter.d/$NAME.conf" "$STAGE/etc/fail2ban/filter.d/$NAME.conf"
if [ -d "$ROOT/dashboards" ]; then
    (cd "$ROOT/dashboards" && find . -type f ! -name '.*' -print0 | sort -z \
        | xargs -0 --no-run-if-empty -I{} install -D -m 0644 {} "$SHARE/dashboards/{}")
fi
rmdir --ignore-fail-on-non-empty "$SHARE/dashboards"
# Every docs/*.md: the conffile, the runbooks, the nginx snippets and the daemon's log
# lines point to docs/enforcement.md, hardening.md, gpu.md, guard.md, nginx-log-format.md.
for f in "$ROOT"/README.md "$ROOT"/CHANGELOG.md "$ROOT"/ARCHITECTURE.md "$ROOT"/docs/*.md; do
    [ -f "$f" ] && install -m 0644 "$f" "$DOC/"
done
"$VENV/bin/python" "$PACKAGING/bundled_dists.py" copyright "$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y)" \
    >"$DOC/copyright"
"$VENV/bin/python" "$PACKAGING/bundled_dists.py" list >"$DOC/bundled-python-packages.txt"
{
    echo "$NAME ($VERSION) bookworm; urgency=medium"
    echo
    echo "  * Release $VERSION; the changes are listed in"
    echo "    /usr/share/doc/$NAME/CHANGELOG.md when present."
    echo
    echo " -- $MAINTAINER  $(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$DOC/changelog.gz"
gzip -9n <"$PACKAGING/$NAME.1" >"$STAGE/usr/share/man/man1/$NAME.1.gz"
install -m 0644 "$PACKAGING/lintian-overrides" "$STAGE/usr/share/lintian/overrides/$NAME"

# --- DEBIAN/ ------------------------------------------------------------------------
install -d -m 0755 "$STAGE/DEBIAN"
for script in postinst prerm postrm; do
    install -m 0755 "$PACKAGING/debian/$script" "$STAGE/DEBIAN/$script"
done
printf '%s\n' "/etc/$NAME/$NAME.toml" "/etc/fail2ban/jail.d/$NAME.conf" \
    "/etc/fail2ban/filter.d/$NAME.conf" >"$STAGE/DEBIAN/conffiles"

# Shared-library dependencies of the compiled modules (pydantic-core, systemd-python).
mkdir -p "$WORK/shlibs/debian"
printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$NAME" "$NAME" >"$WORK/shlibs/debian/control"
mapfile -d '' elves < <(find "$STAGE" -type f -name '*.so*' -print0 | sort -z)
shlibs=""
if [ ${#elves[@]} -gt 0 ]; then
    shlibs=$(cd "$WORK/shlibs" && dpkg-shlibdeps -O --ignore-missing-info \
        "-l$STAGE$PREFIX/venv/lib" "${elves[@]}" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
fi
depends="python3 (>= 3.11), python3 (<< $PYNEXT), adduser${shlibs:+, $shlibs}"

installed_size=$(du -sk --apparent-size --exclude=DEBIAN "$STAGE" | cut -f1)
cat >"$STAGE/DEBIAN/control" <<EOF
Package: $NAME
Version: $VERSION
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: $installed_size
Depends: $depends
Suggests: nginx, nftables, prometheus, conntrack
Section: admin
Priority: optional
Description: security daemon for self-hosted AI inference servers
 aisentinel watches the logs of nginx and sshd in front of self-hosted AI
 inference servers (Ollama, vLLM, Open WebUI), detects brute force, scanning
 and model-server exploit attempts, decides bans, exports Prometheus metrics
 and audits the host's hardening.
 .
 It runs as an unprivileged, sandboxed systemd service. Its Python
 dependencies are bundled in a private virtual environment under
 /opt/aisentinel, so the system Python stays untouched.
EOF
(cd "$STAGE" && find . -type f ! -path './DEBIAN/*' ! -path "./etc/*" -printf '%P\0' \
    | sort -z | xargs -0 md5sum) >"$STAGE/DEBIAN/md5sums"
chmod 0644 "$STAGE/DEBIAN/control" "$STAGE/DEBIAN/conffiles" "$STAGE/DEBIAN/md5sums"

# --- pack ---------------------------------------------------------------------------
chmod -R u+rwX,go+rX,go-w "$STAGE"
find "$STAGE" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mkdir -p "$DIST_DIR"
DEB="$DIST_DIR/${NAME}_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$DEB" >/dev/null
note "built $DEB ($(du -h "$DEB" | cut -f1))"

if [ "$RUN_LINTIAN" = 1 ]; then
    if command -v lintian >/dev/null; then
        lintian --fail-on error "$DEB" || die "lintian reported errors"
    else
        note "lintian not installed: skipped"
    fi
fi
echo "$DEB"
