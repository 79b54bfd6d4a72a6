//! Expressions over feature rows: the language of signals, sizing inputs and regimes.
//!
//! An expression reads the columns of one symbol's [`FeatureRow`]s at the bucket that just closed
//! and, through `lag(x, k)`, at the `k`-th bucket before it. It can read nothing else: there is no
//! way to name a later bucket, so a signal cannot look ahead. `lead`, `shift` and `future` are
//! refused with an error saying why, as is a negative or non-constant lag.
//!
//! Grammar (usual precedence, lowest first): `||`, `&&`, comparisons (`< <= > >= == !=`), `+ -`,
//! `* /`, unary `- !`, `^` (right associative), then numbers, column names, function calls and
//! parentheses. Functions: `abs sign sqrt ln exp min max clamp(x, lo, hi) if(c, a, b) lag(x, k)
//! nz(x, default)`, and windows over the latest `n` buckets (this one included): `mean(x, n)`,
//! `sum(x, n)`. Booleans are `1.0` and `0.0`; a missing value (a VWAP without trades, a
//! return before the history reaches back) is NaN, comparisons with NaN are false, and a NaN
//! signal means "no opinion".
//!
//! ```
//! use flowsense_core::expr::Expr;
//! use flowsense_core::{FeatureRow, Symbol};
//! let e: Expr = "ofi_l1 / (bid_size + ask_size) - 0.5 * lag(ofi_l1, 1) / 10".parse().unwrap();
//! let mut rows = Vec::new();
//! for ofi in [10.0, 30.0] {
//!     let mut r = FeatureRow::empty(Symbol::new("ABC").unwrap(), 0, "1s".into());
//!     (r.ofi_l1, r.bid_size, r.ask_size) = (ofi, Some(4.0), Some(6.0));
//!     rows.push(r);
//! }
//! assert_eq!(e.max_lag(), 1);
//! assert_eq!(e.eval(&rows), 30.0 / 10.0 - 0.5 * 10.0 / 10.0);
//! assert!(e.eval(&rows[..1]).is_nan()); // lag(.., 1) has no row yet
//! let err = "lead(mid, 1) > mid".parse::<Expr>().unwrap_err().to_string();
//! assert!(err.contains("future"), "{err}");
//! ```

use std::fmt;
use std::str::FromStr;

use crate::features::{FeatureColumn, FeatureRow};
use crate::{Error, Result};

/// Longest lag an expression may read, in buckets.
pub const MAX_LAG: usize = 10_000;

/// A parsed expression.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    text: String,
    root: Node,
    max_lag: usize,
}

#[derive(Clone, Debug, PartialEq)]
enum Node {
    Num(f64),
    Col(FeatureColumn),
    Neg(Box<Node>),
    Not(Box<Node>),
    Bin(BinOp, Box<Node>, Box<Node>),
    Call(Func, Vec<Node>),
    Lag(Box<Node>, usize),
    /// `mean(x, n)` (`true`) or `sum(x, n)` over the latest `n` buckets.
    Window(bool, Box<Node>, usize),
}

#[derive(Copy, Clone, Debug, PartialEq)]
enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
}

#[derive(Copy, Clone, Debug, PartialEq)]
enum Func {
    Abs,
    Sign,
    Sqrt,
    Ln,
    Exp,
    Min,
    Max,
    Clamp,
    If,
    Nz,
}

impl Func {
    fn parse(name: &str) -> Option<(Func, usize)> {
        Some(match name {
            "abs" => (Func::Abs, 1),
            "sign" => (Func::Sign, 1),
            "sqrt" => (Func::Sqrt, 1),
            "ln" => (Func::Ln, 1),
            "exp" => (Func::Exp, 1),
            "min" => (Func::Min, 2),
            "max" => (Func::Max, 2),
            "clamp" => (Func::Clamp, 3),
            "if" => (Func::If, 3),
            "nz" => (Func::Nz, 2),
            _ => return None,
        })
    }
}

impl Expr {
    /// The text the expression was parsed from.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// True when the expression reads column `c` (at any lag).
    ///
    /// ```
    /// use flowsense_core::expr::Expr;
    /// use flowsense_core::features::FeatureColumn;
    /// let e: Expr = "mean(close, 3) - lag(vwap, 1)".parse().unwrap();
    /// assert!(e.reads(FeatureColumn::parse("vwap").unwrap()));
    /// assert!(!e.reads(FeatureColumn::parse("kyle_lambda").unwrap()));
    /// ```
    pub fn reads(&self, c: FeatureColumn) -> bool {
        fn walk(n: &Node, c: FeatureColumn) -> bool {
            match n {
                Node::Num(_) => false,
                Node::Col(x) => *x == c,
                Node::Neg(a) | Node::Not(a) | Node::Lag(a, _) | Node::Window(_, a, _) => walk(a, c),
                Node::Bin(_, a, b) => walk(a, c) || walk(b, c),
                Node::Call(_, args) => args.iter().any(|a| walk(a, c)),
            }
        }
        walk(&self.root, c)
    }

    /// How many buckets back the expression reads (0 when it reads only the latest).
    pub fn max_lag(&self) -> usize {
        self.max_lag
    }

    /// Evaluates over `history`, the symbol's rows oldest first; the last row is the bucket that
    /// just closed. A lag reaching before the first row reads NaN.
    pub fn eval(&self, history: &[FeatureRow]) -> f64 {
        eval(&self.root, history, 0)
    }

    /// Evaluates over any indexable history (a ring buffer, say): `row(k)` is the row `k`
    /// buckets before the latest (`row(0)` the latest), `None` past the start.
    pub fn eval_with<'a>(&self, row: &dyn Fn(usize) -> Option<&'a FeatureRow>) -> f64 {
        eval_fn(&self.root, row, 0)
    }
}

fn eval(n: &Node, h: &[FeatureRow], lag: usize) -> f64 {
    let row = |k: usize| h.len().checked_sub(1 + k).map(|i| &h[i]);
    eval_fn(n, &row, lag)
}

fn truth(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

fn eval_fn<'a>(n: &Node, row: &dyn Fn(usize) -> Option<&'a FeatureRow>, lag: usize) -> f64 {
    let ev = |m: &Node| eval_fn(m, row, lag);
    match n {
        Node::Num(v) => *v,
        Node::Col(c) => row(lag).map_or(f64::NAN, |r| c.read(r)),
        Node::Neg(a) => -ev(a),
        Node::Not(a) => {
            let v = ev(a);
            if v.is_nan() {
                f64::NAN
            } else {
                truth(v == 0.0)
            }
        }
        Node::Lag(a, k) => eval_fn(a, row, lag + k),
        Node::Window(mean, a, n) => {
            let total: f64 = match a.as_ref() {
                // The common case, a window over a column: read the rows directly.
                Node::Col(c) => (0..*n)
                    .map(|k| row(lag + k).map_or(f64::NAN, |r| c.read(r)))
                    .sum(),
                _ => (0..*n).map(|k| eval_fn(a, row, lag + k)).sum(),
            };
            if *mean { total / *n as f64 } else { total }
        }
        Node::Bin(op, a, b) => {
            let (x, y) = (ev(a), ev(b));
            match op {
                BinOp::Add => x + y,
                BinOp::Sub => x - y,
                BinOp::Mul => x * y,
                BinOp::Div => x / y,
                BinOp::Pow => x.powf(y),
                BinOp::Lt => truth(x < y),
                BinOp::Le => truth(x <= y),
                BinOp::Gt => truth(x > y),
                BinOp::Ge => truth(x >= y),
                BinOp::Eq => truth(x == y),
                BinOp::Ne => truth(x != y && !x.is_nan() && !y.is_nan()),
                BinOp::And => truth(x != 0.0 && y != 0.0 && !x.is_nan() && !y.is_nan()),
                BinOp::Or => truth((x != 0.0 && !x.is_nan()) || (y != 0.0 && !y.is_nan())),
            }
        }
        Node::Call(f, args) => {
            let a = |i: usize| ev(&args[i]);
            match f {
                Func::Abs => a(0).abs(),
                Func::Sign => {
                    let v = a(0);
                    if v.is_nan() || v == 0.0 {
                        v
                    } else {
                        v.signum()
                    }
                }
                Func::Sqrt => a(0).sqrt(),
                Func::Ln => a(0).ln(),
                Func::Exp => a(0).exp(),
                Func::Min => nan_aware(a(0), a(1), f64::min),
                Func::Max => nan_aware(a(0), a(1), f64::max),
                Func::Clamp => {
                    let (v, lo, hi) = (a(0), a(1), a(2));
                    if v.is_nan() { v } else { v.max(lo).min(hi) }
                }
                Func::If => {
                    let c = a(0);
                    if c.is_nan() {
                        f64::NAN
                    } else if c != 0.0 {
                        a(1)
                    } else {
                        a(2)
                    }
                }
                Func::Nz => {
                    let v = a(0);
                    if v.is_nan() { a(1) } else { v }
                }
            }
        }
    }
}

/// `min`/`max` that propagate NaN (a missing input gives a missing result) instead of ignoring it.
fn nan_aware(x: f64, y: f64, f: fn(f64, f64) -> f64) -> f64 {
    if x.is_nan() || y.is_nan() {
        f64::NAN
    } else {
        f(x, y)
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Expr {
    type Err = Error;
    fn from_str(s: &str) -> Result<Expr> {
        let tokens = lex(s)?;
        let mut p = Parser {
            tokens,
            pos: 0,
            text: s,
            max_lag: 0,
        };
        let root = p.or(0)?;
        if p.pos != p.tokens.len() {
            return Err(p.error(format!("unexpected {}", p.tokens[p.pos].0)));
        }
        Ok(Expr {
            text: s.to_string(),
            root,
            max_lag: p.max_lag,
        })
    }
}

impl serde::Serialize for Expr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Expr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Expr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Num(f64),
    Ident(String),
    Sym(&'static str),
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Num(v) => write!(f, "number {v}"),
            Tok::Ident(s) => write!(f, "name '{s}'"),
            Tok::Sym(s) => write!(f, "'{s}'"),
        }
    }
}

const SYMBOLS: [&str; 18] = [
    "<=", ">=", "==", "!=", "&&", "||", "<", ">", "+", "-", "*", "/", "^", "(", ")", ",", "!", "=",
];

fn lex(s: &str) -> Result<Vec<(Tok, usize)>> {
    let err = |at: usize, why: String| Error::InvalidExpr {
        expr: s.to_string(),
        why: format!("at column {}: {why}", at + 1),
    };
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            let start = i;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                i += 1;
            }
            if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
                i += 1;
                if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
                    i += 1;
                }
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let text = &s[start..i];
            let v = text
                .parse::<f64>()
                .map_err(|_| err(start, format!("bad number {text:?}")))?;
            out.push((Tok::Num(v), start));
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push((Tok::Ident(s[start..i].to_string()), start));
        } else if let Some(sym) = SYMBOLS.iter().find(|t| s[i..].starts_with(**t)) {
            if *sym == "=" {
                return Err(err(i, "'=' is not an operator; compare with '=='".into()));
            }
            out.push((Tok::Sym(sym), i));
            i += sym.len();
        } else {
            let ch = s[i..].chars().next().unwrap_or('?');
            return Err(err(i, format!("unexpected character {ch:?}")));
        }
    }
    Ok(out)
}

struct Parser<'a> {
    tokens: Vec<(Tok, usize)>,
    pos: usize,
    text: &'a str,
    max_lag: usize,
}

/// Names that would read the future; refused with an explanation instead of "unknown function".
const LOOKAHEAD: [&str; 5] = ["lead", "shift", "future", "next", "forward"];

impl Parser<'_> {
    fn error(&self, why: String) -> Error {
        let at = self
            .tokens
            .get(self.pos)
            .map_or(self.text.len(), |(_, at)| *at);
        Error::InvalidExpr {
            expr: self.text.to_string(),
            why: format!("at column {}: {why}", at + 1),
        }
    }

    fn peek_sym(&self, sym: &str) -> bool {
        matches!(self.tokens.get(self.pos), Some((Tok::Sym(s), _)) if *s == sym)
    }

    fn eat(&mut self, sym: &str) -> bool {
        let hit = self.peek_sym(sym);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn expect(&mut self, sym: &str) -> Result<()> {
        if self.eat(sym) {
            Ok(())
        } else {
            let found = self
                .tokens
                .get(self.pos)
                .map_or("the end".to_string(), |t| t.0.to_string());
            Err(self.error(format!("expected '{sym}', found {found}")))
        }
    }

    fn binary(
        &mut self,
        lag: usize,
        ops: &[(&str, BinOp)],
        next: fn(&mut Self, usize) -> Result<Node>,
    ) -> Result<Node> {
        let mut left = next(self, lag)?;
        'outer: loop {
            for (sym, op) in ops {
                if self.eat(sym) {
                    let right = next(self, lag)?;
                    left = Node::Bin(*op, Box::new(left), Box::new(right));
                    continue 'outer;
                }
            }
            return Ok(left);
        }
    }

    fn or(&mut self, lag: usize) -> Result<Node> {
        self.binary(lag, &[("||", BinOp::Or)], Self::and)
    }

    fn and(&mut self, lag: usize) -> Result<Node> {
        self.binary(lag, &[("&&", BinOp::And)], Self::cmp)
    }

    fn cmp(&mut self, lag: usize) -> Result<Node> {
        let ops = [
            ("<=", BinOp::Le),
            (">=", BinOp::Ge),
            ("==", BinOp::Eq),
            ("!=", BinOp::Ne),
            ("<", BinOp::Lt),
            (">", BinOp::Gt),
        ];
        self.binary(lag, &ops, Self::add)
    }

    fn add(&mut self, lag: usize) -> Result<Node> {
        self.binary(lag, &[("+", BinOp::Add), ("-", BinOp::Sub)], Self::mul)
    }

    fn mul(&mut self, lag: usize) -> Result<Node> {
        self.binary(lag, &[("*", BinOp::Mul), ("/", BinOp::Div)], Self::unary)
    }

    fn unary(&mut self, lag: usize) -> Result<Node> {
        if self.eat("-") {
            return Ok(Node::Neg(Box::new(self.unary(lag)?)));
        }
        if self.eat("!") {
            return Ok(Node::Not(Box::new(self.unary(lag)?)));
        }
        let base = self.primary(lag)?;
        if self.eat("^") {
            let exp = self.unary(lag)?;
            return Ok(Node::Bin(BinOp::Pow, Box::new(base), Box::new(exp)));
        }
        Ok(base)
    }

    fn primary(&mut self, lag: usize) -> Result<Node> {
        let Some((tok, _)) = self.tokens.get(self.pos).cloned() else {
            return Err(self.error("the expression ends too early".into()));
        };
        self.pos += 1;
        match tok {
            Tok::Num(v) => Ok(Node::Num(v)),
            Tok::Sym("(") => {
                let inner = self.or(lag)?;
                self.expect(")")?;
                Ok(inner)
            }
            Tok::Sym(s) => {
                self.pos -= 1;
                Err(self.error(format!("unexpected '{s}'")))
            }
            Tok::Ident(name) if self.peek_sym("(") => {
                self.pos += 1;
                self.call(&name, lag)
            }
            Tok::Ident(name) => match FeatureColumn::parse(&name) {
                Some(c) => {
                    self.max_lag = self.max_lag.max(lag);
                    Ok(Node::Col(c))
                }
                None => {
                    self.pos -= 1;
                    Err(self.error(format!(
                        "unknown column '{name}'; the columns are: {}",
                        FeatureColumn::names().join(", ")
                    )))
                }
            },
        }
    }

    fn call(&mut self, name: &str, lag: usize) -> Result<Node> {
        let at = self.pos - 2;
        let fail = |p: &mut Self, why: String| {
            p.pos = at;
            Err(p.error(why))
        };
        if LOOKAHEAD.contains(&name) {
            return fail(
                self,
                format!(
                    "'{name}' would read future data; a signal may only read the bucket that \
                     just closed and earlier ones (use lag(x, k))"
                ),
            );
        }
        if matches!(name, "lag" | "mean" | "sum") {
            // lag(x, k), mean(x, n), sum(x, n): k and n are constant whole numbers.
            let save_lag = self.max_lag;
            let start = self.pos;
            // Parse the inner expression once to find where it ends; the lag is known after it.
            let _ = self.or(lag)?;
            self.expect(",")?;
            let negative = self.eat("-");
            let window = name != "lag";
            let k = match self.tokens.get(self.pos) {
                Some((Tok::Num(v), _))
                    if !negative
                        && v.fract() == 0.0
                        && *v <= MAX_LAG as f64
                        && (!window || *v >= 1.0) =>
                {
                    *v as usize
                }
                Some((Tok::Num(_), _)) if negative => {
                    return fail(
                        self,
                        "lag(x, k) with a negative k would read future data; k counts buckets back"
                            .into(),
                    );
                }
                _ if window => {
                    return fail(
                        self,
                        format!("{name}(x, n) needs n as a whole number from 1 to {MAX_LAG}"),
                    );
                }
                _ => {
                    return fail(
                        self,
                        format!("lag(x, k) needs k as a whole number from 0 to {MAX_LAG}"),
                    );
                }
            };
            self.pos += 1;
            self.expect(")")?;
            let end = self.pos;
            // Re-parse the inner expression at the right depth so `max_lag` counts it.
            self.pos = start;
            self.max_lag = save_lag;
            if window {
                // The deepest read is n - 1 buckets back.
                let _ = self.or(lag + k - 1)?;
                self.pos = start;
                let inner = self.or(lag)?;
                self.pos = end;
                return Ok(Node::Window(name == "mean", Box::new(inner), k));
            }
            let inner = self.or(lag + k)?;
            self.pos = end;
            return Ok(Node::Lag(Box::new(inner), k));
        }
        let Some((func, arity)) = Func::parse(name) else {
            return fail(
                self,
                format!(
                    "unknown function '{name}'; the functions are: abs, sign, sqrt, ln, exp, \
                     min, max, clamp, if, nz, lag, mean, sum"
                ),
            );
        };
        let mut args = Vec::with_capacity(arity);
        if !self.peek_sym(")") {
            loop {
                args.push(self.or(lag)?);
                if !self.eat(",") {
                    break;
                }
            }
        }
        self.expect(")")?;
        if args.len() != arity {
            return fail(
                self,
                format!("{name}() takes {arity} argument(s), not {}", args.len()),
            );
        }
        Ok(Node::Call(func, args))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Symbol;

    fn rows(mids: &[f64]) -> Vec<FeatureRow> {
        mids.iter()
            .map(|m| {
                let mut r = FeatureRow::empty(Symbol::new("X").unwrap(), 0, "1s".into());
                r.mid = Some(*m);
                r
            })
            .collect()
    }

    fn eval(text: &str, mids: &[f64]) -> f64 {
        text.parse::<Expr>().unwrap().eval(&rows(mids))
    }

    #[test]
    fn arithmetic_precedence_and_functions() {
        assert_eq!(eval("1 + 2 * 3 - 4 / 2", &[0.0]), 5.0);
        assert_eq!(eval("-2 ^ 2", &[0.0]), -4.0);
        assert_eq!(eval("2 ^ 3 ^ 2", &[0.0]), 512.0);
        assert_eq!(eval("(1 + 2) * 3", &[0.0]), 9.0);
        assert_eq!(eval("clamp(mid, 0, 10)", &[12.0]), 10.0);
        assert_eq!(eval("if(mid > 1 && mid < 3, 7, 8)", &[2.0]), 7.0);
        assert_eq!(
            eval("sign(-3) + abs(-2) + min(1, 2) + max(1, 2)", &[0.0]),
            4.0
        );
        assert_eq!(eval("nz(vwap, mid)", &[5.0]), 5.0);
        assert_eq!(eval("!(mid == 5) || 0", &[5.0]), 0.0);
        assert!(eval("mid > vwap", &[5.0]) == 0.0);
        assert!(eval("max(vwap, 1)", &[5.0]).is_nan());
    }

    #[test]
    fn lags_read_earlier_buckets_and_count_depth() {
        let e: Expr = "mid / lag(mid, 2) - 1 + lag(lag(mid, 1) * 0, 3)"
            .parse()
            .unwrap();
        assert_eq!(e.max_lag(), 4);
        assert_eq!(
            e.eval(&rows(&[0.0, 100.0, 0.0, 0.0, 0.0, 110.0])),
            110.0 / 0.0 - 1.0
        );
        let e: Expr = "mid - lag(mid, 1)".parse().unwrap();
        assert_eq!(e.eval(&rows(&[3.0, 5.0])), 2.0);
        assert!(e.eval(&rows(&[5.0])).is_nan());
    }

    #[test]
    fn windows_average_the_latest_buckets_and_count_their_depth() {
        let rows: Vec<FeatureRow> = [1.0, 2.0, 3.0, 4.0]
            .iter()
            .map(|&c| {
                let mut r = FeatureRow::empty(crate::Symbol::new("ABC").unwrap(), 0, "1m".into());
                r.close = Some(c);
                r
            })
            .collect();
        let fast: Expr = "mean(close, 2) - mean(lag(close, 1), 3)".parse().unwrap();
        assert_eq!(fast.max_lag(), 3);
        assert_eq!(fast.eval(&rows), 3.5 - 2.0);
        let s: Expr = "sum(close, 4)".parse().unwrap();
        assert_eq!(s.eval(&rows), 10.0);
        assert!(
            s.eval(&rows[1..]).is_nan(),
            "a window reaching before the data is NaN"
        );
        let err = "mean(close, 0)".parse::<Expr>().unwrap_err().to_string();
        assert!(err.contains("from 1"), "{err}");
    }

    #[test]
    fn future_reads_are_refused() {
        for (text, says) in [
            ("lead(mid, 1)", "future"),
            ("mid - shift(mid, -1)", "future"),
            ("lag(mid, -1)", "negative"),
            ("lag(mid, k)", "whole number"),
            ("lag(mid, 1.5)", "whole number"),
            ("future(mid)", "future"),
            ("fwd_ret_1s > 0", "unknown column"),
        ] {
            let err = text.parse::<Expr>().unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn syntax_errors_say_where() {
        for (text, says) in [
            ("mid +", "ends too early"),
            ("mid = 3", "'=='"),
            ("(mid", "expected ')'"),
            ("mid mid", "unexpected name"),
            ("abs(1, 2)", "takes 1"),
            ("foo(1)", "unknown function"),
            ("mid # 2", "unexpected character"),
        ] {
            let err = text.parse::<Expr>().unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
