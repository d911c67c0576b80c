//! Events, deferred writes and the audit hash chain.

use std::collections::HashSet;

use chrono::Duration;
use serde_json::json;
use tessera_core::LicenseType;
use tessera_server::store::*;
use uuid::Uuid;

use super::*;

fn event(tenant: Uuid, license: Option<Uuid>, kind: &str) -> Event {
    Event {
        id: Uuid::now_v7(),
        tenant_id: tenant,
        license_id: license,
        kind: kind.into(),
        at: now(),
        data: json!({"k": kind}),
    }
}

pub async fn events_and_deferred(s: &S) {
    let fa = fixture(s, "conf-events-a").await;
    let fb = fixture(s, "conf-events-b").await;
    let (a, b) = (Some(fa.tenant), Some(fb.tenant));
    let (la, _) = stored_license(s, &fa, LicenseType::Subscription, 5).await;
    let (lb, _) = stored_license(s, &fb, LicenseType::Subscription, 5).await;

    // Events: with or without an audit entry; listed by tenant and license.
    let e1 = event(fa.tenant, Some(la.license.id), "license.note");
    let mark = audit_mark(s).await;
    s.add_event(e1.clone(), None).await.unwrap();
    assert_not_audited(s, mark).await;
    let e2 = event(fa.tenant, None, "tenant.note");
    s.add_event(e2.clone(), Some(audit(a, "conf.event.add"))).await.unwrap();
    assert_audited(s, mark, "conf.event.add").await;
    let e3 = event(fb.tenant, Some(lb.license.id), "license.note");
    s.add_event(e3.clone(), None).await.unwrap();
    assert_eq!(s.list_events(a, Some(la.license.id)).await.unwrap(), vec![e1.clone()]);
    assert_eq!(s.list_events(None, Some(la.license.id)).await.unwrap(), vec![e1.clone()]);
    assert!(s.list_events(b, Some(la.license.id)).await.unwrap().is_empty(), "another tenant's license");
    assert_eq!(s.list_events(a, None).await.unwrap(), vec![e1.clone(), e2.clone()], "oldest first");
    assert_eq!(s.list_events(b, None).await.unwrap(), vec![e3.clone()]);
    let all = s.list_events(None, None).await.unwrap();
    assert!([&e1, &e2, &e3].iter().all(|e| all.contains(e)));
    assert!(matches!(s.add_event(e1.clone(), None).await, Err(StoreError::Conflict(_))), "an event id is unique");

    // Deferred writes: audit entries in order, last-seen times moved forward only, active activations only.
    let t = now();
    let act = created(s, activation(&la, &device_key(), fingerprint("seen"), t), 5).await;
    let gone = created(s, activation(&la, &device_key(), fingerprint("gone"), t), 5).await;
    assert!(s.deactivate(gone.id, t, "x".into(), audit(a, "conf.deactivate")).await.unwrap());
    let d1 = NewAudit { target: Some("one".into()), details: json!({"n": 1}), ..audit(a, "conf.deferred") };
    let d2 = NewAudit { target: Some("two".into()), ..audit(b, "conf.deferred") };
    let mark = audit_mark(s).await;
    let seen = t + Duration::minutes(5);
    s.write_deferred(vec![d1.clone(), d2.clone()], vec![(act.id, seen), (gone.id, seen)]).await.unwrap();
    let rows = s.audit_rows(None, mark, 100).await.unwrap();
    assert_eq!(rows.iter().map(|r| &r.entry).collect::<Vec<_>>(), vec![&d1, &d2], "as given, in order");
    assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![mark + 1, mark + 2]);
    assert_eq!(s.get_activation(a, act.id).await.unwrap().last_seen_at, seen);
    assert_eq!(s.get_activation(a, gone.id).await.unwrap().last_seen_at, t, "an inactive activation is not touched");
    s.write_deferred(vec![], vec![(act.id, t + Duration::minutes(1))]).await.unwrap();
    assert_eq!(s.get_activation(a, act.id).await.unwrap().last_seen_at, seen, "last seen never moves back");
    assert_not_audited(s, mark + 2).await;

    // Audit rows by tenant: only that tenant's, in sequence order; `after` and `limit` page through them.
    let mine = s.audit_rows(a, 0, 100_000).await.unwrap();
    assert!(mine.iter().all(|r| r.entry.tenant_id == a), "tenant-scoped rows");
    assert!(mine.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(mine.iter().any(|r| r.entry == d1) && !mine.iter().any(|r| r.entry == d2));
    assert!(mine.iter().any(|r| r.entry.action == "conf.event.add"));
    let theirs = s.audit_rows(b, 0, 100_000).await.unwrap();
    assert!(theirs.iter().all(|r| r.entry.tenant_id == b) && theirs.iter().any(|r| r.entry == d2));
    let one = s.audit_rows(None, mark, 1).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].entry, d1);
    let page = s.audit_rows(a, mine[0].seq, 2).await.unwrap();
    assert_eq!(page, mine[1..3].to_vec());
    assert!(s.audit_rows(None, audit_mark(s).await, 10).await.unwrap().is_empty());
}

/// Filtered reads: every condition holds together, a tenant never sees another's rows, `before` pages back from
/// the newest, and an action ending in `.` matches the actions it begins (and no other).
pub async fn filters(s: &S) {
    let fa = fixture(s, "conf-audit-filter-a").await;
    let fb = fixture(s, "conf-audit-filter-b").await;
    let (a, b) = (Some(fa.tenant), Some(fb.tenant));
    let t0 = now();
    let row = |tenant, actor: &str, action: &str, target: &str, mins: i64| NewAudit {
        at: t0 + Duration::minutes(mins),
        actor: actor.into(),
        target: Some(target.into()),
        ..audit(tenant, action)
    };
    let mark = audit_mark(s).await;
    let written = vec![
        row(a, "token:x", "license.suspend", "L1", 1),
        row(a, "token:y", "license.reinstate", "L1", 2),
        row(a, "token:x", "licenses.bulk", "L2", 3),
        row(b, "token:x", "license.suspend", "L1", 4),
        row(a, "token:x", "emergency.issue", "L1", 5),
        NewAudit { outcome: "LIMIT_REACHED".into(), ..row(a, "token:z", "réglage.été", "L3", 6) },
    ];
    s.write_deferred(written.clone(), vec![]).await.unwrap();
    let seq = |i: i64| mark + 1 + i;
    let find = |scope, f: AuditFilter| async move {
        s.find_audit(scope, AuditFilter { after: mark, ..f }, 100)
            .await
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect::<Vec<_>>()
    };
    let text = |v: &str| Some(v.to_string());
    assert_eq!(find(a, AuditFilter::default()).await, vec![seq(0), seq(1), seq(2), seq(4), seq(5)], "tenant a");
    assert_eq!(find(None, AuditFilter::default()).await, (0..6).map(seq).collect::<Vec<_>>(), "every tenant");
    let any = |t: &[&str]| AuditFilter { any_target: t.iter().map(|t| t.to_string()).collect(), ..Default::default() };
    assert_eq!(find(a, any(&["L2", "L3"])).await, vec![seq(2), seq(5)], "any of the targets");
    assert_eq!(find(b, any(&["L2", "L3"])).await, Vec::<i64>::new(), "within the tenant");
    let both = AuditFilter { action: text("license."), ..any(&["L1", "L2"]) };
    assert_eq!(find(a, both).await, vec![seq(0), seq(1)], "with the other conditions");
    assert_eq!(
        find(a, AuditFilter { action: text("réglage."), ..Default::default() }).await,
        vec![seq(5)],
        "a prefix of any script"
    );
    let outcomes =
        |o: &[&str]| AuditFilter { outcomes: o.iter().map(|o| o.to_string()).collect(), ..Default::default() };
    assert_eq!(find(a, outcomes(&["OK"])).await, vec![seq(0), seq(1), seq(2), seq(4)]);
    assert_eq!(find(a, outcomes(&["SEAT_LIMIT_REACHED", "LIMIT_REACHED"])).await, vec![seq(5)], "any of the outcomes");
    assert_eq!(find(a, AuditFilter { target: text("L1"), ..Default::default() }).await, vec![seq(0), seq(1), seq(4)]);
    assert_eq!(find(b, AuditFilter { target: text("L1"), ..Default::default() }).await, vec![seq(3)]);
    assert_eq!(
        find(a, AuditFilter { actor: text("token:x"), ..Default::default() }).await,
        vec![seq(0), seq(2), seq(4)]
    );
    assert_eq!(
        find(a, AuditFilter { action: text("license."), ..Default::default() }).await,
        vec![seq(0), seq(1)],
        "a prefix ends at its dot: licenses.bulk is not a license. action"
    );
    assert_eq!(find(a, AuditFilter { action: text("license"), ..Default::default() }).await, Vec::<i64>::new());
    assert_eq!(find(a, AuditFilter { action: text("license.suspend"), ..Default::default() }).await, vec![seq(0)]);
    let window = AuditFilter {
        since: Some(t0 + Duration::minutes(2)),
        until: Some(t0 + Duration::minutes(5)),
        ..Default::default()
    };
    assert_eq!(find(a, window.clone()).await, vec![seq(1), seq(2)], "since is inclusive, until exclusive");
    let all = AuditFilter { actor: text("token:x"), target: text("L1"), action: text("license."), ..window };
    assert_eq!(find(None, all).await, vec![seq(3)], "every condition together");
    assert_eq!(
        find(a, AuditFilter { target: text("L1%"), ..Default::default() }).await,
        Vec::<i64>::new(),
        "no wildcard"
    );
    // Newest first, paging back with `before`.
    let back = |before, limit| async move {
        let f = AuditFilter { before: Some(before), target: Some("L1".into()), ..Default::default() };
        s.find_audit(a, f, limit).await.unwrap().iter().map(|r| r.seq).collect::<Vec<_>>()
    };
    assert_eq!(back(i64::MAX, 2).await, vec![seq(4), seq(1)]);
    assert_eq!(back(seq(1), 2).await, vec![seq(0)]);
    let rows = s.find_audit(None, AuditFilter { after: mark, ..Default::default() }, 100).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.entry.clone()).collect::<Vec<_>>(), written, "the rows as written");
}

/// Audit appends from many tasks at once leave one unbroken chain with unique consecutive sequence numbers.
pub async fn concurrent_appends(s: &S) {
    let fx = fixture(s, "conf-audit-race").await;
    let mark = audit_mark(s).await;
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let store = s.clone();
            let entry = NewAudit { details: json!({"i": i}), ..audit(Some(fx.tenant), "conf.race.audit") };
            let tenant = fx.tenant;
            tokio::spawn(async move {
                if i % 2 == 0 {
                    store.write_deferred(vec![entry.clone(), entry], vec![]).await.unwrap();
                } else {
                    store.add_event(event(tenant, None, "race"), Some(entry)).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let rows = s.audit_rows(None, mark, 10_000).await.unwrap();
    assert_eq!(rows.len(), 16 * 2 + 16);
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (mark + 1..=mark + 48).collect::<Vec<_>>(), "unique, consecutive");
    let is: HashSet<i64> = rows.iter().map(|r| r.entry.details["i"].as_i64().unwrap()).collect();
    assert_eq!(is.len(), 32, "every task's entry is there");
    verify_chain(s).await;
}

/// The whole log: rows in sequence order from 1, each chained to the one before by `audit_hash`, the first to
/// 32 zero bytes; the head is the last row.
pub async fn verify_chain(s: &S) {
    let (mut prev, mut after, mut n) = (vec![0u8; 32], 0i64, 0usize);
    loop {
        let rows = s.audit_rows(None, after, 500).await.unwrap();
        for r in &rows {
            assert_eq!(r.seq, after + 1, "consecutive sequence numbers");
            assert_eq!(r.prev_hash, prev, "row {} links to the row before", r.seq);
            assert_eq!(r.hash, audit_hash(&r.prev_hash, r.seq, &r.entry).to_vec(), "row {} hash", r.seq);
            (prev, after) = (r.hash.clone(), r.seq);
            n += 1;
        }
        if rows.len() < 500 {
            break;
        }
    }
    assert!(n > 0, "the suite wrote audit rows");
    assert_eq!(s.audit_head().await.unwrap(), Some((after, prev)), "the head is the newest row");
}
