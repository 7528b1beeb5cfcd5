"""The signing certificate: the configured one, or a local development CA and signer made once and reused.

A development key proves only that the file is unchanged since this machine signed it: no C2PA trust list holds
its CA, so readers show the manifest as signed by an untrusted certificate, and so does `verify`.
"""

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from sora.errors import SoraError

DEV_SIGNER_NAME = "sora untrusted development signer"
DEV_CA_NAME = "sora untrusted development CA"


@dataclass(frozen=True)
class SigningIdentity:
    chain_pem: bytes  # signing certificate first, then its issuers
    key_pem: bytes
    development: bool  # True: the local development key, trusted by no one


def sora_home() -> Path:
    """$SORA_HOME, else ~/.cache/sora."""
    return Path(os.environ.get("SORA_HOME") or Path.home() / ".cache" / "sora")


def load(cert: str | None, key: str | None) -> SigningIdentity:
    """The configured certificate chain and key, or the development pair (made on first use)."""
    if cert is None and key is None:
        return development_identity()
    try:
        return SigningIdentity(Path(cert).read_bytes(), Path(key).read_bytes(), development=False)
    except OSError as e:
        raise SoraError(f"provenance.cert / provenance.key: cannot read {e.filename}: {e.strerror}") from None


# ---------------------------------------------------------------------------------------------------------------
# The development CA
# ---------------------------------------------------------------------------------------------------------------


def development_identity(root: Path | None = None) -> SigningIdentity:
    """ROOT/c2pa/{chain.pem, key.pem, ca.pem}: made once (atomically), then read."""
    folder = (root or sora_home()) / "c2pa"
    chain, key = folder / "chain.pem", folder / "key.pem"
    if not (chain.is_file() and key.is_file()):
        _make_development_pair(folder)
    return SigningIdentity(chain.read_bytes(), key.read_bytes(), development=True)


def _make_development_pair(folder: Path) -> None:
    """An EC P-256 CA and a signing certificate with what C2PA asks of one (digitalSignature, emailProtection)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sora (development, untrusted)")])

    def usage(sign=False, ca=False):
        return x509.KeyUsage(digital_signature=sign, content_commitment=False, key_encipherment=False,
                             data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                             encipher_only=False, decipher_only=False)

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=3650)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name(DEV_CA_NAME)).issuer_name(name(DEV_CA_NAME))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(usage(ca=True), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(name(DEV_SIGNER_NAME)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(sign=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    files = {"ca.pem": ca.public_bytes(pem), "chain.pem": cert.public_bytes(pem) + ca.public_bytes(pem),
             "key.pem": key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())}
    folder.mkdir(parents=True, exist_ok=True)
    for filename in ("ca.pem", "key.pem", "chain.pem"):  # chain.pem last: its presence means the set is whole
        tmp = folder / f"{filename}.{os.getpid()}.tmp"
        tmp.write_bytes(files[filename])
        if filename == "key.pem":
            tmp.chmod(0o600)
        os.replace(tmp, folder / filename)
