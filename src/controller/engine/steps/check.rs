//! Check: the periodic look at a credential this resource owns, its status and events copied
//! into ours, and Leaf's error events announced once.

use super::{Input, Interrupted, Ports, StatusWriter, fill, leaf_failed, secret_name, secret_note};
use crate::controller::decide::Next;
use crate::controller::status;
use crate::crd::TrimbleConnectionStatus;
use crate::leaf::Credential;

/// Records what Leaf reports about `credential` on top of `base`, reading its events when
/// `fetch_events`.
pub(super) async fn check<P: Ports>(
    w: &mut StatusWriter<'_, P>,
    input: &Input<'_>,
    mut base: TrimbleConnectionStatus,
    credential: &Credential,
    fetch_events: bool,
) -> Result<Next, Interrupted> {
    fill(&mut base, credential);
    let mut new_errors = Vec::new();
    if fetch_events {
        let events = match w.ports.credential_events().await {
            Ok(events) => events,
            Err(error) => {
                return leaf_failed(
                    w,
                    base,
                    &error,
                    "reading the credential's events from Leaf",
                )
                .await;
            }
        };
        let merged = status::merge_events(&base.recent_events, &events);
        base.recent_events = merged.recent;
        new_errors = merged.new_errors;
    }
    let note = secret_note(input, &base);
    let outcome = status::credential_outcome(&credential.status, secret_name(input), note);
    w.write(base, &outcome).await?;
    // Recorded in the status first, so a restart cannot announce the same Leaf event twice.
    for event in &new_errors {
        w.ports.publish_leaf_event(event).await;
    }
    Ok(Next::Check)
}
