//! The CLI (`status`, `renew`, `check`, `inspect`) as people run it: the real binary, as a
//! subcommand and as a kubectl plugin (`kubectl nscred ...`), against the local control plane
//! and nsapi-sim, with a running operator.

mod control_plane;
mod fixture;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use fixture::{Fixture, data};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams, PostParams};
use nsapi_sim::SimConfig;
use nsapi_token_operator::core::crd::RENEW_ANNOTATION;

const BIN: &str = env!("CARGO_BIN_EXE_nsapi-token-operator");
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The operator's policy for the simulator, given with the operator's flags.
const ALLOW_SIM: [&str; 2] = ["--allowed-api-host", "127.0.0.1"];
const HTTP: &str = "--allow-insecure-http";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn finish(output: Output) -> Run {
    let run = Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    eprintln!("exit {}\n{}{}", run.code, run.stdout, run.stderr);
    run
}

/// Runs the binary with the admin kubeconfig in `KUBECONFIG`, as a person would.
fn cli(args: &[&str]) -> Run {
    eprintln!("$ nsapi-token-operator {}", args.join(" "));
    finish(
        Command::new(BIN)
            .args(args)
            .env("KUBECONFIG", control_plane::admin_kubeconfig())
            .output()
            .unwrap(),
    )
}

/// Sets up a two-credential world: `abc` Ready, `bad` refused (wrong password).
async fn world(prefix: &str) -> Fixture {
    let mut f = Fixture::new(prefix, SimConfig::new()).await;
    f.create_input_secrets().await;
    f.create_wrong_subscriber_secret().await;
    f.start_operator();
    f.create_credential("abc", |_| {}).await;
    f.create_credential("bad", |spec| {
        spec["subscriberSecretRef"] = serde_json::json!({"name": "wrong-subscriber"})
    })
    .await;
    f.wait_ready("abc", READY_TIMEOUT).await;
    f.wait_condition(
        "bad",
        "Ready",
        "False",
        Some("AuthenticationFailed"),
        READY_TIMEOUT,
    )
    .await;
    f
}

#[tokio::test(flavor = "multi_thread")]
async fn status_renew_check_and_inspect_tell_the_truth() {
    let f = world("cli").await;
    let ns = f.namespace().to_owned();

    // status: a table; exit 1 because one is not Ready.
    let run = cli(&["status", "-n", &ns]);
    assert_eq!(run.code, 1);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("NEXT REFRESH"),
        "{lines:?}"
    );
    let abc = lines
        .iter()
        .find(|l| l.starts_with("abc "))
        .expect("a row for abc");
    assert!(
        abc.contains("True") && abc.contains("in ") && abc.contains("password"),
        "{abc}"
    );
    let bad = lines
        .iter()
        .find(|l| l.starts_with("bad "))
        .expect("a row for bad");
    assert!(
        bad.contains("False") && bad.contains("AuthenticationFailed"),
        "{bad}"
    );
    // One Ready credential: exit 0. All namespaces: a NAMESPACE column.
    assert_eq!(cli(&["status", "abc", "-n", &ns]).code, 0);
    let run = cli(&["status", "-A"]);
    assert!(run.stdout.starts_with("NAMESPACE"));
    assert!(run.stdout.lines().any(|l| l.starts_with(&ns)));

    // check: the good inputs pass, and the operator would keep the fresh token.
    let run = cli(&[
        "check",
        "abc",
        "-n",
        &ns,
        ALLOW_SIM[0],
        ALLOW_SIM[1],
        HTTP,
        "--yes",
    ]);
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("OK: a Bearer token"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("The operator would keep the token in place"),
        "{}",
        run.stdout
    );
    // Without the flag an http:// URL is refused, as the operator would.
    let run = cli(&[
        "check",
        "abc",
        "-n",
        &ns,
        ALLOW_SIM[0],
        ALLOW_SIM[1],
        "--yes",
    ]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("InvalidSpec"), "{}", run.stderr);
    // The refused login fails, saying why, and names no secret.
    let run = cli(&[
        "check",
        "bad",
        "-n",
        &ns,
        ALLOW_SIM[0],
        ALLOW_SIM[1],
        HTTP,
        "-y",
    ]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("FAIL: the API refused"),
        "{}",
        run.stderr
    );
    f.assert_no_secret_in(&format!("{}{}", run.stdout, run.stderr), "check output");
    // A credential that does not exist is an error (exit 2).
    assert_eq!(cli(&["check", "nope", "-n", &ns]).code, 2);

    // inspect: the server's view of the token in place.
    let run = cli(&[
        "inspect",
        "abc",
        "-n",
        &ns,
        ALLOW_SIM[0],
        ALLOW_SIM[1],
        HTTP,
    ]);
    assert_eq!(run.code, 0);
    assert!(
        run.stdout.contains("domain") && run.stdout.contains("abc-company"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(fixture::CLIENT_ID), "{}", run.stdout);
    let token = data(&f.token_secret("abc-token").await.unwrap(), "access_token").unwrap();
    f.assert_no_secret_in(&run.stdout, "inspect output");
    // After the token is revoked, inspect says the API refuses it.
    f.sim.revoke_token(&token);
    let run = cli(&[
        "inspect",
        "abc",
        "-n",
        &ns,
        ALLOW_SIM[0],
        ALLOW_SIM[1],
        HTTP,
    ]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("refused"), "{}", run.stderr);

    // renew: one new token (the revoked token's refresh token is refused too, so a password
    // grant stands in).
    let tokens = || {
        let s = f.sim.stats();
        s.password_grants_ok + s.refresh_grants_ok
    };
    let before = tokens();
    let run = cli(&["renew", "abc", "-n", &ns]);
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains(RENEW_ANNOTATION), "{}", run.stdout);
    let new = f
        .wait_new_token("abc-token", &token, Duration::from_secs(30))
        .await;
    assert_ne!(new, token);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(tokens(), before + 1);

    // renew --all -l: only the credentials selected.
    let patch = serde_json::json!({"metadata": {"labels": {"team": "voice"}}});
    f.credentials()
        .patch("abc", &Default::default(), &kube::api::Patch::Merge(&patch))
        .await
        .unwrap();
    let run = cli(&["renew", "--all", "-l", "team=voice", "-n", &ns]);
    assert_eq!(run.code, 0);
    assert!(
        run.stdout.contains("/abc:") && !run.stdout.contains("/bad:"),
        "{}",
        run.stdout
    );
    f.wait_new_token("abc-token", &new, Duration::from_secs(30))
        .await;
    // Neither a name nor --all: a usage error.
    assert_ne!(cli(&["renew", "-n", &ns]).code, 0);
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_runs_it_as_a_plugin_with_kubectls_kubeconfig_flags() {
    let f = world("plugin").await;
    let ns = f.namespace().to_owned();
    // Installed as kubectl-nscred on the PATH.
    let dir = tempdir();
    std::os::unix::fs::symlink(BIN, dir.join("kubectl-nscred")).unwrap();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kubectl = control_plane::kubectl_path();
    let plugin = |args: &[&str], kubeconfig_env: Option<&Path>| {
        eprintln!("$ kubectl nscred {}", args.join(" "));
        let mut command = Command::new(&kubectl);
        command.arg("nscred").args(args).env("PATH", &path);
        match kubeconfig_env {
            Some(k) => command.env("KUBECONFIG", k),
            None => command.env_remove("KUBECONFIG"),
        };
        finish(command.output().unwrap())
    };
    let admin = control_plane::admin_kubeconfig();
    let run = plugin(&["status", "abc", "-n", &ns], Some(&admin));
    assert_eq!(run.code, 0);
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("abc ") && l.contains("True"))
    );
    // --kubeconfig and --context, as kubectl takes them, with no KUBECONFIG set.
    let context =
        String::from_utf8(control_plane::kubectl(&["config", "current-context"]).stdout).unwrap();
    let kubeconfig = admin.display().to_string();
    let run = plugin(
        &[
            "status",
            "-n",
            &ns,
            "--kubeconfig",
            &kubeconfig,
            "--context",
            context.trim(),
        ],
        None,
    );
    assert_eq!(run.code, 1, "bad is not Ready");
    // A context that does not exist is an error, not a fallback to another cluster.
    let run = plugin(
        &[
            "status",
            "-n",
            &ns,
            "--kubeconfig",
            &kubeconfig,
            "--context",
            "nope",
        ],
        None,
    );
    assert_eq!(run.code, 2);
    // Without -n, the context's namespace.
    let own = dir.join("kubeconfig");
    std::fs::copy(&admin, &own).unwrap();
    let own_path = own.display().to_string();
    let status = Command::new(&kubectl)
        .args(["config", "set-context", "--current", "--namespace", &ns])
        .args(["--kubeconfig", &own_path])
        .status()
        .unwrap();
    assert!(status.success());
    let run = plugin(&["status"], Some(&own));
    assert!(
        run.stdout.lines().any(|l| l.starts_with("abc ")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.lines().any(|l| l.starts_with("bad ")),
        "{}",
        run.stdout
    );
    // version names the client, and the operator of --operator-namespace; completion is for
    // the name it was run as.
    let run = plugin(&["version", "--client"], Some(&admin));
    assert_eq!(run.code, 0);
    assert!(
        run.stdout
            .starts_with(&format!("Client: {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{}",
        run.stdout
    );
    let run = plugin(&["version", "--operator-namespace", &ns], Some(&admin));
    assert_eq!(run.code, 0);
    assert!(
        run.stdout.contains("Operator: none found"),
        "{}",
        run.stdout
    );
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "nsapi-token-operator", "labels": {
            "app.kubernetes.io/name": "nsapi-token-operator",
            "app.kubernetes.io/version": "9.8.7"}},
        "spec": {"replicas": 2,
            "selector": {"matchLabels": {"app": "op"}},
            "template": {"metadata": {"labels": {"app": "op"}},
                "spec": {"containers": [{"name": "operator", "image": "example.com/op@sha256:abc"}]}}}
    }))
    .unwrap();
    Api::<Deployment>::namespaced(f.client.clone(), &ns)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let run = plugin(&["version", "--operator-namespace", &ns], Some(&admin));
    assert_eq!(run.code, 0);
    assert!(
        run.stdout.contains(&format!(
            "Operator: 9.8.7, Deployment {ns}/nsapi-token-operator, image example.com/op@sha256:abc, 0/2 ready"
        )),
        "{}",
        run.stdout
    );
    let run = plugin(&["completion", "bash"], None);
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("kubectl-nscred"), "{}", run.stdout);
    assert!(run.stdout.contains("renew"), "no subcommands in the script");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs the binary on a terminal (util-linux `script` gives it one) and types `answer`; stdout
/// and stderr come back together in `stdout`.
fn cli_on_terminal(args: &[&str], answer: &str) -> Run {
    eprintln!(
        "$ nsapi-token-operator {} (on a terminal, typing {answer:?})",
        args.join(" ")
    );
    let quote = |a: &str| format!("'{}'", a.replace('\'', "'\\''"));
    let line: Vec<String> = std::iter::once(BIN)
        .chain(args.iter().copied())
        .map(quote)
        .collect();
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &line.join(" "), "/dev/null"])
        .env("KUBECONFIG", control_plane::admin_kubeconfig())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("util-linux script");
    use std::io::Write;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(answer.as_bytes()).unwrap();
    drop(stdin);
    finish(child.wait_with_output().unwrap())
}

/// Every request the simulator has had (token requests and `oauth2/read`).
fn requests(f: &Fixture) -> u64 {
    let s = f.sim.stats();
    s.token_requests + s.read_requests
}

/// An operator Deployment as the chart makes it (label and container name), with these
/// arguments; no pod of it needs to run.
async fn put_operator_deployment(client: &kube::Client, namespace: &str, args: &[&str]) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let labels = serde_json::json!({"app.kubernetes.io/name": "nsapi-token-operator"});
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "nsapi-token-operator", "labels": labels},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{
                    "name": "operator",
                    "image": "registry.invalid/nsapi-token-operator:test",
                    "args": args,
                }]},
            },
        },
    }))
    .unwrap();
    match api.get_opt("nsapi-token-operator").await.unwrap() {
        None => {
            api.create(&PostParams::default(), &deployment)
                .await
                .unwrap();
        }
        Some(_) => {
            let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [
                {"name": "operator", "args": args}
            ]}}}});
            api.patch(
                "nsapi-token-operator",
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
            .unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn check_and_inspect_obey_the_operators_policy_and_check_asks_before_a_login() {
    let mut f = world("cli-policy").await;
    // From here on the simulator hears only the CLI.
    f.stop_operator();
    let ns = f.namespace().to_owned();
    let operator_ns = control_plane::TestNamespace::create(&f.client, "cli-operator").await;
    let op_ns = operator_ns.name().to_owned();
    let mut outputs = String::new();
    let mut run_cli = |args: &[&str]| {
        let run = cli(args);
        outputs.push_str(&run.stdout);
        outputs.push_str(&run.stderr);
        run
    };

    // Flags: a host outside the allow-list is refused before anything is sent.
    let before = requests(&f);
    let strict = ["--allowed-api-host", "portal.example.com", HTTP];
    for verb in [&["check", "--yes"][..], &["inspect"]] {
        let run = run_cli(&[verb, &["abc", "-n", &ns], &strict].concat());
        assert_eq!(run.code, 1, "{verb:?}");
        assert!(
            run.stderr.contains("ApiHostNotAllowed") && run.stderr.contains("127.0.0.1"),
            "{verb:?}: {}",
            run.stderr
        );
        assert!(run.stderr.contains("nothing was sent"), "{}", run.stderr);
    }
    assert_eq!(requests(&f), before, "a refused host got a request");
    // --allow-insecure-http alone would leave the allow-list open: a usage error.
    let run = run_cli(&["check", "abc", "-n", &ns, HTTP, "--yes"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--allowed-api-host"), "{}", run.stderr);

    // Neither flags nor an operator Deployment: refused, saying which flag to pass.
    let run = run_cli(&[
        "check",
        "abc",
        "-n",
        &ns,
        "--operator-namespace",
        &op_ns,
        "--yes",
    ]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("no operator Deployment") && run.stderr.contains("--allowed-api-host"),
        "{}",
        run.stderr
    );
    let run = run_cli(&["inspect", "abc", "-n", &ns, "--operator-namespace", &op_ns]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--allowed-api-host"), "{}", run.stderr);
    assert_eq!(requests(&f), before);

    // The installed operator's allow-list, read from its Deployment's arguments.
    put_operator_deployment(
        &f.client,
        &op_ns,
        &["run", "--allowed-api-host=portal.example.com", HTTP],
    )
    .await;
    let from_operator = ["-n", &ns, "--operator-namespace", &op_ns];
    let run = run_cli(&[&["check", "abc", "--yes"][..], &from_operator].concat());
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("ApiHostNotAllowed")
            && run
                .stderr
                .contains(&format!("Deployment {op_ns}/nsapi-token-operator")),
        "{}",
        run.stderr
    );
    // Its http rule too: allowed host, but the operator refuses http.
    put_operator_deployment(
        &f.client,
        &op_ns,
        &["run", "--allowed-api-host", "127.0.0.1"],
    )
    .await;
    let run = run_cli(&[&["check", "abc", "--yes"][..], &from_operator].concat());
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("InvalidSpec"), "{}", run.stderr);
    assert_eq!(requests(&f), before, "a refused spec got a request");

    // Allowed: without --yes and without a terminal, check warns and refuses to log in.
    put_operator_deployment(
        &f.client,
        &op_ns,
        &["run", "--allowed-api-host", "127.0.0.1", HTTP],
    )
    .await;
    let run = run_cli(&[&["check", "abc"][..], &from_operator].concat());
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("WARNING") && run.stderr.contains("one session"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("pass --yes"), "{}", run.stderr);
    assert_eq!(requests(&f), before, "an unconfirmed check sent a request");
    // With --yes: one login, under the operator's policy.
    let grants = f.sim.stats().password_grants;
    let run = run_cli(&[&["check", "abc", "--yes"][..], &from_operator].concat());
    assert_eq!(run.code, 0);
    assert!(
        run.stdout.contains(&format!(
            "Policy of Deployment {op_ns}/nsapi-token-operator"
        )) && run.stdout.contains("OK: a Bearer token"),
        "{}",
        run.stdout
    );
    assert_eq!(f.sim.stats().password_grants, grants + 1);
    let run = run_cli(&[&["inspect", "abc"][..], &from_operator].concat());
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("abc-company"), "{}", run.stdout);

    // On a terminal, check asks: anything but yes sends nothing; yes logs in.
    let before = requests(&f);
    let grants = f.sim.stats().password_grants;
    let check_abc = [&["check", "abc"][..], &from_operator].concat();
    let run = cli_on_terminal(&check_abc, "n\n");
    outputs.push_str(&run.stdout);
    assert_eq!(run.code, 2);
    assert!(
        run.stdout.contains("Log in now? [y/N]") && run.stdout.contains("nothing was sent"),
        "{}",
        run.stdout
    );
    assert_eq!(requests(&f), before, "a check answered no sent a request");
    let run = cli_on_terminal(&check_abc, "y\n");
    outputs.push_str(&run.stdout);
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("OK: a Bearer token"), "{}", run.stdout);
    assert_eq!(f.sim.stats().password_grants, grants + 1);

    f.assert_no_secret_in(&outputs, "the CLI's output");
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn inspect_sends_the_token_only_to_the_spec_and_only_from_a_secret_it_controls() {
    let mut f = Fixture::new("cli-inspect", SimConfig::new()).await;
    f.create_input_secrets().await;
    f.start_operator();
    f.create_credential("abc", |_| {}).await;
    f.wait_ready("abc", READY_TIMEOUT).await;
    // No operator from here on: it would restore the Secret edited below.
    f.stop_operator();
    let ns = f.namespace().to_owned();
    let abc_token = f.token_secret("abc-token").await.unwrap();
    let reads = || f.sim.stats().read_requests;
    let mut outputs = String::new();

    // A Secret the credential does not control: refused, its token sent nowhere.
    let mut copy = abc_token.clone();
    copy.metadata = kube::api::ObjectMeta {
        name: Some("someone-elses-token".into()),
        ..Default::default()
    };
    f.secrets()
        .create(&PostParams::default(), &copy)
        .await
        .unwrap();
    f.create_credential("foreign", |spec| {
        spec["tokenSecret"] = serde_json::json!({"name": "someone-elses-token"})
    })
    .await;
    let before = reads();
    let run = cli(&[
        "inspect",
        "foreign",
        "-n",
        &ns,
        ALLOW_SIM[0],
        ALLOW_SIM[1],
        HTTP,
    ]);
    outputs.push_str(&(run.stdout.clone() + &run.stderr));
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("is not controlled by NsApiCredential foreign"),
        "{}",
        run.stderr
    );
    assert_eq!(reads(), before, "a token from a foreign Secret was sent");

    // The Secret's api_base_url edited to elsewhere: the token still goes to the spec's URL.
    let patch = serde_json::json!({"stringData": {"api_base_url": "http://127.0.0.1:9/ns-api/"}});
    f.secrets()
        .patch("abc-token", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let run = cli(&[
        "inspect",
        "abc",
        "-n",
        &ns,
        ALLOW_SIM[0],
        ALLOW_SIM[1],
        HTTP,
    ]);
    outputs.push_str(&(run.stdout.clone() + &run.stderr));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains(&format!("The API at {} knows the token", f.sim.base_url())),
        "{}",
        run.stdout
    );
    assert_eq!(reads(), before + 1);

    f.assert_no_secret_in(&outputs, "the CLI's output");
    f.assert_no_secret_leaked().await;
}

/// `check` keys its prediction of a backoff as the operator keys the backoff: with fallback
/// nodes, that is the attempt fingerprint, not the token's (before, `check` said "obtain a new
/// token now" for a credential the operator was backing off).
#[tokio::test(flavor = "multi_thread")]
async fn check_predicts_the_operators_backoff_of_a_credential_with_fallback_nodes() {
    let mut f = Fixture::new("cli-backoff", SimConfig::new().nodes(2)).await;
    f.create_input_secrets().await;
    // The portal refuses the login the operator tries first: a long backoff, same inputs.
    f.sim
        .set_password(fixture::USERNAME, "not-the-secrets-password");
    f.start_operator();
    let fallback = f.sim.node(1).base_url();
    f.create_credential("abc", |spec| {
        spec["fallbackApiBaseUrls"] = serde_json::json!([fallback])
    })
    .await;
    f.wait_condition(
        "abc",
        "Ready",
        "False",
        Some("AuthenticationFailed"),
        READY_TIMEOUT,
    )
    .await;
    f.stop_operator();
    // The account is fixed at the portal, not in the cluster: the operator keeps backing off
    // until its retry time (or a renew), and check says so.
    f.sim.set_password(fixture::USERNAME, &f.password.clone());
    let ns = f.namespace().to_owned();
    let run = cli(&[
        "check",
        "abc",
        "-n",
        &ns,
        ALLOW_SIM[0],
        ALLOW_SIM[1],
        HTTP,
        "--yes",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("OK: a Bearer token")
            && run.stdout.contains("(backing off after a failure)"),
        "{}",
        run.stdout
    );
    f.assert_no_secret_in(&(run.stdout + &run.stderr), "check output");
    f.assert_no_secret_leaked().await;
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(control_plane::unique_name("nscred-plugin"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn check_of_an_mfa_user_stops_at_the_password_and_sends_no_passcode() {
    let password = format!("pw-{:016x}", rand::random::<u64>());
    let seed = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
    let f = Fixture::new(
        "cli-mfa",
        SimConfig::new().subscriber(
            nsapi_sim::Subscriber::new("mfa@abc-company", &password).with_totp_seed(seed),
        ),
    )
    .await;
    f.also_secret(&password);
    f.also_secret(seed);
    f.create_client_secret().await;
    f.put_secret(
        "mfa-user",
        &[("username", "mfa@abc-company"), ("password", &password)],
    )
    .await;
    f.put_secret("mfa-user-totp", &[("seed", seed)]).await;
    f.create_credential("with-seed", |spec| {
        spec["subscriberSecretRef"]["name"] = serde_json::json!("mfa-user");
        spec["mfa"] =
            serde_json::json!({"totpSecretRef": {"name": "mfa-user-totp", "key": "seed"}});
    })
    .await;
    f.create_credential("without", |spec| {
        spec["tokenSecret"]["name"] = serde_json::json!("without-token");
        spec["subscriberSecretRef"]["name"] = serde_json::json!("mfa-user");
    })
    .await;
    let ns = f.namespace().to_owned();
    let check = |name: &str| {
        cli(&[
            "check",
            name,
            "-n",
            &ns,
            ALLOW_SIM[0],
            ALLOW_SIM[1],
            HTTP,
            "--yes",
        ])
    };
    let run = check("with-seed");
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("MFA enforced"), "{}", run.stdout);
    let run_without = check("without");
    assert_eq!(run_without.code, 1);
    assert!(
        run_without.stderr.contains("spec.mfa.totpSecretRef"),
        "{}",
        run_without.stderr
    );
    let stats = f.sim.stats();
    assert_eq!(stats.mfa_attempts, 0, "check sent a passcode: {stats:?}");
    assert_eq!(stats.password_grants, 2, "{stats:?}");
    for run in [&run, &run_without] {
        f.assert_no_secret_in(&format!("{}{}", run.stdout, run.stderr), "check output");
    }
}

/// A loopback HTTP proxy that answers CONNECT and records each target (`host:port`).
async fn connect_proxy() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    if client.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let Some(target) = head
                    .strip_prefix("CONNECT ")
                    .and_then(|rest| rest.split_whitespace().next())
                    .map(str::to_owned)
                else {
                    let _ = client.write_all(b"HTTP/1.1 405 Only CONNECT\r\n\r\n").await;
                    return;
                };
                record.lock().unwrap().push(target.clone());
                let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                if client
                    .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                    .await
                    .is_ok()
                {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    (url, seen)
}

/// Runs the binary with `env` set (and KUBECONFIG unless `env` names it).
fn cli_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    eprintln!("$ {env:?} nsapi-token-operator {}", args.join(" "));
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env("KUBECONFIG", control_plane::admin_kubeconfig())
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    for (name, value) in env {
        command.env(name, value);
    }
    finish(command.output().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_connects_as_kubectl_does_through_a_proxy_with_a_token_and_as_someone_else() {
    let f = world("connect").await;
    let ns = f.namespace().to_owned();
    let shows_abc_ready = |run: &Run| {
        run.code == 1
            && run
                .stdout
                .lines()
                .any(|l| l.starts_with("abc ") && l.contains("True"))
    };

    // The kubeconfig's proxy-url: every connection goes through the proxy.
    let (proxy, seen) = connect_proxy().await;
    let dir = tempdir();
    let own = dir.join("kubeconfig");
    std::fs::copy(control_plane::admin_kubeconfig(), &own).unwrap();
    let own_path = own.display().to_string();
    let cluster = String::from_utf8(
        control_plane::kubectl(&[
            "config",
            "view",
            "--minify",
            "-o",
            "jsonpath={.clusters[0].name}",
        ])
        .stdout,
    )
    .unwrap();
    let server = String::from_utf8(
        control_plane::kubectl(&[
            "config",
            "view",
            "--minify",
            "-o",
            "jsonpath={.clusters[0].cluster.server}",
        ])
        .stdout,
    )
    .unwrap();
    let set = Command::new(control_plane::kubectl_path())
        .args([
            "config",
            "set-cluster",
            cluster.trim(),
            "--proxy-url",
            &proxy,
        ])
        .args(["--kubeconfig", &own_path])
        .output()
        .unwrap();
    assert!(set.status.success(), "{set:?}");
    let run = cli_env(&["status", "-n", &ns], &[("KUBECONFIG", &own_path)]);
    assert!(shows_abc_ready(&run));
    let api = server.trim().trim_start_matches("https://").to_owned();
    let through = seen.lock().unwrap().clone();
    assert!(
        !through.is_empty() && through.iter().all(|t| *t == api),
        "the proxy saw {through:?}, not {api}"
    );

    // HTTPS_PROXY: like kubectl (Go's ProxyFromEnvironment), never for a loopback API server,
    // so a dead proxy changes nothing here.
    let run = cli_env(
        &["status", "-n", &ns],
        &[("HTTPS_PROXY", "http://127.0.0.1:9")],
    );
    assert!(shows_abc_ready(&run));

    // --token: a ServiceAccount with no rights is refused, by its name.
    let accounts =
        Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(f.client.clone(), &ns);
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "nobody"}})).unwrap(),
        )
        .await
        .unwrap();
    let token = accounts
        .create_token_request(
            "nobody",
            &PostParams::default(),
            &k8s_openapi::api::authentication::v1::TokenRequest::default(),
        )
        .await
        .unwrap()
        .status
        .and_then(|s| s.token)
        .expect("a token from the TokenRequest API");
    let who = format!("system:serviceaccount:{ns}:nobody");
    let run = cli_env(&["status", "-n", &ns, "--token", &token], &[]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains(&who), "{}", run.stderr);
    assert!(!run.stderr.contains(&token) && !run.stdout.contains(&token));
    // --server with --token and no kubeconfig at all: the server is the one asked.
    let run = cli_env(
        &[
            "status",
            "-n",
            &ns,
            "--server",
            "https://127.0.0.1:9",
            "--token",
            &token,
        ],
        &[("KUBECONFIG", "/nonexistent")],
    );
    assert_eq!(run.code, 2);
    assert!(!run.stderr.contains(&token));

    // --as and --as-group: the admin acts as someone else.
    let run = cli_env(&["status", "-n", &ns, "--as", &who], &[]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains(&who), "{}", run.stderr);
    let run = cli_env(
        &[
            "status",
            "-n",
            &ns,
            "--as",
            "jane",
            "--as-group",
            "system:masters",
        ],
        &[],
    );
    assert!(shows_abc_ready(&run));

    // --request-timeout: a duration, or a clear error.
    let run = cli_env(&["status", "-n", &ns, "--request-timeout", "30s"], &[]);
    assert!(shows_abc_ready(&run));
    let run = cli_env(&["status", "-n", &ns, "--request-timeout", "soon"], &[]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--request-timeout"), "{}", run.stderr);
}
