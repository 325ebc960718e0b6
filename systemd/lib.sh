# Shared by install.sh and uninstall.sh (sourced, not run): where things go, and how
# commands that change the system are run or, when staging under DESTDIR, only shown.
# The caller sets SCRIPT (for messages) and DESTDIR before sourcing.
# shellcheck shell=bash

# shellcheck disable=SC2034 # used by the scripts that source this file
SERVICE=lpr-edge
# shellcheck disable=SC2034
SERVICE_USER=lpr-edge
# shellcheck disable=SC2034
CONF_DIR=/etc/lpr-edge
# shellcheck disable=SC2034
STATE_DIR=/var/lib/lpr-edge
# shellcheck disable=SC2034
UNIT_DIR=/etc/systemd/system
# shellcheck disable=SC2034
BIN_LINK=/usr/local/bin/lpr-edge

say() { printf 'lpr-edge %s: %s\n' "$SCRIPT" "$*"; }
die() {
	printf 'lpr-edge %s: error: %s\n' "$SCRIPT" "$*" >&2
	exit 1
}

# Commands that change the system outside the file tree (accounts, ownership, systemd):
# run for real, or only printed when staging under DESTDIR.
system() {
	if [[ -n $DESTDIR ]]; then
		printf 'would run:'
		printf ' %q' "$@"
		printf '\n'
	else
		printf '+'
		printf ' %q' "$@"
		printf '\n'
		"$@"
	fi
}
