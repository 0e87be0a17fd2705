"""The HTTPS listener's certificates: the files config.yaml names (`tls-cert-file`,
`tls-key-file`), or, when none are given, certificates of a local authority (a CA made once in
HOMERUN_HOME/tls, as mkcert does: trust its `ca.crt` once and every service's name verifies),
and the TLS contexts that offer HTTP/2 and HTTP/1.1 by ALPN.

`*.localhost` cannot be one wildcard certificate (TLS clients refuse a wildcard directly under a
top-level name), so the local authority issues a certificate per service name as clients ask
for it (SNI), for names the router routes only.

    context = server_context(files, "config.yaml")  # ssl.SSLContext for the HTTPS port
    if reloader.check():                              # the files were replaced on disk
        ...
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from homerun.errors import HomerunError

# The local authority lives ten years, its certificates one; each is made anew when it has
# less than 30 days left.
_AUTHORITY_LIFETIME = datetime.timedelta(days=3650)
_LIFETIME = datetime.timedelta(days=365)
_RENEW_BEFORE = datetime.timedelta(days=30)
ALPN = ["h2", "http/1.1"]
# Certificates issued for SNI names kept in memory (oldest out first).
_ISSUED_KEPT = 1024
Clock = Callable[[], datetime.datetime]


@dataclass(frozen=True)
class CertificateFiles:
    """A PEM certificate chain and its private key."""

    cert: Path
    key: Path

    def mtimes(self) -> tuple[int, int]:
        return (self.cert.stat().st_mtime_ns, self.key.stat().st_mtime_ns)


def local_names(domain: str) -> list[str]:
    """What the local authority's default certificate covers: localhost, the loopback
    addresses, and the platform's domain with a wildcard for its services when it has one
    (`example.com`: `*.example.com`; not `localhost`, see above)."""
    names = ["localhost", "127.0.0.1", "::1"]
    if domain and domain != "localhost":
        names.append(domain)
        if "." in domain:
            names.append(f"*.{domain}")
    return names


class LocalAuthority:
    """A certificate authority of this machine's own, in `directory` (ca.crt, ca.key)."""

    def __init__(self, directory: Path, clock: Clock) -> None:
        self.directory = directory
        self.clock = clock
        self.files = CertificateFiles(directory / "ca.crt", directory / "ca.key")
        now = clock()
        loaded = _load(self.files)
        if loaded is None or loaded[0].not_valid_after_utc - now < _RENEW_BEFORE:
            loaded = self._create(now)
        self.certificate, self.key = loaded

    def _create(
        self, now: datetime.datetime
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        self.directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "homerun local authority")])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _AUTHORITY_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )  # fmt: skip
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        _write(self.files, certificate, key)
        return certificate, key

    def issue(self, names: list[str], stem: str) -> CertificateFiles:
        """A certificate for `names` in directory/issued/STEM.{crt,key}: the one there while it
        covers the same names, is this authority's and has 30 days left, else a new one."""
        files = CertificateFiles(
            self.directory / "issued" / f"{stem}.crt", self.directory / "issued" / f"{stem}.key"
        )
        now = self.clock()
        loaded = _load(files)
        if loaded is not None and _fits(loaded[0], names, now, self.certificate.subject):
            return files
        key = ec.generate_private_key(ec.SECP256R1())
        alternatives: list[x509.GeneralName] = []
        for name in names:
            address = _address(name)
            alternatives.append(x509.DNSName(name) if address is None else x509.IPAddress(address))
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _LIFETIME)
            .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        files.cert.parent.mkdir(parents=True, exist_ok=True)
        _write(files, certificate, key)
        return files


def _address(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def _load(
    files: CertificateFiles,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    try:
        certificate = x509.load_pem_x509_certificate(files.cert.read_bytes())
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    return certificate, key


def _fits(
    certificate: x509.Certificate, names: list[str], now: datetime.datetime, issuer: x509.Name
) -> bool:
    try:
        alternatives = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
    except x509.ExtensionNotFound:
        return False
    covered = {str(name) for name in alternatives.get_values_for_type(x509.DNSName)}
    covered |= {str(address) for address in alternatives.get_values_for_type(x509.IPAddress)}
    wanted = {str(_address(name) or name) for name in names}
    fresh = certificate.not_valid_before_utc <= now and (
        certificate.not_valid_after_utc - now > _RENEW_BEFORE
    )
    return fresh and covered == wanted and certificate.issuer == issuer


def _write(
    files: CertificateFiles, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> None:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor = os.open(files.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as key_file:
        key_file.write(key_pem)
    files.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


class SniIssuer:
    """Gives a TLS handshake that names a service (SNI `svc.localhost`) a certificate of the
    local authority for that name, issued at its first use; other names get the default one.

    `routes(name)` says whether the router serves that host: certificates are made for those
    only, so a client cannot make the daemon mint keys for names of its choosing."""

    def __init__(self, authority: LocalAuthority, routes: Callable[[str], bool]) -> None:
        self.authority = authority
        self.routes = routes
        self.contexts: OrderedDict[str, ssl.SSLContext] = OrderedDict()

    def __call__(self, tls: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        if name is None or not self.routes(name):
            return  # the default certificate, as for any name not ours
        chosen = self.contexts.get(name)
        if chosen is None:
            stem = name.replace("*", "_")
            files = self.authority.issue([name], stem)
            chosen = server_context(files, f"the local authority's certificate for {name}")
            self.contexts[name] = chosen
            if len(self.contexts) > _ISSUED_KEPT:
                self.contexts.popitem(last=False)
        tls.context = chosen


def server_context(files: CertificateFiles, where: str) -> ssl.SSLContext:
    """A TLS 1.2+ server context with `files`, offering h2 and http/1.1 by ALPN; an unreadable
    or mismatched pair is an error naming `where` (the settings that gave the files)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(ALPN)
    load_into(context, files, where)
    return context


def load_into(context: ssl.SSLContext, files: CertificateFiles, where: str) -> None:
    for path in (files.cert, files.key):
        if not path.is_file():
            raise HomerunError(f"{where}: {path} does not exist (or is not a file)")
    try:
        context.load_cert_chain(files.cert, files.key)
    except (ssl.SSLError, OSError) as error:
        raise HomerunError(
            f"{where}: cannot use {files.cert} with {files.key}: {error}; give a PEM "
            "certificate chain and the PEM private key that belongs to it"
        ) from None


class Reloader:
    """Loads the certificate again when its files change (renewed by certbot, say), so that
    new handshakes use it without a restart; a bad new pair leaves the old one in use."""

    def __init__(self, context: ssl.SSLContext, files: CertificateFiles, where: str) -> None:
        self.context = context
        self.files = files
        self.where = where
        self.seen = files.mtimes()

    def check(self) -> str | None:
        """Reload if the files changed; returns what happened, for the daemon's log, or None."""
        try:
            mtimes = self.files.mtimes()
        except OSError as error:
            return f"{self.where}: cannot read the certificate: {error}; the old one stays"
        if mtimes == self.seen:
            return None
        self.seen = mtimes
        try:
            load_into(self.context, self.files, self.where)
        except HomerunError as error:
            return f"{error}; the old certificate stays in use"
        return f"reloaded the HTTPS certificate {self.files.cert}"


def authority_context(
    authority: LocalAuthority, domain: str, routes: Callable[[str], bool]
) -> ssl.SSLContext:
    """The HTTPS context without certificate files of the user's: the local authority's
    default certificate, and one per routed service name by SNI."""
    where = f"the local authority's certificate in {authority.directory}"
    context = server_context(authority.issue(local_names(domain), "default"), where)
    context.sni_callback = SniIssuer(authority, routes)
    return context
