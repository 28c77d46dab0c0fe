//! Strict decoding of ManagerConfig documents (like `kubectl --validate=strict`): unknown
//! fields and wrong types are violations with their field path, never a panic.

use serde::de::Deserializer;

use super::{Rule, Violation};
use crate::api::ManagerConfig;

/// The apiVersion ManagerConfigs are served at.
pub const API_VERSION: &str = "manager-operator.io/v1alpha1";
/// The kind.
pub const KIND: &str = "ManagerConfig";

/// Decodes a ManagerConfig from any self-describing deserializer (YAML or JSON values),
/// reporting unknown fields and type errors as violations with field paths.
pub fn strict<'de, D>(de: D) -> Result<ManagerConfig, Vec<Violation>>
where
    D: Deserializer<'de>,
{
    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let ignored = serde_ignored::Deserializer::new(de, &mut record);
    let decoded: Result<ManagerConfig, _> = serde_path_to_error::deserialize(ignored);
    let mut violations: Vec<Violation> = unknown
        .into_iter()
        .filter(|p| {
            // apiVersion/kind are checked by `check_type_meta`; metadata belongs to the API
            // server's schema; status is written by the operator only.
            !(p == "apiVersion"
                || p == "kind"
                || p.starts_with("metadata.")
                || p == "status"
                || p.starts_with("status."))
        })
        .map(|p| Violation {
            field: p,
            rule: Rule::Schema,
            message: "unknown field".into(),
        })
        .collect();
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
