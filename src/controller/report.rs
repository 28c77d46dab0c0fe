//! Writing what the controller observed: the status (server-side apply with one field manager,
//! only when it differs; computed by the pure [`super::status`]) and Events (cut to the API
//! server's note limit), and the combination of both, with metrics and backoff, for a failed
//! start ([`Ctx::record_failure`]).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::{debug, warn};

use super::Ctx;
use super::status::{self, Observed};
use crate::api::{FIELD_MANAGER, ManagerConfig};
use crate::manager::runtime::Failure;

/// The API server refuses Events whose `note` is longer than this many bytes (events.k8s.io/v1
/// `NoteLengthLimit`).
pub const EVENT_NOTE_MAX_BYTES: usize = 1024;

/// `note` cut to at most `limit` bytes on a character boundary, ending with "…" when cut. The
/// full text stays in the condition message (status has no such limit).
pub fn truncate_note(note: &str, limit: usize) -> String {
    const ELLIPSIS: &str = "…";
    if note.len() <= limit {
        return note.to_string();
    }
    let mut end = limit.saturating_sub(ELLIPSIS.len());
    while end > 0 && !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ELLIPSIS}", &note[..end])
}

impl Ctx {
    /// Reference for Events.
    fn reference(mc: &ManagerConfig) -> k8s_openapi::api::core::v1::ObjectReference {
        mc.object_ref(&())
    }

    /// Publishes an Event; failures to publish are logged, never fatal.
    pub async fn event(
        &self,
        mc: &ManagerConfig,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(truncate_note(&note, EVENT_NOTE_MAX_BYTES)),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &Self::reference(mc)).await {
            warn!(error = %e, "publishing an event failed");
        }
    }

    /// The latest cached object for `key` (falls back to the given one).
    pub(super) fn latest(&self, key: &ObjectRef<ManagerConfig>) -> Option<Arc<ManagerConfig>> {
        self.store.get().and_then(|s| s.get(key))
    }

    /// Applies the status computed from `obs` when it differs from the object's.
    /// `generation` is the one the observation is about (the manager's), so a manager for an
    /// older spec never claims to have observed a newer one.
    pub async fn write_status(
        &self,
        mc: &ManagerConfig,
        generation: Option<i64>,
        obs: &Observed<'_>,
    ) -> Result<(), kube::Error> {
        let key = ObjectRef::from_obj(mc);
        let current = self.latest(&key);
        let base = current.as_deref().unwrap_or(mc);
        let existing = base.status.as_ref();
        let desired = status::desired_status(existing, generation, obs, Time(Timestamp::now()));
        if !status::differs(existing, &desired) {
            return Ok(());
        }
        let api: Api<ManagerConfig> =
            Api::namespaced(self.client.clone(), &mc.namespace().unwrap_or_default());
        let patch = serde_json::json!({
            "apiVersion": crate::api::API_VERSION,
            "kind": crate::api::KIND,
            "status": desired,
        });
        api.patch_status(
            &mc.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        Ok(())
    }

    /// Records a failed start: metric, Event, status, gauge; returns the retry delay.
    pub async fn record_failure(&self, mc: &ManagerConfig, f: &Failure) -> Duration {
        let key = ObjectRef::from_obj(mc);
        let (ns, name) = (mc.namespace().unwrap_or_default(), mc.name_any());
        self.metrics
            .startup_failures_total
            .with_label_values(&[&ns, &name, f.reason.as_str()])
            .inc();
        self.metrics
            .manager_ready
            .with_label_values(&[&ns, &name])
            .set(0);
        let delay = self
            .registry
            .record_failure(key, mc.metadata.generation, f)
            .await;
        warn!(namespace = %ns, name = %name, reason = %f.reason, detail = %f.message, retry_in = ?delay, "manager failed to start");
        // Status first: it is what controllers, `kubectl wait` and alerts watch; the Event (for
        // humans reading `kubectl describe`) follows one round trip later.
        if let Err(e) = self
            .write_status(mc, mc.metadata.generation, &Observed::Failed(f))
            .await
        {
            warn!(error = %e, "writing failure status failed");
        }
        // Every replica tries every config, so each would see (and report) the same failure:
        // only the replica placement prefers for the config emits the Event, one series per
        // cause. Without placement every replica does.
        if let Some(p) = &self.env.placement
            && p.current_rank(&format!("{ns}/{name}")) != 0
        {
            debug!(namespace = %ns, name = %name, reason = %f.reason,
                "not the preferred replica for this config: its Event is left to that replica");
            return delay;
        }
        self.event(
            mc,
            EventType::Warning,
            f.reason.as_str(),
            "StartManager",
            format!(
                "{} (to fix: {}); retrying with backoff [seen by {}]",
                f.message,
                f.reason.remedy(),
                self.me.identity
            ),
        )
        .await;
        delay
    }
}

#[cfg(test)]
mod note_tests {
    use super::*;

    #[test]
    fn long_notes_are_cut_on_a_character_boundary_with_an_ellipsis() {
        assert_eq!(truncate_note("short", 1024), "short");
        let exact = "a".repeat(1024);
        assert_eq!(truncate_note(&exact, 1024), exact);
        let long = "a".repeat(5000);
        let t = truncate_note(&long, 1024);
        assert!(t.len() <= 1024 && t.ends_with('…'), "{}", t.len());
        assert_eq!(t.len(), 1024);
        // Multi-byte characters: never split one, never exceed the limit.
        for pad in 0..4 {
            let s = format!("{}{}", "x".repeat(pad), "é✓😀".repeat(400));
            let t = truncate_note(&s, 1024);
            assert!(t.len() <= 1024, "pad {pad}: {}", t.len());
            assert!(t.ends_with('…'));
            assert!(s.starts_with(t.trim_end_matches('…')));
        }
    }
}
