//! The shared vocabulary of FlowSense: identifiers, exact prices and sizes, market events, the Arrow
//! schema of every lake table, and the error type. Every other crate depends on this one and it
//! depends on nothing of ours.
//!
//! # Numbers
//! Prices and sizes are [`Price`] and [`Size`]: signed 64-bit integers counting billionths
//! (nine decimal places, the same fixed point NautilusTrader uses). Market data is quoted in decimal
//! ticks (`61800.30`, `0.006`, LOBSTER's dollars x 10000); binary floating point cannot hold most of
//! those exactly, so comparing a reconstructed book with an exchange's own best bid, or summing
//! sizes at a level, would drift. Nine places cover every venue we read (Binance spot uses eight),
//! and an `i64` still reaches 9.2 billion, far above any price or size in this data. In the lake they
//! are stored as `Float64` (see [`schema::PRICE_TYPE`] for why that loses nothing).
//!
//! ```
//! use flowsense_core::{Price, Size};
//! let p: Price = "61800.30".parse().unwrap();
//! assert_eq!(p.raw(), 61_800_300_000_000);
//! assert_eq!(p.to_string(), "61800.3");
//! assert!("-1".parse::<Size>().unwrap().raw() < 0); // parsing is exact; validation is the reader's job
//! ```

#![forbid(missing_docs)]

pub mod book;
pub mod error;
pub mod event;
pub mod expr;
pub mod features;
pub mod ids;
pub mod job;
mod ladder;
pub mod lake;
pub mod num;
pub mod order;
pub mod results;
pub mod schema;
pub mod span;
pub mod strategy;

pub use error::{Error, Result};
pub use event::{
    Bar, BboUpdate, DeadLetter, DeadLetterReason, DepthUpdate, L3Action, MarketEvent, OrderEvent,
    Side, Trade,
};
pub use features::FeatureRow;
pub use ids::{OrderId, Symbol, UnixNanos, Venue};
pub use lake::{Lake, S3Options};
pub use num::{Price, Size};
pub use schema::{Partitioning, Table};
