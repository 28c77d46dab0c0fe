//! ServiceAccounts, Roles and RoleBindings for the workers' service accounts, and ConfigMaps
//! for them to watch.
//!
//! The plain functions apply to the shared control plane (`MO_KUBECONFIG`); the `*_yaml`
//! functions return the same manifests for another cluster (e.g.
//! [`crate::PrivateCluster::apply_yaml`]).

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

use crate::cluster::apply_yaml;

/// ServiceAccount `sa` in `ns` (applied, so it may already exist).
pub fn service_account(ns: &str, sa: &str) {
    apply_yaml(&service_account_yaml(ns, sa));
}

/// The manifest of [`service_account`].
pub fn service_account_yaml(ns: &str, sa: &str) -> String {
    format!("apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {sa}, namespace: {ns}}}\n")
}

/// Role and RoleBinding `name` in `ns` granting `rules` (a YAML list, one `- apiGroups: ...`
/// entry per rule, each line ending in a newline) to service account `sa`.
pub fn grant(ns: &str, sa: &str, name: &str, rules: &str) {
    apply_yaml(&grant_yaml(ns, sa, name, rules));
}

/// The manifests of [`grant`].
pub fn grant_yaml(ns: &str, sa: &str, name: &str, rules: &str) -> String {
    role_and_binding(
        ns,
        name,
        rules,
        &format!("{{kind: ServiceAccount, name: {sa}, namespace: {ns}}}"),
    )
}

/// Role and RoleBinding `name` in `ns` granting `rules` (as for [`grant`]) to user `user`
/// (e.g. `mo-unprivileged`, the user of [`crate::unprivileged_kubeconfig_path`]).
pub fn grant_user(ns: &str, user: &str, name: &str, rules: &str) {
    apply_yaml(&role_and_binding(
        ns,
        name,
        rules,
        &format!("{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}"),
    ));
}

/// One rule for [`grant`] or [`grant_user`]: `verbs` on `resources` (plurals) of API group
/// `group` (`""` for the core group).
pub fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> String {
    format!(
        "- apiGroups: ['{group}']\n  resources: [{}]\n  verbs: [{}]\n",
        resources.join(", "),
        verbs.join(", ")
    )
}

fn role_and_binding(ns: &str, name: &str, rules: &str, subject: &str) -> String {
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\n\
         metadata: {{name: {name}, namespace: {ns}}}\nrules:\n{rules}\
         ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
         metadata: {{name: {name}, namespace: {ns}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {name}}}\n\
         subjects: [{subject}]\n"
    )
}

/// Lets service account `sa` get, list and watch `resource` (`plural` or `plural.group`) in
/// `ns`, as Role and RoleBinding `<sa>-watch-<resource>`. Written as YAML, not `kubectl create
/// role`, which refuses resources not served yet.
pub fn grant_watch(ns: &str, sa: &str, resource: &str) {
    apply_yaml(&grant_watch_yaml(ns, sa, resource));
}

/// The manifests of [`grant_watch`].
pub fn grant_watch_yaml(ns: &str, sa: &str, resource: &str) -> String {
    let (plural, group) = resource.split_once('.').unwrap_or((resource, ""));
    let role = format!("{sa}-watch-{}", resource.replace('.', "-"));
    grant_yaml(
        ns,
        sa,
        &role,
        &rule(group, &[plural], &["get", "list", "watch"]),
    )
}

/// Creates ConfigMap `ns/name` with `labels` (no data); panics unless it succeeds.
pub async fn create_configmap(
    client: &kube::Client,
    ns: &str,
    name: &str,
    labels: &[(&str, &str)],
) {
    create_configmap_with_data(client, ns, name, labels, &[]).await;
}

/// Creates ConfigMap `ns/name` with `labels` and `data` (none when empty); panics unless it
/// succeeds.
pub async fn create_configmap_with_data(
    client: &kube::Client,
    ns: &str,
    name: &str,
    labels: &[(&str, &str)],
    data: &[(&str, &str)],
) {
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        data: (!data.is_empty()).then(|| {
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        }),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap_or_else(|e| panic!("creating ConfigMap {ns}/{name}: {e}"));
}
