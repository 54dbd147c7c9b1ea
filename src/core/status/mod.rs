//! Pure: the status, Events, metric values and requeue that follow from one reconcile pass.
//! Fed the old status, the time, the token in place and what the pass found or did (an
//! [`Outcome`]); returns a [`Report`]. Never talks to anything and never reads a clock, so every
//! situation is a table row in the tests below.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::core::api_error::{ErrorKind, NsApiError};
use crate::core::clock::{later, rfc3339, whole_seconds};
use crate::core::conditions::{
    CONSUMERS_CANNOT_REFRESH, DEGRADED, Problem, READY, ROLLOUT_RESTART, Reason, SETTINGS_IGNORED,
    Stamp, is_true,
};
use crate::core::crd::{NsApiCredential, NsApiCredentialStatus, RENEW_ANNOTATION};
use crate::core::restarts::{
    self, ALLOW_RESTART_ANNOTATION, FailureKind, MAX_NAMED_PODS, RECHECK, RETRY_MAX, RETRY_MIN,
    RestartReport,
};
use crate::core::schedule::{self, FailureClass, FailureGate, TokenTimes};
use crate::core::token::{Grant, TokenGrant, TokenInfo};

/// What a pass starts from.
#[derive(Clone, Copy, Debug)]
pub struct Pass<'a> {
    /// The status as read at the start of the pass.
    pub old: &'a NsApiCredentialStatus,
    /// The credential's `metadata.generation`.
    pub generation: Option<i64>,
    pub now: Timestamp,
    /// The token in place: in the output Secret (or the one written under an earlier name).
    pub token: Option<TokenTimes>,
    /// What else the pass found or did.
    pub extras: Extras<'a>,
}

/// What a pass found or did beside its outcome.
#[derive(Clone, Copy, Debug, Default)]
pub struct Extras<'a> {
    /// The renewal request (the annotation's value) acted on in this pass.
    pub renew_honoured: Option<&'a str>,
    /// When the token in place was checked with the API in this pass.
    pub verified_at: Option<Timestamp>,
    /// The check found the token refused by the API (a new one was then asked for).
    pub revoked: bool,
    /// When the token in place is to be checked next: the pass is repeated then, if that is
    /// before anything else is due.
    pub next_check: Option<Timestamp>,
    /// What happened to the rollout-restart targets.
    pub restarts: Option<&'a RestartReport>,
    /// The pods that read the token through env vars or `subPath` mounts, when looked for.
    pub stale_consumers: Option<&'a [String]>,
    /// The optional settings ignored because they are invalid (each says what to fix), once
    /// the spec was checked in this pass.
    pub ignored_settings: Option<&'a [String]>,
}

/// What the pass found or did.
#[derive(Clone, Copy, Debug)]
pub enum Outcome<'a> {
    /// Something the user must fix; nothing was sent.
    Blocked(&'a Problem),
    /// `spec.suspend` is true; nothing was sent.
    Suspended,
    /// No token was due, or a failure is still backing off. `token_secret` names the Secret
    /// the token in place was confirmed in (when there is one).
    Waiting {
        until: Timestamp,
        token_secret: Option<&'a str>,
    },
    /// A new token was obtained and written.
    Obtained(Obtained<'a>),
    /// The NetSapiens API gave no token.
    Failed {
        error: &'a NsApiError,
        /// The inputs of this attempt (see `inputs::fingerprint`).
        fingerprint: &'a str,
        /// Picks this credential's backoff jitter.
        seed: u64,
    },
}

/// A token obtained and written in this pass.
#[derive(Clone, Copy, Debug)]
pub struct Obtained<'a> {
    pub grant: &'a TokenGrant,
    /// What `oauth2/read` said about the new token, if it was asked.
    pub info: Option<&'a TokenInfo>,
    /// The refusal of the refresh grant, when the password grant stood in.
    pub fallback_from: Option<&'a NsApiError>,
    /// The times as stored in the Secret (whole seconds).
    pub times: TokenTimes,
    pub next_refresh_at: Timestamp,
    pub fingerprint: &'a str,
    /// The API node that issued it.
    pub served_by: &'a str,
    pub token_secret: &'a str,
}

/// Whether an Event reports routine work or something to look at (Kubernetes' two Event types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// An Event to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub type_: EventType,
    pub reason: Reason,
    pub message: String,
}

impl Note {
    /// A new token obtained as planned (`TokenIssued`, `TokenRefreshed`): the Events
    /// `--routine-events=false` leaves out. A fallback, a failure or anything to look at is
    /// never routine.
    pub fn is_routine(&self) -> bool {
        self.type_ == EventType::Normal
            && matches!(self.reason, Reason::TokenIssued | Reason::TokenRefreshed)
    }
}

/// What follows from a pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Written only if it differs from the old status.
    pub status: NsApiCredentialStatus,
    /// In the order they are recorded.
    pub events: Vec<Note>,
    /// For the metrics: when the token in place expires, and the next planned request.
    pub expires_at: Option<Timestamp>,
    pub next_request_at: Option<Timestamp>,
    /// When to look again (at least a second away); `None`: only when something changes.
    pub requeue_after: Option<Duration>,
}

/// The status, Events, metric values and requeue after a pass.
pub fn next(pass: Pass<'_>, outcome: Outcome<'_>) -> Report {
    let mut status = pass.old.clone();
    status.observed_generation = pass.generation;
    if let Some(t) = pass.token {
        status.issued_at = Some(whole_seconds(t.issued_at));
        status.expires_at = Some(whole_seconds(t.expires_at));
    }
    let step = Step {
        pass,
        stamp: Stamp {
            generation: pass.generation,
            now: pass.now,
        },
        status,
        events: Vec::new(),
    };
    match outcome {
        Outcome::Blocked(problem) => step.blocked(problem),
        Outcome::Suspended => step.suspended(),
        Outcome::Waiting {
            until,
            token_secret,
        } => step.waiting(until, token_secret),
        Outcome::Obtained(obtained) => step.obtained(&obtained),
        Outcome::Failed {
            error,
            fingerprint,
            seed,
        } => step.failed(error, fingerprint, seed),
    }
}

/// A status being built from the old one.
struct Step<'a> {
    pass: Pass<'a>,
    stamp: Stamp,
    status: NsApiCredentialStatus,
    events: Vec<Note>,
}

impl Step<'_> {
    fn blocked(mut self, problem: &Problem) -> Report {
        let (why, message) = (problem.reason.as_str(), problem.message.as_str());
        let changed = self
            .pass
            .old
            .condition(DEGRADED)
            .is_none_or(|c| c.reason != why || c.message != message);
        self.status.next_refresh_at = None;
        self.set(DEGRADED, true, why, message);
        self.set_ready_for_token(why, message);
        if changed {
            self.note(EventType::Warning, problem.reason, message.to_owned());
        }
        self.until_expiry(None)
    }

    fn suspended(mut self) -> Report {
        let valid = self.pass.token.filter(|t| t.is_valid_at(self.pass.now));
        let message = match valid {
            Some(t) => format!(
                "spec.suspend is true: no token requests are made; the current token expires at {}",
                rfc3339(t.expires_at)
            ),
            None => "spec.suspend is true: no token requests are made".to_owned(),
        };
        self.status.next_refresh_at = None;
        let suspended = Reason::Suspended.as_str();
        let already = self
            .pass
            .old
            .condition(READY)
            .is_some_and(|c| c.reason == suspended);
        self.set(READY, valid.is_some(), suspended, &message);
        self.set(DEGRADED, false, suspended, "");
        if !already {
            self.note(EventType::Normal, Reason::Suspended, message);
        }
        self.until_expiry(None)
    }

    fn waiting(mut self, until: Timestamp, token_secret: Option<&str>) -> Report {
        if let Some(name) = token_secret {
            self.status.token_secret_name = Some(name.to_owned());
        }
        self.status.next_refresh_at = Some(whole_seconds(until));
        // While a failure backs off, Degraded still describes it (it was set when it
        // happened); an expired or missing token reports that failure as the reason.
        let failing = (self.pass.old.consecutive_failures > 0)
            .then(|| self.pass.old.condition(DEGRADED))
            .flatten()
            .filter(|c| c.status == "True")
            .map(|c| (c.reason.clone(), c.message.clone()));
        let (why, message) = match failing {
            Some(failure) => failure,
            None => {
                self.set(DEGRADED, false, Reason::AsExpected.as_str(), "");
                (
                    Reason::TokenExpired.as_str().to_owned(),
                    "no valid token".to_owned(),
                )
            }
        };
        self.set_ready_for_token(&why, &message);
        self.until(until, Some(until))
    }

    fn obtained(mut self, o: &Obtained<'_>) -> Report {
        let grant = o.grant;
        let same_inputs = self.pass.old.inputs_fingerprint.as_deref() == Some(o.fingerprint);
        let old = self.pass.old;
        // The grant's own fields first, then what the token inspection said; territory, uid
        // and server version survive a refresh (which does not inspect) with the same inputs.
        let either = |from_grant: &Option<String>, from_info: fn(&TokenInfo) -> &Option<String>| {
            from_grant
                .clone()
                .or_else(|| o.info.and_then(|i| from_info(i).clone()))
        };
        let keep = |new: Option<String>, old: &Option<String>| {
            new.or_else(|| same_inputs.then(|| old.clone()).flatten())
        };
        let s = &mut self.status;
        s.token_secret_name = Some(o.token_secret.to_owned());
        s.issued_at = Some(whole_seconds(o.times.issued_at));
        s.expires_at = Some(whole_seconds(o.times.expires_at));
        s.next_refresh_at = Some(whole_seconds(o.next_refresh_at));
        s.served_by = Some(o.served_by.to_owned());
        s.last_grant = Some(grant.grant.as_str().to_owned());
        s.token_api = Some(grant.api.as_str().to_owned());
        s.scope = either(&grant.scope, |i| &i.scope);
        s.domain = either(&grant.domain, |i| &i.domain);
        s.territory = keep(either(&grant.territory, |i| &i.territory), &old.territory);
        s.uid = keep(either(&grant.uid, |i| &i.uid), &old.uid);
        s.server_version = keep(
            either(&grant.api_version, |i| &i.api_version),
            &old.server_version,
        );
        s.consecutive_failures = 0;
        s.inputs_fingerprint = Some(o.fingerprint.to_owned());

        let (why, verb) = match grant.grant {
            Grant::Password | Grant::Mfa => (Reason::TokenIssued, "issued"),
            Grant::RefreshToken => (Reason::TokenRefreshed, "refreshed"),
        };
        let message = format!(
            "token {verb} by the {} grant; valid until {}",
            grant.grant.as_str(),
            rfc3339(o.times.expires_at)
        );
        self.set(READY, true, why.as_str(), &message);
        self.set(DEGRADED, false, Reason::AsExpected.as_str(), "");
        if let Some(refusal) = o.fallback_from {
            self.note(
                EventType::Normal,
                Reason::RefreshFallback,
                format!(
                    "the refresh grant was refused ({refusal}); a new token was issued by the password grant"
                ),
            );
        }
        self.note(EventType::Normal, why, message);
        self.pass.token = Some(o.times);
        self.until(o.next_refresh_at, Some(o.next_refresh_at))
    }

    fn failed(mut self, error: &NsApiError, fingerprint: &str, seed: u64) -> Report {
        let (why, class, advice) = failure_reason(error.kind());
        let failures = self.pass.old.consecutive_failures.saturating_add(1);
        let retry_after = error
            .retry_after()
            .and_then(|d| SignedDuration::try_from(d).ok());
        let attempt = failures.unsigned_abs();
        let delay = schedule::retry_delay(class, attempt, retry_after, seed ^ u64::from(attempt));
        let retry_at = later(self.pass.now, delay);
        let message = format!("{error}{advice}; next attempt at {}", rfc3339(retry_at));
        let s = &mut self.status;
        s.consecutive_failures = failures;
        s.inputs_fingerprint = Some(fingerprint.to_owned());
        s.next_refresh_at = Some(whole_seconds(retry_at));
        self.set(DEGRADED, true, why.as_str(), &message);
        self.set_ready_for_token(why.as_str(), &message);
        self.note(EventType::Warning, why, message);
        self.until(retry_at, Some(retry_at))
    }

    fn set(&mut self, type_: &str, status: bool, reason: &str, message: &str) {
        self.stamp
            .set(&mut self.status.conditions, type_, status, reason, message);
    }

    /// Ready while the token in place is valid; otherwise False with the reason that applies.
    fn set_ready_for_token(&mut self, why: &str, message: &str) {
        match self.pass.token {
            Some(t) if t.is_valid_at(self.pass.now) => {
                if !is_true(&self.status.conditions, READY) {
                    let m = format!("token valid until {}", rfc3339(t.expires_at));
                    self.set(READY, true, Reason::TokenValid.as_str(), &m);
                }
            }
            Some(t) => {
                let m = format!("token expired at {}: {message}", rfc3339(t.expires_at));
                self.set(READY, false, Reason::TokenExpired.as_str(), &m);
            }
            None => self.set(READY, false, why, message),
        }
    }

    fn note(&mut self, type_: EventType, reason: Reason, message: String) {
        self.events.push(Note {
            type_,
            reason,
            message,
        });
    }

    /// Look again at `at`, or when the token expires if that is sooner.
    fn until(self, at: Timestamp, next_request_at: Option<Timestamp>) -> Report {
        let now = self.pass.now;
        let expiry = self
            .status
            .expires_at
            .as_ref()
            .map(|t| t.0)
            .filter(|e| *e > now);
        let at = expiry.map_or(at, |e| e.min(at));
        self.report(Some(at), next_request_at)
    }

    /// Nothing to do until something changes, except to report the token expiring.
    fn until_expiry(self, next_request_at: Option<Timestamp>) -> Report {
        let now = self.pass.now;
        let expiry = self.pass.token.map(|t| t.expires_at).filter(|e| *e > now);
        self.report(expiry, next_request_at)
    }

    fn report(
        mut self,
        requeue_at: Option<Timestamp>,
        next_request_at: Option<Timestamp>,
    ) -> Report {
        let pending = self.apply_extras();
        let requeue_at = [requeue_at, pending, self.pass.extras.next_check]
            .into_iter()
            .flatten()
            .min();
        let now = self.pass.now;
        Report {
            status: self.status,
            events: self.events,
            expires_at: self.pass.token.map(|t| t.expires_at),
            next_request_at,
            requeue_after: requeue_at.map(|at| {
                Duration::try_from(at.duration_since(now))
                    .unwrap_or_default()
                    .max(Duration::from_secs(1))
            }),
        }
    }
}

impl Step<'_> {
    /// Records what the pass found beside its outcome; returns when a pending restart is due.
    fn apply_extras(&mut self) -> Option<Timestamp> {
        let extras = self.pass.extras;
        if let Some(request) = extras.renew_honoured {
            self.status.last_renew_request = Some(request.to_owned());
            self.note(
                EventType::Normal,
                Reason::RenewRequested,
                format!("a new token was asked for (nsapi.io/renew-requested-at: {request})"),
            );
        }
        if let Some(at) = extras.verified_at {
            self.status.last_verified_at = Some(whole_seconds(at));
        }
        if extras.revoked {
            self.note(
                EventType::Warning,
                Reason::TokenRevoked,
                "the API refused the token in place before it expired (revoked on the portal?); a new one was asked for".to_owned(),
            );
        }
        if let Some(consumers) = extras.stale_consumers {
            self.consumers(consumers);
        }
        if let Some(ignored) = extras.ignored_settings {
            self.ignored_settings(ignored);
        }
        extras.restarts.and_then(|r| self.restarts(r))
    }

    /// The `RolloutRestart` condition (its reason is the first of: a missing target, a target
    /// that does not consent, a failure, a wait; its message says all of them), its Events, and
    /// when the targets need another pass (`restarts::next_attempt`).
    fn restarts(&mut self, report: &RestartReport) -> Option<Timestamp> {
        self.status.restarts = report.records.clone();
        if report.targets == 0 {
            self.status
                .conditions
                .retain(|c| c.type_ != ROLLOUT_RESTART);
            return None;
        }
        let list = |items: Vec<String>| items.join(", ");
        let named = |items: &[(String, String)]| {
            list(items.iter().map(|(k, n)| format!("{k} {n:?}")).collect())
        };
        let mut problems: Vec<(Reason, String)> = Vec::new();
        if !report.missing.is_empty() {
            problems.push((
                Reason::RestartTargetMissing,
                format!(
                    "{} does not exist in this namespace: fix spec.rolloutRestartTargets",
                    named(&report.missing)
                ),
            ));
        }
        if !report.not_consented.is_empty() {
            problems.push((
                Reason::RestartNotConsented,
                format!(
                    "{} was not restarted: it does not consent to restarts by this credential; either reference the Secret {:?} in its pod template (a volume, env or envFrom), or annotate the workload itself (not its pod template) with {ALLOW_RESTART_ANNOTATION}: {:?} (or \"*\"); or remove it from spec.rolloutRestartTargets",
                    named(&report.not_consented),
                    report.token_secret,
                    report.credential,
                ),
            ));
        }
        let failed = |kind: FailureKind| {
            let names: Vec<String> = report
                .failed
                .iter()
                .filter(|f| f.failure == kind)
                .map(|f| format!("{} {:?}: {}", f.kind, f.name, f.why))
                .collect();
            (!names.is_empty()).then(|| list(names))
        };
        if let Some(names) = failed(FailureKind::Permanent) {
            problems.push((
                Reason::RestartFailed,
                format!(
                    "could not restart {names} (the chart grants it with rolloutRestart.enabled); tried again every {} min or when the credential changes",
                    RECHECK.as_secs() / 60
                ),
            ));
        }
        if let Some(names) = failed(FailureKind::Transient) {
            problems.push((
                Reason::RestartFailed,
                format!(
                    "could not restart {names}; tried again within {} s, then less and less often (at most every {} s) until it works or the next token",
                    RETRY_MIN.as_secs(),
                    RETRY_MAX.as_secs()
                ),
            ));
        }
        if !report.pending.is_empty() {
            let names = report
                .pending
                .iter()
                .map(|(k, n, at)| format!("{k} {n:?} at {}", rfc3339(*at)));
            problems.push((
                Reason::RestartPending,
                format!(
                    "restarted less than a minute ago; next restart of {}",
                    list(names.collect())
                ),
            ));
        }
        let (status, reason, message) = match problems.first() {
            Some((reason, _)) => {
                let messages: Vec<&str> = problems.iter().map(|(_, m)| m.as_str()).collect();
                (false, *reason, messages.join("; "))
            }
            None => (
                true,
                Reason::RolloutRestarted,
                "every target was restarted for the current token".to_owned(),
            ),
        };
        let changed = self
            .pass
            .old
            .condition(ROLLOUT_RESTART)
            .is_none_or(|c| c.reason != reason.as_str() || c.message != message);
        self.set(ROLLOUT_RESTART, status, reason.as_str(), &message);
        if !report.restarted.is_empty() {
            self.note(
                EventType::Normal,
                Reason::RolloutRestarted,
                format!("restarted {} for the new token", named(&report.restarted)),
            );
        }
        if changed && !status && reason != Reason::RestartPending {
            self.note(EventType::Warning, reason, message);
        }
        restarts::next_attempt(report, self.pass.token.map(|t| t.issued_at), self.pass.now)
    }

    /// `SettingsIgnored` while an optional setting is invalid (a Warning Event when that
    /// changes); the condition goes once everything is valid again.
    fn ignored_settings(&mut self, ignored: &[String]) {
        if ignored.is_empty() {
            self.status
                .conditions
                .retain(|c| c.type_ != SETTINGS_IGNORED);
            return;
        }
        let message = format!("ignored until fixed: {}", ignored.join("; "));
        let changed = self
            .pass
            .old
            .condition(SETTINGS_IGNORED)
            .is_none_or(|c| c.status != "True" || c.message != message);
        let reason = Reason::InvalidSetting;
        self.set(SETTINGS_IGNORED, true, reason.as_str(), &message);
        if changed {
            self.note(EventType::Warning, reason, message);
        }
    }

    fn consumers(&mut self, pods: &[String]) {
        if pods.is_empty() {
            self.set(
                CONSUMERS_CANNOT_REFRESH,
                false,
                Reason::ConsumersRefresh.as_str(),
                "",
            );
            return;
        }
        let mut named: Vec<String> = pods.iter().take(MAX_NAMED_PODS).cloned().collect();
        if pods.len() > MAX_NAMED_PODS {
            named.push(format!("and {} more", pods.len() - MAX_NAMED_PODS));
        }
        let message = format!(
            "{} pod(s) read the token through env vars or subPath mounts and keep the old one until they restart: {}; mount the Secret as a volume, or add their workload to spec.rolloutRestartTargets",
            pods.len(),
            named.join(", ")
        );
        let changed = self
            .pass
            .old
            .condition(CONSUMERS_CANNOT_REFRESH)
            .is_none_or(|c| c.status != "True" || c.message != message);
        let reason = Reason::ConsumersCannotRefresh;
        self.set(CONSUMERS_CANNOT_REFRESH, true, reason.as_str(), &message);
        if changed {
            self.note(EventType::Warning, reason, message);
        }
    }
}

/// The reason, retry class and advice for a failed token request.
fn failure_reason(kind: ErrorKind) -> (Reason, FailureClass, &'static str) {
    match kind {
        ErrorKind::Transient => (Reason::ApiUnavailable, FailureClass::Transient, ""),
        ErrorKind::Authentication | ErrorKind::RefreshRejected => (
            Reason::AuthenticationFailed,
            FailureClass::Refused,
            "; check the client and subscriber Secrets (a change to either retries at once)",
        ),
        // The client's messages for these already say what to change.
        ErrorKind::MfaRequired => (Reason::MfaRequired, FailureClass::Refused, ""),
        ErrorKind::Permanent => (Reason::ApiRequestRejected, FailureClass::Refused, ""),
        // The handshake fails before any credential is sent: retrying costs the account
        // nothing, and a fixed CA bundle is picked up soon.
        ErrorKind::TlsUntrusted => (Reason::TlsUntrusted, FailureClass::Transient, ""),
    }
}

/// A new value of the renewal annotation (`nsapi.io/renew-requested-at`), not yet acted on.
pub fn renew_request(credential: &NsApiCredential) -> Option<String> {
    let value = credential
        .metadata
        .annotations
        .as_ref()?
        .get(RENEW_ANNOTATION)?;
    let done = credential
        .status
        .as_ref()
        .and_then(|s| s.last_renew_request.as_deref());
    (done != Some(value.as_str()) && !value.is_empty()).then(|| value.clone())
}

/// The last failure's retry time, from the status as read; `fingerprint` is of the inputs now.
pub fn failure_gate(
    status: Option<&NsApiCredentialStatus>,
    fingerprint: &str,
) -> Option<FailureGate> {
    let status = status?;
    if status.consecutive_failures == 0 {
        return None;
    }
    Some(FailureGate {
        retry_at: status.next_refresh_at.as_ref()?.0,
        inputs_match: status.inputs_fingerprint.as_deref() == Some(fingerprint),
    })
}

#[cfg(test)]
mod table;
