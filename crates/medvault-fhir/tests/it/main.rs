//! Integration tests for medvault-fhir: validation, search/index tokens and references.

mod examples;
mod refs;
mod search;
mod validate;
