#!/usr/bin/env bash
# Builds every image docker-compose.yml needs, without pulling from any registry:
#
#   concierge/debian-base:bookworm  a debootstrap minbase rootfs, imported (cached)
#   concierge/redis                 FROM the base, redis-server from Debian
#   concierge/lb                    FROM the base, HAProxy from Debian + deploy/haproxy.cfg
#   concierge/gateway               FROM the base + target/release/concierge built on this host
#   concierge/systemd-test          FROM the base, systemd as PID 1 + the binary + deploy/systemd/
#                                   units (for tests/systemd.rs; only with --only systemd)
#
# Usage: deploy/build-images.sh [--rebuild] [--keep-debug] [--binary FILE]
#                               [--only base|redis|lb|gateway|systemd]...
#   --rebuild     rebuild the base rootfs even if concierge/debian-base:bookworm exists
#   --keep-debug  ship the binary's line tables (about 45 MB more; by default the
#                 image gets it with --strip-debug: backtraces keep function names)
#   --binary FILE put FILE (e.g. a debug build, target/debug/concierge) in the
#                 gateway and systemd images instead of target/release/concierge
#   --only X      build only the named image(s) (the base is still built if missing);
#                 without --only: base, redis, lb and gateway (not systemd)
#
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian),
#              DEBIAN_SECURITY_MIRROR (default http://deb.debian.org/debian-security).
# Needs root (or sudo) for apt-get, debootstrap and chroot; docker for the rest.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")

BASE_IMAGE=concierge/debian-base:bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

rebuild=0
keep_debug=0
only=()
binary=""
while (($#)); do
    case $1 in
        --rebuild) rebuild=1 ;;
        --keep-debug) keep_debug=1 ;;
        --binary)
            [[ -n ${2:-} ]] || { echo "build-images: --binary takes a file" >&2; exit 2; }
            binary=$(realpath -- "$2") && [[ -f $binary && -x $binary ]] ||
                { echo "build-images: --binary $2: not an executable file" >&2; exit 2; }
            shift
            ;;
        --only)
            [[ ${2:-} =~ ^(base|redis|lb|gateway|systemd)$ ]] || { echo "build-images: --only takes base, redis, lb, gateway or systemd" >&2; exit 2; }
            only+=("$2")
            shift
            ;;
        -h | --help)
            sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *) echo "build-images: unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

wanted() {
    local name
    # systemd-test is for one test: built only when asked for.
    ((${#only[@]} == 0)) && [[ $1 != systemd ]] && return 0
    for name in "${only[@]}"; do
        [[ $name == "$1" ]] && return 0
    done
    return 1
}

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'build-images: %s\n' "$*" >&2; exit 1; }

sudo=()
if ((EUID != 0)); then
    command -v sudo >/dev/null || die "needs root or sudo (for apt-get, debootstrap and chroot)"
    sudo=(sudo)
fi

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "cannot talk to the docker daemon"

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# Removes a rootfs work directory, unmounting anything debootstrap left mounted.
workdir=""
cleanup() {
    [[ -n $workdir && -d $workdir ]] || return 0
    local mnt
    while read -r mnt; do
        "${sudo[@]}" umount -l "$mnt" 2>/dev/null || true
    done < <(awk -v d="$workdir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r)
    "${sudo[@]}" rm -rf --one-file-system "$workdir"
}
trap cleanup EXIT

build_base() {
    if ((rebuild == 0)) && image_exists "$BASE_IMAGE"; then
        log "$BASE_IMAGE exists, skipping (use --rebuild to redo it)"
        return
    fi
    old_base=$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE" 2>/dev/null || true)
    log "building $BASE_IMAGE with debootstrap from $MIRROR"
    if ! command -v debootstrap >/dev/null; then
        "${sudo[@]}" apt-get update
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap
    fi
    workdir=$(mktemp -d /var/tmp/concierge-rootfs.XXXXXX)
    local rootfs=$workdir/rootfs
    # curl is the healthcheck tool of every image: one shared layer.
    "${sudo[@]}" debootstrap --variant=minbase --include=curl bookworm "$rootfs" "$MIRROR"

    # What the official Debian images do: no daemons started by package
    # scripts, no recommends, no docs/man pages, no apt caches.
    "${sudo[@]}" tee "$rootfs/etc/apt/sources.list" >/dev/null <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb $SECURITY_MIRROR bookworm-security main
EOF
    "${sudo[@]}" tee "$rootfs/usr/sbin/policy-rc.d" >/dev/null <<'EOF'
#!/bin/sh
# Containers have no init: package scripts must not start services.
exit 101
EOF
    "${sudo[@]}" chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
    "${sudo[@]}" tee "$rootfs/etc/apt/apt.conf.d/90concierge" >/dev/null <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
EOF
    "${sudo[@]}" tee "$rootfs/etc/dpkg/dpkg.cfg.d/90concierge" >/dev/null <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
    # Security updates published after the bookworm point release.
    "${sudo[@]}" cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
    "${sudo[@]}" chroot "$rootfs" /bin/sh -c \
        'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get -y -qq -o Dpkg::Use-Pty=0 upgrade && apt-get clean'
    # Trim what the excludes did not cover (files installed by debootstrap).
    "${sudo[@]}" find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    "${sudo[@]}" find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
    "${sudo[@]}" rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
        "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/debconf/*-old \
        "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* "$rootfs"/tmp/* "$rootfs"/var/tmp/*
    # Docker bind-mounts these at run time; do not ship the host's copies.
    "${sudo[@]}" sh -c ": > '$rootfs/etc/resolv.conf'; : > '$rootfs/etc/machine-id'; echo localhost > '$rootfs/etc/hostname'"

    "${sudo[@]}" tar --numeric-owner --xattrs -C "$rootfs" -c . |
        docker import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV LANG=C.UTF-8' \
            --change 'CMD ["bash"]' \
            --message "debootstrap --variant=minbase bookworm ($MIRROR)" \
            - "$BASE_IMAGE" >/dev/null
    cleanup
    workdir=""
}

# The gateway binary: --binary's, or target/release/concierge, rebuilt when
# missing or older than its sources. Sets $bin.
gateway_binary() {
    local newer=""
    if [[ -n $binary ]]; then
        bin=$binary
        log "using $bin"
        return
    fi
    # Where cargo puts it: CARGO_TARGET_DIR (relative to the repository, where
    # cargo runs) or target/.
    local target=${CARGO_TARGET_DIR:-target}
    [[ $target == /* ]] || target=$root/$target
    bin=$target/release/concierge
    if [[ -x $bin ]]; then
        newer=$(find "$root/src" "$root/Cargo.toml" "$root/Cargo.lock" -newer "$bin" -print -quit)
    fi
    if [[ ! -x $bin || -n $newer ]]; then
        local why="no binary yet"
        [[ -z ${newer:-} ]] || why="newer than the binary: ${newer#"$root"/}"
        log "cargo build --release ($why)"
        command -v cargo >/dev/null || die "cargo is not installed: install Rust, or build the image with deploy/Dockerfile"
        (cd "$root" && cargo build --release --bin concierge)
    else
        log "$bin is up to date"
    fi
}

build_from_base() { # image dockerfile context [docker build options...]
    local old
    old=$(docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true)
    log "building $1"
    docker build --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$1" -f "$2" "${@:4}" "$3"
    # Drop the image this one replaced, if nothing else uses it.
    if [[ -n $old && $old != "$(docker image inspect -f '{{.Id}}' "$1")" ]]; then
        docker image rm "$old" >/dev/null 2>&1 || true
    fi
}

# A build context holding the binary as ./concierge (stripped unless
# --keep-debug): the repository (and target/) stays out of it. Sets $ctx,
# and $sha256 to the binary's digest before stripping.
binary_context() {
    local bin
    gateway_binary
    ctx=$(mktemp -d)
    sha256=$(sha256sum "$bin") && sha256=${sha256%% *}
    cp "$bin" "$ctx/concierge"
    if ((keep_debug == 0)); then
        strip --strip-debug "$ctx/concierge" || die "strip failed (install binutils, or use --keep-debug)"
    fi
}

# The host's glibc must not be newer than bookworm's (2.36): check the binary runs.
check_runs() { # image [docker run options]
    local image=$1 out
    shift
    if ! out=$(docker run --rm "$@" "$image" --version 2>&1); then
        die "the concierge binary does not run in the bookworm image $image ($out).
Was it built on a host with a newer glibc than Debian 12? Build with deploy/Dockerfile instead."
    fi
    version=${out##* }
}

build_gateway() {
    local ctx version sha256
    binary_context
    build_from_base concierge/gateway:latest "$here/Dockerfile.local" "$ctx"
    rm -rf "$ctx"
    check_runs concierge/gateway:latest
    docker tag concierge/gateway:latest "concierge/gateway:$version"
    log "concierge/gateway:$version runs"
}

build_systemd() {
    local ctx version sha256
    binary_context
    cp -r "$here/systemd" "$ctx/systemd"
    # tests/systemd.rs compares the label with its own binary's digest.
    build_from_base concierge/systemd-test:latest "$here/Dockerfile.systemd" "$ctx" \
        --label "org.concierge.binary.sha256=$sha256"
    rm -rf "$ctx"
    check_runs concierge/systemd-test:latest --entrypoint /usr/local/bin/concierge
    log "concierge/systemd-test:latest runs concierge $version"
}

start=$SECONDS
old_base=""
build_base
wanted redis && build_from_base concierge/redis:latest "$here/Dockerfile.redis" "$here"
if wanted lb; then
    build_from_base concierge/lb:latest "$here/Dockerfile.lb" "$here"
    # The replicas are resolved at run time (init-addr none): nothing to fake.
    docker run --rm concierge/lb:latest haproxy -c -q -f /etc/haproxy/haproxy.cfg ||
        die "deploy/haproxy.cfg is invalid (see above)"
fi
wanted gateway && build_gateway
wanted systemd && build_systemd

# A replaced base goes once no image is built FROM it any more.
if [[ -n $old_base && $old_base != "$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")" ]] &&
    docker image inspect "$old_base" >/dev/null 2>&1; then
    docker image rm "$old_base" >/dev/null 2>&1 ||
        echo "note: the previous base image is still used by an image not rebuilt (--only)"
fi
log "done in $((SECONDS - start)) s"
docker image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' | grep '^concierge/' | sort
