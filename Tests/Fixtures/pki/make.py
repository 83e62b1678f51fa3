#!/usr/bin/env python3
"""Writes a throwaway PKI for the Kubernetes client tests into DIR: a CA, a server certificate
for 127.0.0.1, client certificates (valid, expired, and one from another CA). Test use only."""
import datetime, ipaddress, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ExtendedKeyUsageOID

out = sys.argv[1]
now = datetime.datetime.now(datetime.timezone.utc)

def key():
    return ec.generate_private_key(ec.SECP256R1())

def write(name, cert, k):
    open(f"{out}/{name}.pem", "wb").write(cert.public_bytes(serialization.Encoding.PEM))
    open(f"{out}/{name}.key", "wb").write(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                                          serialization.NoEncryption()))

def ca(cn):
    k = key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    c = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(k.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
         .not_valid_after(now + datetime.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                      key_encipherment=False, data_encipherment=False, key_agreement=False,
                                      encipher_only=False, decipher_only=False), critical=True)
         .sign(k, hashes.SHA256()))
    return c, k

def leaf(ca_cert, ca_key, subject, server, before, after):
    k = key()
    b = (x509.CertificateBuilder().subject_name(x509.Name(subject)).issuer_name(ca_cert.subject).public_key(k.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(before).not_valid_after(after)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                            critical=False)
    return b.sign(ca_key, hashes.SHA256()), k

ca_cert, ca_key = ca("nodeagent-test-ca")
write("ca", ca_cert, ca_key)
other, other_key = ca("some-other-ca")
write("other-ca", other, other_key)
day = datetime.timedelta(days=1)
write("server", *leaf(ca_cert, ca_key, [x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")], True, now - day, now + 30 * day))
admin = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"), x509.NameAttribute(NameOID.COMMON_NAME, "system:admin")]
write("client", *leaf(ca_cert, ca_key, admin, False, now - day, now + 30 * day))
write("expired-client", *leaf(ca_cert, ca_key, admin, False, now - 30 * day, now - day))
write("stranger-client", *leaf(other, other_key, admin, False, now - day, now + 30 * day))
