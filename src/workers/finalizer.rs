//! Guaranteed deletion delivery (`spec.workers[].finalize: true`): the worker's finalizer on
//! every watched object, added before the first `Sync` call and removed only after the hook
//! answered 2xx to the object's `Deleted` call; and [`release`], which takes it off every
//! object when the worker, its config or the setting goes away.
//!
//! Every change is a JSON Patch guarded by a `test` op (the finalizer list as it was), made as
//! the config's service account: a concurrent change makes the patch fail (422) and the object
//! is handled again from its next version, so another controller's finalizers are never lost.

use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use sha2::{Digest, Sha256};

/// The finalizer prefix (a domain the operator owns).
pub const PREFIX: &str = "hooks.manager-operator.io/";

/// Longest name part of a qualified finalizer name.
const NAME_MAX: usize = 63;

/// The finalizer of worker `worker` of config `namespace/config`:
/// `hooks.manager-operator.io/<namespace>.<config>.<worker>` when that fits the 63 characters
/// of a qualified name's name part, otherwise `<start of worker>-<16 hex of its SHA-256>`; the
/// same inputs always give the same name (every replica and every restart agree on it).
pub fn name(namespace: &str, config: &str, worker: &str) -> String {
    let readable = format!("{namespace}.{config}.{worker}");
    if readable.len() <= NAME_MAX {
        return format!("{PREFIX}{readable}");
    }
    let digest = Sha256::digest(readable.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    // Worker names are DNS labels: ASCII, so any byte boundary is a character boundary.
    let head: String = worker.chars().take(NAME_MAX - 17).collect();
    let head = head.trim_end_matches('-');
    format!("{PREFIX}{head}-{hex}")
}

/// The object's finalizers.
fn finalizers(o: &DynamicObject) -> &[String] {
    o.metadata.finalizers.as_deref().unwrap_or(&[])
}

/// True when `o` carries `finalizer`.
pub fn has(o: &DynamicObject, finalizer: &str) -> bool {
    finalizers(o).iter().any(|f| f == finalizer)
}

/// The JSON Patch that adds `finalizer` to `o`, guarded by the finalizer list it saw.
pub fn add_patch(o: &DynamicObject, finalizer: &str) -> serde_json::Value {
    match o.metadata.finalizers.as_deref() {
        // No list to test: guard by the version instead (an `add` of the whole list would
        // replace one that appeared meanwhile).
        None => serde_json::json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": o.metadata.resource_version},
            {"op": "add", "path": "/metadata/finalizers", "value": [finalizer]},
        ]),
        Some([]) => serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": []},
            {"op": "add", "path": "/metadata/finalizers", "value": [finalizer]},
        ]),
        Some(list) => serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": list},
            {"op": "add", "path": "/metadata/finalizers/-", "value": finalizer},
        ]),
    }
}

/// The JSON Patch that removes `finalizer` from `o` (`None` when `o` does not carry it),
/// guarded by the entry it removes.
pub fn remove_patch(o: &DynamicObject, finalizer: &str) -> Option<serde_json::Value> {
    let i = finalizers(o).iter().position(|f| f == finalizer)?;
    Some(serde_json::json!([
        {"op": "test", "path": format!("/metadata/finalizers/{i}"), "value": finalizer},
        {"op": "remove", "path": format!("/metadata/finalizers/{i}")},
    ]))
}

/// Applies a JSON Patch to `o` through `api`. `Ok(false)` when the object is gone or changed
/// under us (404, 409, 422 from the failed `test`): it comes back with its next version.
pub async fn apply(
    api: &Api<DynamicObject>,
    o: &DynamicObject,
    patch: serde_json::Value,
) -> Result<bool, kube::Error> {
    let Some(name) = o.metadata.name.as_deref() else {
        return Ok(false);
    };
    let patch: json_patch::Patch = match serde_json::from_value(patch) {
        Ok(p) => p,
        // Built above from literals: cannot happen; treat as "changed".
        Err(_) => return Ok(false),
    };
    match api
        .patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409 | 422) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes `finalizer` from every object `api` lists with `selector`; returns how many it
/// changed. Objects that change meanwhile are read again (up to 5 passes).
pub async fn release(
    api: &Api<DynamicObject>,
    selector: Option<&str>,
    finalizer: &str,
) -> Result<usize, kube::Error> {
    let mut changed = 0;
    for _pass in 0..5 {
        let mut lp = ListParams::default().limit(500);
        if let Some(s) = selector {
            lp = lp.labels(s);
        }
        let mut left = 0;
        loop {
            let page = api.list(&lp).await?;
            for o in &page.items {
                if let Some(p) = remove_patch(o, finalizer) {
                    if apply(api, o, p).await? {
                        changed += 1;
                    } else {
                        left += 1;
                    }
                }
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => lp = lp.continue_token(&c),
                None => break,
            }
        }
        if left == 0 {
            return Ok(changed);
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(finalizers: Option<Vec<&str>>) -> DynamicObject {
        let mut o: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "x", "namespace": "a", "resourceVersion": "5"},
        }))
        .unwrap();
        o.metadata.finalizers = finalizers.map(|v| v.into_iter().map(String::from).collect());
        o
    }

    fn other_version(o: &DynamicObject) -> DynamicObject {
        let mut o = o.clone();
        o.metadata.resource_version = Some("4".into());
        o
    }

    fn both_of(o: &DynamicObject, f: &str) -> DynamicObject {
        let mut o = o.clone();
        o.metadata.finalizers.get_or_insert_default().push(f.into());
        o
    }

    fn patched(o: &DynamicObject, p: serde_json::Value) -> Result<serde_json::Value, String> {
        let mut doc = serde_json::to_value(o).unwrap();
        let p: json_patch::Patch = serde_json::from_value(p).unwrap();
        json_patch::patch(&mut doc, &p).map_err(|e| e.to_string())?;
        Ok(doc)
    }

    #[test]
    fn names_are_qualified_stable_and_bounded() {
        assert_eq!(
            name("team-a", "inv", "cms"),
            "hooks.manager-operator.io/team-a.inv.cms"
        );
        let long = name(&"n".repeat(63), &"c".repeat(253), &"w".repeat(63));
        assert_eq!(
            long,
            name(&"n".repeat(63), &"c".repeat(253), &"w".repeat(63))
        );
        let part = long.strip_prefix(PREFIX).unwrap();
        assert_eq!(part.len(), 63, "{part}");
        assert!(part.starts_with("www"));
        // Different configs never share a finalizer.
        assert_ne!(
            long,
            name(&"n".repeat(63), &"d".repeat(253), &"w".repeat(63))
        );
    }

    #[test]
    fn patches_add_and_remove_only_ours_and_fail_on_a_concurrent_change() {
        let f = "hooks.manager-operator.io/a.b.c";
        let none = obj(None);
        let doc = patched(&none, add_patch(&none, f)).unwrap();
        assert_eq!(doc["metadata"]["finalizers"], serde_json::json!([f]));
        let other = obj(Some(vec!["example.com/keep"]));
        let doc = patched(&other, add_patch(&other, f)).unwrap();
        assert_eq!(
            doc["metadata"]["finalizers"],
            serde_json::json!(["example.com/keep", f])
        );
        // Someone else added a finalizer since we read the object: the test op fails.
        assert!(patched(&other, add_patch(&other_version(&none), f)).is_err());
        assert!(patched(&both_of(&other, f), add_patch(&other, f)).is_err());

        let both = obj(Some(vec!["example.com/keep", f]));
        let doc = patched(&both, remove_patch(&both, f).unwrap()).unwrap();
        assert_eq!(
            doc["metadata"]["finalizers"],
            serde_json::json!(["example.com/keep"])
        );
        assert!(remove_patch(&other, f).is_none());
        // The list was reordered meanwhile: the guarded index no longer holds ours.
        let reordered = obj(Some(vec![f, "example.com/keep"]));
        assert!(patched(&reordered, remove_patch(&both, f).unwrap()).is_err());
        assert!(has(&both, f) && !has(&other, f));
    }
}
