//! End-to-end tests: the real binary, a real gRPC client, a real socket.

mod browser;
mod helpers;

mod auth;
mod cli;
mod defects;
mod durability;
mod ingest;
mod limits;
mod metrics;
mod nlp;
mod pii;
mod report;
mod search;
mod text;
mod themes;
mod tls;
