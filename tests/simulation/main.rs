//! Deterministic simulation of the operator's decision core and executors: `cargo test simulation`.
//!
//! The real `decide` and `engine` code runs against an in-memory Leaf and Kubernetes ([`world`],
//! [`leaf`]) on a simulated clock, while proptest generates schedules of what happens around it:
//! time passing, Secret changes (new, bad, reverted, deleted, incomplete), foreign credentials
//! appearing, credentials vanishing or turning invalid, policy changes, suspend, deletion, and
//! faults injected into the next IO calls (a crash at that await, a timeout whose POST lands up
//! to 55 s later, 5xx with and without effect, a Leaf outage of any length, 429 with any
//! `Retry-After`, read lag, lost
//! leadership, a lease that runs out unnoticed so that only the fence stands in the way). After every step the invariants are checked:
//! 1. never a POST of a refresh token that the operator knows made a credential (it saw the 201,
//!    recognised the credential, or Leaf still holds it), nor one while an earlier POST of it may
//!    still land. The one re-send Leaf's API cannot rule out (a POST whose answer was lost, whose
//!    credential someone else removed before any GET could see it, then a GET showing nothing
//!    after the in-doubt window) is counted and reported, and must never follow a DELETE;
//! 2. never a DELETE of a credential this resource neither created nor was entitled to take over
//!    (adoption by policy, `adoptionPolicy: Replace`, or the in-doubt rule: the clientId of its own
//!    create in doubt, created after that create started, which Leaf gives no way to tell apart
//!    from a same-app credential made in those seconds), and never a status naming one;
//! 3. never a credential our POST made that is not tracked (named by the status, or covered by
//!    the create in doubt);
//! 4. at most 30 Leaf calls per minute for the resource (no hot loop, whatever Leaf answers);
//! 5. never a Leaf write while not leading.
//!
//! At the end (teardown) every schedule must converge: faults stop, leadership returns, a person
//! puts fresh values into the Secret and clears foreign credentials, and within two simulated hours
//! the resource is Ready with its own credential and stays quiet (or, when deleted, is gone with
//! nothing of it left in Leaf under `deletionPolicy: Delete`).
//!
//! Why proptest-state-machine rather than turmoil or madsim: the engine's IO already goes through
//! one trait, so the world can answer every call at once or never; no network or runtime has to
//! be simulated, a schedule is plain data that proptest generates, shrinks to a minimal failing
//! sequence and replays from its seed, and each case runs in microseconds, so 10,000 schedules fit
//! in CI. `SIM_CASES` (default 10,000) and `SIM_SEED` (default fixed; `random` for a fresh one)
//! choose the run; a failure prints the seed, and the same seed replays it.

mod leaf;
mod world;

use std::sync::Mutex;

use jiff::SignedDuration;
use leaf_operator::crd::{AdoptionPolicy, DeletionPolicy};
use leaf_operator::reason::Reason;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest};

use leaf::{OnExisting, Origin};
use world::{Fault, SecretState, Tally, World, reconcile};

const DEFAULT_SEED: u64 = 20_261_202;
const DEFAULT_CASES: u32 = 10_000;

/// What happens around the operator between two looks at it.
#[derive(Clone, Debug)]
enum Transition {
    /// Time passes; whatever comes due runs.
    Wait(u16),
    /// A watch event (a status write elsewhere, a resync): one reconcile now.
    Kick,
    /// The next IO calls fail this way.
    Faults(Vec<Fault>),
    NewToken,
    NewClientAndToken,
    /// A token Leaf refuses.
    BadToken,
    /// The Secret goes back to a token sent before.
    OldToken,
    DeleteSecret,
    BreakSecret,
    /// The grower reconnects through another tool: a foreign credential replaces whatever Leaf has.
    ForeignAppears {
        same_client: bool,
    },
    CredentialVanishes,
    LeafStatus(&'static str),
    Policy(AdoptionPolicy),
    OnExisting(OnExisting),
    UserExists(bool),
    Suspend(bool),
    Annotate,
    Delete(DeletionPolicy),
    Regain,
    /// Leaf goes down (every call 503) or comes back.
    Outage(bool),
}

fn fault() -> impl Strategy<Value = Fault> {
    let retry_after = prop_oneof![
        Just("1"),
        Just("0"),
        Just("30"),
        Just("-5"),
        Just("1e20"),
        Just("18446744073709551615"),
        Just("NaN"),
        Just("3.5"),
        Just("Thu, 01 Jan 2150 00:00:00 GMT"),
        Just("soon"),
    ]
    .prop_map(str::to_string);
    prop_oneof![
        3 => Just(Fault::CrashBefore),
        3 => Just(Fault::CrashAfter),
        2 => Just(Fault::TimeoutLost),
        3 => (0u8..60).prop_map(Fault::TimeoutLate),
        2 => Just(Fault::ServerError),
        2 => Just(Fault::ServerErrorApplied),
        2 => retry_after.prop_map(Fault::RateLimited),
        3 => (1u8..8).prop_map(Fault::Lag),
        2 => Just(Fault::LoseLeadership),
        2 => Just(Fault::LeaseRunsOut),
    ]
}

struct Reference;

impl ReferenceStateMachine for Reference {
    type State = AdoptionPolicy;
    type Transition = Transition;

    fn init_state() -> BoxedStrategy<Self::State> {
        prop_oneof![
            Just(AdoptionPolicy::AdoptMatching),
            Just(AdoptionPolicy::Replace),
            Just(AdoptionPolicy::Never),
        ]
        .boxed()
    }

    fn transitions(_state: &Self::State) -> BoxedStrategy<Self::Transition> {
        prop_oneof![
            8 => (1u16..600).prop_map(Transition::Wait),
            3 => Just(Transition::Kick),
            8 => proptest::collection::vec(fault(), 1..6).prop_map(Transition::Faults),
            2 => Just(Transition::NewToken),
            1 => Just(Transition::NewClientAndToken),
            1 => Just(Transition::BadToken),
            1 => Just(Transition::OldToken),
            1 => Just(Transition::DeleteSecret),
            1 => Just(Transition::BreakSecret),
            1 => any::<bool>().prop_map(|same_client| Transition::ForeignAppears { same_client }),
            1 => Just(Transition::CredentialVanishes),
            1 => prop_oneof![
                Just("UNAUTHENTICATED"),
                Just("invalid"),
                Just("MISSING_PERMISSION"),
                Just("OK"),
                Just("PAUSED_BY_LEAF"),
            ]
            .prop_map(Transition::LeafStatus),
            1 => prop_oneof![
                Just(AdoptionPolicy::AdoptMatching),
                Just(AdoptionPolicy::Replace),
                Just(AdoptionPolicy::Never),
            ]
            .prop_map(Transition::Policy),
            1 => prop_oneof![
                Just(OnExisting::Conflict409),
                Just(OnExisting::BadRequest400),
                Just(OnExisting::SilentReplace),
            ]
            .prop_map(Transition::OnExisting),
            1 => any::<bool>().prop_map(Transition::UserExists),
            1 => any::<bool>().prop_map(Transition::Suspend),
            1 => Just(Transition::Annotate),
            1 => prop_oneof![Just(DeletionPolicy::Delete), Just(DeletionPolicy::Orphan)]
                .prop_map(Transition::Delete),
            2 => Just(Transition::Regain),
            1 => any::<bool>().prop_map(Transition::Outage),
        ]
        .boxed()
    }

    fn apply(state: Self::State, _transition: &Self::Transition) -> Self::State {
        state
    }
}

/// Runs what is due now; more than a few dozen reconciles in one instant is a hot loop.
fn run_due(cell: &Mutex<World>) {
    for _ in 0..40 {
        if !cell.lock().expect("world").wants_reconcile() {
            return;
        }
        reconcile(cell);
    }
    cell.lock()
        .expect("world")
        .violation("40 reconciles in one instant without settling: a hot loop".into());
}

/// Lets `seconds` pass, running everything that comes due on the way.
fn wait(cell: &Mutex<World>, seconds: u64) {
    let target = {
        let w = cell.lock().expect("world");
        w.now + SignedDuration::from_secs(seconds as i64)
    };
    loop {
        run_due(cell);
        let mut w = cell.lock().expect("world");
        if !w.violations.is_empty() {
            // Stop here: the invariant check after this transition reports it (and shrinking
            // stays quick even when a broken rule makes every instant a hot loop).
            return;
        }
        match w.next_event() {
            Some(next) if next <= target => {
                let next = next.max(w.now + SignedDuration::from_millis(1));
                w.advance_to(next);
            }
            _ => {
                w.advance_to(target);
                drop(w);
                run_due(cell);
                return;
            }
        }
    }
}

fn apply_transition(cell: &Mutex<World>, transition: Transition) {
    {
        let mut w = cell.lock().expect("world");
        let now = w.now;
        match transition {
            Transition::Wait(seconds) => {
                drop(w);
                wait(cell, u64::from(seconds));
                return;
            }
            Transition::Kick => w.triggered = true,
            Transition::Faults(faults) => w.faults.extend(faults),
            Transition::NewToken | Transition::NewClientAndToken => {
                let token = w.fresh_token();
                let client_id = match (&transition, &w.secret) {
                    (Transition::NewToken, SecretState::Complete { client_id, .. }) => {
                        client_id.clone()
                    }
                    (Transition::NewToken, _) => "client-a".to_string(),
                    _ => format!("client-{}", w.tokens_issued),
                };
                w.secret = SecretState::Complete {
                    client_id,
                    client_secret: "app-secret".into(),
                    refresh_token: token,
                };
                w.triggered = true;
            }
            Transition::BadToken => {
                let n = w.fresh_token();
                if let SecretState::Complete { refresh_token, .. } = &mut w.secret {
                    *refresh_token = format!("bad-{n}");
                }
                w.triggered = true;
            }
            Transition::OldToken => {
                if let SecretState::Complete { refresh_token, .. } = &mut w.secret {
                    *refresh_token = "rt-0".into();
                }
                w.triggered = true;
            }
            Transition::DeleteSecret => {
                w.secret = SecretState::Missing;
                w.triggered = true;
            }
            Transition::BreakSecret => {
                w.secret = SecretState::Incomplete;
                w.triggered = true;
            }
            Transition::ForeignAppears { same_client } => {
                let client = if same_client {
                    "client-a"
                } else {
                    "client-elsewhere"
                };
                let token = format!("foreign-{}", w.fresh_token());
                let cred = w.leaf.new_cred(client, &token, Origin::Foreign, now);
                w.leaf.set_settled(Some(cred));
            }
            Transition::CredentialVanishes => w.leaf.set_settled(None),
            Transition::LeafStatus(status) => {
                if let Some(cred) = w.leaf.credential.as_mut() {
                    cred.status = status.to_string();
                }
            }
            Transition::Policy(policy) => {
                if !w.gone && w.spec.adoption_policy != policy {
                    w.spec.adoption_policy = policy;
                    w.generation += 1;
                    w.triggered = true;
                }
            }
            Transition::OnExisting(mode) => w.leaf.on_existing = mode,
            Transition::UserExists(exists) => w.leaf.user_exists = exists,
            Transition::Suspend(suspend) => {
                if !w.gone && w.spec.suspend != suspend {
                    w.spec.suspend = suspend;
                    w.generation += 1;
                    w.triggered = true;
                }
            }
            Transition::Annotate => {
                let value = format!("poke-{}", now.as_second());
                w.annotation = Some(value);
                w.triggered = true;
            }
            Transition::Delete(policy) => {
                if !w.gone {
                    w.deleting = true;
                    // deletionPolicy may be changed on a terminating resource (that is the way out).
                    w.spec.deletion_policy = policy;
                    w.triggered = true;
                }
            }
            Transition::Regain => w.regain_leadership(),
            Transition::Outage(down) => w.outage = down,
        }
    }
    run_due(cell);
}

/// Faults stop, leadership returns, and a person fixes what needs a person: the resource must
/// then converge, and stay quiet.
fn converge(cell: &Mutex<World>) {
    {
        let mut w = cell.lock().expect("world");
        w.faults.clear();
        w.outage = false;
        w.regain_leadership();
    }
    // Let every POST in flight land and every doubt resolve.
    wait(cell, 300);
    {
        let mut w = cell.lock().expect("world");
        if !w.gone && !w.deleting {
            let token = w.fresh_token();
            w.secret = SecretState::Complete {
                client_id: "client-a".into(),
                client_secret: "app-secret".into(),
                refresh_token: token,
            };
            if w.leaf
                .credential
                .as_ref()
                .is_some_and(|c| c.origin == Origin::Foreign)
            {
                w.leaf.set_settled(None);
            }
            w.leaf.user_exists = true;
            if w.spec.suspend || w.spec.adoption_policy != AdoptionPolicy::AdoptMatching {
                w.spec.suspend = false;
                w.spec.adoption_policy = AdoptionPolicy::AdoptMatching;
                w.generation += 1;
            }
            w.triggered = true;
        }
    }
    wait(cell, 2 * 3600);
    let w = cell.lock().expect("world");
    if w.deleting {
        assert!(
            w.gone,
            "the deleted resource was never released: {:?}",
            w.status
        );
        if w.deletion_policy() == DeletionPolicy::Delete {
            let left = w
                .leaf
                .credential
                .clone()
                .filter(|c| c.origin == Origin::Ours);
            assert!(
                left.is_none(),
                "deletionPolicy Delete left our credential {left:?} in Leaf"
            );
        }
        return;
    }
    let ready = leaf_operator::controller::status::ready_reason(&w.status);
    let in_leaf = w.leaf.credential.clone();
    assert_eq!(
        ready,
        Some(Reason::CredentialValid),
        "not Ready after a person fixed everything: status {:#?}, Leaf holds {in_leaf:?}",
        w.status
    );
    assert_eq!(
        w.status.credential_id.as_deref(),
        in_leaf.as_ref().map(|c| c.id.as_str()),
        "the status does not name the credential Leaf holds"
    );
    assert!(w.status.pending_create.is_none());
    // Quiet from here: periodic checks only, no writes to Leaf.
    let (posts, deletes) = (w.tally.posts, w.tally.deletes);
    drop(w);
    wait(cell, 3600);
    let w = cell.lock().expect("world");
    assert_eq!(
        (w.tally.posts, w.tally.deletes),
        (posts, deletes),
        "Leaf writes after converging"
    );
    assert!(w.violations.is_empty(), "{:#?}", w.violations);
}

struct Simulation;

impl StateMachineTest for Simulation {
    type SystemUnderTest = Mutex<World>;
    type Reference = Reference;

    fn init_test(policy: &AdoptionPolicy) -> Self::SystemUnderTest {
        Mutex::new(World::new(*policy))
    }

    fn apply(
        cell: Self::SystemUnderTest,
        _ref_state: &AdoptionPolicy,
        transition: Transition,
    ) -> Self::SystemUnderTest {
        apply_transition(&cell, transition);
        cell
    }

    fn check_invariants(cell: &Self::SystemUnderTest, _ref_state: &AdoptionPolicy) {
        let w = cell.lock().expect("world");
        assert!(
            w.violations.is_empty(),
            "invariant violated: {:#?}",
            w.violations
        );
    }

    fn teardown(cell: Self::SystemUnderTest, _ref_state: AdoptionPolicy) {
        converge(&cell);
        add_totals(&cell.lock().expect("world").tally);
    }
}

/// Totals over every schedule of a run, for the report printed at its end.
static TOTALS: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];

fn add_totals(tally: &Tally) {
    for (slot, value) in TOTALS.iter().zip([
        1,
        tally.reconciles,
        tally.crashes,
        tally.posts,
        tally.deletes,
        tally.blind_resends,
    ]) {
        slot.fetch_add(value, Ordering::Relaxed);
    }
}

/// `SIM_SEED` (default fixed; `random` for a fresh one) and `SIM_CASES` (default 10,000).
fn seed_and_cases() -> (u64, u32) {
    let seed = match std::env::var("SIM_SEED").as_deref() {
        Ok("random") => {
            use std::hash::{BuildHasher, RandomState};
            RandomState::new().hash_one(std::process::id())
        }
        Ok(value) => value
            .parse()
            .expect("SIM_SEED must be a number or `random`"),
        Err(_) => DEFAULT_SEED,
    };
    let cases = std::env::var("SIM_CASES")
        .ok()
        .map(|v| v.parse().expect("SIM_CASES must be a number"))
        .unwrap_or(DEFAULT_CASES);
    (seed, cases)
}

#[test]
fn simulation_of_schedules_with_faults_at_every_await() {
    let (seed, cases) = seed_and_cases();
    eprintln!("simulation: SIM_SEED={seed} SIM_CASES={cases} (the same seed replays a failure)");
    let started = std::time::Instant::now();
    let config = Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config.clone());
    let result = runner.run(
        &Reference::sequential_strategy(1..40),
        |(initial, transitions, seen)| {
            Simulation::test_sequential(config.clone(), initial, transitions, seen);
            Ok(())
        },
    );
    if let Err(failure) = result {
        panic!("simulation failed with SIM_SEED={seed} SIM_CASES={cases}: {failure}");
    }
    let [schedules, reconciles, crashes, posts, deletes, blind] =
        TOTALS.each_ref().map(|slot| slot.load(Ordering::Relaxed));
    eprintln!(
        "simulation: {schedules} schedules (with shrinking) in {:.1} s: {reconciles} reconciles, {crashes} crashes, \
         {posts} POSTs, {deletes} DELETEs, {blind} blind re-sends; every invariant held",
        started.elapsed().as_secs_f64()
    );
    assert!(
        schedules >= u64::from(cases),
        "{schedules} of {cases} schedules ran"
    );
}

/// A schedule spelled out, run like a generated one (teardown included).
fn scenario(policy: AdoptionPolicy, transitions: Vec<Transition>) -> Tally {
    let cell = Simulation::init_test(&policy);
    let mut cell = cell;
    for transition in transitions {
        cell = Simulation::apply(cell, &policy, transition);
        Simulation::check_invariants(&cell, &policy);
    }
    let tally = cell.lock().expect("world").tally.clone();
    Simulation::teardown(cell, policy);
    tally
}

#[test]
fn simulation_scenario_a_reverted_secret_never_resends_a_spent_token() {
    // Found by the simulation: a GitOps revert put back a refresh token that was sent already.
    let tally = scenario(
        AdoptionPolicy::AdoptMatching,
        vec![
            Transition::Wait(3),
            Transition::NewToken,
            Transition::OldToken,
            Transition::Wait(600),
        ],
    );
    assert_eq!(
        tally.posts, 2,
        "the first create and the rotation; never the reverted token"
    );
}

#[test]
fn simulation_scenario_replace_never_deletes_for_a_token_it_cannot_send() {
    // Found by the simulation: Replace deleted a foreign credential, then POSTed a spent token.
    scenario(
        AdoptionPolicy::Replace,
        vec![
            Transition::Wait(3),
            Transition::OldToken,
            Transition::ForeignAppears { same_client: false },
            Transition::Wait(600),
        ],
    );
}

#[test]
fn simulation_scenario_a_landed_create_replaced_by_someone_else_is_not_replaced_back() {
    // Found by the simulation: our POST landed unseen (crash after it), a foreign credential
    // replaced it within the in-doubt window; Replace must not spend the doubtful token on it.
    scenario(
        AdoptionPolicy::Replace,
        vec![
            Transition::BadToken,
            Transition::Wait(3),
            Transition::Faults(vec![Fault::Lag(1), Fault::Lag(1), Fault::CrashAfter]),
            Transition::OldToken,
            Transition::ForeignAppears { same_client: false },
            Transition::Wait(600),
        ],
    );
}

#[test]
fn simulation_scenario_a_lease_that_runs_out_before_the_post_stops_it_at_the_fence() {
    let tally = scenario(
        AdoptionPolicy::AdoptMatching,
        vec![
            // GET, then the lease runs out during the intent's write: the fence holds the POST.
            Transition::Faults(vec![Fault::Lag(1), Fault::LeaseRunsOut]),
            Transition::Wait(3),
        ],
    );
    assert_eq!(tally.posts, 0, "no POST was sent while not leading");
}

#[test]
fn simulation_scenario_a_post_that_lands_after_its_timeout_is_resumed_not_resent() {
    let tally = scenario(
        AdoptionPolicy::Never,
        vec![
            Transition::Faults(vec![Fault::Lag(1), Fault::Lag(1), Fault::TimeoutLate(40)]),
            Transition::Wait(30),
            Transition::Wait(600),
        ],
    );
    assert_eq!(
        tally.posts, 1,
        "the late POST is recognised, never sent again"
    );
}
