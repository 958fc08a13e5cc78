"""Reads a running Skein federation with pelicanfs, the Pelican Platform's fsspec client.

Starts nothing: scripts/compat-test.sh builds the federation and runs this. Uses
pelicanfs unchanged, the way its README shows (PelicanFileSystem("pelican://<host>")
followed by cat/open/ls), and checks every answer against the expected contents.

usage: pelicanfs_check.py --director http://127.0.0.1:PORT --expect-file FILE
           [--discovery pelican://127.0.0.1:TLSPORT] [--path /test/hello.txt]

--discovery: a pelican:// URL whose host serves the discovery document over https
  (pelicanfs always fetches https://<host>/.well-known/pelican-configuration). Without
  it, the filesystem is given the director URL that discovery would have produced
  (its `director_endpoint`), which is the only step skipped.
Exits 1 on any mismatch; prints one line per check and a summary line.
"""

import argparse
import json
import logging
import posixpath
import sys
import traceback
import urllib.request

from importlib.metadata import version

from pelicanfs.core import PelicanFileSystem

results = []


def check(name, fn):
    try:
        detail = fn()
        results.append((name, True))
        print(f"  ok    {name}: {detail}")
    except Exception as e:  # any failure is a failed check, reported with its cause
        results.append((name, False))
        print(f"  FAIL  {name}: {type(e).__name__}: {e}")
        if args.verbose:
            traceback.print_exc()


def expect_equal(got, want, what):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


ap = argparse.ArgumentParser()
ap.add_argument("--director", required=True, help="http://127.0.0.1:PORT of a Skein director")
ap.add_argument("--expect-file", required=True, help="local copy of the object's contents")
ap.add_argument("--discovery", default="", help="pelican://host:port serving discovery over https")
ap.add_argument("--path", default="/test/hello.txt")
ap.add_argument("--cache-url", default="", help="the cache pelicanfs should read from")
ap.add_argument("--skip-ls", action="store_true", help="do not check listings")
ap.add_argument("--verbose", action="store_true")
args = ap.parse_args()
if args.verbose:
    logging.basicConfig(level=logging.DEBUG)

with open(args.expect_file, "rb") as f:
    want = f.read()
director = args.director.rstrip("/")
print(f"pelicanfs {version('pelicanfs')} against {director}" + (f" (discovery {args.discovery})" if args.discovery else ""))

# The discovery document as pelicanfs reads it (it only uses director_endpoint).
doc = {}


def discovery_doc():
    with urllib.request.urlopen(f"{director}/.well-known/pelican-configuration", timeout=5) as r:
        doc.update(json.load(r))
    endpoint = doc.get("director_endpoint")
    if not endpoint:
        raise AssertionError(f"no director_endpoint in {doc}")
    return f"director_endpoint={endpoint}"


check("discovery document has director_endpoint", discovery_doc)


def new_fs(**kwargs):
    if args.discovery:
        return PelicanFileSystem(args.discovery, **kwargs)
    fs = PelicanFileSystem("pelican://" + director.split("://", 1)[1], **kwargs)
    # What _discover_federation_metadata would set from the document over https.
    fs.director_url = doc.get("director_endpoint", director).rstrip("/") + "/"
    return fs


fs = new_fs()
host_url = args.discovery.rstrip("/") if args.discovery else ""


def cat():
    got = fs.cat(args.path)
    expect_equal(got, want, "cat")
    return f"{len(got)} bytes match; director_url={fs.director_url}"


def cat_url():
    if not host_url:
        return "skipped (needs --discovery)"
    got = PelicanFileSystem(host_url).cat(host_url + args.path)
    expect_equal(got, want, "cat pelican:// URL")
    return f"{host_url + args.path}: {len(got)} bytes match"


def open_read():
    with fs.open(args.path, "rb") as f:
        got = f.read()
    expect_equal(got, want, "open/read")
    return f"{len(got)} bytes match"


def range_read():
    got = fs.cat_file(args.path, start=1, end=4)
    expect_equal(got, want[1:4], "ranged cat_file")
    return f"bytes 1..4 = {got!r}"


def which_cache():
    # What pelicanfs learned from the director's Link / X-Pelican-Namespace headers.
    seen = {}
    for ns, manager in fs._namespace_cache.items():
        hdr = manager.director_response.x_pel_ns_hdr if manager.director_response else None
        seen[ns] = {"caches": list(manager._cache_list), "collections_url": hdr.collections_url if hdr else None, "require_token": hdr.require_token if hdr else None}
    if not seen:
        raise AssertionError("pelicanfs recorded no namespace")
    if args.cache_url:
        firsts = [v["caches"][0] for v in seen.values() if v["caches"]]
        if not any(f.rstrip("/") == args.cache_url.rstrip("/") for f in firsts):
            raise AssertionError(f"expected reads from {args.cache_url}, pelicanfs chose {seen}")
    return json.dumps(seen)


def direct_reads():
    got = new_fs(direct_reads=True).cat(args.path)
    expect_equal(got, want, "direct_reads cat (origin API)")
    return f"{len(got)} bytes match via /api/v1.0/director/origin"


def ls():
    parent = posixpath.dirname(args.path)
    names = fs.ls(parent, detail=False)
    if args.path not in [n.rstrip("/") for n in names]:
        raise AssertionError(f"{args.path} not in listing {names}")
    return f"{parent} -> {names}"


def get_to_file():
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        local = posixpath.join(tmp, "copy")
        fs.get(args.path, local)
        with open(local, "rb") as f:
            got = f.read()
    expect_equal(got, want, "get")
    return f"{len(got)} bytes match"


def exists():
    if not fs.exists(args.path):
        raise AssertionError("exists() is False")
    return "True"


def missing():
    if fs.exists(posixpath.dirname(args.path) + "/no-such-object"):
        raise AssertionError("exists() is True for a missing object")
    return "False"


def info():
    got = fs.info(args.path)
    expect_equal(int(got.get("size", -1)), len(want), "info size")
    return json.dumps({k: str(v) for k, v in got.items()})


def isdir():
    parent = posixpath.dirname(args.path)
    expect_equal((fs.isdir(parent), fs.isdir(args.path)), (True, False), "isdir(parent, object)")
    return f"isdir({parent})=True, isdir({args.path})=False"


def find():
    parent = posixpath.dirname(args.path)
    found = fs.find(parent)
    if args.path not in found:
        raise AssertionError(f"{args.path} not in {found}")
    return f"{found}"


def glob():
    pattern = posixpath.dirname(args.path) + "/*.txt"
    found = fs.glob(pattern)
    if args.path not in found:
        raise AssertionError(f"{args.path} not in {found}")
    return f"{pattern} -> {found}"


check("cat " + args.path, cat)
check("cat pelican:// URL", cat_url)
check("open().read()", open_read)
check("cat_file range", range_read)
check("direct_reads (origin)", direct_reads)
if not args.skip_ls:
    check("ls " + posixpath.dirname(args.path), ls)
    check("isdir", isdir)
    check("find", find)
    check("glob", glob)
check("get to a local file", get_to_file)
check("exists", exists)
check("info", info)
check("exists (missing object)", missing)
# Last: pelicanfs drops a cache from its list on any error, so the cache still being
# first here means every read above was served by the cache.
check("cache still first after all calls", which_cache)

passed = sum(1 for _, ok in results if ok)
failed = len(results) - passed
print(f"pelicanfs: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
