//! Tenancy: one operator serves every team's credentials, so nothing one credential holds may
//! stop another's rotation. Against the local control plane and nsapi-sim, with the operator
//! as a real process (see `fixture`). docs/reliability.md ("Tenancy") points here.

mod control_plane;
mod fixture;

use std::time::Duration;

use fixture::{Fixture, data};
use nsapi_sim::SimConfig;
use serde_json::{Value, json};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Whether an Event with `reason` is recorded for `credential` (Events are published a moment
/// after the status: waits up to 20 s).
async fn has_event(f: &Fixture, credential: &str, reason: &str) -> bool {
    let deadline = std::time::Instant::now() + secs(20);
    loop {
        let events: Value = serde_json::from_str(&f.events_json()).unwrap();
        let found = events["items"].as_array().into_iter().flatten().any(|e| {
            let regarding = e
                .get("regarding")
                .or_else(|| e.get("involvedObject"))
                .and_then(|r| r["name"].as_str());
            regarding == Some(credential) && e["reason"] == reason
        });
        if found || std::time::Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panic_in_one_pass_is_that_credentials_condition_and_the_others_keep_rotating() {
    let mut f = Fixture::new("panic", SimConfig::new().token_ttl(secs(30))).await;
    f.create_input_secrets().await;
    let target = format!("{}/crash", f.namespace());
    f.start_operator_env(&[], &[("NSAPI_TEST_PANIC_CREDENTIAL", &target)]);
    f.create_credential("crash", |_| {}).await;
    f.create_credential("calm", |spec| {
        spec["tokenSecret"]["name"] = json!("calm-token")
    })
    .await;

    let crashed = f
        .wait_condition("crash", "Ready", "False", Some("InternalError"), secs(60))
        .await;
    let status = crashed.status.unwrap();
    let message = &status.condition("Ready").unwrap().message;
    assert!(message.contains("internal error"), "{message}");
    f.wait_ready("calm", secs(60)).await;
    let first = data(&f.token_secret("calm-token").await.unwrap(), "access_token").unwrap();
    // A 30 s token rotates within about 15 s: the process outlived the panics and goes on.
    let second = f.wait_new_token("calm-token", &first, secs(60)).await;
    assert_ne!(first, second);
    assert!(
        has_event(&f, "crash", "InternalError").await,
        "no InternalError Event"
    );
    assert!(
        f.token_secret("crash-token").await.is_none(),
        "the crashing pass wrote nothing"
    );

    // It is retried with backoff, not in a loop, while the other keeps going.
    let log = f.latest_operator_log();
    let panics = log.matches("a pass panicked").count();
    assert!(panics >= 1, "no panic was logged");
    assert!(
        panics <= 6,
        "{panics} panics in under a minute: retried in a loop"
    );
    let (status, metrics) = f.operator_http("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.lines().any(|l| l
            .starts_with("nsapi_token_operator_reconcile_errors_total{error=\"internal\"}")
            && !l.ends_with(" 0")),
        "no internal reconcile error counted"
    );
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_optional_setting_never_costs_the_token() {
    let mut f = Fixture::new("optional", SimConfig::new()).await;
    f.create_input_secrets().await;
    f.start_operator_as(
        &control_plane::admin_kubeconfig(),
        &["--allowed-api-host", "127.0.0.1"],
    );
    // A fallback node outside the allow-list: left out and named; the primary serves.
    f.create_credential("abc", |spec| {
        spec["fallbackApiBaseUrls"] = json!(["https://dal.portal.example.com/ns-api/"]);
    })
    .await;
    let cred = f.wait_ready("abc", secs(60)).await;
    let cred = if cred
        .status
        .as_ref()
        .unwrap()
        .condition("SettingsIgnored")
        .is_some()
    {
        cred
    } else {
        f.wait_condition(
            "abc",
            "SettingsIgnored",
            "True",
            Some("InvalidSetting"),
            secs(30),
        )
        .await
    };
    let status = cred.status.unwrap();
    let message = &status.condition("SettingsIgnored").unwrap().message;
    assert!(message.contains("fallbackApiBaseUrls[0]"), "{message}");
    assert!(has_event(&f, "abc", "InvalidSetting").await);
    assert_eq!(
        f.sim.stats().token_requests,
        1,
        "one token, from the primary"
    );

    // Fixed: the condition goes, and no new token is asked for (the inputs did not change).
    let patch = json!({"spec": {"fallbackApiBaseUrls": null}});
    f.credentials()
        .patch(
            "abc",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + secs(30);
    loop {
        let cred = f.credential("abc").await;
        if cred
            .status
            .as_ref()
            .unwrap()
            .condition("SettingsIgnored")
            .is_none()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SettingsIgnored stayed"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_credential_deleted_during_its_pass_leaves_nothing_behind() {
    // Token requests take 2 s (the fixture's operator waits 3 s): the credential is deleted
    // while its first one is in flight.
    let config = SimConfig::new().fault(nsapi_sim::Fault::Latency(secs(2)));
    let mut f = Fixture::new("deleted-mid-pass", config).await;
    f.create_input_secrets().await;
    f.start_operator();
    f.create_credential("calm", |spec| {
        spec["tokenSecret"]["name"] = json!("calm-token")
    })
    .await;
    f.wait_ready("calm", secs(60)).await;
    f.create_credential("abc", |_| {}).await;
    let requests = f.sim.stats().token_requests;
    control_plane::eventually("abc's token request", secs(30), || async {
        (f.sim.stats().token_requests > requests).then_some(())
    })
    .await;
    f.delete_credential("abc").await;
    // The request is answered, the pass goes on to its writes, and ends.
    tokio::time::sleep(secs(6)).await;

    let (status, metrics) = f.operator_http("/metrics").await;
    assert_eq!(status, 200);
    let series = |name: &str| {
        metrics
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains(&format!("name=\"{name}\"")))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert!(
        series("abc").is_empty(),
        "a deleted credential's series came back: {:?}",
        series("abc")
    );
    assert!(
        !series("calm").is_empty(),
        "the other credential's series are there"
    );
    assert!(
        f.latest_operator_log()
            .contains("deleted while its pass ran"),
        "the pass did not see the deletion"
    );
    f.assert_no_secret_leaked().await;
}
