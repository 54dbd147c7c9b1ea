//! The chart's alerts and dashboard, checked by promtool (Prometheus' own rule checker and
//! rule unit-test runner, built from its Go module by scripts/promtool): the rules and every
//! dashboard query parse, every metric they name is one the operator exports, and each alert
//! fires (and only then) on series taken from the real `/metrics` of an operator running three
//! credentials: one Ready, one refused, one whose API is down.

mod chart;
mod control_plane;
mod fixture;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fixture::Fixture;
use nsapi_sim::{Fault, Sim, SimConfig, Subscriber};
use serde_json::{Value, json};

const RELEASE: &str = "nsapi-token-operator";
const RELEASE_NAMESPACE: &str = "nsapi-system";
/// promtool's evaluation step in the unit tests.
const STEP: i64 = 60;

fn promtool() -> PathBuf {
    if let Some(path) = std::env::var_os("NSAPI_PROMTOOL").filter(|v| !v.is_empty()) {
        return PathBuf::from(path);
    }
    let out = Command::new(chart::repo().join("scripts/promtool"))
        .arg("--path")
        .output()
        .expect("run scripts/promtool");
    let path = chart::stdout_of("scripts/promtool --path", &[], out);
    PathBuf::from(path.trim())
}

/// Runs promtool; panics with its output if it fails.
fn promtool_ok(args: &[&str]) -> String {
    let out = Command::new(promtool()).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {} failed:\n{text}",
        args.join(" ")
    );
    text
}

fn workdir() -> PathBuf {
    let dir = std::env::temp_dir().join(control_plane::unique_name("nsapi-alerts"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The chart's PrometheusRule, as a Prometheus rules file (its `spec`).
fn chart_rules() -> Value {
    let objects = chart::render(
        RELEASE,
        RELEASE_NAMESPACE,
        &[
            "prometheusRule.enabled=true",
            "fullnameOverride=nsapi-token-operator",
        ],
    );
    chart::of_kind(&objects, "PrometheusRule")[0]["spec"].clone()
}

fn write_yaml(path: &Path, value: &Value) {
    std::fs::write(path, serde_yaml::to_string(value).unwrap()).unwrap();
}

/// Every PromQL expression of the dashboard, with its variables at their "All" values.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(
        chart::repo().join("charts/nsapi-token-operator/files/grafana-dashboard.json"),
    )
    .unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| {
            t["expr"]
                .as_str()
                .unwrap()
                .replace("$namespace", ".*")
                .replace("$job", ".+")
        })
        .collect()
}

/// The operator's metric names a text mentions.
fn metric_names(text: &str) -> Vec<String> {
    let re = regex::Regex::new(r"nsapi_token_operator_[a-z_]+").unwrap();
    let mut names: Vec<String> = re.find_iter(text).map(|m| m.as_str().to_owned()).collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn the_rules_and_every_dashboard_query_pass_promtool() {
    let dir = workdir();
    let rules = dir.join("rules.yaml");
    write_yaml(&rules, &chart_rules());
    let out = promtool_ok(&["check", "rules", rules.to_str().unwrap()]);
    assert!(out.contains("SUCCESS: 4 rules found"), "{out}");

    // The dashboard's queries, checked as recording rules (promtool parses each).
    let records: Vec<Value> = dashboard_queries()
        .iter()
        .enumerate()
        .map(|(i, expr)| json!({"record": format!("dashboard:query_{i}"), "expr": expr}))
        .collect();
    assert!(records.len() >= 10);
    let file = dir.join("dashboard.yaml");
    write_yaml(
        &file,
        &json!({"groups": [{"name": "dashboard", "rules": records}]}),
    );
    promtool_ok(&["check", "rules", file.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// GitHub's anchor of a Markdown heading: lower case, spaces as dashes, other punctuation gone.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_links_its_runbook_and_values_turn_alerts_off_change_them_and_add_rules() {
    // Each runbook_url is the chart's runbookUrl and a heading of docs/troubleshooting.md.
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/troubleshooting.md"),
    )
    .unwrap();
    let anchors: Vec<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|h| anchor(h.trim_start_matches('#')))
        .collect();
    let rules = chart_rules();
    let all = rules["groups"][0]["rules"].as_array().unwrap();
    assert_eq!(all.len(), 4);
    for rule in all {
        let url = rule["annotations"]["runbook_url"].as_str().unwrap();
        let (page, fragment) = url.split_once('#').unwrap();
        assert!(page.ends_with("/docs/troubleshooting.md"), "{url}");
        assert!(
            anchors.iter().any(|a| a == fragment),
            "{url}: no such heading in docs/troubleshooting.md"
        );
        assert_eq!(fragment, rule["alert"].as_str().unwrap().to_lowercase());
    }

    // One alert off, one changed, a label for all, a rule of the user's own.
    let objects = chart::render(
        RELEASE,
        RELEASE_NAMESPACE,
        &[
            "prometheusRule.enabled=true",
            "fullnameOverride=nsapi-token-operator",
            "prometheusRule.runbookUrl=https://wiki.example.com/voice/nsapi",
            "prometheusRule.alertLabels.team=voice",
            "prometheusRule.alerts.NsApiCredentialNotReady.enabled=false",
            "prometheusRule.alerts.NsApiTokenRefreshFailing.for=5m",
            "prometheusRule.alerts.NsApiTokenRefreshFailing.failures=10",
            "prometheusRule.alerts.NsApiTokenRefreshFailing.severity=critical",
            "prometheusRule.alerts.NsApiTokenRefreshFailing.labels.team=voice-oncall",
            "prometheusRule.alerts.NsApiTokenRefreshFailing.annotations.summary=Token requests keep failing",
            "prometheusRule.additionalRules[0].record=nsapi:credentials_not_ready:count",
            "prometheusRule.additionalRules[0].expr=count(nsapi_token_operator_credential_ready == 0)",
            "prometheusRule.additionalRules[1].alert=NsApiTokenRotationsStopped",
            "prometheusRule.additionalRules[1].expr=sum(rate(nsapi_token_operator_token_requests_total{result=\"ok\"}[2h])) == 0",
            "prometheusRule.additionalRules[1].for=30m",
            "prometheusRule.additionalRules[1].labels.severity=warning",
        ],
    );
    let spec = chart::of_kind(&objects, "PrometheusRule")[0]["spec"].clone();
    let names: Vec<&str> = spec["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["alert"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "NsApiTokenExpiringSoon",
            "NsApiTokenRefreshFailing",
            "NsApiTokenOperatorDown"
        ]
    );
    let failing = rule(&spec, "NsApiTokenRefreshFailing");
    assert_eq!(failing["for"], "5m");
    assert!(
        failing["expr"].as_str().unwrap().ends_with(">= 10"),
        "{failing}"
    );
    assert_eq!(
        failing["labels"],
        json!({"severity": "critical", "team": "voice-oncall"})
    );
    assert_eq!(
        failing["annotations"]["summary"],
        "Token requests keep failing"
    );
    assert_eq!(
        failing["annotations"]["runbook_url"],
        "https://wiki.example.com/voice/nsapi#nsapitokenrefreshfailing"
    );
    assert_eq!(
        rule(&spec, "NsApiTokenExpiringSoon")["labels"],
        json!({"severity": "critical", "team": "voice"})
    );
    assert_eq!(spec["groups"][1]["name"], "nsapi-token-operator-additional");
    let dir = workdir();
    let file = dir.join("custom.yaml");
    write_yaml(&file, &spec);
    let out = promtool_ok(&["check", "rules", file.to_str().unwrap()]);
    assert!(out.contains("SUCCESS: 5 rules found"), "{out}");

    // No runbook_url when runbookUrl is empty.
    let objects = chart::render(
        RELEASE,
        RELEASE_NAMESPACE,
        &["prometheusRule.enabled=true", "prometheusRule.runbookUrl="],
    );
    let spec = &chart::of_kind(&objects, "PrometheusRule")[0]["spec"];
    assert!(
        rule(spec, "NsApiTokenOperatorDown")["annotations"]
            .get("runbook_url")
            .is_none()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Prometheus' `humanizeDuration` for whole seconds of at least a minute.
fn humanize_duration(seconds: i64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    match (d, h) {
        (0, 0) => format!("{m}m {s}s"),
        (0, _) => format!("{h}h {m}m {s}s"),
        _ => format!("{d}d {h}h {m}m {s}s"),
    }
}

/// One alert's rule from the rules file.
fn rule<'a>(rules: &'a Value, alert: &str) -> &'a Value {
    rules["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["alert"] == alert)
        .unwrap()
}

/// The annotations an alert of `rule` has for a credential, its templates filled in.
fn annotations(rule: &Value, namespace: &str, name: &str, value: &str, duration: &str) -> Value {
    let mut out = serde_json::Map::new();
    for (key, template) in rule["annotations"].as_object().unwrap() {
        let text = template
            .as_str()
            .unwrap()
            .replace("{{ $labels.namespace }}", namespace)
            .replace("{{ $labels.name }}", name)
            .replace("{{ $value | humanizeDuration }}", duration)
            .replace("{{ $value }}", value);
        assert!(!text.contains("{{"), "a template left unfilled: {text}");
        out.insert(key.clone(), json!(text));
    }
    Value::Object(out)
}

/// The series of a Prometheus text exposition as promtool input series, each held at its
/// value for `minutes`; timestamps (`*_timestamp_seconds`) are made relative to `scraped`, the
/// Unix second of the scrape, which becomes promtool's time 0.
fn input_series(exposition: &str, scraped: i64, minutes: u32) -> Vec<Value> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let mut value: f64 = value.parse().unwrap();
            let name = series.split('{').next().unwrap();
            if name.ends_with("_timestamp_seconds") {
                value -= scraped as f64;
            }
            json!({"series": series, "values": format!("{value}x{minutes}")})
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_alert_fires_on_the_operators_real_metrics() {
    let mut f = Fixture::new("alerts", SimConfig::new()).await;
    f.create_input_secrets().await;
    f.create_wrong_subscriber_secret().await;
    // A second NetSapiens whose token endpoint is down.
    let down_api = Sim::start(
        SimConfig::new()
            .client(fixture::CLIENT_ID, &f.client_secret)
            .subscriber(Subscriber::new(fixture::USERNAME, &f.password)),
    )
    .await
    .unwrap();
    down_api.inject(Fault::Status {
        status: 503,
        count: 10_000,
    });
    f.start_operator();
    f.create_credential("good", |_| {}).await;
    f.create_credential("refused", |spec| {
        spec["subscriberSecretRef"] = json!({"name": "wrong-subscriber"})
    })
    .await;
    let down_url = down_api.base_url();
    f.create_credential("down", |spec| spec["apiBaseUrl"] = json!(down_url))
        .await;
    f.wait_ready("good", Duration::from_secs(60)).await;
    f.wait_condition(
        "refused",
        "Ready",
        "False",
        Some("AuthenticationFailed"),
        Duration::from_secs(60),
    )
    .await;
    control_plane::eventually(
        "three failed requests in a row for `down`",
        Duration::from_secs(120),
        || async {
            let cred = f.credential("down").await;
            (cred.status?.consecutive_failures >= 3).then_some(())
        },
    )
    .await;

    let (code, exposition) = f.operator_http("/metrics").await;
    let scraped = jiff::Timestamp::now().as_second();
    assert_eq!(code, 200);

    // Prometheus' own linter finds nothing to say about the exposition.
    let dir = workdir();
    let scrape_file = dir.join("scrape.txt");
    std::fs::write(&scrape_file, &exposition).unwrap();
    let lint = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} check metrics < {}",
            promtool().display(),
            scrape_file.display()
        ))
        .output()
        .unwrap();
    // promtool reads the Prometheus text format, where a counter's HELP names the `_total`
    // sample; OpenMetrics (what the operator serves) names the family without it. That is
    // the one finding allowed, and only for a family whose HELP is there.
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    let unexpected: Vec<&str> = findings
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| {
            let helped = l
                .strip_suffix(" no help text")
                .and_then(|name| name.strip_suffix("_total"))
                .is_some_and(|family| exposition.contains(&format!("# HELP {family} ")));
            !helped
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "promtool check metrics: {unexpected:?} (exit {:?})",
        lint.status.code()
    );
    // Requests by API node: the node that is down and the one that answers, apart.
    let host = |url: &str| {
        url::Url::parse(url)
            .map(|u| format!("{}:{}", u.host_str().unwrap(), u.port().unwrap()))
            .unwrap()
    };
    // Password grants to `node` whose result is (or, with `!`, is not) `result`.
    let by_node = |node: &str, result: &str| -> f64 {
        let prefix = format!(
            "nsapi_token_operator_api_requests_total{{host=\"{node}\",grant=\"password\",result=\""
        );
        exposition
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter_map(|rest| rest.split_once("\"} "))
            .filter(|(r, _)| match result.strip_prefix('!') {
                Some(not) => *r != not,
                None => *r == result,
            })
            .map(|(_, v)| v.parse::<f64>().unwrap())
            .sum()
    };
    assert!(
        by_node(&host(&down_api.base_url()), "!ok") >= 3.0,
        "{exposition}"
    );
    assert_eq!(by_node(&host(&down_api.base_url()), "ok"), 0.0);
    assert!(
        by_node(&host(&f.sim.base_url()), "ok") >= 1.0,
        "{exposition}"
    );
    for name in [
        "nsapi_token_operator_reconcile_duration_seconds_count",
        "nsapi_token_operator_work_queue_depth",
        "nsapi_token_operator_reconciles_in_flight",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
    ] {
        assert!(exposition.lines().any(|l| l.starts_with(name)), "no {name}");
    }

    // Every metric the rules and the dashboard use is one the operator exports.
    let rules = chart_rules();
    let used = format!(
        "{}\n{}",
        serde_json::to_string(&rules).unwrap(),
        dashboard_queries().join("\n")
    );
    let exported = metric_names(&exposition);
    for name in metric_names(&used) {
        assert!(
            exported.contains(&name),
            "{name} is not exported: {exported:?}"
        );
    }

    // What the scrape says, for the expectations.
    let ns = f.namespace().to_owned();
    let value_of = |metric: &str, name: &str| -> f64 {
        let prefix =
            format!("nsapi_token_operator_{metric}{{namespace=\"{ns}\",name=\"{name}\"}} ");
        exposition
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {metric} for {name}"))
            .parse()
            .unwrap()
    };
    let remaining = value_of("token_expiry_timestamp_seconds", "good") as i64 - scraped;
    let lead = value_of("token_refresh_lead_seconds", "good") as i64;
    let failures = value_of("credential_consecutive_failures", "down");
    assert_eq!(value_of("credential_consecutive_failures", "refused"), 1.0);
    assert!(failures >= 3.0);
    // The expiry alert becomes true at the first step after the token gets within its lead
    // of expiry (as if the operator had stopped rotating it), and fires `for` (2m) later.
    let true_from = ((remaining - lead) / STEP + 1) * STEP;
    let fires_at = true_from + 2 * STEP;
    let check_at = fires_at + STEP;
    let minutes = u32::try_from(check_at / STEP + 5).unwrap();

    let rules_file = dir.join("rules.yaml");
    write_yaml(&rules_file, &rules);
    let mut series = input_series(&exposition, scraped, minutes);
    // The operator answers scrapes for ten minutes, then no more.
    let up = format!("up{{job=\"{RELEASE}\",namespace=\"{RELEASE_NAMESPACE}\"}}");
    series.push(json!({"series": up, "values": format!("1x10 0x{}", minutes - 10)}));

    let alert = |name: &str, at: i64, alerts: Vec<Value>| json!({"alertname": name, "eval_time": format!("{}s", at), "exp_alerts": alerts});
    let credential_alert =
        |rule_name: &str, severity: &str, name: &str, value: &str, left: &str| {
            json!({
                "exp_labels": {"severity": severity, "namespace": ns, "name": name},
                "exp_annotations": annotations(rule(&rules, rule_name), &ns, name, value, left),
            })
        };
    let expiring = "NsApiTokenExpiringSoon";
    let not_ready = "NsApiCredentialNotReady";
    let failing = "NsApiTokenRefreshFailing";
    let down = "NsApiTokenOperatorDown";
    let left = humanize_duration(remaining - check_at);
    let tests = vec![
        // Nothing fires at first: not-ready and failing credentials wait out their `for`.
        alert(expiring, 0, vec![]),
        alert(not_ready, 5 * STEP, vec![]),
        alert(failing, 0, vec![]),
        // Three failures in a row fire after a minute, for `down` only (`refused` failed once
        // and backs off for minutes).
        alert(
            failing,
            2 * STEP,
            vec![credential_alert(
                failing,
                "warning",
                "down",
                &failures.to_string(),
                "",
            )],
        ),
        // Not Ready for ten minutes.
        alert(
            not_ready,
            11 * STEP,
            vec![
                credential_alert(not_ready, "warning", "down", "0", ""),
                credential_alert(not_ready, "warning", "refused", "0", ""),
            ],
        ),
        // The good token, never rotated again, fires only once it is inside its lead.
        alert(expiring, true_from - STEP, vec![]),
        alert(
            expiring,
            check_at,
            vec![credential_alert(expiring, "critical", "good", "", &left)],
        ),
        // No replica answers from minute 11: the alert fires five minutes later.
        alert(down, 10 * STEP, vec![]),
        alert(
            down,
            17 * STEP,
            vec![json!({
                "exp_labels": {"severity": "critical", "job": RELEASE, "namespace": RELEASE_NAMESPACE},
                "exp_annotations": rule(&rules, down)["annotations"],
            })],
        ),
    ];
    let test_file = dir.join("test.yaml");
    write_yaml(
        &test_file,
        &json!({
            "rule_files": [rules_file.to_str().unwrap()],
            "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": tests}],
        }),
    );
    let out = promtool_ok(&["test", "rules", test_file.to_str().unwrap()]);
    eprintln!(
        "{out}measure: {} series from /metrics; token left {remaining} s, lead {lead} s; the expiry alert fires at {fires_at} s if the token is never rotated",
        series.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
    down_api.shutdown().await;
    f.assert_no_secret_leaked().await;
}
