"""A self-signed TLS certificate for the Kafka listener's tests (unit and e2e)."""

from __future__ import annotations

import datetime
import ipaddress


def self_signed_certificate(directory, valid_from_s: float = -300, valid_for_s: float = 86400,
                            passphrase: bytes | None = None, stem: str = "kafka") -> tuple:
    """A certificate for localhost and 127.0.0.1 and its key (mode 0600), as PEM files
    ``stem``.crt and ``stem``.key. Valid from ``valid_from_s`` from now, for
    ``valid_for_s``; the key encrypted with ``passphrase`` if one is given."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now + datetime.timedelta(seconds=valid_from_s))
            .not_valid_after(now + datetime.timedelta(seconds=valid_from_s + valid_for_s))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / f"{stem}.crt", directory / f"{stem}.key"
    encryption = (serialization.NoEncryption() if passphrase is None
                  else serialization.BestAvailableEncryption(passphrase))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           encryption))
    key_file.chmod(0o600)   # the listener refuses a key others may read
    return cert_file, key_file
