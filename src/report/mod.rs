//! Voice-of-customer reports, transport-free: the statistics (`stats.rs`,
//! pure functions with property tests), trend buckets (`buckets.rs`), the
//! report built from one index pass's counts (`build.rs`) and its
//! renderings as a terminal table, CSV and a self-contained HTML page
//! (`render/`).
//!
//! Invariants:
//! - Every figure carries its sample size; a figure over nothing (n = 0) has
//!   no estimate and no interval, never NaN.
//! - Building a report does no I/O: the engine counts (one pass over the
//!   index's fast fields), builds, then picks verbatims from the store.

pub mod buckets;
mod build;
pub mod render;
pub mod stats;

pub use build::{build, emerging, ReportShape, MATRIX_THEMES};
