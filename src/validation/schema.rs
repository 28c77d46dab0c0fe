//! The CRD's own structural limits (`maxLength`, `minLength`, `pattern`, `enum`, `minimum`,
//! `maximum`, `minItems`, `maxItems`), read from the CRD this binary generates, so
//! `manager-operator check` refuses what the API server's schema validation refuses (a 1025-byte
//! selector, a `+5s` duration) without keeping a second copy of the limits.
//!
//! The CRD's CEL rules are not evaluated here: [`super::resolve`] implements each of them (and
//! more) itself.

use std::sync::LazyLock;

use kube::CustomResourceExt;
use regex::Regex;
use serde_json::Value;

use super::{Rule, Violation};
use crate::api::ManagerConfig;

/// The served version's `openAPIV3Schema`, as JSON, with its patterns compiled.
struct Schema {
    root: Value,
    patterns: Vec<(String, Regex)>,
}

static SCHEMA: LazyLock<Option<Schema>> = LazyLock::new(|| {
    let crd = ManagerConfig::crd();
    let v = crd.spec.versions.first()?;
    let props = v.schema.as_ref()?.open_api_v3_schema.as_ref()?;
    let root = serde_json::to_value(props).ok()?;
    let mut patterns = Vec::new();
    collect_patterns(&root, &mut patterns);
    Some(Schema { root, patterns })
});

fn collect_patterns(schema: &Value, out: &mut Vec<(String, Regex)>) {
    if let Some(p) = schema.get("pattern").and_then(Value::as_str)
        && !out.iter().any(|(q, _)| q == p)
        && let Ok(re) = Regex::new(p)
    {
        out.push((p.to_string(), re));
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for s in props.values() {
            collect_patterns(s, out);
        }
    }
    if let Some(items) = schema.get("items") {
        collect_patterns(items, out);
    }
}

/// Every value of `doc` (a whole ManagerConfig document as JSON) that breaks a structural limit
/// of the CRD's schema, with its field path. `metadata` and `status` are not judged here.
pub fn check_limits(doc: &Value) -> Vec<Violation> {
    let mut out = Vec::new();
    let Some(schema) = SCHEMA.as_ref() else {
        return out;
    };
    if let (Some(spec), Some(spec_schema)) = (
        doc.get("spec"),
        schema.root.get("properties").and_then(|p| p.get("spec")),
    ) {
        walk(schema, spec_schema, spec, "spec", &mut out);
    }
    out
}

fn push(out: &mut Vec<Violation>, path: &str, message: String) {
    out.push(Violation {
        field: path.to_string(),
        rule: Rule::Schema,
        message,
    });
}

fn walk(schema: &Schema, s: &Value, v: &Value, path: &str, out: &mut Vec<Violation>) {
    let num = |k: &str| s.get(k).and_then(Value::as_f64);
    match v {
        Value::Null => {}
        Value::String(text) => {
            // Kubernetes counts characters (runes), not bytes.
            let chars = text.chars().count();
            if let Some(max) = num("maxLength")
                && chars as f64 > max
            {
                push(
                    out,
                    path,
                    format!(
                        "may not be longer than {max} characters (the CRD's maxLength), got {chars}"
                    ),
                );
            }
            if let Some(min) = num("minLength")
                && (chars as f64) < min
            {
                push(
                    out,
                    path,
                    format!("must be at least {min} characters long (the CRD's minLength)"),
                );
            }
            if let Some(p) = s.get("pattern").and_then(Value::as_str)
                && let Some((_, re)) = schema.patterns.iter().find(|(q, _)| q == p)
                && !re.is_match(text)
            {
                push(
                    out,
                    path,
                    format!("{text:?} does not match the CRD's pattern {p:?}"),
                );
            }
            if let Some(allowed) = s.get("enum").and_then(Value::as_array)
                && !allowed.iter().any(|a| a.as_str() == Some(text))
            {
                push(out, path, format!("{text:?} is not one of {allowed:?}"));
            }
        }
        Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                if let Some(max) = num("maximum")
                    && x > max
                {
                    push(out, path, format!("must be at most {max}, got {n}"));
                }
                if let Some(min) = num("minimum")
                    && x < min
                {
                    push(out, path, format!("must be at least {min}, got {n}"));
                }
            }
        }
        Value::Array(items) => {
            if let Some(max) = num("maxItems")
                && items.len() as f64 > max
            {
                push(
                    out,
                    path,
                    format!("must have at most {max} items, got {}", items.len()),
                );
            }
            if let Some(min) = num("minItems")
                && (items.len() as f64) < min
            {
                push(
                    out,
                    path,
                    format!("must have at least {min} items, got {}", items.len()),
                );
            }
            if let Some(item_schema) = s.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(schema, item_schema, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        Value::Object(fields) => {
            if let Some(props) = s.get("properties").and_then(Value::as_object) {
                for (k, fv) in fields {
                    if let Some(fs) = props.get(k) {
                        walk(schema, fs, fv, &format!("{path}.{k}"), out);
                    }
                }
            }
        }
        Value::Bool(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(spec: Value) -> Value {
        serde_json::json!({"apiVersion": "manager-operator.io/v1alpha1", "kind": "ManagerConfig",
            "metadata": {"name": "a"}, "spec": spec})
    }

    fn worker(extra: Value) -> Value {
        let mut w = serde_json::json!({"name": "w", "watch": {"apiVersion": "v1", "kind": "ConfigMap"},
            "hook": {"url": "http://h.svc/"}});
        if let (Some(w), Some(e)) = (w.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                w.insert(k.clone(), v.clone());
            }
        }
        w
    }

    #[test]
    fn the_schema_loads_with_its_patterns() {
        let s = SCHEMA.as_ref().expect("the CRD's schema");
        assert!(
            s.patterns.len() >= 4,
            "{:?}",
            s.patterns.iter().map(|p| &p.0).collect::<Vec<_>>()
        );
    }

    #[test]
    fn valid_document_has_no_violations() {
        assert!(
            check_limits(&doc(
                serde_json::json!({"workers": [worker(serde_json::json!({}))]})
            ))
            .is_empty()
        );
    }

    #[test]
    fn limits_of_the_crd_are_enforced() {
        let cases = [
            (
                serde_json::json!({"workers": [worker(serde_json::json!({"watch": {"apiVersion": "v1", "kind": "ConfigMap", "labelSelector": format!("a in ({})", "b,".repeat(600))}}))]}),
                "spec.workers[0].watch.labelSelector",
            ),
            (
                serde_json::json!({"workers": [worker(serde_json::json!({"hook": {"url": format!("http://h.svc/{}", "a".repeat(2048))}}))]}),
                "spec.workers[0].hook.url",
            ),
            (
                serde_json::json!({"startupTimeout": "+5s", "workers": [worker(serde_json::json!({}))]}),
                "spec.startupTimeout",
            ),
            (
                serde_json::json!({"workers": [worker(serde_json::json!({"concurrency": 65}))]}),
                "spec.workers[0].concurrency",
            ),
            (serde_json::json!({"workers": []}), "spec.workers"),
            (
                serde_json::json!({"serviceAccountName": "A", "workers": [worker(serde_json::json!({}))]}),
                "spec.serviceAccountName",
            ),
        ];
        for (spec, field) in cases {
            let v = check_limits(&doc(spec));
            assert!(v.iter().any(|x| x.field == field), "{field}: {v:?}");
        }
    }
}
