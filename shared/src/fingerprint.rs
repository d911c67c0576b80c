//! Device fingerprints as the license sees them: salted component hashes and the K-of-N match policy.
//!
//! Collecting components is the agent's job; this module holds what both sides agree on: the component kinds,
//! how a raw value becomes a hash (salted per product, so no raw hardware id leaves the machine and the same
//! machine looks different to two vendors), and how a bound fingerprint is compared with a current one.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A fingerprint component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ComponentKind {
    /// `/etc/machine-id`, IOPlatformUUID, MachineGuid.
    MachineId,
    /// Permanent MAC addresses of physical interfaces.
    Mac,
    /// CPU brand and physical core count.
    Cpu,
    /// Total memory rounded to a bucket.
    Memory,
    /// OS family.
    Os,
    Hostname,
    /// Root disk id.
    Disk,
    /// A pinned identity for containers (mounted machine id, identity file or env).
    Pinned,
}

impl ComponentKind {
    pub const ALL: [ComponentKind; 8] = [
        ComponentKind::MachineId,
        ComponentKind::Mac,
        ComponentKind::Cpu,
        ComponentKind::Memory,
        ComponentKind::Os,
        ComponentKind::Hostname,
        ComponentKind::Disk,
        ComponentKind::Pinned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ComponentKind::MachineId => "machine_id",
            ComponentKind::Mac => "mac",
            ComponentKind::Cpu => "cpu",
            ComponentKind::Memory => "memory",
            ComponentKind::Os => "os",
            ComponentKind::Hostname => "hostname",
            ComponentKind::Disk => "disk",
            ComponentKind::Pinned => "pinned",
        }
    }

    /// Bit of this kind in a compact mask (offline codes).
    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// One hashed component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Component {
    pub kind: ComponentKind,
    /// SHA-256 of the salted raw value, 64 lower-case hex digits.
    #[serde(with = "crate::encoding::hex32")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, pattern = "^[0-9a-f]{64}$"))]
    pub hash: [u8; 32],
}

impl Component {
    /// Hashes a raw component value with the product salt: `SHA-256("tessera/fp/v1" | salt | kind | value)`.
    pub fn hash_raw(kind: ComponentKind, product_salt: &[u8], raw: &str) -> Component {
        let mut h = Sha256::new();
        h.update(b"tessera/fp/v1\0");
        h.update((product_salt.len() as u32).to_be_bytes());
        h.update(product_salt);
        h.update(kind.as_str().as_bytes());
        h.update(b"\0");
        h.update(raw.as_bytes());
        Component { kind, hash: h.finalize().into() }
    }
}

/// A device fingerprint: at most one component per kind, sorted by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct Fingerprint(Vec<Component>);

impl Fingerprint {
    /// Builds a fingerprint; a later component of a kind already present replaces the earlier one.
    pub fn new(components: impl IntoIterator<Item = Component>) -> Self {
        let mut v: Vec<Component> = Vec::new();
        for c in components {
            match v.iter_mut().find(|x| x.kind == c.kind) {
                Some(slot) => *slot = c,
                None => v.push(c),
            }
        }
        v.sort_by_key(|c| c.kind);
        Fingerprint(v)
    }

    pub fn components(&self) -> &[Component] {
        &self.0
    }

    pub fn get(&self, kind: ComponentKind) -> Option<&Component> {
        self.0.iter().find(|c| c.kind == kind)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A commitment to the whole fingerprint (offline request codes carry a truncation of it).
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"tessera/fp-digest/v1\0");
        for c in &self.0 {
            h.update([c.kind as u8]);
            h.update(c.hash);
        }
        h.finalize().into()
    }
}

/// How a bound fingerprint is matched: at least `required` components equal, and every deal-breaker equal.
///
/// A bound fingerprint must carry a machine identity: a `machine_id`, or a `pinned` identity when
/// `allow_pinned` is set (containers; a pinned value is chosen by whoever runs the agent, so it is off by default).
/// A bound fingerprint without one, or without any component, never matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MatchPolicy {
    pub required: u8,
    #[serde(default)]
    pub deal_breakers: Vec<ComponentKind>,
    /// Whether a pinned identity (`ComponentKind::Pinned`) counts as the machine identity.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_pinned: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Default for MatchPolicy {
    /// Three matching components, and the machine id (or pinned identity) must not change; pinned identities
    /// are not accepted.
    fn default() -> Self {
        MatchPolicy {
            required: 3,
            deal_breakers: vec![ComponentKind::MachineId, ComponentKind::Pinned],
            allow_pinned: false,
        }
    }
}

impl MatchPolicy {
    pub fn deal_breaker_mask(&self) -> u8 {
        self.deal_breakers.iter().fold(0, |m, k| m | k.bit())
    }

    /// The policy of a compact code (`allow_pinned` is not part of the mask: set it from the code's own flag).
    pub fn from_mask(required: u8, mask: u8) -> Self {
        MatchPolicy {
            required,
            deal_breakers: ComponentKind::ALL.into_iter().filter(|k| mask & k.bit() != 0).collect(),
            allow_pinned: false,
        }
    }

    /// The component that identifies the machine in `fp` under this policy: the machine id, else the pinned
    /// identity when the policy allows pinned identities.
    pub fn identity_of(&self, fp: &Fingerprint) -> Option<ComponentKind> {
        if fp.get(ComponentKind::MachineId).is_some() {
            Some(ComponentKind::MachineId)
        } else if self.allow_pinned && fp.get(ComponentKind::Pinned).is_some() {
            Some(ComponentKind::Pinned)
        } else {
            None
        }
    }

    /// Why `fp` cannot be bound to a device under this policy, or `None` when it can: it must carry a machine
    /// identity, no pinned identity unless the policy allows one, and (a hardware fingerprint) at least
    /// `required` components. The server checks this before it binds a fingerprint.
    pub fn insufficient(&self, fp: &Fingerprint) -> Option<Insufficient> {
        let pinned = fp.get(ComponentKind::Pinned).is_some();
        if pinned && !self.allow_pinned {
            return Some(Insufficient::PinnedNotAllowed);
        }
        if self.identity_of(fp).is_none() {
            return Some(Insufficient::NoIdentity);
        }
        if !pinned && fp.components().len() < usize::from(self.required) {
            return Some(Insufficient::TooFewComponents);
        }
        None
    }
}

/// Why a fingerprint cannot be bound (see [`MatchPolicy::insufficient`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Insufficient {
    /// No `machine_id` (and no allowed pinned identity).
    NoIdentity,
    /// A pinned identity where the policy does not allow one.
    PinnedNotAllowed,
    /// A hardware fingerprint with fewer components than the policy requires.
    TooFewComponents,
}

/// Why a bound fingerprint can never match, whatever the current one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Unmatchable {
    /// The bound fingerprint has no components.
    Empty,
    /// The bound fingerprint has no machine identity under the policy.
    NoIdentity,
}

/// Outcome of comparing a bound fingerprint with the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MatchOutcome {
    pub matched: u8,
    /// Components the comparison needed (`required`, capped at the number bound, at least 1).
    pub required: u8,
    pub bound: u8,
    /// The first deal-breaker that was bound but differs or is missing now.
    pub broken_deal_breaker: Option<ComponentKind>,
    /// Set when the bound fingerprint can match nothing (empty, or without a machine identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmatchable: Option<Unmatchable>,
}

impl MatchOutcome {
    pub fn is_match(&self) -> bool {
        self.unmatchable.is_none() && self.broken_deal_breaker.is_none() && self.matched >= self.required
    }
}

/// Compares `current` with `bound` under `policy`. A deal-breaker only counts when it was bound. A bound
/// fingerprint that is empty or carries no machine identity under the policy never matches.
pub fn match_fingerprint(policy: &MatchPolicy, bound: &Fingerprint, current: &Fingerprint) -> MatchOutcome {
    let mut matched = 0u8;
    let mut broken = None;
    for b in bound.components() {
        let same = current.get(b.kind).is_some_and(|c| c.hash == b.hash);
        if same {
            matched = matched.saturating_add(1);
        } else if broken.is_none() && policy.deal_breakers.contains(&b.kind) {
            broken = Some(b.kind);
        }
    }
    let bound_n = u8::try_from(bound.components().len()).unwrap_or(u8::MAX);
    let unmatchable = if bound.is_empty() {
        Some(Unmatchable::Empty)
    } else if policy.identity_of(bound).is_none() {
        Some(Unmatchable::NoIdentity)
    } else {
        None
    };
    MatchOutcome {
        matched,
        required: policy.required.min(bound_n).max(1),
        bound: bound_n,
        broken_deal_breaker: broken,
        unmatchable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(values: &[(ComponentKind, &str)]) -> Fingerprint {
        Fingerprint::new(values.iter().map(|(k, v)| Component::hash_raw(*k, b"salt", v)))
    }

    #[test]
    fn k_of_n_with_deal_breakers() {
        use ComponentKind::*;
        let bound = fp(&[(MachineId, "m1"), (Mac, "aa"), (Cpu, "x"), (Memory, "16"), (Hostname, "h")]);
        let policy = MatchPolicy::default();
        assert!(match_fingerprint(&policy, &bound, &bound).is_match());

        // Two non-critical components changed: 3 of 5 still match.
        let moved = fp(&[(MachineId, "m1"), (Mac, "bb"), (Cpu, "x"), (Memory, "32"), (Hostname, "h")]);
        let out = match_fingerprint(&policy, &bound, &moved);
        assert_eq!((out.matched, out.required, out.is_match()), (3, 3, true));

        // Three changed: only 2 match.
        let worse = fp(&[(MachineId, "m1"), (Mac, "bb"), (Cpu, "y"), (Memory, "32"), (Hostname, "h")]);
        assert!(!match_fingerprint(&policy, &bound, &worse).is_match());

        // The machine id is a deal-breaker even when everything else matches.
        let other = fp(&[(MachineId, "m2"), (Mac, "aa"), (Cpu, "x"), (Memory, "16"), (Hostname, "h")]);
        let out = match_fingerprint(&policy, &bound, &other);
        assert_eq!(out.broken_deal_breaker, Some(MachineId));
        assert!(!out.is_match());
    }

    #[test]
    fn salt_separates_products() {
        let a = Component::hash_raw(ComponentKind::MachineId, b"product-a", "id");
        let b = Component::hash_raw(ComponentKind::MachineId, b"product-b", "id");
        assert_ne!(a.hash, b.hash);
    }

    #[test]
    fn mask_round_trip() {
        let p = MatchPolicy {
            required: 2,
            deal_breakers: vec![ComponentKind::Disk, ComponentKind::MachineId],
            allow_pinned: false,
        };
        let q = MatchPolicy::from_mask(2, p.deal_breaker_mask());
        assert_eq!(q.deal_breaker_mask(), p.deal_breaker_mask());
    }

    #[test]
    fn an_empty_binding_matches_nothing() {
        let empty = Fingerprint::default();
        let out = match_fingerprint(&MatchPolicy::default(), &empty, &empty);
        assert_eq!(out.unmatchable, Some(Unmatchable::Empty));
        assert!(!out.is_match());
        let any = fp(&[(ComponentKind::MachineId, "m1")]);
        assert!(!match_fingerprint(&MatchPolicy::default(), &empty, &any).is_match());
    }

    #[test]
    fn a_binding_without_machine_identity_matches_nothing() {
        use ComponentKind::*;
        // Only weak components: any machine with the same OS, CPU and memory would match.
        let weak = fp(&[(Os, "linux"), (Cpu, "x"), (Memory, "16")]);
        let out = match_fingerprint(&MatchPolicy::default(), &weak, &weak);
        assert_eq!(out.unmatchable, Some(Unmatchable::NoIdentity));
        assert!(!out.is_match());
        assert_eq!(MatchPolicy::default().insufficient(&weak), Some(Insufficient::NoIdentity));
    }

    #[test]
    fn pinned_identity_only_where_the_policy_allows_it() {
        let pinned = fp(&[(ComponentKind::Pinned, "pod-0001")]);
        let strict = MatchPolicy::default();
        assert!(!match_fingerprint(&strict, &pinned, &pinned).is_match());
        assert_eq!(strict.insufficient(&pinned), Some(Insufficient::PinnedNotAllowed));
        let open = MatchPolicy { allow_pinned: true, ..MatchPolicy::default() };
        assert!(match_fingerprint(&open, &pinned, &pinned).is_match());
        assert_eq!(open.insufficient(&pinned), None);
        let other = fp(&[(ComponentKind::Pinned, "pod-0002")]);
        assert!(!match_fingerprint(&open, &pinned, &other).is_match());
    }

    #[test]
    fn a_hardware_fingerprint_needs_the_required_components() {
        use ComponentKind::*;
        let p = MatchPolicy::default();
        assert_eq!(p.insufficient(&fp(&[(MachineId, "m"), (Os, "linux")])), Some(Insufficient::TooFewComponents));
        assert_eq!(p.insufficient(&fp(&[(MachineId, "m"), (Os, "linux"), (Cpu, "x")])), None);
    }

    #[test]
    fn allow_pinned_is_omitted_when_off() {
        let json = serde_json::to_string(&MatchPolicy::default()).unwrap();
        assert_eq!(json, r#"{"required":3,"deal_breakers":["machine_id","pinned"]}"#);
        let back: MatchPolicy = serde_json::from_str(&json).unwrap();
        assert_eq!(back, MatchPolicy::default());
        let open = MatchPolicy { allow_pinned: true, ..MatchPolicy::default() };
        let back: MatchPolicy = serde_json::from_str(&serde_json::to_string(&open).unwrap()).unwrap();
        assert!(back.allow_pinned);
    }
}
