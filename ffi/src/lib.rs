//! libtessera: the agent library behind a small, stable C ABI, for applications not written in Rust.
//!
//! The application passes the vendor's keyset from its own code (the strongest mode: the trust anchor lives in
//! the vendor's binary, not in a file the customer can swap). Feature checks are local and answer without the
//! network; activation, heartbeats and deactivation talk to the server on a runtime the handle owns.
//!
//! The contract, stated once for every function (`include/tessera.h` repeats it):
//! - **Memory.** Every `char *` returned is the caller's and is freed with [`tessera_string_free`]. Every pointer
//!   passed in is borrowed for the call only. A [`TesseraAgent`] is freed with [`tessera_close`].
//! - **Errors.** Functions return [`TesseraStatus::Ok`] or an error status; [`tessera_last_error`] then holds a
//!   message (what went wrong and what to do) for the calling thread until its next call into the library.
//!   A server refusal also leaves its stable code (e.g. `SEAT_LIMIT_REACHED`) in [`tessera_last_server_code`].
//! - **Panics** never cross the boundary: one is caught and returned as [`TesseraStatus::Internal`].
//! - **Threads.** A handle is `Send + Sync`: any number of threads may call it at once, except `tessera_close`,
//!   which must be the last call on it.
//! - **Versions.** [`TESSERA_ABI_VERSION`] changes when a signature or a struct's layout does; callers put the
//!   version they were compiled against in [`TesseraOptions::abi_version`], and an older or newer one is refused.
//!
//! `unsafe` in this crate is confined to reading the caller's pointers and handing out and taking back owned
//! ones; each block says why it is sound.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tessera_agent::{Agent, AgentConfig, AgentError, Decision, IdentityMode, Reason};
use tessera_core::PublicKeyset;
use uuid::Uuid;

/// The ABI this library implements. Put it in [`TesseraOptions::abi_version`].
pub const TESSERA_ABI_VERSION: u32 = 1;

/// What a call did.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TesseraStatus {
    Ok = 0,
    /// A null or non-UTF-8 argument, a malformed keyset or product id, options of another ABI version.
    InvalidArgument = 1,
    /// The state file cannot be used (permissions, damage, written by a newer agent).
    State = 2,
    /// No server is configured: use the offline flow (request and response codes).
    NoServer = 3,
    /// The server cannot be reached: licensed features keep working offline until the lease ends.
    Unreachable = 4,
    /// The server refused: tessera_last_server_code() says why (e.g. SEAT_LIMIT_REACHED).
    ServerRefused = 5,
    /// The server's answer failed verification against the keyset.
    UntrustedResponse = 6,
    /// The license key is malformed.
    BadKey = 7,
    /// A request, response or emergency code is malformed, mistyped or not for this device.
    BadCode = 8,
    /// The machine is not activated.
    NotActivated = 9,
    /// The device identity could not be read.
    Identity = 10,
    /// The agent refused (e.g. a quota would be overdrawn, a code already used).
    Refused = 11,
    /// The configuration is refused.
    Config = 12,
    /// A bug: please report it (a caught panic lands here too).
    Internal = 13,
}

/// Why a check allowed or denied; the same codes as the agent's (`tessera_reason_name` spells them).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TesseraReason {
    Valid = 0,
    InGrace = 1,
    EmergencyAccess = 2,
    NotActivated = 3,
    SignatureInvalid = 4,
    ClockTampered = 5,
    Revoked = 6,
    Suspended = 7,
    Expired = 8,
    NotYetValid = 9,
    FingerprintMismatch = 10,
    LeaseExpired = 11,
    Restricted = 12,
    MaintenanceExpired = 13,
    NotEntitled = 14,
    FeatureDisabled = 15,
    FeatureExpired = 16,
    QuotaExceeded = 17,
    HardwareExceedsLicense = 18,
}

impl From<Reason> for TesseraReason {
    fn from(r: Reason) -> Self {
        match r {
            Reason::Valid => TesseraReason::Valid,
            Reason::InGrace => TesseraReason::InGrace,
            Reason::EmergencyAccess => TesseraReason::EmergencyAccess,
            Reason::NotActivated => TesseraReason::NotActivated,
            Reason::SignatureInvalid => TesseraReason::SignatureInvalid,
            Reason::ClockTampered => TesseraReason::ClockTampered,
            Reason::Revoked => TesseraReason::Revoked,
            Reason::Suspended => TesseraReason::Suspended,
            Reason::Expired => TesseraReason::Expired,
            Reason::NotYetValid => TesseraReason::NotYetValid,
            Reason::FingerprintMismatch => TesseraReason::FingerprintMismatch,
            Reason::LeaseExpired => TesseraReason::LeaseExpired,
            Reason::Restricted => TesseraReason::Restricted,
            Reason::MaintenanceExpired => TesseraReason::MaintenanceExpired,
            Reason::NotEntitled => TesseraReason::NotEntitled,
            Reason::FeatureDisabled => TesseraReason::FeatureDisabled,
            Reason::FeatureExpired => TesseraReason::FeatureExpired,
            Reason::QuotaExceeded => TesseraReason::QuotaExceeded,
            Reason::HardwareExceedsLicense => TesseraReason::HardwareExceedsLicense,
        }
    }
}

/// A check's answer. Times are Unix seconds, 0 when the license has none; counts are -1 when they do not apply.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TesseraDecision {
    pub allowed: bool,
    pub reason: TesseraReason,
    /// When the license ends (0: perpetual).
    pub expires_at: i64,
    /// When its grace period ends (0: none).
    pub grace_ends_at: i64,
    /// When this device's lease ends unless a heartbeat renews it (0: no lease).
    pub lease_expires_at: i64,
    /// When the feature's own entitlement ends (0: with the license).
    pub feature_expires_at: i64,
    /// When the emergency code in force ends (0: none).
    pub emergency_expires_at: i64,
    /// The feature's quota (-1: unlimited or not metered).
    pub limit: i64,
    /// Units used so far (-1: not metered).
    pub used: i64,
    /// Units left (-1: unlimited or not metered).
    pub remaining: i64,
}

fn unix(t: Option<DateTime<Utc>>) -> i64 {
    t.map_or(0, |t| t.timestamp())
}

impl From<Decision> for TesseraDecision {
    fn from(d: Decision) -> Self {
        let f = d.facts;
        TesseraDecision {
            allowed: d.allowed,
            reason: d.reason.into(),
            expires_at: unix(f.expires_at),
            grace_ends_at: unix(f.grace_ends_at),
            lease_expires_at: unix(f.lease_expires_at),
            feature_expires_at: unix(f.feature_expires_at),
            emergency_expires_at: unix(f.emergency_expires_at),
            limit: f.limit.unwrap_or(-1),
            used: f.used.map_or(-1, |u| i64::try_from(u).unwrap_or(i64::MAX)),
            remaining: f.remaining.unwrap_or(-1),
        }
    }
}

/// How to open an agent. Zero-initialise it, set `abi_version` to `TESSERA_ABI_VERSION`, then the fields.
#[repr(C)]
pub struct TesseraOptions {
    /// TESSERA_ABI_VERSION as the caller was compiled with it.
    pub abi_version: u32,
    /// The SQLite state file (created with mode 0600). Required.
    pub state_path: *const c_char,
    /// The vendor's public keyset, the JSON `tessera-server keys export` prints. Required. Compile it into the
    /// application: a keyset read from a file the customer controls can be swapped for their own.
    pub keyset_json: *const c_char,
    /// The product's id (a UUID). Required.
    pub product_id: *const c_char,
    /// The license server's base URL; NULL: offline only (request and response codes).
    pub server_url: *const c_char,
    /// Sent as activation metadata; may be NULL.
    pub app_version: *const c_char,
    /// NAMED_USER licenses: whose seat this is; may be NULL.
    pub user_id: *const c_char,
    /// A pinned device identity instead of the hardware fingerprint (containers; the license's policy must
    /// allow it); NULL: the hardware.
    pub pinned_identity: *const c_char,
    /// How far behind trusted time the clock may be before checks deny with CLOCK_TAMPERED; 0: one hour.
    pub clock_tolerance_secs: i64,
    /// Non-zero: renew the lease and send usage from a background thread the handle owns, as long as it is open.
    /// (A byte, not `bool`, so that a binding which marshals booleans its own way cannot hand over an invalid one.)
    pub background_heartbeats: u8,
    /// When this build of the application was made, in Unix seconds; 0: not given. With it, a perpetual
    /// license's maintenance window is enforced (MAINTENANCE_EXPIRED for a build newer than the window).
    pub build_date: i64,
}

/// An open agent (opaque). Made by [`tessera_open`], freed by [`tessera_close`].
pub struct TesseraAgent {
    agent: Agent,
    runtime: tokio::runtime::Runtime,
    heartbeats: Option<tokio::task::JoinHandle<()>>,
}

struct LastError {
    message: CString,
    server_code: Option<CString>,
}

thread_local! {
    static LAST_ERROR: RefCell<Option<LastError>> = const { RefCell::new(None) };
}

fn c_string(s: &str) -> CString {
    // A message never holds NUL; if one did, it becomes a space rather than cutting the text short.
    CString::new(s.replace('\0', " ")).unwrap_or_default()
}

// The contract says a handle may be shared by threads: the compiler holds us to it.
const _: () = {
    const fn shared_by_threads<T: Send + Sync>() {}
    shared_by_threads::<TesseraAgent>();
};

// `try_with`: during the thread's teardown the slot is gone, and a message is dropped rather than a panic raised.
fn set_error(message: &str, server_code: Option<&str>) {
    let _ = LAST_ERROR.try_with(|e| {
        *e.borrow_mut() = Some(LastError { message: c_string(message), server_code: server_code.map(c_string) })
    });
}

fn clear_error() {
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = None);
}

/// A failure: its status, with its message kept for `tessera_last_error`.
struct Failure(TesseraStatus);

impl From<AgentError> for Failure {
    fn from(e: AgentError) -> Self {
        let status = match &e {
            AgentError::StateIo { .. } | AgentError::StateCorrupt { .. } | AgentError::StateTooNew { .. } => {
                TesseraStatus::State
            }
            AgentError::NoServer => TesseraStatus::NoServer,
            AgentError::Unreachable { .. } => TesseraStatus::Unreachable,
            AgentError::Server { .. } => TesseraStatus::ServerRefused,
            AgentError::UntrustedResponse(_) => TesseraStatus::UntrustedResponse,
            AgentError::BadKey(_) => TesseraStatus::BadKey,
            AgentError::BadCode(_) => TesseraStatus::BadCode,
            AgentError::NotActivated => TesseraStatus::NotActivated,
            AgentError::Identity(_) => TesseraStatus::Identity,
            AgentError::Refused(_) => TesseraStatus::Refused,
            AgentError::Config(_) => TesseraStatus::Config,
            AgentError::Internal(_) => TesseraStatus::Internal,
        };
        set_error(&e.to_string(), e.server_code().map(|c| c.as_str()));
        Failure(status)
    }
}

fn invalid(message: impl AsRef<str>) -> Failure {
    set_error(message.as_ref(), None);
    Failure(TesseraStatus::InvalidArgument)
}

/// Runs `f` with the thread's last error cleared, catching any panic: the one way every entry point returns.
fn guarded(f: impl FnOnce() -> Result<(), Failure>) -> TesseraStatus {
    clear_error();
    unguarded_errors(f)
}

/// As [`guarded`], but leaves the thread's last error as it was (for `tessera_close`, which reports nothing and
/// may run, from a finaliser, between a failed call and the caller reading its message).
fn unguarded_errors(f: impl FnOnce() -> Result<(), Failure>) -> TesseraStatus {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => TesseraStatus::Ok,
        Ok(Err(Failure(status))) => status,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            set_error(&format!("internal error: {what}. Please report this to the vendor"), None);
            TesseraStatus::Internal
        }
    }
}

/// A required string argument.
///
/// # Safety
/// `p` is null or points to a NUL-terminated string that stays valid for `'a`.
unsafe fn text<'a>(p: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if p.is_null() {
        return Err(invalid(format!("{what} is NULL: pass a NUL-terminated UTF-8 string")));
    }
    // SAFETY: non-null, and the caller promises a NUL-terminated string valid for 'a.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map_err(|_| invalid(format!("{what} is not UTF-8: pass UTF-8 text")))
}

/// An optional string argument (NULL: none).
///
/// # Safety
/// As [`text`].
unsafe fn opt_text<'a>(p: *const c_char, what: &str) -> Result<Option<&'a str>, Failure> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller's promise, passed on.
    unsafe { text(p, what) }.map(Some)
}

/// The handle behind a caller's pointer.
///
/// # Safety
/// `p` is null or a pointer `tessera_open` returned that `tessera_close` has not freed.
unsafe fn handle<'a>(p: *const TesseraAgent) -> Result<&'a TesseraAgent, Failure> {
    // SAFETY: null is refused by `as_ref`; otherwise the caller promises a live handle.
    unsafe { p.as_ref() }.ok_or_else(|| invalid("the agent handle is NULL: open one with tessera_open"))
}

/// Writes `value` through an out-pointer, refusing a null one.
///
/// # Safety
/// `out` is null or valid for a write of `T`.
unsafe fn put<T>(out: *mut T, value: T, what: &str) -> Result<(), Failure> {
    if out.is_null() {
        return Err(invalid(format!("{what} is NULL: pass where to put the result")));
    }
    // SAFETY: non-null, and the caller promises it is valid for a write of T (unaligned writes are not asked of us:
    // C gives aligned storage for its own types).
    unsafe { out.write(value) };
    Ok(())
}

/// Hands a string to the caller through `out` (NULL: the caller does not want it).
///
/// # Safety
/// `out` is null or valid for a write of a pointer.
unsafe fn put_string(out: *mut *mut c_char, value: &str) -> Result<(), Failure> {
    if out.is_null() {
        return Ok(());
    }
    // SAFETY: as `put`; ownership of the string passes to the caller, who frees it with tessera_string_free.
    unsafe { out.write(c_string(value).into_raw()) };
    Ok(())
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, Failure> {
    serde_json::to_string(v).map_err(|e| {
        set_error(&format!("internal error: {e}. Please report this to the vendor"), None);
        Failure(TesseraStatus::Internal)
    })
}

/// The ABI version this library implements (compare with the TESSERA_ABI_VERSION you compiled against).
#[no_mangle]
pub extern "C" fn tessera_abi_version() -> u32 {
    TESSERA_ABI_VERSION
}

/// Opens (or creates) the agent's state and verifies every cached artefact; `*out` receives the handle.
///
/// # Safety
/// `options` points to a `TesseraOptions` whose strings are NULL or NUL-terminated; `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn tessera_open(options: *const TesseraOptions, out: *mut *mut TesseraAgent) -> TesseraStatus {
    guarded(|| {
        if out.is_null() {
            return Err(invalid("out is NULL: pass where to put the agent handle"));
        }
        // SAFETY: out is non-null and the caller promises it is writable; it is NULL until a handle is made.
        unsafe { out.write(std::ptr::null_mut()) };
        // SAFETY: null is refused by `as_ref`; otherwise the caller promises a valid TesseraOptions.
        let o = unsafe { options.as_ref() }.ok_or_else(|| invalid("options is NULL: pass a TesseraOptions"))?;
        if o.abi_version != TESSERA_ABI_VERSION {
            return Err(invalid(format!(
                "this libtessera implements ABI {TESSERA_ABI_VERSION}, the caller was built for ABI {}: rebuild \
                 the application against this library's tessera.h",
                o.abi_version
            )));
        }
        // SAFETY: the caller promises each pointer is NULL or a NUL-terminated string.
        let state_path = unsafe { text(o.state_path, "state_path") }?;
        // SAFETY: as this function's safety section requires of its caller.
        let keyset_json = unsafe { text(o.keyset_json, "keyset_json") }?;
        // SAFETY: as this function's safety section requires of its caller.
        let product_id = unsafe { text(o.product_id, "product_id") }?;
        // SAFETY: as this function's safety section requires of its caller.
        let server_url = unsafe { opt_text(o.server_url, "server_url") }?;
        // SAFETY: as this function's safety section requires of its caller.
        let app_version = unsafe { opt_text(o.app_version, "app_version") }?;
        // SAFETY: as this function's safety section requires of its caller.
        let user_id = unsafe { opt_text(o.user_id, "user_id") }?;
        // SAFETY: as this function's safety section requires of its caller.
        let pinned = unsafe { opt_text(o.pinned_identity, "pinned_identity") }?;

        let keyset = PublicKeyset::from_json(keyset_json).map_err(|e| {
            invalid(format!("keyset_json is not a keyset ({e}): pass the JSON `tessera-server keys export` prints"))
        })?;
        let product = Uuid::parse_str(product_id.trim())
            .map_err(|_| invalid(format!("product_id {product_id:?} is not a UUID: pass the product's id")))?;
        if o.clock_tolerance_secs < 0 {
            return Err(invalid("clock_tolerance_secs is negative: pass 0 for the default (one hour) or more"));
        }
        let build_date = match o.build_date {
            0 => None,
            secs => Some(DateTime::<Utc>::from_timestamp(secs, 0).ok_or_else(|| {
                invalid(format!("build_date {secs} is not a time: pass Unix seconds (0: not given)"))
            })?),
        };
        let mut config = AgentConfig::new(state_path, keyset, product);
        if let Some(url) = server_url {
            config = config.with_server(url);
        }
        if let Some(user) = user_id {
            config = config.with_user(user);
        }
        if let Some(p) = pinned {
            config = config.with_identity(IdentityMode::PinnedValue(p.to_string()));
        }
        config.app_version = app_version.map(str::to_string);
        config.build_date = build_date;
        if o.clock_tolerance_secs > 0 {
            config.clock_tolerance = chrono::Duration::seconds(o.clock_tolerance_secs.min(i64::from(i32::MAX)));
        }

        // One worker is plenty for a client: the caller's threads do the waiting in `block_on`.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tessera-agent")
            .enable_all()
            .build()
            .map_err(|e| {
                set_error(&format!("cannot start the agent's runtime: {e}"), None);
                Failure(TesseraStatus::Internal)
            })?;
        let agent = {
            let _in_runtime = runtime.enter();
            Agent::open(config)?
        };
        let heartbeats = (o.background_heartbeats != 0).then(|| {
            let _in_runtime = runtime.enter();
            agent.spawn_heartbeats()
        });
        let h = Box::new(TesseraAgent { agent, runtime, heartbeats });
        // SAFETY: out was checked writable above; the handle's ownership passes to the caller (tessera_close).
        unsafe { out.write(Box::into_raw(h)) };
        Ok(())
    })
}

/// Stops the background heartbeats and frees the handle. NULL is ignored. The handle must not be used after.
///
/// # Safety
/// `agent` is NULL or a handle from `tessera_open` not yet closed, and no other thread is using it.
#[no_mangle]
pub unsafe extern "C" fn tessera_close(agent: *mut TesseraAgent) {
    let _ = unguarded_errors(|| {
        if agent.is_null() {
            return Ok(());
        }
        // SAFETY: the caller gives back a pointer Box::into_raw made in tessera_open, once.
        let h = unsafe { Box::from_raw(agent) };
        if let Some(t) = &h.heartbeats {
            t.abort();
        }
        let TesseraAgent { agent, runtime, heartbeats } = *h;
        drop(heartbeats);
        drop(agent);
        // The heartbeat task was aborted; a request still in flight on the runtime's worker gets a second to end,
        // after which the worker is left to finish it on its own (its state writes are transactions either way).
        runtime.shutdown_timeout(Duration::from_secs(1));
        Ok(())
    });
}

/// Checks a feature locally, with no network. `*out` receives the decision.
///
/// # Safety
/// `agent` is a live handle; `feature` a NUL-terminated string; `out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn tessera_check(
    agent: *const TesseraAgent,
    feature: *const c_char,
    out: *mut TesseraDecision,
) -> TesseraStatus {
    guarded(|| {
        // SAFETY: the caller's promises above.
        let h = unsafe { handle(agent) }?;
        // SAFETY: as this function's safety section requires of its caller.
        let feature = unsafe { text(feature, "feature") }?;
        // SAFETY: as this function's safety section requires of its caller.
        unsafe { put(out, h.agent.check(feature).into(), "out") }
    })
}

/// The license as a whole (no feature): is it usable here? `*out` receives the decision.
///
/// # Safety
/// `agent` is a live handle; `out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn tessera_check_license(agent: *const TesseraAgent, out: *mut TesseraDecision) -> TesseraStatus {
    guarded(|| {
        // SAFETY: the caller's promises above.
        let h = unsafe { handle(agent) }?;
        // SAFETY: as this function's safety section requires of its caller.
        unsafe { put(out, h.agent.check_license().into(), "out") }
    })
}

/// Records `amount` units of a metered feature, if the quota allows it; `*out` receives the decision (denied
/// with QUOTA_EXCEEDED, and nothing recorded, when it does not). The use reaches the server with a heartbeat.
///
/// # Safety
/// `agent` is a live handle; `feature` a NUL-terminated string; `out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn tessera_consume(
    agent: *const TesseraAgent,
    feature: *const c_char,
    amount: u64,
    out: *mut TesseraDecision,
) -> TesseraStatus {
    guarded(|| {
        // SAFETY: the caller's promises above.
        let h = unsafe { handle(agent) }?;
        // SAFETY: as this function's safety section requires of its caller.
        let feature = unsafe { text(feature, "feature") }?;
        // Refused before anything is recorded: a use the caller cannot see must not be spent.
        if out.is_null() {
            return Err(invalid("out is NULL: pass where to put the decision"));
        }
        let d = h.agent.try_consume(feature, amount)?;
        // SAFETY: as this function's safety section requires of its caller.
        unsafe { put(out, d.into(), "out") }
    })
}

/// Activates online with a license key. `*out_json` (if not NULL) receives the outcome as JSON
/// (`activation_id`, `license_id`, `lease_expires_at`, `features`, ...).
///
/// # Safety
/// `agent` is a live handle; `key` a NUL-terminated string; `out_json` NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn tessera_activate(
    agent: *const TesseraAgent,
    key: *const c_char,
    out_json: *mut *mut c_char,
) -> TesseraStatus {
    guarded(|| {
        // SAFETY: the caller's promises above.
        let h = unsafe { handle(agent) }?;
        // SAFETY: as this function's safety section requires of its caller.
        let key = unsafe { text(key, "key") }?;
        let done = h.runtime.block_on(h.agent.activate(key))?;
        // SAFETY: as this function's safety section requires of its caller.
        unsafe { put_string(out_json, &json(&done)?) }
    })
}

/// Renews the lease and sends pending usage now. `*out_json` (if not NULL) receives the outcome as JSON.
///
/// # Safety
/// `agent` is a live handle; `out_json` NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn tessera_heartbeat(agent: *const TesseraAgent, out_json: *mut *mut c_char) -> TesseraStatus {
    guarded(|| {
        // SAFETY: the caller's promises above.
        let h = unsafe { handle(agent) }?;
        let done = h.runtime.block_on(h.agent.heartbeat())?;
        // SAFETY: as this function's safety section requires of its caller.
        unsafe { put_string(out_json, &json(&done)?) }
    })
}

/// Deactivates online: the seat is freed on the server and the local license removed.
///
/// # Safety
/// `agent` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn tessera_deactivate(agent: *const TesseraAgent) -> TesseraStatus {
    guarded(|| {
        // SAFETY: the caller's promise above.
        let h = unsafe { handle(agent) }?;
        h.runtime.block_on(h.agent.deactivate())?;
        Ok(())
    })
}

/// Makes an offline request code for `key` (to carry to the vendor's portal); `*out_code` receives it.
///
/// # Safety
/// `agent` is a live handle; `key` a NUL-terminated string; `out_code` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn tessera_request_code(
    agent: *const TesseraAgent,
    key: *const c_char,
    out_code: *mut *mut c_char,
) -> TesseraStatus {
    guarded(|| {
        if out_code.is_null() {
            return Err(invalid("out_code is NULL: pass where to put the request code"));
        }
        // SAFETY: the caller's promises above.
        let h = unsafe { handle(agent) }?;
        // SAFETY: as this function's safety section requires of its caller.
        let key = unsafe { text(key, "key") }?;
        let code = h.agent.request_code(key)?;
        // SAFETY: as this function's safety section requires of its caller.
        unsafe { put_string(out_code, &code) }
    })
}

/// Applies a response code or an emergency code. `*out_json` (if not NULL) receives what it granted as JSON
/// (`kind`: `activation` or `emergency`, with its terms).
///
/// # Safety
/// `agent` is a live handle; `code` a NUL-terminated string; `out_json` NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn tessera_apply_code(
    agent: *const TesseraAgent,
    code: *const c_char,
    out_json: *mut *mut c_char,
) -> TesseraStatus {
    guarded(|| {
        // SAFETY: the caller's promises above.
        let h = unsafe { handle(agent) }?;
        // SAFETY: as this function's safety section requires of its caller.
        let code = unsafe { text(code, "code") }?;
        let applied = h.agent.apply_code(code)?;
        // SAFETY: as this function's safety section requires of its caller.
        unsafe { put_string(out_json, &json(&applied)?) }
    })
}

/// Deactivates an offline activation: removes the local license and makes the signed receipt the vendor needs
/// to free the seat; `*out_receipt` receives it.
///
/// # Safety
/// `agent` is a live handle; `out_receipt` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn tessera_deactivate_offline(
    agent: *const TesseraAgent,
    out_receipt: *mut *mut c_char,
) -> TesseraStatus {
    guarded(|| {
        if out_receipt.is_null() {
            return Err(invalid("out_receipt is NULL: pass where to put the receipt"));
        }
        // SAFETY: the caller's promises above.
        let h = unsafe { handle(agent) }?;
        let receipt = h.agent.deactivate_offline()?;
        // SAFETY: as this function's safety section requires of its caller.
        unsafe { put_string(out_receipt, &receipt) }
    })
}

/// The agent's status as JSON (activation, license terms, lease, usage, what is wrong and what to do), the same
/// document `tessera-agent status --json` prints; `*out_json` receives it.
///
/// # Safety
/// `agent` is a live handle; `out_json` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn tessera_status(agent: *const TesseraAgent, out_json: *mut *mut c_char) -> TesseraStatus {
    guarded(|| {
        if out_json.is_null() {
            return Err(invalid("out_json is NULL: pass where to put the status"));
        }
        // SAFETY: the caller's promises above.
        let h = unsafe { handle(agent) }?;
        // SAFETY: as this function's safety section requires of its caller.
        unsafe { put_string(out_json, &json(&h.agent.status())?) }
    })
}

/// Frees a string this library returned. NULL is ignored.
///
/// # Safety
/// `s` is NULL or a string from this library not yet freed.
#[no_mangle]
pub unsafe extern "C" fn tessera_string_free(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: the caller gives back a pointer CString::into_raw made, once.
        drop(unsafe { CString::from_raw(s) });
    }
}

/// What the calling thread's last failed call said (what went wrong and what to do), or NULL after a success.
/// Borrowed: valid until this thread's next call into the library; do not free.
#[no_mangle]
pub extern "C" fn tessera_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ref().map_or(std::ptr::null(), |e| e.message.as_ptr()))
}

/// The server's stable refusal code of the calling thread's last call (e.g. `SEAT_LIMIT_REACHED`), or NULL if
/// the server did not refuse it. Borrowed like `tessera_last_error`.
#[no_mangle]
pub extern "C" fn tessera_last_server_code() -> *const c_char {
    LAST_ERROR
        .with(|e| e.borrow().as_ref().and_then(|e| e.server_code.as_ref()).map_or(std::ptr::null(), |c| c.as_ptr()))
}

/// A reason's static texts as C strings, made once per process: (names, sentences), in `Reason::ALL`'s order.
static REASON_TEXTS: std::sync::OnceLock<(Vec<CString>, Vec<CString>)> = std::sync::OnceLock::new();

fn reason_text(code: i32, sentence: bool) -> *const c_char {
    let (names, sentences) = REASON_TEXTS.get_or_init(|| {
        (
            Reason::ALL.iter().map(|r| c_string(r.as_str())).collect(),
            Reason::ALL.iter().map(|r| c_string(r.explain())).collect(),
        )
    });
    let table = if sentence { sentences } else { names };
    usize::try_from(code).ok().and_then(|i| table.get(i)).map_or(std::ptr::null(), |c| c.as_ptr())
}

/// The stable name of a reason (e.g. `QUOTA_EXCEEDED`), or NULL for a number that is none. Static; do not free.
#[no_mangle]
pub extern "C" fn tessera_reason_name(reason: i32) -> *const c_char {
    reason_text(reason, false)
}

/// One sentence for people about a reason: what happened and what to do. NULL for a number that is none.
/// Static; do not free.
#[no_mangle]
pub extern "C" fn tessera_reason_explain(reason: i32) -> *const c_char {
    reason_text(reason, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_map_one_to_one_in_order() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(TesseraReason::from(*r) as i32, i as i32, "{r:?}");
        }
    }
}
