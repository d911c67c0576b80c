//! Device blocks, suspicious-activity reports and emergency codes.

use chrono::Duration;
use serde_json::json;
use tessera_core::fingerprint::ComponentKind;
use tessera_core::LicenseType;
use tessera_server::store::*;
use uuid::Uuid;

use super::*;

fn block(tenant: Uuid, key: Option<Vec<u8>>, fingerprint_hash: Option<String>) -> BlockedDevice {
    BlockedDevice {
        id: Uuid::now_v7(),
        tenant_id: tenant,
        device_public_key: key,
        fingerprint_hash,
        reason: "stolen key".into(),
        created_at: now(),
    }
}

/// The audit entry for each activation a block ends.
fn on_deactivated() -> Box<dyn Fn(&Activation) -> NewAudit + Send> {
    Box::new(|act: &Activation| NewAudit {
        target: Some(act.id.to_string()),
        ..audit(Some(act.tenant_id), "conf.block.deactivate")
    })
}

pub async fn blocks_and_reports(s: &S) {
    let fa = fixture(s, "conf-blocks-a").await;
    let fb = fixture(s, "conf-blocks-b").await;
    let (a, b) = (Some(fa.tenant), Some(fb.tenant));
    let (la, _) = stored_license(s, &fa, LicenseType::Subscription, 10).await;
    let (la2, _) = stored_license(s, &fa, LicenseType::Subscription, 10).await;
    let (lb, _) = stored_license(s, &fb, LicenseType::Subscription, 10).await;
    let t = now();
    let key_x = device_key();
    let a1 = created(s, activation(&la, &key_x, fingerprint("x-machine"), t), 10).await;
    let ended = created(s, activation(&la2, &key_x, fingerprint("x-machine"), t), 10).await;
    assert!(s.deactivate(ended.id, t, "earlier".into(), audit(a, "conf.deactivate")).await.unwrap());
    let b1 = created(s, activation(&lb, &key_x, fingerprint("x-machine"), t), 10).await;
    let bad_fp = fingerprint("bad-machine");
    let a2 = created(s, activation(&la, &device_key(), bad_fp.clone(), t), 10).await;
    let a3 = created(s, activation(&la, &device_key(), fingerprint("good-machine"), t), 10).await;
    assert!(!s.has_blocks(fa.tenant).await.unwrap());

    // A key block ends the tenant's active activations with that key, in the same write, each audited.
    let by_key = block(fa.tenant, Some(key_x.clone()), None);
    let mark = audit_mark(s).await;
    let ids = s.add_block(by_key.clone(), audit(a, "conf.block.add"), "blocked".into(), on_deactivated()).await;
    assert_eq!(ids.unwrap(), vec![a1.id], "only active activations of this tenant");
    assert_audited(s, mark, "conf.block.add").await;
    let row = assert_audited(s, mark, "conf.block.deactivate").await;
    assert_eq!((row.entry.target, row.entry.outcome.as_str()), (Some(a1.id.to_string()), "DEACTIVATED"));
    let got = s.get_activation(a, a1.id).await.unwrap();
    assert_eq!((got.status, got.deactivation_reason.as_deref()), (ActivationStatus::Deactivated, Some("blocked")));
    assert_eq!(s.get_activation(b, b1.id).await.unwrap().status, ActivationStatus::Active, "another tenant's");
    assert_eq!(s.get_activation(a, ended.id).await.unwrap().deactivation_reason.as_deref(), Some("earlier"));
    assert!(s.has_blocks(fa.tenant).await.unwrap());
    assert!(!s.has_blocks(fb.tenant).await.unwrap());

    // A fingerprint block matches any component with that hash.
    let mac = hex::encode(bad_fp.get(ComponentKind::Mac).unwrap().hash);
    let by_fp = block(fa.tenant, None, Some(mac.clone()));
    let mark = audit_mark(s).await;
    let ids = s.add_block(by_fp.clone(), audit(a, "conf.block.add"), "cloned".into(), on_deactivated()).await;
    assert_eq!(ids.unwrap(), vec![a2.id]);
    assert_eq!(assert_audited(s, mark, "conf.block.deactivate").await.entry.target, Some(a2.id.to_string()));
    assert_eq!(s.get_activation(a, a3.id).await.unwrap().status, ActivationStatus::Active);
    let r = s.add_block(by_key.clone(), audit(a, "conf.block.dup"), "x".into(), on_deactivated()).await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "a block id is unique: {r:?}");

    // Lookups.
    let other_key = device_key();
    assert_eq!(s.find_block(fa.tenant, key_x.clone(), vec![]).await.unwrap(), Some(by_key.clone()));
    let hashes = |fp: &tessera_core::fingerprint::Fingerprint| -> Vec<String> {
        fp.components().iter().map(|c| hex::encode(c.hash)).collect()
    };
    assert_eq!(s.find_block(fa.tenant, other_key.clone(), hashes(&bad_fp)).await.unwrap(), Some(by_fp.clone()));
    assert_eq!(s.find_block(fa.tenant, other_key.clone(), hashes(&fingerprint("good-machine"))).await.unwrap(), None);
    assert_eq!(s.find_block(fb.tenant, key_x.clone(), hashes(&bad_fp)).await.unwrap(), None, "per tenant");
    assert_eq!(s.list_blocks(a).await.unwrap(), vec![by_key.clone(), by_fp.clone()]);
    assert!(s.list_blocks(b).await.unwrap().is_empty());
    let all = s.list_blocks(None).await.unwrap();
    assert!(all.contains(&by_key) && all.contains(&by_fp));

    // Removal is scoped.
    let mark = audit_mark(s).await;
    assert_eq!(s.remove_block(b, by_key.id, audit(b, "conf.block.remove")).await, Err(StoreError::NotFound));
    assert_not_audited(s, mark).await;
    s.remove_block(a, by_key.id, audit(a, "conf.block.remove")).await.unwrap();
    assert_audited(s, mark, "conf.block.remove").await;
    assert_eq!(s.remove_block(None, by_key.id, audit(None, "conf.block.remove")).await, Err(StoreError::NotFound));
    assert_eq!(s.find_block(fa.tenant, key_x.clone(), vec![]).await.unwrap(), None);
    assert_eq!(s.list_blocks(a).await.unwrap(), vec![by_fp.clone()]);
    assert!(s.has_blocks(fa.tenant).await.unwrap());
    s.remove_block(None, by_fp.id, audit(a, "conf.block.remove")).await.unwrap();
    assert!(!s.has_blocks(fa.tenant).await.unwrap());
    assert_eq!(
        s.get_activation(a, a1.id).await.unwrap().status,
        ActivationStatus::Deactivated,
        "unblocking ends nothing"
    );

    // Reports.
    let report = |tenant: Uuid, license: Option<Uuid>, act: Option<Uuid>| SuspiciousReport {
        id: Uuid::now_v7(),
        tenant_id: tenant,
        license_id: license,
        activation_id: act,
        kind: "CLOCK_TAMPERING".into(),
        details: json!({"skew_secs": 86400}),
        created_at: now(),
    };
    let ra = report(fa.tenant, Some(la.license.id), Some(a3.id));
    let ra2 = report(fa.tenant, None, None);
    let rb = report(fb.tenant, Some(lb.license.id), None);
    let mark = audit_mark(s).await;
    for r in [&ra, &ra2, &rb] {
        s.add_report(r.clone(), audit(Some(r.tenant_id), "conf.report.add")).await.unwrap();
    }
    assert_audited(s, mark, "conf.report.add").await;
    assert_eq!(s.list_reports(a).await.unwrap(), vec![ra.clone(), ra2.clone()]);
    assert_eq!(s.list_reports(b).await.unwrap(), vec![rb.clone()]);
    let all = s.list_reports(None).await.unwrap();
    assert!(all.contains(&ra) && all.contains(&rb));
    let r = s.add_report(ra.clone(), audit(a, "conf.report.dup")).await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
}

fn emergency_op(l: &LicenseRecord, window_start: chrono::DateTime<chrono::Utc>, max: u32) -> EmergencyOp {
    let t = now();
    EmergencyOp {
        record: EmergencyRecord {
            id: Uuid::now_v7(),
            tenant_id: l.license.tenant_id,
            license_id: l.license.id,
            serial: 0,
            reason: "server unreachable".into(),
            issued_by: ACTOR.into(),
            issued_at: t,
            expires_at: t + Duration::hours(24),
            bound_device: Some(device_key()),
            code: String::new(),
        },
        window_start,
        max_in_window: max,
        make_code: Box::new(|serial| Ok(format!("EMERG-{serial}"))),
        audit: audit(Some(l.license.tenant_id), "conf.emergency"),
    }
}

pub async fn emergency(s: &S) {
    let fa = fixture(s, "conf-emergency-a").await;
    let fb = fixture(s, "conf-emergency-b").await;
    let a = Some(fa.tenant);
    let (l, _) = stored_license(s, &fa, LicenseType::Subscription, 1).await;
    let (other, _) = stored_license(s, &fa, LicenseType::Subscription, 1).await;
    let window = now() - Duration::days(30);

    // Serials 1, 2 within a window of at most 2; the code is made for the serial.
    let mut issued = Vec::new();
    for serial in [1, 2] {
        let op = emergency_op(&l, window, 2);
        let mut want = op.record.clone();
        let mark = audit_mark(s).await;
        let EmergencyOutcome::Issued { record: rec, issued_in_window } = s.issue_emergency(op).await.unwrap() else {
            panic!("not issued")
        };
        assert_eq!(issued_in_window, serial, "counted with the others of the window");
        (want.serial, want.code) = (serial, format!("EMERG-{serial}"));
        assert_eq!(rec, want);
        assert_eq!(assert_audited(s, mark, "conf.emergency").await.entry.outcome, "ISSUED");
        issued.push(rec);
    }
    let mark = audit_mark(s).await;
    let out = s.issue_emergency(emergency_op(&l, window, 2)).await.unwrap();
    assert!(matches!(out, EmergencyOutcome::LimitReached { issued_in_window: 2 }), "{out:?}");
    assert_eq!(assert_audited(s, mark, "conf.emergency").await.entry.outcome, "LIMIT_REACHED");
    assert_eq!(s.list_emergency(a, l.license.id).await.unwrap(), issued);

    // A later window: serials keep increasing.
    let later = issued[1].issued_at + Duration::seconds(1);
    let mut op = emergency_op(&l, later, 2);
    op.record.issued_at = later + Duration::seconds(1);
    let EmergencyOutcome::Issued { record: third, issued_in_window } = s.issue_emergency(op).await.unwrap() else {
        panic!("not issued")
    };
    assert_eq!((third.serial, issued_in_window), (3, 1), "the window counts only its own codes");
    issued.push(third);

    // A code that cannot be made: an error, and nothing written.
    let mut op = emergency_op(&l, later, 5);
    op.make_code = Box::new(|_| Err("signing key unavailable".into()));
    let mark = audit_mark(s).await;
    assert!(s.issue_emergency(op).await.is_err());
    assert_not_audited(s, mark).await;
    assert_eq!(s.list_emergency(a, l.license.id).await.unwrap(), issued, "ordered by serial");
    assert_eq!(s.list_emergency(None, l.license.id).await.unwrap(), issued);
    assert!(s.list_emergency(Some(fb.tenant), l.license.id).await.unwrap().is_empty(), "scoped");

    // Serials and windows are per license.
    let EmergencyOutcome::Issued { record: first, .. } =
        s.issue_emergency(emergency_op(&other, window, 1)).await.unwrap()
    else {
        panic!("not issued")
    };
    assert_eq!(first.serial, 1);
    assert_eq!(s.list_emergency(a, other.license.id).await.unwrap(), vec![first]);
}
