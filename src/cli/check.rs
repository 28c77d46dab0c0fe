//! `manager-operator check -f FILE`: offline validation of ManagerConfig YAML with the same
//! rules as the webhook, plus strict decoding. Exit 0 all valid, 1 any invalid, 2 unreadable.

use std::io::{Read, Write};
use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;

use super::HookPolicyArgs;
use crate::validation::{self, Violation, decode};

/// Largest input `check` reads (a ManagerConfig is a few KiB; etcd's object limit is 1.5 MiB).
pub const MAX_INPUT_BYTES: u64 = 16 * 1024 * 1024;

/// Arguments of `check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// YAML file with one or more ManagerConfig documents; `-` reads standard input.
    /// May be given several times.
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// Namespace assumed for documents without metadata.namespace (as `kubectl apply -n`).
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,

    /// Hook policy the operator runs with.
    #[command(flatten)]
    pub policy: HookPolicyArgs,
}

/// Outcome of checking some input.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Lines to print: `FILE[#doc]: field: message`.
    pub lines: Vec<String>,
    /// Any document invalid.
    pub invalid: bool,
    /// Any input unreadable or not YAML.
    pub unreadable: bool,
    /// Documents checked.
    pub documents: usize,
}

/// Checks the YAML text of one file named `label`.
pub fn check_text(
    label: &str,
    text: &str,
    namespace: &str,
    policy: &validation::HookPolicy,
) -> Report {
    let mut report = Report::default();
    let mut docs = Vec::new();
    for de in serde_yaml::Deserializer::from_str(text) {
        match serde_yaml::Value::deserialize(de) {
            Ok(serde_yaml::Value::Null) => {}
            Ok(v) => docs.push(v),
            Err(e) => {
                report.unreadable = true;
                report.lines.push(format!("{label}: not valid YAML: {e}"));
                return report;
            }
        }
    }
    if docs.is_empty() {
        report.unreadable = true;
        report
            .lines
            .push(format!("{label}: no YAML documents found"));
        return report;
    }
    let multi = docs.len() > 1;
    for (i, doc) in docs.into_iter().enumerate() {
        report.documents += 1;
        let where_ = if multi {
            format!("{label}#{}", i + 1)
        } else {
            label.to_string()
        };
        let violations = check_document(doc, namespace, policy);
        if !violations.is_empty() {
            report.invalid = true;
        }
        report
            .lines
            .extend(violations.iter().map(|v| format!("{where_}: {v}")));
    }
    report
}

fn check_document(
    doc: serde_yaml::Value,
    namespace: &str,
    policy: &validation::HookPolicy,
) -> Vec<Violation> {
    let api_version = doc.get("apiVersion").and_then(|v| v.as_str());
    let kind = doc.get("kind").and_then(|v| v.as_str());
    if let Err(v) = decode::check_type_meta(api_version, kind) {
        return vec![v];
    }
    // The CRD's own limits (maxLength, pattern, ...), as the API server's schema validation
    // applies them; a field the rules below also flag is reported once, by them.
    let limits = serde_json::to_value(&doc)
        .map(|json| validation::schema::check_limits(&json))
        .unwrap_or_default();
    let mut out = match decode::strict(doc) {
        Ok(mut mc) => {
            if mc.metadata.namespace.is_none() {
                mc.metadata.namespace = Some(namespace.to_string());
            }
            match validation::resolve(&mc, policy) {
                Ok(_) => vec![],
                Err(v) => v.0,
            }
        }
        Err(v) => v,
    };
    for l in limits {
        if !out.iter().any(|v| v.field == l.field) {
            out.push(l);
        }
    }
    out
}

fn read_input(path: &PathBuf) -> Result<String, String> {
    let mut buf = Vec::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin()
            .take(MAX_INPUT_BYTES + 1)
            .read_to_end(&mut buf)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(MAX_INPUT_BYTES + 1).read_to_end(&mut buf))
    };
    read.map_err(|e| format!("cannot read: {e}"))?;
    if buf.len() as u64 > MAX_INPUT_BYTES {
        return Err(format!("larger than {} MiB", MAX_INPUT_BYTES / 1024 / 1024));
    }
    String::from_utf8(buf).map_err(|e| format!("not UTF-8 text: {e}"))
}

/// Runs `check`; returns the process exit code.
pub fn run(args: &CheckArgs) -> u8 {
    let policy = args.policy.policy();
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    let (mut invalid, mut unreadable, mut documents) = (false, false, 0);
    for path in &args.files {
        let label = if path.as_os_str() == "-" {
            "<stdin>".to_string()
        } else {
            path.display().to_string()
        };
        let report = match read_input(path) {
            Ok(text) => check_text(&label, &text, &args.namespace, &policy),
            Err(e) => Report {
                lines: vec![format!("{label}: {e}")],
                unreadable: true,
                ..Report::default()
            },
        };
        for line in &report.lines {
            let _ = if report.unreadable {
                writeln!(stderr, "{line}")
            } else {
                writeln!(stdout, "{line}")
            };
        }
        invalid |= report.invalid;
        unreadable |= report.unreadable;
        documents += report.documents;
    }
    if unreadable {
        2
    } else if invalid {
        1
    } else {
        let _ = writeln!(stdout, "{documents} ManagerConfig document(s) valid");
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Report {
        check_text(
            "f.yaml",
            text,
            "default",
            &validation::HookPolicy::default(),
        )
    }

    const VALID: &str = "apiVersion: manager-operator.io/v1alpha1\nkind: ManagerConfig\nmetadata: {name: a}\nspec:\n  workers: [{name: w, watch: {apiVersion: v1, kind: ConfigMap}, hook: {url: 'http://h.svc/'}}]\n";

    #[test]
    fn valid_document() {
        let r = check(VALID);
        assert!(!r.invalid && !r.unreadable, "{r:?}");
        assert_eq!(r.documents, 1);
    }

    #[test]
    fn multi_document_labels_each_doc() {
        let bad = VALID.replace(
            "spec:\n",
            "spec:\n  leaderElection: {leaseDuration: 5s, renewDeadline: 6s}\n",
        );
        let r = check(&format!("{VALID}---\n{bad}"));
        assert!(r.invalid);
        assert_eq!(
            r.lines,
            vec![
                "f.yaml#2: spec.leaderElection.renewDeadline: must be less than leaseDuration (5s), got 6s"
            ]
        );
    }

    #[test]
    fn the_crd_limits_are_checked_too() {
        for (from, to, field) in [
            ("url: 'http://h.svc/'", "url: 'http://h.svc/\t'", "hook.url"),
            (
                "kind: ConfigMap}",
                "kind: ConfigMap, labelSelector: 'a in (LONG)'}",
                "labelSelector",
            ),
            ("name: a}", "name: Bad_Name}", "metadata.name"),
            (
                "spec:\n",
                "spec:\n  startupTimeout: +5s\n",
                "spec.startupTimeout",
            ),
            ("hook: {url", "concurrency: 65, hook: {url", "concurrency"),
        ] {
            let long = format!("{}b", "b,".repeat(600));
            let doc = VALID.replace(from, &to.replace("LONG", &long));
            assert_ne!(doc, VALID, "{from}");
            let r = check(&doc);
            assert!(r.invalid, "{field}: {r:?}");
            assert!(r.lines.iter().any(|l| l.contains(field)), "{field}: {r:?}");
            assert_eq!(r.lines.len(), 1, "one line per broken field: {r:?}");
        }
    }

    #[test]
    fn unknown_field_is_invalid() {
        let r = check(&VALID.replace("metadata: {name: a}", "metadata: {name: a}\nextra: 1"));
        assert!(r.invalid);
        assert_eq!(r.lines, vec!["f.yaml: extra: unknown field"]);
    }

    #[test]
    fn wrong_kind_is_invalid() {
        let r = check("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n");
        assert!(r.invalid);
        assert!(r.lines[0].contains("not a ManagerConfig"));
    }

    #[test]
    fn garbage_is_unreadable_not_panic() {
        for text in ["{", ": : :", "\t- [", "", "---\n---\n", "a: *nope"] {
            let r = check(text);
            assert!(r.unreadable || r.invalid, "{text:?}: {r:?}");
            assert!(!r.lines.is_empty());
        }
        // A scalar or a list is YAML but not a ManagerConfig.
        assert!(check("42").invalid);
        assert!(check("[1, 2]").invalid);
    }

    #[test]
    fn billion_laughs_is_refused() {
        let mut text = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let mut prev = 'a';
        for c in 'b'..='j' {
            text.push_str(&format!("{c}: &{c} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
            prev = c;
        }
        let r = check(&text);
        assert!(r.unreadable || r.invalid);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,200}") {
            let _ = check(&s);
        }

        #[test]
        fn mutated_valid_document_never_panics(pos in 0usize..200, c in proptest::char::any()) {
            let mut chars: Vec<char> = VALID.chars().collect();
            let p = pos % chars.len();
            chars[p] = c;
            let text: String = chars.into_iter().collect();
            let _ = check(&text);
        }
    }
}
