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
    /// `mean(x, n)` (`true`) or `sum(x, n)` over the latest `n` buckets; the last field is the
    /// window's number among the expression's distinct windows (see [`Memo`]).
    Window(bool, Box<Node>, usize, usize),
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
        self.columns().contains(&c)
    }

    /// How many buckets back the expression reads (0 when it reads only the latest).
    pub fn max_lag(&self) -> usize {
        self.max_lag
    }

    /// Evaluates over `history`, the symbol's rows oldest first; the last row is the bucket that
    /// just closed. A lag reaching before the first row reads NaN.
    pub fn eval(&self, history: &[FeatureRow]) -> f64 {
        let row = |k: usize| history.len().checked_sub(1 + k).map(|i| &history[i]);
        self.eval_with(&row)
    }

    /// Evaluates over any indexable history (a ring buffer, say): `row(k)` is the row `k`
    /// buckets before the latest (`row(0)` the latest), `None` past the start.
    pub fn eval_with<'a>(&self, row: &dyn Fn(usize) -> Option<&'a FeatureRow>) -> f64 {
        eval_node(&self.root, &RowFn(row), 0, &mut Memo::default())
    }

    /// Every column the expression reads, each once, in the order it first names them.
    ///
    /// ```
    /// use flowsense_core::expr::Expr;
    /// use flowsense_core::features::FeatureColumn;
    /// let e: Expr = "mean(close, 10) - lag(vwap, 1) + close".parse().unwrap();
    /// let names = ["close", "vwap"].map(|n| FeatureColumn::parse(n).unwrap());
    /// assert_eq!(e.columns(), names);
    /// ```
    pub fn columns(&self) -> Vec<FeatureColumn> {
        fn walk(n: &Node, out: &mut Vec<FeatureColumn>) {
            match n {
                Node::Num(_) => {}
                Node::Col(c) => {
                    if !out.contains(c) {
                        out.push(*c);
                    }
                }
                Node::Neg(a) | Node::Not(a) | Node::Lag(a, _) | Node::Window(_, a, _, _) => {
                    walk(a, out)
                }
                Node::Bin(_, a, b) => {
                    walk(a, out);
                    walk(b, out);
                }
                Node::Call(_, args) => args.iter().for_each(|a| walk(a, out)),
            }
        }
        let mut out = Vec::new();
        walk(&self.root, &mut out);
        out
    }
}

/// The values a few expressions read, kept bucket by bucket: a history of only the columns they
/// name, as plain numbers side by side, instead of whole feature rows.
///
/// Evaluating over it gives exactly what [`Expr::eval`] gives over the rows it was fed (the same
/// values, summed in the same order), at a fraction of the cost: a 30-bucket window reads 30
/// neighbouring numbers instead of a column out of 30 rows of a few hundred bytes each.
///
/// ```
/// use flowsense_core::expr::{ColumnHistory, Expr};
/// use flowsense_core::{FeatureRow, Symbol};
/// let e: Expr = "mean(close, 2) - lag(close, 2)".parse().unwrap();
/// let mut h = ColumnHistory::new(&[&e]);
/// let mut rows = Vec::new();
/// for close in [10.0, 11.0, 12.0, 13.0] {
///     let mut r = FeatureRow::empty(Symbol::new("ABC").unwrap(), 0, "1m".into());
///     r.close = Some(close);
///     h.push(&r);
///     rows.push(r);
///     assert_eq!(h.eval(&e).to_bits(), e.eval(&rows).to_bits());
/// }
/// assert_eq!(h.eval(&e), 12.5 - 11.0);
/// assert_eq!(h.len(), 3); // as far back as the expression reads
/// ```
#[derive(Clone, Debug)]
pub struct ColumnHistory {
    columns: Vec<FeatureColumn>,
    /// Rows kept: one more than the deepest lag.
    depth: usize,
    /// Row-major values, oldest first, from `start`.
    values: Vec<f64>,
    start: usize,
    rows: usize,
}

impl ColumnHistory {
    /// A history of what `exprs` read, as deep as the deepest of them looks back.
    pub fn new(exprs: &[&Expr]) -> Self {
        let mut columns = Vec::new();
        for c in exprs.iter().flat_map(|e| e.columns()) {
            if !columns.contains(&c) {
                columns.push(c);
            }
        }
        let depth = exprs.iter().map(|e| e.max_lag()).max().unwrap_or(0) + 1;
        ColumnHistory {
            columns,
            depth,
            values: Vec::new(),
            start: 0,
            rows: 0,
        }
    }

    /// Appends the bucket that just closed, dropping what no expression reaches any more.
    pub fn push(&mut self, row: &FeatureRow) {
        let width = self.columns.len();
        self.values.extend(self.columns.iter().map(|c| c.read(row)));
        if self.rows == self.depth {
            self.start += width;
        } else {
            self.rows += 1;
        }
        // Drop the dead front now and then, so pushes stay amortised O(width).
        if self.start > 4096 && self.start * 2 > self.values.len() {
            self.values.drain(..self.start);
            self.start = 0;
        }
    }

    /// Buckets held.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// True before the first bucket.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Evaluates `e` (one of the expressions the history was made for) at the latest bucket.
    pub fn eval(&self, e: &Expr) -> f64 {
        eval_node(&e.root, self, 0, &mut Memo::default())
    }

    fn slot(&self, c: FeatureColumn) -> Option<usize> {
        self.columns.iter().position(|x| *x == c)
    }

    /// The value in `slot` of the bucket `k` before the latest; NaN past the start.
    fn at(&self, slot: usize, k: usize) -> f64 {
        if k < self.rows {
            self.values[self.values.len() - (k + 1) * self.columns.len() + slot]
        } else {
            f64::NAN
        }
    }
}

/// Where an expression's column values come from.
trait Source {
    /// Column `c` of the row `k` buckets before the latest; NaN past the start.
    fn value(&self, c: FeatureColumn, k: usize) -> f64;

    /// Sum of column `c` over the rows `lag .. lag + n` buckets back, nearest first.
    fn window_sum(&self, c: FeatureColumn, lag: usize, n: usize) -> f64 {
        (0..n).map(|k| self.value(c, lag + k)).sum()
    }
}

/// Rows found through a function.
struct RowFn<'f, 'a>(&'f dyn Fn(usize) -> Option<&'a FeatureRow>);

impl Source for RowFn<'_, '_> {
    fn value(&self, c: FeatureColumn, k: usize) -> f64 {
        (self.0)(k).map_or(f64::NAN, |r| c.read(r))
    }
}

impl Source for ColumnHistory {
    fn value(&self, c: FeatureColumn, k: usize) -> f64 {
        self.slot(c).map_or(f64::NAN, |slot| self.at(slot, k))
    }

    /// The column's slot found once for the whole window, and a window that lies wholly in the
    /// history read as one strided run of the row-major values (nearest first, as the general
    /// path adds them, so the sum has the same bits).
    fn window_sum(&self, c: FeatureColumn, lag: usize, n: usize) -> f64 {
        let Some(slot) = self.slot(c) else {
            return f64::NAN;
        };
        let width = self.columns.len();
        if n > 0 && lag + n <= self.rows {
            let nearest = self.values.len() - (lag + 1) * width + slot;
            let farthest = nearest - (n - 1) * width;
            return self.values[farthest..=nearest]
                .iter()
                .rev()
                .step_by(width)
                .sum();
        }
        (0..n).map(|i| self.at(slot, lag + i)).sum()
    }
}

fn truth(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// Gives each window a number, equal windows (same kind, width and inner expression) the same
/// one, so that an expression naming `mean(close, 10)` twice (`if(mean(close, 10) > x, ..,
/// if(mean(close, 10) < y, ..))`) sums it once per evaluation. Inner windows are numbered first,
/// so equal inner expressions compare equal.
fn number_windows(n: &mut Node, seen: &mut Vec<(bool, Node, usize)>) {
    match n {
        Node::Num(_) | Node::Col(_) => {}
        Node::Neg(a) | Node::Not(a) | Node::Lag(a, _) => number_windows(a, seen),
        Node::Bin(_, a, b) => {
            number_windows(a, seen);
            number_windows(b, seen);
        }
        Node::Call(_, args) => args.iter_mut().for_each(|a| number_windows(a, seen)),
        Node::Window(mean, inner, width, id) => {
            number_windows(inner, seen);
            let key = (*mean, inner.as_ref().clone(), *width);
            *id = match seen.iter().position(|k| *k == key) {
                Some(i) => i,
                None => {
                    seen.push(key);
                    seen.len() - 1
                }
            };
        }
    }
}

/// Window values already computed in one evaluation, by window number and lag: the same window
/// read twice gives the same bits, so it is summed once. A few entries cover real expressions;
/// past them windows are simply recomputed.
#[derive(Default)]
struct Memo {
    entries: [(usize, usize, f64); 8],
    len: usize,
}

impl Memo {
    fn get(&self, id: usize, lag: usize) -> Option<f64> {
        self.entries[..self.len]
            .iter()
            .find(|e| e.0 == id && e.1 == lag)
            .map(|e| e.2)
    }

    fn put(&mut self, id: usize, lag: usize, v: f64) {
        if self.len < self.entries.len() {
            self.entries[self.len] = (id, lag, v);
            self.len += 1;
        }
    }
}

fn eval_node<S: Source>(n: &Node, src: &S, lag: usize, memo: &mut Memo) -> f64 {
    let mut ev = |m: &Node| eval_node(m, src, lag, memo);
    match n {
        Node::Num(v) => *v,
        Node::Col(c) => src.value(*c, lag),
        Node::Neg(a) => -ev(a),
        Node::Not(a) => {
            let v = ev(a);
            if v.is_nan() {
                f64::NAN
            } else {
                truth(v == 0.0)
            }
        }
        Node::Lag(a, k) => eval_node(a, src, lag + k, memo),
        Node::Window(mean, a, n, id) => {
            if let Some(v) = memo.get(*id, lag) {
                return v;
            }
            let total: f64 = match a.as_ref() {
                // The common case, a window over a column: read the values directly.
                Node::Col(c) => src.window_sum(*c, lag, *n),
                _ => (0..*n).map(|k| eval_node(a, src, lag + k, memo)).sum(),
            };
            let v = if *mean { total / *n as f64 } else { total };
            memo.put(*id, lag, v);
            v
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
            let mut a = |i: usize| ev(&args[i]);
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
        let mut root = p.or(0)?;
        if p.pos != p.tokens.len() {
            return Err(p.error(format!("unexpected {}", p.tokens[p.pos].0)));
        }
        number_windows(&mut root, &mut Vec::new());
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
                return Ok(Node::Window(name == "mean", Box::new(inner), k, 0));
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

#[cfg(test)]
mod column_history_tests {
    use super::*;
    use crate::Symbol;
    use proptest::prelude::*;

    const EXPRS: &[&str] = &[
        "mean(close, 10) - mean(close, 30)",
        "sum(mid, 3) / lag(mean(mid, 4), 2) + nz(vwap, mid)",
        "if(lag(close, 1) > mean(close, 5), sum(close - mid, 4), -abs(lag(mid, 6)))",
        "mean(lag(close, 2), 3) * sign(mid - lag(mid, 1))",
        "1.5",
    ];

    proptest! {
        /// Over any values (missing ones too), the column history evaluates every expression
        /// to the very bits the rows themselves give, before and after it fills up.
        #[test]
        fn column_history_equals_rows(values in proptest::collection::vec(
            (prop_oneof![Just(f64::NAN), -1e6..1e6f64], -1e6..1e6f64, prop_oneof![Just(None), (0.0..1e3f64).prop_map(Some)]),
            1..80,
        )) {
            let exprs: Vec<Expr> = EXPRS.iter().map(|t| t.parse().unwrap()).collect();
            let refs: Vec<&Expr> = exprs.iter().collect();
            let mut h = ColumnHistory::new(&refs);
            let mut rows = Vec::new();
            for (close, mid, vwap) in values {
                let mut r = FeatureRow::empty(Symbol::new("X").unwrap(), 0, "1s".into());
                r.close = (!close.is_nan()).then_some(close);
                r.mid = Some(mid);
                r.vwap = vwap;
                h.push(&r);
                rows.push(r);
                for e in &exprs {
                    prop_assert_eq!(h.eval(e).to_bits(), e.eval(&rows).to_bits(), "{}", e);
                }
            }
        }
    }

    proptest! {
        /// A window named twice, at other lags, or inside another window is summed once per
        /// evaluation and lag, and gives exactly what evaluating it on its own gives.
        #[test]
        fn repeated_windows_equal_their_own_evaluation(closes in proptest::collection::vec(-1e6..1e6f64, 1..40)) {
            let rows: Vec<FeatureRow> = closes
                .iter()
                .map(|&c| {
                    let mut r = FeatureRow::empty(Symbol::new("X").unwrap(), 0, "1s".into());
                    r.close = Some(c);
                    r
                })
                .collect();
            let e = |t: &str| t.parse::<Expr>().unwrap();
            let (m3, m2) = (e("mean(close, 3)"), e("mean(close, 2)"));
            let at = |x: &Expr, back: usize| x.eval(&rows[..rows.len().saturating_sub(back)]);
            let (a, a1) = (at(&m3, 0), at(&m3, 1));
            let twice = e("if(mean(close, 3) > 0, mean(close, 3), -mean(close, 3))").eval(&rows);
            // `a > 0` is 0 (false), not NaN, when `a` is missing: then the else branch.
            let want = if a > 0.0 { a } else { -a };
            prop_assert_eq!(twice.to_bits(), want.to_bits());
            let lagged = e("mean(close, 3) - lag(mean(close, 3), 1)").eval(&rows);
            prop_assert_eq!(lagged.to_bits(), (a - a1).to_bits());
            let nested = e("sum(mean(close, 2), 3) + mean(close, 2)").eval(&rows);
            let inner: f64 = (0..3).map(|k| at(&m2, k)).sum();
            prop_assert_eq!(nested.to_bits(), (inner + at(&m2, 0)).to_bits());
        }
    }

    #[test]
    fn equal_windows_share_a_number_and_others_do_not() {
        let e: Expr = "mean(close, 3) + sum(close, 3) + mean(close, 3) + mean(mid, 3) + lag(mean(close, 3), 2)"
            .parse()
            .unwrap();
        let mut ids = Vec::new();
        fn walk(n: &Node, ids: &mut Vec<usize>) {
            match n {
                Node::Window(_, a, _, id) => {
                    ids.push(*id);
                    walk(a, ids);
                }
                Node::Neg(a) | Node::Not(a) | Node::Lag(a, _) => walk(a, ids),
                Node::Bin(_, a, b) => {
                    walk(a, ids);
                    walk(b, ids);
                }
                Node::Call(_, args) => args.iter().for_each(|a| walk(a, ids)),
                Node::Num(_) | Node::Col(_) => {}
            }
        }
        walk(&e.root, &mut ids);
        assert_eq!(ids, [0, 1, 0, 2, 0]);
    }

    #[test]
    fn a_long_history_keeps_only_its_depth() {
        let e: Expr = "mean(mid, 7) - lag(mid, 3)".parse().unwrap();
        let mut h = ColumnHistory::new(&[&e]);
        let mut rows = Vec::new();
        for i in 0..20_000 {
            let mut r = FeatureRow::empty(Symbol::new("X").unwrap(), 0, "1s".into());
            r.mid = Some((i as f64 * 0.37).sin());
            h.push(&r);
            rows.push(r);
            if i % 997 == 0 || i > 19_990 {
                assert_eq!(h.eval(&e).to_bits(), e.eval(&rows).to_bits());
            }
        }
        assert_eq!(h.len(), 7);
        assert!(h.values.len() <= 2 * 4096 + 14, "{}", h.values.len());
    }
}
