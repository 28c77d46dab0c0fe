//! Signed hook calls, following the Standard Webhooks scheme (<https://www.standardwebhooks.com>)
//! so a hook can tell a call of this operator from a forged one (a pod that can reach the hook
//! posting `fencingToken: 2147483647` to lock the real leader out) and from a replay.
//!
//! Every call carries three headers:
//!
//! * `webhook-id`: the delivery id, the same for every retry of one delivery (see
//!   [`DeliveryIds`]); a new delivery (a new `resourceVersion`, a resync, a requested requeue,
//!   another leadership term) gets a new one;
//! * `webhook-timestamp`: unix seconds when this attempt was sent;
//! * `webhook-signature` (only when `hook.signingSecretRef` is set): `v1,<base64 HMAC-SHA256>`
//!   over `{id}.{timestamp}.{body}` with the Secret's key; during a rotation one such entry per
//!   key, separated by a space (current key first).
//!
//! The key is read from the Secret *as the config's service account* (the impersonated client),
//! never with the operator's own rights, so a config can only name a Secret its own account may
//! read. Its value is either `whsec_<base64>` (the Standard Webhooks form: the key is the decoded
//! bytes) or the raw key bytes; at least [`MIN_KEY_BYTES`] bytes of key either way. The key
//! `<key>.previous`, when present, is the previous secret during a rotation.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use rand::RngCore;
use sha2::Sha256;

use crate::api::SigningSecretRef;
use crate::api::conditions::StartupFailure;
use crate::manager::runtime::Failure;

/// Header: the delivery id.
pub const HEADER_ID: &str = "webhook-id";
/// Header: unix seconds of the attempt.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// Header: the signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";
/// Prefix of a Standard Webhooks secret (`whsec_<base64>`).
pub const SECRET_PREFIX: &str = "whsec_";
/// Suffix of the Secret key holding the previous secret during a rotation.
pub const PREVIOUS_SUFFIX: &str = ".previous";
/// Shortest key accepted, in bytes (the Standard Webhooks spec recommends 24 to 64).
pub const MIN_KEY_BYTES: usize = 24;
/// How often a running worker re-reads its signing Secret by default (`run`'s
/// `--hook-signing-refresh-period`).
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(30);

/// One HMAC key. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({} bytes)", self.0.len())
    }
}

/// Why a Secret value is not a usable key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// `whsec_` followed by something that is not base64.
    #[error("the value starts with {SECRET_PREFIX} but the rest is not base64: {0}")]
    Base64(String),
    /// Fewer than [`MIN_KEY_BYTES`] bytes of key.
    #[error("the key is {0} bytes long; at least {MIN_KEY_BYTES} are required")]
    TooShort(usize),
}

impl SigningKey {
    /// Reads a Secret value: `whsec_<base64>` (surrounding whitespace ignored, so a trailing
    /// newline from `--from-file` does no harm) is decoded; anything else is the key itself,
    /// byte for byte.
    pub fn parse(value: &[u8]) -> Result<Self, KeyError> {
        let trimmed = value.trim_ascii();
        let key = match trimmed.strip_prefix(SECRET_PREFIX.as_bytes()) {
            Some(b64) => STANDARD
                .decode(b64)
                .map_err(|e| KeyError::Base64(e.to_string()))?,
            None => value.to_vec(),
        };
        if key.len() < MIN_KEY_BYTES {
            return Err(KeyError::TooShort(key.len()));
        }
        Ok(Self(key))
    }

    /// `v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        // HMAC takes keys of any length: this never fails.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => return String::new(),
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The keys a worker signs with: the current one and, during a rotation, the previous one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySet {
    /// `data[key]`.
    pub current: SigningKey,
    /// `data[key + ".previous"]`, when present.
    pub previous: Option<SigningKey>,
}

impl KeySet {
    /// The `webhook-signature` value: one `v1,...` per key, space-separated, current first.
    pub fn signature_header(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut out = self.current.sign(id, timestamp, body);
        if let Some(p) = &self.previous {
            out.push(' ');
            out.push_str(&p.sign(id, timestamp, body));
        }
        out
    }

    /// How many signatures each call carries.
    pub fn len(&self) -> usize {
        1 + usize::from(self.previous.is_some())
    }

    /// Never true (there is always a current key); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// The keys of a worker, replaced in place when the Secret changes. Cheap to clone.
#[derive(Clone, Default)]
pub struct KeyCell(Arc<Mutex<Option<Arc<KeySet>>>>);

impl KeyCell {
    /// The keys, once loaded.
    pub fn get(&self) -> Option<Arc<KeySet>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stores `keys`; true when they differ from the ones held before (a rotation).
    pub fn set(&self, keys: KeySet) -> bool {
        let mut cell = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let changed = cell.as_deref() != Some(&keys);
        if changed {
            *cell = Some(Arc::new(keys));
        }
        changed
    }
}

/// Unix seconds now (0 if the clock is before 1970).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A new delivery id: `msg_` and 128 random bits (base64url).
pub fn new_delivery_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    format!("msg_{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Delivery ids kept in the per-object retry state of one leadership term: an object's id
/// stays while its delivery of one `resourceVersion` fails and is retried, and is dropped once
/// the hook accepted it, so the next delivery (a new version, a resync, a requeue the hook
/// asked for) gets a new id. A hook that deduplicates on `webhook-id` therefore skips only true
/// retries of a call it already handled. A new leadership term starts with new ids (the calls
/// also carry a new `fencingToken` and `holder`).
#[derive(Default)]
pub struct DeliveryIds(Mutex<HashMap<String, (String, String)>>);

impl DeliveryIds {
    /// The id of the delivery of `resource_version` of object `key`: the pending one when the
    /// last attempt of this version failed, else a new one.
    pub fn for_attempt(&self, key: &str, resource_version: &str) -> String {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(key) {
            Some((rv, id)) if rv == resource_version => id.clone(),
            _ => {
                let id = new_delivery_id();
                map.insert(key.to_string(), (resource_version.to_string(), id.clone()));
                id
            }
        }
    }

    /// The delivery succeeded: the next one gets a new id.
    pub fn delivered(&self, key: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    /// Keeps only the objects for which `keep` holds (objects gone from the cache).
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| keep(k));
    }
}

/// Why the signing Secret could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The operator may not impersonate the service account.
    #[error("the operator may not impersonate the service account: {0}")]
    ImpersonationDenied(String),
    /// The service account may not get the Secret.
    #[error("the service account may not get the Secret: {0}")]
    Forbidden(String),
    /// No such Secret.
    #[error("the Secret does not exist")]
    NotFound,
    /// The Secret has no such key.
    #[error("the Secret has no key {0:?}")]
    KeyMissing(String),
    /// A key's value is not usable.
    #[error("the value of key {key:?} is not a usable signing key: {error}")]
    BadKey {
        /// The Secret key.
        key: String,
        /// What is wrong with it.
        error: KeyError,
    },
    /// Timeout, 5xx, connection failure: worth retrying, not the tenant's fault.
    #[error("reading the Secret failed: {0}")]
    Transient(String),
}

impl LoadError {
    /// True for errors the tenant has to fix (everything but [`LoadError::Transient`]).
    pub fn is_permanent(&self) -> bool {
        !matches!(self, LoadError::Transient(_))
    }

    /// The startup failure this error is reported as.
    pub fn failure(
        &self,
        worker: &str,
        namespace: &str,
        sa_user: &str,
        r: &SigningSecretRef,
    ) -> Failure {
        let reason = match self {
            LoadError::ImpersonationDenied(_) => StartupFailure::ImpersonationForbidden,
            LoadError::Transient(_) => StartupFailure::ApiUnavailable,
            _ => StartupFailure::SigningSecretUnavailable,
        };
        let what = format!(
            "worker {worker}: hook signing Secret {namespace}/{name} key {key:?}, read as {sa_user}",
            name = r.name,
            key = r.key,
        );
        let remedy = match self {
            LoadError::ImpersonationDenied(_) => {
                "grant the operator impersonate on this service account".to_string()
            }
            LoadError::Transient(_) => "the operator retries".to_string(),
            LoadError::Forbidden(_) => format!(
                "grant it get on this Secret, e.g. `kubectl -n {namespace} create role \
                 {name}-signing --verb=get --resource=secrets --resource-name={name}` and a \
                 RoleBinding to the service account",
                name = r.name
            ),
            _ => format!(
                "create the Secret with key {key:?} holding whsec_<base64 of at least \
                 {MIN_KEY_BYTES} random bytes> (or at least {MIN_KEY_BYTES} raw bytes), e.g. \
                 `kubectl -n {namespace} create secret generic {name} \
                 --from-literal={key}=whsec_$(head -c 32 /dev/urandom | base64)`",
                key = r.key,
                name = r.name
            ),
        };
        Failure::new(reason, format!("{what}: {self}; {remedy}"))
    }
}

/// Reads the signing keys of `r` from namespace `namespace` with `client` (the config's
/// service account's impersonating client).
pub async fn load(
    client: &kube::Client,
    namespace: &str,
    r: &SigningSecretRef,
    call_timeout: Duration,
) -> Result<KeySet, LoadError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = match tokio::time::timeout(call_timeout, api.get(&r.name)).await {
        Err(_) => {
            return Err(LoadError::Transient(format!(
                "no answer within {call_timeout:?}"
            )));
        }
        Ok(Ok(s)) => s,
        Ok(Err(kube::Error::Api(s))) if super::preflight::is_impersonation_denied(&s) => {
            return Err(LoadError::ImpersonationDenied(s.message));
        }
        Ok(Err(kube::Error::Api(s))) if s.code == 403 || s.code == 401 => {
            return Err(LoadError::Forbidden(s.message));
        }
        Ok(Err(kube::Error::Api(s))) if s.code == 404 => return Err(LoadError::NotFound),
        Ok(Err(e)) => return Err(LoadError::Transient(e.to_string())),
    };
    keys_from(&secret, &r.key)
}

/// The keys `key` and `key.previous` of `secret` (`data`, or `stringData` as a client may
/// have set it before the API server merged it).
pub fn keys_from(secret: &Secret, key: &str) -> Result<KeySet, LoadError> {
    let value = |k: &str| -> Option<Vec<u8>> {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|b| b.0.clone())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(k))
                    .map(|s| s.as_bytes().to_vec())
            })
    };
    let parse = |k: &str, v: &[u8]| {
        SigningKey::parse(v).map_err(|error| LoadError::BadKey {
            key: k.to_string(),
            error,
        })
    };
    let current = value(key).ok_or_else(|| LoadError::KeyMissing(key.to_string()))?;
    let current = parse(key, &current)?;
    let prev_key = format!("{key}{PREVIOUS_SUFFIX}");
    let previous = match value(&prev_key) {
        Some(v) => Some(parse(&prev_key, &v)?),
        None => None,
    }
    // The same key twice (a rotation not started yet, or finished by copying): one signature.
    .filter(|p| *p != current);
    Ok(KeySet { current, previous })
}

#[cfg(test)]
mod tests;
