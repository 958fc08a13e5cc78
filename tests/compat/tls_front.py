"""A TLS front for a plain-HTTP Skein director, for the pelicanfs check only.

pelicanfs always fetches the federation discovery document over https
(`https://<host>/.well-known/pelican-configuration`, scheme forced in
PelicanFileSystem._discover_federation_metadata), and Skein's director does not
serve TLS yet. This relays TLS connections on 127.0.0.1 to the director's plain port,
with a throwaway self-signed certificate for 127.0.0.1 written to --cert-out (point
SSL_CERT_FILE at it). Everything after discovery goes to `director_endpoint`, which
is the director's own http:// URL, so only the discovery request passes through here.

usage: tls_front.py --backend 127.0.0.1:PORT --cert-out FILE --port-out FILE
"""

import argparse
import asyncio
import datetime
import ipaddress
import os
import ssl
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def self_signed(cert_path: str, key_path: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", required=True)
    ap.add_argument("--cert-out", required=True)
    ap.add_argument("--port-out", required=True)
    args = ap.parse_args()
    host, port = args.backend.rsplit(":", 1)

    key_path = os.path.join(tempfile.mkdtemp(prefix="tls-front-"), "key.pem")
    self_signed(args.cert_out, key_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert_out, key_path)

    async def relay(client_r, client_w):
        try:
            backend_r, backend_w = await asyncio.open_connection(host, int(port))
        except OSError:
            client_w.close()
            return
        await asyncio.gather(pipe(client_r, backend_w), pipe(backend_r, client_w))

    server = await asyncio.start_server(relay, "127.0.0.1", 0, ssl=context)
    bound = server.sockets[0].getsockname()[1]
    tmp = args.port_out + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(bound))
    os.replace(tmp, args.port_out)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
