#!/usr/bin/env python3
"""Verifies a tessera-agent daemon's answer to a feature check, as an application would: trusting nothing but
the vendor's public keyset, with a stock crypto library (`cryptography`).

    verify_local_answer.py --daemon http://127.0.0.1:7767 --keyset keyset.json --product UUID --feature F

It asks with a fresh random challenge and checks, in order (agent/README.md, "Verifying the daemon's answers"):
  1. the license file and the activation token are signed by a key of the vendor's keyset (kind, key id and
     algorithm first, then the signature over the exact bytes), and name the expected product;
  2. the answer (`attestation`, kind `local-answer`) is signed by the device key the activation token binds;
  3. it echoes this challenge, names the feature asked, and the license and activation of the evidence;
  4. the license grants the feature, and the lease has not ended by this machine's clock.
Then it tampers with the answer in several ways and checks each is refused. Prints one JSON line; exits 0
only when the answer verified and every tampered copy was refused.
"""
import argparse
import base64
import datetime
import hashlib
import json
import os
import sys
import urllib.error
import urllib.request

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding


class Refused(Exception):
    pass


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def key_id(alg, public):
    """First 8 bytes of SHA-256("tessera/kid/v1" NUL alg NUL public-key), as 16 hex digits."""
    return hashlib.sha256(b"tessera/kid/v1\0" + alg.encode() + b"\0" + public).digest()[:8].hex()


def load_keyset(path):
    keys = {}
    for k in json.load(open(path))["keys"]:
        public = b64url_decode(k["public_key"])
        if key_id(k["alg"], public) != k["kid"]:
            raise Refused(f"keyset entry {k['kid']} does not match its public key")
        if k.get("revoked", False):
            continue  # a revoked key verifies nothing it signed
        keys[k["kid"]] = (k["alg"], public)
    return keys


def verify(kind, alg, kid, payload, signature, keys):
    """The signature covers "tessera/v1/" kind NUL alg NUL key-id(8 raw bytes) payload."""
    if kid not in keys:
        raise Refused(f"{kind}: key {kid} is not in the trusted keyset")
    key_alg, public = keys[kid]
    if key_alg != alg:
        raise Refused(f"{kind}: algorithm {alg} is not key {kid}'s ({key_alg})")
    message = b"tessera/v1/" + kind.encode() + b"\0" + alg.encode() + b"\0" + bytes.fromhex(kid) + payload
    try:
        if alg == "ed25519":
            ed25519.Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
        elif alg == "rsa-pss-sha256":
            rsa = serialization.load_der_public_key(public)
            rsa.verify(signature, message, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256())
        else:
            raise Refused(f"{kind}: unknown algorithm {alg}")
    except InvalidSignature:
        raise Refused(f"{kind}: bad signature")
    return payload


def open_compact(text, kind, keys):
    """v1.<kind>.<alg>.<kid>.<payload b64url>.<signature b64url>"""
    parts = text.strip().split(".")
    if len(parts) != 6 or parts[0] != "v1":
        raise Refused(f"{kind}: not a v1 compact envelope")
    _, found, alg, kid, payload, sig = parts
    if found != kind:
        raise Refused(f"expected a {kind}, found a {found}")
    return json.loads(verify(kind, alg, kid, b64url_decode(payload), b64url_decode(sig), keys))


def open_license_file(text, keys):
    """-----BEGIN TESSERA LICENSE----- / headers / blank line / base64 body in lines / -----END …-----"""
    begin, end = "-----BEGIN TESSERA LICENSE-----", "-----END TESSERA LICENSE-----"
    if begin not in text or end not in text:
        raise Refused("license file: no armor")
    inner = text.split(begin, 1)[1].split(end, 1)[0].strip("\r\n")
    head, _, body = inner.replace("\r\n", "\n").partition("\n\n")
    headers = dict(line.split(":", 1) for line in head.split("\n"))
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    if headers.get("Version") != "1":
        raise Refused("license file: unsupported version")
    payload = base64.b64decode("".join(body.split()), validate=True)
    signature = base64.b64decode(headers["Signature"], validate=True)
    return json.loads(verify("license-file", headers["Algorithm"], headers["Key-Id"], payload, signature, keys))


def parse_time(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))


def check_answer(answer, challenge, feature, product, keys):
    ev = answer.get("evidence") or {}
    if ev.get("mode") != "online":
        raise Refused(f"evidence mode {ev.get('mode')!r}: this verifier handles online activations")
    lic = open_license_file(ev["license_file"], keys)["license"]
    tok = open_compact(ev["activation_token"], "activation-token", keys)
    if lic["product_id"] != product or tok["product_id"] != product:
        raise Refused("the license is for another product")
    if tok["license_id"] != lic["id"]:
        raise Refused("the activation token is for another license")
    device = b64url_decode(tok["device_public_key"])
    device_keys = {key_id("ed25519", device): ("ed25519", device)}
    att = open_compact(answer["attestation"], "local-answer", device_keys)
    if att["challenge"] != challenge:
        raise Refused("the answer does not echo this challenge (a replayed answer)")
    if att["feature"] != feature or att["product_id"] != product:
        raise Refused("the answer is for another feature or product")
    if att["license_id"] != lic["id"] or att["activation_id"] != tok["activation_id"]:
        raise Refused("the answer names another license or activation than its evidence")
    if att["allowed"] != answer["allowed"] or att["reason"] != answer["reason"]:
        raise Refused("the unsigned fields disagree with the signed answer")
    status = lic["status"]
    if ev.get("last_server_answer"):
        last = open_compact(ev["last_server_answer"], "server-response", keys)
        if last.get("endpoint") != "/v1/client/heartbeat" or last.get("activation_id") != tok["activation_id"]:
            raise Refused("the last server answer is not a heartbeat answer for this activation")
        status = last["result"].get("license_status") or status
    granted = any(f["id"] in (feature, "*") and f.get("enabled", True) for f in lic["features"])
    lease_ok = datetime.datetime.now(datetime.timezone.utc) < parse_time(tok["lease_expires_at"])
    return {
        "allowed": att["allowed"],
        "reason": att["reason"],
        "license_id": lic["id"],
        "license_status": status,
        "feature_granted": granted,
        "lease_ok": lease_ok,
        "usable": att["allowed"] and granted and lease_ok and status == "ACTIVE",
    }


def fetch(daemon, feature, challenge):
    url = f"{daemon}/v1/check/{feature}?challenge={challenge}"
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:  # 403 is a denied decision, still a signed answer
        return json.load(e)


def tampered(answer, challenge):
    """Copies of the answer a fake daemon might hand out; each must be refused."""
    out = []
    a = json.loads(json.dumps(answer))
    parts = a["attestation"].split(".")
    payload = json.loads(b64url_decode(parts[4]))
    payload["allowed"], payload["reason"] = True, "VALID"
    payload["feature"] = "everything"
    parts[4] = b64url(json.dumps(payload).encode())
    a["attestation"] = ".".join(parts)
    out.append(("edited signed answer", a, challenge))
    b = json.loads(json.dumps(answer))
    lf = b["evidence"]["license_file"].split("\n")
    i = next(n for n, line in enumerate(lf) if line == "") + 1
    lf[i] = lf[i][:10] + ("A" if lf[i][10] != "A" else "B") + lf[i][11:]
    b["evidence"]["license_file"] = "\n".join(lf)
    out.append(("edited license file", b, challenge))
    out.append(("replayed for another challenge", answer, b64url(os.urandom(16))))
    c = json.loads(json.dumps(answer))
    c["allowed"] = not answer["allowed"]
    out.append(("unsigned verdict flipped", c, challenge))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--daemon", required=True)
    ap.add_argument("--keyset", required=True)
    ap.add_argument("--product", required=True)
    ap.add_argument("--feature", required=True)
    args = ap.parse_args()
    keys = load_keyset(args.keyset)
    challenge = b64url(os.urandom(32))
    answer = fetch(args.daemon, args.feature, challenge)
    try:
        result = check_answer(answer, challenge, args.feature, args.product, keys)
    except (Refused, KeyError, ValueError) as e:
        print(json.dumps({"verified": False, "error": str(e)}))
        return 1
    refused = []
    for name, copy, ch in tampered(answer, challenge):
        try:
            check_answer(copy, ch, args.feature, args.product, keys)
        except (Refused, KeyError, ValueError) as e:
            refused.append({"case": name, "refused_because": str(e)})
            continue
        print(json.dumps({"verified": False, "error": f"a tampered answer was accepted: {name}"}))
        return 1
    print(json.dumps({"verified": True, **result, "tampered_refused": refused}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
