//! The published snapshot and the decisions taken from it: the lock-free `check` fast path with its per-thread
//! copy, the decisions settled ahead per listed feature, attested checks, quota use, and refreshing.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use tessera_core::decision::{ClockGuard, EmergencyGrant, Environment, HardwareCount};
use tessera_core::encoding::b64url;
use tessera_core::envelope::Envelope;
use tessera_core::fingerprint::MatchOutcome;
use tessera_core::protocol::UsageEvent;
use tessera_core::{decide, decided_until, Decision, Domain, Inputs, License, Query, Reason};
use uuid::Uuid;

use super::load::{advance_trusted, load};
use super::Agent;
use crate::clock::{Clock, TrustedTime};
use crate::error::AgentError;
use crate::state::{self, Mode, Store};

/// Everything a check needs, precomputed and verified at open / refresh.
#[derive(Debug, Clone)]
pub(super) struct Snapshot {
    pub(super) license: Option<License>,
    pub(super) signatures_valid: bool,
    pub(super) fingerprint: Option<MatchOutcome>,
    pub(super) lease_expires_at: Option<DateTime<Utc>>,
    /// PER_CPU / PER_CORE: the processors the activation counted and those the machine has.
    pub(super) hardware: Option<HardwareCount>,
    /// Trusted time as of this snapshot, with the tolerance.
    pub(super) clock: ClockGuard,
    /// The observation `clock` was computed from (its trusted time is `clock.high_water`).
    pub(super) trusted: TrustedTime,
    /// The latest time the verified artefacts vouch for.
    pub(super) floor: Option<DateTime<Utc>>,
    pub(super) build_date: Option<DateTime<Utc>>,
    pub(super) emergency: Option<EmergencyGrant>,
    pub(super) emergency_serial: Option<u32>,
    /// Quota units used per feature id in its quota's current period (see [`Used`]).
    pub(super) usage: HashMap<String, Used>,
    pub(super) mode: Option<Mode>,
    pub(super) activation_id: Option<Uuid>,
    pub(super) key_hash: Option<[u8; 32]>,
    pub(super) heartbeat_interval_secs: u32,
    pub(super) problem: Option<String>,
    pub(super) pending_usage: u64,
    pub(super) pending_requests: usize,
    /// The vendor-signed artefacts the license was verified from, for attested answers.
    pub(super) evidence: Option<Arc<Evidence>>,
    /// The host's DNS domain, for DOMAIN restrictions (reported by the host itself: advisory).
    pub(super) domain: Option<Arc<str>>,
    /// The country the server's GeoIP database placed this device in when it signed the activation token, for
    /// GEOGRAPHIC restrictions offline (`None`: unknown, which never denies).
    pub(super) country: Option<Arc<str>>,
    /// `check`'s answers worked out ahead, one per listed feature in the license's order ([`Snapshot::settle`]).
    pub(super) settled: Vec<Settled>,
}

/// Units of a feature's quota used in the period that holds trusted time as the snapshot was made (uses dated
/// later included), and when that period ends (`None`: a lifetime total). From `until` on, the period's own uses no
/// longer count; those dated at or after `until` (`ahead`: made while the clock was set forward) still do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Used {
    pub(super) units: u64,
    pub(super) until: Option<DateTime<Utc>>,
    pub(super) ahead: u64,
}

impl Used {
    /// The units that count at `at`.
    #[inline]
    pub(super) fn at(&self, at: DateTime<Utc>) -> u64 {
        if self.until.is_some_and(|end| at >= end) {
            self.ahead
        } else {
            self.units
        }
    }

    /// Adds `amount` used at `at`, in the period that ends at `until` (a use past the old period starts anew, from
    /// the uses already dated in it or later).
    pub(super) fn add(&mut self, amount: u64, at: DateTime<Utc>, until: Option<DateTime<Utc>>) {
        self.units = self.at(at).saturating_add(amount);
        self.until = until;
    }
}

/// A feature id's length and last seven bytes in one word: ids of one license often share a length and a prefix
/// (`feature_1`, `feature_2`), and a word compares in one instruction where bytes take a call.
#[inline]
fn id_tag(id: &str) -> u64 {
    let bytes = id.as_bytes();
    let n = bytes.len();
    let tail = if n >= 8 { word_at(bytes, n - 8) >> 8 } else { bytes.iter().fold(0, |w, &b| (w << 8) | u64::from(b)) };
    tail | (n as u64) << 56
}

/// The eight bytes of `bytes` from `at` as a word (zero past the end; callers stay inside).
#[inline]
fn word_at(bytes: &[u8], at: usize) -> u64 {
    bytes.get(at..at + 8).and_then(|w| w.try_into().ok()).map_or(0, u64::from_le_bytes)
}

/// Whether two feature ids are the same, without a call for the common lengths (8 to 16 bytes: two words).
#[inline]
fn same_id(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if (8..=16).contains(&n) {
        return word_at(a, 0) == word_at(b, 0) && word_at(a, n - 8) == word_at(b, n - 8);
    }
    a == b
}

/// A plain check's decision for one listed feature, taken at trusted time when the snapshot was published. Nothing
/// but the clock changes while a snapshot stands, so the decision stands from trusted time until `until`, the next
/// instant any of its time tests could turn ([`tessera_core::decided_until`]).
#[derive(Debug, Clone)]
pub(super) struct Settled {
    /// [`id_tag`] of `feature`, compared before its bytes.
    tag: u64,
    feature: Box<str>,
    until: Option<DateTime<Utc>>,
    /// Boxed: checks scan the ids, and the entries stay small.
    decision: Box<Decision>,
}

/// The vendor-signed artefacts behind a decision, as cached (verified at load). An application that embeds
/// the vendor's public key verifies them itself (agent/README.md, "Verifying the daemon's answers").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Evidence {
    Online {
        /// The armored license file.
        license_file: String,
        /// The activation token (compact envelope): binds the license to this device's public key.
        activation_token: String,
        /// The last signed heartbeat answer (compact envelope of kind `server-response`), when there was one:
        /// it carries the license status (a suspension or revocation) and the server's time.
        #[serde(skip_serializing_if = "Option::is_none")]
        last_server_answer: Option<String>,
    },
    Offline {
        /// The device-signed offline request (base64url of its exact bytes).
        offline_request: String,
        /// The vendor's response code answering it.
        offline_response: String,
    },
}

/// An answer to a local check that the asking application can verify without trusting whoever answered: the
/// decision, signed by the device key over the application's challenge, and the vendor-signed artefacts that
/// bind that device key to the license.
#[derive(Debug, Clone, Serialize)]
pub struct AttestedCheck {
    pub decision: Decision,
    /// The signed answer: a compact envelope of kind `local-answer` whose payload is [`AttestedPayload`] JSON,
    /// signed by the device key (`evidence` names it).
    pub attestation: String,
    /// `None` when nothing is activated (the decision then denies).
    pub evidence: Option<Evidence>,
    pub device_public_key: String,
}

/// What a local answer's signature covers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AttestedPayload {
    /// The application's challenge, base64url, echoed.
    pub challenge: String,
    pub feature: String,
    pub allowed: bool,
    pub reason: Reason,
    /// The time the decision was made at (the later of the clock and trusted time).
    pub decided_at: DateTime<Utc>,
    pub product_id: Uuid,
    pub license_id: Option<Uuid>,
    pub activation_id: Option<Uuid>,
}

impl Snapshot {
    #[inline]
    pub(super) fn decide(&self, clock: &dyn Clock, now: DateTime<Utc>, feature: Option<&str>, amount: u64) -> Decision {
        self.decide_with(self.guard(clock, now), now, feature, amount)
    }

    /// The clock guard a decision at `now` is taken with: trusted time as of the snapshot, and when the wall clock
    /// is behind it (rare on an honest machine), the time that passed since on the boot clock, so a clock held back
    /// cannot stop time within this process either. Decisions are taken at `now.max(guard.high_water)`.
    #[inline]
    pub(super) fn guard(&self, clock: &dyn Clock, now: DateTime<Utc>) -> ClockGuard {
        let mut guard = self.clock;
        if now < guard.high_water {
            guard.high_water = guard.high_water.max(self.trusted.observe(now, clock.boot()).trusted);
        }
        guard
    }

    #[inline]
    pub(super) fn decide_with(
        &self,
        guard: ClockGuard,
        now: DateTime<Utc>,
        feature: Option<&str>,
        amount: u64,
    ) -> Decision {
        let used = feature.map_or(0, |f| self.used(f, now.max(guard.high_water)));
        decide(&self.inputs(now, guard), &Query { feature, amount, used })
    }

    /// [`Snapshot::decide`] for a plain check: the settled decision while it stands.
    #[inline]
    fn check(&self, clock: &dyn Clock, now: DateTime<Utc>, feature: &str) -> Decision {
        let tag = id_tag(feature);
        match self.settled.iter().find(|s| s.tag == tag && same_id(&s.feature, feature)) {
            Some(s) if now >= self.clock.high_water && s.until.is_none_or(|u| now < u) => *s.decision,
            _ => self.decide_now(clock, now, feature),
        }
    }

    /// A check that no settled decision answers (kept out of line, so the settled path stays small).
    #[inline(never)]
    fn decide_now(&self, clock: &dyn Clock, now: DateTime<Utc>, feature: &str) -> Decision {
        self.decide(clock, now, Some(feature), 0)
    }

    /// Works out `check`'s answer for every listed feature at trusted time (see [`Settled`]). Every snapshot is
    /// settled as it is published, so no answer outlives the facts it was decided from.
    pub(super) fn settle(mut self) -> Snapshot {
        let at = self.clock.high_water;
        let settled = self.license.iter().flat_map(|l| &l.features).map(|f| {
            let inputs = self.inputs(at, self.clock);
            let query = Query { feature: Some(&f.id), amount: 0, used: self.used(&f.id, at) };
            Settled {
                tag: id_tag(&f.id),
                feature: f.id.as_str().into(),
                until: decided_until(&inputs, &query),
                decision: Box::new(decide(&inputs, &query)),
            }
        });
        self.settled = settled.collect();
        self
    }

    /// Units of `feature` used in its quota's period that holds `at`.
    pub(super) fn used(&self, feature: &str, at: DateTime<Utc>) -> u64 {
        if self.usage.is_empty() {
            return 0;
        }
        self.usage.get(feature).map_or(0, |u| u.at(at))
    }

    /// When the period of `feature`'s quota that holds `at` ends (`None`: a lifetime total, or no quota).
    pub(super) fn period_end(&self, feature: &str, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let l = self.license.as_ref()?;
        l.quota_window(l.feature(feature)?, at).map(|w| w.end)
    }

    fn inputs(&self, now: DateTime<Utc>, clock: ClockGuard) -> Inputs<'_> {
        Inputs {
            now,
            license: self.license.as_ref(),
            signatures_valid: self.signatures_valid,
            fingerprint: self.fingerprint,
            lease_expires_at: self.lease_expires_at,
            clock: Some(clock),
            build_date: self.build_date,
            environment: Environment {
                domain: self.domain.as_deref(),
                country: self.country.as_deref(),
                ..Environment::default()
            },
            emergency: self.emergency,
            hardware: self.hardware,
        }
    }
}

/// Source of snapshot generations, unique across all agents in the process.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

pub(super) fn next_generation() -> u64 {
    GENERATIONS.fetch_add(1, Ordering::Relaxed)
}

thread_local! {
    /// Per-thread copy of the last snapshot `check` used, keyed by its generation.
    static CHECK_CACHE: RefCell<Option<(u64, Arc<Snapshot>)>> = const { RefCell::new(None) };
}

/// Largest amount one usage event may carry (the server refuses more).
pub const MAX_USAGE_AMOUNT: u64 = 1 << 40;

impl Agent {
    pub(super) fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.snapshot.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the snapshot; call with the store lock held so updates do not interleave.
    pub(super) fn publish(&self, snap: Snapshot) {
        let snap = Arc::new(snap.settle());
        let mut guard = self.inner.snapshot.write().unwrap_or_else(|p| p.into_inner());
        *guard = snap;
        // After the snapshot: a reader that sees the new generation also sees the new snapshot.
        self.inner.generation.store(next_generation(), Ordering::Release);
    }

    /// Re-reads and re-verifies the state. If that fails, checks deny from then on (fail closed): the state on
    /// disk is no longer something this process has verified.
    pub(super) fn reload_locked(&self, store: &mut Store) -> Result<(), AgentError> {
        match load(
            &self.inner.config,
            store,
            &self.inner.device_public,
            &self.inner.identity.fingerprint,
            self.inner.domain.clone(),
        ) {
            Ok(snap) => {
                self.publish(snap);
                Ok(())
            }
            Err(e) => {
                let mut denied = (*self.snapshot()).clone();
                denied.license = None;
                denied.emergency = None;
                denied.signatures_valid = false;
                denied.problem = Some(format!("the state file could not be read back: {e}"));
                self.publish(denied);
                Err(e)
            }
        }
    }

    /// Re-reads the state file (e.g. after another process applied a code) and re-verifies everything.
    pub fn refresh(&self) -> Result<(), AgentError> {
        let mut store = self.store();
        self.reload_locked(&mut store)
    }

    /// Is `feature` allowed now? Served from memory.
    #[inline]
    pub fn check(&self, feature: &str) -> Decision {
        let clock = &*self.inner.config.clock;
        let now = clock.now();
        let generation = self.inner.generation.load(Ordering::Acquire);
        // Lock-free fast path: this thread's copy of the current snapshot (one atomic load, no shared write). The
        // copy is busy only when a check runs inside a check (a clock that checks): that one reads the shared one.
        CHECK_CACHE.with(|cell| {
            let Ok(mut cache) = cell.try_borrow_mut() else {
                return self.snapshot().check(clock, now, feature);
            };
            if let Some((g, snap)) = cache.as_ref() {
                if *g == generation {
                    return snap.check(clock, now, feature);
                }
            }
            let snap = self.snapshot();
            let d = snap.check(clock, now, feature);
            *cache = Some((generation, snap));
            d
        })
    }

    /// [`Agent::check`], answered so that the asking application can verify it: the decision signed by the
    /// device key over `challenge` (16 to 64 bytes the application chose at random), with the vendor-signed
    /// artefacts it was decided from. What the application checks is in agent/README.md.
    pub fn check_attested(&self, feature: &str, challenge: &[u8]) -> Result<AttestedCheck, AgentError> {
        if !(16..=64).contains(&challenge.len()) {
            return Err(AgentError::Config("a challenge is 16 to 64 random bytes".into()));
        }
        let clock = &*self.inner.config.clock;
        let snap = self.snapshot();
        let now = clock.now();
        let decision = snap.decide(clock, now, Some(feature), 0);
        let payload = AttestedPayload {
            challenge: b64url(challenge),
            feature: feature.to_string(),
            allowed: decision.allowed,
            reason: decision.reason,
            decided_at: decision.facts.trusted_time.map_or(now, |t| t.max(now)),
            product_id: self.inner.config.product_id,
            license_id: snap.license.as_ref().map(|l| l.id),
            activation_id: snap.activation_id,
        };
        let bytes = serde_json::to_vec(&payload).map_err(AgentError::internal)?;
        let attestation = Envelope::seal(&self.inner.device, Domain::LocalAnswer, bytes).to_compact();
        Ok(AttestedCheck {
            decision,
            attestation,
            evidence: snap.evidence.as_deref().cloned(),
            device_public_key: b64url(&self.inner.device_public),
        })
    }

    /// Is the license usable at all (no particular feature)?
    pub fn check_license(&self) -> Decision {
        let clock = &*self.inner.config.clock;
        self.snapshot().decide(clock, clock.now(), None, 0)
    }

    /// Uses `amount` units of `feature`'s quota. When allowed, the usage event (with an idempotency id) is in the
    /// state file's queue before this returns; heartbeats send it to the server exactly once. If the state file
    /// cannot be written, the use is denied (SIGNATURE_INVALID; the cause is logged) rather than left unrecorded.
    pub fn consume(&self, feature: &str, amount: u64) -> Decision {
        match self.try_consume(feature, amount) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, feature, "usage could not be recorded; denying");
                Decision { allowed: false, reason: Reason::SignatureInvalid, facts: Default::default() }
            }
        }
    }

    /// [`Agent::consume`] that reports a state-file failure as an error.
    pub fn try_consume(&self, feature: &str, amount: u64) -> Result<Decision, AgentError> {
        let mut store = self.store();
        let now = self.inner.config.clock.now();
        let snap = self.snapshot();
        if amount > MAX_USAGE_AMOUNT {
            // No quota is this large; a bigger single record is a caller bug, not something to store.
            return Ok(Decision { allowed: false, reason: Reason::QuotaExceeded, facts: Default::default() });
        }
        // One guard for the decision and the record: the use is recorded at the time it was decided at (the later
        // of the clock and trusted time), so it counts in the quota period the decision counted it in.
        let guard = snap.guard(&*self.inner.config.clock, now);
        let at = now.max(guard.high_water);
        let mut d = snap.decide_with(guard, now, Some(feature), amount);
        if !d.allowed || amount == 0 {
            return Ok(d);
        }
        let ev = UsageEvent { id: Uuid::now_v7(), feature: feature.to_string(), amount, recorded_at: at };
        let clock = &*self.inner.config.clock;
        let trusted = store.tx(|tx| {
            state::enqueue_usage(tx, &ev)?;
            advance_trusted(tx, clock, snap.floor, Duration::zero())
        })?;
        let mut next = (*snap).clone();
        let until = snap.period_end(feature, at);
        next.usage.entry(feature.to_string()).or_default().add(amount, at, until);
        next.pending_usage += 1;
        next.clock.high_water = trusted.trusted;
        next.trusted = trusted;
        self.publish(next);
        if let Some(used) = d.facts.used.as_mut() {
            *used = used.saturating_add(amount);
        }
        if let Some(rem) = d.facts.remaining.as_mut() {
            *rem = rem.saturating_sub(i64::try_from(amount).unwrap_or(i64::MAX)).max(0);
        }
        Ok(d)
    }

    /// Advances trusted time by the time elapsed since it was last recorded, and records it.
    pub fn touch_clock(&self) -> Result<(), AgentError> {
        let mut store = self.store();
        let snap = self.snapshot();
        let trusted = store.tx(|tx| advance_trusted(tx, &*self.inner.config.clock, snap.floor, Duration::zero()))?;
        if trusted != snap.trusted {
            let mut next = (*snap).clone();
            next.clock.high_water = trusted.trusted;
            next.trusted = trusted;
            self.publish(next);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{id_tag, same_id};

    #[test]
    fn ids_compare_by_every_byte_at_every_length() {
        // Ids of every length up to 40 that differ in one byte at each position, and ids that differ in length.
        for n in 1..=40usize {
            let base: String = (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
            assert!(same_id(&base, &base.clone()));
            assert_eq!(id_tag(&base), id_tag(&base.clone()));
            for at in 0..n {
                let mut other = base.clone().into_bytes();
                other[at] = b'_';
                let other = String::from_utf8(other).unwrap_or_default();
                assert!(!same_id(&base, &other), "{base:?} vs {other:?}");
                assert!(!same_id(&other, &base), "{other:?} vs {base:?}");
            }
            let longer = format!("{base}x");
            assert!(!same_id(&base, &longer) && !same_id(&longer, &base));
            assert_ne!(id_tag(&base), id_tag(&longer));
        }
        assert!(same_id("", ""));
        assert_ne!(id_tag("feature_1"), id_tag("feature_2"));
    }
}
