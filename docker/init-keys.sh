#!/bin/sh
# First start of the compose federation: one Ed25519 key per server and the trust file
# every director reads, all in the `keys` volume. Runs once; later starts keep the keys.
#
# SKEIN_SERVERS: "name:kind:/ns1,/ns2 ..." (directors have no namespaces)
# SKEIN_PELICAN_SERVERS: "name:kind:/ns1,/ns2@host:port ..." servers with protocol =
#   "pelican": an EC P-256 key (name.pem) and a [[pelican]] trust entry with its JWKS
#   (name.jwks), registry prefix /origins/host:port (/caches/name for a cache) and issuer
#   http://host:port
# SKEIN_LOAD_SERVERS: N extra caches load-1..load-N for /load (the fault tests use them)
set -eu
keys=${SKEIN_KEYS:-/keys}
if [ -s "$keys/trust.toml" ]; then
    echo "init-keys: $keys/trust.toml exists; keeping the keys"
    exit 0
fi
umask 077
# A run that died before writing the trust file left keys nobody trusts yet.
rm -f "$keys"/*.key "$keys"/*.pem "$keys"/*.jwks "$keys/trust.toml.new"
servers=${SKEIN_SERVERS:?SKEIN_SERVERS is not set}
i=1
while [ "$i" -le "${SKEIN_LOAD_SERVERS:-0}" ]; do
    servers="$servers load-$i:cache:/load"
    i=$((i + 1))
done
for spec in $servers; do
    name=${spec%%:*}
    rest=${spec#*:}
    kind=${rest%%:*}
    namespaces=""
    case "$rest" in
        *:*)
            for ns in $(echo "${rest#*:}" | tr ',' ' '); do
                namespaces="$namespaces${namespaces:+, }\"$ns\""
            done
            ;;
    esac
    public=$(skein keygen --out "$keys/$name.key")
    printf '[[server]]\nname = "%s"\nkind = "%s"\npublic_key = "%s"\nnamespaces = [%s]\n\n' \
        "$name" "$kind" "$public" "$namespaces" >>"$keys/trust.toml.new"
    echo "init-keys: $kind $name $public"
done
for spec in ${SKEIN_PELICAN_SERVERS:-}; do
    name=${spec%%:*}
    rest=${spec#*:}
    kind=${rest%%:*}
    rest=${rest#*:}
    hostport=${rest#*@}
    namespaces=""
    for ns in $(echo "${rest%@*}" | tr ',' ' '); do
        namespaces="$namespaces${namespaces:+, }\"$ns\""
    done
    prefix="/origins/$hostport"
    [ "$kind" = cache ] && prefix="/caches/$name"
    skein keygen --kind ec --out "$keys/$name.pem" >"$keys/$name.jwks"
    chmod 644 "$keys/$name.jwks"
    printf '[[pelican]]\nname = "%s"\nkind = "%s"\nregistry_prefix = "%s"\nissuer = "http://%s"\njwks_file = "%s.jwks"\nnamespaces = [%s]\n\n' \
        "$name" "$kind" "$prefix" "$hostport" "$name" "$namespaces" >>"$keys/trust.toml.new"
    echo "init-keys: pelican $kind $name $prefix"
done
chmod 644 "$keys/trust.toml.new"
mv "$keys/trust.toml.new" "$keys/trust.toml"
echo "init-keys: wrote $keys/trust.toml"
