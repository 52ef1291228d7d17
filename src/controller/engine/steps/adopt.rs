//! Adopt: a foreign credential whose clientId matches the Secret's, taken over without a POST.
//!
//! The Secret's values were not sent by us, so they are recorded as found at adoption
//! (`adoptedSecretFingerprint`), never as sent (`secretFingerprint`): a later change of the Secret
//! rotates, and a dead adopted credential says exactly what a person can do.

use tracing::info;

use super::check::check;
use super::{Input, Interrupted, Ports, StatusWriter, close_doubt, secret_name, user};
use crate::controller::decide::Next;
use crate::leaf::Credential;
use crate::reason::Reason;

pub(super) async fn adopt<P: Ports>(
    w: &mut StatusWriter<'_, P>,
    input: &Input<'_>,
    credential: Credential,
) -> Result<Next, Interrupted> {
    let mut next = w.current().clone();
    close_doubt(&mut next);
    next.secret_fingerprint = None;
    next.adopted_secret_fingerprint = input.facts.secret.fingerprint().map(str::to_string);
    next.recent_events.clear();
    let result = check(w, input, next, &credential, true).await?;
    info!(credential = %credential.id, "adopted the existing Trimble credential");
    let note = format!(
        "Adopted the existing Trimble credential {} of Leaf user {}: its clientId matches Secret {:?}",
        credential.id,
        user(input),
        secret_name(input)
    );
    w.ports.publish(Reason::Adopted, "Adopt", &note).await;
    Ok(result)
}
