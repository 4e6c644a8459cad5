//! Integration tests of the server crate: FHIR behaviour through `Router::oneshot`, the seal
//! lifecycle, tamper detection on a real SQLite file, and the TLS listener on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod access;
mod admin;
mod clients;
mod fhir;
mod identity;
mod ledger;
mod listen;
mod matrix;
mod metrics;
mod refresh;
mod seal;
mod support;
mod tamper;
