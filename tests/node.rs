//! On a real node (`scripts/control-plane up --node`: kube-scheduler, containerd, a kubelet):
//! the operator runs as a pod from its own chart and image, in-cluster; consumer pods see the
//! mounted token rotate (and those that read it through `subPath` or an env var do not); an
//! upgrade of the chart's default two replicas never has none ready and loses no token; deleting the leader's
//! pod hands over within the Lease duration; and the release, published to the node's registry,
//! verified with cosign and installed from `oci://` as the README says, with the image pulled.
//!
//! Needs root, `scripts/control-plane build --node`, `scripts/build-image` and
//! `scripts/build-image --busybox` (`make test` does all of it).

mod control_plane;
mod fixture;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use control_plane::PrivatePlane;
use fixture::{Fixture, Observed, data, grants};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use nsapi_sim::SimConfig;
use serde_json::{Value, json};

const RELEASE: &str = "nsapi-token-operator";
const OPERATOR_NS: &str = "nsapi-system";
const BUSYBOX: &str = "localhost/nsapi-busybox:1.35.0";

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn helm(plane: &PrivatePlane, args: &[&str]) -> Output {
    let helm = std::env::var_os("NSAPI_HELM")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo().join("scripts/helm"));
    Command::new(helm)
        .arg("--kubeconfig")
        .arg(plane.run_dir.join("admin.kubeconfig"))
        .args(args)
        .output()
        .expect("run helm")
}

fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The values that run the chart on this node: the image built here (never pulled), the host
/// network (the API server and nsapi-sim listen on 127.0.0.1), a free HTTP port.
fn node_values(plane: &PrivatePlane, http_port: u16) -> Vec<String> {
    let mut values = vec![
        "image.repository=localhost/nsapi-token-operator".to_owned(),
        format!("image.tag={}", env!("CARGO_PKG_VERSION")),
        "image.pullPolicy=Never".to_owned(),
    ];
    values.extend(node_network_values(plane, http_port));
    values
}

/// What this node needs whatever the image: the host network (the API server and nsapi-sim
/// listen on 127.0.0.1), a free HTTP port, http to nsapi-sim.
fn node_network_values(plane: &PrivatePlane, http_port: u16) -> Vec<String> {
    let api_port = plane
        .env("NSAPI_CP_APISERVER_PORT")
        .expect("NSAPI_CP_APISERVER_PORT: is this a node?");
    [
        "hostNetwork=true".to_owned(),
        format!("httpPort={http_port}"),
        "allowInsecureHttp=true".to_owned(),
        "apiTimeout=5s".to_owned(),
        "logLevel=debug".to_owned(),
        "extraEnv[0].name=KUBERNETES_SERVICE_HOST".to_owned(),
        "extraEnv[0].value=127.0.0.1".to_owned(),
        "extraEnv[1].name=KUBERNETES_SERVICE_PORT".to_owned(),
        format!("extraEnv[1].value={api_port}"),
        // The fixture applied the CRD with kubectl: the release must not own it.
        "crds.enabled=false".to_owned(),
        // One pod (the chart's default is two, electing a leader), so that its /metrics and
        // log are the leader's; the HA test keeps the default.
        "replicaCount=1".to_owned(),
    ]
    .to_vec()
}

fn set_args(values: &[String]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| {
            let flag = if v.starts_with("extraEnv[1].value") || v.starts_with("image.tag") {
                "--set-string"
            } else {
                "--set"
            };
            [flag.to_owned(), v.clone()]
        })
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The operator's pods, newest first.
async fn operator_pods(f: &Fixture) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(f.client.clone(), OPERATOR_NS);
    let mut list = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=nsapi-token-operator"))
        .await
        .unwrap()
        .items;
    list.sort_by_key(|p| std::cmp::Reverse(p.metadata.creation_timestamp.clone()));
    list
}

fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Everything the operator's pods logged (for the leak check).
fn operator_pod_logs() -> String {
    let out = control_plane::kubectl(&[
        "logs",
        "-n",
        OPERATOR_NS,
        "-l",
        "app.kubernetes.io/name=nsapi-token-operator",
        "--tail=-1",
        "--prefix",
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The host's view of the operator process listening on `port`: its uid and whether its root
/// file system is read-only.
fn operator_process(http_port: u16) -> Option<(u32, bool)> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if !cmdline.contains(&format!("--http-addr=0.0.0.0:{http_port}")) {
            continue;
        }
        let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        let mountinfo = std::fs::read_to_string(entry.path().join("mountinfo")).ok()?;
        let root_ro = mountinfo
            .lines()
            .find(|l| l.split_whitespace().nth(4) == Some("/"))?
            .split_whitespace()
            .nth(5)?
            .split(',')
            .any(|o| o == "ro");
        return Some((uid, root_ro));
    }
    None
}

/// A consumer pod made from `examples/deployment.yaml`'s pod template: its volume mount and
/// security context, with a shell that prints a short hash of the token whenever it changes.
fn consumer(name: &str, secret: &str, how: &str) -> Pod {
    let example: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("examples/deployment.yaml")).unwrap(),
    )
    .unwrap();
    let mut spec = example["spec"]["template"]["spec"].clone();
    spec["volumes"][0]["secret"]["secretName"] = json!(secret);
    let container = &mut spec["containers"][0];
    container["image"] = json!(BUSYBOX);
    container["imagePullPolicy"] = json!("Never");
    let read = match how {
        "volume" => "cat /var/run/nsapi/access_token",
        "subPath" => "cat /token",
        _ => "printf %s \"$TOKEN\"",
    };
    container["command"] = json!(["/bin/sh", "-c"]);
    container["args"] = json!([format!(
        "last=; while true; do t=$({read} 2>/dev/null); if [ \"$t\" != \"$last\" ]; then \
         echo \"token $(printf %s \"$t\" | sha256sum | cut -c1-16)\"; last=$t; fi; sleep 0.2; done"
    )]);
    match how {
        "subPath" => {
            container["volumeMounts"] = json!([
                {"name": "nsapi-token", "mountPath": "/token", "subPath": "access_token", "readOnly": true}
            ]);
        }
        "env" => {
            container["volumeMounts"] = json!([]);
            container["env"] = json!([
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": "access_token"}}}
            ]);
        }
        _ => {}
    }
    if how == "env" {
        spec["volumes"] = json!([]);
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "consumer"}},
        "spec": spec,
    }))
    .unwrap()
}

fn short_hash(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `(timestamp, hash)` of each change a consumer pod logged.
fn consumer_changes(namespace: &str, pod: &str) -> Vec<(jiff::Timestamp, String)> {
    let out = control_plane::kubectl(&["logs", "-n", namespace, pod, "--timestamps"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (at, rest) = l.split_once(' ')?;
            let hash = rest.strip_prefix("token ")?;
            Some((at.parse().ok()?, hash.trim().to_owned()))
        })
        .collect()
}

async fn install(plane: &PrivatePlane, http_port: u16, extra: &[&str]) -> Instant {
    control_plane::kubectl(&["create", "namespace", OPERATOR_NS]);
    let mut args = vec![
        "install".to_owned(),
        RELEASE.to_owned(),
        repo()
            .join("charts/nsapi-token-operator")
            .display()
            .to_string(),
        "-n".to_owned(),
        OPERATOR_NS.to_owned(),
    ];
    args.extend(set_args(&node_values(plane, http_port)));
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    ok("helm install", helm(plane, &args));
    started
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chart_runs_the_operator_in_a_pod_and_mounted_tokens_rotate() {
    let plane = PrivatePlane::start_with_node().await;
    let f = Fixture::new("node", SimConfig::new().token_ttl(secs(30))).await;
    f.create_input_secrets().await;
    let http_port = free_port();
    let installed = install(&plane, http_port, &[]).await;
    control_plane::eventually("the operator pod to be Ready", secs(120), || async {
        operator_pods(&f)
            .await
            .first()
            .filter(|p| pod_ready(p))
            .map(|_| ())
    })
    .await;
    eprintln!(
        "measure: helm install to a Ready operator pod: {:?}",
        installed.elapsed()
    );
    let (uid, read_only) = operator_process(http_port).expect("the operator process on the host");
    assert_eq!(uid, 65532, "the operator runs as {uid}");
    assert!(read_only, "the operator's root file system is writable");

    f.create_credential("abc", |_| {}).await;
    f.wait_ready("abc", secs(60)).await;
    let pods: Api<Pod> = Api::namespaced(f.client.clone(), f.namespace());
    for (name, how) in [("volume", "volume"), ("subpath", "subPath"), ("env", "env")] {
        pods.create(&PostParams::default(), &consumer(name, "abc-token", how))
            .await
            .unwrap();
    }
    for name in ["volume", "subpath", "env"] {
        control_plane::eventually(&format!("consumer {name} to run"), secs(90), || async {
            let pod = pods.get(name).await.ok()?;
            (pod.status?.phase.as_deref() == Some("Running")).then_some(())
        })
        .await;
    }

    // Five rotations, each timed from the moment the Secret changed to the moment the pod saw it.
    let first = data(&f.token_secret("abc-token").await.unwrap(), "access_token").unwrap();
    let mut written = vec![(jiff::Timestamp::now(), first.clone())];
    let mut token = first.clone();
    for _ in 0..5 {
        token = f.wait_new_token("abc-token", &token, secs(60)).await;
        written.push((jiff::Timestamp::now(), token.clone()));
    }
    // The pod follows: it comes to see the last of the five tokens or one written after it.
    // Rotation goes on meanwhile, so the last token itself may be replaced before the
    // kubelet's next sync (a slow sync on a busy machine failed CI once waiting for it).
    let since_last = std::sync::Mutex::new(std::collections::HashSet::from([short_hash(&token)]));
    control_plane::eventually(
        "the volume consumer to see the last token or a later one",
        secs(120),
        || async {
            if let Some(now) = f.token_secret("abc-token").await
                && let Some(current) = data(&now, "access_token")
            {
                since_last.lock().unwrap().insert(short_hash(&current));
            }
            let since_last = since_last.lock().unwrap();
            consumer_changes(f.namespace(), "volume")
                .iter()
                .any(|(_, h)| since_last.contains(h))
                .then_some(())
        },
    )
    .await;
    // Rotations of 30 s tokens come 7.5 to 15 s apart (the jitter is up to half the lead),
    // about as often as the kubelet syncs a mounted Secret (every 10 s here): a token that
    // was replaced before the next sync is never seen, which harms nothing, since the file
    // always holds a valid one. Lags are measured over the tokens the pod saw.
    let seen = consumer_changes(f.namespace(), "volume");
    let mut lags: Vec<f64> = written[1..]
        .iter()
        .filter_map(|(at, token)| {
            let hash = short_hash(token);
            let (seen_at, _) = seen.iter().find(|(_, h)| *h == hash)?;
            Some(seen_at.duration_since(*at).as_secs_f64().max(0.0))
        })
        .collect();
    assert!(
        lags.len() >= 3,
        "the pod saw {} of 5 rotated tokens",
        lags.len()
    );
    lags.sort_by(f64::total_cmp);
    eprintln!(
        "measure: kubelet propagation lag over {} of 5 rotations seen: min {:.1} s, median {:.1} s, max {:.1} s",
        lags.len(),
        lags[0],
        lags[lags.len() / 2],
        lags[lags.len() - 1]
    );

    // The README's warning, shown: subPath mounts and env vars keep the first token.
    let initial = short_hash(&first);
    for pod in ["subpath", "env"] {
        let changes = consumer_changes(f.namespace(), pod);
        let hashes: Vec<&str> = changes.iter().map(|(_, h)| h.as_str()).collect();
        assert_eq!(hashes, [initial.as_str()], "{pod} saw the token change");
    }
    assert!(
        !f.sim.is_token_valid(&first),
        "the first token should have expired by now"
    );

    let logs = operator_pod_logs();
    assert!(logs.contains("token obtained"), "no operator pod logs");
    f.assert_no_secret_leaked_with(&logs).await;
    ok(
        "helm uninstall",
        helm(&plane, &["uninstall", RELEASE, "-n", OPERATOR_NS, "--wait"]),
    );
}

/// How many of these pods are ready (a terminating pod is not).
fn ready_count(pods: &[Pod]) -> usize {
    pods.iter().filter(|p| pod_ready(p)).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_of_the_default_two_replicas_never_has_none_ready_and_the_leader_hands_over() {
    let plane = PrivatePlane::start_with_node().await;
    let f = Fixture::new("node-ha", SimConfig::new().token_ttl(secs(30))).await;
    f.create_input_secrets().await;
    let http_port = free_port();
    // The chart's defaults: two replicas electing a leader, a RollingUpdate with a ready
    // replica throughout (node_values asks for one replica; not here).
    let values: Vec<String> = node_values(&plane, http_port)
        .into_iter()
        .filter(|v| !v.starts_with("replicaCount="))
        .collect();
    let chart = repo()
        .join("charts/nsapi-token-operator")
        .display()
        .to_string();
    let helm_args = |verb: &str, extra: &[&str]| {
        let mut args = vec![
            verb.to_owned(),
            RELEASE.to_owned(),
            chart.clone(),
            "-n".to_owned(),
            OPERATOR_NS.to_owned(),
        ];
        args.extend(set_args(&values));
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    control_plane::kubectl(&["create", "namespace", OPERATOR_NS]);
    let args = helm_args("install", &[]);
    ok(
        "helm install",
        helm(&plane, &args.iter().map(String::as_str).collect::<Vec<_>>()),
    );
    control_plane::eventually("two ready replicas", secs(120), || async {
        let pods = operator_pods(&f).await;
        (pods.len() == 2 && ready_count(&pods) == 2).then_some(())
    })
    .await;
    f.create_credential("abc", |_| {}).await;
    f.wait_ready("abc", secs(120)).await;
    let mut seen = Observed::default();
    seen.until_tokens(&f, "abc-token", 1, secs(10)).await;
    let before: Vec<String> = operator_pods(&f)
        .await
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();

    // An upgrade that changes the pod template replaces both pods, one at a time.
    let args = helm_args(
        "upgrade",
        &["--set-string", "podAnnotations.rollout=second"],
    );
    ok(
        "helm upgrade",
        helm(&plane, &args.iter().map(String::as_str).collect::<Vec<_>>()),
    );
    let rollout = async {
        let (mut observations, mut fewest_ready) = (0_u32, usize::MAX);
        loop {
            let pods = operator_pods(&f).await;
            let ready = ready_count(&pods);
            observations += 1;
            fewest_ready = fewest_ready.min(ready);
            assert!(
                ready >= 1,
                "no operator pod was ready during the upgrade (observation {observations}): {:?}",
                pods.iter()
                    .map(|p| (p.metadata.name.clone(), pod_ready(p)))
                    .collect::<Vec<_>>()
            );
            let fresh: Vec<&Pod> = pods
                .iter()
                .filter(|p| !before.contains(p.metadata.name.as_ref().unwrap()))
                .collect();
            if fresh.len() == 2 && fresh.iter().all(|p| pod_ready(p)) && pods.len() == 2 {
                return (observations, fewest_ready);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    let watch = seen.watch(&f, "abc-token", secs(120));
    let ((observations, fewest_ready), ()) = tokio::join!(
        async {
            tokio::time::timeout(secs(120), rollout)
                .await
                .expect("the rollout finished")
        },
        watch
    );
    eprintln!(
        "measure: upgrade of two replicas: {observations} observations of the pods, at least {fewest_ready} ready in each"
    );

    // Delete the leader's pod: the standby acts within the Lease duration.
    let leases: Api<Lease> = Api::namespaced(f.client.clone(), OPERATOR_NS);
    let holder = leases
        .get(RELEASE)
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity
        .unwrap();
    let pods = operator_pods(&f).await;
    let leader = pods
        .iter()
        .find(|p| holder.starts_with(p.metadata.name.as_ref().unwrap()))
        .expect("the leader's pod")
        .metadata
        .name
        .clone()
        .unwrap();
    Api::<Pod>::namespaced(f.client.clone(), OPERATOR_NS)
        .delete(&leader, &DeleteParams::default())
        .await
        .unwrap();
    let deleted = Instant::now();
    control_plane::eventually("another replica to take the Lease", secs(30), || async {
        let spec = leases.get(RELEASE).await.ok()?.spec?;
        let holder = spec.holder_identity?;
        (!holder.starts_with(&leader)).then_some(())
    })
    .await;
    let took = deleted.elapsed();
    eprintln!("measure: a standby led {took:?} after the leader's pod was deleted");
    assert!(took <= secs(15), "the hand-over took {took:?}");

    let rotations = seen.tokens.len() + 2;
    seen.until_tokens(&f, "abc-token", rotations, secs(90))
        .await;
    seen.assert_sound();
    eprintln!(
        "measure: rolling upgrade and leader deletion: {} tokens, {} grants, {} expired samples",
        seen.tokens.len(),
        grants(&f),
        seen.expired_samples
    );
    assert_eq!(
        grants(&f),
        seen.tokens.len() as u64,
        "a rotation was done twice"
    );
    f.assert_no_secret_leaked_with(&operator_pod_logs()).await;
    ok(
        "helm uninstall",
        helm(&plane, &["uninstall", RELEASE, "-n", OPERATOR_NS, "--wait"]),
    );
}

/// The Deployment `reporter` of consumers that read the token through an env var.
fn env_deployment(secret: &str) -> k8s_openapi::api::apps::v1::Deployment {
    let pod = consumer("unused", secret, "env");
    serde_json::from_value(json!({
        "metadata": {"name": "reporter"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "reporter"}},
            "template": {"metadata": {"labels": {"app": "reporter"}}, "spec": pod.spec},
        }
    }))
    .unwrap()
}

/// The hashes of the tokens that the Running pods of `reporter` print.
async fn reporter_hashes(f: &Fixture) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(f.client.clone(), f.namespace());
    let list = pods
        .list(&ListParams::default().labels("app=reporter"))
        .await
        .unwrap();
    list.items
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .flat_map(|p| consumer_changes(f.namespace(), p.metadata.name.as_ref().unwrap()))
        .map(|(_, hash)| hash)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_target_that_reads_an_env_var_starts_again_with_each_new_token() {
    let plane = PrivatePlane::start_with_node().await;
    // Tokens of 4 minutes rotate 1 to 2 minutes after they are issued: more than the minute
    // the operator leaves between two restarts of one workload.
    let f = Fixture::new("node-restart", SimConfig::new().token_ttl(secs(240))).await;
    f.create_input_secrets().await;
    let http_port = free_port();
    install(
        &plane,
        http_port,
        &[
            "--set",
            "rolloutRestart.enabled=true",
            "--set",
            "consumerCheck.enabled=true",
        ],
    )
    .await;
    f.create_credential("abc", |spec| {
        spec["rolloutRestartTargets"] = json!([{"kind": "Deployment", "name": "reporter"}])
    })
    .await;
    f.wait_ready("abc", secs(120)).await;
    let first = data(&f.token_secret("abc-token").await.unwrap(), "access_token").unwrap();
    // Created after the token: it starts with it, and is not restarted for it.
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(f.client.clone(), f.namespace())
        .create(&PostParams::default(), &env_deployment("abc-token"))
        .await
        .unwrap();
    // A bare pod that reads it the same way, covered by no target.
    let pods: Api<Pod> = Api::namespaced(f.client.clone(), f.namespace());
    pods.create(
        &PostParams::default(),
        &consumer("dialer", "abc-token", "env"),
    )
    .await
    .unwrap();
    let first_hash = short_hash(&first);
    control_plane::eventually("the reporter to run with the token", secs(120), || async {
        reporter_hashes(&f)
            .await
            .contains(&first_hash)
            .then_some(())
    })
    .await;

    // The rotation restarts the Deployment; its new pod starts with the new token.
    let second = f.wait_new_token("abc-token", &first, secs(180)).await;
    let rotated = Instant::now();
    let second_hash = short_hash(&second);
    control_plane::eventually("a reporter pod with the new token", secs(120), || async {
        reporter_hashes(&f)
            .await
            .contains(&second_hash)
            .then_some(())
    })
    .await;
    eprintln!(
        "measure: new token to a restarted env-var consumer running with it: {:?}",
        rotated.elapsed()
    );
    let cred = f
        .wait_condition(
            "abc",
            "RolloutRestart",
            "True",
            Some("RolloutRestarted"),
            secs(30),
        )
        .await;
    let status = cred.status.unwrap();
    assert_eq!(status.restarts.len(), 1);
    // The bare pod keeps the first token, and the credential names it.
    let condition = status
        .condition("ConsumersCannotRefresh")
        .expect("the consumer check ran");
    assert_eq!(condition.status, "True");
    assert!(
        condition.message.starts_with("1 pod(s)") && condition.message.contains("dialer"),
        "{}",
        condition.message
    );
    let dialer: Vec<String> = consumer_changes(f.namespace(), "dialer")
        .into_iter()
        .map(|(_, h)| h)
        .collect();
    assert_eq!(dialer, [first_hash]);

    let logs = operator_pod_logs();
    f.assert_no_secret_leaked_with(&logs).await;
    ok(
        "helm uninstall",
        helm(&plane, &["uninstall", RELEASE, "-n", OPERATOR_NS, "--wait"]),
    );
}

/// A release folder that scripts/test built (`NSAPI_RELEASE_DIR`, `NSAPI_PREVIOUS_RELEASE_DIR`).
fn release_dir(variable: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(std::env::var_os(variable).unwrap_or_else(|| {
        panic!("{variable}: run through scripts/test, which builds the releases")
    }))
}

/// The pinned cosign (`NSAPI_COSIGN`, set by scripts/test).
fn cosign() -> std::path::PathBuf {
    std::path::PathBuf::from(std::env::var("NSAPI_COSIGN").expect("NSAPI_COSIGN"))
}

/// The digest of a release's image index.
fn image_digest(release: &Path) -> String {
    std::fs::read_to_string(release.join("image-digest.txt"))
        .unwrap()
        .trim()
        .to_owned()
}

/// Publishes a release to the node's registry with `scripts/publish`, signed with the tests'
/// key; returns the project (`127.0.0.1:PORT/nsapi-token-operator`): the image is
/// `<project>/nsapi-token-operator`, the chart `<project>/charts/nsapi-token-operator`.
fn publish(plane: &PrivatePlane, release: &Path) -> String {
    let registry = plane.env("NSAPI_CP_REGISTRY").expect("NSAPI_CP_REGISTRY");
    let project = format!("{registry}/nsapi-token-operator");
    let key = std::env::var("NSAPI_TEST_COSIGN_KEY").expect("NSAPI_TEST_COSIGN_KEY");
    ok(
        "scripts/publish",
        run(
            &repo().join("scripts/publish"),
            &[&release.display().to_string(), &project, "--plain-http"],
            &[
                ("COSIGN_KEY", &key),
                ("COSIGN_PASSWORD", ""),
                ("NSAPI_COSIGN", &cosign().display().to_string()),
            ],
        ),
    );
    project
}

/// `helm install` (or `upgrade`) of the chart in the registry, as the README says, with only
/// this node's values added.
fn helm_from_registry(
    plane: &PrivatePlane,
    verb: &str,
    project: &str,
    http_port: u16,
    extra: &[&str],
) -> Output {
    let mut args: Vec<String> = [
        verb,
        RELEASE,
        &format!("oci://{project}/charts/nsapi-token-operator"),
        "--version",
        env!("CARGO_PKG_VERSION"),
        "--plain-http",
        "--namespace",
        OPERATOR_NS,
        "--create-namespace",
        "--set",
        "allowedApiHosts={127.0.0.1}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(set_args(&node_network_values(plane, http_port)));
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    helm(plane, &args)
}

/// The newest operator pod, once it is Ready.
async fn ready_operator_pod(f: &Fixture) -> Pod {
    control_plane::eventually("the operator pod to be Ready", secs(180), || async {
        operator_pods(f).await.into_iter().next().filter(pod_ready)
    })
    .await
}

/// A command's output, with the arguments in the failure message.
fn run(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    eprintln!("$ {} {}", program.display(), args.join(" "));
    Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()))
}

/// The release as users get it (issue 18): the artefacts of `scripts/release` (built and signed
/// by `scripts/test` with a key made for the tests: `NSAPI_RELEASE_DIR`, `NSAPI_TEST_COSIGN_KEY`)
/// published to the node's registry with `scripts/publish`, checked with the cosign commands of
/// docs/install.md (and refused under another key), then installed with the README's line from
/// `oci://` and `--version`. The chart pins `ghcr.io/...@sha256:<index>`; the node's containerd
/// resolves ghcr.io to the local registry, and the kubelet pulls the image from it (no import,
/// no `imagePullPolicy: Never`). Ends with a Ready credential and a rotated token.
#[tokio::test(flavor = "multi_thread")]
async fn the_release_installs_from_a_registry_verified_as_the_readme_says() {
    let release = release_dir("NSAPI_RELEASE_DIR");
    let cosign = cosign();
    let version = env!("CARGO_PKG_VERSION");
    let digest = image_digest(&release);
    let plane = PrivatePlane::start_with_node().await;
    let mirrored = plane
        .env("NSAPI_CP_MIRRORED_REGISTRY")
        .expect("NSAPI_CP_MIRRORED_REGISTRY");
    let project = publish(&plane, &release);
    // The Kubernetes version under test (scripts/test-k8s-range sets K8S_VERSION).
    let node = control_plane::kubectl(&[
        "get",
        "node",
        "127.0.0.1",
        "-o",
        "jsonpath={.status.nodeInfo.kubeletVersion}",
    ]);
    let kubelet = String::from_utf8_lossy(&node.stdout).into_owned();
    eprintln!("measure: the release installs on a node running kubelet {kubelet}");
    if let Ok(wanted) = std::env::var("K8S_VERSION") {
        assert_eq!(
            kubelet, wanted,
            "the node does not run the Kubernetes asked for"
        );
    }

    // Verified as docs/install.md says: the image, the chart, the SBOM attestation, the
    // checksums. A key that did not sign them is refused.
    let public = release.join("cosign.pub").display().to_string();
    let image = format!("{project}/nsapi-token-operator@{digest}");
    let chart = format!("{project}/charts/nsapi-token-operator:{version}");
    let http = ["--insecure-ignore-tlog=true", "--allow-http-registry=true"];
    let signature = release.join("SHA256SUMS.sig").display().to_string();
    let sums = release.join("SHA256SUMS").display().to_string();
    let verify = |key: &str| -> Vec<Output> {
        let mut commands: Vec<Vec<&str>> = vec![
            [&["verify", "--key", key][..], &http, &[&image]].concat(),
            [&["verify", "--key", key][..], &http, &[&chart]].concat(),
        ];
        for kind in ["spdxjson", "slsaprovenance1"] {
            commands.push(
                [
                    &["verify-attestation", "--type", kind, "--key", key][..],
                    &http,
                    &[&image],
                ]
                .concat(),
            );
        }
        commands.push(vec![
            "verify-blob",
            "--key",
            key,
            "--insecure-ignore-tlog=true",
            "--signature",
            &signature,
            &sums,
        ]);
        commands
            .iter()
            .map(|args| run(&cosign, args, &[]))
            .collect()
    };
    for (i, out) in verify(&public).into_iter().enumerate() {
        ok(&format!("cosign verification {i}"), out);
    }
    let sums = Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&release)
        .output()
        .unwrap();
    ok("sha256sum -c SHA256SUMS", sums);
    let other = std::env::temp_dir().join(control_plane::unique_name("other-cosign-key"));
    std::fs::create_dir_all(&other).unwrap();
    let generated = Command::new(&cosign)
        .arg("generate-key-pair")
        .env("COSIGN_PASSWORD", "")
        .current_dir(&other)
        .output()
        .unwrap();
    ok("cosign generate-key-pair", generated);
    let other_public = other.join("cosign.pub").display().to_string();
    for (i, out) in verify(&other_public).into_iter().enumerate() {
        assert!(
            !out.status.success(),
            "verification {i} passed under a key that signed nothing"
        );
    }
    std::fs::remove_dir_all(&other).unwrap();

    // The README's install line, from the registry, with only this node's values added.
    let f = Fixture::new("release", SimConfig::new().token_ttl(secs(30))).await;
    f.create_input_secrets().await;
    let http_port = free_port();
    ok(
        "helm install from the registry",
        helm_from_registry(&plane, "install", &project, http_port, &[]),
    );
    let pod = ready_operator_pod(&f).await;
    let spec = pod.spec.unwrap();
    let container = &spec.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some(format!("{mirrored}/nsapi-token-operator/nsapi-token-operator@{digest}").as_str()),
        "the chart does not pin the release's image"
    );
    assert_ne!(container.image_pull_policy.as_deref(), Some("Never"));
    let status = pod.status.unwrap().container_statuses.unwrap();
    let image_id = &status[0].image_id;
    assert!(
        image_id.ends_with(&digest),
        "the kubelet ran {image_id}, not the release's index {digest}"
    );

    f.create_credential("abc", |_| {}).await;
    f.wait_ready("abc", secs(60)).await;
    let first = data(&f.token_secret("abc-token").await.unwrap(), "access_token").unwrap();
    f.wait_new_token("abc-token", &first, secs(60)).await;
    f.assert_no_secret_leaked_with(&operator_pod_logs()).await;
    ok(
        "helm uninstall",
        helm(&plane, &["uninstall", RELEASE, "-n", OPERATOR_NS, "--wait"]),
    );
}

/// Every request nsapi-sim has answered, whatever the endpoint.
fn nsapi_requests(f: &Fixture) -> u64 {
    f.sim.stats().by_key.values().sum()
}

/// The upgrade contract (issue 18): the previous release (`scripts/release-previous`: the
/// operator, chart and CRD of an older commit) installed from the registry with its CRD,
/// credentials Ready, then `helm upgrade` to this release. The CRD is upgraded (it gains
/// `spec.mfa`), the stored credentials and their status still read, and the new operator adopts
/// every token in place: no token changes or expires, and NetSapiens gets no request at all
/// (none is due: the tokens live 10 minutes). A renewal afterwards costs exactly one.
#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_from_the_previous_release_keeps_every_token_and_sends_no_request() {
    let previous = release_dir("NSAPI_PREVIOUS_RELEASE_DIR");
    let current = release_dir("NSAPI_RELEASE_DIR");
    let plane = PrivatePlane::start_with_node().await;
    let f = Fixture::new("upgrade", SimConfig::new().token_ttl(secs(600))).await;
    f.create_input_secrets().await;
    // The chart installs the CRD, as a user's install does: the fixture's copy goes first.
    ok(
        "kubectl delete crd",
        control_plane::kubectl(&["delete", "crd", "nsapicredentials.nsapi.io", "--wait=true"]),
    );
    let with_crd = ["--set", "crds.enabled=true"];
    let project = publish(&plane, &previous);
    let http_port = free_port();
    ok(
        "helm install of the previous release",
        helm_from_registry(&plane, "install", &project, http_port, &with_crd),
    );
    let old_digest = image_digest(&previous);
    let pod = ready_operator_pod(&f).await;
    assert!(
        pod.spec.unwrap().containers[0]
            .image
            .as_deref()
            .is_some_and(|i| i.ends_with(&old_digest)),
        "not the previous release's image"
    );
    let crd_has_mfa = || {
        let out =
            control_plane::kubectl(&["get", "crd", "nsapicredentials.nsapi.io", "-o", "json"]);
        let crd: Value = serde_json::from_slice(&out.stdout).unwrap();
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            .get("mfa")
            .is_some()
    };
    assert!(
        !crd_has_mfa(),
        "the previous release's CRD already has spec.mfa"
    );

    let names = ["a", "b", "c"];
    for name in names {
        f.create_credential(name, |spec| {
            spec["tokenSecret"]["name"] = json!(format!("{name}-token"));
        })
        .await;
    }
    let mut tokens = Vec::new();
    for name in names {
        f.wait_ready(name, secs(90)).await;
        tokens.push(
            data(
                &f.token_secret(&format!("{name}-token")).await.unwrap(),
                "access_token",
            )
            .unwrap(),
        );
    }
    let requests = nsapi_requests(&f);

    // The upgrade: the chart's tag now names this release.
    let new_digest = image_digest(&current);
    assert_ne!(old_digest, new_digest);
    publish(&plane, &current);
    ok(
        "helm upgrade to this release",
        helm_from_registry(&plane, "upgrade", &project, http_port, &with_crd),
    );
    control_plane::eventually(
        "this release's operator pod to be Ready",
        secs(180),
        || async {
            operator_pods(&f).await.into_iter().find(|p| {
                pod_ready(p)
                    && p.spec.as_ref().is_some_and(|s| {
                        s.containers[0]
                            .image
                            .as_deref()
                            .is_some_and(|i| i.ends_with(&new_digest))
                    })
            })
        },
    )
    .await;
    assert!(crd_has_mfa(), "helm upgrade did not upgrade the CRD");
    // The new operator has looked at every credential (a pass ends in a status write); then
    // nothing more is sent.
    tokio::time::sleep(secs(20)).await;
    let listed = f
        .credentials()
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    assert_eq!(listed.len(), names.len(), "stored credentials were lost");
    for (name, token) in names.iter().zip(&tokens) {
        let cred = f.credential(name).await;
        let ready = cred
            .status
            .as_ref()
            .and_then(|s| s.condition("Ready"))
            .cloned();
        assert_eq!(ready.map(|c| c.status), Some("True".to_owned()), "{name}");
        let now = data(
            &f.token_secret(&format!("{name}-token")).await.unwrap(),
            "access_token",
        )
        .unwrap();
        assert_eq!(
            &now, token,
            "{name}: the upgrade replaced a token that was still good"
        );
        assert!(
            f.sim.is_token_valid(&now),
            "{name}: the token in place is not valid"
        );
    }
    assert_eq!(
        nsapi_requests(&f),
        requests,
        "the upgrade sent NetSapiens requests although no token was due"
    );

    // The new operator works: a renewal is one request and one new token.
    let patch = json!({"metadata": {"annotations": {
        (nsapi_token_operator::core::crd::RENEW_ANNOTATION): "2026-12-05T00:00:00Z"}}});
    f.credentials()
        .patch(
            "a",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    f.wait_new_token("a-token", &tokens[0], secs(60)).await;
    tokio::time::sleep(secs(5)).await;
    assert_eq!(nsapi_requests(&f), requests + 1, "a renewal is one request");
    f.assert_no_secret_leaked_with(&operator_pod_logs()).await;
    ok(
        "helm uninstall",
        helm(&plane, &["uninstall", RELEASE, "-n", OPERATOR_NS, "--wait"]),
    );
}
