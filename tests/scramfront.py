"""A Kafka SASL/SCRAM front door for the tests' tansu broker: the authentication half of a broker
with ``SASL_PLAINTEXT`` listeners, so that Headrace's clients can be shown to log in.

Why: tansu 0.6 checks SCRAM logins (``--authentication``) against credentials only its SQL storage
engines keep, and the tansu binary here has only the memory/S3 engine, which keeps none: with
authentication on, every user is unknown (``tests/integration/test_kafka_auth.py`` shows those
refusals against tansu itself). This front speaks the broker side of Kafka's SASL exchange
(ApiVersions passed through; SaslHandshake v0-1; SaslAuthenticate v0-2 carrying RFC 5802 SCRAM
with SHA-512 or SHA-256, as RFC 7677 and KIP-84 describe it) against its own user list, refuses
any other request before a login succeeds, and after it relays the connection's bytes to tansu,
which advertises the front's address so that every connection a client opens comes back here.

It is a test fixture, not a product part: what it shows is that the settings Headrace gives
librdkafka and Kafka's Java client make both perform a correct SCRAM login, and that a wrong
password or an unknown user is refused by a server that checks them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import socket
import ssl
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
MECHANISMS = {"SCRAM-SHA-512": hashlib.sha512, "SCRAM-SHA-256": hashlib.sha256}
ITERATIONS = 4096  # Kafka's minimum for SCRAM
UNSUPPORTED_SASL_MECHANISM, SASL_AUTHENTICATION_FAILED = 33, 58


def _uvarint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def _put_uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _skip_tags(data: bytes, at: int) -> int:
    count, at = _uvarint(data, at)
    for _ in range(count):
        _, at = _uvarint(data, at)
        size, at = _uvarint(data, at)
        at += size
    return at


@dataclass
class Scram:
    """One SCRAM server exchange (RFC 5802 section 5), for ``users``' passwords."""

    mechanism: str
    users: dict[str, str]
    state: str = "first"
    nonce: str = ""
    client_first_bare: str = ""
    server_first: str = ""
    salted: bytes = b""
    salt: bytes = field(default_factory=lambda: os.urandom(16))

    def _h(self, data: bytes) -> bytes:
        return MECHANISMS[self.mechanism](data).digest()

    def _hmac(self, key: bytes, data: bytes) -> bytes:
        return hmac.new(key, data, MECHANISMS[self.mechanism]).digest()

    def step(self, message: bytes) -> bytes:
        """The server's answer to a client message; ValueError when the login fails."""
        text = message.decode()
        if self.state == "first":
            gs2, _, bare = text.partition(",")[2].partition(",")  # "n,," then the bare message
            if not text.startswith("n,") or gs2:
                raise ValueError("channel binding or an authorization id is not supported")
            attributes = dict(part.split("=", 1) for part in bare.split(","))
            user = attributes["n"].replace("=2C", ",").replace("=3D", "=")
            if user not in self.users:
                raise ValueError(f"unknown user '{user}'")
            self.client_first_bare = bare
            self.nonce = attributes["r"] + base64.b64encode(os.urandom(18)).decode()
            self.server_first = f"r={self.nonce},s={base64.b64encode(self.salt).decode()},i={ITERATIONS}"
            self.salted = hashlib.pbkdf2_hmac(MECHANISMS[self.mechanism]().name, self.users[user].encode(),
                                              self.salt, ITERATIONS)
            self.state = "final"
            return self.server_first.encode()
        if self.state == "final":
            without_proof, _, proof = text.rpartition(",p=")
            attributes = dict(part.split("=", 1) for part in without_proof.split(","))
            if attributes.get("r") != self.nonce or attributes.get("c") != "biws":
                raise ValueError("the nonce or the channel binding does not match")
            auth_message = f"{self.client_first_bare},{self.server_first},{without_proof}".encode()
            client_key = bytes(a ^ b for a, b in zip(base64.b64decode(proof), self._hmac(
                self._h(self._hmac(self.salted, b"Client Key")), auth_message), strict=True))
            if not hmac.compare_digest(self._h(client_key), self._h(self._hmac(self.salted, b"Client Key"))):
                raise ValueError("invalid credentials")
            self.state = "done"
            signature = self._hmac(self._hmac(self.salted, b"Server Key"), auth_message)
            return b"v=" + base64.b64encode(signature)
        raise ValueError("the exchange is over")


class ScramFront:
    """Listens on 127.0.0.1:``port``; relays authenticated connections to 127.0.0.1:``upstream``."""

    def __init__(self, users: dict[str, str], *, tls: ssl.SSLContext | None = None, sasl: bool = True) -> None:
        """``tls``: clients connect over TLS with this server context (SSL, SASL_SSL);
        ``sasl``: a login is wanted (else a connection is relayed once its TLS handshake is done)."""
        self.users, self.tls, self.sasl = users, tls, sasl
        # bound and listening from here on: a port only probed and let go was once taken by the
        # broker started next (tests.services.free_port gave it the same number), and this front
        # then failed to start
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(64)
        self.port = int(self.socket.getsockname()[1])
        self.upstream = 0
        self.logins: list[tuple[str, str]] = []  # (mechanism, "ok" | the reason refused)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, upstream: int) -> None:
        self.upstream = upstream
        threading.Thread(target=self._serve, daemon=True).start()
        assert self.ready.wait(10), "the SCRAM front did not start"

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._client, sock=self.socket, ssl=self.tls))
        self.ready.set()
        try:
            self.loop.run_forever()
        finally:
            server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader: asyncio.StreamReader | None = None
        up_writer: asyncio.StreamWriter | None = None
        scram: Scram | None = None
        try:
            if not self.sasl:  # TLS only: the handshake (and the client's certificate) was the check
                self.logins.append(("TLS", "ok"))
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
                await self._relay(reader, writer, up_reader, up_writer)
                return
            while True:
                size = struct.unpack(">i", await reader.readexactly(4))[0]
                frame = await reader.readexactly(size)
                api_key, version, correlation = struct.unpack(">hhi", frame[:8])
                if api_key == API_VERSIONS:  # the broker's own answer (it lists the SASL APIs)
                    if up_writer is None:
                        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
                    up_writer.write(struct.pack(">i", size) + frame)
                    await up_writer.drain()
                    assert up_reader is not None
                    answer_size = struct.unpack(">i", await up_reader.readexactly(4))[0]
                    writer.write(struct.pack(">i", answer_size) + await up_reader.readexactly(answer_size))
                elif api_key == SASL_HANDSHAKE:
                    client_id_size = struct.unpack(">h", frame[8:10])[0]
                    at = 10 + max(client_id_size, 0)
                    length = struct.unpack(">h", frame[at:at + 2])[0]
                    mechanism = frame[at + 2:at + 2 + length].decode()
                    offered = b"".join(struct.pack(">h", len(m)) + m.encode() for m in MECHANISMS)
                    error = 0 if mechanism in MECHANISMS else UNSUPPORTED_SASL_MECHANISM
                    body = struct.pack(">h", error) + struct.pack(">i", len(MECHANISMS)) + offered
                    writer.write(struct.pack(">ii", 4 + len(body), correlation) + body)
                    if error:
                        self.logins.append((mechanism, "mechanism not offered"))
                        await writer.drain()
                        return
                    scram = Scram(mechanism, self.users)
                elif api_key == SASL_AUTHENTICATE and scram is not None:
                    client_id_size = struct.unpack(">h", frame[8:10])[0]
                    at = 10 + max(client_id_size, 0)
                    if version >= 2:  # flexible: request header tags, compact bytes
                        at = _skip_tags(frame, at)
                        length, at = _uvarint(frame, at)
                        token = frame[at:at + length - 1]
                    else:
                        length = struct.unpack(">i", frame[at:at + 4])[0]
                        token = frame[at + 4:at + 4 + length]
                    try:
                        answer, error, message = scram.step(token), 0, None
                    except (ValueError, KeyError) as exc:
                        answer, error = b"", SASL_AUTHENTICATION_FAILED
                        message = (f"Authentication failed during authentication due to invalid credentials "
                                   f"with SASL mechanism {scram.mechanism}")
                        self.logins.append((scram.mechanism, str(exc)))
                    writer.write(self._authenticate_answer(version, correlation, error, message, answer))
                    if error:
                        await writer.drain()
                        return
                    if scram.state == "done":
                        self.logins.append((scram.mechanism, "ok"))
                        await writer.drain()
                        if up_writer is None:
                            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
                        assert up_reader is not None
                        await self._relay(reader, writer, up_reader, up_writer)
                        return
                else:  # anything else before a login: a broker closes the connection
                    return
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            return
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    w.close()

    @staticmethod
    def _authenticate_answer(version: int, correlation: int, error: int, message: str | None, token: bytes) -> bytes:
        if version >= 2:
            text = b"\x00" if message is None else _put_uvarint(len(message) + 1) + message.encode()
            body = (struct.pack(">h", error) + text + _put_uvarint(len(token) + 1) + token
                    + struct.pack(">q", 0) + b"\x00")
            head = struct.pack(">i", correlation) + b"\x00"
        else:
            text = struct.pack(">h", -1) if message is None else struct.pack(">h", len(message)) + message.encode()
            body = struct.pack(">h", error) + text + struct.pack(">i", len(token)) + token
            if version >= 1:
                body += struct.pack(">q", 0)
            head = struct.pack(">i", correlation)
        return struct.pack(">i", len(head) + len(body)) + head + body

    @staticmethod
    async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> None:
        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(1 << 16):
                    sink.write(data)
                    await sink.drain()
            except ConnectionError:
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def certificates(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate it signed, and a second
    CA that signed nothing here; PEM files in ``folder``. ``client`` holds the client's private key
    and its certificate in one file (Java's PEM keystore reads both from one)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    def issue(subject: str, key: Any, issuer: tuple[str, Any] | None, usage: Any = None) -> x509.Certificate:
        builder = (x509.CertificateBuilder().subject_name(name(subject))
                   .issuer_name(name(issuer[0] if issuer else subject)).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=2)))
        if issuer is None:
            builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        else:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            if usage == ExtendedKeyUsageOID.SERVER_AUTH:
                import ipaddress

                builder = builder.add_extension(x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        return builder.sign(issuer[1] if issuer else key, hashes.SHA256())

    def pem(cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    def pem_key(key: Any) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    folder.mkdir(parents=True, exist_ok=True)
    ca_key, other_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(4))
    ca = issue("headrace test CA", ca_key, None)
    files = {"ca": folder / "ca.pem", "other_ca": folder / "other-ca.pem", "server": folder / "server.pem",
             "client": folder / "client-bundle.pem"}
    files["ca"].write_bytes(pem(ca))
    files["other_ca"].write_bytes(pem(issue("another CA", other_key, None)))
    files["server"].write_bytes(pem_key(server_key) + pem(issue("127.0.0.1", server_key, ("headrace test CA", ca_key),
                                                                 ExtendedKeyUsageOID.SERVER_AUTH)))
    files["client"].write_bytes(pem_key(client_key) + pem(issue("headrace", client_key, ("headrace test CA", ca_key),
                                                                 ExtendedKeyUsageOID.CLIENT_AUTH)))
    return files


def server_context(files: dict[str, Path], *, client_certificates: bool) -> ssl.SSLContext:
    """TLS for the front: its certificate; with ``client_certificates``, clients must show one
    the test CA signed (mutual TLS)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files["server"])
    if client_certificates:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(files["ca"])
    return context
