//! Label selector syntax, as `kubectl -l` and `labels.Parse` in apimachinery accept it:
//! `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, `a>1`, `a<1`, comma-separated.

use thiserror::Error;

/// Why a label selector does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid label selector {selector:?}: {reason}")]
pub struct SelectorError {
    /// The whole selector.
    pub selector: String,
    /// What is wrong.
    pub reason: String,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'
}

/// A qualified name part (`[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63 characters).
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(is_name_char)
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A label key: optional DNS-subdomain prefix and `/`, then a name.
pub fn valid_label_key(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => super::names::is_dns1123_subdomain(prefix) && valid_name(name),
        None => valid_name(key),
    }
}

/// A label value: empty, or a name.
pub fn valid_label_value(v: &str) -> bool {
    v.is_empty() || valid_name(v)
}

#[derive(Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Op(&'static str),
    Comma,
    Open,
    Close,
    Bang,
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut it = s.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {}
            ',' => out.push(Tok::Comma),
            '(' => out.push(Tok::Open),
            ')' => out.push(Tok::Close),
            '!' => {
                if it.peek().map(|(_, c)| *c) == Some('=') {
                    it.next();
                    out.push(Tok::Op("!="));
                } else {
                    out.push(Tok::Bang);
                }
            }
            '=' => {
                if it.peek().map(|(_, c)| *c) == Some('=') {
                    it.next();
                    out.push(Tok::Op("=="));
                } else {
                    out.push(Tok::Op("="));
                }
            }
            '>' => out.push(Tok::Op(">")),
            '<' => out.push(Tok::Op("<")),
            c if is_name_char(c) || c == '/' => {
                let mut end = i + c.len_utf8();
                while let Some((j, d)) = it.peek().copied() {
                    if is_name_char(d) || d == '/' {
                        end = j + d.len_utf8();
                        it.next();
                    } else {
                        break;
                    }
                }
                out.push(Tok::Ident(s[i..end].to_string()));
            }
            other => return Err(format!("unexpected character {other:?} at offset {i}")),
        }
    }
    Ok(out)
}

/// Parses a label selector; an empty string selects everything.
pub fn parse_label_selector(selector: &str) -> Result<(), SelectorError> {
    let err = |reason: String| SelectorError {
        selector: selector.to_string(),
        reason,
    };
    let toks = lex(selector).map_err(err)?;
    let mut i = 0;
    if toks.is_empty() {
        return Ok(());
    }
    loop {
        // One requirement.
        let negated = matches!(toks.get(i), Some(Tok::Bang));
        if negated {
            i += 1;
        }
        let key = match toks.get(i) {
            Some(Tok::Ident(k)) => k.clone(),
            other => return Err(err(format!("expected a label key, found {other:?}"))),
        };
        if !valid_label_key(&key) {
            return Err(err(format!("invalid label key {key:?}")));
        }
        i += 1;
        if !negated {
            match toks.get(i) {
                Some(Tok::Op(op)) => {
                    i += 1;
                    let value = match toks.get(i) {
                        Some(Tok::Ident(v)) => {
                            i += 1;
                            v.clone()
                        }
                        _ => String::new(),
                    };
                    if (*op == ">" || *op == "<") && value.parse::<i64>().is_err() {
                        return Err(err(format!("{op} needs an integer value, got {value:?}")));
                    }
                    if !valid_label_value(&value) {
                        return Err(err(format!("invalid label value {value:?}")));
                    }
                }
                Some(Tok::Ident(word)) if word == "in" || word == "notin" => {
                    i += 1;
                    if toks.get(i) != Some(&Tok::Open) {
                        return Err(err(format!("expected '(' after {word}")));
                    }
                    i += 1;
                    let mut count = 0;
                    loop {
                        match toks.get(i) {
                            Some(Tok::Ident(v)) => {
                                if !valid_label_value(v) {
                                    return Err(err(format!("invalid label value {v:?}")));
                                }
                                count += 1;
                                i += 1;
                            }
                            Some(Tok::Close) if count > 0 => {
                                i += 1;
                                break;
                            }
                            other => {
                                return Err(err(format!(
                                    "expected a value in the {word} list, found {other:?}"
                                )));
                            }
                        }
                        match toks.get(i) {
                            Some(Tok::Comma) => i += 1,
                            Some(Tok::Close) => {
                                i += 1;
                                break;
                            }
                            other => {
                                return Err(err(format!(
                                    "expected ',' or ')' in the {word} list, found {other:?}"
                                )));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        match toks.get(i) {
            None => return Ok(()),
            Some(Tok::Comma) => {
                i += 1;
                if i >= toks.len() {
                    return Err(err("trailing ','".into()));
                }
            }
            Some(other) => return Err(err(format!("unexpected {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_kubectl_syntax() {
        for ok in [
            "",
            "app=inventory",
            "app==inventory",
            "app!=inventory",
            "app",
            "!app",
            "app in (a,b)",
            "app notin (a, b)",
            "tier in (a),app=x,!legacy",
            "example.com/app=x",
            "app=",
            "size>3",
            "size<10",
        ] {
            assert_eq!(parse_label_selector(ok), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "app=in valid",
            "=x",
            "app in a",
            "app in ()",
            "app in (a",
            "app=x,",
            "-app=x",
            "app=x$",
            "size>x",
            "a/b/c=x",
            "app==-x",
        ] {
            assert!(parse_label_selector(bad).is_err(), "{bad:?} should fail");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = parse_label_selector(&s);
        }
    }
}
