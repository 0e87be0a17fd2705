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

import asyncio
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


class CertificateFolder:
    """The user's certificates for several domains: PEM pairs in a folder (`NAME.crt` with
    `NAME.key`), each given to handshakes whose SNI names a host it covers (its DNS names; a
    wildcard `*.example.com` covers one label). Loaded again when a file there changes."""

    def __init__(self, folder: Path, where: str) -> None:
        self.folder = folder
        self.where = where
        self.contexts: dict[str, ssl.SSLContext] = {}
        self.seen = self._signature()
        problems = self._load()
        if problems:
            raise HomerunError("; ".join(problems))

    def context_for(self, name: str) -> ssl.SSLContext | None:
        name = name.lower().rstrip(".")
        exact = self.contexts.get(name)
        if exact is not None:
            return exact
        _, dot, parent = name.partition(".")
        return self.contexts.get(f"*.{parent}") if dot else None

    def check(self) -> str | None:
        """Load the folder again if a file there changed; what happened, or None."""
        signature = self._signature()
        if signature == self.seen:
            return None
        self.seen = signature
        kept = self.contexts
        problems = self._load()
        if problems:
            self.contexts = kept
            return "; ".join(problems) + "; the certificates loaded before stay in use"
        return f"reloaded the HTTPS certificates in {self.folder} ({len(self.contexts)} names)"

    def _signature(self) -> tuple[tuple[str, int], ...]:
        try:
            entries = sorted(self.folder.iterdir())
        except OSError:
            return ()
        return tuple(
            (entry.name, entry.stat().st_mtime_ns)
            for entry in entries
            if entry.suffix in (".crt", ".key") and entry.is_file()
        )

    def _load(self) -> list[str]:
        if not self.folder.is_dir():
            return [f"{self.where}: {self.folder} is not a folder"]
        contexts: dict[str, ssl.SSLContext] = {}
        problems = []
        for cert in sorted(self.folder.glob("*.crt")):
            files = CertificateFiles(cert, cert.with_suffix(".key"))
            try:
                context = server_context(files, self.where)
                certificate = x509.load_pem_x509_certificate(cert.read_bytes())
                names = certificate.extensions.get_extension_for_class(
                    x509.SubjectAlternativeName
                ).value.get_values_for_type(x509.DNSName)
            except HomerunError as error:
                problems.append(str(error))
                continue
            except (ValueError, x509.ExtensionNotFound):
                problems.append(f"{self.where}: {cert} names no host (no DNS subjectAltName)")
                continue
            for name in names:
                contexts.setdefault(name.lower(), context)
        self.contexts = contexts
        return problems


def certificate_covering(folder: Path, name: str) -> Path | None:
    """The certificate file in `folder` that a handshake naming `name` gets (as
    CertificateFolder chooses: its exact name first, then a wildcard one label up)."""
    name = name.lower().rstrip(".")
    _, dot, parent = name.partition(".")
    wanted = [name, f"*.{parent}"] if dot else [name]
    covering: dict[str, Path] = {}
    try:
        certificates = sorted(folder.glob("*.crt"))
    except OSError:
        return None
    for cert in certificates:
        try:
            names = (
                x509.load_pem_x509_certificate(cert.read_bytes())
                .extensions.get_extension_for_class(x509.SubjectAlternativeName)
                .value.get_values_for_type(x509.DNSName)
            )
        except (OSError, ValueError, x509.ExtensionNotFound):
            continue
        for covered in names:
            covering.setdefault(covered.lower(), cert)
    return next((covering[each] for each in wanted if each in covering), None)


class SniChooser:
    """The HTTPS port's SNI callback: the user's certificate for the name from the folder if
    one covers it, else one the local authority issues for a routed name, else the default."""

    def __init__(self, folder: CertificateFolder | None, issuer: SniIssuer | None) -> None:
        self.folder = folder
        self.issuer = issuer

    def __call__(self, tls: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        if name is None:
            return
        if self.folder is not None:
            chosen = self.folder.context_for(name)
            if chosen is not None:
                tls.context = chosen
                return
        if self.issuer is not None:
            self.issuer(tls, name, context)


def https_context(
    default: CertificateFiles | LocalAuthority,
    domain: str,
    folder: CertificateFolder | None,
    routes: Callable[[str], bool],
    where: str,
) -> ssl.SSLContext:
    """The HTTPS port's context: the user's default certificate, or the local authority's
    (which also issues one per routed service name), with the folder's certificates by SNI."""
    if isinstance(default, LocalAuthority):
        where = f"the local authority's certificate in {default.directory}"
        context = server_context(default.issue(local_names(domain), "default"), where)
        issuer: SniIssuer | None = SniIssuer(default, routes)
    else:
        context = server_context(default, where)
        issuer = None
    if folder is not None or issuer is not None:
        context.sni_callback = SniChooser(folder, issuer)
    return context


@dataclass(frozen=True)
class HttpsListener:
    """What the HTTPS listener serves with: its TLS context, what the start line says of its
    certificates, and the checks that reload the user's certificate files when they change."""

    context: ssl.SSLContext
    note: str
    checks: list[Callable[[], str | None]]


def https_listener(
    domain: str,
    routes: Callable[[str], bool],
    *,
    config_file: Path,
    local_authority: Path,
    cert_file: str = "",
    key_file: str = "",
    certificates_dir: str = "",
) -> HttpsListener:
    """The listener's certificates: the user's (tls-cert-file and tls-key-file, reloaded when
    they change), else those of a local authority kept in `local_authority`; and, from
    tls-certificates-dir, one per name. Errors name `config_file`'s settings."""
    folder = None
    checks: list[Callable[[], str | None]] = []
    if certificates_dir:
        folder = CertificateFolder(
            Path(certificates_dir).expanduser(), f"{config_file}: tls-certificates-dir"
        )
        checks.append(folder.check)
    default: CertificateFiles | LocalAuthority
    where = f"{config_file}: tls-cert-file, tls-key-file"
    if cert_file:
        default = CertificateFiles(Path(cert_file).expanduser(), Path(key_file).expanduser())
        note = f" (certificate {default.cert})"
    else:
        default = LocalAuthority(local_authority, lambda: datetime.datetime.now(datetime.UTC))
        note = f" (trust {default.files.cert} to verify it)"
    context = https_context(default, domain, folder, routes, where)
    if isinstance(default, CertificateFiles):
        checks.append(Reloader(context, default, where).check)
    return HttpsListener(context, note, checks)


async def reload_every(checks: list[Callable[[], str | None]], seconds: float) -> None:
    """New handshakes take the user's certificate files once they change: each check runs
    every `seconds`, and what it says is printed."""
    if not checks:
        return
    while True:
        await asyncio.sleep(seconds)
        for check in checks:
            message = check()
            if message:
                print(f"homerun: {message}", flush=True)
