#!/usr/bin/env bash
# Skein system benchmarks: redirects vs nginx, convergence, restart, ingest, memory,
# forwards. Installs what it needs (Debian packages), prints a summary, and rewrites the
# results section of docs/benchmarks.md and docs/convergence.png.
#
#   scripts/bench.sh           full run (several minutes)
#   scripts/bench.sh --quick   short runs, fewer ads (about two minutes)
#   scripts/bench.sh --no-install   skip apt-get
#
# Timing never gates anything: this script exits non-zero only if a step fails.
set -euo pipefail

QUICK=0
INSTALL=1
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    --no-install) INSTALL=0 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown option $arg" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
HERE="$ROOT/scripts/bench"
WORK="$(mktemp -d /tmp/skein-bench.XXXXXX)"
RESULTS="$WORK/results.jsonl"
: > "$RESULTS"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$QUICK" = 1 ]; then
  WRK_DURATION=5s; PAIRS=2; PINNED_PAIRS=1; CONV_ADS=60; STORE_ADS=100000; INGEST_ADS=20000; RESTARTS=2
  SCALE_INTERVAL=20s
else
  WRK_DURATION=15s; PAIRS=3; PINNED_PAIRS=2; CONV_ADS=300; STORE_ADS=100000; INGEST_ADS=50000; RESTARTS=3
  SCALE_INTERVAL=60s
fi
WRK_THREADS=2
WRK_CONNECTIONS=64

log() { printf '\n== %s (load: %s)\n' "$*" "$(cut -d' ' -f1-3 /proc/loadavg)" >&2; }

# --- tools -----------------------------------------------------------------------------
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
command -v gnuplot >/dev/null || need+=(gnuplot-nox)
command -v python3 >/dev/null || need+=(python3)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$INSTALL" = 1 ]; then
    log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing: ${need[*]} (run without --no-install)" >&2; exit 1
  fi
fi

log "building (release, --features bench)"
cargo build --release --features bench --bin skein-bench --bin skein >&2
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BENCH="$TARGET/release/skein-bench"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- (a) redirects: Skein vs nginx, A/B/A/B --------------------------------------------
log "(a) starting a director with 1,000 located servers / 10,000 namespaces, GeoIP, adaptive"
mkfifo "$WORK/skein.in"
"$BENCH" serve --servers 1000 --namespaces 10000 --geo --paths "$WORK/paths.txt" \
  --data-dir "$WORK/serve" < "$WORK/skein.in" > "$WORK/serve.out" 2> "$WORK/serve.err" &
PIDS+=($!)
SKEIN_PID=$!
exec 9> "$WORK/skein.in"   # hold stdin open; closing it stops the director
for _ in $(seq 600); do grep -q '"ready"' "$WORK/serve.out" 2>/dev/null && break; sleep 0.1; done
SKEIN_URL="$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["ready"])' "$WORK/serve.out")"
RSS_SERVE="$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["rss_mib"])' "$WORK/serve.out")"

NGINX_PORT="$(free_port)"
mkdir -p "$WORK/nginx"
sed -e "s#@DIR@#$WORK/nginx#g" -e "s#@PORT@#$NGINX_PORT#g" "$HERE/nginx.conf.in" > "$WORK/nginx/nginx.conf"
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" 2> "$WORK/nginx/stderr" 9>&- &
PIDS+=($!)
NGINX_PID=$!
NGINX_URL="http://127.0.0.1:$NGINX_PORT"
for _ in $(seq 100); do curl -s -o /dev/null "$NGINX_URL/x" 2>/dev/null && break || sleep 0.1; done

# Sanity: both answer 307 with a Link header.
first_ns="$(head -1 "$WORK/paths.txt")"
for url in "$SKEIN_URL" "$NGINX_URL"; do
  code="$(curl -s -o /dev/null -w '%{http_code}' "$url$first_ns/a/b")"
  [ "$code" = 307 ] || { echo "$url answered $code, not 307" >&2; exit 1; }
done

run_wrk() { # name url [bench: wrk, or wrk_pinned for wrk on core 0]
  local out bench="${3:-wrk}" on=()
  [ "$bench" = wrk_pinned ] && on=(taskset -c 0)
  out="$("${on[@]}" wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"$WRK_DURATION" -s "$HERE/random.lua" "$2" -- "$WORK/paths.txt" | grep '^RESULT')"
  python3 - "$1" "$out" "$(cut -d' ' -f1 /proc/loadavg)" "$bench" >> "$RESULTS" <<'EOF'
import json, sys
name, line, load, bench = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
kv = dict(p.split("=") for p in line.split()[1:])
secs = int(kv["duration_us"]) / 1e6
print(json.dumps({"bench": bench, "target": name, "rps": int(kv["requests"]) / secs,
  "p50_ms": int(kv["p50_us"]) / 1000, "p99_ms": int(kv["p99_us"]) / 1000,
  "errors": int(kv["errors"]) + int(kv["status_errors"]), "load": float(load)}))
EOF
  tail -1 "$RESULTS" >&2
}
for pair in $(seq "$PAIRS"); do
  log "(a) pair $pair/$PAIRS: skein"
  run_wrk skein "$SKEIN_URL"
  log "(a) pair $pair/$PAIRS: nginx"
  run_wrk nginx "$NGINX_URL"
done
# The same again with wrk on core 0 and each server (every thread of it) on core 1: the
# servers measured apart from how the kernel shares two cores between them and wrk
# (docs/benchmarks.md). Not what the goals are judged on.
if [ "$(nproc)" -ge 2 ]; then
  for pid in "$SKEIN_PID" "$NGINX_PID" $(pgrep -P "$NGINX_PID"); do
    taskset -a -p -c 1 "$pid" > /dev/null
  done
  for pair in $(seq "$PINNED_PAIRS"); do
    log "(a) pinned pair $pair/$PINNED_PAIRS: skein"
    run_wrk skein "$SKEIN_URL" wrk_pinned
    log "(a) pinned pair $pair/$PINNED_PAIRS: nginx"
    run_wrk nginx "$NGINX_URL" wrk_pinned
  done
fi
exec 9>&-
wait "$SKEIN_PID" || true
kill "${PIDS[-1]}" 2>/dev/null || true
echo "{\"bench\": \"serve_rss\", \"rss_mib\": $RSS_SERVE}" >> "$RESULTS"

# --- (a) the same requests in process: the handler's CPU alone ---------------------------
# No sockets, no HTTP parsing, one thread: what the director's own code costs per
# redirect, against the CPU it takes per redirect under wrk (kernel, hyper, the handler).
for fed in "8 20" "1000 10000"; do
  set -- $fed
  log "(a) handler in process: $1 servers / $2 namespaces"
  "$BENCH" handler --servers "$1" --namespaces "$2" --data-dir "$WORK/handler-$1" \
    2> "$WORK/handler.err" | python3 -c "import json,sys; r=json.load(sys.stdin); r['servers']=$1; print(json.dumps(r))" \
    | tee -a "$RESULTS" >&2
done

# --- (b)+(f) convergence and forwards --------------------------------------------------
for n in 3 5 7; do
  log "(b) convergence with $n directors, $CONV_ADS ads"
  "$BENCH" convergence --directors "$n" --ads "$CONV_ADS" --data-dir "$WORK/conv$n" \
    --samples "$WORK/conv$n.txt" 2> "$WORK/conv$n.err" | tee -a "$RESULTS" >&2
done

# --- (c)+(e) restart and memory ----------------------------------------------------------
log "(c) writing a store of $STORE_ADS ads"
"$BENCH" make-store --ads "$STORE_ADS" --data-dir "$WORK/store" 2> "$WORK/store.err" | tee -a "$RESULTS" >&2
for i in $(seq "$RESTARTS"); do
  log "(c) restart $i/$RESTARTS: raw sled scan, then director"
  "$BENCH" restart --mode raw --data-dir "$WORK/store" 2> "$WORK/raw.err" | tee -a "$RESULTS" >&2
  "$BENCH" restart --mode director --ads "$STORE_ADS" --data-dir "$WORK/store" 2> "$WORK/restart.err" | tee -a "$RESULTS" >&2
done

# --- (c) refill: an empty director catches up a whole view from a peer ----------------------
log "(c) refill: an empty director pulls $STORE_ADS ads from a peer"
"$BENCH" refill --ads "$STORE_ADS" --data-dir "$WORK/refill" 2> "$WORK/refill.err" | tee -a "$RESULTS" >&2

# --- (d) ingest ------------------------------------------------------------------------
log "(d) ingest over HTTP: $INGEST_ADS ads, 4 clients, batches of 256"
"$BENCH" ingest --via http --ads "$INGEST_ADS" --clients 4 --batch 256 --data-dir "$WORK/ingest-http" \
  2> "$WORK/ingest.err" | tee -a "$RESULTS" >&2
log "(d) ingest in process (Replicator::accept): $INGEST_ADS ads, 4 callers"
"$BENCH" ingest --via accept --ads "$INGEST_ADS" --clients 4 --data-dir "$WORK/ingest-accept" \
  2>> "$WORK/ingest.err" | tee -a "$RESULTS" >&2

# --- (g) cost at scale: 10 real directors, 10,000 servers advertising to all -------------
log "(g) scale: 10 directors (processes), 10,000 servers re-advertising every $SCALE_INTERVAL to every director"
"$BENCH" scale --directors 10 --servers 10000 --interval "$SCALE_INTERVAL" --skein "$TARGET/release/skein" \
  --data-dir "$WORK/scale" 2> "$WORK/scale.err" | tee -a "$RESULTS" >&2

# --- report ----------------------------------------------------------------------------
log "writing docs/benchmarks.md and docs/convergence.png"
mkdir -p docs
{
  echo "# directors p50_ms p99_ms"
  python3 - "$RESULTS" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("bench") == "convergence":
        print(r["directors"], r["p50_ms"], r["p99_ms"])
EOF
} > "$WORK/conv.dat"
gnuplot <<EOF
set terminal pngcairo size 800,500 font "sans,11"
set output "docs/convergence.png"
set title "Skein convergence: ad accepted at one director -> served by all (loopback)"
set xlabel "directors in the cluster"
set ylabel "latency (ms)"
set xtics ("3" 3, "5" 5, "7" 7)
set xrange [2:8]
set yrange [0:*]
set offsets 0, 0, graph 0.1, 0
set key top left
set grid ytics
plot "$WORK/conv.dat" using 1:2 with linespoints lw 2 pt 7 title "p50", \
     "$WORK/conv.dat" using 1:3 with linespoints lw 2 pt 5 title "p99", \
     50 with lines dt 2 lc rgb "red" title "goal: p99 < 50 ms at 5"
EOF

python3 - "$RESULTS" "$QUICK" "$WRK_THREADS" "$WRK_CONNECTIONS" "$WRK_DURATION" <<'EOF'
import json, re, statistics, subprocess, sys, datetime
results = [json.loads(l) for l in open(sys.argv[1])]
quick, threads, conns, duration = sys.argv[2] == "1", sys.argv[3], sys.argv[4], sys.argv[5]
def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception:
        return "?"
by = lambda name: [r for r in results if r.get("bench") == name]
wrk = by("wrk")
pinned = by("wrk_pinned")
med = lambda xs: statistics.median(xs) if xs else float("nan")
sk = [r for r in wrk if r["target"] == "skein"]
ng = [r for r in wrk if r["target"] == "nginx"]
sk_rps, ng_rps = med([r["rps"] for r in sk]), med([r["rps"] for r in ng])
sk_p50, ng_p50 = med([r["p50_ms"] for r in sk]), med([r["p50_ms"] for r in ng])
sk_p99, ng_p99 = med([r["p99_ms"] for r in sk]), med([r["p99_ms"] for r in ng])
conv = {r["directors"]: r for r in by("convergence")}
raw = by("restart")
raw_ms = min((r["ms"] for r in raw if r["mode"] == "raw"), default=float("nan"))
dir_runs = [r for r in raw if r["mode"] == "director"]
dir_ms = min((r["ms"] for r in dir_runs), default=float("nan"))
rss = max((r["rss_mib"] for r in dir_runs), default=float("nan"))
stored = dir_runs[0]["ads"] if dir_runs else 0
ing = {r["via"]: r for r in by("ingest")}
serve_rss = by("serve_rss")[0]["rss_mib"] if by("serve_rss") else float("nan")
ok = lambda b: "met" if b else "**missed**"
rows = [
 ("(a) redirect throughput vs nginx", f"{sk_rps:,.0f} req/s vs {ng_rps:,.0f} req/s = **{sk_rps/ng_rps:.2f}x**", ">= 0.9x", ok(sk_rps >= 0.9 * ng_rps)),
 ("(a) redirect p50 / p99", f"p50 {sk_p50:.2f} ms (nginx {ng_p50:.2f}); p99 {sk_p99:.2f} ms vs nginx {ng_p99:.2f} ms = **{sk_p99/ng_p99:.2f}x**", "p99 <= 1.5x nginx", ok(sk_p99 <= 1.5 * ng_p99)),
]
if pinned:
    p_sk = [r for r in pinned if r["target"] == "skein"]
    p_ng = [r for r in pinned if r["target"] == "nginx"]
    p_rps = (med([r["rps"] for r in p_sk]), med([r["rps"] for r in p_ng]))
    p_p99 = (med([r["p99_ms"] for r in p_sk]), med([r["p99_ms"] for r in p_ng]))
    rows.append(("(a) the same, wrk on core 0 and the server on core 1", f"{p_rps[0]:,.0f} req/s vs {p_rps[1]:,.0f} req/s = **{p_rps[0]/p_rps[1]:.2f}x**; p99 {p_p99[0]:.2f} ms vs {p_p99[1]:.2f} ms = **{p_p99[0]/p_p99[1]:.2f}x**", "-", "-"))
for r in by("handler"):
    rows.append((f"(a) handler in process, {r['servers']:,} servers", f"**{r['ns_per_request']/1000:.2f} µs** per redirect ({r['requests']:,} requests, one thread, no sockets; {r['answered_at_once']:,} answered at once)", "-", "-"))
for n in (3, 5, 7):
    if n in conv:
        c = conv[n]
        rows.append((f"(b) convergence, {n} directors", f"p50 {c['p50_ms']:.2f} ms, p99 **{c['p99_ms']:.2f} ms** (max {c['max_ms']:.2f}, {c['ads']} ads)", "p99 < 50 ms at 5" if n == 5 else "-", ok(c["p99_ms"] < 50) if n == 5 else "-"))
raw_cpu = min((r.get("cpu_ms", float("nan")) for r in raw if r["mode"] == "raw"), default=float("nan"))
dir_cpu = min((r.get("cpu_ms", float("nan")) for r in dir_runs), default=float("nan"))
rows.append(("(c) restart to ready", f"**{dir_ms:.0f} ms** with {stored:,} ads; raw sled scan {raw_ms:.0f} ms = {dir_ms/raw_ms:.2f}x (CPU: {dir_cpu:.0f} ms vs {raw_cpu:.0f} ms)", "< 1 s and <= 2x raw scan", ok(dir_ms < 1000 and dir_ms <= 2 * raw_ms)))
for r in by("refill"):
    rows.append(("(c) refill from a peer (catch-up)", f"**{r['secs']:.2f} s** for {r['ads']:,} ads ({r['ads_per_sec']:,.0f} ads/s)", "< 3 s for 100,000", ok(r["secs"] < 3 or r["ads"] < 100000)))
for via, label in (("http", "HTTP forward batches of 256, 4 clients"), ("accept", "in-process Replicator::accept, 4 callers")):
    if via in ing:
        r = ing[via]
        cpu = r.get("cpu_ms_per_1000_ads", float("nan"))
        rows.append((f"(d) ingest ({label})", f"**{r['ads_per_sec']:,.0f} ads/s** ({r['accepted']:,} ads in {r['secs']:.2f} s; {cpu:.0f} ms CPU per 1,000 ads = {1e6/cpu:,.0f} ads per CPU-second)", ">= 20,000/s", ok(r["ads_per_sec"] >= 20000)))
rows.append(("(e) RSS with 100,000 ads", f"**{rss:.0f} MiB** (director after restart); {serve_rss:.0f} MiB with 1,000 servers / 10,000 ns", "<= 300 MB", ok(rss <= 300)))
for r in by("scale"):
    rows.append((f"(g) CPU per director at scale", f"mean **{r['cpu_pct_per_director_mean']:.1f}%** of a core (max {r['cpu_pct_per_director_max']:.1f}%), {r['directors']} directors, {r['servers']:,} servers every {r['interval_secs']:.0f} s ({r['ads_sent_measured']:,} sends measured, {r['sends_failed']} failed; held {r['ads_held_min']:,}-{r['ads_held_max']:,} ads)", "< 5% of a core", ok(r["cpu_pct_per_director_max"] < 5)))
for n in (3, 5, 7):
    if n in conv:
        rows.append((f"(f) forwards per ad version, {n} directors", f"{conv[n]['forwards_per_ad']:.1f}", "-", "-"))
loads = [r["load"] for r in wrk]
out = []
out.append(f"Run: {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, {'quick' if quick else 'full'} mode, commit `{sh('git rev-parse --short HEAD')}`{' with uncommitted code changes' if sh('git status --porcelain -- src benches Cargo.toml Cargo.lock') else ''}.\n")
out.append("| figure | measured | goal | |\n|---|---|---|---|")
for r in rows:
    out.append("| " + " | ".join(r) + " |")
out.append("")
out.append(f"wrk runs (`wrk -t{threads} -c{conns} -d{duration}`, random object paths, alternating A/B, then the pinned pairs; 1-minute load average at the start of each run):\n")
out.append("| run | target | req/s | p50 ms | p99 ms | errors | load |\n|---|---|---|---|---|---|---|")
for i, r in enumerate(wrk + pinned, 1):
    target = r["target"] + (" (pinned)" if r["bench"] == "wrk_pinned" else "")
    out.append(f"| {i} | {target} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} | {r['load']:.2f} |")
out.append("")
out.append("Machine:\n")
out.append("```")
out.append(f"nproc: {sh('nproc')}")
out.append(sh("lscpu | grep -E 'Model name|^CPU[(]s[)]|Thread|MHz|L3'"))
out.append(sh("free -m | head -2"))
out.append(f"kernel: {sh('uname -r')}; {sh('wrk -v 2>&1 | head -1')}; {sh('nginx -v 2>&1')}")
out.append("load average at report time: " + " ".join(open("/proc/loadavg").read().split()[:3]))
out.append("```")
section = "\n".join(out)
path = "docs/benchmarks.md"
start, end = "<!-- results:start -->", "<!-- results:end -->"
try:
    doc = open(path).read()
except FileNotFoundError:
    doc = f"# Benchmarks\n\n{start}\n{end}\n"
if start not in doc:
    doc += f"\n{start}\n{end}\n"
doc = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: f"{start}\n{section}\n{end}", doc, flags=re.S)
open(path, "w").write(doc)
print("\n" + "\n".join(f"{r[0]}: {re.sub(r'[*]', '', r[1])}  [goal {r[2]}: {r[3].strip('*')}]" for r in rows))
EOF
echo
echo "Wrote docs/benchmarks.md and docs/convergence.png (raw results were in $RESULTS)."
