//! Activations and seats, heartbeats and usage, releases, culling and purging, and the seat race.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use tessera_core::{LicenseModel, LicenseType};
use tessera_server::store::*;
use uuid::Uuid;

use super::*;

fn seats_used(o: &ActivateOutcome) -> u32 {
    match o {
        ActivateOutcome::Created { seats_used, .. }
        | ActivateOutcome::Reused { seats_used, .. }
        | ActivateOutcome::Replaced { seats_used, .. }
        | ActivateOutcome::SeatLimit { seats_used } => *seats_used,
    }
}

fn active(v: &[Activation]) -> Vec<Uuid> {
    v.iter().filter(|a| a.status == ActivationStatus::Active).map(|a| a.id).collect()
}

pub async fn activations_and_seats(s: &S) {
    let fa = fixture(s, "conf-activations-a").await;
    let fb = fixture(s, "conf-activations-b").await;
    let a = Some(fa.tenant);
    let (l, _) = stored_license(s, &fa, LicenseType::Subscription, 3).await;
    let lid = l.license.id;
    let t = now();

    // Created, read back, scoped.
    let (key1, fp1) = (device_key(), fingerprint("m1"));
    let a1 = activation(&l, &key1, fp1.clone(), t);
    let mark = audit_mark(s).await;
    let out = s.activate(activate_op(a1.clone(), 3)).await.unwrap();
    assert!(matches!(&out, ActivateOutcome::Created { activation, seats_used: 1 } if *activation == a1), "{out:?}");
    let row = assert_audited(s, mark, "conf.activate").await;
    assert_eq!((row.entry.outcome.as_str(), row.entry.target.clone()), ("CREATED", Some(a1.id.to_string())));
    assert_eq!(s.get_activation(a, a1.id).await.unwrap(), a1);
    assert_eq!(s.get_activation(None, a1.id).await.unwrap(), a1);
    assert_eq!(s.get_activation(Some(fb.tenant), a1.id).await.unwrap_err(), StoreError::NotFound);
    assert_eq!(s.list_activations(a, lid).await.unwrap(), vec![a1.clone()]);
    assert!(s.list_activations(Some(fb.tenant), lid).await.unwrap().is_empty());
    assert_eq!(s.count_active_seats(lid, t).await.unwrap(), 1);

    // Reused: the same device key; the lease moves forward only.
    let mut again = activation(&l, &key1, fp1.clone(), t + Duration::minutes(1));
    again.metadata = json!({"hostname": "renamed"});
    let mut op = activate_op(again.clone(), 3);
    op.reuse_lease_expires_at = Some(t + Duration::hours(2));
    let mark = audit_mark(s).await;
    match s.activate(op).await.unwrap() {
        ActivateOutcome::Reused { activation, seats_used } => {
            assert_eq!(seats_used, 1);
            assert_eq!(activation.id, a1.id, "the existing activation is reused");
            assert_eq!(activation.lease_expires_at, Some(t + Duration::hours(2)));
            assert_eq!(activation.metadata, again.metadata);
            assert_eq!(s.get_activation(a, a1.id).await.unwrap(), activation, "as stored");
        }
        other => panic!("expected Reused: {other:?}"),
    }
    assert_eq!(assert_audited(s, mark, "conf.activate").await.entry.outcome, "REUSED");
    let mut op = activate_op(activation(&l, &key1, fp1.clone(), t + Duration::minutes(2)), 3);
    op.reuse_lease_expires_at = Some(t + Duration::minutes(30));
    let out = s.activate(op).await.unwrap();
    assert!(
        matches!(&out, ActivateOutcome::Reused { activation, .. }
        if activation.lease_expires_at == Some(t + Duration::hours(2))),
        "a lease never moves back: {out:?}"
    );
    assert_eq!(s.get_activation(a, a1.id).await.unwrap().lease_expires_at, Some(t + Duration::hours(2)));
    assert_eq!(s.list_activations(a, lid).await.unwrap().len(), 1);

    // Replaced: the same machine (same_device) with a new device key.
    let a2 = activation(&l, &device_key(), fp1.clone(), t + Duration::minutes(3));
    let mut op = activate_op(a2.clone(), 3);
    op.candidates = SameDeviceCandidates::ByIdentity(identity_hash(&fp1).unwrap());
    let same = fp1.clone();
    op.same_device = Box::new(move |x| x.fingerprint == same);
    let mark = audit_mark(s).await;
    let out = s.activate(op).await.unwrap();
    assert!(
        matches!(&out, ActivateOutcome::Replaced { activation, replaced, seats_used: 1 }
        if *activation == a2 && *replaced == a1.id),
        "{out:?}"
    );
    let old = s.get_activation(a, a1.id).await.unwrap();
    assert_eq!(old.status, ActivationStatus::Deactivated);
    assert!(old.deactivation_reason.is_some() && old.deactivated_at.is_some());
    assert_eq!(assert_audited(s, mark, "conf.activate").await.entry.outcome, "REPLACED");
    assert_eq!(s.count_active_seats(lid, t + Duration::minutes(3)).await.unwrap(), 1);

    // The same identity, but not the same device by the caller's rule: a new seat.
    let a3 = activation(&l, &device_key(), fp1.clone(), t);
    let mut op = activate_op(a3.clone(), 3);
    op.candidates = SameDeviceCandidates::ByIdentity(identity_hash(&fp1).unwrap());
    let out = s.activate(op).await.unwrap();
    assert!(matches!(out, ActivateOutcome::Created { seats_used: 2, .. }), "{out:?}");

    // The seat limit: nothing is inserted beyond it; the refusal is audited.
    let fp4 = fingerprint("m4");
    let a4 = created(s, activation(&l, &device_key(), fp4.clone(), t), 3).await;
    let a5 = activation(&l, &device_key(), fingerprint("m5"), t);
    let mark = audit_mark(s).await;
    let out = s.activate(activate_op(a5.clone(), 3)).await.unwrap();
    assert!(matches!(out, ActivateOutcome::SeatLimit { seats_used: 3 }), "{out:?}");
    assert_eq!(assert_audited(s, mark, "conf.activate").await.entry.outcome, "SEAT_LIMIT_REACHED");
    assert_eq!(s.get_activation(None, a5.id).await.unwrap_err(), StoreError::NotFound);
    assert_eq!(active(&s.list_activations(a, lid).await.unwrap()), vec![a2.id, a3.id, a4.id]);
    // A full license still lets a known machine replace its activation (candidates: all of the license's).
    let a6 = activation(&l, &device_key(), fp4.clone(), t);
    let mut op = activate_op(a6.clone(), 3);
    op.candidates = SameDeviceCandidates::All;
    op.same_device = Box::new(move |x| x.fingerprint == fp4);
    let out = s.activate(op).await.unwrap();
    assert!(matches!(&out, ActivateOutcome::Replaced { replaced, seats_used: 3, .. } if *replaced == a4.id), "{out:?}");
    assert_eq!(s.count_active_seats(lid, t).await.unwrap(), 3);

    // Unlimited (max 0).
    let (lu, _) = stored_license(s, &fa, LicenseType::Subscription, 0).await;
    for i in 0..5 {
        let x = activation(&lu, &device_key(), fingerprint(&format!("u{i}")), t);
        let out = s.activate(activate_op(x, 0)).await.unwrap();
        assert!(matches!(out, ActivateOutcome::Created { .. }), "{out:?}");
    }
    assert_eq!(s.count_active_seats(lu.license.id, t).await.unwrap(), 5);

    // Per-activation seats (PER_CORE): each takes its `seats`; a machine that grows must fit.
    let (mut lc, _) = license(&fa, LicenseType::Subscription, 10);
    lc.license.license_model = LicenseModel::PerCore;
    s.insert_license(lc.clone(), audit(a, "conf.license.insert")).await.unwrap();
    let big = Activation { seats: 4, ..activation(&lc, &device_key(), fingerprint("c4"), t) };
    let out = s.activate(activate_op(big.clone(), 10)).await.unwrap();
    assert!(matches!(out, ActivateOutcome::Created { seats_used: 4, .. }), "{out:?}");
    let (small_key, small_fp) = (device_key(), fingerprint("c2"));
    let small = Activation { seats: 2, ..activation(&lc, &small_key, small_fp.clone(), t) };
    let out = s.activate(activate_op(small.clone(), 10)).await.unwrap();
    assert!(matches!(out, ActivateOutcome::Created { seats_used: 6, .. }), "{out:?}");
    let too_big = Activation { seats: 5, ..activation(&lc, &device_key(), fingerprint("c5"), t) };
    let out = s.activate(activate_op(too_big, 10)).await.unwrap();
    assert!(matches!(out, ActivateOutcome::SeatLimit { seats_used: 6 }), "{out:?}");
    let grown = Activation { seats: 7, ..activation(&lc, &small_key, small_fp.clone(), t) };
    let out = s.activate(activate_op(grown, 10)).await.unwrap();
    assert!(matches!(out, ActivateOutcome::SeatLimit { seats_used: 6 }), "growing past the limit: {out:?}");
    assert_eq!(s.get_activation(a, small.id).await.unwrap(), small, "nothing changed");
    let grown = Activation { seats: 6, ..activation(&lc, &small_key, small_fp, t) };
    let out = s.activate(activate_op(grown, 10)).await.unwrap();
    assert!(matches!(&out, ActivateOutcome::Reused { activation, seats_used: 10 } if activation.seats == 6), "{out:?}");
    assert_eq!(s.count_active_seats(lc.license.id, t).await.unwrap(), 10);
    // A released one holds its seats until its lease ends.
    let end = big.lease_expires_at.unwrap();
    let r = s.release(ReleaseOp::after_lease(big.id, t, "handed back", audit(a, "conf.release"))).await.unwrap();
    assert!(matches!(r, ReleaseOutcome::Released { seat_held_until: Some(h), .. } if h == end), "{r:?}");
    assert_eq!(s.count_active_seats(lc.license.id, t).await.unwrap(), 10);
    assert_eq!(s.count_active_seats(lc.license.id, end + Duration::seconds(1)).await.unwrap(), 6);

    // Named users: all of one user's activations share one seat.
    let (ln, _) = stored_license(s, &fa, LicenseType::NamedUser, 2).await;
    let user = |u: &str, seed: &str| Activation {
        user_id: Some(u.into()),
        ..activation(&ln, &device_key(), fingerprint(seed), t)
    };
    for (u, seed, used) in [("alice", "n1", 1), ("alice", "n2", 1), ("bob", "n3", 2), ("alice", "n4", 2)] {
        let out = s.activate(activate_op(user(u, seed), 2)).await.unwrap();
        assert!(matches!(out, ActivateOutcome::Created { .. }), "{u} on {seed}: {out:?}");
        assert_eq!(seats_used(&out), used, "{u} on {seed}");
    }
    let out = s.activate(activate_op(user("carol", "n5"), 2)).await.unwrap();
    assert!(matches!(out, ActivateOutcome::SeatLimit { seats_used: 2 }), "a third user: {out:?}");
    assert_eq!(s.count_active_seats(ln.license.id, t).await.unwrap(), 2);
    assert_eq!(s.list_activations(a, ln.license.id).await.unwrap().len(), 4);

    // Many licenses in one read: the same counts (seat units, held seats, named users), none for an idle one.
    let (idle, _) = stored_license(s, &fa, LicenseType::Subscription, 2).await;
    for at in [t, end + Duration::seconds(1)] {
        let ids = vec![lc.license.id, ln.license.id, lu.license.id, idle.license.id];
        let mut many = s.count_active_seats_of(ids.clone(), at).await.unwrap();
        many.sort();
        let mut one = Vec::new();
        for id in ids {
            let n = s.count_active_seats(id, at).await.unwrap();
            if n > 0 {
                one.push((id, n));
            }
        }
        one.sort();
        assert_eq!(many, one, "at {at}");
    }
    assert!(s.count_active_seats_of(vec![], t).await.unwrap().is_empty());
    // Past one statement's chunk of ids, with a license twice: each counted once.
    let mut ids: Vec<Uuid> = (0..700).map(|_| Uuid::now_v7()).collect();
    ids.push(lc.license.id);
    ids.push(lc.license.id);
    ids.push(ln.license.id);
    let mut many = s.count_active_seats_of(ids, t).await.unwrap();
    many.sort();
    let mut want = vec![(lc.license.id, 10), (ln.license.id, 2)];
    want.sort();
    assert_eq!(many, want);
}

fn beat(a: &Activation, at: DateTime<Utc>, lease: Option<DateTime<Utc>>, usage: Vec<UsageEvent>) -> HeartbeatOp {
    HeartbeatOp {
        activation_id: a.id,
        license_id: a.license_id,
        now: at,
        lease_expires_at: lease,
        usage,
        audit: Some(audit(Some(a.tenant_id), "conf.heartbeat")),
    }
}

fn usage(feature: &str, amount: i64) -> UsageEvent {
    UsageEvent { id: Uuid::now_v7(), feature: feature.into(), amount, recorded_at: now() }
}

pub async fn heartbeat_and_usage(s: &S) {
    let fx = fixture(s, "conf-heartbeat").await;
    let a = Some(fx.tenant);
    let (l, _) = stored_license(s, &fx, LicenseType::Subscription, 5).await;
    let lid = l.license.id;
    let t = now();
    let act = created(s, activation(&l, &device_key(), fingerprint("hb"), t), 5).await;
    assert!(s.usage_totals(lid).await.unwrap().is_empty());

    let (u1, u2, u3) = (usage("api", 5), usage("api", 3), usage("storage", 10));
    let lease = t + Duration::hours(2);
    let at = t + Duration::minutes(1);
    let mark = audit_mark(s).await;
    let o = s.heartbeat(beat(&act, at, Some(lease), vec![u1.clone(), u2.clone(), u3.clone()])).await.unwrap();
    assert!(o.active);
    assert_eq!(o.lease_expires_at, Some(lease));
    assert_eq!(o.accepted_usage, vec![u1.id, u2.id, u3.id]);
    let totals = vec![("api".to_string(), 8), ("storage".to_string(), 10)];
    assert_eq!(o.usage_totals, totals, "totals per feature, by feature name");
    assert_eq!(assert_audited(s, mark, "conf.heartbeat").await.entry.outcome, "OK");
    assert_eq!(*s.usage_totals(lid).await.unwrap(), totals);
    let stored = s.get_activation(a, act.id).await.unwrap();
    assert_eq!((stored.last_seen_at, stored.lease_expires_at), (at, Some(lease)));

    // The lease never moves back; None keeps it.
    let o = s.heartbeat(beat(&act, t + Duration::minutes(2), Some(t + Duration::minutes(90)), vec![])).await.unwrap();
    assert_eq!(o.lease_expires_at, Some(lease));
    let o = s.heartbeat(beat(&act, t + Duration::minutes(3), None, vec![])).await.unwrap();
    assert_eq!(o.lease_expires_at, Some(lease));
    assert_eq!(s.get_activation(a, act.id).await.unwrap().lease_expires_at, Some(lease));
    let o = s.heartbeat(beat(&act, t + Duration::minutes(4), Some(lease + Duration::hours(1)), vec![])).await.unwrap();
    assert_eq!(o.lease_expires_at, Some(lease + Duration::hours(1)));
    // Without an audit entry nothing is appended.
    let mark = audit_mark(s).await;
    s.heartbeat(HeartbeatOp { audit: None, ..beat(&act, t + Duration::minutes(5), None, vec![]) }).await.unwrap();
    assert_not_audited(s, mark).await;

    // A usage id is counted once: a retried event is acknowledged (so the device drops it) but not added again.
    let u4 = usage("api", 1);
    let o = s.heartbeat(beat(&act, t + Duration::minutes(6), None, vec![u1.clone(), u4.clone()])).await.unwrap();
    assert!(o.accepted_usage.contains(&u4.id) && o.accepted_usage.contains(&u1.id), "{:?}", o.accepted_usage);
    let totals = vec![("api".to_string(), 9), ("storage".to_string(), 10)];
    assert_eq!(o.usage_totals, totals);
    assert_eq!(*s.usage_totals(lid).await.unwrap(), totals);
    // Usage ids are scoped to their license: the same id on another license counts there.
    let (l2, _) = stored_license(s, &fx, LicenseType::Subscription, 5).await;
    let act2 = created(s, activation(&l2, &device_key(), fingerprint("hb2"), t), 5).await;
    let o = s.heartbeat(beat(&act2, t + Duration::minutes(1), None, vec![u1.clone()])).await.unwrap();
    assert_eq!(o.usage_totals, vec![("api".to_string(), 5)]);
    assert_eq!(*s.usage_totals(l2.license.id).await.unwrap(), vec![("api".to_string(), 5)]);
    assert_eq!(*s.usage_totals(lid).await.unwrap(), totals, "the first license is unchanged");

    // An inactive activation: nothing updated, no usage stored.
    assert!(s.deactivate(act.id, t + Duration::minutes(7), "done".into(), audit(a, "conf.deactivate")).await.unwrap());
    let before = s.get_activation(a, act.id).await.unwrap();
    let mark = audit_mark(s).await;
    let late = t + Duration::hours(1);
    let o = s.heartbeat(beat(&act, late, Some(late + Duration::days(1)), vec![usage("api", 100)])).await.unwrap();
    assert!(!o.active);
    assert!(o.accepted_usage.is_empty());
    assert_eq!(*s.usage_totals(lid).await.unwrap(), totals);
    assert_eq!(assert_audited(s, mark, "conf.heartbeat").await.entry.outcome, "DEACTIVATED");
    assert_eq!(s.get_activation(a, act.id).await.unwrap(), before, "a heartbeat changes no inactive activation");
    // An unknown activation is not active either (or not found: both are valid answers).
    let ghost = Activation { id: Uuid::now_v7(), ..act.clone() };
    match s.heartbeat(HeartbeatOp { audit: None, ..beat(&ghost, late, None, vec![usage("api", 1)]) }).await {
        Ok(o) => assert!(!o.active),
        Err(e) => assert_eq!(e, StoreError::NotFound),
    }
    assert_eq!(*s.usage_totals(lid).await.unwrap(), totals);
}

pub async fn release_deactivate_cull(s: &S) {
    let fx = fixture(s, "conf-release").await;
    let a = Some(fx.tenant);
    let (l, _) = stored_license(s, &fx, LicenseType::Subscription, 10).await;
    let lid = l.license.id;
    let t = now();
    let new = |seed: &str| activation(&l, &device_key(), fingerprint(seed), t);
    let rel = |id: Uuid, kind: ReleaseKind, at: DateTime<Utc>| ReleaseOp {
        activation_id: id,
        at,
        reason: format!("{} release", kind.as_str()),
        kind,
        expect_grant_tag: None,
        immediate_limit: (2, t - Duration::days(30)),
        audit: audit(a, "conf.release"),
    };

    // AfterLease: ended, its seat held until the lease ends.
    let x = created(s, new("after"), 10).await;
    let end = x.lease_expires_at.unwrap();
    let mark = audit_mark(s).await;
    let r = s.release(rel(x.id, ReleaseKind::AfterLease, t)).await.unwrap();
    assert_eq!(
        r,
        ReleaseOutcome::Released { kind: ReleaseKind::AfterLease, seat_held_until: Some(end), immediate_in_window: 0 }
    );
    assert_eq!(assert_audited(s, mark, "conf.release").await.entry.outcome, "DEACTIVATED");
    let got = s.get_activation(a, x.id).await.unwrap();
    assert_eq!(
        (got.status, got.seat_held_until, got.deactivated_at),
        (ActivationStatus::Deactivated, Some(end), Some(t))
    );
    assert_eq!(got.deactivation_reason.as_deref(), Some("AFTER_LEASE release"));
    assert_eq!(s.count_active_seats(lid, t + Duration::minutes(1)).await.unwrap(), 1, "held");
    assert_eq!(s.count_active_seats(lid, end + Duration::seconds(1)).await.unwrap(), 0, "free after the lease");
    // Released again: already inactive, still held. Staff ends the hold.
    let r = s.release(rel(x.id, ReleaseKind::AfterLease, t + Duration::minutes(2))).await.unwrap();
    assert_eq!(r, ReleaseOutcome::AlreadyInactive { seat_held_until: Some(end) });
    let r = s.release(rel(x.id, ReleaseKind::Staff, t + Duration::minutes(2))).await.unwrap();
    assert!(matches!(r, ReleaseOutcome::Released { kind: ReleaseKind::Staff, seat_held_until: None, .. }), "{r:?}");
    assert_eq!(s.count_active_seats(lid, t + Duration::minutes(2)).await.unwrap(), 0);
    assert_eq!(s.get_activation(a, x.id).await.unwrap().seat_held_until, None);
    let r = s.release(rel(x.id, ReleaseKind::Staff, t + Duration::minutes(3))).await.unwrap();
    assert_eq!(r, ReleaseOutcome::AlreadyInactive { seat_held_until: None });
    // A lease already over holds nothing; no lease at all holds until staff release it.
    let over = created(s, Activation { lease_expires_at: Some(t - Duration::minutes(1)), ..new("over") }, 10).await;
    let r = s.release(rel(over.id, ReleaseKind::AfterLease, t)).await.unwrap();
    assert!(matches!(r, ReleaseOutcome::Released { seat_held_until: None, .. }), "{r:?}");
    let endless = created(s, Activation { lease_expires_at: None, ..new("endless") }, 10).await;
    let r = s.release(rel(endless.id, ReleaseKind::AfterLease, t)).await.unwrap();
    assert!(matches!(r, ReleaseOutcome::Released { seat_held_until: Some(h), .. } if h == hold_forever()), "{r:?}");
    assert_eq!(s.count_active_seats(lid, t + Duration::days(3650)).await.unwrap(), 1);
    s.release(rel(endless.id, ReleaseKind::Staff, t)).await.unwrap();
    assert_eq!(s.count_active_seats(lid, t).await.unwrap(), 0);

    // Immediate: free at once within the limit (2 in the window), held like AfterLease beyond it.
    for (seed, n) in [("imm1", 1), ("imm2", 2)] {
        let y = created(s, new(seed), 10).await;
        let r = s.release(rel(y.id, ReleaseKind::Immediate, t)).await.unwrap();
        let want =
            ReleaseOutcome::Released { kind: ReleaseKind::Immediate, seat_held_until: None, immediate_in_window: n };
        assert_eq!(r, want);
        assert_eq!(s.count_active_seats(lid, t).await.unwrap(), 0, "free at once");
    }
    let y = created(s, new("imm3"), 10).await;
    let r = s.release(rel(y.id, ReleaseKind::Immediate, t)).await.unwrap();
    let want = ReleaseOutcome::Released {
        kind: ReleaseKind::AfterLease,
        seat_held_until: y.lease_expires_at,
        immediate_in_window: 2,
    };
    assert_eq!(r, want, "beyond the limit");
    assert_eq!(s.count_active_seats(lid, t).await.unwrap(), 1);
    // Releases before the window start do not count.
    let z = created(s, new("imm4"), 10).await;
    let op = ReleaseOp {
        immediate_limit: (2, t + Duration::seconds(1)),
        ..rel(z.id, ReleaseKind::Immediate, t + Duration::seconds(2))
    };
    let r = s.release(op).await.unwrap();
    assert!(
        matches!(r, ReleaseOutcome::Released { kind: ReleaseKind::Immediate, immediate_in_window: 1, .. }),
        "{r:?}"
    );

    // The grant check: a renewal since the caller read the activation wins.
    let g = created(s, Activation { metadata: json!({"grant_tag": "aa01"}), ..new("grant") }, 10).await;
    let mark = audit_mark(s).await;
    let op = ReleaseOp { expect_grant_tag: Some("bb02".into()), ..rel(g.id, ReleaseKind::AfterLease, t) };
    assert_eq!(s.release(op).await.unwrap(), ReleaseOutcome::GrantChanged);
    assert_not_audited(s, mark).await;
    assert_eq!(s.get_activation(a, g.id).await.unwrap(), g, "nothing changed");
    let op = ReleaseOp { expect_grant_tag: Some("aa01".into()), ..rel(g.id, ReleaseKind::AfterLease, t) };
    assert!(matches!(s.release(op).await.unwrap(), ReleaseOutcome::Released { .. }));
    let r = s.release(rel(Uuid::now_v7(), ReleaseKind::AfterLease, t)).await;
    assert_eq!(r, Err(StoreError::NotFound));

    // deactivate: true once, then false; both audited.
    let d = created(s, new("deact"), 10).await;
    let mark = audit_mark(s).await;
    assert!(s.deactivate(d.id, t, "by staff".into(), audit(a, "conf.deactivate")).await.unwrap());
    assert_eq!(assert_audited(s, mark, "conf.deactivate").await.entry.outcome, "DEACTIVATED");
    let got = s.get_activation(a, d.id).await.unwrap();
    assert_eq!(
        (got.status, got.deactivated_at, got.deactivation_reason.as_deref()),
        (ActivationStatus::Deactivated, Some(t), Some("by staff"))
    );
    let mark = audit_mark(s).await;
    assert!(!s.deactivate(d.id, t, "again".into(), audit(a, "conf.deactivate")).await.unwrap());
    assert_audited(s, mark, "conf.deactivate").await;
    assert_eq!(s.get_activation(a, d.id).await.unwrap().deactivation_reason.as_deref(), Some("by staff"));

    // Floating activations whose lease ended are stale; culling re-checks the lease in the same write.
    let (lf, _) = stored_license(s, &fx, LicenseType::Concurrent, 10).await;
    let float = |seed: &str, lease: DateTime<Utc>| Activation {
        floating: true,
        lease_expires_at: Some(lease),
        ..activation(&lf, &device_key(), fingerprint(seed), t - Duration::hours(1))
    };
    let f1 = created(s, float("f1", t - Duration::minutes(1)), 10).await;
    let f2 = created(s, float("f2", t + Duration::hours(1)), 10).await;
    let f3 = created(s, float("f3", t - Duration::minutes(1)), 10).await;
    let fixed = Activation { floating: false, ..float("n1", t - Duration::minutes(1)) };
    let n1 = created(s, fixed, 10).await;
    let stale: Vec<Uuid> = s.stale_floating(t).await.unwrap().into_iter().map(|x| x.id).collect();
    assert!(stale.contains(&f1.id) && stale.contains(&f3.id), "{stale:?}");
    assert!(!stale.contains(&f2.id) && !stale.contains(&n1.id), "{stale:?}");
    // f1 renews after the scan: it keeps its seat.
    s.heartbeat(beat(&f1, t, Some(t + Duration::hours(1)), vec![])).await.unwrap();
    let mark = audit_mark(s).await;
    assert!(!s.cull_if_stale(f1.id, t, audit(a, "conf.cull")).await.unwrap(), "a renewed lease is not culled");
    assert_eq!(s.get_activation(a, f1.id).await.unwrap().status, ActivationStatus::Active);
    assert!(!s.cull_if_stale(f2.id, t, audit(a, "conf.cull")).await.unwrap());
    assert!(!s.cull_if_stale(n1.id, t, audit(a, "conf.cull")).await.unwrap(), "only floating activations");
    assert_not_audited(s, mark).await;
    assert!(s.cull_if_stale(f3.id, t, audit(a, "conf.cull")).await.unwrap());
    assert_audited(s, mark, "conf.cull").await;
    let got = s.get_activation(a, f3.id).await.unwrap();
    assert_eq!((got.status, got.deactivated_at), (ActivationStatus::Deactivated, Some(t)));
    assert!(!s.cull_if_stale(f3.id, t, audit(a, "conf.cull")).await.unwrap(), "culled once");
    let stale: Vec<Uuid> = s.stale_floating(t).await.unwrap().into_iter().map(|x| x.id).collect();
    assert!(!stale.contains(&f1.id) && !stale.contains(&f3.id), "{stale:?}");
    assert_eq!(s.count_active_seats(lf.license.id, t).await.unwrap(), 3);
}

/// Purging deleted activations: only old ones, not while their seat is held, not while a 30-day release count
/// needs them. Runs in 2001 so that no other area's rows are old enough.
pub async fn purge(s: &S) {
    let fx = fixture(s, "conf-purge").await;
    let a = Some(fx.tenant);
    let (l, _) = stored_license(s, &fx, LicenseType::Subscription, 10).await;
    let base = Utc.with_ymd_and_hms(2001, 1, 1, 0, 0, 0).unwrap();
    let at = |seed: &str, lease: DateTime<Utc>| Activation {
        lease_expires_at: Some(lease),
        ..activation(&l, &device_key(), fingerprint(seed), base)
    };
    let plain = created(s, at("plain", base + Duration::hours(1)), 10).await;
    assert!(s.deactivate(plain.id, base, "old".into(), audit(a, "conf.deactivate")).await.unwrap());
    let released = created(s, at("released", base + Duration::hours(1)), 10).await;
    s.release(ReleaseOp::after_lease(released.id, base, "r", audit(a, "conf.release"))).await.unwrap();
    let held = created(s, at("held", base + Duration::days(100)), 10).await;
    s.release(ReleaseOp::after_lease(held.id, base, "r", audit(a, "conf.release"))).await.unwrap();
    let live = created(s, at("live", base + Duration::hours(1)), 10).await;
    let left = || async {
        let mut v: Vec<Uuid> = s.list_activations(a, l.license.id).await.unwrap().iter().map(|x| x.id).collect();
        v.sort();
        v
    };
    let sorted = |mut v: Vec<Uuid>| {
        v.sort();
        v
    };

    let cutoff = base + Duration::days(1);
    assert_eq!(s.purge_deactivated(base, base + Duration::days(10)).await.unwrap(), 0, "`before` is exclusive");
    assert_eq!(s.purge_deactivated(cutoff, base + Duration::days(10)).await.unwrap(), 1);
    assert_eq!(left().await, sorted(vec![released.id, held.id, live.id]), "the plain one went");
    assert_eq!(s.purge_deactivated(cutoff, base + Duration::days(40)).await.unwrap(), 1);
    assert_eq!(left().await, sorted(vec![held.id, live.id]), "a release counts for 30 days");
    assert_eq!(s.purge_deactivated(cutoff, base + Duration::days(99)).await.unwrap(), 0, "its seat is held");
    assert_eq!(s.purge_deactivated(cutoff, base + Duration::days(101)).await.unwrap(), 1);
    assert_eq!(left().await, vec![live.id], "an active one stays");
    assert_eq!(s.get_activation(None, held.id).await.unwrap_err(), StoreError::NotFound);
}

/// Concurrent activations of distinct devices never exceed the seat limit.
pub async fn seat_race(s: &S) {
    let fx = fixture(s, "conf-race").await;
    let (l, _) = stored_license(s, &fx, LicenseType::Subscription, 3).await;
    let t = now();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = s.clone();
            let op = activate_op(activation(&l, &device_key(), fingerprint(&format!("race{i}")), t), 3);
            tokio::spawn(async move { store.activate(op).await.unwrap() })
        })
        .collect();
    let (mut created, mut full) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            ActivateOutcome::Created { seats_used, .. } => {
                assert!((1..=3).contains(&seats_used));
                created += 1;
            }
            ActivateOutcome::SeatLimit { seats_used } => {
                assert_eq!(seats_used, 3);
                full += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((created, full), (3, 13));
    assert_eq!(s.count_active_seats(l.license.id, t).await.unwrap(), 3);
    assert_eq!(active(&s.list_activations(None, l.license.id).await.unwrap()).len(), 3);
}

/// Supersede (the same device key renewing from another machine): a grant whose lease is over frees all its
/// seats for the new activation (a PER_CORE activation on 4 of 4 seats renews); one whose lease still runs holds
/// them, so the renewal is refused and nothing changes. (Found by this suite: the store once freed one seat.)
pub async fn supersede_frees_all_seats_of_an_expired_grant(s: &S) {
    let fx = fixture(s, "conf-bug-supersede").await;
    let (mut l, _) = license(&fx, LicenseType::Subscription, 4);
    l.license.license_model = LicenseModel::PerCore;
    s.insert_license(l.clone(), audit(Some(fx.tenant), "conf.license.insert")).await.unwrap();
    let t = now();
    let key = device_key();
    let old = Activation {
        offline: true,
        seats: 4,
        lease_expires_at: Some(t - Duration::hours(1)),
        ..activation(&l, &key, fingerprint("first-machine"), t - Duration::days(30))
    };
    created(s, old.clone(), 4).await;
    let new = Activation { offline: true, seats: 4, ..activation(&l, &key, fingerprint("second-machine"), t) };
    let mut op = activate_op(new, 4);
    op.supersede_if = Some(Box::new(|_| true));
    let out = s.activate(op).await.unwrap();
    assert!(
        matches!(&out, ActivateOutcome::Replaced { replaced, seats_used: 4, .. } if *replaced == old.id),
        "the expired grant frees its 4 seats for the new machine: {out:?}"
    );

    // A grant still running holds its seats: no room for a second 4-seat machine, and nothing is written.
    let (mut l, _) = license(&fx, LicenseType::Subscription, 4);
    l.license.license_model = LicenseModel::PerCore;
    s.insert_license(l.clone(), audit(Some(fx.tenant), "conf.license.insert")).await.unwrap();
    let key = device_key();
    let running = Activation {
        offline: true,
        seats: 4,
        lease_expires_at: Some(t + Duration::hours(1)),
        ..activation(&l, &key, fingerprint("first-machine"), t - Duration::days(1))
    };
    created(s, running.clone(), 4).await;
    let new = Activation { offline: true, seats: 4, ..activation(&l, &key, fingerprint("second-machine"), t) };
    let mut op = activate_op(new, 4);
    op.supersede_if = Some(Box::new(|_| true));
    let out = s.activate(op).await.unwrap();
    assert!(matches!(out, ActivateOutcome::SeatLimit { seats_used: 4 }), "{out:?}");
    let after = s.get_activation(None, running.id).await.unwrap();
    assert_eq!(after.status, ActivationStatus::Active, "the refused renewal ended nothing");
    assert_eq!(active(&s.list_activations(None, l.license.id).await.unwrap()).len(), 1);
}

/// `record_usage` (usage from a backend, one event at a time): counted once per id, a retried id with the same
/// feature and amount is a duplicate, the same id for another amount is refused and changes nothing; each is
/// audited with its outcome; an event may belong to no activation; ids are per license.
pub async fn record_usage(s: &S) {
    let fx = fixture(s, "conf-record-usage").await;
    let (l, _) = stored_license(s, &fx, LicenseType::Subscription, 5).await;
    let (other, _) = stored_license(s, &fx, LicenseType::Subscription, 5).await;
    let op = |license_id: Uuid, event: &UsageEvent| RecordUsageOp {
        license_id,
        activation_id: None,
        event: event.clone(),
        now: now(),
        audit: audit(Some(fx.tenant), "conf.usage.record"),
    };
    let first = usage("api", 7);
    let mark = audit_mark(s).await;
    assert_eq!(s.record_usage(op(l.license.id, &first)).await.unwrap(), RecordUsageOutcome::Recorded { total: 7 });
    assert_eq!(assert_audited(s, mark, "conf.usage.record").await.entry.outcome, "OK");
    let second = usage("api", 5);
    assert_eq!(s.record_usage(op(l.license.id, &second)).await.unwrap(), RecordUsageOutcome::Recorded { total: 12 });
    assert_eq!(*s.usage_totals(l.license.id).await.unwrap(), vec![("api".to_string(), 12)], "read your writes");

    let mark = audit_mark(s).await;
    assert_eq!(s.record_usage(op(l.license.id, &first)).await.unwrap(), RecordUsageOutcome::Duplicate { total: 12 });
    assert_eq!(assert_audited(s, mark, "conf.usage.record").await.entry.outcome, "DUPLICATE");
    let changed = UsageEvent { amount: 70, ..first.clone() };
    let mark = audit_mark(s).await;
    assert_eq!(s.record_usage(op(l.license.id, &changed)).await.unwrap(), RecordUsageOutcome::IdConflict);
    assert_eq!(assert_audited(s, mark, "conf.usage.record").await.entry.outcome, "CONFLICT");
    assert_eq!(*s.usage_totals(l.license.id).await.unwrap(), vec![("api".to_string(), 12)], "nothing counted");

    // The same id on another license is another event.
    assert_eq!(s.record_usage(op(other.license.id, &first)).await.unwrap(), RecordUsageOutcome::Recorded { total: 7 });
    // Attributed to an activation, it counts the same way.
    let act = created(s, activation(&l, &device_key(), fingerprint("record-usage"), now()), 5).await;
    let mut by_device = op(l.license.id, &usage("storage", 3));
    by_device.activation_id = Some(act.id);
    assert_eq!(s.record_usage(by_device).await.unwrap(), RecordUsageOutcome::Recorded { total: 3 });
    assert_eq!(*s.usage_totals(l.license.id).await.unwrap(), vec![("api".to_string(), 12), ("storage".to_string(), 3)]);
}
