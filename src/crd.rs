//! The `TrimbleConnection` custom resource: spec, status and the schema the API server enforces.
//!
//! The CRD YAML under `crds/` is generated from these types by `crdgen`; never edit it by hand.
//! Every field's `///` doc becomes its `kubectl explain` text, so write them for the user.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The finalizer that keeps a TrimbleConnection until its Leaf credential is dealt with.
pub const FINALIZER: &str = "withleaf.io/trimble-credential";
/// Annotation whose new value forces an immediate reconcile (echoed in `status.lastHandledReconcileAt`).
pub const RECONCILE_REQUESTED_AT_ANNOTATION: &str = "withleaf.io/reconcile-requested-at";
/// Field manager used for every server-side apply this operator makes.
pub const FIELD_MANAGER: &str = "leaf-operator";

/// Default key names inside the credentials Secret.
pub const DEFAULT_CLIENT_ID_KEY: &str = "clientId";
pub const DEFAULT_CLIENT_SECRET_KEY: &str = "clientSecret";
pub const DEFAULT_REFRESH_TOKEN_KEY: &str = "refreshToken";
/// Default for `spec.refreshInterval`.
pub const DEFAULT_REFRESH_INTERVAL: &str = "10m";

/// Connects one Leaf user to a grower's Trimble Agriculture account.
///
/// The operator creates the Leaf Trimble credential from the referenced Secret, keeps checking it,
/// rotates it when the Secret changes and removes it when this resource is deleted.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "withleaf.io",
    version = "v1alpha1",
    kind = "TrimbleConnection",
    plural = "trimbleconnections",
    shortname = "tc",
    category = "leaf",
    doc = "Connects a Leaf user to a grower's Trimble Agriculture account: leaf-operator creates, checks, rotates and removes the matching Leaf Trimble credential.",
    namespaced,
    status = "TrimbleConnectionStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Leaf User","type":"string","jsonPath":".spec.leafUserId"}"#,
    printcolumn = r#"{"name":"Credential","type":"string","jsonPath":".status.credentialStatus"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    printcolumn = r#"{"name":"Credential ID","type":"string","priority":1,"jsonPath":".status.credentialId"}"#,
    printcolumn = r#"{"name":"Grower Link","type":"string","priority":1,"jsonPath":".status.magicLink.secretName"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.credentialsSecretRef) || (has(self.reauthorization) && (!has(self.reauthorization.policy) || self.reauthorization.policy == 'MagicLink'))").message("credentialsSecretRef is required unless reauthorization.policy is MagicLink (the grower then connects through a Leaf Magic Link)"))]
pub struct TrimbleConnectionSpec {
    /// ID of the Leaf user that owns the Trimble credential. Immutable: to move a connection to
    /// another Leaf user, delete this resource and create a new one.
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("leafUserId is immutable; delete this TrimbleConnection and create a new one to use another Leaf user"))]
    pub leaf_user_id: String,

    /// Secret in the same namespace holding the Trimble application's clientId and clientSecret and
    /// the grower's OAuth refresh token. It may be created after this resource. Optional only with
    /// `reauthorization.policy: MagicLink`: the grower then connects through a Leaf Magic Link and no
    /// refresh token is ever handled here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<CredentialsSecretRef>,

    /// Secret in the same namespace with the Leaf API account to use for this connection: key
    /// `token`, or keys `username` and `password`. Absent: the operator's default Leaf account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf_auth_secret_ref: Option<SecretRef>,

    /// What happens to the Leaf credential when this resource is deleted: `Delete` removes it,
    /// `Orphan` leaves it in Leaf. May be changed while the resource is terminating.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// What to do when the Leaf user already has a Trimble credential this resource did not create:
    /// `AdoptMatching` adopts it when its clientId equals the Secret's clientId (otherwise Conflict),
    /// `Replace` deletes it and creates ours, `Never` always reports Conflict.
    #[serde(default)]
    pub adoption_policy: AdoptionPolicy,

    /// How often Leaf's status and events for the credential are re-checked (with jitter), as a
    /// duration such as `10m` or `1h30m`. Minimum `1m`. Absent: every 10m, or, while Leaf's
    /// alerts are healthy, only as a backstop (24h by default); a value set here is never
    /// exceeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))]
    // The minimum only applies to a well-formed duration: `duration()` of a malformed string is an
    // evaluation error that the API server would report next to the pattern's own message.
    #[x_kube(validation = Rule::new(r"!self.matches('^([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+$') || duration(self) >= duration('1m')").message("refreshInterval must be at least 1m"))]
    pub refresh_interval: Option<String>,

    /// While true the operator makes no Leaf calls and changes nothing, until set back to false.
    #[serde(default)]
    pub suspend: bool,

    /// `Full` (default): the operator creates, rotates, adopts, replaces and deletes the credential.
    /// `Observe`: it only reads Leaf and reports what it would do (reason `ObserveOnly`, with an
    /// Event that says "would create", "would rotate", ...), never sending a create or a delete;
    /// deleting the resource then leaves the credential in Leaf. For pointing the operator at an
    /// existing Leaf account before letting it act.
    #[serde(default)]
    pub management_policy: ManagementPolicy,

    /// What happens when the grower must authorize Trimble again (Leaf reports the credential
    /// invalid or missing permission, or it vanished after its refresh token was spent), and how a
    /// resource without `credentialsSecretRef` connects. Absent: the operator's default
    /// (`--reauthorization-default`, `None` unless set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reauthorization: Option<Reauthorization>,
}

/// Re-authorization by the grower through a Leaf Magic Link.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Reauthorization {
    /// `MagicLink` (default): issue a Leaf Magic Link for the grower and write it into a Secret
    /// owned by this resource (reason `AwaitingGrower`); once the grower completes it, Leaf creates
    /// the credential and the resource is Ready again. `None`: report and wait for a person to put
    /// a new refresh token into the Secret.
    #[serde(default)]
    pub policy: ReauthorizationPolicy,
    /// How long each link stays valid, as a duration between `15m` and `8760h` (Leaf's bounds:
    /// 900 seconds to a year). Default `168h`. The operator renews a link before it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))]
    #[x_kube(validation = Rule::new(r"!self.matches('^([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+$') || (duration(self) >= duration('15m') && duration(self) <= duration('8760h'))").message("expiresIn must be between 15m and 8760h (Leaf's bounds: 900 seconds to a year)"))]
    pub expires_in: Option<String>,
    /// Name of the Secret the operator writes the link into (keys `link` and `expiresAt`), in this
    /// resource's namespace and owned by it. Default: `<metadata.name>-magic-link`. Give the link
    /// only to the grower: it is a bearer URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub link_secret_name: Option<String>,
    /// The Trimble application's name as registered with Leaf (`/app-keys/Trimble/{appName}`),
    /// checked before a link is issued. Absent: any Trimble application registered with Leaf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub app_name: Option<String>,
    /// The look of the Magic Link page (Leaf's `settings`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<LinkSettings>,
}

/// Whether the operator asks the grower to authorize again through a Magic Link.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ReauthorizationPolicy {
    /// Issue a Leaf Magic Link and wait for the grower.
    #[default]
    MagicLink,
    /// Report and wait for a person to put new values into the Secret.
    None,
}

/// The look of the Magic Link page, passed to Leaf as its `settings`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkSettings {
    /// Company name shown on the page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 200))]
    pub company_name: Option<String>,
    /// URL of the company logo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^https://"))]
    pub company_logo: Option<String>,
    /// URL of the header image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^https://"))]
    pub header_image: Option<String>,
    /// Background colour as `#RRGGBB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^#[0-9A-Fa-f]{6}$"))]
    pub background_color: Option<String>,
    /// Show the Leaf user's name on the page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_leaf_user_name: Option<bool>,
    /// Let the grower disconnect from Trimble at the end of the flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnect_enabled: Option<bool>,
}

/// Whether the operator may change the Leaf credential or only observe it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ManagementPolicy {
    /// Create, rotate, adopt, replace and delete as the other fields say.
    #[default]
    Full,
    /// Read Leaf and report what would be done; never write to Leaf.
    Observe,
}

/// Reference to the Secret with the Trimble application's and the grower's credentials.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// Name of the Secret, in the same namespace as this resource.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    /// Key holding the Trimble application's client ID.
    #[serde(default = "default_client_id_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub client_id_key: String,
    /// Key holding the Trimble application's client secret.
    #[serde(default = "default_client_secret_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub client_secret_key: String,
    /// Key holding the grower's Trimble OAuth refresh token.
    #[serde(default = "default_refresh_token_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub refresh_token_key: String,
}

/// Reference to a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret, in the same namespace as this resource.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}

/// What happens to the Leaf credential when the TrimbleConnection is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Remove the credential from Leaf.
    #[default]
    Delete,
    /// Leave the credential in Leaf.
    Orphan,
}

/// What to do with a Trimble credential that exists in Leaf but was not created by this resource.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AdoptionPolicy {
    /// Adopt it when its clientId equals the Secret's clientId; otherwise report Conflict.
    #[default]
    AdoptMatching,
    /// Delete it and create ours.
    Replace,
    /// Never adopt: report Conflict.
    Never,
}

/// What the operator last observed and did. Never contains secret values.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrimbleConnectionStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready` is always present; `Reconciling` and `Stalled` appear only while true.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,

    /// Leaf's id of the Trimble credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<String>,

    /// Leaf's status of the credential, verbatim (for example OK, UNAUTHENTICATED, invalid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_status: Option<String>,

    /// OAuth scopes Leaf reports for the credential.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,

    /// When Leaf created the credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf_created_time: Option<String>,

    /// Short hash of the Secret values last sent to Leaf; reveals nothing about them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_fingerprint: Option<String>,

    /// Short hash of the Secret values found when an existing credential was adopted. They were
    /// never sent by this operator: a change of the Secret away from them rotates the credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopted_secret_fingerprint: Option<String>,

    /// Short hashes of the refresh tokens sent to Leaf, newest first (at most 10). A Trimble
    /// refresh token works once: a Secret that goes back to one of them (a reverted commit) is
    /// never sent again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sent_refresh_tokens: Vec<String>,

    /// Set before the operator asks Leaf to create a credential and cleared once the outcome is
    /// known, so that a restart in between decides from Leaf's state and never creates twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_create: Option<PendingCreate>,

    /// Set before the operator asks Leaf to delete a credential and cleared once the outcome is
    /// known. Leaf's DELETE names the Leaf user, not the credential: one that lands late removes
    /// whatever the user has then, so nothing else is sent for the user while it may still land.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_delete: Option<PendingDelete>,

    /// The last create of this resource's credential that Leaf confirmed. For a while after it
    /// (the read-lag allowance) a read of Leaf that does not show that credential is not taken as
    /// the truth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_create: Option<LastCreate>,

    /// How the credential came to this resource: `Secret` (created from the Secret's refresh
    /// token), `Adopted` (found in Leaf and taken over), or `MagicLink` (the grower completed a
    /// Magic Link this resource issued; the Secret's refresh token is never sent over it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_source: Option<CredentialSource>,

    /// The Magic Link out for the grower, while there is one. The link itself (a bearer URL) is
    /// only in the Secret named here, never in the status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub magic_link: Option<MagicLinkStatus>,

    /// The last value of the `withleaf.io/reconcile-requested-at` annotation that was handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,

    /// Leaf's most recent events for the credential, newest first, at most 10, sanitised.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_events: Vec<CredentialEventSummary>,
}

/// A create that was started but whose outcome was not yet recorded.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingCreate {
    /// Fingerprint of the Secret values being sent.
    pub secret_fingerprint: String,
    /// When the create was started (RFC 3339).
    pub started_at: String,
    /// The latest moment the POST may leave the operator (RFC 3339): it is never sent later, so
    /// it cannot land after this plus the request timeout and the in-doubt margin. Absent in
    /// records of older versions (then `startedAt` plus the send budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_by: Option<String>,
    /// Short hash of the clientId being sent: after a restart, a credential with this clientId is
    /// the one this create made, even if the Secret has changed since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id_fingerprint: Option<String>,
    /// Short hash of the refresh token being sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token_fingerprint: Option<String>,
}

/// A DELETE that was started but whose outcome was not yet recorded.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingDelete {
    /// The credential the DELETE is for: the one a read of Leaf showed right before it.
    pub credential_id: String,
    /// When the delete was started (RFC 3339).
    pub started_at: String,
    /// The latest moment the DELETE may leave the operator (RFC 3339).
    pub send_by: String,
}

/// How the credential came to this resource.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CredentialSource {
    /// Created from the Secret's refresh token.
    Secret,
    /// Found in Leaf and adopted.
    Adopted,
    /// Created by Leaf when the grower completed a Magic Link this resource issued.
    MagicLink,
}

/// A Magic Link issued for the grower (or about to be).
///
/// Its optional fields are written as `null` when absent: the status is written with a JSON merge
/// patch, which would otherwise keep a nested field (a cleared `pending`) that the new status no
/// longer has.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MagicLinkStatus {
    /// The Secret (owned by this resource) holding the link and its expiry.
    pub secret_name: String,
    /// Short hash of the link's id (the id is the bearer part of the URL: never shown).
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// When Leaf created the link (Leaf's clock, RFC 3339): a credential that appears for the Leaf
    /// user after it, and that the link's use accounts for, came from the grower.
    #[serde(default)]
    pub created_at: Option<String>,
    /// When the link expires (RFC 3339); the operator renews it before.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Set before the operator asks Leaf for a link and cleared once the answer is known, so that
    /// a lost answer is found in Leaf's list rather than a second link issued.
    #[serde(default)]
    pub pending: Option<PendingLink>,
    /// The link is no longer wanted (the credential is valid again, a person changed the Secret,
    /// it is about to expire): it is deleted at Leaf before anything else is sent.
    #[serde(default)]
    pub retired: bool,
}

/// A Magic Link create that was started but whose answer was not yet recorded.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingLink {
    /// When the create was started (RFC 3339).
    pub started_at: String,
    /// The latest moment the POST may leave the operator (RFC 3339).
    pub send_by: String,
}

/// A create of this resource's credential that Leaf confirmed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastCreate {
    /// When the operator saw it confirmed, by its own clock (RFC 3339).
    pub confirmed_at: String,
    /// The credential it replaced (a rotation), which a lagging read may still show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_credential_id: Option<String>,
}

/// One of Leaf's credential events, reduced to what is safe to show.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialEventSummary {
    /// Leaf's id of the event.
    pub id: String,
    /// When the event happened, as Leaf reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// HTTP status code of the call Leaf made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i32>,
    /// Short, sanitised description; never headers, bodies or token material.
    pub summary: String,
}

fn default_client_id_key() -> String {
    DEFAULT_CLIENT_ID_KEY.to_string()
}
fn default_client_secret_key() -> String {
    DEFAULT_CLIENT_SECRET_KEY.to_string()
}
fn default_refresh_token_key() -> String {
    DEFAULT_REFRESH_TOKEN_KEY.to_string()
}

/// `conditions` is a list map keyed by `type`, so server-side apply merges conditions by type.
fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["type"]),
    );
    schema
}

impl TrimbleConnectionSpec {
    /// `refreshInterval` as a duration, the default (10m) when absent. The CRD schema guarantees
    /// the format; a value that still fails to parse (an old object from before validation)
    /// falls back to the default.
    pub fn refresh_interval(&self) -> std::time::Duration {
        self.explicit_refresh_interval()
            .unwrap_or_else(|| parse_go_duration(DEFAULT_REFRESH_INTERVAL).expect("default parses"))
    }

    /// `refreshInterval` as a duration, when it is set (and readable).
    pub fn explicit_refresh_interval(&self) -> Option<std::time::Duration> {
        self.refresh_interval.as_deref().and_then(parse_go_duration)
    }

    /// The pace of periodic checks under `polling`: the resource's own interval, or the alerts
    /// backstop (never longer than an interval set explicitly).
    pub fn check_interval(&self, backstop: Option<std::time::Duration>) -> std::time::Duration {
        match (backstop, self.explicit_refresh_interval()) {
            (None, _) => self.refresh_interval(),
            (Some(backstop), Some(explicit)) => explicit.min(backstop),
            (Some(backstop), None) => backstop,
        }
    }
}

/// Parses the Go/Kubernetes duration syntax the schema admits (`90s`, `1h30m`, `1.5h`).
pub fn parse_go_duration(text: &str) -> Option<std::time::Duration> {
    if text.is_empty() {
        return None;
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (number, tail) = rest.split_at(number_len);
        let number: f64 = number.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += number * seconds;
        rest = tail;
    }
    Some(std::time::Duration::from_secs_f64(total))
}

/// The CRD as the YAML committed under `crds/` (what `crdgen` prints).
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let yaml =
        serde_yaml::to_string(&TrimbleConnection::crd()).expect("the CRD serialises to YAML");
    format!("# Generated by `cargo run --bin crdgen`; do not edit.\n---\n{yaml}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_interval_is_the_backstop_unless_a_shorter_one_is_set() {
        let spec = |interval: Option<&str>| TrimbleConnectionSpec {
            refresh_interval: interval.map(str::to_string),
            ..serde_json::from_value(serde_json::json!({
                "leafUserId": "u", "credentialsSecretRef": {"name": "s"}
            }))
            .expect("spec")
        };
        let minutes = |m: u64| std::time::Duration::from_secs(60 * m);
        let day = Some(minutes(24 * 60));
        assert_eq!(
            spec(None).check_interval(None),
            minutes(10),
            "polling: the default"
        );
        assert_eq!(
            spec(None).check_interval(day),
            minutes(24 * 60),
            "alerts: the backstop"
        );
        assert_eq!(
            spec(Some("5m")).check_interval(day),
            minutes(5),
            "a shorter one wins"
        );
        assert_eq!(
            spec(Some("48h")).check_interval(day),
            minutes(24 * 60),
            "never beyond"
        );
        assert_eq!(spec(Some("2m")).check_interval(None), minutes(2));
    }

    #[test]
    fn parses_go_durations() {
        assert_eq!(
            parse_go_duration("10m"),
            Some(std::time::Duration::from_secs(600))
        );
        assert_eq!(
            parse_go_duration("1h30m"),
            Some(std::time::Duration::from_secs(5400))
        );
        assert_eq!(
            parse_go_duration("1.5h"),
            Some(std::time::Duration::from_secs(5400))
        );
        assert_eq!(
            parse_go_duration("90s"),
            Some(std::time::Duration::from_secs(90))
        );
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(parse_go_duration("5d"), None);
    }
}
