#!/usr/bin/env python3
"""An outside integrator's verifier for every signed Tessera artefact, written from docs/PROTOCOL.md ("Signed
bytes") with nothing but the Python standard library and the `cryptography` package.

    verify_artefacts.py KEYSET_JSON VECTORS_DIR LICENSE_KEY PRODUCT_ID

Prints one JSON object: for each vector file, true when its signature verifies, else the reason.
"""
import base64
import hashlib
import json
import os
import struct
import sys
import uuid

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_der_public_key

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def b64url(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def kid_of(alg, public):
    return hashlib.sha256(b"tessera/kid/v1\0" + alg.encode() + b"\0" + public).digest()[:8]


def signed_message(label, alg, kid, context, payload):
    """ "tessera/v1/" label NUL alg NUL kid(8) then each context item as u32 big-endian length + bytes, then the
    payload."""
    m = b"tessera/v1/" + label.encode() + b"\0" + alg.encode() + b"\0" + kid
    for c in context:
        m += struct.pack(">I", len(c)) + c
    return m + payload


def check(alg, public, signature, message):
    if alg == "ed25519":
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    elif alg == "rsa-pss-sha256":
        load_der_public_key(public).verify(
            signature, message, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256()
        )
    else:
        raise ValueError("unknown algorithm " + alg)


class Keyset:
    def __init__(self, text):
        self.keys = []
        for k in json.loads(text)["keys"]:
            public = b64url(k["public_key"])
            if kid_of(k["alg"], public).hex() != k["kid"]:
                raise ValueError("key id of %s does not match its public key" % k["kid"])
            if not k.get("revoked", False):
                self.keys.append((k["alg"], bytes.fromhex(k["kid"]), public))

    def by_kid(self, kid):
        return [k for k in self.keys if k[1] == kid]

    def by_tag(self, tag):
        return [k for k in self.keys if k[1][0] == tag]


def verify_with(candidates, label, context, payload, signature):
    if not candidates:
        raise ValueError("no trusted key with this key id")
    for alg, kid, public in candidates:
        try:
            check(alg, public, signature, signed_message(label, alg, kid, context, payload))
            return
        except InvalidSignature:
            pass
    raise ValueError("bad signature")


def license_file(keyset, text):
    lines = text.strip().splitlines()
    assert lines[0] == "-----BEGIN TESSERA LICENSE-----" and lines[-1] == "-----END TESSERA LICENSE-----"
    head, body = {}, []
    i = 1
    while lines[i]:
        k, v = lines[i].split(": ", 1)
        head[k] = v
        i += 1
    body = "".join(lines[i + 1 : -1])
    payload = base64.b64decode(body)  # the signed bytes are the decoded JSON
    kid = bytes.fromhex(head["Key-Id"])
    cands = [k for k in keyset.by_kid(kid) if k[0] == head["Algorithm"]]
    verify_with(cands, "license-file", [], payload, base64.b64decode(head["Signature"]))
    return json.loads(payload)


def compact(keyset, text, label):
    version, kind, alg, kid, payload, sig = text.strip().split(".")
    assert version == "v1" and kind == label, (version, kind)
    payload = b64url(payload)
    cands = [k for k in keyset.by_kid(bytes.fromhex(kid)) if k[0] == alg]
    verify_with(cands, label, [], payload, b64url(sig))
    return json.loads(payload)


def code_bytes(text, prefix):
    """Decoded bytes of a copy-paste code: payload then a 64-byte Ed25519 signature."""
    compact_text = "".join(c for c in text if not c.isspace() and c != "-").upper()
    assert compact_text[:4] == prefix, compact_text[:4]
    norm = compact_text[4:].replace("I", "1").replace("L", "1").replace("O", "0")
    syms = [CROCKFORD.index(c) for c in norm]
    m = syms[0] * 32 + syms[1]
    data = syms[2 : 2 + m]  # then C1 and three C2 symbols: a typo check, not part of what is signed
    acc, bits, out = 0, 0, bytearray()
    for s in data:
        acc, bits = (acc << 5) | s, bits + 5
        if bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xFF)
    return bytes(out[:-64]), bytes(out[-64:])


def main():
    keyset_path, vectors, license_key, product = sys.argv[1:5]
    keyset = Keyset(open(keyset_path).read())
    symbols = "".join(c for c in license_key if c != "-")[3:].upper()
    key_hash = hashlib.sha256(b"tessera/license-key/v1\0" + symbols.encode()).digest()
    binding = hashlib.sha256(b"tessera/license-binding/v1\0" + key_hash + uuid.UUID(product).bytes).digest()
    read = lambda name: open(os.path.join(vectors, name)).read()
    result = {}

    def attempt(name, f):
        try:
            f()
            result[name] = True
        except Exception as e:  # the reason is what the test shows
            result[name] = "%s: %s" % (type(e).__name__, e)

    for name in ["license-file.ed25519.txt", "license-file.rsa2048.txt", "license-file.rsa3072.txt"]:
        attempt(name, lambda: license_file(keyset, read(name)))
    attempt("activation-token.ed25519.txt", lambda: compact(keyset, read("activation-token.ed25519.txt"), "activation-token"))

    # Offline request: signed by the device key it carries (bytes 6..38), over the license key hash.
    req_payload, req_sig = code_bytes(read("request.code"), "REQ1")
    device = req_payload[6:38]
    request_bytes = req_payload + req_sig
    attempt("request.code", lambda: verify_with(
        [("ed25519", kid_of("ed25519", device), device)], "offline-request", [key_hash], req_payload, req_sig))

    def response():
        payload, sig = code_bytes(read("response.code"), "RSP1")
        verify_with(keyset.by_tag(payload[0]), "offline-response", [binding, request_bytes], payload, sig)

    attempt("response.code", response)

    def receipt():
        payload, sig = code_bytes(read("receipt.code"), "RCT2")
        assert payload[6:10] == device[:4], "the receipt names another device"
        verify_with([("ed25519", kid_of("ed25519", device), device)], "deactivation-receipt",
                    [key_hash, device], payload, sig)

    attempt("receipt.code", receipt)

    for name in ["emergency.code", "emergency-bound.code"]:
        def emergency(name=name):
            payload, sig = code_bytes(read(name), "EMG1")
            bound = payload[1] & 0x80 != 0
            context = [binding] + ([device] if bound else [])
            verify_with(keyset.by_tag(payload[0]), "emergency-code", context, payload, sig)

        attempt(name, emergency)
    print(json.dumps(result, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
