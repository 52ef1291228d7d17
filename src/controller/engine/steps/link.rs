//! The grower's Magic Link: issue it (after checking Leaf has the Trimble application), find a
//! link whose create answer was lost, judge a credential that appeared, retire and delete a link,
//! and delete our dead credential before a link goes out.
//!
//! The link's id and URL are bearer material: they go from the port into the link Secret and
//! nowhere else (no log line, no status, no Event names them; the transitions see a
//! [`LinkRecord`]). The Secret is written before the status says the link is out.

use secrecy::{ExposeSecret, SecretString};
use tracing::{info, warn};

use super::super::writer::StatusWriter;
use super::super::{Finished, Input, Interrupted, Ports};
use super::create::{events_with_the_create, send_by};
use crate::controller::decide::reauth::{self, LinkRecord, LinkStep};
use crate::controller::decide::transitions::delete::{self, AfterDelete, Purpose};
use crate::controller::decide::transitions::{hold, leaf_failed, link};
use crate::leaf::{Credential, LeafError, MagicLink, NotSent};
use crate::secret::magic_link_fingerprint;

pub(super) async fn run<P: Ports>(
    w: &mut StatusWriter<'_, P>,
    input: &Input<'_>,
    step: LinkStep,
) -> Result<Finished, Interrupted> {
    let f = &input.facts.at(w.ports.now());
    match step {
        LinkStep::Issue => issue(w, input).await,
        LinkStep::FindLink => find(w, input).await,
        LinkStep::DeleteRetired => delete_retired(w, input).await,
        LinkStep::JudgeArrival { credential } => judge(w, input, &credential).await,
        LinkStep::Withdraw { credential } => withdraw(w, input, &credential).await,
        LinkStep::Retire { why } => {
            let transition = link::retire(f, w.current(), why);
            w.finish(transition).await
        }
        LinkStep::AwaitGrower { .. } => await_grower(w, input).await,
    }
}

/// While the grower has not completed the link: is it still usable (not used up, not deleted at
/// Leaf)? If not, it is replaced; otherwise wait.
async fn await_grower<P: Ports>(
    w: &mut StatusWriter<'_, P>,
    input: &Input<'_>,
) -> Result<Finished, Interrupted> {
    let f = &input.facts.at(w.ports.now());
    let base = crate::controller::decide::transitions::base(f, w.current());
    let Some(out) = base.magic_link.clone() else {
        let transition = hold::await_settle(f, w.current(), reauth::AWAIT_GROWER_POLL);
        return w.finish(transition).await;
    };
    let record = link_record(w, input).await;
    let transition = match record {
        Ok(record) if !reauth::still_usable(f, &out, record.as_ref()) => {
            link::retire(f, w.current(), reauth::RetireWhy::Unusable)
        }
        Ok(_) => link::await_grower(f, base, &out),
        Err(error) => leaf_failed(base, &error, "reading the grower's Magic Link from Leaf"),
    };
    w.finish(transition).await
}

async fn issue<P: Ports>(
    w: &mut StatusWriter<'_, P>,
    input: &Input<'_>,
) -> Result<Finished, Interrupted> {
    let f = &input.facts.at(w.ports.now());
    let Some(settings) = f.reauth.clone() else {
        // The chooser issues only with the policy on; without it, wait for new values.
        let waiting = hold::need_new_values(f, w.current(), None, false);
        return w.finish(waiting).await;
    };
    // A Secret of that name that is someone else's: no link is issued that could not be handed
    // over (the write checks again, so a Secret created meanwhile is not overwritten either).
    if !w.ports.link_secret_free(&settings.link_secret_name).await? {
        return w.finish(link::secret_taken(f, w.current())).await;
    }
    match w
        .ports
        .trimble_app_registered(settings.app_name.as_deref())
        .await
    {
        Err(error) => {
            let failed = leaf_failed(
                crate::controller::decide::transitions::base(f, w.current()),
                &error,
                "checking the Trimble application registered with Leaf",
            );
            return w.finish(failed).await;
        }
        Ok(false) => return w.finish(link::app_missing(f, w.current())).await,
        Ok(true) => {}
    }
    if !w.ports.may_write() {
        return Err(Interrupted::Fenced("a Magic Link"));
    }
    let (intent, pending) = link::issue_intent(f, w.current());
    w.write(intent.status, &intent.outcome).await?;
    if !w.ports.may_write() {
        return Err(Interrupted::Fenced("a Magic Link"));
    }
    let answer = w
        .ports
        .create_magic_link(&settings, send_by(f, Some(&pending.send_by)))
        .await;
    if let Err(LeafError::NotSent(NotSent::Fenced)) = &answer {
        return Err(Interrupted::Fenced("a Magic Link"));
    }
    let f = &input.facts.at(w.ports.now());
    match answer {
        Ok(issued) => {
            // Into its Secret first: if this fails the intent stays, and Leaf's list finds the
            // link again on the next look (no second link).
            w.ports
                .write_link_secret(&settings.link_secret_name, &issued)
                .await?;
            info!(secret = %settings.link_secret_name, "issued a Magic Link for the grower");
            let transition = link::issued(f, w.current().clone(), &LinkRecord::of(&issued));
            w.finish(transition).await
        }
        Err(error) => {
            warn!(%error, "issuing a Magic Link for the grower failed");
            let transition = link::issue_failed(w.current().clone(), &error);
            w.finish(transition).await
        }
    }
}

async fn find<P: Ports>(
    w: &mut StatusWriter<'_, P>,
    input: &Input<'_>,
) -> Result<Finished, Interrupted> {
    let f = &input.facts.at(w.ports.now());
    let Some(pending) = w
        .current()
        .magic_link
        .as_ref()
        .and_then(|l| l.pending.clone())
    else {
        return w.finish(link::deleted(f, w.current())).await;
    };
    let links = match w.ports.user_magic_links().await {
        Ok(links) => links,
        Err(error) => {
            let failed = leaf_failed(
                crate::controller::decide::transitions::base(f, w.current()),
                &error,
                "looking for the grower's Magic Link in Leaf's list",
            );
            return w.finish(failed).await;
        }
    };
    let records: Vec<LinkRecord> = links.iter().map(LinkRecord::of).collect();
    let found = reauth::made_by_pending(f, &pending, &records).cloned();
    if let Some(record) = &found {
        let Some(mut issued) = links
            .into_iter()
            .find(|l| LinkRecord::of(l).fingerprint == record.fingerprint)
        else {
            unreachable!("the record came from this list");
        };
        if issued.link.expose_secret().is_empty() {
            // A list entry without its URL: the single GET has it.
            match w.ports.get_magic_link(&issued.id).await {
                Ok(Some(full)) => issued = full,
                Ok(None) => {}
                Err(error) => {
                    let failed = leaf_failed(
                        crate::controller::decide::transitions::base(f, w.current()),
                        &error,
                        "reading the grower's Magic Link from Leaf",
                    );
                    return w.finish(failed).await;
                }
            }
        }
        let name = f
            .reauth
            .as_ref()
            .map(|r| r.link_secret_name.clone())
            .or_else(|| {
                w.current()
                    .magic_link
                    .as_ref()
                    .map(|l| l.secret_name.clone())
            })
            .unwrap_or_default();
        w.ports.write_link_secret(&name, &issued).await?;
        info!(secret = %name, "found the Magic Link an interrupted create issued");
    }
    let transition = link::after_search(f, w.current(), &pending, found.as_ref());
    w.finish(transition).await
}

/// The id of the link the status names: from its Secret, or (the Secret lost) from Leaf's list by
/// its fingerprint. None: nothing of it can be found.
async fn link_id<P: Ports>(
    w: &StatusWriter<'_, P>,
    input: &Input<'_>,
) -> Result<Option<SecretString>, LeafError> {
    let Some(fingerprint) = w
        .current()
        .magic_link
        .as_ref()
        .and_then(|l| l.fingerprint.clone())
    else {
        return Ok(None);
    };
    if let Some(id) = &input.link_id
        && magic_link_fingerprint(id.expose_secret()) == fingerprint
    {
        return Ok(Some(id.clone()));
    }
    let links = w.ports.user_magic_links().await?;
    Ok(links
        .into_iter()
        .find(|l| magic_link_fingerprint(l.id.expose_secret()) == fingerprint)
        .map(|l: MagicLink| l.id))
}

/// The record at Leaf of the link the status names (None: nothing of it can be found).
async fn link_record<P: Ports>(
    w: &StatusWriter<'_, P>,
    input: &Input<'_>,
) -> Result<Option<MagicLink>, LeafError> {
    match link_id(w, input).await? {
        Some(id) => w.ports.get_magic_link(&id).await,
        None => Ok(None),
    }
}

/// DELETEs the link `id` at Leaf, behind the fence. A DELETE of a link names the link: a late one
/// removes only that link, so it needs no window; one that failed is simply sent again (a 404
/// then says it is gone). The inner error is Leaf's, for the caller's transition.
async fn delete_at_leaf<P: Ports>(
    w: &StatusWriter<'_, P>,
    f: &crate::controller::decide::Facts,
    id: &SecretString,
) -> Result<Result<(), LeafError>, Interrupted> {
    if !w.ports.may_write() {
        return Err(Interrupted::Fenced("the Magic Link DELETE"));
    }
    match w
        .ports
        .delete_magic_link(id, f.windows.send_by(f.now))
        .await
    {
        Ok(_) => Ok(Ok(())),
        Err(LeafError::NotSent(NotSent::Fenced)) => {
            Err(Interrupted::Fenced("the Magic Link DELETE"))
        }
        Err(error) => {
            warn!(%error, "deleting the grower's Magic Link at Leaf failed");
            Ok(Err(error))
        }
    }
}

async fn delete_retired<P: Ports>(
    w: &mut StatusWriter<'_, P>,
    input: &Input<'_>,
) -> Result<Finished, Interrupted> {
    let f = &input.facts.at(w.ports.now());
    let failed = |w: &StatusWriter<'_, P>, error: &LeafError| {
        leaf_failed(
            crate::controller::decide::transitions::base(f, w.current()),
            error,
            "deleting the grower's Magic Link at Leaf",
        )
    };
    let id = match link_id(w, input).await {
        Ok(id) => id,
        Err(error) => {
            let transition = failed(w, &error);
            return w.finish(transition).await;
        }
    };
    if let Some(id) = id
        && let Err(error) = delete_at_leaf(w, f, &id).await?
    {
        let transition = failed(w, &error);
        return w.finish(transition).await;
    }
    if let Some(out) = &w.current().magic_link {
        w.ports.delete_link_secret(&out.secret_name).await?;
    }
    info!("deleted the grower's Magic Link");
    let transition = link::deleted(f, w.current());
    w.finish(transition).await
}

async fn judge<P: Ports>(
    w: &mut StatusWriter<'_, P>,
    input: &Input<'_>,
    credential: &Credential,
) -> Result<Finished, Interrupted> {
    let f = &input.facts.at(w.ports.now());
    let record = link_record(w, input).await;
    let record = match record {
        Ok(record) => record.as_ref().map(LinkRecord::of),
        Err(error) => {
            let failed = leaf_failed(
                crate::controller::decide::transitions::base(f, w.current()),
                &error,
                "reading the grower's Magic Link from Leaf",
            );
            return w.finish(failed).await;
        }
    };
    let from_link = record
        .as_ref()
        .is_some_and(|r| reauth::came_from_link(r, credential));
    let events = if from_link {
        info!(credential = %credential.id, "the grower completed the Magic Link");
        events_with_the_create(w, f).await
    } else {
        warn!(credential = %credential.id, "a credential appeared that the grower's Magic Link does not account for");
        None
    };
    let f = &input.facts.at(w.ports.now());
    let transition = link::judged(f, w.current(), credential, record.as_ref(), events);
    w.finish(transition).await
}

/// DELETE our dead credential (a GET just showed it) before the grower's link goes out.
async fn withdraw<P: Ports>(
    w: &mut StatusWriter<'_, P>,
    input: &Input<'_>,
    credential: &Credential,
) -> Result<Finished, Interrupted> {
    let f = &input.facts.at(w.ports.now());
    if !w.ports.may_write() {
        return Err(Interrupted::Fenced("the DELETE"));
    }
    // What Leaf said of it (dead) goes into the status with the intent: the resource must not go
    // on showing the last check's OK while it re-authorizes.
    let mut seen = w.current().clone();
    crate::controller::decide::transitions::fill(&mut seen, credential);
    let (intent, pending) = delete::intent(f, &seen, &credential.id, Purpose::Withdraw);
    w.write(intent.status, &intent.outcome).await?;
    if !w.ports.may_write() {
        return Err(Interrupted::Fenced("the DELETE"));
    }
    let answer = w
        .ports
        .delete_credential(send_by(f, Some(&pending.send_by)))
        .await;
    if let Err(LeafError::NotSent(NotSent::Fenced)) = &answer {
        return Err(Interrupted::Fenced("the DELETE"));
    }
    if let Err(error) = &answer {
        warn!(%error, credential = %credential.id, "deleting the dead Trimble credential failed");
    }
    let f = &input.facts.at(w.ports.now());
    let transition = match delete::after(
        f,
        w.current().clone(),
        &pending,
        answer,
        Purpose::Withdraw,
    ) {
        AfterDelete::Gone { status, .. } => {
            info!(credential = %credential.id, "deleted the dead Trimble credential; a Magic Link follows");
            delete::withdrawn(f, status)
        }
        AfterDelete::Stop(transition) => transition,
    };
    w.finish(transition).await
}

/// Deleting the resource: its Magic Link goes first, whatever `deletionPolicy` says (a bearer link
/// for a connection that no longer exists must not stay usable), and its Secret with it. Some: not
/// yet (write this and look again); None: no link is left.
pub(super) async fn withdraw_for_deletion<P: Ports>(
    w: &mut StatusWriter<'_, P>,
    input: &Input<'_>,
) -> Result<Option<crate::controller::decide::transitions::Transition>, Interrupted> {
    use crate::controller::decide::transitions::{Transition, base};
    use crate::controller::status::Outcome;
    use crate::reason::Reason;

    let Some(out) = w.current().magic_link.clone() else {
        return Ok(None);
    };
    let f = &input.facts.at(w.ports.now());
    let failed = |w: &StatusWriter<'_, P>, error: &LeafError| {
        leaf_failed(
            base(f, w.current()),
            error,
            "deleting the grower's Magic Link at Leaf",
        )
    };
    let id = match &out.pending {
        Some(pending) => {
            let links = match w.ports.user_magic_links().await {
                Ok(links) => links,
                Err(error) => return Ok(Some(failed(w, &error))),
            };
            let records: Vec<LinkRecord> = links.iter().map(LinkRecord::of).collect();
            match reauth::made_by_pending(f, pending, &records) {
                Some(record) => links
                    .into_iter()
                    .find(|l| LinkRecord::of(l).fingerprint == record.fingerprint)
                    .map(|l| l.id),
                None => {
                    let left = reauth::pending_left(f, pending);
                    if !left.is_zero() {
                        let message = format!(
                            "Deleting: a Magic Link create got no clear answer; waiting up to {}s for Leaf's list to \
                             show it, so that it can be deleted",
                            left.as_secs().max(1)
                        );
                        return Ok(Some(Transition::new(
                            base(f, w.current()),
                            Outcome::new(Reason::Deleting, message),
                            crate::controller::decide::Next::Hold(left),
                        )));
                    }
                    None
                }
            }
        }
        None => match link_id(w, input).await {
            Ok(id) => id,
            Err(error) => return Ok(Some(failed(w, &error))),
        },
    };
    if let Some(id) = id
        && let Err(error) = delete_at_leaf(w, f, &id).await?
    {
        return Ok(Some(failed(w, &error)));
    }
    w.ports.delete_link_secret(&out.secret_name).await?;
    let mut next = base(f, w.current());
    next.magic_link = None;
    info!("deleted the grower's Magic Link");
    w.write(
        next,
        &Outcome::new(
            Reason::Deleting,
            "Deleting: deleted the grower's Magic Link at Leaf and its Secret",
        ),
    )
    .await?;
    Ok(None)
}
