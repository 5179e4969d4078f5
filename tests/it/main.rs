//! The integration test binary (one binary for all integration tests, see ARCHITECTURE.md).

mod bad_input;
mod cli;
mod expr;
mod fixtures;
mod interop;
mod prop;
mod scale;
mod script;
mod terminal;
mod util;
