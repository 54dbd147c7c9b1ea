//! The output Secret in the application's shape and past mistakes (issue 20, items 1 and 2):
//! `spec.tokenSecret.template` (an env file, a JSON config, a single `token` key; `Merge` and
//! `Replace`; a broken template keeps the last Secret), `type`, and `deletionPolicy: Retain`
//! (the Secret outlives its credential and a credential of the same name takes it back
//! without a new token), against the real API server (with its garbage collector) and
//! nsapi-sim.

mod control_plane;
mod fixture;

use std::time::Duration;

use fixture::{Fixture, data};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use nsapi_sim::SimConfig;
use serde_json::{Value, json};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

async fn started(prefix: &str) -> Fixture {
    let mut f = Fixture::new(prefix, SimConfig::new()).await;
    f.create_input_secrets().await;
    f.start_operator();
    f
}

fn keys(secret: &Secret) -> Vec<String> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .collect()
}

fn annotation<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    secret
        .metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

async fn patch_spec(f: &Fixture, name: &str, spec: Value) {
    f.credentials()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": spec })),
        )
        .await
        .unwrap();
}

const ENV_FILE: &str = "NS_TOKEN={{ token }}\nNS_API_BASE_URL={{ api_base_url }}\n";
const JSON_CONFIG: &str = r#"{"token": {{ token | tojson }}, "baseUrl": {{ api_base_url | tojson }}, "expiresAt": {{ expires_at | tojson }}}"#;

#[tokio::test(flavor = "multi_thread")]
async fn templates_give_an_env_file_a_json_config_and_a_single_key() {
    let f = started("tmpl").await;
    let template = json!({"data": {
        "nsapi.env": ENV_FILE,
        "config.json": JSON_CONFIG,
        "token": "{{ token }}",
    }});
    f.create_credential("merged", |spec| {
        spec["tokenSecret"]["template"] = template.clone();
    })
    .await;
    f.create_credential("replaced", |spec| {
        spec["tokenSecret"]["type"] = json!("example.com/nsapi-token");
        spec["tokenSecret"]["template"] = template.clone();
        spec["tokenSecret"]["template"]["mergePolicy"] = json!("Replace");
    })
    .await;
    f.wait_ready("merged", secs(60)).await;
    f.wait_ready("replaced", secs(60)).await;

    for name in ["merged", "replaced"] {
        let secret = f.token_secret(&format!("{name}-token")).await.unwrap();
        let token = data(&secret, "access_token").unwrap();
        let base = data(
            &f.token_secret("merged-token").await.unwrap(),
            "api_base_url",
        )
        .unwrap();
        assert_eq!(
            data(&secret, "nsapi.env").unwrap(),
            format!("NS_TOKEN={token}\nNS_API_BASE_URL={base}\n"),
            "{name}"
        );
        let config: Value = serde_json::from_str(&data(&secret, "config.json").unwrap()).unwrap();
        assert_eq!(config["token"], token.as_str(), "{name}");
        assert_eq!(config["baseUrl"], base.as_str(), "{name}");
        assert!(
            config["expiresAt"].as_str().unwrap().ends_with('Z'),
            "{name}"
        );
        assert_eq!(data(&secret, "token").unwrap(), token, "{name}");
    }
    let merged = f.token_secret("merged-token").await.unwrap();
    assert_eq!(merged.type_.as_deref(), Some("Opaque"));
    for key in ["authorization", "token_type", "expires_at", "api_base_url"] {
        assert!(
            keys(&merged).contains(&key.to_owned()),
            "merged lacks {key}"
        );
    }
    let replaced = f.token_secret("replaced-token").await.unwrap();
    assert_eq!(replaced.type_.as_deref(), Some("example.com/nsapi-token"));
    assert_eq!(
        keys(&replaced),
        ["access_token", "config.json", "nsapi.env", "token"]
    );
    assert!(annotation(&replaced, "nsapi.io/api-base-url").is_some());
    // One login each, whatever the shape.
    assert_eq!(f.sim.stats().token_requests, 2);

    // A broken template: a condition that names the key, an Event, and the last Secret kept
    // (the token in it is valid: Ready stays True, Degraded says what to fix).
    let before = f.token_secret("merged-token").await.unwrap();
    patch_spec(
        &f,
        "merged",
        json!({"tokenSecret": {"template": {"data": {"token": "{{ refresh_token }}"}}}}),
    )
    .await;
    let cred = f
        .wait_condition("merged", "Degraded", "True", Some("InvalidSpec"), secs(60))
        .await;
    let message = &cred
        .status
        .unwrap()
        .condition("Degraded")
        .unwrap()
        .message
        .clone();
    assert!(
        message.contains("spec.tokenSecret.template.data[\"token\"]")
            && message.contains("undefined"),
        "{message}"
    );
    let events = f.events_json();
    assert!(
        events.contains("InvalidSpec"),
        "no InvalidSpec Event: {events}"
    );
    let after = f.token_secret("merged-token").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "a broken template changed the Secret"
    );

    // Fixed: the Secret takes the new shape with the same token, without a login.
    patch_spec(
        &f,
        "merged",
        json!({"tokenSecret": {"template": {"data": {"token": "Bearer {{ token }}", "config.json": null}}}}),
    )
    .await;
    f.wait_condition("merged", "Degraded", "False", None, secs(60))
        .await;
    control_plane::eventually("the fixed template to be written", secs(30), || async {
        let secret = f.token_secret("merged-token").await?;
        let token = data(&secret, "access_token")?;
        (data(&secret, "token")? == format!("Bearer {token}")).then_some(())
    })
    .await;
    let fixed = f.token_secret("merged-token").await.unwrap();
    assert_eq!(data(&fixed, "access_token"), data(&before, "access_token"));
    assert!(
        !keys(&fixed).contains(&"config.json".to_owned()),
        "a key dropped from the template stays: {:?}",
        keys(&fixed)
    );
    assert_eq!(f.sim.stats().token_requests, 2);

    // Switching to Replace drops the standard keys the first write created.
    patch_spec(
        &f,
        "merged",
        json!({"tokenSecret": {"template": {"mergePolicy": "Replace"}}}),
    )
    .await;
    control_plane::eventually("the standard keys to go", secs(30), || async {
        let secret = f.token_secret("merged-token").await?;
        (keys(&secret) == ["access_token", "nsapi.env", "token"]).then_some(())
    })
    .await;
    // A type cannot change in place: the Secret is replaced, with the same token.
    patch_spec(
        &f,
        "merged",
        json!({"tokenSecret": {"type": "example.com/other"}}),
    )
    .await;
    control_plane::eventually("the Secret to have the new type", secs(30), || async {
        let secret = f.token_secret("merged-token").await?;
        (secret.type_.as_deref() == Some("example.com/other")).then_some(())
    })
    .await;
    let retyped = f.token_secret("merged-token").await.unwrap();
    assert_eq!(
        data(&retyped, "access_token"),
        data(&before, "access_token")
    );
    assert_eq!(keys(&retyped), ["access_token", "nsapi.env", "token"]);
    assert_eq!(f.sim.stats().token_requests, 2);
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retained_secret_outlives_its_credential_and_is_taken_back_without_a_login() {
    let f = started("retain").await;
    f.create_credential("kept", |spec| {
        spec["tokenSecret"]["deletionPolicy"] = json!("Retain");
    })
    .await;
    f.create_credential("owned", |_| {}).await;
    f.wait_ready("kept", secs(60)).await;
    f.wait_ready("owned", secs(60)).await;
    let kept = f.token_secret("kept-token").await.unwrap();
    assert_eq!(kept.metadata.owner_references, None);
    assert_eq!(annotation(&kept, "nsapi.io/credential"), Some("kept"));
    let owned = f.token_secret("owned-token").await.unwrap();
    assert_eq!(
        owned.metadata.owner_references.as_ref().map(Vec::len),
        Some(1)
    );
    let token = data(&kept, "access_token").unwrap();
    let logins = f.sim.stats().token_requests;

    // Both deleted: the garbage collector takes the owned Secret; the retained one stays.
    f.delete_credential("kept").await;
    f.delete_credential("owned").await;
    control_plane::eventually("the owned Secret to be collected", secs(60), || async {
        f.token_secret("owned-token").await.is_none().then_some(())
    })
    .await;
    let still = f
        .token_secret("kept-token")
        .await
        .expect("the retained Secret is gone");
    assert_eq!(data(&still, "access_token").unwrap(), token);

    // A credential of the same name takes it back: same token, no login, no new Secret.
    f.create_credential("kept", |spec| {
        spec["tokenSecret"]["deletionPolicy"] = json!("Retain");
    })
    .await;
    f.wait_ready("kept", secs(60)).await;
    let adopted = f.token_secret("kept-token").await.unwrap();
    assert_eq!(adopted.metadata.uid, kept.metadata.uid);
    assert_eq!(data(&adopted, "access_token").unwrap(), token);
    assert_eq!(f.sim.stats().token_requests, logins);

    // Back to Delete: the credential controls the Secret again; and Retain releases it.
    patch_spec(
        &f,
        "kept",
        json!({"tokenSecret": {"deletionPolicy": "Delete"}}),
    )
    .await;
    control_plane::eventually("the owner reference to be set", secs(30), || async {
        let secret = f.token_secret("kept-token").await?;
        (secret.metadata.owner_references?.len() == 1).then_some(())
    })
    .await;
    patch_spec(
        &f,
        "kept",
        json!({"tokenSecret": {"deletionPolicy": "Retain"}}),
    )
    .await;
    control_plane::eventually("the owner reference to be removed", secs(30), || async {
        let secret = f.token_secret("kept-token").await?;
        secret.metadata.owner_references.is_none().then_some(())
    })
    .await;
    // Another credential naming the retained Secret does not take it.
    f.create_credential("other", |spec| {
        spec["tokenSecret"]["name"] = json!("kept-token");
    })
    .await;
    f.wait_condition("other", "Ready", "False", Some("SecretConflict"), secs(60))
        .await;
    assert_eq!(
        data(&f.token_secret("kept-token").await.unwrap(), "access_token").unwrap(),
        token
    );
    assert_eq!(f.sim.stats().token_requests, logins);
    f.assert_no_secret_leaked().await;
}
