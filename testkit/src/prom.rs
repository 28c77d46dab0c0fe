//! A Prometheus text exposition parser: samples with their labels, sums, histograms and
//! `histogram_quantile`, and [`value`], the one number a test asserts on.

use std::collections::BTreeMap;

/// The value of the first sample named exactly `name` whose labels include every pair of
/// `labels`.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    parse_prometheus(text)
        .into_iter()
        .find(|s| s.name == name && matches(s, labels))
        .map(|s| s.value)
}

/// One sample line: name, labels, value.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Metric name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// Parses the samples of a Prometheus text exposition (comments skipped).
pub fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (head, value) = match line.rfind('}') {
            Some(i) => (&line[..=i], line[i + 1..].trim()),
            None => match line.split_once(' ') {
                Some((h, v)) => (h, v.trim()),
                None => continue,
            },
        };
        let value = value.split_whitespace().next().unwrap_or("");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => match v.parse() {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        let (name, labels) = match head.split_once('{') {
            Some((n, rest)) => (n.to_string(), parse_labels(rest.trim_end_matches('}'))),
            None => (head.to_string(), BTreeMap::new()),
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_string();
        let after = &rest[eq + 1..];
        if !after.starts_with('"') {
            break;
        }
        let mut val = String::new();
        let mut chars = after[1..].char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        val.push(match n {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 2;
                    break;
                }
                c => val.push(c),
            }
        }
        out.insert(key, val);
        rest = &after[end.min(after.len())..];
    }
    out
}

/// Sum of the samples named `name` whose labels include every pair of `filter`.
pub fn sum_of(samples: &[Sample], name: &str, filter: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && matches(s, filter))
        .map(|s| s.value)
        .sum()
}

fn matches(s: &Sample, filter: &[(&str, &str)]) -> bool {
    filter
        .iter()
        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
}

/// A cumulative histogram: (upper bound, cumulative count), sorted, summed over series.
pub type Buckets = Vec<(f64, f64)>;

/// The `NAME_bucket` series of a histogram, summed over all series matching `filter`.
pub fn histogram(samples: &[Sample], name: &str, filter: &[(&str, &str)]) -> Buckets {
    let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    let bucket = format!("{name}_bucket");
    for s in samples
        .iter()
        .filter(|s| s.name == bucket && matches(s, filter))
    {
        let le: f64 = match s.labels.get("le").map(String::as_str) {
            Some("+Inf") => f64::INFINITY,
            Some(v) => match v.parse() {
                Ok(x) => x,
                Err(_) => continue,
            },
            None => continue,
        };
        let e = by_le.entry(le.to_bits()).or_insert((le, 0.0));
        e.1 += s.value;
    }
    let mut v: Vec<(f64, f64)> = by_le.into_values().collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// `after - before`, bucket by bucket (same bucket layout assumed; missing = 0).
pub fn delta(after: &Buckets, before: &Buckets) -> Buckets {
    after
        .iter()
        .map(|(le, c)| {
            let b = before
                .iter()
                .find(|(l, _)| l.to_bits() == le.to_bits())
                .map_or(0.0, |x| x.1);
            (*le, c - b)
        })
        .collect()
}

/// Total count of a cumulative histogram.
pub fn hist_count(b: &Buckets) -> f64 {
    b.last().map_or(0.0, |x| x.1)
}

/// Prometheus' `histogram_quantile`: linear interpolation inside the bucket holding the rank
/// (the lowest bucket starts at 0; a rank in +Inf returns the highest finite bound).
pub fn hist_quantile(q: f64, b: &Buckets) -> f64 {
    let total = hist_count(b);
    if total <= 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let mut prev_le = 0.0;
    let mut prev_c = 0.0;
    for (le, c) in b {
        if *c >= rank {
            if le.is_infinite() {
                return prev_le;
            }
            let in_bucket = c - prev_c;
            if in_bucket <= 0.0 {
                return *le;
            }
            return prev_le + (le - prev_le) * (rank - prev_c) / in_bucket;
        }
        prev_le = *le;
        prev_c = *c;
    }
    prev_le
}
