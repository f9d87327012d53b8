"""Who signs the C2PA manifests: the user's certificate, or a self-issued local one made on first use.

Set ``FACESYNTH_C2PA_CERT`` (a PEM file: the signer certificate first, then its intermediates) and
``FACESYNTH_C2PA_KEY`` (its PEM private key) to sign with a certificate from a certification authority; readers
that trust that authority then show the manifests as trusted. Without them facesynth makes, once, under
``$XDG_CONFIG_HOME/facesynth/c2pa/`` (default ``~/.config/facesynth/c2pa/``), a root certificate and an ES256 signer
certificate issued by it. That chain is **self-issued**: no one else's trust list holds its root, so C2PA readers
(``c2patool``, contentcredentials.org/verify) report the signature as valid but the signer as *untrusted*
(``signingCredential.untrusted``). The signature still proves that the file and its manifest are unchanged since
signing; it does not prove who signed. ``facesynth verify`` reports the same. The root's private key is discarded
after issuing the signer certificate, so no further certificate can be issued under that root.
"""
from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from facesynth.provenance.errors import ProvenanceError

__all__ = ["SignerFiles", "signer_files", "local_signer_dir", "make_signer", "CERT_ENV", "KEY_ENV"]

CERT_ENV = "FACESYNTH_C2PA_CERT"
KEY_ENV = "FACESYNTH_C2PA_KEY"
SIGNER_CERT, SIGNER_KEY, ROOT_CERT = "signer.pem", "signer.key", "root.pem"
_VALIDITY_DAYS = 5 * 365
_README = """facesynth's local C2PA signer (self-issued)

root.pem    a root certificate made on this machine; it is in no public trust list
signer.pem  the ES256 signer certificate issued by that root, followed by the root (the chain embedded in manifests)
signer.key  the signer's private key (mode 0600); keep it private

C2PA readers show manifests signed with it as valid but untrusted: the signature proves the file and its manifest
are unchanged since signing, not who signed. To sign with your own certificate instead, set
FACESYNTH_C2PA_CERT (PEM chain) and FACESYNTH_C2PA_KEY (PEM private key).
Delete this folder to make a new signer on the next run.
"""


@dataclass(frozen=True)
class SignerFiles:
    """The PEM chain and key that sign manifests, and whether they are facesynth's self-issued pair."""
    chain: Path
    key: Path
    self_issued: bool

    def algorithm(self) -> str:
        """C2PA's name for the key's signing algorithm: es256/es384/es512 (EC), ps256 (RSA) or ed25519."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

        try:
            key = serialization.load_pem_private_key(self.key.read_bytes(), password=None)
        except (ValueError, TypeError) as e:
            raise ProvenanceError(f"{self.key}: not an unencrypted PEM private key ({e}); give {KEY_ENV} a PEM "
                                  f"key without a passphrase") from None
        if isinstance(key, ec.EllipticCurvePrivateKey):
            alg = {256: "es256", 384: "es384", 521: "es512"}.get(key.curve.key_size)
            if alg:
                return alg
        elif isinstance(key, rsa.RSAPrivateKey):
            return "ps256"
        elif isinstance(key, ed25519.Ed25519PrivateKey):
            return "ed25519"
        raise ProvenanceError(f"{self.key}: C2PA signs with EC P-256/P-384/P-521, RSA or Ed25519 keys, not "
                              f"{type(key).__name__}")


def local_signer_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "facesynth" / "c2pa"


def signer_files() -> SignerFiles:
    """The user's certificate and key when both variables are set, else the local self-issued pair (made now if
    missing or expiring)."""
    cert, key = os.environ.get(CERT_ENV), os.environ.get(KEY_ENV)
    if cert or key:
        if not (cert and key):
            missing = KEY_ENV if cert else CERT_ENV
            raise ProvenanceError(f"{CERT_ENV} and {KEY_ENV} go together: set {missing} too, or unset both to use "
                                  f"facesynth's self-issued signer")
        for name, value in ((CERT_ENV, cert), (KEY_ENV, key)):
            if not Path(value).is_file():
                raise ProvenanceError(f"{name}={value}: file not found; point it at a PEM file")
        return SignerFiles(Path(cert), Path(key), self_issued=False)
    folder = local_signer_dir()
    if not _usable(folder):
        make_signer(folder)
    return SignerFiles(folder / SIGNER_CERT, folder / SIGNER_KEY, self_issued=True)


def _usable(folder: Path) -> bool:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate((folder / SIGNER_CERT).read_bytes())
        if not (folder / SIGNER_KEY).is_file():
            return False
    except (OSError, ValueError):
        return False
    return cert.not_valid_after_utc - _dt.timedelta(days=1) > _dt.datetime.now(_dt.timezone.utc)


def make_signer(folder: Path) -> Path:
    """Issue a root and an ES256 signer certificate into ``folder`` (replacing an unusable one).

    The files are made in a temporary folder beside it and renamed into place, so two processes starting at once
    never see a key without its certificate; the loser of that race uses the winner's pair.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".c2pa.", dir=folder.parent))
    try:
        chain, key, root = _issue()
        (tmp / SIGNER_CERT).write_bytes(chain)
        fd = os.open(tmp / SIGNER_KEY, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        (tmp / ROOT_CERT).write_bytes(root)
        (tmp / "README.txt").write_text(_README)
        if folder.exists() and not _usable(folder):
            shutil.rmtree(folder)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not _usable(folder):   # not a lost race: the folder is there and still unusable
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _issue() -> tuple[bytes, bytes, bytes]:
    """(signer certificate + root as PEM, signer private key as PEM, root certificate as PEM)."""
    import secrets

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = _dt.datetime.now(_dt.timezone.utc)
    tag = secrets.token_hex(4)    # tells two machines' self-issued signers apart without naming the user or host
    org = x509.NameAttribute(NameOID.ORGANIZATION_NAME, "facesynth (self-issued, untrusted)")
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([org, x509.NameAttribute(NameOID.COMMON_NAME, f"facesynth local root {tag}")])
    root = (x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
            .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=_VALIDITY_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
            .sign(root_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([org, x509.NameAttribute(NameOID.COMMON_NAME, f"facesynth local signer {tag}")])
    # C2PA's certificate profile: an end-entity (CA false) with digitalSignature and an allowed extended key usage
    # (emailProtection is on c2pa-rs's default list), issued by a CA: a self-signed signer certificate is refused
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(root_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=_VALIDITY_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
            .sign(root_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    root_pem = root.public_bytes(pem)
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(pem) + root_pem, key_pem, root_pem
