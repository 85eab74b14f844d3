//! Test harness shared by the integration tests: real `claude-relay` processes on
//! 127.0.0.1 port 0, real temp dirs, and waits that are always bounded by a timeout.
//!
//! Each test binary includes this with `mod common;` and uses what it needs.
#![allow(dead_code)]

pub mod bridge;
pub mod hub;
pub mod ws;
