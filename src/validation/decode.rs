//! Strict decoding of ManagerConfig documents (like `kubectl --validate=strict`): unknown
//! fields and wrong types are violations with their field path, never a panic.

use serde::de::Deserializer;

use super::{Rule, Violation};
use crate::api::ManagerConfig;

pub use crate::api::{API_VERSION, KIND};

/// Decodes a ManagerConfig from any self-describing deserializer (YAML or JSON values),
/// reporting unknown fields and type errors as violations with field paths.
pub fn strict<'de, D>(de: D) -> Result<ManagerConfig, Vec<Violation>>
where
    D: Deserializer<'de>,
{
    // Only the first [`MAX_UNKNOWN_LISTED`] unknown fields are kept (the rest are counted), so
    // a document of a few MiB made of unknown fields costs kilobytes here, not megabytes.
    let mut unknown = Vec::new();
    let mut more = 0usize;
    let mut record = |path: serde_ignored::Path<'_>| {
        let p = path.to_string();
        if ignorable(&p) {
            return;
        }
        if unknown.len() < MAX_UNKNOWN_LISTED {
            unknown.push(p);
        } else {
            more += 1;
        }
    };
    let ignored = serde_ignored::Deserializer::new(de, &mut record);
    let decoded: Result<ManagerConfig, _> = serde_path_to_error::deserialize(ignored);
    let mut violations: Vec<Violation> = unknown
        .into_iter()
        .map(|p| Violation {
            field: p,
            rule: Rule::Schema,
            message: "unknown field".into(),
        })
        .collect();
    if more > 0 {
        violations.push(Violation {
            field: "(root)".into(),
            rule: Rule::Schema,
            message: format!("… and {more} more unknown fields"),
        });
    }
    match decoded {
        Ok(mc) if violations.is_empty() => Ok(mc),
        Ok(_) => Err(violations),
        Err(e) => {
            let path = e.path().to_string();
            violations.push(Violation {
                field: if path == "." { "(root)".into() } else { path },
                rule: Rule::Schema,
                message: e.into_inner().to_string(),
            });
            Err(violations)
        }
    }
}

/// Unknown fields listed by [`strict`] at most; the rest are summed up in one violation.
pub const MAX_UNKNOWN_LISTED: usize = 20;

/// apiVersion/kind are checked by `check_type_meta`; metadata belongs to the API server's
/// schema; status is written by the operator only.
fn ignorable(p: &str) -> bool {
    p == "apiVersion"
        || p == "kind"
        || p.starts_with("metadata.")
        || p == "status"
        || p.starts_with("status.")
}

/// Checks `apiVersion` and `kind` of a JSON-like document before decoding.
pub fn check_type_meta(api_version: Option<&str>, kind: Option<&str>) -> Result<(), Violation> {
    if api_version != Some(API_VERSION) || kind != Some(KIND) {
        return Err(Violation {
            field: "(root)".into(),
            rule: Rule::Schema,
            message: format!(
                "not a ManagerConfig: apiVersion {:?}, kind {:?} (want {API_VERSION:?}, {KIND:?})",
                api_version.unwrap_or(""),
                kind.unwrap_or("")
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_capped() {
        let mut spec = serde_json::Map::new();
        for i in 0..5000 {
            spec.insert(format!("f{i}"), serde_json::json!(i));
        }
        let doc = serde_json::json!({"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": "a"}, "spec": spec});
        let v = strict(&doc).unwrap_err();
        assert!(v.len() <= MAX_UNKNOWN_LISTED + 2, "{}", v.len());
        assert!(
            v.iter()
                .any(|x| x.message.contains("and 4980 more unknown fields")),
            "{v:?}"
        );
    }

    #[test]
    fn unknown_fields_are_named() {
        let v: serde_json::Value = serde_json::json!({
            "apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": "a", "namespace": "b"},
            "spec": {"workers": [{"name": "w", "watch": {"apiVersion": "v1", "kind": "ConfigMap", "bogus": 1},
                                  "hook": {"url": "http://x.svc/"}}],
                     "leaderElection": {"leaseDurationX": "1s"}}
        });
        let errs = strict(v).unwrap_err();
        let fields: Vec<_> = errs.iter().map(|v| v.field.as_str()).collect();
        assert!(fields.contains(&"spec.workers.0.watch.bogus"), "{fields:?}");
        assert!(
            fields.contains(&"spec.leaderElection.leaseDurationX"),
            "{fields:?}"
        );
    }

    #[test]
    fn wrong_types_are_named() {
        let v: serde_json::Value = serde_json::json!({
            "apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": "a", "namespace": "b"},
            "spec": {"workers": [{"name": "w", "concurrency": "four", "watch": {"apiVersion": "v1", "kind": "ConfigMap"},
                                  "hook": {"url": "http://x.svc/"}}]}
        });
        let errs = strict(v).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec.workers[0].concurrency");
    }
}
