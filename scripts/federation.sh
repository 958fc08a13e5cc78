#!/usr/bin/env bash
# The demo federation in Docker: three directors, one origin, two caches, and one origin
# speaking Pelican's registration protocol (pelican-origin-1).
#
#   scripts/federation.sh build    build the static binary and the image skein:local
#   scripts/federation.sh up [SERVICE...]  build, start (everything), wait until healthy
#   scripts/federation.sh restart [SERVICE...]  rebuild, recreate (keeps keys and stores), wait
#   scripts/federation.sh status   containers, directors and the ads each one holds
#   scripts/federation.sh logs     follow the logs
#   scripts/federation.sh down     stop and remove containers, network and volumes (keys too)
#   scripts/federation.sh recreate SERVICE...  recreate those containers (volumes kept)
#                                  with the current environment, wait until healthy
#   scripts/federation.sh explain PATH [CLIENT-IP [DIRECTOR-PORT]]  why a client at
#                                  CLIENT-IP (default 128.104.1.1, Madison) is sent where
#                                  it is: a director's ?explain, readable (JSON with --json)
#
# No registry is needed: the image is `FROM scratch` with a static skein binary (and a
# static busybox for the first-start key script). Installs what is missing with apt-get
# (busybox-static, docker-compose) when run as root on Debian/Ubuntu.
# Environment (not SKEIN_*: skein reads those as config keys):
#   FEDERATION_PROFILE   release (default, static binary) or dev (the debug build)
#   FEDERATION_BINARY    use this skein binary instead of building one
#   FEDERATION_IMAGE     image name (default skein:local)
#   FEDERATION_SKIP_BUILD=1  `up` uses the image as it is
#   CARGO_TARGET_DIR     as for cargo
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
image=${FEDERATION_IMAGE:-skein:local}
export FEDERATION_IMAGE=$image
project=skein

say() { printf 'federation: %s\n' "$*" >&2; }
die() {
    say "$*"
    exit 1
}

apt_install() {
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        die "please install $* (needs root and apt-get to do it here)"
    fi
    say "installing $*"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; then
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
    fi
}

# Sets the array `compose` to the v2 plugin or the v1 tool, whichever exists.
find_compose() {
    command -v docker >/dev/null || die "docker is not installed"
    docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable (docker info fails)"
    if docker compose version >/dev/null 2>&1; then
        compose=(docker compose)
    else
        command -v docker-compose >/dev/null || apt_install docker-compose
        compose=(docker-compose)
    fi
    compose+=(--project-name "$project" --file "$root/docker-compose.yml")
}

static_busybox() {
    if [ -x /bin/busybox ] && [ -z "$(shared_libraries /bin/busybox)" ]; then
        echo /bin/busybox
        return
    fi
    apt_install busybox-static
    echo /bin/busybox
}

# Builds skein and prints its path. FEDERATION_PROFILE=release (default): a static binary
# (crt-static; glibc >= 2.34 resolves names without NSS modules). FEDERATION_PROFILE=dev: the
# plain debug binary that `cargo build`/`cargo test` make anyway (its shared libraries
# go into the image too), so a CI run that already ran the tests builds almost nothing.
build_binary() {
    if [ -n "${FEDERATION_BINARY:-}" ]; then
        echo "$FEDERATION_BINARY"
        return
    fi
    local target_dir
    target_dir=${CARGO_TARGET_DIR:-$root/target}
    case "${FEDERATION_PROFILE:-release}" in
        release) "$root/scripts/build-skein.sh" ;;
        dev)
            say "building skein (cargo build, debug)"
            (cd "$root" && cargo build --locked --bin skein >&2)
            echo "$target_dir/debug/skein"
            ;;
        *) die "FEDERATION_PROFILE must be release or dev" ;;
    esac
}

# The shared libraries (and the loader) a binary needs; nothing for a static one.
shared_libraries() {
    ldd "$1" 2>/dev/null | sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (.*/\1/p' || true
}

build() {
    find_compose
    local binary busybox context lib
    binary=$(build_binary)
    busybox=$(static_busybox)
    context=$(mktemp -d)
    mkdir -p "$context"/rootfs/{bin,etc,usr/local/bin,usr/local/share/skein}
    mkdir -p "$context"/state/{keys,var/lib/skein,var/cache/skein}
    if command -v objcopy >/dev/null; then
        objcopy --strip-debug "$binary" "$context/rootfs/usr/local/bin/skein"
    else
        cp "$binary" "$context/rootfs/usr/local/bin/skein"
    fi
    for lib in $(shared_libraries "$binary"); do
        mkdir -p "$context/rootfs$(dirname "$lib")"
        cp -L "$lib" "$context/rootfs$lib"
    done
    cp "$busybox" "$context/rootfs/bin/busybox"
    for applet in sh cat ls rm mv chmod tr echo; do
        ln -s busybox "$context/rootfs/bin/$applet"
    done
    cp "$root/docker/init-keys.sh" "$context/rootfs/usr/local/share/skein/init-keys.sh"
    printf 'root:x:0:0:root:/:/bin/sh\nskein:x:10001:10001:skein:/var/lib/skein:/bin/sh\n' \
        >"$context/rootfs/etc/passwd"
    printf 'root:x:0:\nskein:x:10001:\n' >"$context/rootfs/etc/group"
    cp "$root/docker/Dockerfile" "$context/Dockerfile"
    say "building image $image"
    docker build --quiet --tag "$image" "$context" >/dev/null
    rm -rf "$context"
    docker run --rm "$image" --version >&2
}

wait_healthy() {
    local deadline=$((SECONDS + ${1:-120})) waiting
    while :; do
        waiting=""
        for c in $("${compose[@]}" ps -q); do
            state=$(docker inspect -f '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$c")
            case "$state" in
                *" running healthy" | *"skein-keys exited"*) ;;
                *) waiting="$waiting ${state%% *}" ;;
            esac
        done
        [ -z "$waiting" ] && return 0
        [ $SECONDS -ge $deadline ] && die "not healthy in time:$waiting (see: $0 logs)"
        sleep 1
    done
}

up() {
    [ "${FEDERATION_SKIP_BUILD:-}" = 1 ] || build
    find_compose
    say "starting the federation"
    "${compose[@]}" up -d "$@" >&2
    wait_healthy 180
    say "up: directors http://127.0.0.1:8441 8442 8443 (status page: http://127.0.0.1:8441/); origin 127.0.0.1:9001; caches 127.0.0.1:9101 9102"
    say "    pelican-origin-1 (Pelican protocol) 127.0.0.1:9002"
    show_pelican
    say "try: curl -L http://127.0.0.1:8441/test/hello.txt"
    say "     $0 explain /test/hello.txt 145.100.1.1   (why a client in Amsterdam goes where it goes)"
    say "     curl -L http://127.0.0.1:8443/pelican/hello.txt"
}

# Shows the Pelican-protocol origin served: every director redirects /pelican/hello.txt
# to it (it advertised with an ES256 token, checked against its JWKS in the trust file).
show_pelican() {
    local port target deadline=$((SECONDS + 60))
    command -v curl >/dev/null || apt_install curl
    for port in 8441 8442 8443; do
        while :; do
            target=$(curl -s -o /dev/null -w '%{redirect_url}' "http://127.0.0.1:$port/pelican/hello.txt") || true
            [ "$target" = http://172.29.213.22:9002/pelican/hello.txt ] && break
            [ $SECONDS -ge $deadline ] && die "director on $port does not route /pelican to pelican-origin-1 (got '$target')"
            sleep 1
        done
        say "director 127.0.0.1:$port redirects /pelican/hello.txt to $target"
    done
    say "pelican-origin-1 serves it: $(curl -sf http://127.0.0.1:9002/pelican/hello.txt | head -c 60)"
}

# Operator records, signed with the federation's admin key (`ops`, in the keys volume) from
# inside director-a and sent to it; every director honours them.
#   downtime SERVER DURATION [REASON]   e.g. downtime cache-1 10m "disk swap"
#   downtime-remove SERVER | ban SERVER [REASON] | unban SERVER | records
record() {
    local action=$1
    shift
    local admin=(--key /keys/ops.key --signer ops --federation http://127.0.0.1:8444)
    case "$action" in
        downtime) docker exec skein-director-a skein downtime add "${admin[@]}" "$1" --end "${2:?duration}" --reason "${3:-}" ;;
        downtime-remove) docker exec skein-director-a skein downtime remove "${admin[@]}" "$1" ;;
        ban) docker exec skein-director-a skein ban "${admin[@]}" "$1" --reason "${2:-}" ;;
        unban) docker exec skein-director-a skein unban "${admin[@]}" "$1" ;;
        records) docker exec skein-director-a skein downtime list --federation http://127.0.0.1:8444 ;;
    esac
}

# A director's ?explain for PATH, asked for a client at CLIENT-IP (sent as
# X-Forwarded-For, which the compose directors believe from the host: see
# config/director-a.toml [routing]), printed as a table. Demo client networks: 128.104/16
# Madison, 145.100/16 Amsterdam, 132.239/16 San Diego, 134.75/16 Daejeon.
explain() {
    local json=0
    if [ "${1:-}" = --json ]; then
        json=1
        shift
    fi
    local path=${1:?usage: explain [--json] PATH [CLIENT-IP [DIRECTOR-PORT]]}
    local client=${2:-128.104.1.1} port=${3:-8441} answer
    command -v curl >/dev/null || apt_install curl
    command -v jq >/dev/null || apt_install jq
    answer=$(curl -sS --fail-with-body -H "X-Forwarded-For: $client" \
        "http://127.0.0.1:$port$path?explain") || die "director on $port: $answer"
    if [ "$json" = 1 ]; then
        jq . <<<"$answer"
        return
    fi
    local defs='
        def place: if . == null then "unknown" else "\(.lat), \(.lon)" end;
        def km: if . == null then "-" else "\(. * 10 | round / 10) km" end;'
    jq -r "$defs"'
        "path      \(.path)  (namespace \(.namespace), \(.purpose))",
        "client    \(.client.address // "-") from \(.client.address_from): \(.client.location | place) (located by \(.client.located_by))",
        "sort      \(.sort)   geoip_db: \(.geoip_db // "none")",
        "redirect  \(.location)",
        ""' <<<"$answer"
    jq -r "$defs"'
        (["#", "server", "kind", "location", "located by", "distance", "up", "presence", "bucket"] | @tsv),
        (.candidates | to_entries[] | .value as $c | [
            (.key + 1 | tostring), $c.name, $c.kind, ($c.location | place),
            ($c.location.located_by // "-"), ($c.distance_km | km), ($c.up | tostring),
            $c.presence, ($c.bucket // "-" | tostring)
        ] | @tsv)' <<<"$answer" | column -t -s $'\t'
}

restart() {
    [ "${FEDERATION_SKIP_BUILD:-}" = 1 ] || build
    find_compose
    say "recreating ${*:-every service} (keys and stores are kept)"
    "${compose[@]}" up -d --force-recreate "$@" >&2
    wait_healthy 180
    say "restarted; status page: http://127.0.0.1:8441/"
}

status() {
    find_compose
    "${compose[@]}" ps
    for d in a b c; do
        echo "== director-$d"
        docker exec "skein-director-$d" skein ads --from http://127.0.0.1:8444 || true
    done
}

case "${1:-}" in
    build) build ;;
    up)
        shift
        up "$@"
        ;;
    down)
        find_compose
        "${compose[@]}" down --volumes --remove-orphans
        ;;
    restart)
        shift
        restart "$@"
        ;;
    status) status ;;
    logs)
        find_compose
        "${compose[@]}" logs -f
        ;;
    wait) find_compose && wait_healthy "${2:-120}" ;;
    downtime|downtime-remove|ban|unban|records) record "$@" ;;
    explain)
        shift
        explain "$@"
        ;;
    recreate)
        shift
        find_compose
        "${compose[@]}" up -d --no-deps --force-recreate "$@" >&2
        wait_healthy 120
        ;;
    *) die "usage: $0 build|up|restart|down|status|logs|recreate|downtime|downtime-remove|ban|unban|records|explain" ;;
esac
