#!/usr/bin/env bash
# The demo: one command that sets everything up on a fresh Debian machine and runs the workflow on a
# small image served by a real local registry.
#
#   bash demo/run.sh
#
# 1. installs the Debian packages it needs (sudo when not root) and the project into .venv
# 2. starts `docker-registry serve` on a free 127.0.0.1 port (stopped again on exit)
# 3. builds a two-layer busybox image with umoci (the second layer deletes a file: a whiteout) and
#    pushes it with skopeo as demo/busybox:1.0, 1.1 and 2.0
# 4. writes a config and a recipe (tag glob demo/busybox:1.*) into demo/output/ and runs Snakemake
# 5. shows the published tree, a dry-run with nothing left to do, and runs the image with bubblewrap
# 6. moves tag 1.1 to a new build upstream and shows that only 1.1 is redone
#
# Everything the demo writes stays in demo/output/ (git-ignored), which is recreated on every run,
# plus a temporary directory for the registry and the image build, removed on exit.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
DEMO="$REPO/demo/output"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
note() { printf '    %s\n' "$*"; }
show() {
  printf '    $ %s\n' "$*"
  "$@"
}

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# --- 1. Debian packages and the Python environment -------------------------------------------------
step "1. Debian packages: docker-registry skopeo umoci bubblewrap busybox-static python3 python3-venv"
DEBIAN_PACKAGES=(docker-registry skopeo umoci bubblewrap busybox-static python3 python3-venv)
missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  note "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
else
  note "all installed already"
fi

step "1b. Python environment .venv with the project installed (pip install -e .)"
if [ ! -x .venv/bin/python ]; then
  note "creating .venv"
  python3 -m venv .venv
fi
if .venv/bin/python -c 'import unpacked, snakemake' 2>/dev/null && [ -x .venv/bin/unpacked ] && [ -x .venv/bin/snakemake ]; then
  note "unpacked and snakemake are installed in .venv already"
else
  note "installing the project and its dependencies from PyPI"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e .
fi
# Compiled once here: an editable install is not, and every job's process would compile it again
# where PYTHONDONTWRITEBYTECODE is set.
.venv/bin/python -m compileall -q scripts/unpacked >/dev/null
# The workflow's jobs call the `unpacked` command.
export PATH="$REPO/.venv/bin:$PATH"
note "$(snakemake --version | sed 's/^/snakemake /'), $(command -v unpacked | sed "s|^$REPO/||")"

# --- 2. A real registry on 127.0.0.1 --------------------------------------------------------------
TMP=$(mktemp -d)
REGISTRY_PID=""
cleanup() {
  if [ -n "$REGISTRY_PID" ] && kill -0 "$REGISTRY_PID" 2>/dev/null; then
    printf '\n==> stopping the registry (pid %s)\n' "$REGISTRY_PID"
    kill "$REGISTRY_PID" 2>/dev/null || true
    wait "$REGISTRY_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

step "2. Starting a local registry (docker-registry serve, filesystem storage)"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
REGISTRY="127.0.0.1:$PORT"
mkdir -p "$TMP/registry-data"
cat >"$TMP/registry.yml" <<EOF
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $TMP/registry-data}
  delete: {enabled: true}
http: {addr: "$REGISTRY", secret: demo-secret}
EOF
docker-registry serve "$TMP/registry.yml" >"$TMP/registry.log" 2>&1 &
REGISTRY_PID=$!
for _ in $(seq 100); do
  if python3 -c "import urllib.request; urllib.request.urlopen('http://$REGISTRY/v2/', timeout=1)" 2>/dev/null; then
    break
  fi
  kill -0 "$REGISTRY_PID" 2>/dev/null || { cat "$TMP/registry.log" >&2; echo "the registry did not start" >&2; exit 1; }
  sleep 0.1
done
note "registry listening on http://$REGISTRY (pid $REGISTRY_PID)"

# --- 3. Build and push an image with the real tools -----------------------------------------------
step "3. Building demo/busybox with umoci (2 layers) and pushing it with skopeo"
LAYOUT="$TMP/layout"
BUNDLE="$TMP/bundle"
ROOTLESS=()
[ "$(id -u)" -eq 0 ] || ROOTLESS=(--rootless)
umoci init --layout "$LAYOUT"
umoci new --image "$LAYOUT:1.0"
umoci unpack "${ROOTLESS[@]}" --image "$LAYOUT:1.0" "$BUNDLE"
ROOTFS="$BUNDLE/rootfs"

note "layer 1: static busybox in /bin (applets sh, echo, cat, ls), /etc/demo-release, /etc/obsolete.conf"
mkdir -p "$ROOTFS/bin" "$ROOTFS/etc" "$ROOTFS/tmp"
cp /bin/busybox "$ROOTFS/bin/busybox"
for applet in sh echo cat ls; do ln -sf busybox "$ROOTFS/bin/$applet"; done
echo "demo image, release 1.0" >"$ROOTFS/etc/demo-release"
echo "this file is deleted by layer 2" >"$ROOTFS/etc/obsolete.conf"
umoci repack --refresh-bundle --image "$LAYOUT:1.0" "$BUNDLE"

note "layer 2: adds /etc/motd, deletes /etc/obsolete.conf (umoci writes a whiteout .wh.obsolete.conf)"
echo "welcome to the unpacked demo" >"$ROOTFS/etc/motd"
rm "$ROOTFS/etc/obsolete.conf"
umoci repack --refresh-bundle --image "$LAYOUT:1.0" "$BUNDLE"

note "config: ENV GREETING=hello, CMD /bin/sh -c 'echo \$GREETING ...; cat /etc/demo-release'"
set_config() {
  # umoci config appends to CMD: clear it first. A repack starts from the bundle's unpacked config,
  # so this runs again after every repack.
  umoci config --image "$LAYOUT:1.0" --config.env GREETING=hello \
    --clear=config.cmd --config.cmd /bin/sh --config.cmd -c \
    --config.cmd 'echo "$GREETING from the demo image"; cat /etc/demo-release'
}
set_config

for tag in 1.0 1.1 2.0; do
  show skopeo copy --quiet --dest-tls-verify=false "oci:$LAYOUT:1.0" "docker://$REGISTRY/demo/busybox:$tag"
done
note "tags on the registry: 1.0 and 1.1 (the recipe's glob 1.* matches them), 2.0 (does not match)"

# --- 4. Config, recipe, and the workflow run -----------------------------------------------------
step "4. Writing the demo's config and recipe into demo/output/config/"
if [ -e "$DEMO" ]; then
  note "removing the previous run's demo/output/ (its registry port is gone)"
  rm -rf "$DEMO"
fi
mkdir -p "$DEMO/config"
cat >"$DEMO/config/config.yaml" <<EOF
# Demo configuration (written by demo/run.sh); paths are relative to demo/output/.
recipe: config/recipe.yaml
output_root: output
work_dir: work
registries:
  "$REGISTRY":
    insecure: true
EOF
cat >"$DEMO/config/recipe.yaml" <<EOF
# Demo recipe (written by demo/run.sh), in DUCC's wishlist format.
version: 1
input:
  - '$REGISTRY/demo/busybox:1.*'
  - '$REGISTRY/demo/missing:latest'
ignoreErrors:
  - '$REGISTRY/demo/missing:*'
EOF
sed 's/^/    | /' "$DEMO/config/config.yaml"
sed 's/^/    | /' "$DEMO/config/recipe.yaml"
note "demo/missing:latest does not exist: its failure is reported at the end, but it matches"
note "ignoreErrors, so the run still succeeds (one failing image never stops the others)"

SNAKEMAKE=(snakemake --snakefile "$REPO/Snakefile" --directory "$DEMO" --configfile "$DEMO/config/config.yaml")
# Run from the repository, so Snakemake loads the default profile profiles/default (greedy scheduler,
# keep-going, rerun-incomplete); it finds it next to the Snakefile, too.
note "Snakemake loads the default profile profiles/default (greedy scheduler, keep-going, rerun-incomplete)"

step "5. Dry-run: what would be done (registries are contacted before the DAG is built, even with -n)"
show "${SNAKEMAKE[@]}" -n --quiet rules

step "6. Running the workflow: fetch -> extract -> flatten -> publish"
show "${SNAKEMAKE[@]}" --cores 2

ROOT="$DEMO/output"
step "7. The published tree (demo/output/output/), laid out like DUCC's /cvmfs/unpacked.cern.ch"
show ls -l "$ROOT/$REGISTRY/demo/"
note "flat images, named by their config digest (1.0 and 1.1 share one: same image):"
(cd "$ROOT" && ls -d .flat/*/* | sed 's/^/      /')
note "metadata of 1.1 (.metadata/$REGISTRY/demo/busybox:1.1/):"
ls "$ROOT/.metadata/$REGISTRY/demo/busybox:1.1/" | sed 's/^/      /'
sed 's/^/      /' "$ROOT/.metadata/$REGISTRY/demo/busybox:1.1/record.json"

step "8. Dry-run again: the tag list and one HEAD per tag; nothing changed upstream, nothing to do"
show "${SNAKEMAKE[@]}" -n

step "9. Running the published image with bubblewrap (a stand-in for apptainer run)"
IMAGE="$ROOT/$REGISTRY/demo/busybox:1.1"
BWRAP=(bwrap --ro-bind "$IMAGE" / --proc /proc --dev /dev --unshare-all --die-with-parent)
note "what \"apptainer run\" does: source /.singularity.d/env/*.sh (the image's ENV), then the runscript (its CMD):"
show "${BWRAP[@]}" /.singularity.d/actions/run
note "the image's environment file, /etc from both layers, and the deleted file is gone:"
show "${BWRAP[@]}" /bin/sh -c '. /.singularity.d/env/10-docker2singularity.sh; echo "GREETING=$GREETING"; ls /etc; cat /etc/motd'

# --- 5. An upstream change ---------------------------------------------------------------------------
step "10. Upstream change: tag 1.1 moves to a new build (a third layer), 1.0 stays"
echo "demo image, release 1.1" >"$ROOTFS/etc/demo-release"
umoci repack --refresh-bundle --image "$LAYOUT:1.0" "$BUNDLE"
set_config
show skopeo copy --quiet --dest-tls-verify=false "oci:$LAYOUT:1.0" "docker://$REGISTRY/demo/busybox:1.1"
note "a dry-run lists only the jobs of 1.1: fetch and extract its new layer, flatten, re-point its link"
note "(its new manifest and config were read while resolving, before the DAG)"
show "${SNAKEMAKE[@]}" -n --quiet rules
show "${SNAKEMAKE[@]}" --cores 2 --quiet rules
note "1.1 now points at a new flat image; 1.0 is untouched:"
show ls -l "$ROOT/$REGISTRY/demo/"
show "${BWRAP[@]}" /.singularity.d/actions/run

step "11. What the service did: status, run history, the users' index page (no registry contacted)"
show bash -c "cd '$DEMO' && unpacked status"
show bash -c "cd '$DEMO' && unpacked history -n 2"
note "the page users of the tree read: $ROOT/.metadata/index.html (and index.json)"

step "Done. Look around in demo/output/ (config/, work/, output/); run this script again to start over."
