//! The status step's cases: a table of (old status, what the pass found) → (new status,
//! Events, requeue), and the rules that do not fit a row.

use super::*;
use crate::core::credentials::Confidential;
use crate::core::token::TokenApi;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const T0: &str = "2026-01-01T10:00:00Z";
const FP: &str = "v1:fingerprint";

fn hour_token() -> TokenTimes {
    TokenTimes {
        issued_at: ts(T0),
        expires_at: ts("2026-01-01T11:00:00Z"),
    }
}

fn condition(type_: &str, status: bool, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: Some(1),
        last_transition_time: Time(ts(T0)),
    }
}

/// A credential that got an hour token at T0 and has been fine since.
fn healthy() -> NsApiCredentialStatus {
    NsApiCredentialStatus {
        conditions: vec![
            condition(
                READY,
                true,
                "TokenIssued",
                "token issued by the password grant; valid until 2026-01-01T11:00:00Z",
            ),
            condition(DEGRADED, false, "AsExpected", ""),
        ],
        observed_generation: Some(1),
        token_secret_name: Some("abc-token".into()),
        issued_at: Some(Time(ts(T0))),
        expires_at: Some(Time(ts("2026-01-01T11:00:00Z"))),
        next_refresh_at: Some(Time(ts("2026-01-01T10:49:30Z"))),
        last_grant: Some("password".into()),
        token_api: Some("v1".into()),
        scope: Some("Office Manager".into()),
        domain: Some("abc-company".into()),
        territory: Some("t1".into()),
        uid: Some("111@abc-company".into()),
        server_version: Some("Version: 44.1.0".into()),
        consecutive_failures: 0,
        inputs_fingerprint: Some(FP.into()),
        ..NsApiCredentialStatus::default()
    }
}

/// The same, after `n` failed attempts whose last one said `why`.
fn failing(n: i32, why: &str, message: &str) -> NsApiCredentialStatus {
    let mut s = healthy();
    s.consecutive_failures = n;
    s.conditions[1] = condition(DEGRADED, true, why, message);
    s
}

fn grant(kind: Grant) -> TokenGrant {
    TokenGrant {
        access_token: Confidential::from("at-0123456789abcdef0123456789abcdef"),
        refresh_token: Some(Confidential::from("rt-0123456789abcdef0123456789abcdef")),
        token_type: "Bearer".into(),
        scope: Some("Office Manager".into()),
        domain: Some("abc-company".into()),
        territory: None,
        uid: None,
        api_version: None,
        legacy: None,
        grant: kind,
        api: TokenApi::V1,
        session_cookie: None,
        requested_at: ts("2026-01-01T10:50:00Z"),
        expires_in: 3600,
        expires_at: ts("2026-01-01T11:50:00Z"),
    }
}

fn transient() -> NsApiError {
    NsApiError::Transient {
        message: "the NetSapiens API failed the v1 password grant (HTTP 503)".into(),
        status: Some(503),
        retry_after: None,
        label: "server_error",
    }
}

fn refused() -> NsApiError {
    NsApiError::Authentication {
        message: "the NetSapiens API refused the credentials".into(),
        status: Some(401),
        label: "authentication",
    }
}

fn rate_limited(after: u64) -> NsApiError {
    NsApiError::Transient {
        message: "rate-limited".into(),
        status: Some(429),
        retry_after: Some(secs(after)),
        label: "rate_limited",
    }
}

fn refresh_refused() -> NsApiError {
    NsApiError::RefreshRejected {
        message: "the refresh token was refused".into(),
        status: Some(400),
    }
}

fn mfa() -> NsApiError {
    NsApiError::MfaRequired {
        message: "the subscriber has multi-factor authentication enabled".into(),
    }
}

fn rejected() -> NsApiError {
    NsApiError::Permanent {
        message: "the token endpoint was not found".into(),
        status: Some(404),
        label: "not_found",
    }
}

/// What a table row expects; `None` fields are not checked.
#[derive(Default)]
struct Expect {
    ready: Option<(bool, &'static str)>,
    degraded: Option<(bool, &'static str)>,
    events: Option<Vec<Reason>>,
    requeue: Option<Option<Duration>>,
    next_refresh_at: Option<Option<&'static str>>,
    failures: Option<i32>,
    unchanged: bool,
    message_has: Option<&'static str>,
}

/// A table row: (name, old status, now, token in place, outcome, expectations).
type Case<'a> = (
    &'static str,
    NsApiCredentialStatus,
    &'static str,
    Option<TokenTimes>,
    Outcome<'a>,
    Expect,
);

fn ready(status: bool, reason: &'static str) -> Option<(bool, &'static str)> {
    Some((status, reason))
}

#[test]
fn status_table() {
    let hour = hour_token();
    let expired_problem = Problem::new(
        Reason::SecretMissing,
        "Secret \"nsapi-client\" (clientSecretRef) does not exist in this namespace",
    );
    let host_problem = Problem::new(Reason::ApiHostNotAllowed, "API host \"x\" is not allowed");
    let (transient, refused, limited) = (transient(), refused(), rate_limited(600));
    let (refresh_refused, mfa, rejected) = (refresh_refused(), mfa(), rejected());
    let password = grant(Grant::Password);
    let refreshed = grant(Grant::RefreshToken);
    let new_times = TokenTimes {
        issued_at: ts("2026-01-01T10:50:00Z"),
        expires_at: ts("2026-01-01T11:50:00Z"),
    };
    let obtained = |grant, fallback_from| {
        Outcome::Obtained(Obtained {
            grant,
            info: None,
            fallback_from,
            times: new_times,
            next_refresh_at: ts("2026-01-01T11:39:40Z"),
            fingerprint: FP,
            served_by: "https://portal.example.com/ns-api/",
            token_secret: "abc-token",
        })
    };
    let failed = |error| Outcome::Failed {
        error,
        fingerprint: FP,
        seed: 7,
    };
    let (password, refreshed) = (&password, &refreshed);
    let (transient, refused, limited) = (&transient, &refused, &limited);
    let (refresh_refused, mfa, rejected) = (&refresh_refused, &mfa, &rejected);
    let (missing, host) = (&expired_problem, &host_problem);

    // (name, old status, now, token in place, outcome, expectations)
    let cases: Vec<Case> = vec![
        (
            "fresh token, nothing to do: nothing changes",
            healthy(),
            "2026-01-01T10:20:00Z",
            Some(hour),
            Outcome::Waiting {
                until: ts("2026-01-01T10:49:30Z"),
                token_secret: Some("abc-token"),
            },
            Expect {
                unchanged: true,
                events: Some(vec![]),
                requeue: Some(Some(secs(1770))),
                ..Expect::default()
            },
        ),
        (
            "first token issued",
            NsApiCredentialStatus::default(),
            "2026-01-01T10:50:01Z",
            None,
            obtained(password, None),
            Expect {
                ready: ready(true, "TokenIssued"),
                degraded: Some((false, "AsExpected")),
                events: Some(vec![Reason::TokenIssued]),
                next_refresh_at: Some(Some("2026-01-01T11:39:40Z")),
                requeue: Some(Some(secs(2979))),
                failures: Some(0),
                ..Expect::default()
            },
        ),
        (
            "rotation by the refresh grant",
            healthy(),
            "2026-01-01T10:50:00Z",
            Some(hour),
            obtained(refreshed, None),
            Expect {
                ready: ready(true, "TokenRefreshed"),
                events: Some(vec![Reason::TokenRefreshed]),
                message_has: Some("refreshed by the refresh_token grant"),
                ..Expect::default()
            },
        ),
        (
            "refresh refused, password grant stood in: two events",
            healthy(),
            "2026-01-01T10:50:00Z",
            Some(hour),
            obtained(password, Some(refresh_refused)),
            Expect {
                ready: ready(true, "TokenIssued"),
                events: Some(vec![Reason::RefreshFallback, Reason::TokenIssued]),
                ..Expect::default()
            },
        ),
        (
            "success after failures clears them",
            failing(3, "ApiUnavailable", "down"),
            "2026-01-01T10:50:00Z",
            Some(hour),
            obtained(password, None),
            Expect {
                degraded: Some((false, "AsExpected")),
                failures: Some(0),
                ..Expect::default()
            },
        ),
        (
            "outage with a valid token: Ready stays, Degraded says why",
            healthy(),
            "2026-01-01T10:50:00Z",
            Some(hour),
            failed(transient),
            Expect {
                ready: ready(true, "TokenIssued"),
                degraded: Some((true, "ApiUnavailable")),
                events: Some(vec![Reason::ApiUnavailable]),
                failures: Some(1),
                message_has: Some("next attempt at 2026-01-01T10:50:0"),
                ..Expect::default()
            },
        ),
        (
            "outage after expiry: Ready False, TokenExpired",
            failing(4, "ApiUnavailable", "down"),
            "2026-01-01T11:00:05Z",
            Some(hour),
            failed(transient),
            Expect {
                ready: ready(false, "TokenExpired"),
                degraded: Some((true, "ApiUnavailable")),
                failures: Some(5),
                ..Expect::default()
            },
        ),
        (
            "refused credentials without a token: Ready False with the reason",
            NsApiCredentialStatus::default(),
            T0,
            None,
            failed(refused),
            Expect {
                ready: ready(false, "AuthenticationFailed"),
                degraded: Some((true, "AuthenticationFailed")),
                events: Some(vec![Reason::AuthenticationFailed]),
                message_has: Some("check the client and subscriber Secrets"),
                // Refused credentials back off 150-300 s the first time.
                ..Expect::default()
            },
        ),
        (
            "a refused refresh with no fallback is an authentication failure",
            NsApiCredentialStatus::default(),
            T0,
            None,
            failed(refresh_refused),
            Expect {
                ready: ready(false, "AuthenticationFailed"),
                ..Expect::default()
            },
        ),
        (
            "MFA user",
            NsApiCredentialStatus::default(),
            T0,
            None,
            failed(mfa),
            Expect {
                ready: ready(false, "MfaRequired"),
                degraded: Some((true, "MfaRequired")),
                ..Expect::default()
            },
        ),
        (
            "a request that can never work",
            NsApiCredentialStatus::default(),
            T0,
            None,
            failed(rejected),
            Expect {
                ready: ready(false, "ApiRequestRejected"),
                ..Expect::default()
            },
        ),
        (
            "Retry-After is honoured",
            NsApiCredentialStatus::default(),
            T0,
            None,
            failed(limited),
            Expect {
                next_refresh_at: Some(Some("2026-01-01T10:10:00Z")),
                requeue: Some(Some(secs(600))),
                ..Expect::default()
            },
        ),
        (
            "backing off with a valid token: Degraded stays as the failure left it",
            failing(2, "ApiUnavailable", "down"),
            "2026-01-01T10:55:00Z",
            Some(hour),
            Outcome::Waiting {
                until: ts("2026-01-01T10:55:20Z"),
                token_secret: Some("abc-token"),
            },
            Expect {
                ready: ready(true, "TokenIssued"),
                degraded: Some((true, "ApiUnavailable")),
                events: Some(vec![]),
                requeue: Some(Some(secs(20))),
                next_refresh_at: Some(Some("2026-01-01T10:55:20Z")),
                ..Expect::default()
            },
        ),
        (
            "backing off without a token: Ready carries the failure",
            failing(1, "AuthenticationFailed", "refused"),
            T0,
            None,
            Outcome::Waiting {
                until: ts("2026-01-01T10:04:00Z"),
                token_secret: None,
            },
            Expect {
                ready: ready(false, "AuthenticationFailed"),
                events: Some(vec![]),
                ..Expect::default()
            },
        ),
        (
            "waiting with an expired token and no failure",
            healthy(),
            "2026-01-01T11:00:01Z",
            Some(hour),
            Outcome::Waiting {
                until: ts("2026-01-01T11:00:30Z"),
                token_secret: Some("abc-token"),
            },
            Expect {
                ready: ready(false, "TokenExpired"),
                degraded: Some((false, "AsExpected")),
                ..Expect::default()
            },
        ),
        (
            "a missing Secret with a valid token: Ready stays, requeue at expiry",
            healthy(),
            "2026-01-01T10:30:00Z",
            Some(hour),
            Outcome::Blocked(missing),
            Expect {
                ready: ready(true, "TokenIssued"),
                degraded: Some((true, "SecretMissing")),
                events: Some(vec![Reason::SecretMissing]),
                requeue: Some(Some(secs(1800))),
                next_refresh_at: Some(None),
                ..Expect::default()
            },
        ),
        (
            "the same problem again records no second event",
            failing(0, "SecretMissing", &missing.message),
            "2026-01-01T10:31:00Z",
            Some(hour),
            Outcome::Blocked(missing),
            Expect {
                events: Some(vec![]),
                ..Expect::default()
            },
        ),
        (
            "a problem without a token: Ready False, wait for a change",
            NsApiCredentialStatus::default(),
            T0,
            None,
            Outcome::Blocked(host),
            Expect {
                ready: ready(false, "ApiHostNotAllowed"),
                degraded: Some((true, "ApiHostNotAllowed")),
                events: Some(vec![Reason::ApiHostNotAllowed]),
                requeue: Some(None),
                ..Expect::default()
            },
        ),
        (
            "a problem after expiry: TokenExpired, no requeue",
            healthy(),
            "2026-01-01T12:00:00Z",
            Some(hour),
            Outcome::Blocked(host),
            Expect {
                ready: ready(false, "TokenExpired"),
                requeue: Some(None),
                ..Expect::default()
            },
        ),
        (
            "suspended with a valid token",
            healthy(),
            "2026-01-01T10:30:00Z",
            Some(hour),
            Outcome::Suspended,
            Expect {
                ready: ready(true, "Suspended"),
                degraded: Some((false, "Suspended")),
                events: Some(vec![Reason::Suspended]),
                next_refresh_at: Some(None),
                requeue: Some(Some(secs(1800))),
                message_has: Some("expires at 2026-01-01T11:00:00Z"),
                ..Expect::default()
            },
        ),
        (
            "suspended without a token",
            NsApiCredentialStatus::default(),
            T0,
            None,
            Outcome::Suspended,
            Expect {
                ready: ready(false, "Suspended"),
                events: Some(vec![Reason::Suspended]),
                requeue: Some(None),
                ..Expect::default()
            },
        ),
        (
            "still suspended: no second event",
            {
                let mut s = healthy();
                s.conditions[0] = condition(READY, true, "Suspended", "spec.suspend is true");
                s
            },
            "2026-01-01T10:31:00Z",
            Some(hour),
            Outcome::Suspended,
            Expect {
                ready: ready(true, "Suspended"),
                events: Some(vec![]),
                ..Expect::default()
            },
        ),
    ];
    assert!(cases.len() >= 15);
    for (name, old, now, token, outcome, expect) in cases {
        let report = next(
            Pass {
                old: &old,
                generation: Some(1),
                now: ts(now),
                token,
                extras: Extras::default(),
            },
            outcome,
        );
        let s = &report.status;
        let get = |t: &str| {
            s.condition(t)
                .map(|c| (c.status == "True", c.reason.as_str()))
        };
        if let Some((status, reason)) = expect.ready {
            assert_eq!(get(READY), Some((status, reason)), "{name}: Ready");
        }
        if let Some((status, reason)) = expect.degraded {
            assert_eq!(get(DEGRADED), Some((status, reason)), "{name}: Degraded");
        }
        let reasons: Vec<_> = report.events.iter().map(|e| e.reason).collect();
        if let Some(events) = expect.events {
            assert_eq!(reasons, events, "{name}: events");
        }
        if let Some(requeue) = expect.requeue {
            assert_eq!(report.requeue_after, requeue, "{name}: requeue");
        }
        if let Some(next) = expect.next_refresh_at {
            assert_eq!(
                s.next_refresh_at.as_ref().map(|t| t.0),
                next.map(ts),
                "{name}: nextRefreshAt"
            );
        }
        if let Some(failures) = expect.failures {
            assert_eq!(s.consecutive_failures, failures, "{name}: failures");
        }
        if expect.unchanged {
            assert_eq!(s, &old, "{name}: status changed");
        }
        if let Some(text) = expect.message_has {
            let messages: Vec<_> = s
                .conditions
                .iter()
                .map(|c| c.message.as_str())
                .chain(report.events.iter().map(|e| e.message.as_str()))
                .collect();
            assert!(
                messages.iter().any(|m| m.contains(text)),
                "{name}: no message has {text:?}: {messages:?}"
            );
        }
        assert_eq!(s.observed_generation, Some(1), "{name}");
    }
}

#[test]
fn refused_credentials_back_off_for_minutes_and_grow() {
    let refused = refused();
    let mut old = NsApiCredentialStatus::default();
    let mut delays = Vec::new();
    for _ in 0..4 {
        let report = next(
            Pass {
                old: &old,
                generation: Some(1),
                now: ts(T0),
                token: None,
                extras: Extras::default(),
            },
            Outcome::Failed {
                error: &refused,
                fingerprint: FP,
                seed: 1,
            },
        );
        delays.push(report.requeue_after.unwrap());
        old = report.status;
    }
    assert_eq!(old.consecutive_failures, 4);
    assert!(
        delays[0] >= secs(150) && delays[0] <= secs(300),
        "{delays:?}"
    );
    assert!(delays[3] >= secs(1200), "{delays:?}");
}

#[test]
fn a_token_obtained_with_the_same_inputs_keeps_what_a_refresh_does_not_say() {
    let refreshed = grant(Grant::RefreshToken);
    let times = TokenTimes {
        issued_at: ts("2026-01-01T10:50:00Z"),
        expires_at: ts("2026-01-01T11:50:00Z"),
    };
    let outcome = |fingerprint| {
        Outcome::Obtained(Obtained {
            grant: &refreshed,
            info: None,
            fallback_from: None,
            times,
            next_refresh_at: ts("2026-01-01T11:40:00Z"),
            fingerprint,
            served_by: "https://portal.example.com/ns-api/",
            token_secret: "abc-token",
        })
    };
    let old = healthy();
    let pass = Pass {
        old: &old,
        generation: Some(2),
        now: ts("2026-01-01T10:50:00Z"),
        token: Some(hour_token()),
        extras: Extras::default(),
    };
    let same = next(pass, outcome(FP)).status;
    assert_eq!(
        (same.territory.as_deref(), same.uid.as_deref()),
        (Some("t1"), Some("111@abc-company"))
    );
    assert_eq!(same.server_version.as_deref(), Some("Version: 44.1.0"));
    let other = next(pass, outcome("v1:other")).status;
    assert_eq!(
        (other.territory, other.uid, other.server_version),
        (None, None, None)
    );
    let info = TokenInfo {
        territory: Some("t2".into()),
        uid: Some("u2".into()),
        ..TokenInfo::default()
    };
    let with_info = next(
        pass,
        Outcome::Obtained(Obtained {
            info: Some(&info),
            ..match outcome("v1:other") {
                Outcome::Obtained(o) => o,
                _ => unreachable!(),
            }
        }),
    )
    .status;
    assert_eq!(
        (with_info.territory.as_deref(), with_info.uid.as_deref()),
        (Some("t2"), Some("u2"))
    );
}

#[test]
fn status_times_are_whole_seconds() {
    let old = NsApiCredentialStatus::default();
    let report = next(
        Pass {
            old: &old,
            generation: None,
            now: ts("2026-01-01T10:00:00.750Z"),
            token: Some(hour_token()),
            extras: Extras::default(),
        },
        Outcome::Waiting {
            until: ts("2026-01-01T10:49:31.999Z"),
            token_secret: None,
        },
    );
    assert_eq!(
        report.status.next_refresh_at,
        Some(Time(ts("2026-01-01T10:49:31Z")))
    );
    let wire = serde_json::to_value(&report.status).unwrap();
    assert_eq!(wire["nextRefreshAt"], "2026-01-01T10:49:31Z");
    assert_eq!(wire["expiresAt"], "2026-01-01T11:00:00Z");
}

#[test]
fn no_secret_reaches_status_or_events() {
    let refreshed = grant(Grant::Password);
    let old = NsApiCredentialStatus::default();
    let report = next(
        Pass {
            old: &old,
            generation: Some(1),
            now: ts(T0),
            token: None,
            extras: Extras::default(),
        },
        Outcome::Obtained(Obtained {
            grant: &refreshed,
            info: None,
            fallback_from: None,
            times: hour_token(),
            next_refresh_at: ts("2026-01-01T10:50:00Z"),
            fingerprint: FP,
            served_by: "https://portal.example.com/ns-api/",
            token_secret: "abc-token",
        }),
    );
    let shown = format!(
        "{:?} {}",
        report,
        serde_json::to_string(&report.status).unwrap()
    );
    assert!(
        !shown.contains("0123456789abcdef0123456789abcdef"),
        "{shown}"
    );
}

#[test]
fn an_ignored_setting_has_its_own_condition_and_leaves_ready_alone() {
    let ignored = [
        "spec.verifyInterval: \"30s\" is shorter than 1m; token checks are off until it is fixed"
            .to_owned(),
    ];
    let waiting = Outcome::Waiting {
        until: ts("2026-01-01T10:49:00Z"),
        token_secret: Some("abc-token"),
    };
    let pass = |old, ignored| Pass {
        old,
        generation: Some(2),
        now: ts("2026-01-01T10:10:00Z"),
        token: Some(hour_token()),
        extras: Extras {
            ignored_settings: ignored,
            ..Extras::default()
        },
    };
    let old = healthy();
    let first = next(pass(&old, Some(&ignored[..])), waiting);
    let condition = first.status.condition(SETTINGS_IGNORED).unwrap();
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("True", "InvalidSetting")
    );
    assert!(
        condition.message.contains("verifyInterval"),
        "{condition:?}"
    );
    assert!(
        is_true(&first.status.conditions, READY),
        "the token still counts"
    );
    assert_eq!(first.events.len(), 1);
    assert_eq!(first.events[0].reason, Reason::InvalidSetting);
    // The same finding again: no second Event.
    let again = next(pass(&first.status, Some(&ignored[..])), waiting);
    assert!(again.events.is_empty(), "{:?}", again.events);
    // Fixed: the condition goes.
    let fixed = next(pass(&again.status, Some(&[])), waiting);
    assert!(fixed.status.condition(SETTINGS_IGNORED).is_none());
    // A pass that never checked the spec leaves it as it was.
    let unchecked = next(pass(&again.status, None), waiting);
    assert!(unchecked.status.condition(SETTINGS_IGNORED).is_some());
}

#[test]
fn restart_reports_make_the_rollout_restart_condition_and_the_requeue() {
    use crate::core::restarts::{FailureKind, RestartFailure};
    let target = |name: &str| ("Deployment".to_owned(), name.to_owned());
    let failure = |failure, why: &str| RestartFailure {
        kind: "Deployment".into(),
        name: "reporter".into(),
        why: why.into(),
        failure,
    };
    let base = RestartReport {
        targets: 1,
        credential: "abc".into(),
        token_secret: "abc-token".into(),
        ..RestartReport::default()
    };
    let restarted = RestartReport {
        restarted: vec![target("reporter")],
        ..base.clone()
    };
    let transient = RestartReport {
        failed: vec![failure(
            FailureKind::Transient,
            "Internal error occurred (500)",
        )],
        ..base.clone()
    };
    let forbidden = RestartReport {
        failed: vec![failure(FailureKind::Permanent, "forbidden (403)")],
        ..base.clone()
    };
    let refused = RestartReport {
        not_consented: vec![target("reporter")],
        ..base.clone()
    };
    let refused_and_missing = RestartReport {
        missing: vec![("StatefulSet".into(), "absent".into())],
        targets: 2,
        ..refused.clone()
    };
    let pending = RestartReport {
        pending: vec![(
            "Deployment".into(),
            "reporter".into(),
            ts("2026-01-01T10:00:40Z"),
        )],
        ..base.clone()
    };
    let with = |reason: &str, message: &str| {
        let mut s = healthy();
        s.conditions
            .push(condition(ROLLOUT_RESTART, false, reason, message));
        s
    };
    let waiting = Outcome::Waiting {
        until: ts("2026-01-01T10:49:30Z"),
        token_secret: Some("abc-token"),
    };
    let run = |old: &NsApiCredentialStatus, now: &str, report: &RestartReport| {
        next(
            Pass {
                old,
                generation: Some(1),
                now: ts(now),
                token: Some(hour_token()),
                extras: Extras {
                    restarts: Some(report),
                    ..Extras::default()
                },
            },
            waiting,
        )
    };
    // (name, old status, now, report, condition, events, requeue, message has)
    type Row<'a> = (
        &'static str,
        NsApiCredentialStatus,
        &'static str,
        &'a RestartReport,
        (bool, &'static str),
        Vec<Reason>,
        u64,
        Vec<&'static str>,
    );
    let rows: Vec<Row> = vec![
        (
            "restarted",
            healthy(),
            "2026-01-01T10:00:05Z",
            &restarted,
            (true, "RolloutRestarted"),
            vec![Reason::RolloutRestarted],
            2965,
            vec!["every target was restarted"],
        ),
        (
            "a transient failure is retried in 10 s",
            healthy(),
            "2026-01-01T10:00:05Z",
            &transient,
            (false, "RestartFailed"),
            vec![Reason::RestartFailed],
            10,
            vec![
                "Deployment \"reporter\": Internal error occurred (500)",
                "tried again",
            ],
        ),
        (
            "still failing two minutes into the token: retried in two minutes, no second Event",
            with(
                "RestartFailed",
                &run(&healthy(), "2026-01-01T10:00:05Z", &transient)
                    .status
                    .condition(ROLLOUT_RESTART)
                    .unwrap()
                    .message,
            ),
            "2026-01-01T10:02:00Z",
            &transient,
            (false, "RestartFailed"),
            vec![],
            120,
            vec![],
        ),
        (
            "still failing later: at most every 160 s",
            healthy(),
            "2026-01-01T10:30:00Z",
            &transient,
            (false, "RestartFailed"),
            vec![Reason::RestartFailed],
            160,
            vec![],
        ),
        (
            "RBAC: looked at again in 10 minutes",
            healthy(),
            "2026-01-01T10:00:05Z",
            &forbidden,
            (false, "RestartFailed"),
            vec![Reason::RestartFailed],
            600,
            vec!["forbidden (403)", "rolloutRestart.enabled"],
        ),
        (
            "a target that does not consent is not restarted and says how to consent",
            healthy(),
            "2026-01-01T10:00:05Z",
            &refused,
            (false, "RestartNotConsented"),
            vec![Reason::RestartNotConsented],
            600,
            vec![
                "Deployment \"reporter\" was not restarted",
                "reference the Secret \"abc-token\"",
                "nsapi.io/allow-restart-by: \"abc\" (or \"*\")",
                "remove it from spec.rolloutRestartTargets",
            ],
        ),
        (
            "a missing target comes first; the message says both",
            healthy(),
            "2026-01-01T10:00:05Z",
            &refused_and_missing,
            (false, "RestartTargetMissing"),
            vec![Reason::RestartTargetMissing],
            600,
            vec![
                "StatefulSet \"absent\" does not exist",
                "Deployment \"reporter\" was not restarted",
            ],
        ),
        (
            "a pending restart: requeue at its time, no Warning",
            healthy(),
            "2026-01-01T10:00:05Z",
            &pending,
            (false, "RestartPending"),
            vec![],
            35,
            vec!["next restart of Deployment \"reporter\" at 2026-01-01T10:00:40Z"],
        ),
    ];
    for (name, old, now, report, (status, reason), events, requeue, texts) in rows {
        let out = run(&old, now, report);
        let c = out.status.condition(ROLLOUT_RESTART).unwrap();
        assert_eq!(
            (c.status == "True", c.reason.as_str()),
            (status, reason),
            "{name}"
        );
        let reasons: Vec<_> = out.events.iter().map(|e| e.reason).collect();
        assert_eq!(reasons, events, "{name}: events");
        assert_eq!(out.requeue_after, Some(secs(requeue)), "{name}: requeue");
        for text in texts {
            assert!(
                c.message.contains(text),
                "{name}: {text:?} not in {:?}",
                c.message
            );
        }
    }
    // The same refusal again: no second Event.
    let first = run(&healthy(), "2026-01-01T10:00:05Z", &refused);
    let again = run(&first.status, "2026-01-01T10:10:05Z", &refused);
    assert!(again.events.is_empty(), "{:?}", again.events);

    // A new token whose restart fails: retried 10 s later, not at the next rotation.
    let password = grant(Grant::Password);
    let new_times = TokenTimes {
        issued_at: ts("2026-01-01T10:50:00Z"),
        expires_at: ts("2026-01-01T11:50:00Z"),
    };
    let obtained = next(
        Pass {
            old: &healthy(),
            generation: Some(1),
            now: ts("2026-01-01T10:50:01Z"),
            token: Some(hour_token()),
            extras: Extras {
                restarts: Some(&transient),
                ..Extras::default()
            },
        },
        Outcome::Obtained(Obtained {
            grant: &password,
            info: None,
            fallback_from: None,
            times: new_times,
            next_refresh_at: ts("2026-01-01T11:39:40Z"),
            fingerprint: FP,
            served_by: "https://portal.example.com/ns-api/",
            token_secret: "abc-token",
        }),
    );
    assert_eq!(obtained.requeue_after, Some(secs(10)));
}

#[test]
fn only_new_tokens_obtained_as_planned_are_routine_events() {
    let note = |type_, reason| Note {
        type_,
        reason,
        message: String::new(),
    };
    assert!(note(EventType::Normal, Reason::TokenIssued).is_routine());
    assert!(note(EventType::Normal, Reason::TokenRefreshed).is_routine());
    assert!(!note(EventType::Normal, Reason::RefreshFallback).is_routine());
    assert!(!note(EventType::Normal, Reason::Suspended).is_routine());
    assert!(!note(EventType::Warning, Reason::TokenExpired).is_routine());
    assert!(!note(EventType::Warning, Reason::AuthenticationFailed).is_routine());
}
