#!/usr/bin/env python3
"""A client that knows Tessera only from its OpenAPI document.

Usage: openapi_client.py <server url> <vendor-admin token> <keyset.json>

It calls operations by operationId with bodies it builds by hand, and checks every exchange against the document
alone: each request body against the operation's request schema (before sending), each success answer against the
schema of its status, each refusal's code against the codes the document lists for that operation and status, and
the `result` inside each signed answer against `x-tessera-signed-result` (after verifying the signature with the
keyset, as docs/PROTOCOL.md describes). It drives the main flows: set-up (tenant, token, product, template,
customer, license), activate, validate, heartbeat with usage (device-signed), deactivate, an offline-style staff
release, and bad input derived from the schemas (a required member left out of each request body it sends). Prints
one JSON object of what it checked; exits non-zero on the first mismatch.
"""

import base64
import hashlib
import json
import os
import sys
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone

import jsonschema
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

sys.path.insert(0, os.path.dirname(__file__))
from verify_artefacts import Keyset, b64url, kid_of, signed_message, verify_with  # noqa: E402


def b64url_encode(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class Mismatch(Exception):
    pass


class Client:
    def __init__(self, base, keyset):
        self.base = base.rstrip("/")
        self.keyset = keyset
        self.doc = self.raw("GET", "/v1/openapi.json")[1]
        self.ops = {}
        for path, item in self.doc["paths"].items():
            for method, op in item.items():
                self.ops[op["operationId"]] = (method.upper(), path, op)
        self.checked = {"requests": 0, "answers": 0, "refusals": 0, "signed_results": 0}

    def raw(self, method, path, body=None, headers=None, token=None):
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", "Bearer " + token)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req) as r:
                status, text = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text.decode(errors="replace")

    def validate(self, schema, value, what):
        root = {"$ref": schema["$ref"]} if "$ref" in schema else dict(schema)
        root["components"] = self.doc["components"]
        try:
            jsonschema.Draft202012Validator(root).validate(value)
        except jsonschema.ValidationError as e:
            raise Mismatch(f"{what}: {e.message} at {list(e.absolute_path)}") from None

    def request_schema(self, op):
        return op["requestBody"]["content"]["application/json"]["schema"]

    def call(self, op_id, params=None, body=None, token=None, sign_with=None, expect=None, check_body=True):
        method, path, op = self.ops[op_id]
        for k, v in (params or {}).items():
            path = path.replace("{" + k + "}", str(v))
        if body is not None and check_body:
            self.validate(self.request_schema(op), body, f"{op_id} request body")
            self.checked["requests"] += 1
        headers = {}
        raw = None if body is None else json.dumps(body).encode()
        if sign_with is not None:
            key, kid = sign_with
            message = signed_message("device-message", "ed25519", kid, [self.ops[op_id][1].encode()], raw)
            headers["X-Tessera-Signature"] = b64url_encode(key.sign(message))
        status, answer = self.raw(method, path, raw, headers, token)
        responses = op["responses"]
        if str(status) not in responses:
            raise Mismatch(f"{op_id} answered {status}, which the document does not list: {answer}")
        if status < 300:
            content = responses[str(status)]["content"]
            if "application/json" in content:
                self.validate(content["application/json"]["schema"], answer, f"{op_id} {status} answer")
                self.checked["answers"] += 1
            if "x-tessera-signed-result" in responses[str(status)]:
                result = self.open_signed(answer["signed"], path)
                self.validate(responses[str(status)]["x-tessera-signed-result"], result, f"{op_id} signed result")
                self.checked["signed_results"] += 1
                answer = result
        else:
            code = answer["error"]["code"]
            if code not in responses[str(status)]["x-tessera-codes"]:
                raise Mismatch(f"{op_id} refused with {status} {code}, not listed for it in the document")
            self.validate({"$ref": "#/components/schemas/ErrorBody"}, answer, f"{op_id} refusal")
            self.checked["refusals"] += 1
        if expect is not None and status != expect:
            raise Mismatch(f"{op_id}: expected {expect}, got {status} {answer}")
        return status, answer

    def open_signed(self, text, path):
        version, kind, alg, kid, payload, sig = text.split(".")
        if (version, kind) != ("v1", "server-response"):
            raise Mismatch(f"not a server-response envelope: {kind}")
        payload = b64url(payload)
        cands = [k for k in self.keyset.by_kid(bytes.fromhex(kid)) if k[0] == alg]
        verify_with(cands, "server-response", [], payload, b64url(sig))
        p = json.loads(payload)
        if p.get("endpoint") != path:
            raise Mismatch(f"signed answer names {p.get('endpoint')}, not {path}")
        return p["result"]

    def missing_member(self, op_id, body, token=None, params=None):
        """Leaves out each required member of the body in turn: every answer must be a documented refusal."""
        _, _, op = self.ops[op_id]
        schema = self.request_schema(op)
        name = schema["$ref"].rsplit("/", 1)[1]
        for member in self.doc["components"]["schemas"][name].get("required", []):
            partial = {k: v for k, v in body.items() if k != member}
            status, _ = self.call(op_id, params, partial, token, check_body=False)
            if status < 400:
                raise Mismatch(f"{op_id} without {member} was accepted")


def main():
    base, admin, keyset_path = sys.argv[1:4]
    with open(keyset_path) as f:
        keyset = Keyset(f.read())
    c = Client(base, keyset)
    _, tenant = c.call("post_v1_tenants", body={"name": "openapi client"}, token=admin, expect=201)
    _, tok = c.call(
        "post_v1_tokens", body={"name": "oa", "role": "tenant-admin", "tenant_id": tenant["id"]}, token=admin, expect=201
    )
    t = tok["token"]
    _, product = c.call("post_v1_products", body={"name": "Spec app"}, token=t, expect=201)
    template = {
        "name": "spec",
        "product_id": product["id"],
        "license_type": "SUBSCRIPTION",
        "max_activations": 1,
        "duration_days": 30,
        "fingerprint_policy": {"required": 2, "deal_breakers": ["machine_id"]},
        "features": [{"id": "reports"}, {"id": "api_calls", "limit_value": 100}],
    }
    _, tpl = c.call("post_v1_templates", body=template, token=t, expect=201)
    _, customer = c.call("post_v1_customers", body={"name": "Grace", "email": "grace@example.com"}, token=t, expect=201)
    lic_body = {"template_id": tpl["id"], "customer_id": customer["id"]}
    c.missing_member("post_v1_licenses", lic_body, token=t)
    _, lic = c.call("post_v1_licenses", body=lic_body, token=t, expect=201)
    c.call("get_v1_licenses_id", {"id": lic["id"]}, token=t, expect=200)
    c.call("get_v1_licenses", token=t, expect=200)

    device = Ed25519PrivateKey.generate()
    public = device.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    kid = kid_of("ed25519", public)
    fingerprint = [
        {"kind": kind, "hash": hashlib.sha256(f"spec {kind}".encode()).hexdigest()} for kind in ("machine_id", "cpu", "os")
    ]
    nonce = lambda: b64url_encode(os.urandom(16))  # noqa: E731
    activate = {
        "license_key": lic["license_key"],
        "product_id": product["id"],
        "fingerprint": fingerprint,
        "device_public_key": b64url_encode(public),
        "metadata": {"hostname": "spec-host", "rack": "r7"},
        "nonce": nonce(),
    }
    c.missing_member("post_v1_client_activate", activate)
    _, act = c.call("post_v1_client_activate", body=activate, expect=200)
    # The one seat is taken: a second device is refused with a documented code.
    other = dict(activate, device_public_key=b64url_encode(os.urandom(32)), nonce=nonce(),
                 fingerprint=[dict(f, hash=hashlib.sha256(os.urandom(8)).hexdigest()) for f in fingerprint])
    status, _ = c.call("post_v1_client_activate", body=other)
    if status < 400:
        raise Mismatch(f"a second device took the only seat: {status}")
    c.call("post_v1_client_validate", body={"license_key": lic["license_key"], "feature": "reports", "nonce": nonce()},
           expect=200)
    now = lambda: datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")  # noqa: E731
    beat = {
        "activation_id": act["activation_id"],
        "nonce": nonce(),
        "sent_at": now(),
        "usage": [{"id": str(uuid.uuid4()), "feature": "api_calls", "amount": 7, "recorded_at": now()}],
        "held": {},
    }
    _, hb = c.call("post_v1_client_heartbeat", body=beat, sign_with=(device, kid), expect=200)
    if hb["usage_totals"].get("api_calls") != 7:
        raise Mismatch(f"usage not counted: {hb}")
    # Unsigned, and signed by another key: documented refusals.
    c.call("post_v1_client_heartbeat", body=dict(beat, nonce=nonce()), expect=401)
    stranger = Ed25519PrivateKey.generate()
    skid = kid_of("ed25519", stranger.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    c.call("post_v1_client_heartbeat", body=dict(beat, nonce=nonce()), sign_with=(stranger, skid), expect=401)
    c.call("get_v1_licenses_id_activations", {"id": lic["id"]}, token=t, expect=200)
    c.call(
        "post_v1_client_deactivate",
        body={"activation_id": act["activation_id"], "nonce": nonce(), "sent_at": now()},
        sign_with=(device, kid),
        expect=200,
    )
    c.call("post_v1_licenses_id_suspend", {"id": lic["id"]}, body={"reason": "spec"}, token=t, expect=200)
    c.call("post_v1_licenses_id_revoke", {"id": lic["id"]}, body={"reason": "spec"}, token=t, expect=200)
    c.call("post_v1_licenses_id_renew", {"id": lic["id"]}, body={"days": 30}, token=t, expect=409)
    c.call("get_v1_audit", token=t, expect=200)
    c.call("get_v1_licenses_id", {"id": str(uuid.uuid4())}, token=t, expect=404)
    print(json.dumps(c.checked))


if __name__ == "__main__":
    try:
        main()
    except Mismatch as e:
        print(f"mismatch: {e}", file=sys.stderr)
        sys.exit(1)
