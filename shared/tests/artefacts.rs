//! Signed artefacts and codes: pinned vectors, length budgets, tamper sweeps, cross-kind confusion, round trips.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;

use common::*;
use proptest::prelude::*;
use tessera_core::codes::{self, CodeError, CodeKind};
use tessera_core::crypto::{CryptoError, Domain};
use tessera_core::envelope::{Envelope, EnvelopeError};
use tessera_core::offline::{SignedEmergency, SignedReceipt, SignedRequest, SignedResponse};
use tessera_core::token::{self, ArtefactError};
use tessera_core::{PublicKeyset, SigningKey};

fn keyset() -> PublicKeyset {
    PublicKeyset::from_json(&fs::read_to_string(keys_dir().join("keyset.json")).unwrap()).unwrap()
}

fn vector(name: &str) -> String {
    fs::read_to_string(keys_dir().join("vectors").join(name)).unwrap()
}

// ----- pinned wire formats -----------------------------------------------------------------------------------

#[test]
fn license_file_vectors_verify_for_every_algorithm() {
    let expected: serde_json::Value = serde_json::from_str(&vector("license.json")).unwrap();
    assert_eq!(serde_json::to_value(sample_license()).unwrap(), expected, "License serde names changed");
    for alg in ["ed25519", "rsa2048", "rsa3072"] {
        let claims = token::verify_license_file(&vector(&format!("license-file.{alg}.txt")), &keyset())
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(claims.license, sample_license(), "{alg}");
        assert_eq!(claims.signed_at, at(2026, 3, 1));
    }
}

#[test]
fn ed25519_vectors_are_byte_identical_when_regenerated() {
    // Ed25519 is deterministic: re-signing the samples must give the committed bytes exactly.
    let ed = test_key("ed25519.pem");
    let device = device_key();
    let key_hash = sample_key().hash();
    assert_eq!(token::sign_license_file(&ed, &sample_license(), at(2026, 3, 1)), vector("license-file.ed25519.txt"));
    assert_eq!(
        token::sign_activation_token(&ed, &sample_claims(&device)) + "\n",
        vector("activation-token.ed25519.txt")
    );
    let (request_code, request) = sample_request(&device).sign(&key_hash, &device).unwrap();
    assert_eq!(request_code + "\n", vector("request.code"));
    assert_eq!(sample_grant().sign(&ed, &sample_binding(), &request).unwrap() + "\n", vector("response.code"));
    assert_eq!(sample_receipt(&device).sign(&key_hash, &device).unwrap() + "\n", vector("receipt.code"));
    assert_eq!(sample_emergency(false).sign(&ed, &sample_binding(), None).unwrap() + "\n", vector("emergency.code"));
}

#[test]
fn code_vectors_decode_and_verify() {
    let ks = keyset();
    let device = device_key();
    let key_hash = sample_key().hash();
    let request = SignedRequest::decode(&vector("request.code")).unwrap();
    assert_eq!(request.request, sample_request(&device));
    request.verify(&key_hash).unwrap();
    let response = SignedResponse::decode(&vector("response.code")).unwrap();
    assert_eq!(response.grant, sample_grant());
    response.verify(&ks, &sample_binding(), &request).unwrap();
    let receipt = SignedReceipt::decode(&vector("receipt.code")).unwrap();
    assert_eq!(receipt.receipt, sample_receipt(&device));
    receipt.verify(&key_hash, &device_public(&device)).unwrap();
    let em = SignedEmergency::decode(&vector("emergency.code")).unwrap();
    assert_eq!(em.code, sample_emergency(false));
    em.verify(&ks, &sample_binding(), &[9; 32]).unwrap();
    let bound = SignedEmergency::decode(&vector("emergency-bound.code")).unwrap();
    bound.verify(&ks, &sample_binding(), &device_public(&device)).unwrap();
    assert_eq!(
        bound.verify(&ks, &sample_binding(), &[9; 32]),
        Err(CryptoError::BadSignature),
        "bound to another device"
    );
}

// ----- budgets -----------------------------------------------------------------------------------------------

#[test]
fn code_lengths_stay_within_budget() {
    for (name, budget) in [
        ("request.code", 250),
        ("response.code", 500),
        ("receipt.code", 200),
        ("emergency.code", 150),
        ("emergency-bound.code", 150),
    ] {
        let len = vector(name).trim().len();
        assert!(len <= budget, "{name}: {len} characters, budget {budget}");
    }
    assert_eq!(sample_grant().features.len(), 10);
    assert!(sample_grant().features.iter().all(|f| f.id.len() == 15));
}

// ----- tamper sweeps ---------------------------------------------------------------------------------------------

fn flip_each_bit(bytes: &[u8], mut accepted: impl FnMut(&[u8]) -> bool) -> usize {
    let mut checked = 0;
    for i in 0..bytes.len() * 8 {
        let mut b = bytes.to_vec();
        b[i / 8] ^= 0x80 >> (i % 8);
        assert!(!accepted(&b), "bit {i} (byte {}) flipped and still accepted", i / 8);
        checked += 1;
    }
    checked
}

#[test]
fn every_bit_flip_of_a_license_file_is_rejected() {
    let ks = keyset();
    for alg in ["ed25519", "rsa2048"] {
        let text = vector(&format!("license-file.{alg}.txt"));
        // The artefact is the armored block; text around it (an e-mail) is not part of it.
        let block = text.trim_end();
        let n = flip_each_bit(block.as_bytes(), |b| {
            std::str::from_utf8(b).is_ok_and(|s| token::verify_license_file(s, &ks).is_ok())
        });
        assert_eq!(n, block.len() * 8);
    }
}

#[test]
fn a_token_without_a_country_decodes_and_is_signed_as_before() {
    // The pinned vector predates the country claim: it still verifies, with no country, and a token whose
    // country is unknown is byte-identical to it.
    let claims = token::verify_activation_token(&vector("activation-token.ed25519.txt"), &keyset()).unwrap();
    assert_eq!(claims.country, None);
    assert_eq!(claims, sample_claims(&device_key()));
    let payload = serde_json::to_value(&claims).unwrap();
    assert!(payload.get("country").is_none(), "an unknown country is left out: {payload}");
}

#[test]
fn the_country_is_signed_into_the_token_and_feeds_the_decision() {
    use tessera_core::decision::{decide, Environment, Inputs, Query, Reason};
    use tessera_core::model::{Restriction, RestrictionKind, RestrictionMode};
    let ed = test_key("ed25519.pem");
    let mut claims = sample_claims(&device_key());
    claims.country = Some("DE".into());
    let text = token::sign_activation_token(&ed, &claims);
    let back = token::verify_activation_token(&text, &keyset()).unwrap();
    assert_eq!(back.country.as_deref(), Some("DE"));
    let payload = Envelope::from_compact(&text).unwrap();
    let payload: serde_json::Value =
        serde_json::from_slice(payload.open(&keyset(), Domain::ActivationToken).unwrap()).unwrap();
    assert_eq!(payload["country"], "DE");

    // The token's country is the decision's country fact: a denied one denies, an unknown one never does.
    let mut license = sample_license();
    license.restrictions = vec![Restriction {
        kind: RestrictionKind::Geographic,
        mode: RestrictionMode::Allow,
        values: vec!["FR".into()],
    }];
    let decide_in = |country: Option<&str>| {
        let mut inputs = Inputs::new(at(2026, 6, 1), Some(&license));
        inputs.environment = Environment { country, ..Environment::default() };
        decide(&inputs, &Query::default())
    };
    assert_eq!(decide_in(back.country.as_deref()).reason, Reason::Restricted);
    assert!(decide_in(None).allowed, "unknown never denies");
    assert!(decide_in(Some("fr")).allowed);
}

#[test]
fn every_bit_flip_of_an_activation_token_is_rejected() {
    let ks = keyset();
    let text = vector("activation-token.ed25519.txt");
    flip_each_bit(text.trim().as_bytes(), |b| {
        std::str::from_utf8(b).is_ok_and(|s| token::verify_activation_token(s, &ks).is_ok())
    });
    // And the bytes under the text: payload and signature.
    let env = Envelope::from_compact(&text).unwrap();
    let mut raw = env.payload.clone();
    raw.extend_from_slice(&env.signature);
    flip_each_bit(&raw, |b| {
        let (p, s) = b.split_at(env.payload.len());
        Envelope { payload: p.to_vec(), signature: s.to_vec(), ..env.clone() }
            .open(&ks, Domain::ActivationToken)
            .is_ok()
    });
}

#[test]
fn every_bit_flip_of_every_code_is_rejected() {
    let ks = keyset();
    let device = device_key();
    let key_hash = sample_key().hash();
    let dpub = device_public(&device);
    let request = SignedRequest::decode(&vector("request.code")).unwrap();

    type Accepts<'a> = Box<dyn Fn(&str) -> bool + 'a>;
    let cases: [(&str, CodeKind, Accepts); 4] = [
        (
            "request.code",
            CodeKind::OfflineRequest,
            Box::new(|c| SignedRequest::decode(c).is_ok_and(|r| r.verify(&key_hash).is_ok())),
        ),
        (
            "response.code",
            CodeKind::OfflineResponse,
            Box::new(|c| SignedResponse::decode(c).is_ok_and(|r| r.verify(&ks, &sample_binding(), &request).is_ok())),
        ),
        (
            "receipt.code",
            CodeKind::DeactivationReceipt,
            Box::new(|c| SignedReceipt::decode(c).is_ok_and(|r| r.verify(&key_hash, &dpub).is_ok())),
        ),
        (
            "emergency.code",
            CodeKind::Emergency,
            Box::new(|c| SignedEmergency::decode(c).is_ok_and(|r| r.verify(&ks, &sample_binding(), &dpub).is_ok())),
        ),
    ];
    for (name, kind, accepts) in &cases {
        let code = vector(name);
        assert!(accepts(&code), "{name} must verify untouched");
        let bytes = codes::decode(*kind, &code).unwrap();
        // Bit flips of the bytes, re-encoded with a valid checksum: only the signature can catch these.
        flip_each_bit(&bytes, |b| accepts(&codes::encode(*kind, b).unwrap()));
    }
}

#[test]
fn every_single_character_change_of_every_code_is_rejected_and_located() {
    for name in ["request.code", "response.code", "receipt.code", "emergency.code"] {
        let code = vector(name);
        let code = code.trim();
        let kind = CodeKind::detect(code).unwrap();
        let chars: Vec<char> = code.chars().collect();
        let mut body_index = 0;
        for pos in 5..chars.len() {
            if chars[pos] == '-' {
                continue;
            }
            let group = body_index / codes::GROUP + 1;
            for &c in tessera_core::encoding::CROCKFORD {
                let c = c as char;
                if c == chars[pos] {
                    continue;
                }
                let mut t = chars.clone();
                t[pos] = c;
                let t: String = t.into_iter().collect();
                assert_eq!(codes::decode(kind, &t), Err(CodeError::Typo { group }), "{name}: {pos} -> {c}");
            }
            body_index += 1;
        }
    }
}

#[test]
fn truncated_codes_are_reported_as_truncated() {
    let code = vector("response.code");
    let code = code.trim();
    for keep in [code.len() - 1, code.len() - 6, code.len() / 2, 20] {
        let err = SignedResponse::decode(&code[..keep]).unwrap_err();
        assert!(matches!(err, CodeError::Truncated { .. }), "keep {keep}: {err:?}");
        assert!(err.to_string().contains("cut short"));
    }
}

// ----- confusion between kinds and keys ----------------------------------------------------------------------------

#[test]
fn a_signature_of_one_kind_is_not_accepted_as_another() {
    let ed = test_key("ed25519.pem");
    let ks = keyset();
    let license_file = Envelope::from_armored(&vector("license-file.ed25519.txt")).unwrap();
    // Relabel the license file as an activation token: the domain in the signature no longer matches.
    let relabeled = Envelope { kind: Domain::ActivationToken, ..license_file.clone() };
    assert!(matches!(
        token::verify_activation_token(&relabeled.to_compact(), &ks),
        Err(ArtefactError::Envelope(EnvelopeError::Crypto(CryptoError::BadSignature)))
    ));
    // Present a token where a license file is expected.
    let tok = vector("activation-token.ed25519.txt");
    assert!(token::verify_license_file(&Envelope::from_compact(&tok).unwrap().to_armored(), &ks).is_err());
    // An emergency-code signature over the same bytes is not a response signature.
    let key_hash = sample_key().hash();
    let device = device_key();
    let (_, request) = sample_request(&device).sign(&key_hash, &device).unwrap();
    let response = SignedResponse::decode(&vector("response.code")).unwrap();
    let sig = ed.sign(
        Domain::EmergencyCode,
        &[&sample_binding(), &request.bytes],
        &response.bytes()[..response.bytes().len() - 64],
    );
    let mut forged = response.bytes()[..response.bytes().len() - 64].to_vec();
    forged.extend_from_slice(&sig);
    let forged = SignedResponse::decode(&codes::encode(CodeKind::OfflineResponse, &forged).unwrap()).unwrap();
    assert_eq!(forged.verify(&ks, &sample_binding(), &request), Err(CryptoError::BadSignature));
    // A code of one kind is refused by another kind's decoder before anything else.
    assert!(matches!(SignedResponse::decode(&vector("emergency.code")), Err(CodeError::WrongKind { .. })));
}

#[test]
fn a_revoked_key_verifies_nothing_it_signed() {
    // The pinned vectors verify with the test keyset (above); mark each signing key revoked and none does.
    let mut ks = keyset();
    for k in ks.keys().to_vec() {
        assert!(ks.revoke(&k.key_id()));
    }
    let revoked = |e: &ArtefactError| {
        e.is_signature_failure()
            && matches!(e, ArtefactError::Envelope(EnvelopeError::Crypto(CryptoError::RevokedKey(_))))
    };
    for alg in ["ed25519", "rsa2048", "rsa3072"] {
        let e = token::verify_license_file(&vector(&format!("license-file.{alg}.txt")), &ks).unwrap_err();
        assert!(revoked(&e), "{alg}: {e}");
    }
    let e = token::verify_activation_token(vector("activation-token.ed25519.txt").trim(), &ks).unwrap_err();
    assert!(revoked(&e), "{e}");
    let device = device_key();
    let request = SignedRequest::decode(&vector("request.code")).unwrap();
    let response = SignedResponse::decode(&vector("response.code")).unwrap();
    assert!(response.verify(&ks, &sample_binding(), &request).is_err(), "offline response");
    let em = SignedEmergency::decode(&vector("emergency.code")).unwrap();
    assert!(em.verify(&ks, &sample_binding(), &[9; 32]).is_err(), "emergency code");
    let bound = SignedEmergency::decode(&vector("emergency-bound.code")).unwrap();
    assert!(bound.verify(&ks, &sample_binding(), &device_public(&device)).is_err(), "bound emergency code");
    // A signed server answer (a `server-response` envelope) is refused the same way.
    let ed = test_key("ed25519.pem");
    let answer = Envelope::seal(&ed, Domain::ServerResponse, b"{}".to_vec());
    assert!(matches!(answer.open(&ks, Domain::ServerResponse), Err(EnvelopeError::Crypto(CryptoError::RevokedKey(_)))));
    // With one other key still trusted, the keyset parses and keeps refusing the revoked ones.
    let mut mixed = ks.clone();
    mixed.insert(SigningKey::generate_ed25519().verifying_key());
    let back = PublicKeyset::from_json(&mixed.to_json()).unwrap();
    assert_eq!(back, mixed);
    assert!(token::verify_license_file(&vector("license-file.ed25519.txt"), &back).is_err());
}

#[test]
fn unknown_key_ids_are_rejected_before_signature_work() {
    let stranger = SigningKey::generate_ed25519();
    let ks = keyset();
    let file = token::sign_license_file(&stranger, &sample_license(), at(2026, 3, 1));
    assert!(matches!(
        token::verify_license_file(&file, &ks),
        Err(ArtefactError::Envelope(EnvelopeError::Crypto(CryptoError::UnknownKey(_))))
    ));
    // Codes carry a one-byte key tag; pick a stranger whose tag matches no trusted key.
    let stranger = std::iter::repeat_with(SigningKey::generate_ed25519)
        .find(|k| ks.keys().iter().all(|t| t.key_id().tag() != k.key_id().tag()))
        .unwrap();
    let key_hash = sample_key().hash();
    let code = sample_emergency(false).sign(&stranger, &key_hash, None).unwrap();
    let em = SignedEmergency::decode(&code).unwrap();
    assert!(matches!(em.verify(&ks, &key_hash, &[0; 32]), Err(CryptoError::UnknownKey(_))));
}

#[test]
fn rsa_keys_sign_files_and_tokens_but_not_codes() {
    let rsa = test_key("rsa2048.pem");
    let ks = keyset();
    let tok = token::sign_activation_token(&rsa, &sample_claims(&device_key()));
    assert_eq!(token::verify_activation_token(&tok, &ks).unwrap(), sample_claims(&device_key()));
    assert!(sample_emergency(false).sign(&rsa, &sample_key().hash(), None).is_err(), "codes are Ed25519 only");
}

#[test]
fn response_only_answers_its_own_request() {
    let ks = keyset();
    let key_hash = sample_key().hash();
    let response = SignedResponse::decode(&vector("response.code")).unwrap();
    let other_device = SigningKey::ed25519_from_bytes(&[7; 32]);
    let mut req = sample_request(&other_device);
    let (_, other) = req.sign(&key_hash, &other_device).unwrap();
    assert_eq!(response.verify(&ks, &sample_binding(), &other), Err(CryptoError::BadSignature));
    // Same device, a later request (new nonce): the old response does not answer it either.
    let device = device_key();
    req = sample_request(&device);
    req.nonce ^= 1;
    let (_, later) = req.sign(&key_hash, &device).unwrap();
    assert_eq!(response.verify(&ks, &key_hash, &later), Err(CryptoError::BadSignature));
    // Another license's key hash.
    let (_, request) = sample_request(&device).sign(&key_hash, &device).unwrap();
    assert_eq!(response.verify(&ks, &[1; 32], &request), Err(CryptoError::BadSignature));
}

// ----- round trips ---------------------------------------------------------------------------------------------------

fn arb_feature() -> impl Strategy<Value = tessera_core::Feature> {
    (
        "[a-zA-Z0-9_.:-]{1,64}",
        any::<bool>(),
        prop_oneof![Just(-1i64), 0i64..i64::MAX],
        0usize..4,
        proptest::option::of(0i64..4_000_000_000),
    )
        .prop_map(|(id, enabled, limit, lt, exp)| {
            let mut f = tessera_core::Feature::new(id);
            f.enabled = enabled;
            f.limit_value = limit;
            if limit >= 0 {
                f.limit_type = tessera_core::model::LimitType::ALL[lt];
            }
            f.expires_at =
                exp.map(|s| chrono::DateTime::from_timestamp(tessera_core::offline::CODE_EPOCH + s, 0).unwrap());
            f
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn offline_response_round_trips(features in proptest::collection::vec(arb_feature(), 0..20), grace in any::<u8>(), req in 0u8..9) {
        // Large feature sets do not fit a code: signing says so instead of producing a broken code.
        let ed = test_key("ed25519.pem");
        let device = device_key();
        let key_hash = sample_key().hash();
        let (_, request) = sample_request(&device).sign(&key_hash, &device).unwrap();
        let mut grant = sample_grant();
        grant.features = features;
        grant.grace_days = grace;
        grant.fingerprint_policy.required = req;
        let code = match grant.sign(&ed, &key_hash, &request) {
            Ok(code) => code,
            Err(e) => {
                // Only size may stop a grant: ~5,100 bits fit a code, and feature ids alone cost 6-7 bits a character.
                let id_bits: usize = grant.features.iter().map(|f| f.id.len() * 6).sum();
                prop_assert!(e.to_string().contains("more than a code can carry"), "{e}");
                prop_assert!(id_bits > 2000, "a small grant failed to encode: {e}");
                return Ok(());
            }
        };
        let back = SignedResponse::decode(&code).unwrap();
        prop_assert_eq!(&back.grant, &grant);
        prop_assert!(back.verify(&keyset(), &key_hash, &request).is_ok());
    }

    #[test]
    fn request_receipt_emergency_round_trip(seed in any::<[u8; 32]>(), nonce in any::<u16>(), secs in 0i64..4_000_000_000, serial in 0u32..(1 << 20), bound in any::<bool>()) {
        let device = SigningKey::ed25519_from_bytes(&seed);
        let key_hash = sample_key().hash();
        let t = chrono::DateTime::from_timestamp(tessera_core::offline::CODE_EPOCH + secs, 0).unwrap();
        let mut req = sample_request(&device);
        req.nonce = nonce;
        req.created_at = t;
        let (code, _) = req.sign(&key_hash, &device).unwrap();
        prop_assert_eq!(SignedRequest::decode(&code).unwrap().request, req);

        let grant = tessera_core::offline::online_grant_tag(&uuid::Uuid::from_u64_pair(secs as u64, u64::from(nonce)));
        let receipt =
            tessera_core::offline::DeactivationReceipt::for_device(&key_hash, &device_public(&device), grant, t);
        let code = receipt.sign(&key_hash, &device).unwrap();
        prop_assert_eq!(SignedReceipt::decode(&code).unwrap().receipt, receipt);

        let minutes = t.timestamp() / 60 * 60;
        let em = tessera_core::offline::EmergencyCode {
            bound,
            scope: tessera_core::model::EmergencyScope::AllFeatures,
            expires_at: chrono::DateTime::from_timestamp(minutes, 0).unwrap(),
            serial,
        };
        let dpub = device_public(&device);
        let code = em.sign(&test_key("ed25519.pem"), &key_hash, bound.then_some(&dpub)).unwrap();
        prop_assert!(code.len() <= 150);
        let back = SignedEmergency::decode(&code).unwrap();
        prop_assert_eq!(&back.code, &em);
        prop_assert!(back.verify(&keyset(), &key_hash, &dpub).is_ok());
    }

    #[test]
    fn license_files_and_tokens_round_trip(grace in any::<u32>(), max in any::<u32>(), features in proptest::collection::vec(arb_feature(), 0..12)) {
        let ed = test_key("ed25519.pem");
        let mut l = sample_license();
        l.grace_days = grace;
        l.max_activations = max;
        l.features = features;
        let file = token::sign_license_file(&ed, &l, at(2026, 3, 1));
        prop_assert_eq!(token::verify_license_file(&file, &keyset()).unwrap().license, l);
        let claims = sample_claims(&device_key());
        prop_assert_eq!(token::verify_activation_token(&token::sign_activation_token(&ed, &claims), &keyset()).unwrap(), claims);
    }

    #[test]
    fn arbitrary_text_never_panics_the_decoders(s in "\\PC{0,600}") {
        let _ = SignedRequest::decode(&s);
        let _ = SignedResponse::decode(&s);
        let _ = SignedReceipt::decode(&s);
        let _ = SignedEmergency::decode(&s);
        let _ = Envelope::from_compact(&s);
        let _ = Envelope::from_armored(&s);
        let _ = tessera_core::LicenseKey::parse(&s);
    }
}

/// docs/PROTOCOL.md lists every error code with its status and meaning, exactly as `ErrorCode` has them.
#[test]
fn the_protocol_document_lists_every_error_code_with_its_status() {
    use tessera_core::protocol::ErrorCode;
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md")).unwrap();
    let table = doc.split("<!-- error-codes:begin -->").nth(1).and_then(|t| t.split("<!-- error-codes:end -->").next());
    let rows: Vec<&str> =
        table.expect("the error-code table markers").lines().filter(|l| l.starts_with("| `")).collect();
    let expected: Vec<String> = ErrorCode::ALL
        .iter()
        .map(|c| format!("| `{}` | {} | {} |", c.as_str(), c.status(), c.describe().trim()))
        .collect();
    assert_eq!(rows, expected, "regenerate the table in docs/PROTOCOL.md from tessera_core::protocol::ErrorCode");
}
