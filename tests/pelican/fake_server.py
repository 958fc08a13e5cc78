"""A stand-in for a Pelican origin (or cache), for end-to-end tests of Skein directors.

It behaves on the wire as a Pelican v7 server does, with its own code path (Python, PyJWT,
cryptography), so Skein's director side is tested against something Skein did not write:
  - generates its own EC P-256 issuer key (PKCS#8 PEM), kid = RFC 7638 thumbprint;
  - serves its issuer metadata: /.well-known/openid-configuration and
    /.well-known/issuer.jwks (where Pelican servers serve them);
  - mints an advertise token per director as Pelican's server_utils.GetAdvertisementTok:
    ES256, kid, iss = its issuer URL, aud = the director's WLCG audience
    (scheme://host[:port], default port dropped), sub = its data URL,
    scope = pelican.advertise, wlcg.ver 1.0, random jti, iat/nbf now, 1 minute life;
  - POSTs an OriginAdvertise JSON body (Pelican's server_structs.OriginAdvertise, the
    struct formerly called OriginAdvertiseV2) to /api/v1.0/director/registerOrigin (or
    registerCache) with Authorization: Bearer, every --interval seconds, with
    startTime (Unix s) and instanceID fixed for the process and generationID +1 per ad;
    on SIGTERM a last ad with status "shutting down";
  - serves objects from --export under --namespace: GET and HEAD with single ranges,
    PROPFIND (Depth 0/1) as WebDAV 207, a Server header starting "pelican/".

usage:
  fake_server.py keygen --key KEY.pem --jwks JWKS.json
  fake_server.py serve --key KEY.pem --listen 127.0.0.1:PORT --url http://127.0.0.1:PORT
      --name NAME --namespace /pel --export DIR --director URL [--director URL ...]
      [--kind origin|cache] [--interval 15] [--lifetime 900] [--once]
"""

import argparse
import base64
import email.utils
import hashlib
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def load_or_create_key(path):
    if os.path.exists(path):
        with open(path, "rb") as f:
            return serialization.load_pem_private_key(f.read(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key


def public_jwk(key):
    numbers = key.public_key().public_numbers()
    x = b64url(numbers.x.to_bytes(32, "big"))
    y = b64url(numbers.y.to_bytes(32, "big"))
    canonical = json.dumps({"crv": "P-256", "kty": "EC", "x": x, "y": y},
                           separators=(",", ":"), sort_keys=True)
    kid = b64url(hashlib.sha256(canonical.encode()).digest())
    return {"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": "ES256", "use": "sig"}


def wlcg_audience(url):
    """Pelican's token.GetWLCGAudience."""
    u = urllib.parse.urlsplit(url)
    port = u.port
    default = {"http": 80, "https": 443}.get(u.scheme)
    host = u.hostname
    if ":" in host:
        host = f"[{host}]"
    return f"{u.scheme}://{host}" + (f":{port}" if port and port != default else "")


def go_time(seconds):
    """A Go time.Time as encoding/json writes it (RFC 3339, nanoseconds trimmed)."""
    dt = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond:06d}Z"


def go_url(text):
    """A Go url.URL as encoding/json writes it (Pelican's TokenIssuer.IssuerUrl)."""
    u = urllib.parse.urlsplit(text)
    return {"Scheme": u.scheme, "Opaque": "", "User": None, "Host": u.netloc,
            "Path": u.path, "RawPath": "", "OmitHost": False, "ForceQuery": False,
            "RawQuery": u.query, "Fragment": u.fragment, "RawFragment": ""}


class Advertiser:
    def __init__(self, args, key, jwk):
        self.args = args
        self.key = key
        self.kid = jwk["kid"]
        self.instance_id = str(uuid.uuid4())
        self.start_time = int(time.time())
        self.generation = 0
        self.lock = threading.Lock()

    def ad(self, status):
        a = self.args
        with self.lock:
            self.generation += 1
            generation = self.generation
        now = time.time()
        caps = {"PublicRead": True, "Read": True, "Write": False, "Listing": True,
                "FallBackRead": True, "Copies": False}
        namespaces = [{
            "Caps": caps,
            "path": a.namespace,
            "token-generation": None,
            "token-issuer": None,
            "from-topology": False,
        }]
        origin = a.kind == "origin"
        host = urllib.parse.urlsplit(a.url).netloc
        return {
            "name": a.name,
            "startTime": self.start_time,
            "instanceID": self.instance_id,
            "generationID": generation,
            "version": "7.17.0",
            "expiry": go_time(now + a.lifetime),
            "serverId": a.name,
            "registry-prefix": f"/origins/{host}" if origin else f"/caches/{a.name}",
            "data-url": a.url,
            "web-url": a.url,
            "capabilities": caps if origin else {k: False for k in caps},
            "namespaces": namespaces,
            "token-issuer": [{"base-paths": [a.namespace], "restricted-paths": None,
                              "issuer": go_url(a.url)}] if origin else None,
            "storageType": "posix" if origin else "",
            "directorTest": True,
            "downtimes": None,
            "requiredFeatures": None,
            "now": go_time(now),
            "status": status,
        }

    def token(self, director):
        now = int(time.time())
        claims = {
            "iss": self.args.url, "sub": self.args.url, "aud": wlcg_audience(director),
            "scope": "pelican.advertise", "wlcg.ver": "1.0",
            "iat": now, "nbf": now, "exp": now + 60, "jti": b64url(os.urandom(16)),
        }
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": self.kid})

    def send(self, status="ok"):
        body = json.dumps(self.ad(status)).encode()
        kind = "Origin" if self.args.kind == "origin" else "Cache"
        held = 0
        for director in self.args.director:
            url = director.rstrip("/") + f"/api/v1.0/director/register{kind}"
            request = urllib.request.Request(url, data=body, method="POST", headers={
                "Content-Type": "application/json",
                "Authorization": "Bearer " + self.token(director),
                "User-Agent": f"pelican-{self.args.kind}/7.17.0",
            })
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    answer = response.read().decode(errors="replace")
                    print(f"advertised to {director}: {response.status} {answer}", flush=True)
                    held += 1
            except urllib.error.HTTPError as e:
                print(f"advertise to {director} refused: {e.code} {e.read().decode(errors='replace')}",
                      flush=True)
            except Exception as e:  # a dead director must not stop the others
                print(f"advertise to {director} failed: {e}", flush=True)
        return held


def make_handler(args, jwks):
    export = os.path.realpath(args.export)
    prefix = args.namespace.rstrip("/")

    class Handler(BaseHTTPRequestHandler):
        server_version = "pelican/7.17.0"
        sys_version = ""
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):
            sys.stderr.write("%s %s\n" % (self.address_string(), fmt % a))

        def reply(self, status, body=b"", ctype="application/json", extra=None):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def error(self, status, code, detail):
            self.reply(status, json.dumps({"error": code, "detail": detail}).encode())

        def local(self):
            path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
            if not (path == prefix or path.startswith(prefix + "/")):
                return None, path
            real = os.path.realpath(os.path.join(export, path[len(prefix):].lstrip("/")))
            if real != export and not real.startswith(export + os.sep):
                return None, path
            return real, path

        def do_GET(self):
            path = urllib.parse.urlsplit(self.path).path
            if path == "/.well-known/openid-configuration":
                doc = {"issuer": args.url, "jwks_uri": args.url + "/.well-known/issuer.jwks"}
                return self.reply(200, json.dumps(doc).encode())
            if path == "/.well-known/issuer.jwks":
                return self.reply(200, json.dumps(jwks).encode())
            if path in ("/api/v1.0/health", "/health"):
                return self.reply(200, b'{"status":"ok"}')
            real, path = self.local()
            if real is None or not os.path.isfile(real):
                return self.error(404, "not_found", f"no object {path}")
            with open(real, "rb") as f:
                data = f.read()
            status, extra = 200, {"Accept-Ranges": "bytes"}
            rng = self.headers.get("Range", "")
            if rng.startswith("bytes=") and "," not in rng:
                first, _, last = rng[6:].partition("-")
                try:
                    if first == "":
                        start, end = max(len(data) - int(last), 0), len(data) - 1
                    else:
                        start = int(first)
                        end = min(int(last), len(data) - 1) if last else len(data) - 1
                    if start >= len(data) or start > end:
                        raise ValueError
                except ValueError:
                    return self.reply(416, b"", extra={"Content-Range": f"bytes */{len(data)}"})
                extra["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                data, status = data[start:end + 1], 206
            self.reply(status, data, "application/octet-stream", extra)

        do_HEAD = do_GET

        def do_PROPFIND(self):
            real, path = self.local()
            if real is None or not os.path.exists(real):
                return self.error(404, "not_found", f"no object {path}")
            entries = [(path, real)]
            if os.path.isdir(real) and self.headers.get("Depth", "1").strip() != "0":
                entries += [(path.rstrip("/") + "/" + n, os.path.join(real, n))
                            for n in sorted(os.listdir(real))]
            parts = ['<?xml version="1.0" encoding="utf-8"?>\n<D:multistatus xmlns:D="DAV:">']
            for href, fs in entries:
                is_dir = os.path.isdir(fs)
                st = os.stat(fs)
                href = urllib.parse.quote(href) + ("/" if is_dir and not href.endswith("/") else "")
                parts.append(
                    f"<D:response><D:href>{href}</D:href><D:propstat><D:prop>"
                    f"<D:resourcetype>{'<D:collection/>' if is_dir else ''}</D:resourcetype>"
                    f"<D:getcontentlength>{0 if is_dir else st.st_size}</D:getcontentlength>"
                    f"<D:getlastmodified>{email.utils.formatdate(st.st_mtime, usegmt=True)}</D:getlastmodified>"
                    "</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>")
            parts.append("</D:multistatus>\n")
            self.reply(207, "\n".join(parts).encode(), "application/xml; charset=utf-8")

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    kg = sub.add_parser("keygen", help="write the issuer key (if missing) and its public JWKS")
    kg.add_argument("--key", required=True)
    kg.add_argument("--jwks", required=True)
    sv = sub.add_parser("serve", help="serve objects and advertise to directors")
    sv.add_argument("--key", required=True)
    sv.add_argument("--listen", required=True, help="host:port")
    sv.add_argument("--url", required=True, help="this server's data URL and issuer URL")
    sv.add_argument("--name", required=True)
    sv.add_argument("--kind", choices=["origin", "cache"], default="origin")
    sv.add_argument("--namespace", required=True)
    sv.add_argument("--export", required=True)
    sv.add_argument("--director", action="append", required=True)
    sv.add_argument("--interval", type=float, default=15.0)
    sv.add_argument("--lifetime", type=float, default=900.0)
    args = ap.parse_args()

    key = load_or_create_key(args.key)
    jwks = {"keys": [public_jwk(key)]}
    if args.command == "keygen":
        with open(args.jwks, "w") as f:
            json.dump(jwks, f)
        print(json.dumps(jwks))
        return 0

    host, _, port = args.listen.rpartition(":")
    httpd = ThreadingHTTPServer((host, int(port)), make_handler(args, jwks))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    advertiser = Advertiser(args, key, jwks["keys"][0])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"serving {args.namespace} at {args.url}", flush=True)
    while not stop.is_set():
        advertiser.send()
        stop.wait(args.interval)
    advertiser.send("shutting down")
    httpd.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
