//! flowsense
fn main() {}
