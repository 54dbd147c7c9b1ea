//! The fault matrix, Kubernetes side: the operator binary against a control plane of each test's
//! own (so that killing, stalling or cutting off its components disturbs no other test) and
//! nsapi-sim. Every case ends with a valid token in the output Secret, one NetSapiens grant per
//! token (or at most one extra where the operator itself is killed), and no secret value in the
//! operator's logs, the Events or the status.

mod control_plane;
mod fixture;

use std::time::{Duration, Instant};

use control_plane::{PrivatePlane, ProxyMode, TcpProxy};
use fixture::{Fixture, Observed, Operator, grants};
use kube::api::{DeleteParams, Patch, PatchParams};
use nsapi_sim::{Fault, RefreshMode, SimConfig};
use serde_json::{Value, json};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A private control plane, a namespace on it with the input Secrets, and a simulator.
async fn world(prefix: &str, config: SimConfig) -> (PrivatePlane, Fixture) {
    let plane = PrivatePlane::start().await;
    let f = Fixture::new(prefix, config).await;
    f.create_input_secrets().await;
    (plane, f)
}

fn log_time(line: &str) -> Option<jiff::Timestamp> {
    let value: Value = serde_json::from_str(line).ok()?;
    value["timestamp"].as_str()?.parse().ok()
}

/// The time of the first log line of `operator` containing `needle`.
fn first_logged(operator: &Operator, needle: &str) -> Option<jiff::Timestamp> {
    operator
        .log()
        .lines()
        .find(|l| l.contains(needle))
        .and_then(log_time)
}

#[tokio::test(flavor = "multi_thread")]
async fn api_server_killed_between_and_during_rotations() {
    // 60 s tokens rotate 30 to 45 s before expiry: room for an API server that is down for
    // about ten seconds.
    let (plane, mut f) = world(
        "kill-apiserver",
        SimConfig::new()
            .token_ttl(secs(60))
            .refresh_mode(RefreshMode::Rotate),
    )
    .await;
    f.start_operator();
    f.create_credential("abc", |_| {}).await;
    let mut seen = Observed::default();
    seen.until_tokens(&f, "abc-token", 1, secs(60)).await;

    // Between rotations: right after one, down for 3 s, then back on the same port and data.
    seen.until_tokens(&f, "abc-token", 2, secs(60)).await;
    plane.restart_apiserver(secs(3), &[]).await;

    // During a rotation: the grant takes 2 s (within the operator's 3 s NetSapiens timeout), and
    // the API server dies while it is in flight, so the new token cannot be written at first.
    // It is written once the server is back, without another grant.
    f.sim.inject_times(Fault::Latency(secs(2)), 1);
    let before = f.sim.stats().token_requests;
    control_plane::eventually("the next rotation to start", secs(60), || async {
        (f.sim.stats().token_requests > before).then_some(())
    })
    .await;
    plane.restart_apiserver(secs(5), &[]).await;
    seen.until_tokens(&f, "abc-token", 5, secs(180)).await;
    seen.watch(&f, "abc-token", secs(2)).await;

    seen.assert_sound();
    let stats = f.sim.stats();
    eprintln!(
        "measure: api-server kills: {} tokens, {} grants, {} refresh-token reuses",
        seen.tokens.len(),
        grants(&f),
        stats.refresh_token_reuse
    );
    assert_eq!(grants(&f), seen.tokens.len() as u64, "a grant was wasted");
    assert_eq!(stats.refresh_token_reuse, 0);
    f.wait_ready("abc", secs(30)).await;
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_stopped_for_30_seconds_across_a_rotation() {
    // 120 s tokens rotate 60 to 90 s before expiry; etcd stops 10 s before the planned
    // rotation, for 30 s, so the rotation falls inside the outage.
    let (plane, mut f) = world("stop-etcd", SimConfig::new().token_ttl(secs(120))).await;
    f.start_operator();
    f.create_credential("abc", |_| {}).await;
    let cred = f.wait_ready("abc", secs(60)).await;
    let mut seen = Observed::default();
    seen.until_tokens(&f, "abc-token", 1, secs(10)).await;
    let rotation = cred.status.unwrap().next_refresh_at.unwrap().0;
    let until_stop =
        rotation.duration_since(jiff::Timestamp::now()) - jiff::SignedDuration::from_secs(10);
    tokio::time::sleep(Duration::try_from(until_stop).unwrap_or_default()).await;

    plane.signal("etcd", "STOP");
    let stopped = Instant::now();
    tokio::time::sleep(secs(30)).await;
    plane.signal("etcd", "CONT");
    eprintln!("measure: etcd stopped for {:?}", stopped.elapsed());

    seen.until_tokens(&f, "abc-token", 2, secs(60)).await;
    seen.watch(&f, "abc-token", secs(2)).await;
    seen.assert_sound();
    let log = f.latest_operator_log();
    assert!(
        log.contains("did not answer within"),
        "no Kubernetes request timed out while etcd was stopped"
    );
    assert_eq!(grants(&f), seen.tokens.len() as u64, "a grant was wasted");
    f.wait_ready("abc", secs(30)).await;
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_connection_makes_the_leader_step_down_before_the_standby_acts() {
    let (plane, mut f) = world("hung", SimConfig::new().token_ttl(secs(20))).await;
    let upstream = plane
        .server()
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    let proxy = TcpProxy::start(upstream).await;
    let admin_via_proxy =
        plane.kubeconfig_via(&control_plane::admin_kubeconfig(), &proxy.https_url());
    let lease_ns = f.namespace().to_owned();
    let election = [
        "--leader-election",
        "--leader-election-namespace",
        &lease_ns,
        "--leader-election-lease",
        "hung-test",
    ];
    let mut leader = f.spawn_operator(&admin_via_proxy, &election);
    control_plane::eventually("the first replica to lead", secs(30), || async {
        leader.log().contains("became the leader").then_some(())
    })
    .await;
    let standby = f.spawn_operator(&control_plane::admin_kubeconfig(), &election);
    control_plane::eventually("the second replica to stand by", secs(30), || async {
        standby.log().contains("standing by").then_some(())
    })
    .await;
    f.create_credential("abc", |_| {}).await;
    let mut seen = Observed::default();
    seen.until_tokens(&f, "abc-token", 1, secs(60)).await;

    proxy.set(ProxyMode::Hang);
    let hung = jiff::Timestamp::now();
    control_plane::eventually("the hung leader to exit", secs(30), || {
        let exited = leader.exited();
        async move { exited.then_some(()) }
    })
    .await;
    let exited = jiff::Timestamp::now();
    control_plane::eventually("the standby to lead", secs(30), || async {
        standby.log().contains("became the leader").then_some(())
    })
    .await;
    let stepped_down = first_logged(&leader, "could not be renewed within the renew deadline")
        .or_else(|| first_logged(&leader, "lost the leader-election lease"))
        .expect("the leader said why it stepped down");
    let took_over = first_logged(&standby, "became the leader").unwrap();
    eprintln!(
        "measure: hung connection: the leader stepped down {} after the hang and had exited by {}; the standby led {} after the hang",
        stepped_down.duration_since(hung),
        exited.duration_since(hung),
        took_over.duration_since(hung)
    );
    // Renewals every 2 s, a renew deadline of 10 s: the leader stops within 10 s of the hang.
    assert!(
        stepped_down.duration_since(hung) <= jiff::SignedDuration::from_secs(11),
        "the leader kept acting past its renew deadline"
    );
    assert!(exited < took_over, "two replicas led at once");

    seen.until_tokens(&f, "abc-token", 3, secs(60)).await;
    seen.assert_sound();
    assert_eq!(
        grants(&f),
        seen.tokens.len() as u64,
        "a rotation was done twice"
    );
    f.operator = Some(standby);
    f.assert_no_secret_leaked().await;
}

/// etcd's client URL, from the API server's flags.
fn etcd_url(plane: &PrivatePlane) -> String {
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", plane.pid("kube-apiserver"))).unwrap();
    String::from_utf8_lossy(&cmdline)
        .split('\0')
        .find_map(|a| a.strip_prefix("--etcd-servers="))
        .expect("--etcd-servers")
        .to_owned()
}

/// Compacts etcd's history up to now, so that resuming a watch from an older resourceVersion
/// fails with 410 Gone.
async fn compact_etcd(plane: &PrivatePlane) {
    let url = etcd_url(plane);
    let http = reqwest::Client::new();
    let range: Value = http
        .post(format!("{url}/v3/kv/range"))
        .json(&json!({"key": "Lw=="}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let revision = range["header"]["revision"].as_str().unwrap().to_owned();
    let compacted = http
        .post(format!("{url}/v3/kv/compaction"))
        .json(&json!({"revision": revision, "physical": true}))
        .send()
        .await
        .unwrap();
    assert!(compacted.status().is_success(), "{}", compacted.status());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_watch_relists_and_forgets_what_was_deleted_meanwhile() {
    let (plane, mut f) = world("relist", SimConfig::new()).await;
    // Without the watch cache, a watch resumed from a compacted revision gets 410 Gone from etcd.
    plane
        .restart_apiserver(secs(0), &["--watch-cache=false"])
        .await;
    let upstream = plane
        .server()
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    let proxy = TcpProxy::start(upstream).await;
    let admin_via_proxy =
        plane.kubeconfig_via(&control_plane::admin_kubeconfig(), &proxy.https_url());
    f.start_operator_as(&admin_via_proxy, &[]);
    f.create_credential("kept", |_| {}).await;
    f.create_credential("deleted", |_| {}).await;
    f.wait_ready("kept", secs(60)).await;
    f.wait_ready("deleted", secs(60)).await;

    // Cut the operator off; meanwhile one credential goes, one comes, and history is compacted.
    proxy.set(ProxyMode::Refuse);
    f.credentials()
        .delete("deleted", &DeleteParams::default())
        .await
        .unwrap();
    f.create_credential("added", |_| {}).await;
    f.put_secret("unrelated", &[("k", "v")]).await;
    compact_etcd(&plane).await;
    tokio::time::sleep(secs(3)).await;
    proxy.set(ProxyMode::Forward);

    f.wait_ready("added", secs(90)).await;
    control_plane::eventually(
        "the deleted credential to be forgotten",
        secs(60),
        || async {
            let (_, metrics) = f.operator_http("/metrics").await;
            (!metrics.contains("name=\"deleted\"")).then_some(())
        },
    )
    .await;
    let log = f.latest_operator_log();
    assert!(
        log.matches("watch listed").count() >= 2,
        "no re-list after the watch expired"
    );
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conflicts_from_a_concurrent_writer_cost_no_extra_grant() {
    let (_plane, mut f) = world(
        "conflicts",
        SimConfig::new()
            .token_ttl(secs(20))
            .refresh_mode(RefreshMode::Rotate),
    )
    .await;
    f.start_operator();
    f.create_credential("abc", |_| {}).await;
    let mut seen = Observed::default();
    seen.until_tokens(&f, "abc-token", 1, secs(60)).await;

    // Another writer touches the credential and its Secret ten times a second, so the
    // operator's conditional writes (status, Secret) keep meeting a newer resourceVersion.
    let writer = {
        let (credentials, secrets) = (f.credentials(), f.secrets());
        tokio::spawn(async move {
            for tick in 0..500u32 {
                let patch =
                    json!({"metadata": {"annotations": {"example.com/tick": tick.to_string()}}});
                let _ = credentials
                    .patch("abc", &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
                let _ = secrets
                    .patch("abc-token", &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    seen.until_tokens(&f, "abc-token", 4, secs(60)).await;
    writer.abort();
    seen.watch(&f, "abc-token", secs(2)).await;
    seen.assert_sound();
    let log = f.latest_operator_log();
    let conflicts = log.matches("409").count() + log.matches("Conflict").count();
    eprintln!(
        "measure: concurrent writer: {} tokens, {} grants, {conflicts} conflict mentions",
        seen.tokens.len(),
        grants(&f)
    );
    assert!(
        conflicts > 0,
        "the writer never caused a conflict (the test proves nothing)"
    );
    assert_eq!(
        grants(&f),
        seen.tokens.len() as u64,
        "a conflict cost a grant"
    );
    assert_eq!(f.sim.stats().refresh_token_reuse, 0);
    f.assert_no_secret_leaked().await;
}

/// Kills the operator (SIGKILL, as a crash or an OOM kill would) and starts a new one.
fn crash_and_restart(f: &mut Fixture) {
    f.operator.take().expect("an operator").kill();
    f.start_operator_as(&control_plane::operator_kubeconfig(), &[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_killed_at_each_step_of_a_rotation() {
    let (_plane, mut f) = world(
        "kill-operator",
        // 40 s tokens rotate 20 to 30 s after they are issued: a restart just after a rotation
        // finds the new token fresh.
        SimConfig::new()
            .token_ttl(secs(40))
            .refresh_mode(RefreshMode::Rotate),
    )
    .await;
    fixture::grant_operator(&f, &[]).await;
    f.start_operator_as(&control_plane::operator_kubeconfig(), &[]);
    f.create_credential("abc", |_| {}).await;
    let mut seen = Observed::default();
    seen.until_tokens(&f, "abc-token", 1, secs(60)).await;
    let mut extra = 0;

    // 1. With the refresh grant in flight (it takes 2 s).
    f.sim.inject_times(Fault::Latency(secs(2)), 1);
    let before = f.sim.stats().token_requests;
    control_plane::eventually("the rotation's grant to be sent", secs(60), || async {
        (f.sim.stats().token_requests > before).then_some(())
    })
    .await;
    crash_and_restart(&mut f);
    seen.until_tokens(&f, "abc-token", 2, secs(60)).await;
    extra += 1; // the grant in flight was answered but never written

    // 2. After the grant, before the Secret is written: the write is forbidden.
    fixture::grant_operator(&f, &[("secrets", "patch")]).await;
    control_plane::eventually("a rotation whose write is refused", secs(60), || async {
        let log = f.latest_operator_log();
        (log.contains("reconcile failed") && log.contains("forbidden")).then_some(())
    })
    .await;
    let obtained_before_crash = grants(&f);
    fixture::grant_operator(&f, &[]).await;
    crash_and_restart(&mut f);
    seen.until_tokens(&f, "abc-token", 3, secs(60)).await;
    assert!(grants(&f) > obtained_before_crash);
    extra += 1; // the token held in memory died with the process

    // 3. After the Secret is written, before the status: the status write is forbidden.
    fixture::grant_operator(&f, &[("nsapicredentials/status", "patch")]).await;
    let tokens_before = seen.tokens.len();
    seen.until_tokens(&f, "abc-token", tokens_before + 1, secs(60))
        .await;
    fixture::grant_operator(&f, &[]).await;
    let grants_before_restart = grants(&f);
    crash_and_restart(&mut f);
    f.wait_ready("abc", secs(60)).await;
    seen.watch(&f, "abc-token", secs(3)).await;
    // The restarted operator finds the fresh token in the Secret: nothing obtained on restart.
    assert_eq!(
        grants(&f),
        grants_before_restart,
        "the restart obtained a token"
    );

    seen.until_tokens(&f, "abc-token", seen.tokens.len() + 1, secs(60))
        .await;
    seen.assert_sound();
    let stats = f.sim.stats();
    eprintln!(
        "measure: operator killed at 3 steps: {} tokens, {} grants, {} refresh-token reuses",
        seen.tokens.len(),
        grants(&f),
        stats.refresh_token_reuse
    );
    assert!(
        grants(&f) <= seen.tokens.len() as u64 + extra,
        "more than one extra grant per kill"
    );
    assert_eq!(
        stats.refresh_token_reuse, 0,
        "a spent refresh token was sent again"
    );
    f.assert_no_secret_leaked().await;
    fixture::revoke_operator(&f).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_leader_is_replaced_within_the_lease_duration() {
    let (_plane, mut f) = world("kill-leader", SimConfig::new().token_ttl(secs(20))).await;
    let lease_ns = f.namespace().to_owned();
    let election = [
        "--leader-election",
        "--leader-election-namespace",
        &lease_ns,
        "--leader-election-lease",
        "kill-test",
    ];
    let leader = f.spawn_operator(&control_plane::admin_kubeconfig(), &election);
    control_plane::eventually("a leader", secs(30), || async {
        leader.log().contains("became the leader").then_some(())
    })
    .await;
    let standby = f.spawn_operator(&control_plane::admin_kubeconfig(), &election);
    control_plane::eventually("a standby", secs(30), || async {
        standby.log().contains("standing by").then_some(())
    })
    .await;
    f.create_credential("abc", |_| {}).await;
    let mut seen = Observed::default();
    seen.until_tokens(&f, "abc-token", 1, secs(60)).await;

    leader.kill();
    let killed = Instant::now();
    control_plane::eventually("the standby to lead", secs(30), || async {
        standby.log().contains("became the leader").then_some(())
    })
    .await;
    let took = killed.elapsed();
    eprintln!("measure: standby led {took:?} after the leader was killed");
    // The Lease lasts 15 s, renewed every 2 s; the standby retries every 2 s.
    assert!(took <= secs(20), "the standby took {took:?}");
    assert!(first_logged(&standby, "became the leader").is_some());

    seen.until_tokens(&f, "abc-token", 3, secs(60)).await;
    seen.assert_sound();
    assert_eq!(
        grants(&f),
        seen.tokens.len() as u64,
        "a rotation was done twice"
    );
    f.operator = Some(standby);
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_being_deleted_costs_no_token_request() {
    let (plane, mut f) = world("terminating", SimConfig::new()).await;
    f.start_operator();
    for name in ["one", "two", "three"] {
        f.create_credential(name, |_| {}).await;
    }
    for name in ["one", "two", "three"] {
        f.wait_ready(name, secs(60)).await;
    }
    f.stop_operator();
    // The namespace controller is paused, so the namespace stays Terminating with its
    // credentials, as in a large deletion; their Secrets are gone already.
    plane.signal("kube-controller-manager", "STOP");
    control_plane::kubectl(&["delete", "namespace", f.namespace(), "--wait=false"]);
    for name in ["one", "two", "three"] {
        let _ = f
            .secrets()
            .delete(&format!("{name}-token"), &DeleteParams::default())
            .await;
    }
    let before = f.sim.stats().token_requests;
    f.start_operator();
    f.wait_operator_started().await;
    tokio::time::sleep(secs(15)).await;
    let after = f.sim.stats().token_requests;
    eprintln!(
        "measure: token requests for a terminating namespace: {}",
        after - before
    );
    assert_eq!(
        after, before,
        "credentials in a terminating namespace got tokens"
    );
    let log = f.latest_operator_log();
    assert!(log.contains("the namespace is being deleted"), "{log}");
    plane.signal("kube-controller-manager", "CONT");
    f.assert_no_secret_leaked().await;
}
