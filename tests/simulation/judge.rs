//! The invariants, judged from the world's ground truth: which request made each credential and
//! for which incarnation of the resource, which tokens Leaf has used, when each write left its
//! replica and when it took effect, who held the Lease at each instant. Nothing here reads the
//! operator's own records (its status is only the claim under judgement) or calls its rules.
//!
//! 1. **No token sent twice.** A POST never carries a refresh token Leaf already used for this
//!    incarnation, nor one an earlier POST of it may still bring to Leaf.
//! 2. **Never touch what is not ours.** A DELETE removes only the credential the operator saw and
//!    was entitled to remove (its own, one it adopted by policy, or a foreign one under
//!    `adoptionPolicy: Replace`); a status claims only such a credential. The one exception Leaf's
//!    API leaves (a DELETE names the user, so a credential someone else makes between the
//!    operator's read and the moment its write lands is removed) is counted as a race; a
//!    credential of the operator's own removed that way never is.
//! 3. **Nothing lost.** Every credential a POST of the current incarnation made is named by its
//!    status, or covered by the create its status records as in doubt; every write in flight is
//!    covered by its intent; a released resource leaves nothing of its own in flight (and nothing
//!    in Leaf under `deletionPolicy: Delete`).
//! 4. **No hot loop.** At most 30 Leaf calls in any minute.
//! 6. **One grower link.** At most one live Magic Link per resource at any time, none left once
//!    the resource is released (or Ready again), and no link id in its status. A credential Leaf
//!    made when the grower completed a link of the resource is the resource's; one someone else
//!    made after the grower opened such a link cannot be told apart and is counted.
//! 5. **Leadership.** A write leaves a replica only while the Lease names it, and Leaf applies the
//!    operator's writes in the order they left (a write that lands after a later one was applied
//!    is the late DELETE that removes its own replacement).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use leaf_operator::crd::{AdoptionPolicy, TrimbleConnectionStatus};

use crate::leaf::{Cred, InFlight, LeafModel, Write};

/// The most Leaf calls the resource may make in any minute.
pub const CALLS_PER_MINUTE: usize = 30;

/// A write the operator sent, as the world saw it leave.
#[derive(Clone, Debug)]
pub struct Sent {
    pub client_id: Option<String>,
    pub incarnation: u32,
    pub sent_at: Timestamp,
    /// The client got an answer that says what happened (a 201, a 4xx, a 204 ...).
    pub answered: bool,
}

/// Counts kept for the report.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub reconciles: u64,
    pub crashes: u64,
    pub posts: u64,
    pub deletes: u64,
    pub late_landings: u64,
    pub leader_changes: u64,
    pub lagged_reads: u64,
    pub recreations: u64,
    /// A status claimed a foreign credential Leaf gives no way to tell from the one a create of
    /// ours whose answer was lost would have made (same app, made while it could land).
    pub ambiguous_claims: u64,
    /// A credential that appeared between the operator's read and its DELETE's departure, removed
    /// by that DELETE (or replaced by its POST).
    pub races: u64,
    /// A re-created resource sent a token its predecessor had used (it cannot know them).
    pub predecessor_tokens: u64,
    pub fenced: u64,
    /// A status claimed, as the grower's, a credential someone else made after the grower had
    /// opened one of its Magic Links (Leaf's records cannot tell them apart).
    pub ambiguous_link_claims: u64,
    /// Magic Links issued, and credentials the grower made through one.
    pub links_issued: u64,
    pub grower_credentials: u64,
}

#[derive(Default)]
pub struct Books {
    pub violations: Vec<String>,
    pub sent: HashMap<u64, Sent>,
    /// Tokens each incarnation's own POSTs made Leaf use.
    pub spent_by: HashMap<u32, HashSet<String>>,
    /// Credentials each incarnation legitimately claimed (its own, or adopted by policy).
    pub entitled: HashMap<u32, HashSet<String>>,
    /// Creates each incarnation recorded as intended (a status naming a create in doubt landed on
    /// the API server): the clientId the Secret held, and when.
    pub intents: Vec<(u32, String, Timestamp)>,
    /// Credentials claimed as made by a create whose outcome was unknown, which someone else
    /// made (see [`Books::claims`]).
    pub ambiguous: HashSet<String>,
    /// The latest send time among the writes Leaf applied.
    pub latest_applied: Option<(Timestamp, u64)>,
    pub calls: Vec<Timestamp>,
    pub tally: Tally,
}

impl Books {
    pub fn violation(&mut self, now: Timestamp, what: String) {
        self.violations.push(format!("at {now}: {what}"));
    }

    /// Invariant 4.
    pub fn call(&mut self, now: Timestamp) {
        self.calls.push(now);
        let since = now - SignedDuration::from_secs(60);
        self.calls.retain(|t| *t > since);
        if self.calls.len() > CALLS_PER_MINUTE {
            let count = self.calls.len();
            self.violation(
                now,
                format!("{count} Leaf calls in one minute (at most {CALLS_PER_MINUTE})"),
            );
        }
    }

    /// Invariants 1 and 5 when a write leaves replica `replica` at `now`.
    #[allow(clippy::too_many_arguments)]
    pub fn leaves(
        &mut self,
        now: Timestamp,
        write: &Write,
        id: u64,
        replica: usize,
        holder: Option<usize>,
        incarnation: u32,
        leaf: &LeafModel,
    ) {
        if holder != Some(replica) {
            self.violation(
                now,
                format!(
                    "replica {replica} sent a Leaf write while the Lease names {holder:?}: {write:?}"
                ),
            );
        }
        let (token, client_id) = match write {
            Write::Post { client_id, token } => (Some(token.clone()), Some(client_id.clone())),
            Write::Delete => (None, None),
        };
        if let Some(token) = &token {
            self.tally.posts += 1;
            let ours = self
                .spent_by
                .get(&incarnation)
                .is_some_and(|spent| spent.contains(token));
            if ours {
                self.violation(
                    now,
                    format!(
                        "POST of refresh token {token}, which Leaf already used for this resource"
                    ),
                );
            } else if leaf.spent.contains(token) {
                self.tally.predecessor_tokens += 1;
            }
            let again = leaf.in_flight.iter().any(|f| {
                matches!(&f.write, Write::Post { token: t, .. } if t == token)
                    && f.incarnation == incarnation
            });
            if again {
                self.violation(
                    now,
                    format!(
                        "POST of refresh token {token} while an earlier POST of it may still land"
                    ),
                );
            }
        } else {
            self.tally.deletes += 1;
        }
        self.sent.insert(
            id,
            Sent {
                client_id,
                incarnation,
                sent_at: now,
                answered: false,
            },
        );
    }

    /// The client got an answer that says what happened to write `id`.
    pub fn answered(&mut self, id: u64) {
        if let Some(sent) = self.sent.get_mut(&id) {
            sent.answered = true;
        }
    }

    /// Invariant 5 (order) when Leaf applies write `id`, sent at `sent_at`.
    pub fn applies(&mut self, now: Timestamp, id: u64, sent_at: Timestamp) {
        if let Some((latest, other)) = self.latest_applied
            && latest > sent_at
        {
            self.violation(
                now,
                format!(
                    "Leaf applied write {id} (sent at {sent_at}) after write {other}, sent later at {latest}: \
                     a write that landed late overtook the one that replaced it"
                ),
            );
        }
        if self
            .latest_applied
            .is_none_or(|(latest, _)| sent_at >= latest)
        {
            self.latest_applied = Some((sent_at, id));
        }
    }

    /// A POST of `incarnation` made Leaf use `token`.
    pub fn spent(&mut self, incarnation: u32, token: &str) {
        self.spent_by
            .entry(incarnation)
            .or_default()
            .insert(token.to_string());
    }

    /// Invariant 2 when Leaf removes `removed` for a write of ours (a DELETE, or a POST that
    /// silently replaced it). `decided_on`/`decided_at`: what the operator's read showed, and
    /// when; `policy`: the adoption policy when the write left.
    #[allow(clippy::too_many_arguments)]
    pub fn removes(
        &mut self,
        now: Timestamp,
        request: &InFlight,
        removed: &Cred,
        decided_on: Option<&str>,
        decided_at: Option<Timestamp>,
        policy: AdoptionPolicy,
        window: Duration,
    ) {
        let incarnation = request.incarnation;
        let entitled = removed.is_ours(incarnation)
            || self
                .entitled
                .get(&incarnation)
                .is_some_and(|e| e.contains(&removed.id));
        let decided = decided_on == Some(removed.id.as_str());
        if decided && (entitled || policy == AdoptionPolicy::Replace) {
            return;
        }
        if decided && self.indistinguishable(removed, incarnation, window) {
            // The operator took it for its own create's (the same ambiguity as a claim).
            self.tally.ambiguous_claims += 1;
            return;
        }
        // At the same instant as the read, but not shown by it: made after it (someone else's
        // credentials show at once).
        let after_read = decided_at.is_some_and(|at| removed.created_world >= at);
        if after_read && removed.origin == crate::leaf::Origin::Foreign {
            // Someone else made it after the read the write was decided on, before the write
            // landed: Leaf's DELETE names the user (and a POST may replace silently), so nothing
            // the operator can do closes this window. A credential of the operator's own made
            // meanwhile is no race: it sent another write while this one could still land.
            self.tally.races += 1;
            return;
        }
        self.violation(
            now,
            format!(
                "{:?} sent at {} removed credential {} ({:?}, created {}), not the one the operator decided on \
                 ({decided_on:?}, read at {decided_at:?}) under adoptionPolicy {policy:?}",
                request.write, request.sent_at, removed.id, removed.origin, removed.created_world
            ),
        );
    }

    /// Invariant 2 when a status names credential `id` for `incarnation`. `secret_client`: the
    /// Secret's clientId; `window`: how long after it left a create may land.
    #[allow(clippy::too_many_arguments)]
    pub fn claims(
        &mut self,
        now: Timestamp,
        incarnation: u32,
        id: &str,
        leaf: &LeafModel,
        policy: AdoptionPolicy,
        secret_client: Option<&str>,
        window: Duration,
    ) {
        if self
            .entitled
            .get(&incarnation)
            .is_some_and(|e| e.contains(id))
        {
            return;
        }
        let Some(cred) = leaf.ever.get(id).cloned() else {
            self.violation(
                now,
                format!("status claims credential {id}, which Leaf never held"),
            );
            return;
        };
        let by_policy = policy == AdoptionPolicy::AdoptMatching
            && secret_client == Some(cred.client_id.as_str());
        // Made by Leaf when the grower completed a link this incarnation issued: ours.
        let ours = cred.is_ours(incarnation) || cred.made_through_link_of(incarnation);
        // Someone else's, made after the grower opened a link of ours: Leaf shows nothing that
        // tells the two apart (the link's use and the times are all the evidence there is).
        let after_opened_link = leaf.links.iter().any(|l| {
            l.incarnation == incarnation
                && l.last_accessed
                    .is_some_and(|opened| cred.created >= opened - SignedDuration::from_secs(120))
                && cred.created >= l.created - SignedDuration::from_secs(120)
        });
        if !ours && after_opened_link {
            self.tally.ambiguous_link_claims += 1;
            self.entitled
                .entry(incarnation)
                .or_default()
                .insert(id.to_string());
            return;
        }
        // Taken, perhaps, for what a create of ours in doubt made (even where the policy would
        // allow adopting it): that create's POST may then still be on its way.
        let ambiguous = !ours && self.indistinguishable(&cred, incarnation, window);
        if ours || by_policy || ambiguous {
            if ambiguous {
                self.tally.ambiguous_claims += 1;
                self.ambiguous.insert(id.to_string());
            }
            self.entitled
                .entry(incarnation)
                .or_default()
                .insert(id.to_string());
            return;
        }
        self.violation(
            now,
            format!(
                "status claims credential {id} ({:?}, clientId {}, created {}) under adoptionPolicy {policy:?}",
                cred.origin, cred.client_id, cred.created_world
            ),
        );
    }

    /// Whether `cred`, made by someone else, looks exactly like what a create of `incarnation`
    /// whose outcome the operator could not know would have made: its clientId, created while
    /// that create could land (with the clock skew Leaf's `createdTime` may carry). Such a create
    /// is a POST whose answer never came, or an intent on the server whose POST may or may not
    /// have left (the process died, or its status write failed, right after recording it).
    fn indistinguishable(&self, cred: &Cred, incarnation: u32, window: Duration) -> bool {
        let skew = SignedDuration::from_secs(240);
        let window = SignedDuration::try_from(window).unwrap_or_default();
        let could_land = |client: &str, from: Timestamp| {
            client == cred.client_id
                && cred.created_world >= from - skew
                && cred.created_world <= from + window + skew
        };
        let unanswered = self.sent.values().any(|sent| {
            sent.incarnation == incarnation
                && !sent.answered
                && sent
                    .client_id
                    .as_deref()
                    .is_some_and(|c| could_land(c, sent.sent_at))
        });
        let intended = self
            .intents
            .iter()
            .any(|(i, client, at)| *i == incarnation && could_land(client, *at));
        unanswered || intended
    }

    /// Invariant 3 for the live incarnation: every credential it made is tracked, every write
    /// in flight covered. While the status names a credential it took, ambiguously, for its own
    /// create's, that create's POST may still be on its way and land untracked: the same
    /// ambiguity, counted with the claim.
    pub fn tracked(
        &mut self,
        now: Timestamp,
        incarnation: u32,
        status: &TrimbleConnectionStatus,
        leaf: &LeafModel,
    ) {
        if status
            .credential_id
            .as_ref()
            .is_some_and(|id| self.ambiguous.contains(id))
        {
            return;
        }
        let pending_token = status
            .pending_create
            .as_ref()
            .and_then(|p| p.refresh_token_fingerprint.clone());
        let fingerprint = |token: &str| leaf_operator::secret::refresh_token_fingerprint(token);
        if let Some(cred) = leaf.credential.as_ref().filter(|c| c.is_ours(incarnation)) {
            let named = status.credential_id.as_deref() == Some(cred.id.as_str());
            let in_doubt = pending_token.as_deref() == Some(fingerprint(&cred.token).as_str());
            if !named && !in_doubt {
                self.violation(
                    now,
                    format!(
                        "credential {} made by this resource is not tracked (status names {:?}, in doubt: {:?})",
                        cred.id, status.credential_id, status.pending_create
                    ),
                );
            }
        }
        for flight in leaf
            .in_flight
            .iter()
            .filter(|f| f.incarnation == incarnation)
        {
            let covered = match &flight.write {
                Write::Post { token, .. } => {
                    pending_token.as_deref() == Some(fingerprint(token).as_str())
                }
                Write::Delete => status.pending_delete.is_some(),
            };
            if !covered {
                self.violation(
                    now,
                    format!(
                        "{:?} of this resource may still land but its status records no such write in doubt",
                        flight.write
                    ),
                );
            }
        }
    }

    /// Invariant 6: at most one live Magic Link per incarnation, and no link id in its status.
    pub fn links(
        &mut self,
        now: Timestamp,
        incarnation: u32,
        status: &TrimbleConnectionStatus,
        leaf: &LeafModel,
    ) {
        let live: Vec<u64> = leaf
            .links
            .iter()
            .filter(|l| l.incarnation == incarnation && l.live(now))
            .map(|l| l.number)
            .collect();
        if live.len() > 1 {
            self.violation(
                now,
                format!("{} live Magic Links for one resource: {live:?}", live.len()),
            );
        }
        let shown = serde_json::to_string(status).unwrap_or_default();
        if let Some(link) = leaf.links.iter().find(|l| shown.contains(&l.id)) {
            self.violation(
                now,
                format!("the status shows Magic Link {}'s id", link.number),
            );
        }
    }

    /// Invariant 3 when `incarnation`'s finalizer is released.
    pub fn released(
        &mut self,
        now: Timestamp,
        incarnation: u32,
        delete_policy: bool,
        leaf: &LeafModel,
    ) {
        if let Some(link) = leaf
            .links
            .iter()
            .find(|l| l.incarnation == incarnation && l.live(now))
        {
            self.violation(
                now,
                format!(
                    "the finalizer was released while Magic Link {} of this resource is live",
                    link.number
                ),
            );
        }
        if let Some(flight) = leaf.in_flight.iter().find(|f| f.incarnation == incarnation) {
            self.violation(
                now,
                format!(
                    "the finalizer was released while {:?} of this resource may still land",
                    flight.write
                ),
            );
        }
        if delete_policy
            && let Some(cred) = leaf.credential.as_ref().filter(|c| {
                c.is_ours(incarnation)
                    || self
                        .entitled
                        .get(&incarnation)
                        .is_some_and(|e| e.contains(&c.id))
            })
        {
            self.violation(
                now,
                format!(
                    "released under deletionPolicy Delete while Leaf still holds its credential {}",
                    cred.id
                ),
            );
        }
    }
}
