//! Several nodes over one store, for failover tests: each its own port and counters, tokens
//! valid on all of them, and per-node down/up, status and hang that leave the others alone.

mod common;

use std::time::Duration;

use common::*;
use nsapi_sim::{Fault, NodeState, Sim, SimConfig};
use serde_json::{Value, json};

async fn grant_on(base_url: &str) -> reqwest::Response {
    http()
        .post(format!("{base_url}oauth2/token/"))
        .form(&password_fields(USER, PASSWORD))
        .send()
        .await
        .expect("request sent")
}

async fn refresh_on(base_url: &str, refresh_token: &str) -> reqwest::Response {
    http()
        .get(format!("{base_url}oauth2/token/"))
        .query(&refresh_fields(refresh_token))
        .send()
        .await
        .expect("request sent")
}

async fn refused(addr: std::net::SocketAddr) -> bool {
    tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect answers within 5 s")
        .is_err()
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_issued_on_one_node_are_valid_on_the_other() {
    let sim = start_with(config().nodes(2)).await;
    let (n0, n1) = (sim.node(0), sim.node(1));
    assert_eq!(sim.nodes().len(), 2);
    assert_ne!(n0.addr(), n1.addr());
    assert_eq!(n0.base_url(), sim.base_url());
    assert_eq!(n1.base_url(), format!("http://{}/ns-api/", n1.addr()));
    assert_eq!(n1.admin_url(), format!("http://{}/_sim/", n1.addr()));
    assert_eq!((n0.index(), n1.index()), (0, 1));

    let res = grant_on(&n0.base_url()).await;
    assert_eq!(res.status(), 200);
    let t: Value = res.json().await.unwrap();
    let res = refresh_on(&n1.base_url(), str_field(&t, "refresh_token")).await;
    assert_eq!(res.status(), 200);
    let t2: Value = res.json().await.unwrap();
    let res = http()
        .get(format!("{}oauth2/read?format=json", n1.base_url()))
        .bearer_auth(str_field(&t, "access_token"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(sim.is_token_valid(str_field(&t2, "access_token")));

    let (s0, s1) = (sim.node_stats(0), n1.stats());
    assert_eq!((s0.password_grants_ok, s0.refresh_grants_ok), (1, 0));
    assert_eq!((s1.password_grants_ok, s1.refresh_grants_ok), (0, 1));
    assert_eq!(s1.read_requests, 1);
    assert_eq!(s0.count("token/password/ok"), 1);
    assert_eq!(s1.count("token/refresh_token/ok"), 1);
    let all = sim.stats();
    assert_eq!(all.token_requests, 2);
    assert_eq!(all.by_node.len(), 2);
    assert_eq!(all.by_node[1].refresh_grants_ok, 1);

    // The admin API of either node shows the same state, with by_node.
    let stats: Value = http()
        .get(format!("{}stats", n1.admin_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["token_requests"], 2);
    assert_eq!(stats["by_node"][0]["password_grants_ok"], 1);
    assert_eq!(stats["by_node"][1]["by_key"]["read/-/ok"], 1);
    sim.reset_stats();
    assert_eq!(sim.node_stats(1).token_requests, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_added_at_run_time_shares_clients_settings_and_tokens() {
    let sim = start().await;
    let n1 = sim.add_node().await.unwrap();
    assert_eq!(n1.index(), 1);
    assert_eq!(n1.addr().ip(), sim.addr().ip());
    sim.set_token_ttl(Duration::from_secs(42));
    sim.add_client("c2", "s2");
    let res = http()
        .post(format!("{}oauth2/token/", n1.base_url()))
        .form(&[
            ("grant_type", "password"),
            ("client_id", "c2"),
            ("client_secret", "s2"),
            ("username", USER),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let t: Value = res.json().await.unwrap();
    assert_eq!(t["expires_in"], 42);
    assert_eq!(
        read(&sim, str_field(&t, "access_token")).await.status(),
        200
    );
    assert_eq!(sim.node_stats(1).password_grants_ok, 1);
    assert_eq!(sim.node_stats(0).read_requests, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn down_refuses_connects_cuts_open_connections_and_up_listens_on_the_same_port() {
    let sim = start_with(config().nodes(2)).await;
    let n1 = sim.node(1);
    let addr = n1.addr();
    // A client that keeps its connection to node 1 open.
    let pooled = http();
    let res = pooled
        .post(format!("{}oauth2/token/", n1.base_url()))
        .form(&password_fields(USER, PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.bytes().await.unwrap();

    n1.down().await;
    assert_eq!(n1.state(), NodeState::Down);
    assert!(refused(addr).await, "node 1 still accepts connections");
    let err = pooled
        .post(format!("{}oauth2/token/", n1.base_url()))
        .form(&password_fields(USER, PASSWORD))
        .send()
        .await
        .expect_err("node 1 is down");
    assert!(err.is_connect() || err.is_request(), "{err}");
    // The other node is untouched.
    assert_eq!(password_grant(&sim).await.status(), 200);
    assert_eq!(sim.node(0).state(), NodeState::Up);

    n1.up().await.unwrap();
    assert_eq!(n1.state(), NodeState::Up);
    assert_eq!(n1.addr(), addr);
    assert!(!refused(addr).await);
    assert_eq!(grant_on(&n1.base_url()).await.status(), 200);
    // Down and up again, twice, to show the port is reusable each time.
    for _ in 0..2 {
        n1.down().await;
        assert!(refused(addr).await);
        n1.up().await.unwrap();
        assert_eq!(grant_on(&n1.base_url()).await.status(), 200);
    }
    assert_eq!(sim.node_stats(1).password_grants_ok, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn status_answers_every_request_on_that_node_but_the_admin_api() {
    let sim = start_with(config().nodes(2)).await;
    let (n0, n1) = (sim.node(0), sim.node(1));
    n0.status(503).await.unwrap();
    assert_eq!(n0.state(), NodeState::Status { status: 503 });
    let res = grant_on(&n0.base_url()).await;
    assert_eq!(res.status(), 503);
    assert!(content_type(&res).starts_with("text/html"));
    for path in ["v2/tokens", "oauth2/read?format=json", "anything"] {
        let res = http()
            .get(format!("{}{path}", n0.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 503, "{path}");
    }
    let health = http()
        .get(format!("{}health", n0.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(grant_on(&n1.base_url()).await.status(), 200);

    let s0 = sim.node_stats(0);
    assert_eq!(s0.count("node/-/status_503"), 4);
    assert_eq!(s0.token_requests, 0);
    assert_eq!(sim.node_stats(1).count("node/-/status_503"), 0);

    n0.status(502).await.unwrap();
    assert_eq!(grant_on(&n0.base_url()).await.status(), 502);
    n0.up().await.unwrap();
    assert_eq!(grant_on(&n0.base_url()).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn hang_accepts_and_never_answers_on_that_node_only() {
    let sim = start_with(config().nodes(2)).await;
    let n1 = sim.node(1);
    n1.hang().await.unwrap();
    assert_eq!(n1.state(), NodeState::Hang);
    assert!(
        !refused(n1.addr()).await,
        "a hanging node accepts connections"
    );
    let err = http_with_timeout(Duration::from_millis(300))
        .post(format!("{}oauth2/token/", n1.base_url()))
        .form(&password_fields(USER, PASSWORD))
        .send()
        .await
        .expect_err("node 1 never answers");
    assert!(err.is_timeout(), "{err}");
    assert_eq!(password_grant(&sim).await.status(), 200);
    assert_eq!(n1.stats().count("node/-/hang"), 1);
    // The admin API still answers through the hanging node.
    let res = http()
        .get(format!("{}health", n1.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    n1.up().await.unwrap();
    assert_eq!(grant_on(&n1.base_url()).await.status(), 200);
    // The request left hanging is released by the shutdown.
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_apply_to_every_node_unless_one_is_named() {
    let sim = start_with(config().nodes(2)).await;
    let (n0, n1) = (sim.node(0), sim.node(1));
    sim.inject(Fault::Status {
        status: 503,
        count: 2,
    });
    assert_eq!(grant_on(&n0.base_url()).await.status(), 503);
    assert_eq!(grant_on(&n1.base_url()).await.status(), 503);
    assert_eq!(grant_on(&n0.base_url()).await.status(), 200);

    n1.inject(Fault::Status {
        status: 502,
        count: 1,
    });
    assert_eq!(grant_on(&n0.base_url()).await.status(), 200);
    assert_eq!(grant_on(&n1.base_url()).await.status(), 502);
    assert_eq!(grant_on(&n1.base_url()).await.status(), 200);

    n0.inject_times(Fault::ExpiresIn { value: json!(-5) }, 1);
    let t: Value = grant_on(&n1.base_url()).await.json().await.unwrap();
    assert_eq!(t["expires_in"], 3600);
    let t: Value = grant_on(&n0.base_url()).await.json().await.unwrap();
    assert_eq!(t["expires_in"], -5);

    // The admin API names a node with "node", and refuses one that does not exist.
    let res = http()
        .post(format!("{}faults", sim.admin_url()))
        .json(&json!({"type": "status", "status": 500, "node": 1, "times": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!([{"type": "status", "status": 500, "count": 1, "times": 1, "node": 1}])
    );
    assert_eq!(grant_on(&n0.base_url()).await.status(), 200);
    assert_eq!(grant_on(&n1.base_url()).await.status(), 500);
    let res = http()
        .post(format!("{}faults", sim.admin_url()))
        .json(&json!({"type": "hang", "node": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_lists_adds_and_steers_nodes() {
    let sim = start_with(config().nodes(2)).await;
    let admin0 = sim.admin_url();
    let nodes: Value = http()
        .get(format!("{admin0}nodes"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(nodes.as_array().unwrap().len(), 2);
    assert_eq!(nodes[1]["index"], 1);
    assert_eq!(nodes[1]["state"], "up");
    assert_eq!(nodes[1]["base_url"], sim.node(1).base_url());

    let put =
        |url: String, body: Value| async move { http().put(url).json(&body).send().await.unwrap() };
    let res = put(format!("{admin0}nodes/1"), json!({"state": "down"})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["state"], "down");
    assert!(refused(sim.node(1).addr()).await);
    let res = put(format!("{admin0}nodes/1"), json!({"state": "up"})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(grant_on(&sim.node(1).base_url()).await.status(), 200);

    // Not down through itself; status and hang are fine (the admin API is exempt).
    let res = put(format!("{admin0}nodes/0"), json!({"state": "down"})).await;
    assert_eq!(res.status(), 409);
    let res = put(
        format!("{admin0}nodes/0"),
        json!({"state": "status", "status": 503}),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"index": 0, "addr": sim.addr().to_string(), "base_url": sim.base_url(),
               "admin_url": admin0, "state": "status", "status": 503})
    );
    assert_eq!(password_grant(&sim).await.status(), 503);
    let res = put(format!("{admin0}nodes/0"), json!({"state": "up"})).await;
    assert_eq!(res.status(), 200);
    // Node 0 down through node 1, and up again.
    let admin1 = sim.node(1).admin_url();
    let res = put(format!("{admin1}nodes/0"), json!({"state": "down"})).await;
    assert_eq!(res.status(), 200);
    assert!(refused(sim.addr()).await);
    let res = put(format!("{admin1}nodes/0"), json!({"state": "up"})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(password_grant(&sim).await.status(), 200);

    // Bad states and unknown nodes.
    for (path, body, status) in [
        ("nodes/0", json!({"state": "status", "status": 42}), 400),
        ("nodes/0", json!({"state": "sideways"}), 400),
        ("nodes/9", json!({"state": "up"}), 404),
    ] {
        let res = put(format!("{admin0}{path}"), body.clone()).await;
        assert_eq!(res.status(), status, "{path} {body}");
    }

    // A third node, started through the admin API.
    let res = http().post(format!("{admin0}nodes")).send().await.unwrap();
    assert_eq!(res.status(), 201);
    let info: Value = res.json().await.unwrap();
    assert_eq!(info["index"], 2);
    let base2 = str_field(&info, "base_url").to_owned();
    assert_eq!(grant_on(&base2).await.status(), 200);
    let stats2: Value = http()
        .get(format!("{admin0}nodes/2/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats2["password_grants_ok"], 1);
    assert!(stats2.get("by_node").is_none());
    assert_eq!(sim.nodes().len(), 3);
    let res = http().get(format!("{admin0}nodes/7")).send().await.unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_file_sets_nodes_and_node_faults() {
    let c = SimConfig::from_json(&format!(
        r#"{{"nodes": 2, "clients": [{{"id": "{CLIENT_ID}", "secret": "{CLIENT_SECRET}"}}],
            "subscribers": [{{"username": "{USER}", "password": "{PASSWORD}"}}],
            "faults": [{{"type": "status", "status": 503, "node": 1}}]}}"#
    ))
    .unwrap();
    assert_eq!(c.nodes, 2);
    let sim = Sim::start(c).await.unwrap();
    assert_eq!(grant_on(&sim.node(0).base_url()).await.status(), 200);
    assert_eq!(grant_on(&sim.node(1).base_url()).await.status(), 503);
    assert_eq!(grant_on(&sim.node(1).base_url()).await.status(), 200);
    assert!(SimConfig::from_json(r#"{"faults": [{"type": "hang", "node": 1}]}"#).is_err());
    assert!(SimConfig::from_json(r#"{"nodes": 0}"#).is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_stops_every_node() {
    let sim = start_with(config().nodes(3)).await;
    let addrs: Vec<_> = sim.nodes().iter().map(|n| n.addr()).collect();
    sim.node(2).hang().await.unwrap();
    sim.shutdown().await;
    for addr in addrs {
        assert!(refused(addr).await, "{addr} still accepts connections");
    }
}
