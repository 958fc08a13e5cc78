#!/usr/bin/env bash
# Keys and the trust file for the federation of processes in ./local (config/local/*.toml):
#   scripts/local-keys.sh [SKEIN_BINARY]
# Makes every missing key (local/keys/<name>.key, mode 0600) and writes local/trust.toml
# from the keys as they are now, so keys made by hand (the README's "one director by
# hand") are kept and listed. An older trust file that differs is kept as trust.toml.old,
# and the script says so. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
SKEIN=${1:-./target/debug/skein}
[ -x "$SKEIN" ] || { echo "local-keys: no skein binary at $SKEIN (give its path)" >&2; exit 1; }
LOCAL=./local
mkdir -p "$LOCAL/keys"
new="$LOCAL/trust.toml.new"
: > "$new"
for entry in director-a:director: director-b:director: director-c:director: \
             origin-1:origin:/test cache-1:cache:/test; do
  IFS=: read -r name kind ns <<<"$entry"
  key="$LOCAL/keys/$name.key"
  if [ ! -f "$key" ]; then
    "$SKEIN" keygen --out "$key" >/dev/null
    echo "local-keys: made $key"
  fi
  namespaces="[]"; [ -n "$ns" ] && namespaces="[\"$ns\"]"
  printf '[[server]]\nname = "%s"\nkind = "%s"\npublic_key = "%s"\nnamespaces = %s\n\n' \
    "$name" "$kind" "$("$SKEIN" pubkey --key "$key")" "$namespaces" >> "$new"
done
if [ -f "$LOCAL/trust.toml" ] && cmp -s "$new" "$LOCAL/trust.toml"; then
  rm "$new"
  exit 0
fi
if [ -f "$LOCAL/trust.toml" ]; then
  mv "$LOCAL/trust.toml" "$LOCAL/trust.toml.old"
  echo "local-keys: $LOCAL/trust.toml did not list every local key; rewritten (the old one is trust.toml.old); restart running directors"
fi
mv "$new" "$LOCAL/trust.toml"
echo "local-keys: wrote $LOCAL/trust.toml"
