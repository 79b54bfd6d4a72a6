//! FlowSense's timely operators: book, features, models, risk and the exchange simulator.
//!
//! This crate is empty until the dataflow issue: the foundation issue only places it in the
//! workspace so the dependency arrows of the architecture (core <- operators <- dataflows) exist
//! from the start. Operators will be extension traits on timely streams, named for what they
//! compute (`Ofi`, `Microprice`, ...), with one file per family.

#![forbid(missing_docs)]
