//! Verbatim: store, index and search customer feedback behind a gRPC API.
//! See ARCHITECTURE.md for the map.

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod domain;
pub mod engine;
pub mod enrichment;
pub mod error;
#[cfg(test)]
mod fuzz;
pub mod grpc;
pub mod index;
pub mod metrics;
pub mod nlp;
pub mod redact;
pub mod report;
pub mod store;
pub mod telemetry;
pub mod themes;
