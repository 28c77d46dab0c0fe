//! Go duration strings (`"15s"`, `"1m30s"`, `"1h2m3.5s"`, `"500ms"`), parsed exactly as Go's
//! `time.ParseDuration` does, and formatted as Go's `time.Duration.String()` does.
//!
//! Kubernetes users write durations this way everywhere, so the operator accepts exactly the
//! same language: a sign, then one or more `<number><unit>` pairs, where the number may have a
//! fraction and the unit is one of `ns`, `us` (`µs`, `μs`), `ms`, `s`, `m`, `h`; the bare string
//! `"0"` is zero. Overflow past ±2^63-1 nanoseconds is an error, not a wrap.

use std::fmt;
use std::time::Duration;

use thiserror::Error;

/// A signed Go duration in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration(i64);

/// Why a string is not a Go duration.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DurationError {
    /// The string is empty.
    #[error("empty duration")]
    Empty,
    /// A number is missing where one is required (e.g. `"s"`, `"."`).
    #[error("invalid duration {0:?}: expected a number")]
    MissingNumber(String),
    /// A number has no unit (e.g. `"15"`).
    #[error("invalid duration {0:?}: missing unit (use ns, us, ms, s, m or h)")]
    MissingUnit(String),
    /// An unknown unit (e.g. `"15d"`).
    #[error("invalid duration {input:?}: unknown unit {unit:?} (use ns, us, ms, s, m or h)")]
    UnknownUnit {
        /// The whole input.
        input: String,
        /// The offending unit.
        unit: String,
    },
    /// The value does not fit in 2^63-1 nanoseconds (about 292 years).
    #[error("invalid duration {0:?}: out of range (the maximum is about 2562047h)")]
    Overflow(String),
}

const NANOSECOND: u64 = 1;
const MICROSECOND: u64 = 1_000;
const MILLISECOND: u64 = 1_000_000;
const SECOND: u64 = 1_000_000_000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;

fn unit_value(unit: &str) -> Option<u64> {
    match unit {
        "ns" => Some(NANOSECOND),
        "us" | "\u{00b5}s" | "\u{03bc}s" => Some(MICROSECOND),
        "ms" => Some(MILLISECOND),
        "s" => Some(SECOND),
        "m" => Some(MINUTE),
        "h" => Some(HOUR),
        _ => None,
    }
}

/// Consumes leading ASCII digits; `None` on overflow of `u64` past 2^63.
fn leading_int(s: &str) -> Option<(u64, &str)> {
    let end = s.bytes().take_while(u8::is_ascii_digit).count();
    let mut x: u64 = 0;
    for b in s[..end].bytes() {
        if x > (1u64 << 63) / 10 {
            return None;
        }
        x = x * 10 + u64::from(b - b'0');
        if x > 1u64 << 63 {
            return None;
        }
    }
    Some((x, &s[end..]))
}

/// Consumes leading digits of a fraction: value, scale, rest. Digits past what fits are ignored.
fn leading_fraction(s: &str) -> (u64, f64, &str) {
    let end = s.bytes().take_while(u8::is_ascii_digit).count();
    let mut x: u64 = 0;
    let mut scale = 1.0f64;
    let mut overflow = false;
    for b in s[..end].bytes() {
        if overflow {
            continue;
        }
        if x > (i64::MAX as u64) / 10 {
            overflow = true;
            continue;
        }
        let y = x * 10 + u64::from(b - b'0');
        if y > 1u64 << 63 {
            overflow = true;
            continue;
        }
        x = y;
        scale *= 10.0;
    }
    (x, scale, &s[end..])
}

impl GoDuration {
    /// Zero.
    pub const ZERO: GoDuration = GoDuration(0);

    /// From nanoseconds.
    pub const fn from_nanos(n: i64) -> Self {
        GoDuration(n)
    }

    /// From whole seconds (saturating).
    pub const fn from_secs(s: i64) -> Self {
        GoDuration(s.saturating_mul(SECOND as i64))
    }

    /// From milliseconds (saturating).
    pub const fn from_millis(ms: i64) -> Self {
        GoDuration(ms.saturating_mul(MILLISECOND as i64))
    }

    /// Nanoseconds, signed.
    pub const fn as_nanos(self) -> i64 {
        self.0
    }

    /// True when strictly positive.
    pub const fn is_positive(self) -> bool {
        self.0 > 0
    }

    /// As a `std::time::Duration`; negative values clamp to zero.
    pub fn to_std(self) -> Duration {
        Duration::from_nanos(u64::try_from(self.0).unwrap_or(0))
    }

    /// Parses a Go duration string exactly as Go's `time.ParseDuration`.
    pub fn parse(input: &str) -> Result<Self, DurationError> {
        let orig = input;
        let mut s = input;
        if s.is_empty() {
            return Err(DurationError::Empty);
        }
        let mut neg = false;
        if let Some(rest) = s.strip_prefix('-') {
            neg = true;
            s = rest;
        } else if let Some(rest) = s.strip_prefix('+') {
            s = rest;
        }
        if s == "0" {
            return Ok(GoDuration(0));
        }
        if s.is_empty() {
            return Err(DurationError::MissingNumber(orig.to_string()));
        }
        let mut total: u64 = 0;
        while !s.is_empty() {
            // The next character must be [0-9.]
            let first = s.as_bytes()[0];
            if !(first == b'.' || first.is_ascii_digit()) {
                return Err(DurationError::MissingNumber(orig.to_string()));
            }
            let before = s.len();
            let (v, rest) =
                leading_int(s).ok_or_else(|| DurationError::Overflow(orig.to_string()))?;
            let pre = before != rest.len();
            s = rest;
            let mut frac: u64 = 0;
            let mut scale = 1.0f64;
            let mut post = false;
            if let Some(rest) = s.strip_prefix('.') {
                let before = rest.len();
                let (f, sc, rest) = leading_fraction(rest);
                post = before != rest.len();
                frac = f;
                scale = sc;
                s = rest;
            }
            if !pre && !post {
                return Err(DurationError::MissingNumber(orig.to_string()));
            }
            let unit_end = s
                .char_indices()
                .find(|(_, c)| *c == '.' || c.is_ascii_digit())
                .map_or(s.len(), |(i, _)| i);
            if unit_end == 0 {
                return Err(DurationError::MissingUnit(orig.to_string()));
            }
            let unit_str = &s[..unit_end];
            s = &s[unit_end..];
            let unit = unit_value(unit_str).ok_or_else(|| DurationError::UnknownUnit {
                input: orig.to_string(),
                unit: unit_str.to_string(),
            })?;
            if v > (1u64 << 63) / unit {
                return Err(DurationError::Overflow(orig.to_string()));
            }
            let mut v = v * unit;
            if frac > 0 {
                // float64 is needed to be nanosecond accurate for fractions of hours, as in Go.
                v = v.saturating_add((frac as f64 * (unit as f64 / scale)) as u64);
                if v > 1u64 << 63 {
                    return Err(DurationError::Overflow(orig.to_string()));
                }
            }
            total = total.saturating_add(v);
            if total > 1u64 << 63 {
                return Err(DurationError::Overflow(orig.to_string()));
            }
        }
        if neg {
            // -2^63 is representable.
            return Ok(GoDuration(0i64.wrapping_sub_unsigned(total)));
        }
        if total > i64::MAX as u64 {
            return Err(DurationError::Overflow(orig.to_string()));
        }
        Ok(GoDuration(total as i64))
    }
}

impl std::str::FromStr for GoDuration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GoDuration::parse(s)
    }
}

impl From<Duration> for GoDuration {
    fn from(d: Duration) -> Self {
        GoDuration(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }
}

/// Formats `v` (a fraction with `prec` digits) into `buf` ending at `w`, dropping trailing zeros.
fn fmt_frac(buf: &mut [u8], mut w: usize, mut v: u64, prec: usize) -> (usize, u64) {
    let mut print = false;
    for _ in 0..prec {
        let digit = v % 10;
        print = print || digit != 0;
        if print {
            w -= 1;
            buf[w] = digit as u8 + b'0';
        }
        v /= 10;
    }
    if print {
        w -= 1;
        buf[w] = b'.';
    }
    (w, v)
}

fn fmt_int(buf: &mut [u8], mut w: usize, mut v: u64) -> usize {
    if v == 0 {
        w -= 1;
        buf[w] = b'0';
    } else {
        while v > 0 {
            w -= 1;
            buf[w] = (v % 10) as u8 + b'0';
            v /= 10;
        }
    }
    w
}

impl fmt::Display for GoDuration {
    /// Formats like Go's `Duration.String()`: `"1h2m3.5s"`, `"500ms"`, `"0s"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 32];
        let mut w = buf.len();
        let neg = self.0 < 0;
        let mut u = self.0.unsigned_abs();
        if u < SECOND {
            let prec;
            w -= 1;
            buf[w] = b's';
            w -= 1;
            if u == 0 {
                return f.write_str("0s");
            } else if u < MICROSECOND {
                prec = 0;
                buf[w] = b'n';
            } else if u < MILLISECOND {
                prec = 3;
                // U+00B5 'µ' is two bytes in UTF-8; Go writes it. Use "us"-free form like Go.
                w -= 1;
                buf[w..w + 2].copy_from_slice("µ".as_bytes());
            } else {
                prec = 6;
                buf[w] = b'm';
            }
            let (nw, nu) = fmt_frac(&mut buf, w, u, prec);
            w = fmt_int(&mut buf, nw, nu);
        } else {
            w -= 1;
            buf[w] = b's';
            let (nw, nu) = fmt_frac(&mut buf, w, u, 9);
            w = nw;
            u = nu;
            w = fmt_int(&mut buf, w, u % 60);
            u /= 60;
            if u > 0 {
                w -= 1;
                buf[w] = b'm';
                w = fmt_int(&mut buf, w, u % 60);
                u /= 60;
                if u > 0 {
                    w -= 1;
                    buf[w] = b'h';
                    w = fmt_int(&mut buf, w, u);
                }
            }
        }
        if neg {
            w -= 1;
            buf[w] = b'-';
        }
        f.write_str(std::str::from_utf8(&buf[w..]).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Result<i64, DurationError> {
        GoDuration::parse(s).map(GoDuration::as_nanos)
    }

    #[test]
    fn parses_like_go() {
        // Cases from Go's time package tests.
        let cases: &[(&str, i64)] = &[
            ("0", 0),
            ("5s", 5 * SECOND as i64),
            ("30s", 30 * SECOND as i64),
            ("1478s", 1478 * SECOND as i64),
            ("-5s", -5 * SECOND as i64),
            ("+5s", 5 * SECOND as i64),
            ("-0", 0),
            ("+0", 0),
            ("5.0s", 5 * SECOND as i64),
            ("5.6s", 5 * SECOND as i64 + 600 * MILLISECOND as i64),
            ("5.s", 5 * SECOND as i64),
            (".5s", 500 * MILLISECOND as i64),
            ("1.0s", SECOND as i64),
            ("1.00s", SECOND as i64),
            ("1.004s", SECOND as i64 + 4 * MILLISECOND as i64),
            ("1.0040s", SECOND as i64 + 4 * MILLISECOND as i64),
            ("100.00100s", 100 * SECOND as i64 + MILLISECOND as i64),
            ("10ns", 10),
            ("11us", 11 * MICROSECOND as i64),
            ("12µs", 12 * MICROSECOND as i64),
            ("12μs", 12 * MICROSECOND as i64),
            ("13ms", 13 * MILLISECOND as i64),
            ("14s", 14 * SECOND as i64),
            ("15m", 15 * MINUTE as i64),
            ("16h", 16 * HOUR as i64),
            ("3h30m", 3 * HOUR as i64 + 30 * MINUTE as i64),
            (
                "10.5s4m",
                4 * MINUTE as i64 + 10 * SECOND as i64 + 500 * MILLISECOND as i64,
            ),
            (
                "-2m3.4s",
                -(2 * MINUTE as i64 + 3 * SECOND as i64 + 400 * MILLISECOND as i64),
            ),
            (
                "1h2m3s4ms5us6ns",
                HOUR as i64
                    + 2 * MINUTE as i64
                    + 3 * SECOND as i64
                    + 4 * MILLISECOND as i64
                    + 5 * MICROSECOND as i64
                    + 6,
            ),
            (
                "39h9m14.425s",
                39 * HOUR as i64
                    + 9 * MINUTE as i64
                    + 14 * SECOND as i64
                    + 425 * MILLISECOND as i64,
            ),
            ("52763797000ns", 52763797000),
            ("0.3333333333333333333h", 20 * MINUTE as i64),
            ("9007199254740993ns", 9007199254740993),
            ("9223372036854775807ns", i64::MAX),
            ("9223372036854775.807us", i64::MAX),
            ("9223372036s854ms775us807ns", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
            ("-9223372036854775.808us", i64::MIN),
            ("0.100000000000000000000h", 6 * MINUTE as i64),
            (
                "0.830103483285477580700h",
                49 * MINUTE as i64 + 48 * SECOND as i64 + 372539827,
            ),
            (
                "1h2m3.5s",
                HOUR as i64 + 2 * MINUTE as i64 + 3_500 * MILLISECOND as i64,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(p(input), Ok(*want), "parsing {input:?}");
        }
    }

    #[test]
    fn rejects_like_go() {
        for bad in [
            "",
            "3",
            "-",
            "s",
            ".",
            "-.",
            ".s",
            "+.s",
            "1d",
            "\u{ffd}",
            "9223372036854775808ns",
            "9223372036854775.808us",
            "9223372036854ms775us808ns",
            "-9223372036854775809ns",
            "3000000h",
            "1s ",
            " 1s",
            "1S",
            "1.5.5s",
        ] {
            assert!(
                GoDuration::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
        assert!(matches!(p("15"), Err(DurationError::MissingUnit(_))));
        assert!(matches!(p("15d"), Err(DurationError::UnknownUnit { .. })));
        assert!(matches!(p("3000000h"), Err(DurationError::Overflow(_))));
    }

    #[test]
    fn formats_like_go() {
        let cases: &[(i64, &str)] = &[
            (0, "0s"),
            (1, "1ns"),
            (1100, "1.1µs"),
            (2_200_000, "2.2ms"),
            (3_300_000_000, "3.3s"),
            (4 * MINUTE as i64 + 5 * SECOND as i64, "4m5s"),
            (4 * MINUTE as i64 + 5_001 * MILLISECOND as i64, "4m5.001s"),
            (
                5 * HOUR as i64 + 6 * MINUTE as i64 + 7_001 * MILLISECOND as i64,
                "5h6m7.001s",
            ),
            (8 * MINUTE as i64 + 1, "8m0.000000001s"),
            (i64::MAX, "2562047h47m16.854775807s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
            (15 * SECOND as i64, "15s"),
            (HOUR as i64, "1h0m0s"),
            (500 * MILLISECOND as i64, "500ms"),
        ];
        for (ns, want) in cases {
            assert_eq!(GoDuration::from_nanos(*ns).to_string(), *want);
        }
    }

    proptest! {
        #[test]
        fn format_then_parse_roundtrips(ns in any::<i64>()) {
            let d = GoDuration::from_nanos(ns);
            prop_assert_eq!(GoDuration::parse(&d.to_string()), Ok(d));
        }

        #[test]
        fn never_panics(s in "\\PC{0,24}") {
            let _ = GoDuration::parse(&s);
        }

        #[test]
        fn composite_sums(h in 0i64..1000, m in 0i64..1000, s in 0i64..1000, ms in 0i64..1000) {
            let text = format!("{h}h{m}m{s}s{ms}ms");
            let want = h * HOUR as i64 + m * MINUTE as i64 + s * SECOND as i64 + ms * MILLISECOND as i64;
            prop_assert_eq!(p(&text), Ok(want));
        }
    }
}
