//! The end-to-end suite: one test binary. Every test starts the real server (in-process on a loopback port, or
//! the built binary for crash tests) and drives it with the real agent library or binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bad_input;
mod console;
mod crash;
mod customer;
mod formats;
mod gating;
mod identity;
mod isolation;
mod keys;
mod lifecycle;
mod models;
mod offline;
mod openapi;
mod readme;
mod restrictions;
mod seats;
mod subscriptions;
mod tamper;
