//! The ValidatingWebhookConfiguration the operator can register itself (`--webhook-register`):
//! rules for `manager-operator.io/v1alpha1` `managerconfigs` CREATE and UPDATE, `failurePolicy:
//! Fail`, `sideEffects: None`, `timeoutSeconds: 5`, `admissionReviewVersions: [v1]`, an optional
//! `namespaceSelector`, and either `clientConfig.url` (URL mode) or `clientConfig.service`.
//! Written with server-side apply, so it is idempotent and safe from several replicas.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    RuleWithOperations, ServiceReference, ValidatingWebhook, ValidatingWebhookConfiguration,
    WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::api::{Api, ObjectMeta, Patch, PatchParams};

use super::VALIDATE_PATH;
use super::handler::{GROUP, VERSION};
use crate::api::FIELD_MANAGER as MANAGER;
use crate::validation::selector::{valid_label_key, valid_label_value};

/// Name of the webhook inside the configuration.
pub const WEBHOOK_NAME: &str = "validate.managerconfigs.manager-operator.io";

/// Where the API server sends reviews.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientTarget {
    /// `clientConfig.url` (https).
    Url(String),
    /// `clientConfig.service` on port 443, path [`VALIDATE_PATH`].
    Service {
        /// Namespace of the Service.
        namespace: String,
        /// Name of the Service.
        name: String,
    },
}

/// The ValidatingWebhookConfiguration for ManagerConfigs.
pub fn webhook_configuration(
    name: &str,
    target: &ClientTarget,
    ca_bundle_pem: Option<&str>,
    namespace_selector: Option<&LabelSelector>,
) -> ValidatingWebhookConfiguration {
    let client_config = WebhookClientConfig {
        ca_bundle: ca_bundle_pem.map(|pem| ByteString(pem.as_bytes().to_vec())),
        url: match target {
            ClientTarget::Url(u) => Some(u.clone()),
            ClientTarget::Service { .. } => None,
        },
        service: match target {
            ClientTarget::Url(_) => None,
            ClientTarget::Service { namespace, name } => Some(ServiceReference {
                namespace: namespace.clone(),
                name: name.clone(),
                path: Some(VALIDATE_PATH.into()),
                port: Some(443),
            }),
        },
    };
    ValidatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                MANAGER.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![ValidatingWebhook {
            name: WEBHOOK_NAME.into(),
            admission_review_versions: vec!["v1".into()],
            client_config,
            failure_policy: Some("Fail".into()),
            match_policy: Some("Equivalent".into()),
            side_effects: "None".into(),
            timeout_seconds: Some(5),
            namespace_selector: namespace_selector.cloned(),
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec![GROUP.into()]),
                api_versions: Some(vec![VERSION.into()]),
                resources: Some(vec!["managerconfigs".into()]),
                operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
                scope: Some("Namespaced".into()),
            }]),
            ..ValidatingWebhook::default()
        }]),
    }
}

/// Creates or updates the configuration with server-side apply (field manager
/// `manager-operator`, conflicts forced).
pub async fn apply(
    client: kube::Client,
    configuration: &ValidatingWebhookConfiguration,
) -> Result<ValidatingWebhookConfiguration, kube::Error> {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client);
    let name = configuration.metadata.name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(configuration),
    )
    .await
}

/// Parses a namespace selector flag: comma-separated `key=value` (or `key==value`), `key`
/// (the label exists) and `!key` (it does not).
pub fn parse_namespace_selector(text: &str) -> Result<LabelSelector, String> {
    let mut match_labels = BTreeMap::new();
    let mut expressions = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = match part.split_once("==").or_else(|| part.split_once('=')) {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (part, None),
        };
        let (negated, key) = match key.strip_prefix('!') {
            Some(k) => (true, k.trim()),
            None => (false, key),
        };
        if !valid_label_key(key) {
            return Err(format!("{key:?} is not a valid label key"));
        }
        match (negated, value) {
            (false, Some(v)) => {
                if !valid_label_value(v) {
                    return Err(format!("{v:?} is not a valid label value"));
                }
                match_labels.insert(key.to_string(), v.to_string());
            }
            (false, None) => expressions.push(LabelSelectorRequirement {
                key: key.into(),
                operator: "Exists".into(),
                values: None,
            }),
            (true, None) => expressions.push(LabelSelectorRequirement {
                key: key.into(),
                operator: "DoesNotExist".into(),
                values: None,
            }),
            (true, Some(_)) => {
                return Err(format!(
                    "{part:?}: use key=value, key or !key (comma-separated)"
                ));
            }
        }
    }
    if match_labels.is_empty() && expressions.is_empty() {
        return Err("the selector is empty".into());
    }
    Ok(LabelSelector {
        match_labels: (!match_labels.is_empty()).then_some(match_labels),
        match_expressions: (!expressions.is_empty()).then_some(expressions),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_shape() {
        let sel = parse_namespace_selector("a=b").expect("selector");
        let c = webhook_configuration(
            "mo",
            &ClientTarget::Url("https://127.0.0.1:1/validate-managerconfig".into()),
            Some("PEM"),
            Some(&sel),
        );
        let v = serde_json::to_value(&c).expect("serializes");
        assert_eq!(v["apiVersion"], "admissionregistration.k8s.io/v1");
        let w = &v["webhooks"][0];
        assert_eq!(w["failurePolicy"], "Fail");
        assert_eq!(w["sideEffects"], "None");
        assert_eq!(w["timeoutSeconds"], 5);
        assert_eq!(w["admissionReviewVersions"], serde_json::json!(["v1"]));
        assert_eq!(
            w["rules"][0]["operations"],
            serde_json::json!(["CREATE", "UPDATE"])
        );
        assert_eq!(w["rules"][0]["apiGroups"], serde_json::json!([GROUP]));
        assert_eq!(
            w["rules"][0]["resources"],
            serde_json::json!(["managerconfigs"])
        );
        assert_eq!(w["namespaceSelector"]["matchLabels"]["a"], "b");
        assert_eq!(
            w["clientConfig"]["url"],
            "https://127.0.0.1:1/validate-managerconfig"
        );
        assert_eq!(w["clientConfig"]["caBundle"], "UEVN"); // base64("PEM")

        let s = webhook_configuration(
            "mo",
            &ClientTarget::Service {
                namespace: "ns".into(),
                name: "svc".into(),
            },
            None,
            None,
        );
        let v = serde_json::to_value(&s).expect("serializes");
        let cc = &v["webhooks"][0]["clientConfig"];
        assert_eq!(cc["service"]["path"], VALIDATE_PATH);
        assert_eq!(cc["service"]["port"], 443);
        assert!(cc.get("url").is_none());
        assert!(v["webhooks"][0].get("namespaceSelector").is_none());
    }

    #[test]
    fn selector_flag() {
        let s = parse_namespace_selector("team=a, env==prod,owned,!legacy").expect("parses");
        let labels = s.match_labels.expect("labels");
        assert_eq!(labels["team"], "a");
        assert_eq!(labels["env"], "prod");
        let ex = s.match_expressions.expect("expressions");
        assert_eq!(ex[0].operator, "Exists");
        assert_eq!(ex[1].operator, "DoesNotExist");
        assert!(parse_namespace_selector("").is_err());
        assert!(parse_namespace_selector("Bad Key=x").is_err());
        assert!(parse_namespace_selector("k=bad value").is_err());
        assert!(parse_namespace_selector("!k=v").is_err());
    }
}
