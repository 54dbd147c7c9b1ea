//! The `NsApiCredential` custom resource: types, schema, validation rules and printer columns.
//! No logic lives here beyond defaults; deciding and talking to APIs happen elsewhere.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube_core::CustomResourceExt;
use kube_derive::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Kubernetes object names for Secrets: RFC 1123 DNS subdomains.
const DNS_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// Keys of a Secret's `data` map.
const SECRET_KEY: &str = r"^[-._a-zA-Z0-9]+$";
/// A Secret's `type`: `Opaque`, or a name such as `example.com/token`.
const SECRET_TYPE: &str = r"^[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?$";
/// A Go-style duration such as `10m`, `90s` or `1h30m`.
const DURATION: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";
/// An absolute http(s) URL without user info, query string or fragment.
const BASE_URL: &str = r"^https?://[^/?#@\s]+(/[^?#\s]*)?$";

/// CEL: every key of a label or annotation map is a Kubernetes qualified name.
const LABEL_KEYS: &str = r"self.all(k, k.matches('^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))";
/// CEL: every value of a label map is a Kubernetes label value.
const LABEL_VALUES: &str =
    r"self.all(k, self[k].matches('^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$'))";

/// The annotation that asks for a new token (any new value, e.g. the time of the request).
pub const RENEW_ANNOTATION: &str = "nsapi.io/renew-requested-at";
/// The pod-template annotation a rollout restart sets.
pub const RESTARTED_AT_ANNOTATION: &str = "nsapi.io/restarted-at";

/// The label the operator puts on every Secret it writes.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "nsapi-token-operator";
/// The one field manager for everything the operator writes.
pub const FIELD_MANAGER: &str = "nsapi-token-operator";

/// Desired state of an NsApiCredential: where the NetSapiens API is, which Secrets hold the
/// credentials, and which Secret receives the token.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "nsapi.io",
    version = "v1alpha1",
    kind = "NsApiCredential",
    plural = "nsapicredentials",
    shortname = "nscred",
    namespaced,
    status = "NsApiCredentialStatus",
    doc = "An OAuth2 Bearer token for the NetSapiens API, kept valid in a Secret by nsapi-token-operator.",
    category = "nsapi",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Domain","type":"string","jsonPath":".status.domain"}"#,
    printcolumn = r#"{"name":"Scope","type":"string","jsonPath":".status.scope"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","jsonPath":".status.expiresAt"}"#,
    printcolumn = r#"{"name":"Next refresh","type":"string","jsonPath":".status.nextRefreshAt"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[x_kube(validation = Rule::new(
    "self.tokenSecret.name != self.clientSecretRef.name && self.tokenSecret.name != self.subscriberSecretRef.name"
).message("tokenSecret.name must differ from the input Secrets (clientSecretRef, subscriberSecretRef)"))]
#[x_kube(validation = Rule::new(
    "!has(self.mfa) || self.mfa.totpSecretRef.name != self.tokenSecret.name"
).message("tokenSecret.name must differ from mfa.totpSecretRef.name"))]
#[x_kube(validation = Rule::new(
    "!has(self.fallbackApiBaseUrls) || !(self.apiBaseUrl in self.fallbackApiBaseUrls)"
).message("fallbackApiBaseUrls must not repeat apiBaseUrl"))]
#[x_kube(validation = Rule::new(
    "!has(self.caBundle) || !has(self.caBundle.kind) || self.caBundle.kind != 'Secret' || self.caBundle.name != self.tokenSecret.name"
).message("caBundle must not name the output Secret"))]
#[serde(rename_all = "camelCase")]
pub struct NsApiCredentialSpec {
    /// Base URL of the NetSapiens API, e.g. `https://portal.example.com/ns-api/`. The `/ns-api/`
    /// suffix may be omitted. Must be https; plain http is refused unless the operator runs with
    /// `--allow-insecure-http`. The host must match the operator's `--allowed-api-host` list.
    #[schemars(length(max = 2048), regex(pattern = BASE_URL))]
    #[x_kube(validation = Rule::new("isURL(self)").message("apiBaseUrl must be an absolute URL such as https://portal.example.com/ns-api/"))]
    pub api_base_url: String,

    /// Other nodes of the same NetSapiens cluster (geo-redundant API nodes), in order. When a
    /// node fails transiently (no connection, a timeout, a 5xx, a web firewall's block), the
    /// request goes to the next one; a refused login is never tried on another node. After a
    /// failure, the primary (`apiBaseUrl`) is probed again a minute later, not on every request.
    /// The same rules as `apiBaseUrl` apply to each (https, the allow-list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4), inner(length(max = 2048), regex(pattern = BASE_URL)))]
    #[x_kube(validation = Rule::new("self.all(u, isURL(u))").message("each fallbackApiBaseUrls entry must be an absolute URL"))]
    pub fallback_api_base_urls: Vec<String>,

    /// PEM CA certificates to trust beside the system's (and the operator's `--ca-file`) for
    /// this credential's API nodes: for portals with a certificate from a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<CaBundleRef>,

    /// The Secret, in this namespace, holding the OAuth client id and client secret issued by the
    /// service provider.
    pub client_secret_ref: ClientSecretRef,

    /// The Secret, in this namespace, holding the subscriber (API user) username and password.
    /// Prefer a dedicated API user without MFA; for a user with MFA enforced, see `mfa`.
    pub subscriber_secret_ref: SubscriberSecretRef,

    /// For a subscriber with MFA enforced (the password grant answers `mfa_required`): the
    /// seed of the user's authenticator app, from which the operator computes each passcode
    /// (RFC 6238: SHA-1, 30 s, 6 digits) to complete the login unattended. Without it such a
    /// user ends in `MfaRequired`. The seed beside the password is a second factor only
    /// against someone who can read one of the two Secrets: keep it in its own Secret and
    /// scope read access to it (docs/security.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa: Option<MfaSpec>,

    /// The output Secret that receives the token and that pods mount.
    pub token_secret: TokenSecretTemplate,

    /// Rotate the token this long before it expires (Go duration, e.g. `10m`; at most 168h).
    /// Clamped to at most
    /// half the token lifetime and, when the lifetime allows, to at least 2m so the kubelet has
    /// time to update mounted Secrets.
    #[serde(default = "default_refresh_before")]
    #[schemars(length(max = 32), regex(pattern = DURATION))]
    #[x_kube(validation = Rule::new("!self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') || duration(self) <= duration('168h')").message("refreshBefore must be at most 168h"))]
    pub refresh_before: String,

    /// HTTP method of the refresh grant: `GET` with a query string (as the NetSapiens guide
    /// documents) or `POST` with a form body.
    #[serde(default)]
    pub refresh_method: RefreshMethodSpec,

    /// Which token endpoint to use: `v1` (`/oauth2/token/`), `v2` (`/v2/tokens`, servers 44+),
    /// `auto` (try v2, fall back to v1 when the server has no v2), or `jwt` (`/v2/jwt`: a JWT
    /// is the Bearer token; its lifetime is read from its `exp`, it is rotated with the refresh
    /// JWT where the server gives one, else by a new login, and checked with `GET /v2/jwt`).
    #[serde(default)]
    pub token_api: TokenApiSpec,

    /// How the OAuth client's id and secret are sent: `body` (as `client_id` and
    /// `client_secret` fields, as the NetSapiens guide documents) or `basic` (an HTTP Basic
    /// `Authorization` header, RFC 6749 2.3.1, and not in the fields), for a portal that wants
    /// it. Applies to every token request: password and refresh grants, v1 and v2.
    #[serde(default)]
    pub client_auth: ClientAuthSpec,

    /// Stop calling the NetSapiens API for this credential. The current token stays in place
    /// until it expires.
    #[serde(default)]
    pub suspend: bool,

    /// Check the current token with the API (`oauth2/read`) this often (Go duration, e.g. `5m`;
    /// off by default; from 1m to 168h). A token the server refuses (revoked on the portal) is
    /// replaced at once; a check that fails for another reason never replaces a token. Each
    /// check is one request. An invalid value turns checks off and is named in the
    /// `SettingsIgnored` condition; the token keeps rotating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION))]
    #[x_kube(validation = Rule::new("!self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') || (duration(self) >= duration('1m') && duration(self) <= duration('168h'))").message("verifyInterval must be between 1m and 168h"))]
    pub verify_interval: Option<String>,

    /// Workloads in this namespace to restart after each new token (by a pod-template
    /// annotation, as `kubectl rollout restart` does), for applications that read the token only
    /// when they start. At most once per token, and at most once a minute per workload. A
    /// workload must consent: its pod template references the output Secret (volume, env or
    /// envFrom), or its metadata carries `nsapi.io/allow-restart-by` naming this credential
    /// (or `*`); otherwise it is skipped and the RolloutRestart condition says why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub rollout_restart_targets: Vec<RolloutRestartTarget>,
}

/// How the operator completes an MFA user's login.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct MfaSpec {
    /// The Secret key, in this namespace, holding the base32 TOTP seed of the subscriber's
    /// authenticator (the text under the QR code when MFA was set up; case, spaces and `=`
    /// padding are ignored).
    pub totp_secret_ref: SecretKeyRef,
}

/// One key of a Secret in the NsApiCredential's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub name: String,
    /// The key.
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY))]
    pub key: String,
}

/// Where a credential's CA bundle is.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct CaBundleRef {
    /// `ConfigMap` (the default) or `Secret`, in the NsApiCredential's namespace. A Secret is
    /// watched, so a change applies at once; a ConfigMap is read at each attempt.
    #[serde(default)]
    pub kind: CaBundleKind,
    /// Its name.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub name: String,
    /// The key holding one or more PEM certificates.
    #[serde(default = "default_ca_bundle_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY))]
    pub key: String,
}

fn default_ca_bundle_key() -> String {
    "ca.crt".to_owned()
}

/// The kind of object a CA bundle is in.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum CaBundleKind {
    #[default]
    ConfigMap,
    Secret,
}

/// A workload to restart after each new token.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct RolloutRestartTarget {
    /// `Deployment`, `StatefulSet` or `DaemonSet`.
    pub kind: WorkloadKind,
    /// Its name, in the NsApiCredential's namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub name: String,
}

/// A kind of workload whose pods can be restarted.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl WorkloadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
        }
    }
}

fn default_refresh_before() -> String {
    // crate::core::schedule::DEFAULT_REFRESH_BEFORE, as the CRD shows it.
    "10m".to_owned()
}

/// Reference to the Secret with the OAuth client credentials.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct ClientSecretRef {
    /// Name of a Secret in the NsApiCredential's namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub name: String,
    /// Key holding the OAuth client id.
    #[serde(default = "default_client_id_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY))]
    pub client_id_key: String,
    /// Key holding the OAuth client secret.
    #[serde(default = "default_client_secret_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY))]
    pub client_secret_key: String,
}

fn default_client_id_key() -> String {
    "client_id".to_owned()
}
fn default_client_secret_key() -> String {
    "client_secret".to_owned()
}

/// Reference to the Secret with the subscriber's login.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct SubscriberSecretRef {
    /// Name of a Secret in the NsApiCredential's namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub name: String,
    /// Key holding the username, e.g. `111@abc-company`.
    #[serde(default = "default_username_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY))]
    pub username_key: String,
    /// Key holding the password.
    #[serde(default = "default_password_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY))]
    pub password_key: String,
}

fn default_username_key() -> String {
    "username".to_owned()
}
fn default_password_key() -> String {
    "password".to_owned()
}

/// The output Secret.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct TokenSecretTemplate {
    /// Name of the Secret to write, in the NsApiCredential's namespace. An existing Secret of this
    /// name that this NsApiCredential does not own is never overwritten.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub name: String,
    /// Extra labels for the Secret (at most 64; keys and values as Kubernetes labels allow).
    /// `app.kubernetes.io/managed-by` is reserved.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 63}))]
    #[x_kube(validation = Rule::new("!('app.kubernetes.io/managed-by' in self)").message("the label app.kubernetes.io/managed-by is set by the operator"))]
    #[x_kube(validation = Rule::new(LABEL_KEYS).message("label keys must be [prefix/]name: a DNS subdomain prefix, and a name of at most 63 letters, digits, '-', '_' or '.' that starts and ends with a letter or digit"))]
    #[x_kube(validation = Rule::new(LABEL_VALUES).message("label values must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"))]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations for the Secret (at most 64). Keys under `nsapi.io/` are reserved.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 8192}))]
    #[x_kube(validation = Rule::new("self.all(k, !k.startsWith('nsapi.io/'))").message("annotations under nsapi.io/ are set by the operator"))]
    #[x_kube(validation = Rule::new(LABEL_KEYS).message("annotation keys must be [prefix/]name: a DNS subdomain prefix, and a name of at most 63 letters, digits, '-', '_' or '.' that starts and ends with a letter or digit"))]
    pub annotations: BTreeMap<String, String>,
    /// The Secret's `type` (default `Opaque`). A type Kubernetes checks (such as
    /// `kubernetes.io/basic-auth`) needs the keys it requires, from `template`. Kubernetes does
    /// not let a Secret's type change: the operator then deletes the Secret and writes it again.
    #[serde(default = "default_secret_type", rename = "type")]
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_TYPE))]
    pub type_: String,
    /// More keys, rendered from templates over the token's variables (docs/templates.md): for
    /// an application that wants the token in its own shape (an env file, a JSON config, a
    /// key named `token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<SecretDataTemplate>,
    /// What happens to the Secret when this NsApiCredential is deleted: `Delete` (the default;
    /// it is garbage-collected with the credential) or `Retain` (it stays, with the token it
    /// holds, and a new NsApiCredential of the same name in this namespace takes it back).
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

fn default_secret_type() -> String {
    "Opaque".to_owned()
}

/// Keys rendered into the output Secret.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct SecretDataTemplate {
    /// Key → template (Jinja syntax: `{{ variable | filter }}`, `{% if %}`; at most 32 keys,
    /// each template at most 4096 characters, each rendered value at most 64 KiB). The key
    /// `access_token` is reserved: the operator reads its token back from it after a restart.
    #[serde(default)]
    #[schemars(extend("maxProperties" = 32, "additionalProperties" = {"type": "string", "maxLength": 4096}))]
    #[x_kube(validation = Rule::new("self.all(k, k.size() <= 253 && k.matches('^[-._a-zA-Z0-9]+$'))").message("template keys must be Secret keys: letters, digits, '-', '_' or '.', at most 253"))]
    #[x_kube(validation = Rule::new("!('access_token' in self)").message("the key access_token is reserved: the operator reads its token back from it"))]
    pub data: BTreeMap<String, String>,
    /// `Merge` (the default) adds the rendered keys to the standard ones (a rendered key
    /// replaces a standard key of the same name); `Replace` writes only the rendered keys and
    /// `access_token`.
    #[serde(default)]
    pub merge_policy: MergePolicy,
}

/// Whether rendered keys join the standard keys or replace them.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum MergePolicy {
    /// The standard keys, and the rendered keys over them.
    #[default]
    Merge,
    /// `access_token` and the rendered keys only.
    Replace,
}

/// What happens to the output Secret when its NsApiCredential is deleted.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum DeletionPolicy {
    /// Garbage-collected with the credential (the Secret has the credential as its controller).
    #[default]
    Delete,
    /// Kept: no owner reference; adopted again by a credential of the same name.
    Retain,
}

/// HTTP method of the refresh grant.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum RefreshMethodSpec {
    /// Query string, as documented by NetSapiens.
    #[default]
    #[serde(rename = "GET")]
    Get,
    /// Form body.
    #[serde(rename = "POST")]
    Post,
}

/// How the OAuth client authenticates to the token endpoint.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuthSpec {
    /// `client_id` and `client_secret` in the request's fields.
    #[default]
    Body,
    /// `Authorization: Basic base64(urlencode(client_id):urlencode(client_secret))`.
    Basic,
}

/// Which token endpoint the operator calls.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum TokenApiSpec {
    /// `POST {base}/oauth2/token/`.
    #[default]
    V1,
    /// `POST {base}/v2/tokens` (NetSapiens 44 and later).
    V2,
    /// v2 when the server has it, else v1.
    Auto,
    /// `POST {base}/v2/jwt`: a JWT as the Bearer token.
    Jwt,
}

/// What the operator last observed and did.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct NsApiCredentialStatus {
    /// `Ready` is True while the output Secret holds a valid token; `Degraded` is True while the
    /// operator fails to do its work (the token may still be valid). `RolloutRestart` and
    /// `ConsumersCannotRefresh` appear when they apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The Secret that holds the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_name: Option<String>,
    /// When the current token was requested (RFC 3339, UTC, whole seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<Time>,
    /// When the current token expires (RFC 3339, UTC, whole seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// When the operator will next call the NetSapiens API for this credential (RFC 3339, UTC,
    /// whole seconds): the planned rotation, or the next retry after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_refresh_at: Option<Time>,
    /// The API node that issued the current token (`apiBaseUrl`, or one of
    /// `fallbackApiBaseUrls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_by: Option<String>,
    /// The grant that produced the current token: `password` or `refresh_token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_grant: Option<String>,
    /// The token endpoint that answered: `v1` or `v2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_api: Option<String>,
    /// The token's scope, e.g. `Office Manager`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The subscriber's domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The subscriber's territory (reseller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub territory: Option<String>,
    /// The subscriber's user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The NetSapiens API version reported by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// Failed attempts since the last success.
    #[serde(default)]
    pub consecutive_failures: i32,
    /// A keyed digest of the inputs of the last attempt (API URL, token API, client and
    /// subscriber credentials). It reveals nothing about them; it lets the operator retry at once
    /// when an input changes after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs_fingerprint: Option<String>,
    /// The value of the `nsapi.io/renew-requested-at` annotation last acted on: a new value
    /// makes the operator obtain a new token once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_renew_request: Option<String>,
    /// When the API last vouched for the token in place (`spec.verifyInterval`): its last
    /// successful check, or its issue when it is newer; the next check is one interval later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified_at: Option<Time>,
    /// The last restart of each `spec.rolloutRestartTargets` workload.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restarts: Vec<WorkloadRestart>,
}

/// When the operator last restarted a workload.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRestart {
    pub kind: String,
    pub name: String,
    pub restarted_at: Time,
}

impl NsApiCredentialStatus {
    /// The condition of the given type, if present.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// The CRD, with doc comments turned into `kubectl explain` paragraphs (source line breaks
/// joined, blank lines kept).
pub fn crd() -> CustomResourceDefinition {
    fn unwrap_descriptions(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    match v {
                        serde_json::Value::String(text) if key == "description" => {
                            *text = text
                                .split("\n\n")
                                .map(|p| p.split('\n').map(str::trim).collect::<Vec<_>>().join(" "))
                                .collect::<Vec<_>>()
                                .join("\n\n");
                        }
                        _ => unwrap_descriptions(v),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(NsApiCredential::crd()).expect("the CRD serialises");
    unwrap_descriptions(&mut value);
    serde_json::from_value(value).expect("the CRD deserialises")
}

/// The CRD as YAML, exactly as `nsapi-token-operator crd` prints it and `deploy/crds/` holds it.
pub fn crd_yaml() -> String {
    serde_yaml::to_string(&crd()).expect("the CRD always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_fill_optional_fields() {
        let spec: NsApiCredentialSpec = serde_json::from_value(json!({
            "apiBaseUrl": "https://portal.example.com/ns-api/",
            "clientSecretRef": {"name": "client"},
            "subscriberSecretRef": {"name": "subscriber"},
            "tokenSecret": {"name": "token"},
        }))
        .unwrap();
        assert_eq!(spec.refresh_before, "10m");
        assert_eq!(spec.refresh_method, RefreshMethodSpec::Get);
        assert_eq!(spec.token_api, TokenApiSpec::V1);
        assert_eq!(spec.client_secret_ref.client_id_key, "client_id");
        assert_eq!(spec.client_secret_ref.client_secret_key, "client_secret");
        assert_eq!(spec.subscriber_secret_ref.username_key, "username");
        assert_eq!(spec.subscriber_secret_ref.password_key, "password");
        assert!(!spec.suspend);
    }

    #[test]
    fn crd_names_and_columns() {
        let crd = NsApiCredential::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("nsapicredentials.nsapi.io")
        );
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.short_names, Some(vec!["nscred".to_owned()]));
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        let columns: Vec<_> = version
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            [
                "Ready",
                "Reason",
                "Domain",
                "Scope",
                "Expires",
                "Next refresh",
                "Age",
                "Message"
            ]
        );
        assert_eq!(crd.spec.names.categories, Some(vec!["nsapi".to_owned()]));
    }

    #[test]
    fn schema_carries_validation_and_docs() {
        let yaml = crd_yaml();
        for needle in [
            "x-kubernetes-validations",
            "isURL(self)",
            "tokenSecret.name must differ",
            "pattern:",
            "Rotate the token this long before it expires",
            "- GET",
            "- auto",
        ] {
            assert!(yaml.contains(needle), "CRD YAML lacks {needle:?}");
        }
    }

    /// The checked-in CRD must be exactly what the types generate (regenerate with
    /// `cargo run -- crd > deploy/crds/nsapi.io_nsapicredentials.yaml`).
    #[test]
    fn checked_in_crd_matches_the_types() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/crds/nsapi.io_nsapicredentials.yaml"
        );
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == crd_yaml(),
            "{path} drifted from src/core/crd.rs: run `cargo run -- crd > deploy/crds/nsapi.io_nsapicredentials.yaml`"
        );
    }
}
