//! Integration tests for medvault-store: the SQLite `Store` on real files and the blob store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accounts;
mod blob;
mod common;
mod data_keys;
mod durability;
mod ledger;
mod maintenance;
mod migrations;
mod posting;
mod search;
mod vault;
mod versions;
