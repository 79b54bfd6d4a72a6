//! synth (in progress)
