//! tessera-server tests: router tests without a port, loopback tests with a real port, real SQLite files.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

mod admin;
mod answers;
mod audit;
mod billing;
mod cache;
mod catalog;
mod cli;
mod client;
mod common;
mod concurrency;
mod cull_race;
mod date_bounds;
mod device_blocks;
mod emergency_listing;
mod geoip;
mod grpc;
mod identity;
mod keys;
mod lease_renewal;
mod license_conflicts;
mod license_models;
mod limits;
mod offline;
mod offline_receipt;
mod offline_scope;
mod openapi;
mod ops_access;
mod restrictions;
mod reuse;
mod store_conformance;
mod subscriptions;
mod usage_ingest;
mod usage_limits;
mod write_queue;
