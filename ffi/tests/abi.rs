//! The C ABI called as C would call it (through the same `extern "C"` functions), against a real server and
//! real state files: every bad argument is an error status with a message, never a crash; a server refusal
//! carries its stable code; a handle is shared by many threads; quota is never overdrawn through the boundary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::{c_char, CStr, CString};
use std::ptr::{null, null_mut};

use tessera::*;
use tessera_test_support::TestServer;

struct Owned(Vec<CString>);

impl Owned {
    fn c(&mut self, s: &str) -> *const c_char {
        self.0.push(CString::new(s).unwrap());
        self.0.last().unwrap().as_ptr()
    }
}

fn last_error() -> String {
    let p = tessera_last_error();
    assert!(!p.is_null(), "a failed call leaves a message");
    // SAFETY: a non-null pointer from tessera_last_error is a NUL-terminated string valid until the next call.
    unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_string()
}

fn server_code() -> Option<String> {
    let p = tessera_last_server_code();
    // SAFETY: as in last_error.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_string())
}

fn options(s: &mut Owned, state: &str, keyset: &str, product: &str, server: Option<&str>) -> TesseraOptions {
    TesseraOptions {
        abi_version: TESSERA_ABI_VERSION,
        state_path: s.c(state),
        keyset_json: s.c(keyset),
        product_id: s.c(product),
        server_url: server.map_or(null(), |u| s.c(u)),
        app_version: null(),
        user_id: null(),
        pinned_identity: null(),
        clock_tolerance_secs: 0,
        background_heartbeats: 0,
        build_date: 0,
    }
}

fn open(o: &TesseraOptions) -> Result<*mut TesseraAgent, (TesseraStatus, String)> {
    let mut h = null_mut();
    // SAFETY: o is a valid TesseraOptions whose strings outlive the call; h is writable.
    let st = unsafe { tessera_open(o, &mut h) };
    if st == TesseraStatus::Ok {
        assert!(!h.is_null());
        Ok(h)
    } else {
        assert!(h.is_null(), "a failed open hands out no handle");
        Err((st, last_error()))
    }
}

/// A pointer that can be sent to other threads (the handle is Sync by contract).
#[derive(Clone, Copy)]
struct Shared(*mut TesseraAgent);
// SAFETY: TesseraAgent is Send + Sync (an Agent and a Tokio runtime); the test closes it after every thread ends.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

#[test]
fn bad_arguments_are_refused_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let keyset = include_str!("../../keys/test/keyset.json").to_string();
    let state = dir.path().join("s.db");
    let state = state.to_str().unwrap();
    let product = uuid::Uuid::new_v4().to_string();
    let mut s = Owned(Vec::new());

    // SAFETY: null pointers are what is under test; the library must refuse them.
    let st = unsafe { tessera_open(null(), &mut null_mut()) };
    assert_eq!(st, TesseraStatus::InvalidArgument);
    assert!(last_error().contains("options is NULL"));
    let o = options(&mut s, state, &keyset, &product, None);
    // SAFETY: as this function's safety section requires of its caller.
    assert_eq!(unsafe { tessera_open(&o, null_mut()) }, TesseraStatus::InvalidArgument);

    let mut wrong = options(&mut s, state, &keyset, &product, None);
    wrong.abi_version = TESSERA_ABI_VERSION + 1;
    let (st, msg) = open(&wrong).unwrap_err();
    assert_eq!(st, TesseraStatus::InvalidArgument);
    assert!(msg.contains("rebuild the application"), "{msg}");

    let (st, msg) = open(&options(&mut s, state, "{not json", &product, None)).unwrap_err();
    assert_eq!(st, TesseraStatus::InvalidArgument);
    assert!(msg.contains("keyset_json is not a keyset"), "{msg}");
    let (st, msg) = open(&options(&mut s, state, &keyset, "acme-app", None)).unwrap_err();
    assert_eq!(st, TesseraStatus::InvalidArgument);
    assert!(msg.contains("not a UUID"), "{msg}");
    let mut no_state = options(&mut s, state, &keyset, &product, None);
    no_state.state_path = null();
    assert!(open(&no_state).unwrap_err().1.contains("state_path is NULL"));
    // A state path under a plain file cannot be made, whoever runs this.
    std::fs::write(dir.path().join("plain"), b"x").unwrap();
    let under_file = dir.path().join("plain/state.db");
    let (st, msg) = open(&options(&mut s, under_file.to_str().unwrap(), &keyset, &product, None)).unwrap_err();
    assert_eq!(st, TesseraStatus::State, "{msg}");
    let mut negative = options(&mut s, state, &keyset, &product, None);
    negative.clock_tolerance_secs = -5;
    assert!(open(&negative).unwrap_err().1.contains("clock_tolerance_secs is negative"));
    let mut never = options(&mut s, state, &keyset, &product, None);
    never.build_date = i64::MAX;
    assert!(open(&never).unwrap_err().1.contains("build_date"));

    let h = open(&options(&mut s, state, &keyset, &product, None)).unwrap();
    assert!(tessera_last_error().is_null(), "a success clears the message");
    let mut d = std::mem::MaybeUninit::<TesseraDecision>::uninit();
    let bad_utf8 = [0xffu8, 0xfe, 0];
    // SAFETY: as this function's safety section requires of its caller.
    unsafe {
        assert_eq!(tessera_check(null(), s.c("x"), d.as_mut_ptr()), TesseraStatus::InvalidArgument);
        assert!(last_error().contains("handle is NULL"));
        assert_eq!(tessera_check(h, null(), d.as_mut_ptr()), TesseraStatus::InvalidArgument);
        assert_eq!(tessera_check(h, s.c("x"), null_mut()), TesseraStatus::InvalidArgument);
        assert_eq!(tessera_check(h, bad_utf8.as_ptr().cast(), d.as_mut_ptr()), TesseraStatus::InvalidArgument);
        assert!(last_error().contains("not UTF-8"));
        // Not activated: a check is an answer (denied), not an error.
        assert_eq!(tessera_check(h, s.c("export_pdf"), d.as_mut_ptr()), TesseraStatus::Ok);
        let d = d.assume_init();
        assert!(!d.allowed);
        assert_eq!(d.reason, TesseraReason::NotActivated);
        let name = CStr::from_ptr(tessera_reason_name(d.reason as i32)).to_str().unwrap();
        assert_eq!(name, "NOT_ACTIVATED");
        assert!(CStr::from_ptr(tessera_reason_explain(d.reason as i32)).to_str().unwrap().contains("activate"));
        assert!(tessera_reason_name(-1).is_null() && tessera_reason_name(19).is_null());
        // No server configured: online calls say so; a malformed key and code are refused as such.
        assert_eq!(tessera_activate(h, s.c("ABCD"), null_mut()), TesseraStatus::BadKey);
        assert_eq!(tessera_heartbeat(h, null_mut()), TesseraStatus::NoServer);
        assert!(last_error().contains("offline flow"));
        let mut code = null_mut();
        assert_eq!(tessera_apply_code(h, s.c("not-a-code"), &mut code), TesseraStatus::BadCode);
        assert!(code.is_null());
        assert_eq!(tessera_request_code(h, s.c("short"), null_mut()), TesseraStatus::InvalidArgument);
        let mut request = null_mut();
        assert_eq!(tessera_request_code(h, s.c("short"), &mut request), TesseraStatus::BadKey);
        assert!(request.is_null());
        let mut receipt = null_mut();
        assert_eq!(tessera_deactivate_offline(h, &mut receipt), TesseraStatus::NotActivated);
        let mut status = null_mut();
        assert_eq!(tessera_status(h, &mut status), TesseraStatus::Ok);
        let v: serde_json::Value = serde_json::from_str(CStr::from_ptr(status).to_str().unwrap()).unwrap();
        assert_eq!(v["activated"], false);
        tessera_string_free(status);
        tessera_string_free(null_mut());
        tessera_close(h);
        tessera_close(null_mut());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_handle_checks_from_many_threads_and_never_overdraws_a_quota() {
    let server = TestServer::start().await;
    // One seat: the second device is refused by the server with its stable code.
    let fx = server.fixture("ffi-abi", serde_json::json!({"max_activations": 1})).await;
    let dir = tempfile::tempdir().unwrap();
    let keyset = server.keyset().to_json();
    let product = fx.product.to_string();
    let url = server.url();
    let key = fx.key.clone();
    let state = dir.path().join("a.db").to_str().unwrap().to_string();
    let other = dir.path().join("b.db").to_str().unwrap().to_string();

    // The C calls block, as they do in a C program: off the test's runtime.
    tokio::task::spawn_blocking(move || {
        let mut s = Owned(Vec::new());
        let mut o = options(&mut s, &state, &keyset, &product, Some(&url));
        let pin_a = s.c("ffi-machine-a");
        o.pinned_identity = pin_a;
        let h = open(&o).unwrap();
        let mut out = null_mut();
        // SAFETY: h is live until tessera_close; strings outlive each call; outs are writable.
        unsafe {
            assert_eq!(tessera_activate(h, s.c(&key), &mut out), TesseraStatus::Ok, "{}", last_error());
            tessera_string_free(out);
        }

        let mut ob = options(&mut s, &other, &keyset, &product, Some(&url));
        ob.pinned_identity = s.c("ffi-machine-b");
        let hb = open(&ob).unwrap();
        // SAFETY: as this function's safety section requires of its caller.
        unsafe {
            assert_eq!(tessera_activate(hb, s.c(&key), null_mut()), TesseraStatus::ServerRefused);
            // Closing another handle (as a finaliser may, before the caller reads the error) keeps the message.
            tessera_close(hb);
            assert_eq!(server_code().as_deref(), Some("SEAT_LIMIT_REACHED"), "{}", last_error());
            // The message is this thread's: another thread sees none.
            assert_eq!(
                std::thread::spawn(|| (tessera_last_error().is_null(), server_code())).join().unwrap(),
                (true, None)
            );
        }

        let feature = CString::new("api_calls").unwrap();
        // SAFETY: as above; a NULL out is refused before anything is recorded.
        unsafe {
            assert_eq!(tessera_consume(h, feature.as_ptr(), 10, null_mut()), TesseraStatus::InvalidArgument);
            let mut d = std::mem::MaybeUninit::<TesseraDecision>::uninit();
            assert_eq!(tessera_check(h, feature.as_ptr(), d.as_mut_ptr()), TesseraStatus::Ok);
            assert_eq!(d.assume_init().used, 0, "a refused consume spent nothing");
        }

        // Eight threads share the handle: each checks and consumes 10 units, 20 times (1,600 wanted of 100).
        let shared = Shared(h);
        let granted: u64 = std::thread::scope(|sc| {
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    let feature = &feature;
                    sc.spawn(move || {
                        let h = shared;
                        let mut granted = 0;
                        for _ in 0..20 {
                            let mut d = std::mem::MaybeUninit::<TesseraDecision>::uninit();
                            // SAFETY: the handle outlives the scope; feature and d are valid for the call.
                            let st = unsafe { tessera_consume(h.0, feature.as_ptr(), 10, d.as_mut_ptr()) };
                            assert_eq!(st, TesseraStatus::Ok);
                            // SAFETY: written by the successful call.
                            let d = unsafe { d.assume_init() };
                            if d.allowed {
                                granted += 10;
                            } else {
                                assert_eq!(d.reason, TesseraReason::QuotaExceeded);
                            }
                        }
                        granted
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).sum()
        });
        assert_eq!(granted, 100, "exactly the quota is granted, never more");
        let mut d = std::mem::MaybeUninit::<TesseraDecision>::uninit();
        // SAFETY: as this function's safety section requires of its caller.
        unsafe {
            assert_eq!(tessera_check(h, feature.as_ptr(), d.as_mut_ptr()), TesseraStatus::Ok);
            let d = d.assume_init();
            assert_eq!((d.limit, d.used, d.remaining), (100, 100, 0));
            assert!(d.lease_expires_at > 0 && d.expires_at > d.lease_expires_at, "{d:?}");
            let mut beat = null_mut();
            assert_eq!(tessera_heartbeat(h, &mut beat), TesseraStatus::Ok, "{}", last_error());
            let v: serde_json::Value = serde_json::from_str(CStr::from_ptr(beat).to_str().unwrap()).unwrap();
            assert_eq!(v["usage_acknowledged"], 10, "{v}");
            tessera_string_free(beat);
            assert_eq!(tessera_deactivate(h), TesseraStatus::Ok, "{}", last_error());
            tessera_close(h);
        }
    })
    .await
    .unwrap();
}
