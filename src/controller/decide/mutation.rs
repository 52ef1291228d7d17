//! Deliberately wrong rules, to prove that the simulation catches each broken one.
//!
//! Compiled only with the test-only cargo feature `mutations` (`cargo test --features mutations
//! --test simulation`); without it [`on`] is a constant `false` and every hook disappears. The
//! active mutation is per thread: the simulation runs each schedule on its test's own thread, so
//! tests with and without a mutation can run side by side.

/// One wrong rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mutation {
    /// After a create's doubt closed unresolved, its refresh token is sent again.
    ResendUnresolved,
    /// Refresh tokens sent before are forgotten.
    ForgetSentTokens,
    /// Whatever credential Leaf shows is taken as the one the status names.
    AnyCredentialIsOurs,
    /// A credential with the in-doubt create's clientId is its credential, whenever it was made.
    MadeByIgnoresTime,
    /// No read-lag allowance: a read right after our create is believed.
    NoReadLag,
    /// A write's window is over the moment it may have left (no wait for a late landing).
    NoInDoubtWait,
    /// A DELETE whose answer was lost counts as not applied.
    DeleteNeverInDoubt,
    /// A failed Leaf call is retried at once.
    NoBackoff,
    /// A Magic Link about to expire is replaced by a new one without deleting it first.
    RenewWithoutDelete,
    /// Any credential that appears while a Magic Link is out is taken as the grower's.
    AnyArrivalIsTheGrowers,
}

impl Mutation {
    pub const ALL: [Mutation; 10] = [
        Self::ResendUnresolved,
        Self::ForgetSentTokens,
        Self::AnyCredentialIsOurs,
        Self::MadeByIgnoresTime,
        Self::NoReadLag,
        Self::NoInDoubtWait,
        Self::DeleteNeverInDoubt,
        Self::NoBackoff,
        Self::RenewWithoutDelete,
        Self::AnyArrivalIsTheGrowers,
    ];
}

#[cfg(feature = "mutations")]
thread_local! {
    static ACTIVE: std::cell::Cell<Option<Mutation>> = const { std::cell::Cell::new(None) };
}

/// Whether `mutation` is active on this thread.
#[cfg(feature = "mutations")]
pub fn on(mutation: Mutation) -> bool {
    ACTIVE.with(|active| active.get() == Some(mutation))
}

/// Whether `mutation` is active: never, in a build without the `mutations` feature.
#[cfg(not(feature = "mutations"))]
#[inline(always)]
pub const fn on(_mutation: Mutation) -> bool {
    false
}

/// Activates `mutation` on this thread (None: the rules as written).
#[cfg(feature = "mutations")]
pub fn set(mutation: Option<Mutation>) {
    ACTIVE.with(|active| active.set(mutation));
}
