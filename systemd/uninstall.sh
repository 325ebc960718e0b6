#!/usr/bin/env bash
# Remove the lpr-edge service installed by systemd/install.sh (run as root: make uninstall).
#
# Removes the unit and /opt/lpr-edge (software and models). Keeps the configuration
# (/etc/lpr-edge), the state (/var/lib/lpr-edge: the outbox may still hold hits not yet
# delivered to HQ) and the lpr-edge user, so a reinstall carries on where it stopped.
#
#   PURGE=1       also delete /etc/lpr-edge, /var/lib/lpr-edge, the unit's drop-ins and
#                 the lpr-edge user
#   DESTDIR=DIR   act on a staging root made by install.sh DESTDIR=DIR; systemctl and
#                 userdel are only printed
#   PREFIX=/opt/lpr-edge
set -euo pipefail

DESTDIR=${DESTDIR:-}
DESTDIR=${DESTDIR%/}
PREFIX=${PREFIX:-/opt/lpr-edge}
PREFIX=${PREFIX%/}
PURGE=${PURGE:-0}

SCRIPT=uninstall
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case ${1:-} in
-h | --help)
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
	exit 0
	;;
"") ;;
*) die "unknown argument '$1' (see --help)" ;;
esac

if [[ -z $DESTDIR && $(id -u) -ne 0 ]]; then
	die "run as root (sudo make uninstall), or set DESTDIR= for a staging root"
fi
case $PREFIX in
/?*) ;;
*) die "PREFIX must be an absolute path other than /, got '$PREFIX'" ;;
esac
D=$DESTDIR

if [[ -n $D ]] || command -v systemctl >/dev/null 2>&1; then
	# Not installed or not loaded is fine: uninstalling twice is not an error.
	system systemctl disable --now "$SERVICE.service" || true
fi
rm -f "$D$UNIT_DIR/$SERVICE.service"
if [[ -L $D$BIN_LINK && $(readlink "$D$BIN_LINK") == "$PREFIX/"* ]]; then
	rm -f "$D$BIN_LINK"
fi
if [[ -d $D$PREFIX ]]; then
	# Only a folder install.sh made: a wrong PREFIX must not delete something else.
	[[ -d $D$PREFIX/venv || -f $D$PREFIX/models/manifest.toml ]] ||
		die "$PREFIX does not look like an lpr-edge installation; not removing it"
	rm -rf "$D$PREFIX"
fi
say "removed the service and $PREFIX"

if [[ $PURGE == 1 ]]; then
	if [[ -n $(find "$D$STATE_DIR" -name 'outbox.sqlite*' -print -quit 2>/dev/null) ]]; then
		say "PURGE=1: deleting $STATE_DIR with its outbox (hits not yet sent to HQ are lost)"
	fi
	rm -rf "$D$CONF_DIR" "$D$STATE_DIR" "$D$UNIT_DIR/$SERVICE.service.d"
	if [[ -n $D ]] || getent passwd "$SERVICE_USER" >/dev/null; then
		system userdel "$SERVICE_USER"
	fi
	say "purged $CONF_DIR, $STATE_DIR and the $SERVICE_USER user"
else
	say "kept $CONF_DIR, $STATE_DIR and the $SERVICE_USER user (PURGE=1 removes them)"
fi

if [[ -n $D ]] || command -v systemctl >/dev/null 2>&1; then
	system systemctl daemon-reload
	system systemctl reset-failed "$SERVICE.service" || true
fi
