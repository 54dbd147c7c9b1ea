//! Benchmark: how long from `create NsApiCredential` to `Ready=True`, against the local control
//! plane and nsapi-sim, with the real operator binary. Run with a control plane up:
//!
//!   eval "$(scripts/control-plane env)" && cargo bench --bench create_ready
//!
//! Part 1 creates credentials one at a time (latency of a single create); part 2 creates a
//! burst at once (time until all are Ready). Bounded in count and time; loopback only.

#[path = "../tests/control_plane/mod.rs"]
mod control_plane;
#[path = "../tests/fixture/mod.rs"]
mod fixture;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::ResourceExt;
use kube::runtime::{WatchStreamExt, watcher};
use nsapi_sim::SimConfig;

const SEQUENTIAL: usize = 30;
const BURST: usize = 100;

#[tokio::main]
async fn main() {
    let mut f = fixture::Fixture::new("bench", SimConfig::new()).await;
    f.create_input_secrets().await;
    f.start_operator();
    f.wait_operator_started().await;

    // Ready times as the API server reports them, through a watch (no polling delay).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = watcher(f.credentials(), watcher::Config::default()).applied_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(Ok(cred)) = stream.next().await {
            let ready = cred
                .status
                .as_ref()
                .and_then(|s| s.condition("Ready"))
                .is_some_and(|c| c.status == "True");
            if ready {
                let _ = tx.send((cred.name_any(), Instant::now()));
            }
        }
    });
    let mut ready_at: HashMap<String, Instant> = HashMap::new();

    let mut latencies = Vec::new();
    for i in 0..SEQUENTIAL {
        let name = format!("seq-{i}");
        let started = Instant::now();
        f.create_credential(&name, |_| {}).await;
        let at = wait_for(std::slice::from_ref(&name), &mut ready_at, &mut rx).await[0];
        latencies.push(at - started);
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "sequential: {SEQUENTIAL} credentials, create -> Ready: min {:?}, p50 {:?}, p90 {:?}, max {:?}",
        latencies[0],
        pct(0.5),
        pct(0.9),
        latencies[latencies.len() - 1]
    );

    let names: Vec<String> = (0..BURST).map(|i| format!("burst-{i}")).collect();
    let started = Instant::now();
    for name in &names {
        f.create_credential(name, |_| {}).await;
    }
    let created = started.elapsed();
    let times = wait_for(&names, &mut ready_at, &mut rx).await;
    let last = times.iter().max().unwrap();
    println!(
        "burst: {BURST} credentials created in {created:?}; all Ready {:?} after the first create",
        *last - started
    );
    let stats = f.sim.stats();
    println!(
        "NetSapiens requests: {} password grants, {} refresh grants, {} token reads for {} credentials",
        stats.password_grants,
        stats.refresh_grants,
        stats.read_requests,
        SEQUENTIAL + BURST
    );
}

/// When each of `names` became Ready, waiting (at most 300 s) for those not seen yet.
async fn wait_for(
    names: &[String],
    ready_at: &mut HashMap<String, Instant>,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>,
) -> Vec<Instant> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !names.iter().all(|n| ready_at.contains_key(n)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some((name, at))) => {
                ready_at.entry(name).or_insert(at);
            }
            _ => panic!("not all credentials became Ready within 300 s"),
        }
    }
    names.iter().map(|n| ready_at[n]).collect()
}
